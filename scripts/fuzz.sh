#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 30) and fails if any of them finds a
# crash (a panic, an abort, a sanitizer report, a timeout or an out-of-memory). Installs
# cargo-fuzz when it is missing. See FUZZING.md.
#
#   bash scripts/fuzz.sh [SECONDS]
#
# cargo-fuzz needs nightly flags (-Zsanitizer=address, sanitizer coverage); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them. The corpus grows in fuzz/corpus/<target>/, crashing inputs
# are kept in fuzz/artifacts/<target>/, and each run's libFuzzer output in
# fuzz/artifacts/<target>.log (all ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS]  (a whole number of seconds per target)" >&2
    exit 2
fi
targets=(safetensors_header gguf_reader config_json)
cargo_fuzz_version=0.13.2

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi
export RUSTC_BOOTSTRAP=1

# cargo fuzz has no --locked: check the lock file first, so that the build cannot change it.
cargo fetch --locked --manifest-path fuzz/Cargo.toml
python3 fuzz/seeds.py
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done

failed=()
mkdir -p fuzz/artifacts
for t in "${targets[@]}"; do
    log="fuzz/artifacts/$t.log"
    # -max_len: the seeds are at most ~5 KB. -timeout: no input this small should take 20 s.
    # -detect_leaks=0: a leak is not what is fuzzed for (bad input must give an error, not a
    # panic), and the tokenizers crate ends each run with more allocations than frees (without a
    # leak), which makes LeakSanitizer re-check nearly every gguf_reader input: 10x slower.
    if cargo fuzz run "$t" -- -max_total_time="$seconds" -max_len=8192 -timeout=20 \
        -detect_leaks=0 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}')
        speed=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{print $2}')
        corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1 | cut -d' ' -f2)
        echo "fuzz: $t: ok, ${runs:-?} executions in ${seconds} s (${speed:-?}/s)," \
            "corpus ${corpus:-?} (inputs/bytes)"
    else
        echo "fuzz: $t: FAILED; the end of $log:" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]}; inputs are in fuzz/artifacts/<target>/," \
        "replay one with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>" >&2
    exit 1
fi
