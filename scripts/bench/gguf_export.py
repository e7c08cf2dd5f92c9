#!/usr/bin/env python3
"""HF checkpoint to a Q4_0 GGUF: phiquant against llama.cpp's own pipeline, side by side.

    python3 scripts/bench/gguf_export.py --peer-python /tmp/lcppvenv/bin/python [--runs 5]

Peer (llama.cpp commit of the llama-cpp-python 0.3.36 sdist; set up by
`scripts/interop/make_references.py --setup-venv`): `convert_hf_to_gguf.py --outtype f16`, then
`llama_model_quantize` Q4_0 with default parameters. phiquant: `phiquant export --target gguf-q4_0`
(the same default type choice). Input: SmolLM2-135M's HF folder (target/smollm2-hf, made by
scripts/golden/smollm2_hf.py). Each process runs under /usr/bin/time; the two tools alternate run by
run; medians of --runs runs of wall time and peak RSS.
"""
import argparse
import json
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONVERT = ROOT / "target/interop/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"


def timed(cmd):
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr[-2000:]}")
    wall, rss = re.findall(r"^([\d.]+) (\d+)$", out.stderr, re.M)[-1]
    return float(wall), int(rss) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", required=True)
    ap.add_argument("--model", default=str(ROOT / "target/smollm2-hf"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    phiquant = str(ROOT / "target/release/phiquant")
    res = {"peer": [], "phiquant": []}
    for _ in range(a.runs):
        with tempfile.TemporaryDirectory() as d:
            f16, q4 = f"{d}/m-f16.gguf", f"{d}/m-q4_0.gguf"
            w1, r1 = timed([a.peer_python, str(CONVERT), a.model, "--outtype", "f16", "--outfile", f16])
            w2, r2 = timed([a.peer_python, str(ROOT / "scripts/interop/lcpp_quantize.py"), f16, q4, "--ftype", "Q4_0"])
            res["peer"].append((w1 + w2, max(r1, r2)))
            w, r = timed([phiquant, "-q", "export", "--model", a.model, "--target", "gguf-q4_0", "--out", f"{d}/pq"])
            res["phiquant"].append((w, r))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    print(json.dumps({"runs": res, "median": med}, indent=1))
    print("\n| pipeline | wall s (median) | peak RSS MiB (median) |\n|---|---|---|")
    print(f"| llama.cpp: convert_hf_to_gguf --outtype f16 + llama_model_quantize Q4_0 | {med['peer'][0]:.2f} | {med['peer'][1]:.0f} |")
    print(f"| phiquant export --target gguf-q4_0 | {med['phiquant'][0]:.2f} | {med['phiquant'][1]:.0f} |")
    print(f"| ratio phiquant / llama.cpp | {med['phiquant'][0] / med['peer'][0]:.3f}x | {med['phiquant'][1] / med['peer'][1]:.2f}x |")


if __name__ == "__main__":
    main()
