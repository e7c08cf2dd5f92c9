#!/usr/bin/env python3
"""Quantize a GGUF with llama.cpp's ``llama_model_quantize`` (through llama-cpp-python).

Usage::

    python scripts/interop/lcpp_quantize.py IN.gguf OUT.gguf --ftype Q4_0 [--pure] [--nthread N]

Starts from ``llama_model_quantize_default_params()`` and sets only ``ftype``
(and ``pure`` when ``--pure`` is given; ``nthread`` when given). Needs
``llama-cpp-python`` (pinned: 0.3.36, llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f).
Exits non-zero when llama_model_quantize does not return 0.
"""

from __future__ import annotations

import argparse
import sys

# llama_ftype values from llama.h (LLAMA_FTYPE_*)
FTYPES = {
    "F32": 0,        # LLAMA_FTYPE_ALL_F32
    "F16": 1,        # LLAMA_FTYPE_MOSTLY_F16
    "Q4_0": 2,       # LLAMA_FTYPE_MOSTLY_Q4_0
    "Q4_1": 3,       # LLAMA_FTYPE_MOSTLY_Q4_1
    "Q8_0": 7,       # LLAMA_FTYPE_MOSTLY_Q8_0
    "Q5_0": 8,       # LLAMA_FTYPE_MOSTLY_Q5_0
    "Q4_K_S": 14,    # LLAMA_FTYPE_MOSTLY_Q4_K_S
    "Q4_K_M": 15,    # LLAMA_FTYPE_MOSTLY_Q4_K_M
    "Q6_K": 18,      # LLAMA_FTYPE_MOSTLY_Q6_K
    "BF16": 32,      # LLAMA_FTYPE_MOSTLY_BF16
}


def quantize(inp: str, out: str, ftype: str, pure: bool = False, nthread: int | None = None) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    if pure:
        params.pure = True
    if nthread is not None:
        params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(inp.encode(), out.encode(), llama_cpp.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({inp} -> {out}, {ftype}, pure={pure}) returned {rc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--ftype", required=True, choices=sorted(FTYPES))
    ap.add_argument("--pure", action="store_true", help="params.pure = true: every tensor gets the ftype's default type")
    ap.add_argument("--nthread", type=int, default=None)
    args = ap.parse_args()
    quantize(args.inp, args.out, args.ftype, args.pure, args.nthread)


if __name__ == "__main__":
    sys.exit(main())
