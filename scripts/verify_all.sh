#!/usr/bin/env bash
# Every target of the GGUF and ONNX issues, exported from a model and verified on the CPU by
# `phiquant export --verify`: too slow for the test command with SmolLM2-135M, so run by hand and
# recorded in BENCHMARKS.md ("Verification of every target").
#
#   bash scripts/verify_all.sh [MODEL] [OUT]
#
# MODEL defaults to SmolLM2-135M-Instruct from ../shared (its Q4_1 GGUF, dequantized: the
# baseline is that model in f32), OUT to target/verify-all. The reports are OUT/verify.json,
# verify.md and verify.html; the script prints the Markdown table. dml-int4 uses its default,
# AWQ, calibrated on 32 x 512 tokens of tinystories-val.txt; the corpus scored is sotu.txt,
# held out from the calibration. The exit status is export's: 1 when a gate failed.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
out="${2:-target/verify-all}"
cargo build --release --locked
status=0
./target/release/phiquant export --model "$model" --out "$out" \
    --target gguf-f32 --target gguf-f16 --target gguf-q8_0 --target gguf-q4_0 \
    --target gguf-q4_1 --target gguf-q4_k_m \
    --target cpu-int4 --target mobile-int4 --target cuda-int4 --target cuda-fp16 \
    --target dml-int4 --target cpu-fp32 \
    --calib ../shared/corpora/tinystories-val.txt --calib-samples 32 --calib-len 512 \
    --verify --verify-device cpu --corpus ../shared/corpora/sotu.txt --ctx 512 --chunks 8 ||
    status=$?
cat "$out/verify.md"
exit "$status"
