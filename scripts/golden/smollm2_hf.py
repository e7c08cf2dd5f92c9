#!/usr/bin/env python3
"""Rebuild a transformers-loadable SmolLM2 folder from the shared GGUF.

The shared folder holds SmolLM2-135M-Instruct only as a GGUF file (Q4_1
weights, Q8_0 embeddings) plus the Hugging Face config.json and tokenizer
files. This script writes DIR with

* config.json, tokenizer.json, tokenizer_config.json (and LICENSE), copied
  byte for byte from --config-dir;
* model.safetensors: every GGUF tensor dequantized to float32 with gguf-py
  (``gguf.quants.dequantize``), renamed from llama.cpp's names to the Hugging
  Face ones, with the q/k row permutation of llama.cpp's
  ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) undone.

The weights are the GGUF's, so they sit on the Q4_1 / Q8_0 grid, not on the
original bfloat16 values. config.json still says ``"torch_dtype":
"bfloat16"`` (it is the upstream file); load with ``dtype=torch.float32``.

Usage::

    python scripts/golden/smollm2_hf.py \\
        --gguf ../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --config-dir ../shared/models/smollm2-135m-instruct --out /tmp/smollm2-hf \\
        [--verify] [--ppl ../shared/corpora/sotu.txt]

DIR must be outside the repository: it holds third-party weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

COPIED = ["config.json", "tokenizer.json", "tokenizer_config.json", "LICENSE"]

# llama.cpp name (without ".weight") -> Hugging Face name
GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF -> GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute (GGUF -> HF): within each head, rows
    [p0 q0 p1 q1 ...] (llama.cpp's interleaved rope pairs) go back to
    [p0 p1 ... q0 q1 ...] (rotate_half halves)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, layer, part = base.split(".", 2)
        return f"model.layers.{int(layer)}.{LAYER_NAMES[part]}.{suffix}"
    return f"{GLOBAL_NAMES[base]}.{suffix}"


def field(reader, key: str):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def convert(gguf_path: Path, config_dir: Path, out: Path) -> dict:
    import gguf
    from safetensors.numpy import save_file

    cfg = json.loads((config_dir / "config.json").read_text())
    reader = gguf.GGUFReader(str(gguf_path))
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"{gguf_path}: architecture {arch!r}, expected 'llama'")
    n_head = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv"))
    for key, want in [
        ("llama.attention.head_count", cfg["num_attention_heads"]),
        ("llama.attention.head_count_kv", cfg["num_key_value_heads"]),
        ("llama.block_count", cfg["num_hidden_layers"]),
        ("llama.embedding_length", cfg["hidden_size"]),
        ("llama.feed_forward_length", cfg["intermediate_size"]),
        ("llama.rope.freq_base", cfg["rope_theta"]),
    ]:
        if field(reader, key) != want:
            raise SystemExit(f"{gguf_path}: {key} = {field(reader, key)}, config.json says {want}")

    tensors: dict[str, np.ndarray] = {}
    types: dict[str, int] = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF ne[] is innermost first
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
        name = hf_name(t.name)
        if t.name.endswith("attn_q.weight"):
            u = unpermute(w, n_head)
            assert np.array_equal(permute(u, n_head), w)
            w = u
        elif t.name.endswith("attn_k.weight"):
            u = unpermute(w, n_kv)
            assert np.array_equal(permute(u, n_kv), w)
            w = u
        tensors[name] = np.ascontiguousarray(w)
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    if cfg.get("tie_word_embeddings") and "lm_head.weight" in tensors:
        raise SystemExit("tied embeddings, but the GGUF has an output.weight")

    out.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(tensors.items())), str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in COPIED:
        if (config_dir / name).exists():
            shutil.copyfile(config_dir / name, out / name)
    return {
        "tensors": len(tensors),
        "gguf_types": types,
        "params": int(sum(a.size for a in tensors.values())),
        "add_bos": bool(field(reader, "tokenizer.ggml.add_bos_token")),
        "bos_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
    }


def verify(out: Path, ppl_corpus: Path | None, ctx: int, chunks: int, add_bos: bool, bos_id: int) -> None:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    print(f"loading info: {bad or 'no missing, unexpected or mismatched keys'}")
    if bad:
        raise SystemExit(1)
    model.eval()

    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    new: list[int] = []
    with torch.no_grad():
        o = model(input_ids=torch.tensor([ids]), use_cache=True)
        for _ in range(48):
            nxt = int(torch.argmax(o.logits[0, -1]))
            if nxt == eos:
                break
            new.append(nxt)
            o = model(input_ids=torch.tensor([[nxt]]), past_key_values=o.past_key_values, use_cache=True)
    print(f"chat prompt: {prompt!r}")
    print(f"greedy reply: {tok.decode(new)!r}")

    if ppl_corpus is not None:
        sys.path.insert(0, str(HERE))
        from engine import perplexity

        tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
        text = ppl_corpus.read_text(encoding="utf-8")
        t0 = time.time()
        record, _ = perplexity(torch, model, tokenizer, text, ctx, chunks, add_bos, bos_id)
        print(
            f"perplexity on {ppl_corpus.name}: {record['ppl']:.4f} ({chunks} chunks of {ctx}, "
            f"{record['tokens_scored']} tokens scored, second half; full window "
            f"{record['full_window']['ppl']:.4f}; {time.time() - t0:.0f} s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--config-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--verify", action="store_true", help="load DIR with transformers and decode a chat prompt")
    ap.add_argument("--ppl", type=Path, help="also compute llama-perplexity style PPL on this text (implies --verify)")
    ap.add_argument("--ppl-ctx", type=int, default=512)
    ap.add_argument("--ppl-chunks", type=int, default=8)
    args = ap.parse_args()

    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit(f"{out} is inside the repository; write the third-party weights somewhere else")

    t0 = time.time()
    info = convert(args.gguf, args.config_dir, out)
    print(f"wrote {out}: {json.dumps(info, sort_keys=True)} in {time.time() - t0:.0f} s")
    if args.verify or args.ppl:
        verify(out, args.ppl, args.ppl_ctx, args.ppl_chunks, info["add_bos"], info["bos_id"])


if __name__ == "__main__":
    sys.exit(main())
