#!/usr/bin/env python3
"""The overhead of verification: `phiquant verify` on a cpu-int4 folder against running the same
chunks through ONNX Runtime alone (`phiquant perplexity` on the folder), side by side.

    python3 scripts/bench/verify.py [--phiquant target/release/phiquant] [--runs 5] [--chunks 8]

Input: SmolLM2-135M as the ONNX benchmark has it: `phiquant export --model <the shared Q4_1 GGUF>
--target hf-bf16`, then `--target cpu-int4` from that folder (made under --work when missing).
The two commands alternate run by run on the same corpus, --ctx and --chunks; wall times are
measured around each process. `verify`'s JSON report splits its time into the artefact's runtime
(load, logits of the chunks, greedy generation), the baseline's native engine (load, logits,
generation) and the statistics; the table gives the medians and the ratios to `perplexity`.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
GGUF = ROOT / "../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"


def run(cmd, ok=(0,)):
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode not in ok:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phiquant", default=None, help="a built phiquant binary (default: cargo build --release)")
    ap.add_argument("--work", default=str(ROOT / "target/bench-verify"))
    ap.add_argument("--corpus", default=str(ROOT / "../shared/corpora/sotu.txt"))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    pq = a.phiquant
    if pq is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
        pq = str(ROOT / "target/release/phiquant")
    work = pathlib.Path(a.work)
    bf16, int4 = work / "hf-bf16", work / "cpu-int4"
    if not bf16.is_dir():
        run([pq, "-q", "export", "--model", str(GGUF), "--target", "hf-bf16", "--out", str(work)])
    if not int4.is_dir():
        run([pq, "-q", "export", "--model", str(bf16), "--target", "cpu-int4", "--out", str(work)])
    same = ["--corpus", a.corpus, "--ctx", str(a.ctx), "--chunks", str(a.chunks)]
    rows = []
    for i in range(a.runs):
        ppl_wall, _ = run([pq, "-q", "perplexity", str(int4)] + same)
        with tempfile.TemporaryDirectory() as d:
            report = pathlib.Path(d) / "r.json"
            # Exit 1 is a failed gate: SmolLM2-135M loses more to int4 RTN than the int4 defaults allow.
            wall, _ = run([pq, "-q", "verify", str(int4), "--baseline", str(bf16), "--json", str(report)] + same,
                          ok=(0, 1))
            t = json.loads(report.read_text())["timing"]
        baseline = t["baseline_load_secs"] + t["baseline_logits_secs"] + t["baseline_generation_secs"]
        rows.append({
            "perplexity_wall": ppl_wall,
            "verify_wall": wall,
            "baseline": baseline,
            "artefact_generation": t["artefact_generation_secs"],
            "artefact_logits": t["artefact_logits_secs"],
            "statistics": t["statistics_secs"],
            # The verify process without the baseline engine: what running the same chunks costs
            # when they are also compared (tokenizing, loading, logits, statistics, report).
            "same_chunks": wall - baseline - t["artefact_generation_secs"],
            "artefact_side": wall - baseline,
        })
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()), file=sys.stderr)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(json.dumps({"runs": rows, "median": med}, indent=1))
    ratio = {k: statistics.median(r[k] / r["perplexity_wall"] for r in rows) for k in rows[0]}
    print("\n| measure | seconds (median) | / perplexity (median of the runs' ratios) |\n|---|---:|---:|")
    for label, key in [
        ("`phiquant perplexity` (ONNX Runtime alone), wall", "perplexity_wall"),
        ("`phiquant verify`, wall", "verify_wall"),
        ("  of which the baseline (native engine: load, logits, generation)", "baseline"),
        ("  of which the artefact's greedy generation check", "artefact_generation"),
        ("  of which the artefact's logits of the chunks", "artefact_logits"),
        ("  of which the statistics", "statistics"),
        ("verify without the baseline and the generation check (the same chunks)", "same_chunks"),
        ("verify without the baseline (generation check included)", "artefact_side"),
    ]:
        print(f"| {label} | {med[key]:.2f} | {ratio[key]:.2f}x |")


if __name__ == "__main__":
    main()
