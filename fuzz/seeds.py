#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-*.

Standard library only. The seeds are small on purpose (a few KB): libFuzzer mutates every byte
of an input alike, so a seed should be mostly structure, not tensor data.

- config_json: every fixtures/models/*/config.json.
- safetensors_header: a tiny valid file (float, integer and empty tensors, `__metadata__`), and
  the header of each fixture checkpoint without its data (which reads as "out of range").
- gguf_reader: tiny GGUF v3 models that `GgufModel::open` and `AuxFiles::from_gguf` accept:
  Llama (SentencePiece vocabulary; F32, F16, BF16, Q8_0 and Q4_0 tensors), Mistral (a sliding
  window, alignment 64), Phi-3 with LongRoPE factors and fused qkv, Phi-3 with q, k and v apart,
  and Qwen2 (biases, tied embeddings, a byte-level BPE vocabulary with merges).

    python3 fuzz/seeds.py
"""

import json
import math
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# GGUF value types (gguf-py constants.py GGUFValueType).
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types.
T_F32, T_F16, T_Q4_0, T_Q8_0, T_BF16 = 0, 1, 2, 8, 30


def values(n, salt):
    """Deterministic values in (-1, 1)."""
    return [math.sin(1.7 * i + salt) for i in range(n)]


def f16(x):
    return struct.pack("<e", x)


def tensor_bytes(ty, n, salt):
    v = values(n, salt)
    if ty == T_F32:
        return struct.pack(f"<{n}f", *v)
    if ty == T_F16:
        return b"".join(f16(x) for x in v)
    if ty == T_BF16:
        return b"".join(struct.pack("<f", x)[2:] for x in v)
    out = b""
    for b in range(0, n, 32):
        block = v[b : b + 32]
        amax = max(abs(x) for x in block) or 1.0
        if ty == T_Q8_0:
            d = amax / 127
            out += f16(d) + bytes((round(x / d) & 0xFF) for x in block)
        elif ty == T_Q4_0:
            d = amax / 8
            q = [max(0, min(15, round(x / d) + 8)) for x in block]
            out += f16(d) + bytes(q[i] | (q[i + 16] << 4) for i in range(16))
        else:
            raise ValueError(ty)
    return out


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gvalue(ty, v):
    if ty == U32:
        return struct.pack("<I", v)
    if ty == I32:
        return struct.pack("<i", v)
    if ty == F32:
        return struct.pack("<f", v)
    if ty == BOOL:
        return bytes([1 if v else 0])
    if ty == STRING:
        return gstr(v)
    if ty == U64:
        return struct.pack("<Q", v)
    elem, items = v
    return struct.pack("<IQ", elem, len(items)) + b"".join(gvalue(elem, x) for x in items)


def gguf(meta, tensors, alignment=32):
    """meta: [(key, type, value)]; tensors: [(name, dims with ne0 first, ggml type)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, ty, v in meta:
        out += gstr(key) + struct.pack("<I", ty) + gvalue(ty, v)
    data = b""
    for i, (name, dims, ty) in enumerate(tensors):
        n = math.prod(dims)
        blob = tensor_bytes(ty, n, i)
        if name.startswith("rope_factors"):
            # LongRoPE factors are positive.
            blob = struct.pack(f"<{n}f", *(1.0 + 0.25 * i for i in range(n)))
        data += b"\0" * (-len(data) % alignment)
        out += gstr(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, len(data))
        data += blob
    out += b"\0" * (-len(out) % alignment)
    return out + data


def spm_vocab():
    """A SentencePiece-style vocabulary: (tokens, types, scores)."""
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "\u2581", "a", "b", "c"]
    tokens += ["\u2581a", "ab", "abc", "\u2581ab", "<|end|>", "<|user|>", "[PAD15]"]
    types = [2, 3, 3, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 3, 4, 5]
    scores = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0]
    scores += [-5.0, -6.0, -7.0, -8.0, 0.0, 0.0, 0.0]
    meta = [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (F32, scores)),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
        ("tokenizer.ggml.unknown_token_id", U32, 0),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.ggml.add_eos_token", BOOL, False),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    return len(tokens), meta


def bpe_vocab():
    """A byte-level BPE vocabulary (GPT-2/Qwen layout) with merges."""
    tokens = ["a", "b", "c", "d", "1", "!", ",", "\u0120", "ab", "\u0120a", "\u0120ab", "abc"]
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "\u010a"]
    types = [1] * 12 + [3, 3, 3, 1]
    meta = [
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "qwen2"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b", "\u0120 a", "\u0120a b", "ab c"])),
        ("tokenizer.ggml.eos_token_id", U32, 14),
        ("tokenizer.ggml.padding_token_id", U32, 12),
        ("tokenizer.ggml.add_bos_token", BOOL, False),
    ]
    return len(tokens), meta


def model(arch, *, fused=False, longrope=False, window=0, biases=False, tied=False, bpe=False,
          types=None, alignment=32):
    """A one-layer model: hidden 8, 2 heads and 1 KV head of 4, feed-forward 32."""
    hidden, heads, kv, hd, ff = 8, 2, 1, 4, 32
    vocab, tok_meta = bpe_vocab() if bpe else spm_vocab()
    ty = {"embd": T_F32, "out": T_F16, "q": T_F32, "k": T_BF16, "down": T_Q8_0}
    ty.update(types or {})
    meta = [("general.architecture", STRING, arch), ("general.name", STRING, f"seed-{arch}")]
    if alignment != 32:
        meta.append(("general.alignment", U32, alignment))
    k = lambda name: f"{arch}.{name}"  # noqa: E731
    meta += [
        (k("block_count"), U32, 1),
        (k("context_length"), U32, 256),
        (k("embedding_length"), U32, hidden),
        (k("feed_forward_length"), U32, ff),
        (k("attention.head_count"), U32, heads),
        (k("attention.head_count_kv"), U32, kv),
        (k("attention.layer_norm_rms_epsilon"), F32, 1e-5),
        (k("rope.freq_base"), F32, 10000.0),
        (k("rope.dimension_count"), U32, hd),
        (k("vocab_size"), U32, vocab),
    ]
    if window:
        meta.append((k("attention.sliding_window"), U32, window))
    if longrope:
        meta += [
            (k("rope.scaling.original_context_length"), U32, 64),
            (k("rope.scaling.attn_factor"), F32, 1.19),
        ]
    meta += tok_meta

    tensors = [("token_embd.weight", [hidden, vocab], ty["embd"])]
    if longrope:
        tensors += [
            ("rope_factors_long.weight", [hd // 2], T_F32),
            ("rope_factors_short.weight", [hd // 2], T_F32),
        ]
    b = "blk.0."
    tensors.append((b + "attn_norm.weight", [hidden], T_F32))
    if fused:
        tensors.append((b + "attn_qkv.weight", [hidden, (heads + 2 * kv) * hd], T_F32))
    else:
        tensors += [
            (b + "attn_q.weight", [hidden, heads * hd], ty["q"]),
            (b + "attn_k.weight", [hidden, kv * hd], ty["k"]),
            (b + "attn_v.weight", [hidden, kv * hd], T_F32),
        ]
    if biases:
        tensors += [
            (b + "attn_q.bias", [heads * hd], T_F32),
            (b + "attn_k.bias", [kv * hd], T_F32),
            (b + "attn_v.bias", [kv * hd], T_F32),
        ]
    tensors.append((b + "attn_output.weight", [heads * hd, hidden], T_F16))
    tensors.append((b + "ffn_norm.weight", [hidden], T_F32))
    if arch == "phi3":
        tensors.append((b + "ffn_up.weight", [hidden, 2 * ff], T_F16))
    else:
        tensors += [
            (b + "ffn_gate.weight", [hidden, ff], T_F32),
            (b + "ffn_up.weight", [hidden, ff], T_F16),
        ]
    tensors.append((b + "ffn_down.weight", [ff, hidden], ty["down"]))
    tensors.append(("output_norm.weight", [hidden], T_F32))
    if not tied:
        tensors.append(("output.weight", [hidden, vocab], ty["out"]))
    return gguf(meta, tensors, alignment)


def safetensors(entries, metadata=None):
    """entries: [(name, dtype, shape, element size)], laid out in order."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, size in entries:
        n = math.prod(shape) * size
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(i % 251 for i in range(offset))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main():
    for config in sorted((ROOT / "fixtures" / "models").glob("*/config.json")):
        write("config_json", config.parent.name, config.read_bytes())

    write(
        "safetensors_header",
        "tiny",
        safetensors(
            [
                ("a", "F32", [2, 3], 4),
                ("b", "BF16", [4], 2),
                ("c", "F16", [3, 1], 2),
                ("d", "U8", [5], 1),
                ("e", "F32", [0, 4], 4),
                ("f", "I64", [1], 8),
            ],
            {"format": "pt"},
        ),
    )
    for st in sorted((ROOT / "fixtures" / "models").glob("*/*.safetensors")):
        raw = st.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        write("safetensors_header", f"{st.parent.name}-{st.stem}-header", raw[: 8 + n])

    write("gguf_reader", "llama", model("llama", types={"down": T_Q4_0}))
    write("gguf_reader", "mistral", model("llama", window=128, alignment=64, types={"embd": T_F16}))
    write("gguf_reader", "phi3-longrope", model("phi3", fused=True, longrope=True, window=128))
    write("gguf_reader", "phi3-split", model("phi3", types={"out": T_F32, "embd": T_BF16}))
    write("gguf_reader", "qwen2", model("qwen2", biases=True, tied=True, bpe=True))


if __name__ == "__main__":
    main()
