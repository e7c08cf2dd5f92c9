#!/usr/bin/env bash
# The main job on a built-in example: builds phiquant and runs it on the Phi-4-mini-like fixture
# checkpoint in fixtures/models (tiny random weights, no download): inspect it, then export it as
# dml-int4 (AWQ, calibrated on text the model writes itself) and gguf-q4_k_m. Verification joins
# this example when it lands.
#
#   bash scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
./target/release/phiquant inspect fixtures/models/phi4-mini
./target/release/phiquant export --model fixtures/models/phi4-mini --target dml-int4 \
    --target gguf-q4_k_m --out target/example
