#!/usr/bin/env python3
"""AWQ's cost: wall time and peak RSS of `phiquant export --algo awq` on SmolLM2-135M, group 128,
asymmetric cpu-int4, calibrated on --samples x --len tokens of tinystories-val.txt.

    python3 scripts/bench/awq.py [--phiquant target/release/phiquant] [--runs 3] \
        [--calib 32x512 --calib 128x512] [--threads 2] [--also=--awq-no-refit]

Input: SmolLM2-135M as the other benchmarks have it (`phiquant export --model <the shared Q4_1
GGUF> --target hf-bf16`, made under --work when missing). Each run is a fresh process with
RAYON_NUM_THREADS=--threads; wall time is measured around the process and peak RSS is the
child's ru_maxrss. The same export with --algo rtn is timed alongside, so that the AWQ search's
own cost is the difference. Each --also (repeatable; AWQ options, space-separated) adds, for
every --calib, the same export with those options, run in turn with the defaults in each round
so that the variants are measured side by side. Prints a Markdown table of medians.
"""
import argparse
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
GGUF = ROOT / "../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB = ROOT / "../shared/corpora/tinystories-val.txt"


def timed(cmd, env):
    """Runs `cmd` in a fresh process: (wall seconds, peak RSS in MiB). ru_maxrss of
    RUSAGE_CHILDREN is the largest child so far, so each configuration is measured in an
    interpreter of its own (--one) that runs nothing else."""
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak / 1024.0, out.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phiquant", default=None, help="a built phiquant binary (default: cargo build --release)")
    ap.add_argument("--work", default=str(ROOT / "target/bench-awq"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", action="append", default=None, help="SAMPLESxLEN (repeatable)")
    ap.add_argument("--also", action="append", default=[], help="AWQ options of a variant (repeatable)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    phiquant = a.phiquant
    if phiquant is None:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        phiquant = str(ROOT / "target/release/phiquant")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    model = work / "smollm2-bf16"
    if not (model / "model.safetensors").exists():
        subprocess.run([phiquant, "export", "--quiet", "--model", str(GGUF), "--target", "hf-bf16",
                        "--out", str(work)], check=True)
        (work / "hf-bf16").rename(model)

    def command(algo, calib, opts):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [phiquant, "export", "--quiet", "--model", str(model), "--target", "cpu-int4",
               "--group-size", "128", "--asymmetric", "--algo", algo, "--out", str(out)]
        if algo == "awq":
            samples, length = calib.split("x")
            cmd += ["--calib", str(CALIB), "--calib-samples", samples, "--calib-len", length]
            cmd += opts.split()
        return cmd

    if a.one:
        # A child interpreter measuring one configuration (so that ru_maxrss is its own).
        algo, calib = a.one.split(":")
        wall, rss, _ = timed(command(algo, calib, a.opts), env)
        print(f"{wall} {rss}")
        return

    configs = [("rtn", "-", "")] + [
        ("awq", c, opts) for c in (a.calib or ["32x512", "128x512"]) for opts in [""] + a.also
    ]
    results = {c: [] for c in configs}
    for i in range(a.runs):
        for algo, calib, opts in configs:
            child = [sys.executable, __file__, "--phiquant", phiquant, "--work", str(work),
                     "--threads", str(a.threads), "--one", f"{algo}:{calib}", f"--opts={opts}"]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout.split()
            wall, rss = float(out[0]), float(out[1])
            results[(algo, calib, opts)].append((wall, rss))
            print(f"run {i + 1}: {algo} {calib} {opts}: {wall:.1f} s, {rss:.0f} MiB", file=sys.stderr)

    print(f"| export cpu-int4 g128 asym, {a.threads} threads | wall (median of {a.runs}) | peak RSS |")
    print("|---|---|---|")
    for (algo, calib, opts), rs in results.items():
        name = "RTN" if algo == "rtn" else f"AWQ, calibration {calib}" + (f", {opts}" if opts else "")
        wall = statistics.median(r[0] for r in rs)
        rss = statistics.median(r[1] for r in rs)
        print(f"| {name} | {wall:.1f} s | {rss:.0f} MiB |")


if __name__ == "__main__":
    main()
