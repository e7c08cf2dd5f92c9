#!/usr/bin/env python3
"""Golden outputs for phiquant's native CPU engine, taken from transformers.

For each model this runs Hugging Face transformers in float32 on the CPU with
eager attention and writes what the Rust engine must reproduce:

* ``logits.f32``: the full logits of one forward pass over a fixed 32-token
  prompt (``prompt_ids.json``), plus ``logits.json`` with the shape, float64
  checksums and the argmax of every row;
* ``greedy.json``: 32 greedy tokens after a short prompt, decoded with the KV
  cache exactly as ``generate`` would, ties going to the lowest id;
* ``logits_long.f32``: for the LongRoPE fixtures, a forward pass longer than
  ``original_max_position_embeddings`` (the long-factor path), and for the
  sliding-window fixtures one longer than the window;
* ``perplexity.json``: llama.cpp ``llama-perplexity`` style perplexity of the
  real stories260K models on the TinyStories validation text (the corpus is
  read in place; only hashes of its token ids are stored);
* ``tokenize.json``: what ``tokenizer.json`` gives for three fixed strings.

Usage::

    python scripts/golden/engine.py                       # all models
    python scripts/golden/engine.py --out DIR --shared ../shared

See scripts/golden/README.md. Two runs give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

EXPECTED_VERSIONS = {
    "torch": "2.15.0",
    "transformers": "5.23.0",
    "tokenizers": "0.23.3",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}

SCHEMA_VERSION = 1
PROMPT_LEN = 32
GREEDY_NEW_TOKENS = 32
FIXTURE_SEED = 20260521

# (name, where, folder). "shared" folders are read in place from the shared
# directory and never copied into the repository.
MODELS = [
    ("stories260K", "shared", "models/stories260K"),
    ("stories260K-phi3", "shared", "models/stories260K-phi3"),
    ("phi3", "repo", "fixtures/models/phi3"),
    ("phi3-longrope", "repo", "fixtures/models/phi3-longrope"),
    ("phi4-mini", "repo", "fixtures/models/phi4-mini"),
    ("llama", "repo", "fixtures/models/llama"),
    ("mistral", "repo", "fixtures/models/mistral"),
    ("qwen2", "repo", "fixtures/models/qwen2"),
]

# Longer forward passes: the LongRoPE long-factor path (length beyond
# original_max_position_embeddings) and the sliding-window mask (length
# beyond sliding_window).
LONG = {
    "phi3-longrope": (80, "longrope"),
    "phi4-mini": (140, "longrope"),
    "phi3": (80, "sliding_window"),
    "mistral": (48, "sliding_window"),
}

STORIES_PROMPT = "Once upon a time"
CORPUS = "corpora/tinystories-val.txt"
PPL_CTX = 256
PPL_CHUNKS = 16

TOKENIZE_TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "  Two  spaces,\ttab\nnew line; digits 2026, \u00fcn\u00efc\u00f6d\u00e9 and \U0001f642!",
    "<s>special</s> <unk> <|im_start|>user\nHello!<|im_end|><|endoftext|>",
]


# --------------------------------------------------------------------------
# helpers


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_f32(path: Path, a: np.ndarray) -> None:
    path.write_bytes(np.ascontiguousarray(a, dtype="<f4").tobytes())


def checksum(a: np.ndarray) -> dict:
    a64 = np.asarray(a, dtype=np.float64)
    return {
        "sum": float(a64.sum()),
        "sum_sq": float((a64 * a64).sum()),
        "max_abs": float(np.abs(a64).max()),
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    out = {name: importlib.metadata.version(name) for name in EXPECTED_VERSIONS}
    out["python"] = platform.python_version()
    return out


def fixture_ids(n: int, vocab: int, exclude: set[int], bos: int | None) -> list[int]:
    """A fixed id list: BOS (when the config has one), then ids drawn by a
    32-bit LCG (x = 1664525 x + 1013904223 mod 2^32, seeded with
    FIXTURE_SEED) from the ids that are not special tokens. The first 32 ids
    of a longer list are the 32-id list."""
    allowed = [i for i in range(vocab) if i not in exclude]
    ids = [] if bos is None else [bos]
    x = FIXTURE_SEED
    while len(ids) < n:
        x = (1664525 * x + 1013904223) % (1 << 32)
        ids.append(allowed[(x >> 8) % len(allowed)])
    return ids


# --------------------------------------------------------------------------
# model runs


def load(torch, folder: Path, attn: str = "eager"):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation=attn, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"{folder}: loading left {bad}")
    model.eval()
    return model


def forward_logits(torch, model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    logits = out.logits[0].float().numpy()
    assert logits.dtype == np.float32 and logits.shape == (len(ids), model.config.vocab_size)
    return logits


def greedy(torch, model, prompt: list[int], n: int) -> tuple[list[int], list[float], float]:
    """Greedy decoding with the KV cache (prefill, then one token per step),
    argmax with ties to the lowest id. Checked against a full recompute
    without cache at every step; returns the tokens, the top-1 minus top-2
    logit margin of every step, and the largest cached/uncached difference."""
    tokens: list[int] = []
    margins: list[float] = []
    worst = 0.0
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        for _ in range(n):
            last = out.logits[0, -1].float()
            full = forward_logits(torch, model, prompt + tokens)[-1]
            worst = max(worst, float(np.abs(full - last.numpy()).max()))
            nxt = int(torch.argmax(last))
            if int(np.argmax(full)) != nxt:
                raise SystemExit(f"cached and uncached greedy disagree at step {len(tokens)}")
            top2 = torch.topk(last, 2).values
            margins.append(float(top2[0] - top2[1]))
            tokens.append(nxt)
            out = model(
                input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True
            )
    return tokens, margins, worst


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] for every row, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(targets)), targets]


PPL_DEFINITION = (
    "llama.cpp tools/perplexity/perplexity.cpp perplexity() without --ppl-stride. The whole corpus file is "
    "tokenized once with tokenizer.json as llama.cpp's common_tokenize(text, add_special=true) does: "
    "Tokenizer.encode(text, add_special_tokens={add_special}), which {bos_note}. The stream is cut into "
    "consecutive chunks of ctx tokens, chunk c = stream[c*ctx:(c+1)*ctx] for c = 0..chunks-1 (a tail "
    "shorter than ctx is never used). {bos_replace} Each chunk is run on its own (fresh KV cache, positions "
    "0..ctx-1, causal attention). With first = ctx/2, the logits at positions i = first..ctx-2 are scored "
    "against the chunk's tokens i+1 = first+1..ctx-1: nll_i = log(sum_v exp(logits[i][v])) - "
    "logits[i][chunk[i+1]] (here in float64 from the float32 logits; llama.cpp uses a float max, expf terms "
    "summed in double and a double log). That is ctx-1-first scored tokens per chunk, not ctx/2: the "
    "logits at the last position (predicting the token after the chunk) and the target at position first "
    "are not used. nll_sum is the sum over all chunks, ppl = exp(nll_sum / tokens_scored), and per_chunk_nll "
    "is each chunk's sum. full_window scores positions 0..ctx-2 against tokens 1..ctx-1 of the same chunks."
)


def perplexity(torch, model, tokenizer, text: str, ctx: int, chunks: int, add_bos: bool, bos_id: int | None,
               forward=None) -> tuple[dict, np.ndarray]:
    """llama-perplexity semantics; returns the JSON record and the
    [chunks, ctx] token ids actually fed to the model."""
    forward = forward or (lambda ids: forward_logits(torch, model, ids))
    stream = tokenizer.encode(text, add_special_tokens=add_bos).ids
    plain = tokenizer.encode(text, add_special_tokens=False).ids
    if add_bos:
        if stream != [bos_id] + plain:
            raise SystemExit("add_special_tokens=True must add exactly one BOS in front")
    elif stream != plain:
        raise SystemExit("add_special_tokens=True changed the stream of a model without BOS")
    if len(stream) < 2 * ctx or len(stream) < chunks * ctx:
        raise SystemExit(f"the corpus gives only {len(stream)} tokens")
    first = ctx // 2
    fed = np.zeros((chunks, ctx), dtype=np.uint32)
    nll_sum = 0.0
    per_chunk = []
    full_sum = 0.0
    for c in range(chunks):
        chunk = list(stream[c * ctx : (c + 1) * ctx])
        if add_bos:
            chunk[0] = bos_id
        fed[c] = chunk
        logits = forward(chunk)
        tgt = np.array(chunk, dtype=np.int64)
        nll = log_softmax_nll(logits[first : ctx - 1], tgt[first + 1 : ctx])
        per_chunk.append(float(nll.sum()))
        nll_sum += float(nll.sum())
        full_sum += float(log_softmax_nll(logits[: ctx - 1], tgt[1:ctx]).sum())
    n = chunks * (ctx - 1 - first)
    n_full = chunks * (ctx - 1)
    stream_bytes = np.asarray(stream, dtype="<u4").tobytes()
    bos_note = (
        f"puts BOS (id {bos_id}) in front of the text's tokens, since the model adds BOS"
        if add_bos
        else "adds nothing, since the model does not add BOS"
    )
    bos_replace = (
        f"Because the model adds BOS, the first token of every chunk is replaced by BOS (id {bos_id}) "
        "before it is run (chunk 0 already starts with it); the replaced token is never a scoring target."
        if add_bos
        else "The model does not add BOS, so the chunks are run as they are."
    )
    record = {
        "ctx": ctx,
        "chunks": chunks,
        "first_scored": first,
        "scored_logit_positions": [first, ctx - 2],
        "scored_target_positions": [first + 1, ctx - 1],
        "tokens_scored": n,
        "nll_sum": nll_sum,
        "nll_mean": nll_sum / n,
        "ppl": math.exp(nll_sum / n),
        "per_chunk_nll": per_chunk,
        "add_bos": add_bos,
        "bos_id": bos_id if add_bos else None,
        "stream": {
            "tokens": len(stream),
            "head": stream[:16],
            "sha256_u32le": hashlib.sha256(stream_bytes).hexdigest(),
        },
        "full_window": {
            "scored_logit_positions": [0, ctx - 2],
            "scored_target_positions": [1, ctx - 1],
            "tokens_scored": n_full,
            "nll_sum": full_sum,
            "ppl": math.exp(full_sum / n_full),
        },
        "definition": PPL_DEFINITION.format(
            add_special=add_bos, bos_note=bos_note, bos_replace=bos_replace
        ),
    }
    return record, fed


def tokenize_record(tokenizer) -> list[dict]:
    out = []
    for text in TOKENIZE_TEXTS:
        with_special = tokenizer.encode(text, add_special_tokens=True)
        without = tokenizer.encode(text, add_special_tokens=False)
        out.append(
            {
                "text": text,
                "ids_add_special": with_special.ids,
                "ids": without.ids,
                "tokens": without.tokens,
                "decode_skip_special": tokenizer.decode(without.ids, skip_special_tokens=True),
                "decode_keep_special": tokenizer.decode(without.ids, skip_special_tokens=False),
            }
        )
    return out


# --------------------------------------------------------------------------
# independent check: a float64 numpy forward written from the formulas


def numpy_inv_freq(cfg: dict, seq_len: int) -> tuple[np.ndarray, float, int]:
    """inv_freq, the cos/sin factor and the rotary dim, as the engine should
    compute them (see the README): default, llama3 and LongRoPE."""
    rp = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta") or rp["rope_theta"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    base = theta ** (np.arange(0, rot, 2, dtype=np.float64) / rot)
    inv = 1.0 / base
    att = 1.0
    kind = rp.get("rope_type") or rp.get("type") or "default"
    if kind == "longrope":
        orig = cfg["original_max_position_embeddings"]
        ext = np.array(rp["long_factor"] if seq_len > orig else rp["short_factor"], dtype=np.float64)
        inv = 1.0 / (ext * base)
        scale = rp.get("factor") or cfg["max_position_embeddings"] / orig
        att = rp.get("attention_factor") or (
            math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0
        )
    elif kind == "llama3":
        factor, lo, hi = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
        old = rp["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    elif kind != "default":
        raise SystemExit(f"numpy check: rope type {kind} not implemented")
    return inv, att, rot


def numpy_forward(torch, folder: Path, ids: list[int], sliding_window: int | None) -> np.ndarray:
    from safetensors.torch import load_file

    cfg = json.loads((folder / "config.json").read_text())
    w = {}
    for f in sorted(folder.glob("*.safetensors")):
        w.update({k: v.to(torch.float64).numpy() for k, v in load_file(str(f)).items()})
    n, nh, nkv = len(ids), cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    eps = cfg["rms_norm_eps"]
    inv, att, rot = numpy_inv_freq(cfg, n)
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1)) * att
    sin = np.sin(np.concatenate([ang, ang], -1)) * att

    def rope(x):  # [heads, n, hd]: rotate_half over the first rot dims, the rest passes through
        xr, xp = x[..., :rot], x[..., rot:]
        half = np.concatenate([-xr[..., rot // 2 :], xr[..., : rot // 2]], -1)
        return np.concatenate([xr * cos + half * sin, xp], -1)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    q_pos, k_pos = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = k_pos <= q_pos
    if sliding_window is not None:
        allowed &= k_pos > q_pos - sliding_window
    x = w["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        if p + "self_attn.qkv_proj.weight" in w:
            q, k, v = np.split(h @ w[p + "self_attn.qkv_proj.weight"].T, [nh * hd, (nh + nkv) * hd], -1)
        else:
            q, k, v = (h @ w[p + f"self_attn.{t}_proj.weight"].T for t in "qkv")
            if p + "self_attn.q_proj.bias" in w:
                q, k, v = (a + w[p + f"self_attn.{t}_proj.bias"] for a, t in zip((q, k, v), "qkv"))
        q = rope(q.reshape(n, nh, hd).transpose(1, 0, 2))
        k = np.repeat(rope(k.reshape(n, nkv, hd).transpose(1, 0, 2)), nh // nkv, 0)
        v = np.repeat(v.reshape(n, nkv, hd).transpose(1, 0, 2), nh // nkv, 0)
        s = np.where(allowed, q @ k.transpose(0, 2, 1) / math.sqrt(hd), -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + (s @ v).transpose(1, 0, 2).reshape(n, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        if p + "mlp.gate_up_proj.weight" in w:
            g, u = np.split(h @ w[p + "mlp.gate_up_proj.weight"].T, 2, -1)
        else:
            g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    return x @ w.get("lm_head.weight", w["model.embed_tokens.weight"]).T


# --------------------------------------------------------------------------
# one model


def kv_cache_vs_recompute(torch, model, ids: list[int], start: int, end: int, switch: int) -> tuple[float, float]:
    """Prefill ids[:start], then feed ids[start:end] one at a time with the
    KV cache; the largest last-row difference against a full recompute, for
    sequence lengths <= switch and > switch."""
    before = after = 0.0
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[:start]]), use_cache=True)
        for t in range(start, end):
            out = model(input_ids=torch.tensor([[ids[t]]]), past_key_values=out.past_key_values, use_cache=True)
            diff = float(np.abs(out.logits[0, -1].numpy() - forward_logits(torch, model, ids[: t + 1])[-1]).max())
            if t + 1 <= switch:
                before = max(before, diff)
            else:
                after = max(after, diff)
    return before, after


def numpy_check(torch, folder: Path, ids: list[int], logits: np.ndarray, window: int | None) -> float:
    diff = float(np.abs(numpy_forward(torch, folder, ids, window) - logits).max())
    scale = float(np.abs(logits).max())
    if diff > 1e-5 * max(1.0, scale):
        raise SystemExit(f"{folder}: the numpy float64 forward differs from transformers by {diff}")
    return diff


def run_model(torch, name: str, folder: Path, source: str, shared: Path, out: Path) -> dict:
    from tokenizers import Tokenizer

    print(f"== {name} ({source})", flush=True)
    d = out / name
    d.mkdir(parents=True)
    model = load(torch, folder)
    cfg = model.config
    vocab = cfg.vocab_size
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    bos = getattr(cfg, "bos_token_id", None)
    stories = name.startswith("stories")
    files: dict[str, str] = {}
    checks: dict[str, object] = {}

    # prompt
    if stories:
        corpus = (shared / CORPUS).read_text(encoding="utf-8")
        head = tokenizer.encode(STORIES_PROMPT, add_special_tokens=False).ids
        rest = tokenizer.encode(corpus, add_special_tokens=False).ids
        prompt = ([bos] + head + rest)[:PROMPT_LEN]
        prompt_rule = (
            f"[BOS {bos}] + tokenizer.json ids of {STORIES_PROMPT!r} (add_special_tokens=False), then the first "
            f"ids of {CORPUS} (whole file, add_special_tokens=False) up to {PROMPT_LEN} ids"
        )
        greedy_prompt = [bos]
    else:
        n_ids = max(PROMPT_LEN, LONG.get(name, (0, ""))[0])
        all_ids = fixture_ids(n_ids, vocab, special, bos)
        prompt = all_ids[:PROMPT_LEN]
        prompt_rule = (
            "BOS from config.json, then ids from a 32-bit LCG (x = 1664525 x + 1013904223 mod 2^32, seed "
            f"{FIXTURE_SEED}), id = allowed[(x >> 8) % len(allowed)], allowed = non-special ids in order"
        )
        greedy_prompt = prompt[:4]
    assert len(prompt) == PROMPT_LEN and all(0 <= i < vocab for i in prompt)
    write_json(d / "prompt_ids.json", prompt)
    files["prompt_ids"] = "prompt_ids.json"

    # full logits of one forward pass
    logits = forward_logits(torch, model, prompt)
    write_f32(d / "logits.f32", logits)
    write_json(
        d / "logits.json",
        {
            "file": "logits.f32",
            "dtype": "f32",
            "endian": "little",
            "shape": list(logits.shape),
            "layout": "row-major [position, vocab]: row i is the logits after prompt_ids[0..=i]",
            "checksum_f64": checksum(logits),
            "argmax": [int(i) for i in np.argmax(logits, axis=1)],
            "prompt_rule": prompt_rule,
        },
    )
    files["logits"] = "logits.f32"
    files["logits_meta"] = "logits.json"

    # cross-checks that say how tight a comparison can be
    sdpa = load(torch, folder, attn="sdpa")
    checks["max_abs_diff_eager_vs_sdpa"] = float(np.abs(forward_logits(torch, sdpa, prompt) - logits).max())
    del sdpa
    window = getattr(cfg, "sliding_window", None)
    checks["max_abs_diff_numpy_f64"] = numpy_check(torch, folder, prompt, logits, window)

    # greedy
    toks, margins, worst = greedy(torch, model, greedy_prompt, GREEDY_NEW_TOKENS)
    checks["max_abs_diff_kv_cache_vs_recompute"] = worst
    greedy_rec = {
        "prompt_ids": greedy_prompt,
        "token_ids": toks,
        "top1_minus_top2": margins,
        "text": tokenizer.decode(greedy_prompt + toks, skip_special_tokens=True),
        "rule": (
            "prefill prompt_ids, then feed one token at a time with the KV cache; next = argmax of the last "
            "logits row (ties to the lowest id, torch.argmax); no sampling, no repetition penalty, no stop "
            "on EOS; text = tokenizer.json decode(prompt_ids + token_ids, skip_special_tokens=True)"
        ),
    }
    write_json(d / "greedy.json", greedy_rec)
    files["greedy"] = "greedy.json"
    print(f"   greedy: {greedy_rec['text']!r}" if stories else f"   greedy: {toks}", flush=True)

    # long forward
    if name in LONG:
        n_long, why = LONG[name]
        long_ids = all_ids[:n_long]
        assert long_ids[:PROMPT_LEN] == prompt
        long_logits = forward_logits(torch, model, long_ids)
        checks["max_abs_diff_numpy_f64_long"] = numpy_check(torch, folder, long_ids, long_logits, window)
        write_json(d / "prompt_long_ids.json", long_ids)
        write_f32(d / "logits_long.f32", long_logits)
        meta = {
            "file": "logits_long.f32",
            "dtype": "f32",
            "endian": "little",
            "shape": list(long_logits.shape),
            "prompt": "prompt_long_ids.json (its first 32 ids are prompt_ids)",
            "checksum_f64": checksum(long_logits),
            "argmax": [int(i) for i in np.argmax(long_logits, axis=1)],
            "purpose": why,
        }
        prefix_diff = lambda a: float(np.abs(a[:PROMPT_LEN] - logits).max())  # noqa: E731
        if why == "longrope":
            rp = cfg.rope_parameters
            orig = rp["original_max_position_embeddings"]
            assert n_long > orig
            re = model.model.rotary_emb
            meta["longrope"] = {
                "original_max_position_embeddings": orig,
                "max_position_embeddings": cfg.max_position_embeddings,
                "seq_len": n_long,
                "factor_set": "long_factor",
                "rule": (
                    "transformers picks one factor set per forward call from seq_len = max(position_ids) + 1: "
                    "long_factor when seq_len > original_max_position_embeddings, else short_factor, for "
                    "every position of the call"
                ),
                "attention_factor": re.attention_scaling,
                "attention_factor_rule": (
                    "sqrt(1 + ln(max_position_embeddings / original_max_position_embeddings) / "
                    "ln(original_max_position_embeddings)), multiplied into both cos and sin, for the short "
                    "and the long factors alike"
                ),
                "rotary_dim": int(re.inv_freq.numel() * 2),
            }
            meta["longrope"]["kv_cache"] = (
                "decoding with a KV cache applies the rule per call, so keys cached while seq_len <= original "
                "keep the short-factor rotation after the switch: from seq_len original+1 on, cached decoding "
                "no longer matches a full recompute (checks.longrope_kv_cache_diff_after_switch)"
            )
            checks["longrope_kv_cache_diff_before_switch"], checks["longrope_kv_cache_diff_after_switch"] = (
                kv_cache_vs_recompute(torch, model, long_ids, orig - 4, orig + 4, orig)
            )
            checks["longrope_prefix_diff_vs_short_run"] = prefix_diff(long_logits)
            checks["longrope_prefix_diff_at_original_len"] = prefix_diff(forward_logits(torch, model, long_ids[:orig]))
            checks["longrope_prefix_diff_at_original_len_plus_1"] = prefix_diff(
                forward_logits(torch, model, long_ids[: orig + 1])
            )
        else:
            assert window is not None and n_long > window
            meta["sliding_window"] = {
                "window": window,
                "rule": "query position q attends key positions k with q - window < k <= q (window keys including itself)",
            }
            saved = cfg.sliding_window
            cfg.sliding_window = None
            try:
                checks["sliding_window_diff_vs_full_causal"] = float(
                    np.abs(forward_logits(torch, model, long_ids) - long_logits).max()
                )
            finally:
                cfg.sliding_window = saved
            checks["sliding_window_prefix_diff_vs_short_run"] = prefix_diff(long_logits)
        write_json(d / "logits_long.json", meta)
        files["prompt_long"] = "prompt_long_ids.json"
        files["logits_long"] = "logits_long.f32"
        files["logits_long_meta"] = "logits_long.json"

    # tokenizer
    write_json(d / "tokenize.json", tokenize_record(tokenizer))
    files["tokenize"] = "tokenize.json"

    # perplexity
    if stories:
        record, fed = perplexity(torch, model, tokenizer, corpus, PPL_CTX, PPL_CHUNKS, True, bos)
        record["corpus"] = CORPUS
        record["corpus_sha256"] = sha256_file(shared / CORPUS)
        # The ids themselves are not stored: they would be a copy of the
        # shared corpus. Per-chunk hashes locate a tokenizer mismatch.
        record["chunk_sha256_u32le"] = [hashlib.sha256(row.astype("<u4").tobytes()).hexdigest() for row in fed]
        write_json(d / "perplexity.json", record)
        files["perplexity"] = "perplexity.json"
        print(f"   ppl {record['ppl']:.4f} over {record['tokens_scored']} tokens; "
              f"full window {record['full_window']['ppl']:.4f}", flush=True)

    src_files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "LICENSE")
    return {
        "source": source,
        "architecture": cfg.architectures[0],
        "vocab_size": vocab,
        "source_sha256": {f: sha256_file(folder / f) for f in src_files},
        "files": dict(sorted(files.items())),
        "checks": checks,
        "_logits": logits,
    }


# --------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "fixtures/golden/engine")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                    help="the shared data folder (models/, corpora/); read in place")
    ap.add_argument("--models", nargs="*", help="only these models (default: all)")
    ap.add_argument("--allow-other-versions", action="store_true",
                    help="run even when the packages differ from the pinned versions")
    args = ap.parse_args()

    have = versions()
    wrong = {k: (have[k], v) for k, v in EXPECTED_VERSIONS.items() if have[k] != v}
    if wrong and not args.allow_other_versions:
        raise SystemExit(f"package versions differ from the pins (have, want): {wrong}")

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    names = [m[0] for m in MODELS]
    chosen = args.models or names
    unknown = set(chosen) - set(names)
    if unknown:
        raise SystemExit(f"unknown models: {sorted(unknown)}")

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    models = {}
    for name, where, rel in MODELS:
        if name not in chosen:
            continue
        folder = (args.shared if where == "shared" else REPO) / rel
        source = f"shared/{rel}" if where == "shared" else rel
        models[name] = run_model(torch, name, folder, source, args.shared, args.out)

    if "stories260K" in models and "stories260K-phi3" in models:
        a = models["stories260K"]["_logits"]
        b = models["stories260K-phi3"]["_logits"]
        models["stories260K-phi3"]["checks"]["max_abs_diff_vs_stories260K"] = float(np.abs(a - b).max())
    for m in models.values():
        del m["_logits"]

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generator": "scripts/golden/engine.py",
        "versions": have,
        "settings": {
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager",
            "torch_threads": 1,
            "prompt_len": PROMPT_LEN,
            "greedy_new_tokens": GREEDY_NEW_TOKENS,
        },
        "conventions": {
            "f32": "raw little-endian float32, row-major, no header; shape in the matching .json",
            "sha256_u32le": "sha256 of token ids written as little-endian uint32, no separator",
            "checksum_f64": "sum, sum of squares and max |x| of the float32 values, computed in float64 by "
            "numpy (pairwise summation): compare with a relative tolerance",
            "json": "token ids are plain integers; keys sorted",
        },
        "models": models,
    }
    write_json(args.out / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    sys.exit(main())
