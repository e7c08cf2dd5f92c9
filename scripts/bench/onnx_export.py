#!/usr/bin/env python3
"""HF checkpoint to a cpu-int4 ONNX folder: phiquant against onnxruntime-genai's model builder,
side by side.

    python3 scripts/bench/onnx_export.py --peer-python /tmp/ogvenv/bin/python [--runs 5]

Peer: onnxruntime-genai 0.18's builder, `python -m onnxruntime_genai.models.builder -i MODEL -o OUT
-p int4 -e cpu` (the venv from `scripts/interop/onnx_reference.py --setup-venv`: onnxruntime-genai,
onnxruntime, onnx, onnx-ir, torch, transformers). phiquant: `phiquant export --target cpu-int4`
(the same scheme: RTN, symmetric, block 32, accuracy_level 4; the MatMulNBits bytes are equal).
Input: the same folder for both, SmolLM2-135M in bf16 as its config declares (target/smollm2-bf16,
made by `phiquant export --model <the shared Q4_1 GGUF> --target hf-bf16`). Both run offline with
CUDA hidden. Each process runs under /usr/bin/time; the two tools alternate run by run; medians of
--runs runs of wall time and peak RSS.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def timed(cmd, env=None):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr[-2000:]}")
    wall, rss = re.findall(r"^([\d.]+) (\d+)$", out.stderr, re.M)[-1]
    return float(wall), int(rss) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", required=True)
    ap.add_argument("--model", default=str(ROOT / "target/smollm2-bf16"))
    ap.add_argument("--phiquant", default=None, help="a built phiquant binary (default: cargo build --release)")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    phiquant = a.phiquant
    if phiquant is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
        phiquant = str(ROOT / "target/release/phiquant")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    res = {"peer": [], "phiquant": []}
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as d:
            res["peer"].append(timed([a.peer_python, "-m", "onnxruntime_genai.models.builder", "-i", a.model,
                                      "-o", f"{d}/builder", "-p", "int4", "-e", "cpu", "-c", f"{d}/cache"], env))
            res["phiquant"].append(timed([phiquant, "-q", "export", "--model", a.model, "--target", "cpu-int4",
                                          "--out", f"{d}/pq"], env))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    print(json.dumps({"runs": res, "median": med}, indent=1))
    print("\n| pipeline | wall s (median) | peak RSS MiB (median) |\n|---|---|---|")
    print(f"| onnxruntime-genai builder -p int4 -e cpu | {med['peer'][0]:.2f} | {med['peer'][1]:.0f} |")
    print(f"| phiquant export --target cpu-int4 | {med['phiquant'][0]:.2f} | {med['phiquant'][1]:.0f} |")
    print(f"| ratio phiquant / builder | {med['phiquant'][0] / med['peer'][0]:.3f}x | {med['phiquant'][1] / med['peer'][1]:.2f}x |")


if __name__ == "__main__":
    main()
