#!/usr/bin/env python3
"""Facts about the reference GGUF files that make_references.py wrote.

Usage::

    python scripts/interop/analyze.py --cache target/interop --gguf-py SDIST/vendor/llama.cpp/gguf-py

Prints, for each model:

* the q/k row permutation: which Hugging Face row each row of the f32 GGUF's
  ``blk.0.attn_q.weight`` / ``attn_k.weight`` holds (or, for Phi-3, whether
  ``attn_qkv`` / ``ffn_up`` are the HF ``qkv_proj`` / ``gate_up_proj`` as is);
* the tensor types of every variant, grouped by tensor (``blk.N.`` folded);
* which tensors two variants store byte-identically (converter q8_0 vs
  llama_model_quantize Q8_0; Q4_0 from f32 vs from f16).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

VARIANTS = ("f32", "f16", "q8_0", "q4_0-pure", "q8_0-pure", "q4_k_m", "q4_0-pure-from-f16", "q4_0-from-f16")


def load_gguf(gguf, path: Path):
    r = gguf.GGUFReader(str(path), "r")
    return {t.name: t for t in r.tensors}


def hf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def row_map(gg: np.ndarray, hf: np.ndarray) -> list[int]:
    """For each row of gg, the index of the identical row of hf (-1 if none)."""
    index = {hf[j].tobytes(): j for j in range(hf.shape[0])}
    return [index.get(gg[i].tobytes(), -1) for i in range(gg.shape[0])]


def expected_permutation(n_rows: int, n_head: int) -> list[int]:
    """convert_hf_to_gguf.py LlamaModel.permute: reshape(n_head, 2, d/2, -1).swapaxes(1, 2)."""
    d = n_rows // n_head
    return [h * d + c * (d // 2) + r for h in range(n_head) for r in range(d // 2) for c in range(2)]


def fold(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blk":
        return "blk.*." + ".".join(parts[2:])
    return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--gguf-py")
    ap.add_argument("--shared-models", required=True)
    ap.add_argument("--smollm2-hf", required=True)
    ap.add_argument("--models", default="stories260K,stories260K-phi3,smollm2-135m")
    args = ap.parse_args()
    if args.gguf_py:
        sys.path.insert(0, args.gguf_py)
    import gguf
    import json

    srcs = {"stories260K": Path(args.shared_models) / "stories260K",
            "stories260K-phi3": Path(args.shared_models) / "stories260K-phi3",
            "smollm2-135m": Path(args.smollm2_hf)}
    for name in args.models.split(","):
        print(f"=== {name}")
        cache = Path(args.cache) / name
        files = {v: cache / f"{name}-{v}.gguf" for v in VARIANTS}
        g = {v: load_gguf(gguf, f) for v, f in files.items() if f.is_file()}
        cfg = json.loads((srcs[name] / "config.json").read_text())
        hf = hf_tensors(srcs[name])
        n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

        # permutation
        f32 = g["f32"]
        if "blk.0.attn_q.weight" in f32:
            for gname, hname, nh in (("attn_q", "q_proj", n_head), ("attn_k", "k_proj", n_kv)):
                gg = f32[f"blk.0.{gname}.weight"].data
                hh = hf[f"model.layers.0.self_attn.{hname}.weight"]
                m = row_map(gg, hh)
                exp = expected_permutation(hh.shape[0], nh)
                d = hh.shape[0] // nh
                print(f"blk.0.{gname}.weight: GGUF shape (ne0, ne1) = {[int(x) for x in f32[f'blk.0.{gname}.weight'].shape]}, "
                      f"HF {hname} [{hh.shape[0]}, {hh.shape[1]}], n_head = {nh}, head_dim = {d}")
                print(f"  GGUF row i holds HF row: head 0 -> {m[:d]}")
                print(f"  equals LlamaModel.permute (GGUF row h*d + 2r + c = HF row h*d + c*d/2 + r) for all rows: {m == exp}")
                print(f"  identity: {m == list(range(len(m)))}")
                all_ok = all(row_map(f32[f"blk.{b}.{gname}.weight"].data,
                                     hf[f"model.layers.{b}.self_attn.{hname}.weight"]) == exp
                             for b in range(cfg["num_hidden_layers"]))
                print(f"  the same permutation in all {cfg['num_hidden_layers']} layers: {all_ok}")
        else:
            L = cfg["num_hidden_layers"]
            ok = all(np.array_equal(f32[f"blk.{b}.attn_qkv.weight"].data, hf[f"model.layers.{b}.self_attn.qkv_proj.weight"])
                     for b in range(L))
            print(f"blk.N.attn_qkv.weight == HF qkv_proj as is (no q/k permutation), all {L} layers: {ok}")
            ok = all(np.array_equal(f32[f"blk.{b}.ffn_up.weight"].data, hf[f"model.layers.{b}.mlp.gate_up_proj.weight"])
                     for b in range(L))
            print(f"blk.N.ffn_up.weight == HF gate_up_proj as is (gate rows first, then up), all {L} layers: {ok}")
        # embeddings
        emb = f32["token_embd.weight"].data
        print(f"token_embd.weight == HF embed_tokens: {np.array_equal(emb, hf['model.embed_tokens.weight'])}; "
              f"output.weight present: {'output.weight' in f32}")

        # types per variant
        for v, ts in g.items():
            groups: dict[str, Counter] = defaultdict(Counter)
            shapes = {}
            for t in ts.values():
                groups[fold(t.name)][t.tensor_type.name] += 1
                shapes[fold(t.name)] = [int(x) for x in t.shape]
            desc = "; ".join(f"{k} {shapes[k]}: " + ", ".join(f"{ty} x{c}" for ty, c in sorted(cnt.items()))
                             for k, cnt in groups.items())
            print(f"[{v}] {desc}")
            if v in ("q4_k_m", "q4_0-from-f16"):
                per_layer = defaultdict(list)
                for t in ts.values():
                    if t.name.startswith("blk."):
                        per_layer[fold(t.name)].append((int(t.name.split(".")[1]), t.tensor_type.name))
                for k, lst in per_layer.items():
                    if len({ty for _, ty in lst}) > 1:
                        print(f"  {v} {k} by layer: " + " ".join(f"{i}:{ty}" for i, ty in sorted(lst)))

        def same(a: str, b: str) -> None:
            if a not in g or b not in g:
                return
            eq, ne = [], []
            for n, t in g[a].items():
                u = g[b].get(n)
                if u is not None and t.tensor_type == u.tensor_type and t.data.tobytes() == u.data.tobytes():
                    eq.append(n)
                else:
                    ne.append(n)
            print(f"{a} vs {b}: {len(eq)} tensors byte-identical, {len(ne)} differ"
                  + (f" ({', '.join(ne[:6])}{' ...' if len(ne) > 6 else ''})" if ne else ""))

        # llama_model_quantize's bytes against gguf-py's numpy quantizers on the f32 (or f16) source
        from gguf import quants
        for v, src in (("q4_0-pure", "f32"), ("q8_0-pure", "f32"), ("q4_k_m", "f32"), ("q4_0-pure-from-f16", "f16"), ("q4_0-from-f16", "f16")):
            if v not in g:
                continue
            counts: Counter = Counter()
            for n, t in g[v].items():
                ty = t.tensor_type
                s_ = g[src][n]
                if ty.name == s_.tensor_type.name:
                    continue
                if ty.name not in ("Q4_0", "Q8_0", "Q5_0", "F16"):
                    counts[f"{ty.name} not checked (gguf-py has no quantizer)"] += 1
                    continue
                x = np.asarray(s_.data, dtype=np.float32)
                ref = quants.quantize(x, ty) if ty.name != "F16" else x.astype(np.float16)
                counts[f"{ty.name} {'equal' if ref.tobytes() == t.data.tobytes() else 'DIFFERENT'}"] += 1
            print(f"{v}: llama_model_quantize vs gguf-py numpy quantize of the {src} tensors: "
                  + ", ".join(f"{k} x{c}" for k, c in sorted(counts.items())))
        same("q8_0", "q8_0-pure")
        same("q4_0-pure", "q4_0-pure-from-f16")
        same("f32", "f16")
        print()


if __name__ == "__main__":
    main()
