#!/usr/bin/env bash
# The main job on a built-in example: builds phiquant and runs it on the Phi-4-mini-like fixture
# checkpoint in fixtures/models (tiny random weights, no download): inspect it, then export it as
# dml-int4 (AWQ, calibrated on text the model writes itself) and gguf-q4_k_m, and verify each in
# its runtime (ONNX Runtime's CPU provider, as DirectML exists only on Windows; llama.cpp) against
# the checkpoint, with the reports in target/example/verify.{json,md,html}.
#
# --max-ppl-ratio 2: the fixture's random weights give a perplexity near 1e30, where logit
# changes too small to move the KL divergence (1e-5) still move the perplexity by a third; real
# models keep the default int4 gate of 1.10.
#
#   bash scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
./target/release/phiquant inspect fixtures/models/phi4-mini
./target/release/phiquant export --model fixtures/models/phi4-mini --target dml-int4 \
    --target gguf-q4_k_m --out target/example --verify --verify-device cpu --max-ppl-ratio 2
