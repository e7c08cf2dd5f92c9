#!/usr/bin/env bash
# The main job on a built-in example: builds phiquant and runs it on the Phi-4-mini-like fixture
# checkpoint in fixtures/models (tiny random weights, no download). Export and verification join
# this example as those commands land.
#
#   bash scripts/example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
./target/release/phiquant inspect fixtures/models/phi4-mini
