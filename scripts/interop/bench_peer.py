#!/usr/bin/env python3
"""Peer side of the HF -> GGUF Q4_0 benchmark: llama.cpp's own two-step pipeline.

Step 1: ``convert_hf_to_gguf.py MODEL --outtype f16 --outfile W/model-f16.gguf``
Step 2: ``llama_model_quantize(W/model-f16.gguf, W/model-q4_0.gguf, ftype=LLAMA_FTYPE_MOSTLY_Q4_0)``
        with ``llama_model_quantize_default_params()`` otherwise (not pure; nthread 0 = all cores),
        through llama-cpp-python 0.3.36 (scripts/interop/lcpp_quantize.py).

Each step runs as its own process under ``/usr/bin/time -v`` (Debian package
``time``), which gives its wall time and peak RSS; the wall time is also taken
around the process with ``time.perf_counter``. ``--runs`` runs (default 5), one
after the other, the outputs deleted after every run; the medians are printed
as a Markdown table and everything is written to ``--out`` as JSON.

Usage::

    python3 scripts/interop/bench_peer.py --python /tmp/lcppvenv/bin/python \\
        --converter target/interop/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py \\
        --model target/smollm2-hf --runs 5

Keep the machine otherwise idle while it runs. The first run reads the
safetensors file from disk; the later ones find it in the page cache (the
median is of all runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TIME = "/usr/bin/time"


def timed(cmd: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([TIME, "-v"] + cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if rc != 0:
        sys.exit(f"failed ({rc}): {' '.join(cmd)}\n" + "\n".join(text.splitlines()[-30:]))

    def field(pat: str) -> str:
        m = re.search(pat, text)
        if not m:
            sys.exit(f"{log}: no '{pat}' in the output of /usr/bin/time -v")
        return m.group(1)

    el = field(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([0-9:.]+)")
    secs = 0.0
    for part in el.split(":"):
        secs = secs * 60 + float(part)
    return {
        "wall_s": wall,
        "time_elapsed_s": secs,
        "user_s": float(field(r"User time \(seconds\): ([0-9.]+)")),
        "sys_s": float(field(r"System time \(seconds\): ([0-9.]+)")),
        "max_rss_kib": int(field(r"Maximum resident set size \(kbytes\): ([0-9]+)")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="venv python with torch, transformers, sentencepiece, llama_cpp")
    ap.add_argument("--converter", default=str(REPO / "target" / "interop" / "sdist" / "llama_cpp_python-0.3.36" /
                                                "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"))
    ap.add_argument("--model", default=str(REPO / "target" / "smollm2-hf"))
    ap.add_argument("--work", default=str(REPO / "target" / "interop" / "bench"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", help="JSON results (default WORK/peer.json)")
    args = ap.parse_args()
    if not Path(TIME).exists():
        sys.exit(f"{TIME} is missing: apt-get install time")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    f16 = work / "model-f16.gguf"
    q4 = work / "model-q4_0.gguf"
    conv = [args.python, args.converter, args.model, "--outtype", "f16", "--outfile", str(f16)]
    quant = [args.python, str(HERE / "lcpp_quantize.py"), str(f16), str(q4), "--ftype", "Q4_0"]
    runs = []
    for i in range(args.runs):
        for p in (f16, q4):
            p.unlink(missing_ok=True)
        r = {"loadavg_before": list(os.getloadavg()),
             "convert_f16": timed(conv, work / f"run{i}-convert.log"),
             "sizes": {}}
        r["quantize_q4_0"] = timed(quant, work / f"run{i}-quantize.log")
        r["sizes"] = {"f16": f16.stat().st_size, "q4_0": q4.stat().st_size}
        r["total_wall_s"] = r["convert_f16"]["wall_s"] + r["quantize_q4_0"]["wall_s"]
        r["loadavg_after"] = list(os.getloadavg())
        runs.append(r)
        print(f"run {i}: convert {r['convert_f16']['wall_s']:.2f} s / {r['convert_f16']['max_rss_kib'] / 1024:.0f} MiB, "
              f"quantize {r['quantize_q4_0']['wall_s']:.2f} s / {r['quantize_q4_0']['max_rss_kib'] / 1024:.0f} MiB; "
              f"load average before {r['loadavg_before'][0]:.2f}",
              flush=True)
    for p in (f16, q4):
        p.unlink(missing_ok=True)

    # context: what the two processes cost before doing any work (interpreter + imports)
    baseline = {}
    for key, code in (("import_converter_deps", "import torch, transformers, numpy, sentencepiece"),
                      ("import_llama_cpp", "import llama_cpp")):
        samples = [timed([args.python, "-c", code], work / f"baseline-{key}-{i}.log") for i in range(args.runs)]
        baseline[key] = {"code": code, **{k: statistics.median(x[k] for x in samples)
                                          for k in ("wall_s", "user_s", "sys_s", "max_rss_kib")}}

    def med(step: str, key: str) -> float:
        return statistics.median(r[step][key] for r in runs)

    summary = {
        step: {k: med(step, k) for k in ("wall_s", "time_elapsed_s", "user_s", "sys_s", "max_rss_kib")}
        for step in ("convert_f16", "quantize_q4_0")
    }
    summary["total_wall_s"] = statistics.median(r["total_wall_s"] for r in runs)
    summary["peak_rss_kib"] = max(summary["convert_f16"]["max_rss_kib"], summary["quantize_q4_0"]["max_rss_kib"])
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "platform": platform.platform()},
        "commands": {"convert_f16": " ".join(conv), "quantize_q4_0": " ".join(quant)},
        "runs": runs,
        "median": summary,
        "baseline_median": baseline,
    }
    out = Path(args.out) if args.out else work / "peer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    c, q = summary["convert_f16"], summary["quantize_q4_0"]
    print()
    print(f"medians of {len(runs)} runs")
    print("| step | wall s | user s | sys s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    print(f"| convert_hf_to_gguf.py --outtype f16 | {c['wall_s']:.2f} | {c['user_s']:.2f} | {c['sys_s']:.2f} | {c['max_rss_kib'] / 1024:.0f} |")
    print(f"| llama_model_quantize Q4_0 (from f16) | {q['wall_s']:.2f} | {q['user_s']:.2f} | {q['sys_s']:.2f} | {q['max_rss_kib'] / 1024:.0f} |")
    print(f"| total (median of per-run sums) | {summary['total_wall_s']:.2f} | | | {summary['peak_rss_kib'] / 1024:.0f} (max of the two) |")
    for key, b in baseline.items():
        print(f"baseline `python -c '{b['code']}'`: {b['wall_s']:.2f} s wall, {b['user_s']:.2f} s user, "
              f"{b['max_rss_kib'] / 1024:.0f} MiB peak RSS")
    print(f"sizes: f16 {runs[-1]['sizes']['f16']} bytes, q4_0 {runs[-1]['sizes']['q4_0']} bytes; wrote {out}")


if __name__ == "__main__":
    main()
