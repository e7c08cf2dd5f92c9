#!/usr/bin/env bash
# Installs everything phiquant's build and tests need on a fresh Debian machine. Idempotent: a
# second run changes nothing and takes a second or two.
#
#   bash scripts/setup.sh
#
# What it does:
#   1. apt packages the build needs that the machine lacks (run as root or with sudo);
#   2. checks the Rust toolchain (cargo, rustfmt, clippy);
#   3. a project-local Python venv in .venv with the pinned PyPI packages in
#      scripts/requirements.txt: onnxruntime provides the shared library phiquant's ONNX Runtime
#      backend loads, and the interop checks use the Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# --- 1. apt packages -------------------------------------------------------------------------
# Each entry is "command-or-check package": the package is installed only when the check fails.
apt_needed=()
need() { "$@" >/dev/null 2>&1; }
need command -v cc || apt_needed+=(gcc)
need command -v python3 || apt_needed+=(python3)
need python3 -c 'import venv, ensurepip' || apt_needed+=(python3-venv)
# llama-cpp-sys-2 builds llama.cpp (C++) with CMake and generates its bindings with bindgen
# (libclang).
need command -v c++ || apt_needed+=(g++)
# ccache: llama.cpp's build uses it when present, so the test and clippy builds of the llama.cpp
# backend reuse the first build's objects.
need command -v ccache || apt_needed+=(ccache)
need command -v cmake || apt_needed+=(cmake)
need command -v clang || apt_needed+=(clang)
need compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' || apt_needed+=(libclang-dev)
# The test of `phiquant verify --html` renders the report in headless Chromium and checks the
# screenshot.
need command -v chromium || need command -v chromium-browser || apt_needed+=(chromium)
if ((${#apt_needed[@]})); then
    say "installing apt packages: ${apt_needed[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_needed[@]}"
fi

# --- 2. Rust ---------------------------------------------------------------------------------
for tool in cargo rustfmt cargo-clippy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "error: $tool not found; install Rust $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml) or newer with rustfmt and clippy"
        exit 2
    fi
done

# --- 3. Python venv --------------------------------------------------------------------------
venv=.venv
stamp="$venv/.requirements.sha256"
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    say "creating $venv with scripts/requirements.txt"
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
    echo "$want" >"$stamp"
fi

# The ONNX Runtime shared library: the wheel ships only the versioned file name.
ort_lib=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)
if [[ -z $ort_lib ]]; then
    say "error: onnxruntime's shared library is missing from $venv; delete $venv and run again"
    exit 2
fi
say "ready (ONNX Runtime library: $ort_lib)"
