#!/usr/bin/env bash
# The test command: sets the machine up (idempotently), then checks formatting and lints and runs
# every test of the workspace.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Tests talk to a local hub server on 127.0.0.1: never through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
export PYTHON="${PYTHON:-python3}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# Each fuzz target of fuzz/ briefly (FUZZING.md has the long runs): a crash fails the tests.
bash scripts/fuzz.sh 30
