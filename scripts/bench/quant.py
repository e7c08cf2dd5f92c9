#!/usr/bin/env python3
"""Quantization throughput of phiquant next to its peers, measured in one run on this machine.

    .venv/bin/python scripts/bench/quant.py [--skip-cargo] [--runs 5]

1. Runs phiquant's criterion benchmarks (`cargo bench -p phiquant-quant --bench bench_main`) on a
   4096 x 4096 matrix and reads each median from target/criterion.
2. Times the peers on a matrix of the same size and distribution, median of --runs runs:
   - ONNX Runtime's MatMulNBits quantizer (MLAS, `quantize_matmul_4bits` / `_8bits`, the code the
     onnxruntime-genai model builder runs; single-threaded through the Python binding);
   - the `gguf` package's numpy quantizers (what llama.cpp's `convert_hf_to_gguf.py` uses for
     `--outtype q8_0/f16/bf16`).
3. Prints a Markdown table of GB/s of input weights and ratios, for BENCHMARKS.md.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
N = K = 4096
GROUP = "quantize_4096x4096"


def criterion_median_ns(bench: str, threads: int) -> float | None:
    path = ROOT / "target" / "criterion" / GROUP / bench.replace("/", "_") / str(threads) / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["median"]["point_estimate"]


def gbps(nbytes: int, ns: float) -> float:
    return nbytes / ns  # bytes per ns == GB/s


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cargo", action="store_true", help="reuse the last criterion results")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    if not args.skip_cargo:
        subprocess.run(
            ["cargo", "bench", "-p", "phiquant-quant", "--bench", "bench_main", "--",
             "--warm-up-time", "2", "--measurement-time", "6"],
            cwd=ROOT, check=True)

    import numpy as np
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits
    import gguf
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    w_t = np.ascontiguousarray(w.T)  # ONNX MatMul layout [K, N]
    f32_bytes = w.nbytes

    def ort(bits, bs, sym):
        kb = (K + bs - 1) // bs
        packed = np.zeros((N, kb, bs * bits // 8), dtype=np.uint8)
        scales = np.zeros(N * kb, dtype=np.float32)
        zp = np.zeros(N * ((kb * bits + 7) // 8), dtype=np.uint8)
        f = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
        return lambda: f(packed, w_t, scales, zp, bs, N, K, sym)

    peers = {
        ("int4-sym-b32", "f32"): ("ONNX Runtime MLAS", ort(4, 32, True)),
        ("int4-asym-b32", "f32"): ("ONNX Runtime MLAS", ort(4, 32, False)),
        ("int4-sym-b128", "f32"): ("ONNX Runtime MLAS", ort(4, 128, True)),
        ("int8-sym-b32", "f32"): ("ONNX Runtime MLAS", ort(8, 32, True)),
    }
    for name, ty in [("Q8_0", T.Q8_0), ("Q4_0", T.Q4_0), ("Q4_1", T.Q4_1), ("Q5_0", T.Q5_0),
                     ("F16", T.F16), ("BF16", T.BF16)]:
        peers[(name, "f32")] = ("gguf-py (convert_hf_to_gguf)", lambda ty=ty: gguf.quants.quantize(w, ty))

    rows = []
    for (bench, src), (peer, fn) in peers.items():
        peer_ns = median_time(fn, args.runs)
        ours1 = criterion_median_ns(f"{bench}/{src}", 1)
        ours2 = criterion_median_ns(f"{bench}/{src}", 2)
        rows.append((bench, src, peer, gbps(f32_bytes, peer_ns), ours1 and gbps(f32_bytes, ours1),
                     ours2 and gbps(f32_bytes, ours2)))

    copy1 = criterion_median_ns("memcpy/f32", 1)
    copy2 = criterion_median_ns("memcpy/f32", 2)
    print(f"machine: {os.cpu_count()} cores; input 4096 x 4096 f32 = {f32_bytes / 1e6:.0f} MB; "
          f"memory copy of the same bytes: {gbps(f32_bytes, copy1):.2f} GB/s (1 thread), "
          f"{gbps(f32_bytes, copy2):.2f} GB/s (2 threads)\n")
    print("| format (from f32) | peer | peer GB/s | phiquant 1 thread | phiquant 2 threads | "
          "ratio 1 thread | ratio 2 threads |")
    print("|---|---|---|---|---|---|---|")
    for bench, src, peer, p, o1, o2 in rows:
        print(f"| {bench} | {peer} | {p:.3f} | {o1:.2f} | {o2:.2f} | {o1 / p:.1f}x | {o2 / p:.1f}x |")

    print("\n| format | source | phiquant GB/s, 1 thread | 2 threads | 2 threads / copy (2 threads) |")
    print("|---|---|---|---|---|")
    benches = ["int4-sym-b32", "int4-asym-b32", "int4-sym-b128", "int8-sym-b32",
               "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K"]
    for src in ["f32", "bf16"]:
        nbytes = f32_bytes if src == "f32" else f32_bytes // 2
        c2 = criterion_median_ns(f"memcpy/{src}", 2)
        for b in benches:
            o1 = criterion_median_ns(f"{b}/{src}", 1)
            o2 = criterion_median_ns(f"{b}/{src}", 2)
            if o1 is None or o2 is None:
                continue
            print(f"| {b} | {src} | {gbps(nbytes, o1):.2f} | {gbps(nbytes, o2):.2f} | "
                  f"{100 * c2 / o2:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
