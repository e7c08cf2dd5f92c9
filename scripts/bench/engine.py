#!/usr/bin/env python3
"""Prefill and decode speed of phiquant's native engine next to transformers (torch, CPU, fp32),
both on the same number of threads, on SmolLM2-135M, measured in one run.

    PY=/path/to/python-with-torch-and-transformers   # scripts/golden/requirements-torch.txt
    $PY scripts/bench/engine.py [--threads 2] [--runs 5] [--prompt-tokens 128] [--new-tokens 64]

SmolLM2's Hugging Face weights are made once from the shared GGUF by
scripts/golden/smollm2_hf.py into target/smollm2-hf (outside git). phiquant runs through its CLI
(`phiquant generate --json` reports its own prefill and decode timings, excluding model loading);
transformers runs a forward over the prompt, then one token at a time with its KV cache, greedy.
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
SHARED = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--model-dir", default=str(ROOT / "target" / "smollm2-hf"))
    args = ap.parse_args()

    model_dir = pathlib.Path(args.model_dir)
    if not (model_dir / "model.safetensors").exists():
        gguf = next(SHARED.glob("*.gguf"))
        subprocess.run([sys.executable, str(ROOT / "scripts/golden/smollm2_hf.py"), "--gguf", str(gguf),
                        "--config-dir", str(SHARED), "--out", str(model_dir)], check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = (ROOT.parent / "shared" / "corpora" / "sotu.txt").read_text()[:20000]
    ids = tok.encode(text, add_special_tokens=False).ids[: args.prompt_tokens]
    prompt = tok.decode(ids)
    # The prompt as phiquant will tokenize it (no BOS for this tokenizer).
    ids = tok.encode(prompt, add_special_tokens=False).ids

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()

    def torch_run():
        with torch.inference_mode():
            x = torch.tensor([ids])
            t = time.perf_counter()
            out = model(input_ids=x, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            prefill = time.perf_counter() - t
            past = out.past_key_values
            t = time.perf_counter()
            for _ in range(args.new_tokens - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            decode = time.perf_counter() - t
        return len(ids) / prefill, (args.new_tokens - 1) / decode

    def phiquant_run():
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = subprocess.run([str(ROOT / "target/release/phiquant"), "-q", "generate", str(model_dir), "--prompt", prompt,
                              "--max-tokens", str(args.new_tokens), "--ignore-eos", "--json"],
                             env=env, check=True, capture_output=True, text=True).stdout
        t = json.loads(out)["timing"]
        assert t["prefill_tokens"] == len(ids), (t["prefill_tokens"], len(ids))
        return t["prefill_tokens_per_sec"], t["decode_tokens_per_sec"]

    torch_run()  # warm-up
    results = {"torch": [], "phiquant": []}
    for _ in range(args.runs):  # interleaved, so that machine noise hits both
        results["torch"].append(torch_run())
        results["phiquant"].append(phiquant_run())
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    print(f"SmolLM2-135M fp32, {args.threads} threads, prompt {len(ids)} tokens, {args.new_tokens} new tokens, "
          f"median of {args.runs} runs (torch {torch.__version__})\n")
    print("| engine | prefill tokens/s | decode tokens/s |")
    print("|---|---|---|")
    for k, (p, d) in med.items():
        print(f"| {k} | {p:.1f} | {d:.2f} |")
    p = med["phiquant"][0] / med["torch"][0]
    d = med["phiquant"][1] / med["torch"][1]
    print(f"| ratio phiquant / torch | {p:.2f}x | {d:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
