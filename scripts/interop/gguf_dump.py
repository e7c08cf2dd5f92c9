#!/usr/bin/env python3
"""Print a canonical JSON description of a GGUF file.

Usage::

    python scripts/interop/gguf_dump.py FILE.gguf [--gguf-py DIR] [--out OUT.json]

The file is read with gguf-py's ``GGUFReader`` (the ``gguf`` package that
llama.cpp's ``convert_hf_to_gguf.py`` uses). ``--gguf-py DIR`` puts a source
checkout of gguf-py (e.g. ``vendor/llama.cpp/gguf-py`` of the llama-cpp-python
sdist) first on ``sys.path``; without it the installed ``gguf`` is used.

Output (keys sorted, two-space indent, trailing newline)::

    {
      "version": 3,
      "alignment": 32,
      "metadata": {KEY: {"type": VALUE_TYPE, "value": VALUE}, ...},   # every KV pair, sorted by key
      "tensors": [{"name", "type", "shape", "offset", "nbytes", "sha256"}, ...]  # file order
    }

* ``type`` of a metadata entry is gguf-py's ``GGUFValueType`` name (``UINT32``,
  ``FLOAT32``, ``STRING``, ``ARRAY``, ...).
* Scalars are JSON numbers / strings / booleans. A FLOAT32 or FLOAT64 value is
  the exact value widened to a double (so 1e-5 stored as float32 reads
  9.999999747378752e-06).
* Arrays have ``"elem_type"`` next to ``"type": "ARRAY"``. An array of at most
  64 elements is written out in ``value``. A longer one is summarised as
  ``{"len": N, "elem_type": T, "sha256": H, "raw_sha256": R, "head": [first 8]}``
  where ``H`` is the sha256 of the canonical JSON of the full list
  (``json.dumps(list, ensure_ascii=False, separators=(",", ":"))`` encoded as
  UTF-8; floats as Python's ``repr`` of the double) and ``R`` the sha256 of the
  array payload exactly as the file stores it, little-endian (for strings: each
  element as u64 byte length + UTF-8 bytes; no array header). ``R`` is the
  easier one to recompute from another GGUF writer.
* Tensors: ``type`` is the ggml type name (``F32``, ``Q4_0``, ``Q6_K``, ...),
  ``shape`` the dimensions as GGUF stores them (ne0, the contiguous one,
  first), ``offset`` the offset in the tensor-info table (relative to the start
  of the data section), ``nbytes`` the data size and ``sha256`` the hash of
  the tensor's data bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

ARRAY_INLINE_MAX = 64
HEAD = 8


def _load_gguf(gguf_py: str | None):
    if gguf_py:
        sys.path.insert(0, str(Path(gguf_py).resolve()))
    import gguf  # noqa: E402

    return gguf


def _scalar(gguf, vtype, arr):
    v = arr.tolist()[0] if hasattr(arr, "tolist") else arr
    if vtype == gguf.GGUFValueType.BOOL:
        return bool(v)
    if vtype in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return float(v)
    return int(v)


def _field_value(gguf, field):
    VT = gguf.GGUFValueType
    main = field.types[0]
    if main == VT.STRING:
        return {"type": "STRING", "value": bytes(field.parts[field.data[0]]).decode("utf-8")}
    if main != VT.ARRAY:
        return {"type": main.name, "value": _scalar(gguf, main, field.parts[field.data[0]])}

    sub = field.types[-1]
    if len(field.types) > 2:
        raise SystemExit(f"{field.name}: nested arrays are not supported")
    if sub == VT.STRING:
        raw = [bytes(field.parts[i]) for i in field.data]
        values = [b.decode("utf-8") for b in raw]
        payload = b"".join(struct.pack("<Q", len(b)) + b for b in raw)
    else:
        parts = [field.parts[i] for i in field.data]
        values = [_scalar(gguf, sub, p) for p in parts]
        payload = b"".join(p.astype(p.dtype.newbyteorder("<")).tobytes() for p in parts)
    out = {"type": "ARRAY", "elem_type": sub.name}
    if len(values) <= ARRAY_INLINE_MAX:
        out["value"] = values
    else:
        canon = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        out["value"] = {
            "len": len(values),
            "elem_type": sub.name,
            "sha256": hashlib.sha256(canon).hexdigest(),
            "raw_sha256": hashlib.sha256(payload).hexdigest(),
            "head": values[:HEAD],
        }
    return out


def describe(path: str | Path, gguf_py: str | None = None) -> dict:
    gguf = _load_gguf(gguf_py)
    reader = gguf.GGUFReader(str(path), "r")
    version = None
    metadata = {}
    for name, field in reader.fields.items():
        if name == "GGUF.version":
            version = int(field.parts[field.data[0]][0])
            continue
        if name.startswith("GGUF."):
            continue  # GGUF.tensor_count, GGUF.kv_count: header, not KV pairs
        metadata[name] = _field_value(gguf, field)
    tensors = []
    for t in reader.tensors:
        data = t.data
        raw = data.tobytes()
        assert len(raw) == t.n_bytes, (t.name, len(raw), t.n_bytes)
        rel_offset = int(t.field.parts[-1][0])
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape.tolist()],
            "offset": rel_offset,
            "nbytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    return {
        "version": version,
        "alignment": int(reader.alignment),
        "metadata": dict(sorted(metadata.items())),
        "tensors": tensors,
    }


def dumps(desc: dict) -> str:
    return json.dumps(desc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="the .gguf file")
    ap.add_argument("--gguf-py", help="directory of a gguf-py source tree to import gguf from")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args()
    text = dumps(describe(args.file, args.gguf_py))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
