#!/usr/bin/env python3
"""Compare two ONNX model folders: phiquant's (A) against the onnxruntime-genai builder's (B).

Usage::

    python3 scripts/interop/onnx_compare.py A B [--json]

Checks, each reported on its own line:

* every ``MatMulNBits`` node, matched across the two folders by its weight role
  (``L<layer>.<projection>``, ``lm_head``; taken from the node name, else from
  the name of its ``B`` initializer): attributes ``K, N, bits, block_size,
  accuracy_level``, and the ``B``, ``scales`` and ``zero_points`` initializers
  byte for byte (dtype and dims too); with a difference, how many 4-bit codes
  and how many scales differ and the largest scale difference;
* the same for ``GatherBlockQuantized`` (role ``embed_tokens``; a ``Reshape`` of
  an initializer in front of its data input is followed to the initializer);
* ``genai_config.json``, key by key;
* opset imports, graph inputs and outputs (names, element types, dims);
* the number of nodes of each ``domain.op_type``.

Other files of the folders are listed as identical or not, for information
only. Exit status: 0 when nothing differs, 1 when something does, 2 when a
folder cannot be read. Reads the models with onnx_dump.py's standard-library
protobuf reader; numpy is used for the difference statistics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts

import onnx_dump  # noqa: E402

PROJECTIONS = ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj", "dense", "gate_up_proj", "gate_proj", "up_proj",
               "down_proj", "lm_head", "embed_tokens")
QUANT_ATTRS = {"MatMulNBits": ("K", "N", "bits", "block_size", "accuracy_level"),
               "GatherBlockQuantized": ("bits", "block_size", "gather_axis", "quantize_axis")}
# which node inputs hold the quantized weight (index -> label)
QUANT_INPUTS = {"MatMulNBits": {1: "B", 2: "scales", 3: "zero_points", 5: "bias"},
                "GatherBlockQuantized": {0: "data", 2: "scales", 3: "zero_points"}}


class Folder:
    def __init__(self, path: Path):
        self.path = path
        model_path = path / "model.onnx"
        self.model = onnx_dump.parse_model(model_path.read_bytes())
        self.graph = self.model["graph"]
        self.inits = {t["name"]: t for t in self.graph["initializer"]}
        self.producer = {o: n for n in self.graph["node"] for o in n["output"]}
        self._cache: dict = {}
        genai = path / "genai_config.json"
        self.genai = json.loads(genai.read_text()) if genai.is_file() else None

    def tensor(self, name: str):
        """(initializer, bytes) for a value name, following a Reshape of an initializer."""
        if name not in self.inits:
            node = self.producer.get(name)
            if node is not None and node["op_type"] == "Reshape" and node["input"][0] in self.inits:
                name = node["input"][0]
            else:
                return None, None
        t = self.inits[name]
        data, _ = onnx_dump.tensor_bytes(t, self.path, self._cache)
        return t, data

    def quant_nodes(self) -> dict[str, dict]:
        out = {}
        for n in self.graph["node"]:
            if n["op_type"] not in QUANT_ATTRS or n["domain"] != "com.microsoft":
                continue
            role = weight_role(n)
            key = f"{n['op_type']} {role}"
            while key in out:  # keep duplicates apart rather than silently overwrite
                key += "'"
            out[key] = n
        return out


def weight_role(node: dict) -> str:
    candidates = [node["name"]] + node["input"][:2]
    for text in candidates:
        proj = next((p for p in PROJECTIONS if re.search(rf"(^|[./_]){p}([./_]|$)", text)), None)
        if proj is None:
            continue
        if proj in ("lm_head", "embed_tokens"):
            return proj
        m = re.search(r"layers[./_](\d+)", text)
        if m:
            return f"L{m.group(1)}.{proj}"
    return node["name"]


def attrs(node: dict) -> dict:
    out = {}
    for a in node["attribute"]:
        out[a["name"]] = a["i"] if a["i"] is not None else (a["f"] if a["f"] is not None else a["s"])
    return out


def code_diff(a: bytes, b: bytes) -> str:
    """How many 4-bit codes (nibbles) differ between two byte strings of equal length."""
    try:
        import numpy as np
    except ImportError:
        return f"{sum(x != y for x, y in zip(a, b))} bytes differ"
    x = np.frombuffer(a, np.uint8)
    y = np.frombuffer(b, np.uint8)
    n = int(np.count_nonzero((x & 15) != (y & 15)) + np.count_nonzero((x >> 4) != (y >> 4)))
    return f"{n} of {2 * len(a)} 4-bit codes differ"


def scale_diff(t: dict, a: bytes, b: bytes) -> str:
    try:
        import numpy as np
    except ImportError:
        return "differ"
    dt = {"FLOAT": np.float32, "FLOAT16": np.float16}.get(t["data_type"])
    if dt is None:
        return "differ"
    x = np.frombuffer(a, dt).astype(np.float64)
    y = np.frombuffer(b, dt).astype(np.float64)
    d = np.abs(x - y)
    rel = d / np.maximum(np.abs(y), 1e-30)
    return f"{int(np.count_nonzero(d))} of {len(x)} differ, max |diff| {d.max():.3g}, max rel {rel.max():.3g}"


def json_diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}" if path else k
            if k not in a:
                out.append(f"{p}: only in B ({json.dumps(b[k])})")
            elif k not in b:
                out.append(f"{p}: only in A ({json.dumps(a[k])})")
            else:
                out += json_diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diff(x, y, f"{path}[{i}]")]
    if a != b or type(a) is not type(b):
        return [f"{path}: A {json.dumps(a)} != B {json.dumps(b)}"]
    return []


def values(vs: list[dict]) -> list[str]:
    return [onnx_dump._value(v) for v in vs]


def compare(a: Folder, b: Folder) -> tuple[list[str], list[str]]:
    """(differences, notes)."""
    diffs: list[str] = []
    notes: list[str] = []

    qa, qb = a.quant_nodes(), b.quant_nodes()
    for key in sorted(set(qa) | set(qb)):
        if key not in qa:
            diffs.append(f"{key}: only in B ({qb[key]['name']})")
            continue
        if key not in qb:
            diffs.append(f"{key}: only in A ({qa[key]['name']})")
            continue
        na, nb = qa[key], qb[key]
        op = na["op_type"]
        problems = []
        aa, ab = attrs(na), attrs(nb)
        for k in QUANT_ATTRS[op]:
            if aa.get(k) != ab.get(k):
                problems.append(f"{k} A {aa.get(k, 'absent')} B {ab.get(k, 'absent')}")
        for idx, label in QUANT_INPUTS[op].items():
            ia = na["input"][idx] if idx < len(na["input"]) else ""
            ib = nb["input"][idx] if idx < len(nb["input"]) else ""
            if not ia and not ib:
                continue
            if not ia or not ib:
                problems.append(f"{label} only in {'A' if ia else 'B'}")
                continue
            ta, da = a.tensor(ia)
            tb, db = b.tensor(ib)
            if ta is None or tb is None:
                problems.append(f"{label}: not an initializer in {'A' if ta is None else 'B'}")
                continue
            if (ta["data_type"], ta["dims"]) != (tb["data_type"], tb["dims"]):
                problems.append(f"{label} A {onnx_dump.DTYPES.get(ta['data_type'])}{ta['dims']} "
                                f"B {onnx_dump.DTYPES.get(tb['data_type'])}{tb['dims']}")
            elif da != db:
                how = code_diff(da, db) if label in ("B", "data", "zero_points") else \
                    scale_diff({"data_type": onnx_dump.DTYPES.get(ta["data_type"])}, da, db)
                problems.append(f"{label} bytes differ ({how})")
        if problems:
            diffs.append(f"{key}: " + "; ".join(problems))
        else:
            notes.append(f"{key}: identical (K={aa.get('K', '-')} N={aa.get('N', '-')} "
                         f"block_size={aa.get('block_size')} accuracy_level={aa.get('accuracy_level', '-')})")

    if a.genai is None or b.genai is None:
        if a.genai is not b.genai:
            diffs.append(f"genai_config.json only in {'A' if a.genai is not None else 'B'}")
    else:
        diffs += [f"genai_config.json {d}" for d in json_diff(a.genai, b.genai)]

    oa = [(o["domain"], o["version"]) for o in a.model["opset_import"]]
    ob = [(o["domain"], o["version"]) for o in b.model["opset_import"]]
    if sorted(oa) != sorted(ob):
        diffs.append(f"opset_import A {sorted(oa)} B {sorted(ob)}")
    for what in ("input", "output"):
        va, vb = values(a.graph[what]), values(b.graph[what])
        if va != vb:
            diffs.append(f"graph {what}s differ: only in A {sorted(set(va) - set(vb))}, only in B "
                         f"{sorted(set(vb) - set(va))}" + ("" if set(va) != set(vb) else " (order)"))

    ca = Counter(f"{n['domain'] or 'ai.onnx'}.{n['op_type']}" for n in a.graph["node"])
    cb = Counter(f"{n['domain'] or 'ai.onnx'}.{n['op_type']}" for n in b.graph["node"])
    for op in sorted(set(ca) | set(cb)):
        line = f"node count {op}: A {ca[op]} B {cb[op]}"
        (diffs if ca[op] != cb[op] else notes).append(line)

    fa = {f.name for f in a.path.iterdir() if f.is_file()}
    fb = {f.name for f in b.path.iterdir() if f.is_file()}
    for name in sorted(fa | fb):
        if name in ("model.onnx", "model.onnx.data", "genai_config.json"):
            continue
        if name not in fa or name not in fb:
            notes.append(f"file {name}: only in {'A' if name in fa else 'B'}")
        else:
            same = hashlib.sha256((a.path / name).read_bytes()).digest() == \
                hashlib.sha256((b.path / name).read_bytes()).digest()
            notes.append(f"file {name}: {'identical' if same else 'differs'}")
    return diffs, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="phiquant's folder")
    ap.add_argument("b", type=Path, help="the builder's folder")
    ap.add_argument("--json", action="store_true", help="print {\"differences\": [...], \"notes\": [...]}")
    args = ap.parse_args()
    try:
        fa, fb = Folder(args.a), Folder(args.b)
        diffs, notes = compare(fa, fb)
    except (OSError, onnx_dump.FormatError, ValueError, KeyError) as e:
        print(f"onnx_compare: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"differences": diffs, "notes": notes}, indent=2))
    else:
        for line in notes:
            print(f"  same  {line}")
        for line in diffs:
            print(f"  DIFF  {line}")
        print(f"{len(diffs)} differences" if diffs else "no differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
