#!/usr/bin/env python3
"""Golden vectors for phiquant's quantizers.

Runs the reference implementations themselves and writes small raw binary
files plus a manifest that phiquant's Rust tests compare against, byte for
byte, without needing any of these Python packages:

* ONNX Runtime's MatMulNBits quantizer (MLAS ``MlasQuantizeBlockwise``,
  ``q4_dq.cpp``) through ``onnxruntime.capi._pybind_state.quantize_matmul_4bits``
  and ``quantize_matmul_8bits``, called the way
  ``onnxruntime/quantization/matmul_nbits_quantizer.py``
  (``DefaultWeightOnlyQuantizer.qbits_block_quant``) calls them.
* llama.cpp's block formats: ggml's own C reference quantizers
  (``quantize_row_*_ref`` / ``dequantize_row_*`` in ``ggml/src/ggml-quants.c``)
  taken from the pinned ``llama-cpp-python`` sdist, compiled here into a
  temporary shared library and called through ctypes; the PyPI ``gguf``
  package (gguf-py, used by ``convert_hf_to_gguf.py``) is run on the same
  inputs and must agree with the C code wherever it implements a type.

Usage::

    python scripts/golden/quant.py --out fixtures/golden/quant

See scripts/golden/README.md. The output is deterministic: running the script
twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
EXPECTED_VERSIONS = {"onnxruntime": "1.31.1", "gguf": "0.19.0"}

# Flags for the ggml reference build. -ffp-contract=off keeps ISO C semantics
# (no fused multiply-add), which is also what plain Rust arithmetic does;
# -DNDEBUG as in llama.cpp release builds; no -march, so the portable
# software fp16 conversion of ggml-impl.h is used.
CFLAGS = ["-O2", "-std=gnu11", "-fPIC", "-shared", "-ffp-contract=off", "-DNDEBUG"]

SEED = 20260514

MATMUL_BITS = (4, 8)
MATMUL_BLOCK_SIZES = (16, 32, 64, 128, 256)
MATMUL_IO = ("f32", "f16")
GGUF_TYPES = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K")
GGUF_BLOCK = {"F16": 1, "BF16": 1, "Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q4_K": 256, "Q6_K": 256}
GGUF_TYPE_SIZE = {"F16": 2, "BF16": 2, "Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q4_K": 144, "Q6_K": 210}


# --------------------------------------------------------------------------
# inputs


class Input:
    def __init__(self, name: str, data: np.ndarray, note: str, tags: set[str]):
        assert data.dtype == np.float32 and data.ndim == 2
        assert np.isfinite(data).all(), name
        self.name = name
        self.data = np.ascontiguousarray(data)
        self.note = note
        self.tags = tags  # "f16": meaningful after a cast to float16; "kquant": K-quants apply

    @property
    def rows(self) -> int:
        return self.data.shape[0]

    @property
    def cols(self) -> int:
        return self.data.shape[1]


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng([SEED, i])


def _to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even), returned as float32."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
    return u.astype(np.uint32).view(np.float32)


def _f16_exact(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _tie_row(rng, K, s, group, peaks, lo, hi):
    """Values k/2 * s (k integer in [lo, hi]) with `peaks` written at the start of every group."""
    k = rng.integers(lo, hi + 1, size=K)
    row = (k.astype(np.float64) * (s / 2)).astype(np.float32)
    for g, start in enumerate(range(0, K, group)):
        p = peaks(g)
        row[start:start + len(p)] = np.array(p, dtype=np.float64) * s
    return row


def build_inputs() -> list[Input]:
    inputs: list[Input] = []
    # random normal weights, various K
    for i, (K, N, note) in enumerate([
        (256, 4, "normal(0, 0.02); K = 256 (one Q4_K/Q6_K super-block per row)"),
        (576, 3, "normal(0, 0.02); K = 576 = SmolLM2 hidden size, not a multiple of 128/256: padded last block"),
        (172, 3, "normal(0, 0.02); K = 172, not a multiple of 32: MatMulNBits padding for every block size"),
        (100, 3, "normal(0, 0.02); K = 100, not a multiple of 32: MatMulNBits padding, odd k_blocks"),
        (1536, 2, "normal(0, 0.02); K = 1536 = 6 x 256"),
    ]):
        w = (_rng(100 + i).normal(0.0, 0.02, size=(N, K))).astype(np.float32)
        inputs.append(Input(f"normal_k{K}", w, note, {"random", "f16"}))

    # heavy tails with outliers
    rng = _rng(200)
    w = rng.standard_t(2.0, size=(4, 256)) * 0.02
    mask = rng.random(size=w.shape) < 0.02
    w = np.where(mask, w * 30.0, w).astype(np.float32)
    inputs.append(Input("studentt_k256", w, "student-t (df=2) * 0.02 with 2 % of entries scaled x30 (outliers)",
                        {"random", "f16"}))

    # bf16 checkpoints
    for i, (K, N) in enumerate([(256, 4), (576, 2)]):
        w = _to_bf16(_rng(300 + i).normal(0.0, 0.02, size=(N, K)).astype(np.float32))
        inputs.append(Input(f"bf16_k{K}", w, "normal(0, 0.02) rounded to bfloat16 (low 16 bits zero): bf16 checkpoint",
                            {"random", "f16"}))

    # exact .5 ties
    rng = _rng(400)
    K = 256
    s = 2.0 ** -7
    rows = [
        # MLAS 4-bit symmetric: signed absmax -8s -> scale = s, v*(1/s) + 8 = j + .5 exactly; Q4_0: d = s
        _tie_row(rng, K, s, 16, lambda g: [-8], -15, 15),
        # the same with a positive absmax: scale = -s, Q4_0 d = -s
        _tie_row(rng, K, s, 16, lambda g: [8], -15, 15),
        # +8s and -8s in the same block (order alternating): which sign does the absmax take?
        _tie_row(rng, K, s, 16, lambda g: [8, -8] if g % 2 == 0 else [-8, 8], -15, 15),
        # MLAS 4-bit asymmetric: min -6.5s, max 8.5s -> scale = s, zero point 6.5 (roundf 7, half-even 6);
        # Q4_1: d = s, (x - min)/d + .5 on exact halves
        _tie_row(rng, K, s, 16, lambda g: [-6.5, 8.5], -13, 17),
        # MLAS 8-bit symmetric: absmax -128s -> scale = s
        _tie_row(rng, K, s, 16, lambda g: [-128], -255, 255),
        # MLAS 8-bit asymmetric: min -100.5s, max 154.5s -> scale = s, zero point 100.5
        _tie_row(rng, K, s, 16, lambda g: [-100.5, 154.5], -201, 309),
        # Q8_0: amax 127s -> d = s, x/d = j + .5 (roundf)
        _tie_row(rng, K, s, 32, lambda g: [127 if g % 2 == 0 else -127], -253, 253),
        # Q5_0: absmax -16s -> d = s
        _tie_row(rng, K, s, 16, lambda g: [-16], -31, 31),
    ]
    w = np.stack(rows).astype(np.float32)
    assert (_f16_exact(w) == w).all()
    inputs.append(Input(
        "ties_k256", w,
        "multiples of s/2 (s = 2^-7) with block extremes chosen so that v/scale + zero point lands exactly on .5: "
        "rows 0-1 MLAS 4-bit sym / Q4_0 (absmax -8s, +8s), 2 absmax tie +8s vs -8s, 3 MLAS 4-bit asym / Q4_1 "
        "(min -6.5s, max 8.5s), 4 MLAS 8-bit sym (-128s), 5 MLAS 8-bit asym (min -100.5s, max 154.5s), "
        "6 Q8_0 (amax 127s), 7 Q5_0 (-16s); exact in float16",
        {"f16", "kquant"}))

    # flat, zero, signed-absmax blocks
    rng = _rng(500)
    K = 256
    flat = [
        np.full(K, 0.01, np.float32),
        np.full(K, -0.03, np.float32),
        np.zeros(K, np.float32),
        np.full(K, -0.0, np.float32),
    ]
    r = rng.normal(0.0, 0.02, K).astype(np.float32)
    for g in range(K // 16):
        r[16 * g + (7 * g) % 16] = -0.1
    flat.append(r)
    r = rng.normal(0.0, 0.02, K).astype(np.float32)
    for g in range(K // 16):
        r[16 * g + (5 * g + 3) % 16] = 0.1
    flat.append(r)
    r = np.zeros(K, np.float32)
    r[rng.integers(0, 64) + np.arange(0, K, 64)] = rng.normal(0.0, 0.05, K // 64)
    flat.append(r)
    consts = [0.02, -0.02, 0.0, 0.5, -1e-3, -0.0, 3e-5, -7.0]
    flat.append(np.repeat(np.array(consts, np.float32), 32))
    w = np.stack(flat).astype(np.float32)
    inputs.append(Input(
        "flat_k256", w,
        "rows: all +0.01, all -0.03, all +0.0, all -0.0, random with a negative absmax in every 16-block, random with "
        "a positive absmax in every 16-block, sparse (one nonzero per 64: all-zero blocks), constant 32-blocks "
        "[0.02, -0.02, 0, 0.5, -1e-3, -0, 3e-5, -7]",
        {"f16", "kquant"}))

    # magnitudes
    rng = _rng(600)
    w = np.stack([
        rng.normal(0.0, 1.0, 256) * 1e30,
        np.where(rng.random(256) < 0.05, rng.normal(0.0, 1.0, 256) * 1e30, rng.normal(0.0, 0.02, 256)),
    ]).astype(np.float32)
    inputs.append(Input("huge_k256", w,
                        "normal * 1e30, and normal(0, 0.02) with 5 % of entries ~1e30 (overflows float16: f32 only)",
                        set()))
    w = np.stack([
        rng.normal(0.0, 1.0, 256) * 1e-30,
        np.where(rng.random(256) < 0.5, 0.0, rng.normal(0.0, 1.0, 256) * 1e-30),
    ]).astype(np.float32)
    inputs.append(Input("tiny_k256", w, "normal * 1e-30 (f32 normal numbers; 0 in float16), half of row 1 zero",
                        {"kquant"}))
    w = np.stack([
        rng.normal(0.0, 1.0, 256) * 1e-40,
        np.where(rng.random(256) < 0.5, rng.normal(0.0, 1.0, 256) * 1e-38, rng.normal(0.0, 1.0, 256) * 1e-41),
    ]).astype(np.float32)
    assert (np.abs(w) < np.finfo(np.float32).tiny).any()
    inputs.append(Input("subnormal_k256", w,
                        "f32 subnormals (normal * 1e-40), and a mix of ~1e-38 and ~1e-41 (reciprocal of a subnormal "
                        "scale overflows to inf)", {"kquant"}))
    w = np.stack([
        np.clip(rng.normal(0.0, 2e4, 256), -6e4, 6e4),
        rng.normal(0.0, 2e-6, 256),
        np.where(rng.random(256) < 0.1, rng.normal(0.0, 1e-4, 256), rng.normal(0.0, 1e-7, 256)),
    ])
    w = _f16_exact(w.astype(np.float32))
    inputs.append(Input("f16range_k256", w,
                        "float16-exact values: normal * 2e4 clipped to +-6e4 (near float16 max), float16 subnormals "
                        "(normal * 2e-6), and a mix of ~1e-4 and ~1e-7",
                        {"f16", "kquant"}))
    for inp in inputs:
        if inp.cols % 256 == 0 and "random" in inp.tags:
            inp.tags.add("kquant")
    return inputs


# --------------------------------------------------------------------------
# ONNX Runtime MatMulNBits


def ort_quantize(w_hf: np.ndarray, bits: int, block_size: int, symmetric: bool, io: str, fill: int = 0):
    """Quantize a [N, K] (HF layout) weight as onnxruntime's MatMulNBits quantizer does.

    Mirrors DefaultWeightOnlyQuantizer.qbits_block_quant (QOperator format): the ONNX MatMul weight is
    [K, N] (the transpose), zero-padded to whole blocks, and the output buffers are pre-filled with `fill`
    (0 in ORT). Returns (packed [N, k_blocks, blob] uint8, scales [N, k_blocks], zero_points uint8).
    """
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    dtype = np.float32 if io == "f32" else np.float16
    w = np.ascontiguousarray(w_hf.T.astype(dtype))  # [K, N]
    rows, cols = w.shape
    kpack = 8 // bits
    k_blocks = (rows + block_size - 1) // block_size
    blob_size = (block_size + kpack - 1) // kpack
    pad_len = k_blocks * block_size - rows
    if pad_len > 0:
        w = np.ascontiguousarray(np.pad(w, ((0, pad_len), (0, 0)), "constant"))
    packed = np.full((cols, k_blocks, blob_size), fill, dtype=np.uint8)
    zero_point = np.full((cols, (k_blocks + kpack - 1) // kpack), fill, dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=dtype)
    fn = quantize_matmul_8bits if bits == 8 else quantize_matmul_4bits
    fn(packed, w, scales, zero_point, block_size, cols, rows, symmetric)
    return packed, scales, zero_point


def _roundf(x: np.ndarray) -> np.ndarray:
    """C roundf: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def mlas_emulate(w_hf: np.ndarray, bits: int, bs: int, symmetric: bool, io: str,
                 divide: bool = False, fp32_scale: bool = False, half_even: bool = False):
    """numpy model of MlasQuantizeBlockwise (q4_dq.cpp, BlockwiseQuantizer::quantizeAndTranspose,
    range2scale / range2scalezp). Returns (codes [N, K], scales [N, k_blocks], zps [N, k_blocks]).
    The keyword switches model the wrong variants (for the report), not ORT."""
    dtype = np.float32 if io == "f32" else np.float16
    w = w_hf.astype(dtype).astype(np.float32)
    N, K = w.shape
    kb = (K + bs - 1) // bs
    # pad each block with copies of its first element: changes neither min/max nor first occurrences
    blocks = np.empty((N, kb, bs), np.float32)
    for b in range(kb):
        seg = w[:, b * bs:(b + 1) * bs]
        blocks[:, b, :seg.shape[1]] = seg
        blocks[:, b, seg.shape[1]:] = seg[:, :1]
    mn = np.take_along_axis(blocks, blocks.argmin(-1)[..., None], -1)[..., 0]
    mx = np.take_along_axis(blocks, blocks.argmax(-1)[..., None], -1)[..., 0]
    kmax = (1 << bits) - 1
    with np.errstate(all="ignore"):
        if symmetric:
            m = np.where(np.abs(mx) > np.abs(mn), mx, mn)
            scale32 = (-m / np.float32(1 << (bits - 1))).astype(np.float32)
            zp = np.full(scale32.shape, 1 << (bits - 1), np.float32)
        else:
            mn = np.where(np.float32(0) < mn, np.float32(0), mn)  # std::min(min, 0.0f)
            mx = np.where(mx < np.float32(0), np.float32(0), mx)  # std::max(max, 0.0f)
            scale32 = ((mx - mn) / np.float32(kmax)).astype(np.float32)
            zf = np.where(scale32 != 0, np.float32(0) - mn / np.where(scale32 != 0, scale32, 1), mn)
            zp = np.where(zf < 0, 0, np.where(zf > kmax, kmax, _roundf(zf))).astype(np.float32)
        stored = scale32.astype(dtype)
        s = scale32 if fp32_scale else stored.astype(np.float32)
        s3 = s[..., None]
        if divide:
            y = np.where(s3 != 0, blocks / np.where(s3 != 0, s3, 1), 0).astype(np.float32)
        else:
            rcp = np.where(s3 != 0, np.float32(1) / np.where(s3 != 0, s3, 1), 0).astype(np.float32)
            y = blocks * rcp
        y = y + zp[..., None]
        r = np.round(y) if half_even else _roundf(y)
        r = np.where(np.isnan(r), 0, r)
        q = np.clip(r, 0, kmax).astype(np.uint8)
    codes = q.reshape(N, kb * bs)[:, :K]
    return codes, stored, zp.astype(np.uint8)


def unpack_b(packed: np.ndarray, bits: int, K: int) -> np.ndarray:
    N = packed.shape[0]
    flat = packed.reshape(N, -1)
    if bits == 8:
        return flat[:, :K]
    return np.stack([flat & 15, flat >> 4], -1).reshape(N, -1)[:, :K]


def unpack_zp(zp: np.ndarray, bits: int, kb: int) -> np.ndarray:
    if bits == 8:
        return zp[:, :kb]
    return np.stack([zp & 15, zp >> 4], -1).reshape(zp.shape[0], -1)[:, :kb]


# --------------------------------------------------------------------------
# ggml C reference


SHIM_C = r"""
/* Written for phiquant's golden-vector script: links ggml-quants.c alone and exposes
   the fp16/bf16 row conversions, which ggml keeps as static inline functions. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
#include "ggml-impl.h"

void ggml_abort(const char * file, int line, const char * fmt, ...) {
    va_list ap;
    fprintf(stderr, "ggml_abort %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void)type; (void)ne; abort(); }
size_t ggml_type_size(enum ggml_type type) { (void)type; abort(); }
const char * ggml_type_name(enum ggml_type type) { (void)type; return "?"; }

void golden_fp32_to_fp16_row(const float * x, uint16_t * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = GGML_FP32_TO_FP16(x[i]);
}
void golden_fp16_to_fp32_row(const uint16_t * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = GGML_FP16_TO_FP32(x[i]);
}
void golden_fp32_to_bf16_row(const float * x, uint16_t * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = GGML_FP32_TO_BF16(x[i]).bits;
}
void golden_bf16_to_fp32_row(const uint16_t * x, float * y, int64_t n) {
    for (int64_t i = 0; i < n; i++) { ggml_bf16_t h = { x[i] }; y[i] = GGML_BF16_TO_FP32(h); }
}
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(work: Path, given: str | None) -> Path:
    if given:
        path = Path(given)
    else:
        dl = work / "sdist"
        dl.mkdir()
        # Metadata preparation of this sdist needs scikit-build-core and cmake (requirements.txt).
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
               "--disable-pip-version-check", "-q", "-d", str(dl), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        print("+", " ".join(cmd), flush=True)
        bindir = str(Path(sys.executable).parent)
        env = dict(os.environ)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        subprocess.run(cmd, check=True, env=env)
        path = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    digest = _sha256(path)
    if digest != LLAMA_CPP_SDIST_SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {LLAMA_CPP_SDIST_SHA256}")
    return path


def build_ggml(work: Path, sdist: Path, cc: str):
    top = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/"
    ggml = top + "vendor/llama.cpp/ggml/"
    head = top + ".git/modules/vendor/llama.cpp/HEAD"
    src = work / "src"
    commit = None
    with tarfile.open(sdist) as tf:
        members = []
        for m in tf.getmembers():
            if not m.isfile():
                continue
            if m.name == head:
                commit = tf.extractfile(m).read().decode().strip()
            rel = m.name[len(ggml):] if m.name.startswith(ggml) else None
            if rel is None:
                continue
            parts = rel.split("/")
            if (parts[0] == "include" and len(parts) == 2) or (parts[0] == "src" and len(parts) == 2) or \
                    (parts[:2] == ["src", "ggml-cpu"] and len(parts) == 3 and rel.endswith(".h")):
                members.append(m)
        tf.extractall(src, members=members, filter="data")
    base = src / ggml
    (base / "src" / "golden_shim.c").write_text(SHIM_C)
    lib = work / "libggml_golden_ref.so"
    cmd = [cc, *CFLAGS, "-I", str(base / "include"), "-I", str(base / "src"), "-I", str(base / "src" / "ggml-cpu"),
           str(base / "src" / "ggml-quants.c"), str(base / "src" / "golden_shim.c"), "-o", str(lib), "-lm"]
    print("+", " ".join(c.replace(str(work), "$WORK") for c in cmd), flush=True)
    subprocess.run(cmd, check=True)
    quants_sha = _sha256(base / "src" / "ggml-quants.c")
    return GgmlRef(ctypes.CDLL(str(lib))), commit, quants_sha


def _cname(qtype: str) -> str:
    """ggml's spelling in symbol names: q4_0, q4_K."""
    return qtype.lower().replace("_k", "_K")


class GgmlRef:
    def __init__(self, lib):
        self.lib = lib
        for name in ["golden_fp32_to_fp16_row", "golden_fp16_to_fp32_row", "golden_fp32_to_bf16_row",
                     "golden_bf16_to_fp32_row"] + \
                [f"quantize_row_{_cname(t)}_ref" for t in GGUF_TYPES if t.startswith("Q")] + \
                [f"dequantize_row_{_cname(t)}" for t in GGUF_TYPES if t.startswith("Q")]:
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            fn.restype = None

    def quantize(self, w: np.ndarray, qtype: str) -> np.ndarray:
        x = np.ascontiguousarray(w, dtype=np.float32)
        n = x.size
        nbytes = n // GGUF_BLOCK[qtype] * GGUF_TYPE_SIZE[qtype]
        out = np.zeros(nbytes, np.uint8)
        if qtype == "F16":
            fn = self.lib.golden_fp32_to_fp16_row
        elif qtype == "BF16":
            fn = self.lib.golden_fp32_to_bf16_row
        else:
            fn = getattr(self.lib, f"quantize_row_{_cname(qtype)}_ref")
        fn(x.ctypes.data, out.ctypes.data, n)
        return out.reshape(w.shape[0], -1)

    def dequantize(self, data: np.ndarray, qtype: str, shape) -> np.ndarray:
        d = np.ascontiguousarray(data, dtype=np.uint8)
        n = shape[0] * shape[1]
        out = np.zeros(n, np.float32)
        if qtype == "F16":
            fn = self.lib.golden_fp16_to_fp32_row
        elif qtype == "BF16":
            fn = self.lib.golden_bf16_to_fp32_row
        else:
            fn = getattr(self.lib, f"dequantize_row_{_cname(qtype)}")
        fn(d.ctypes.data, out.ctypes.data, n)
        return out.reshape(shape)


def gguf_py(w: np.ndarray, qtype: str):
    """gguf-py's numpy quantize/dequantize; None where it does not implement the type."""
    import warnings
    import gguf
    t = getattr(gguf.GGMLQuantizationType, qtype)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            q = np.asarray(gguf.quants.quantize(w, t))
        except NotImplementedError:
            q = None
        if q is not None:
            q = np.ascontiguousarray(q).view(np.uint8).reshape(w.shape[0], -1)
    return q


def gguf_py_dequant(data: np.ndarray, qtype: str, shape):
    import warnings
    import gguf
    t = getattr(gguf.GGMLQuantizationType, qtype)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return np.asarray(gguf.quants.dequantize(data.reshape(shape[0], -1), t), dtype=np.float32).reshape(shape)
        except NotImplementedError:
            return None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _legacy_overflows(w: np.ndarray, qtype: str) -> bool:
    blk = w.reshape(-1, 32).astype(np.float32)
    with np.errstate(all="ignore"):
        if qtype == "Q4_1":
            d = (blk.max(-1) - blk.min(-1)) / np.float32(15)
        else:
            d = np.abs(blk).max(-1) / np.float32({"Q8_0": 127, "Q4_0": 8, "Q5_0": 16}[qtype])
        idv = np.float32(1) / d[d != 0]
    return not np.isfinite(idv).all()


def check_gguf_formulas(w: np.ndarray, qtype: str, data: np.ndarray) -> None:
    """Re-derive the legacy block formats from DESIGN.md section 4 with numpy and compare with the C bytes."""
    if qtype not in ("Q8_0", "Q4_0", "Q4_1", "Q5_0"):
        return
    size = GGUF_TYPE_SIZE[qtype]
    blk = w.reshape(-1, 32).astype(np.float32)
    raw = data.reshape(-1, size)
    with np.errstate(all="ignore"):
        if qtype == "Q8_0":
            d = (np.abs(blk).max(-1) / np.float32(127)).astype(np.float32)
            idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
            q = _roundf(blk * idv[:, None]).astype(np.int8).view(np.uint8)
            exp = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2), q], 1)
        elif qtype in ("Q4_0", "Q5_0"):
            half = 8 if qtype == "Q4_0" else 16
            # first element of largest |x|, sign kept; C starts from max = 0.0f and only replaces on a strictly
            # larger |x|, so an all-zero block (even all -0.0) keeps +0.0 and gets d = -0.0
            m = np.take_along_axis(blk, np.abs(blk).argmax(-1)[:, None], -1)[:, 0]
            m = np.where(m == 0, np.float32(0), m)
            d = (m / np.float32(-half)).astype(np.float32)
            idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
            t = blk * idv[:, None] + np.float32(half + 0.5)
            q = np.minimum(2 * half - 1, np.trunc(t).astype(np.int8)).astype(np.uint8)  # (int8_t) cast
            lo = (q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)
            parts = [d.astype(np.float16).view(np.uint8).reshape(-1, 2)]
            if qtype == "Q5_0":
                qh = np.zeros(len(q), np.uint32)
                for j in range(32):
                    qh |= ((q[:, j].astype(np.uint32) >> 4) & 1) << j
                parts.append(qh.view(np.uint8).reshape(-1, 4))
            exp = np.concatenate(parts + [lo], 1)
        else:  # Q4_1
            mn, mx = blk.min(-1), blk.max(-1)
            d = ((mx - mn) / np.float32(15)).astype(np.float32)
            idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
            t = (blk - mn[:, None]) * idv[:, None] + np.float32(0.5)
            q = np.minimum(15, np.trunc(t).astype(np.int8)).astype(np.uint8)
            lo = (q[:, :16] & 15) | (q[:, 16:] << 4)
            exp = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                                  mn.astype(np.float16).view(np.uint8).reshape(-1, 2), lo], 1)
    if not np.array_equal(exp.astype(np.uint8), raw):
        bad = np.nonzero((exp.astype(np.uint8) != raw).any(-1))[0]
        raise AssertionError(f"{qtype}: DESIGN.md formula disagrees with ggml-quants.c in blocks {bad[:8]}: "
                             f"{blk[bad[0]]} {exp[bad[0]]} {raw[bad[0]]}")


# --------------------------------------------------------------------------
# main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="fixtures/golden/quant", help="output folder (replaced)")
    ap.add_argument("--llama-cpp-sdist", help=f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz already downloaded "
                                              "(default: pip download it)")
    ap.add_argument("--cc", default="cc", help="C compiler for ggml-quants.c (default: cc)")
    args = ap.parse_args()

    import gguf  # noqa: F401
    import onnxruntime

    versions = {
        "onnxruntime": onnxruntime.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "numpy": np.__version__,
    }
    for k, v in EXPECTED_VERSIONS.items():
        if versions[k] != v:
            sys.exit(f"{k} {versions[k]} installed, {v} required (pip install -r scripts/golden/requirements.txt)")

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="phiquant-golden-") as tmp:
        work = Path(tmp)
        sdist = fetch_sdist(work, args.llama_cpp_sdist)
        ref, commit, quants_sha = build_ggml(work, sdist, args.cc)
        return generate(out, ref, versions, commit, quants_sha)


def generate(out: Path, ref: GgmlRef, versions: dict, commit: str, quants_sha: str) -> int:
    inputs = build_inputs()
    if out.exists():
        shutil.rmtree(out)
    for sub in ("inputs", "matmul_nbits", "gguf"):
        (out / sub).mkdir(parents=True)

    def write(rel: str, arr: np.ndarray) -> str:
        (out / rel).write_bytes(np.ascontiguousarray(arr).tobytes())
        return rel

    manifest_inputs = []
    for inp in inputs:
        manifest_inputs.append({"name": inp.name, "file": write(f"inputs/{inp.name}.f32", inp.data.astype("<f4")),
                                "rows": inp.rows, "cols": inp.cols, "note": inp.note})

    cases = []
    stats = {"matmul_nbits": 0, "gguf": 0}
    # diagnostics: how many codes / scales a wrong variant of MLAS would get wrong
    variants = {"v/scale instead of v*(1/scale)": {"divide": True},
                "fp32 scale instead of the stored fp16 scale (f16 io)": {"fp32_scale": True},
                "round half to even instead of roundf": {"half_even": True}}
    groups = ("random", "adversarial")
    variant_diffs = {(k, g): 0 for k in variants for g in groups}
    total_codes = {(io, g): 0 for io in MATMUL_IO for g in groups}
    sym_zp_untouched = True
    pad_untouched = True

    for bits in MATMUL_BITS:
        for bs in MATMUL_BLOCK_SIZES:
            for symmetric in (True, False):
                for io in MATMUL_IO:
                    for inp in inputs:
                        if io == "f16" and "f16" not in inp.tags:
                            continue
                        packed, scales, zp = ort_quantize(inp.data, bits, bs, symmetric, io)
                        # second run with a sentinel fill: what does ORT leave untouched?
                        p2, s2, z2 = ort_quantize(inp.data, bits, bs, symmetric, io, fill=0xA5)
                        assert _same_bits(scales, s2)
                        if symmetric:
                            sym_zp_untouched &= bool((z2 == 0xA5).all() and (zp == 0).all())
                        else:
                            assert _same_bits(zp, z2)
                        K = inp.cols
                        kb = (K + bs - 1) // bs
                        per = 8 // bits
                        written = np.zeros(packed.shape[1] * packed.shape[2], bool)
                        written[:(K + per - 1) // per] = True
                        pflat, p2flat = packed.reshape(packed.shape[0], -1), p2.reshape(packed.shape[0], -1)
                        assert (pflat[:, written] == p2flat[:, written]).all()
                        pad_untouched &= bool((p2flat[:, ~written] == 0xA5).all() and (pflat[:, ~written] == 0).all())
                        # model check (DESIGN.md section 4, refined)
                        codes, exp_scales, exp_zp = mlas_emulate(inp.data, bits, bs, symmetric, io)
                        got_codes = unpack_b(packed, bits, K)
                        if not (np.array_equal(codes, got_codes) and _same_bits(exp_scales, scales) and
                                (symmetric or np.array_equal(exp_zp, unpack_zp(zp, bits, kb)))):
                            raise AssertionError(f"MLAS model disagrees with onnxruntime: {inp.name} b{bits} bs{bs} "
                                                 f"sym={symmetric} {io}")
                        if not symmetric and bits == 4 and kb % 2 == 1:
                            assert (zp[:, -1] >> 4 == 8).all()  # missing last block: default 8 in the high nibble
                        group = "random" if "random" in inp.tags else "adversarial"
                        total_codes[io, group] += codes.size
                        for vname, kw in variants.items():
                            if "fp32_scale" in kw and io != "f16":
                                continue
                            vc, _, _ = mlas_emulate(inp.data, bits, bs, symmetric, io, **kw)
                            variant_diffs[vname, group] += int((vc != got_codes).sum())

                        stem = f"{inp.name}-b{bits}-bs{bs}-{'sym' if symmetric else 'asym'}-{io}"
                        sc_dtype = "<f4" if io == "f32" else "<f2"
                        cases.append({
                            "kind": "matmul_nbits", "input": inp.name, "bits": bits, "block_size": bs,
                            "symmetric": symmetric, "io": io,
                            "b": write(f"matmul_nbits/{stem}.b.bin", packed),
                            "scales": write(f"matmul_nbits/{stem}.scales.bin", scales.astype(sc_dtype)),
                            "zero_points": None if symmetric else write(f"matmul_nbits/{stem}.zp.bin", zp),
                        })
                        stats["matmul_nbits"] += 1

    gguf_disagreements = []
    skipped = []
    for qtype in GGUF_TYPES:
        for inp in inputs:
            if inp.cols % GGUF_BLOCK[qtype] != 0:
                continue
            if qtype in ("Q4_K", "Q6_K") and "kquant" not in inp.tags:
                continue
            w = inp.data
            if qtype in ("Q8_0", "Q4_0", "Q4_1", "Q5_0") and _legacy_overflows(w, qtype):
                # x * (1/d) is +-inf or NaN for a subnormal d: ggml then converts a non-finite float to
                # int8_t, undefined behaviour in C, so there is no reference answer to record
                skipped.append(f"{qtype} {inp.name}: 1/d overflows, ggml's float->int8 cast is undefined")
                continue
            data = ref.quantize(w, qtype)
            deq = ref.dequantize(data, qtype, w.shape)
            check_gguf_formulas(w, qtype, data)
            py = gguf_py(w, qtype)
            if py is not None and not np.array_equal(py, data):
                nb = int((py != data).any(-1).sum())
                gguf_disagreements.append(f"{qtype} {inp.name}: gguf-py quantize differs from C in {nb} row(s)")
            pyd = gguf_py_dequant(data, qtype, w.shape)
            if pyd is not None and not _same_bits(pyd, deq):
                diff = pyd.view(np.uint32) != deq.view(np.uint32)
                both_nan = np.isnan(pyd) & np.isnan(deq)
                what = "only NaN payloads" if (diff <= both_nan).all() else f"{int(diff.sum())} values"
                gguf_disagreements.append(f"{qtype} {inp.name}: gguf-py dequantize differs from C ({what})")
            stem = f"{inp.name}-{qtype}"
            cases.append({"kind": "gguf", "input": inp.name, "type": qtype,
                          "data": write(f"gguf/{stem}.bin", data),
                          "dequant": write(f"gguf/{stem}.f32", deq.astype("<f4"))})
            stats["gguf"] += 1

    manifest = {
        "schema_version": 1,
        "generator": "scripts/golden/quant.py",
        "seed": SEED,
        "packages": {
            "onnxruntime": versions["onnxruntime"],
            "gguf": versions["gguf"],
            "numpy": versions["numpy"],
            "llama.cpp": f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist (sha256 {LLAMA_CPP_SDIST_SHA256}), "
                         f"vendor/llama.cpp commit {commit}, ggml/src/ggml-quants.c sha256 {quants_sha}, "
                         f"compiled with cc {' '.join(CFLAGS)}",
        },
        "conventions": [
            "All files are raw little-endian, no headers. inputs/*.f32 are float32 [rows, cols] row-major in the "
            "Hugging Face layout: rows = N output features, cols = K input features.",
            "matmul_nbits: onnxruntime quantize_matmul_{4,8}bits on the ONNX MatMul weight = input transposed to "
            "[K, N]; io f16 casts the input to float16 (round to nearest even) first and uses the float16 overload. "
            "b is uint8 [N, ceil(K/block_size), block_size*bits/8]; scales is [N, k_blocks] float32 (io f32) or "
            "float16 (io f16); zero_points (asymmetric only) is uint8 [N, ceil(k_blocks/2)] for 4 bits (block 2j in "
            "the low nibble) and [N, k_blocks] for 8 bits. Symmetric: ORT is passed no zero-point buffer and the "
            "model gets no zero_points input (implicit 8 / 128), so zero_points is null.",
            "matmul_nbits padding: bytes of b past K in the last block are never written by ORT and stay at the "
            "caller's fill, 0x00 in onnxruntime's quantizer; an odd k_blocks leaves the high nibble of the last "
            "4-bit zero-point byte at 8.",
            "gguf: data is the ggml block stream of the whole [rows, cols] matrix (rows concatenated); dequant is "
            "ggml's dequantize_row_* (F16/BF16: ggml's fp16/bf16 to fp32) of data, float32 [rows, cols]. Cases with "
            "non-finite dequant values come from the huge input (float16 overflow of d / F16 values).",
        ],
        "inputs": manifest_inputs,
        "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    nfiles = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {nfiles} files, {total} bytes")
    print(f"cases: matmul_nbits {stats['matmul_nbits']}, gguf {stats['gguf']}; inputs {len(inputs)}")
    print("checks: MLAS numpy model == onnxruntime for every case (codes, scales, zero points); "
          "Q8_0/Q4_0/Q4_1/Q5_0 DESIGN.md formulas == ggml-quants.c")
    print(f"ORT symmetric: zero_points buffer untouched: {sym_zp_untouched}; "
          f"padding bytes of b untouched (stay 0): {pad_untouched}")
    print("MLAS: codes that a wrong variant of the formula would change (random inputs | adversarial inputs):")
    for k in variants:
        ios = ("f16",) if "fp16" in k else MATMUL_IO
        counts = [f"{variant_diffs[k, g]} of {sum(total_codes[io, g] for io in ios)}" for g in groups]
        print(f"  {k}: {' | '.join(counts)}")
    for d in skipped:
        print("skipped: " + d)
    if gguf_disagreements:
        print("gguf-py vs ggml C reference disagreements (C results stored):")
        for d in gguf_disagreements:
            print("  " + d)
    else:
        print("gguf-py agrees with the ggml C reference wherever it implements a type")
    return 0


if __name__ == "__main__":
    sys.exit(main())
