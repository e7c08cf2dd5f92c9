#!/usr/bin/env python3
"""Print a canonical JSON description of an ONNX model folder (standard library only).

Usage::

    python3 scripts/interop/onnx_dump.py DIR [--out OUT.json]   # DIR holds model.onnx (+ model.onnx.data)
    python3 scripts/interop/onnx_dump.py DIR/model.onnx --text  # one line per node, for people

The model is decoded by a small protobuf wire-format reader written against
``onnx.proto`` (the copy in the PyPI ``onnx`` 1.23 wheel); neither ``onnx`` nor
``protobuf`` is needed. External-data initializers are hashed from the data
file next to ``model.onnx``. The format is described field by field in
``fixtures/golden/onnx/README.md``; in short::

    {
      "schema": 1,
      "model": {"ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string",
                "opset_import": [{"domain", "version"}], "metadata_props": {KEY: VALUE}},
      "graph": {"name", "inputs", "outputs", "value_info", "nodes", "initializers"},
      "external_data": {"files": {NAME: {"size", "sha256"}}},
      "folder": {"genai_config.json": {...the parsed JSON...}, "files": {NAME: {"size", "sha256"}}}
    }

Keys are sorted; every node, value and initializer sits on one line of its own
so that a diff between two dumps reads node by node. ``--no-folder`` leaves out
the ``folder`` part (the other files of the model folder).

``scripts/interop/onnx_reference.py`` writes these dumps for the onnxruntime-genai
model builder's output into ``fixtures/golden/onnx/``; phiquant's tests compute
the same description of phiquant's own ONNX output and compare the two.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

SCHEMA = 1

# TensorProto.DataType (onnx.proto)
DTYPES = {
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64",
    15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1", 24: "FLOAT8E8M0", 25: "UINT2", 26: "INT2",
    27: "FLOAT6E2M3", 28: "FLOAT6E3M2",
}
# bytes per element of the types whose typed fields we can turn back into raw bytes
# (int32_data carries every type of 16 bits or less, one element per int32)
INT32_DATA_SIZES = {2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 9: 1, 10: 2, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1}

# AttributeProto.AttributeType (onnx.proto)
ATTR_TYPES = {
    0: "UNDEFINED", 1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS", 7: "INTS",
    8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO",
    14: "TYPE_PROTOS",
}

MAX_DEPTH = 32  # nested subgraphs (If/Loop bodies) deeper than this are refused


class FormatError(Exception):
    pass


# --------------------------------------------------------------------------
# protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError(f"varint longer than 10 bytes at byte {pos}")


def fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Split one message into (field number, wire type, value): int for varint and
    fixed, bytes for length-delimited. Groups (wire types 3/4) are refused."""
    out = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > n:
                raise FormatError(f"field {num}: needs 8 bytes, only {n - pos} remain")
            val = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise FormatError(f"field {num}: needs {ln} bytes, only {n - pos} remain")
            val = buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            if pos + 4 > n:
                raise FormatError(f"field {num}: needs 4 bytes, only {n - pos} remain")
            val = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise FormatError(f"field {num}: unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wt: int, val) -> list[int]:
    """A repeated int64/int32 field element: packed (wire type 2) or one varint."""
    if wt == 0:
        return [_signed64(val)]
    out, pos = [], 0
    while pos < len(val):
        v, pos = _varint(val, pos)
        out.append(_signed64(v))
    return out


def _floats(wt: int, val) -> list[float]:
    if wt == 5:
        return [struct.unpack("<f", val.to_bytes(4, "little"))[0]]
    if len(val) % 4:
        raise FormatError("packed float field length not a multiple of 4")
    return list(struct.unpack(f"<{len(val) // 4}f", val))


def _doubles(wt: int, val) -> list[float]:
    if wt == 1:
        return [struct.unpack("<d", val.to_bytes(8, "little"))[0]]
    if len(val) % 8:
        raise FormatError("packed double field length not a multiple of 8")
    return list(struct.unpack(f"<{len(val) // 8}d", val))


def _str(val) -> str:
    return bytes(val).decode("utf-8")


# --------------------------------------------------------------------------
# ONNX messages -> plain dicts (only what the dump needs)


def parse_entry(buf) -> tuple[str, str]:
    k = v = ""
    for num, _, val in fields(buf):
        if num == 1:
            k = _str(val)
        elif num == 2:
            v = _str(val)
    return k, v


def parse_tensor(buf) -> dict:
    t = {"dims": [], "data_type": 0, "name": "", "raw_data": None, "external_data": [], "data_location": 0,
         "float_data": [], "int32_data": [], "int64_data": [], "double_data": [], "uint64_data": [],
         "string_data": [], "doc_string": ""}
    for num, wt, val in fields(buf):
        if num == 1:
            t["dims"] += _ints(wt, val)
        elif num == 2:
            t["data_type"] = val
        elif num == 4:
            t["float_data"] += _floats(wt, val)
        elif num == 5:
            t["int32_data"] += [((v + (1 << 31)) % (1 << 32)) - (1 << 31) for v in _ints(wt, val)]
        elif num == 6:
            t["string_data"].append(bytes(val))
        elif num == 7:
            t["int64_data"] += _ints(wt, val)
        elif num == 8:
            t["name"] = _str(val)
        elif num == 9:
            t["raw_data"] = bytes(val)
        elif num == 10:
            t["double_data"] += _doubles(wt, val)
        elif num == 11:
            t["uint64_data"] += [v % (1 << 64) for v in _ints(wt, val)]
        elif num == 12:
            t["doc_string"] = _str(val)
        elif num == 13:
            t["external_data"].append(parse_entry(val))
        elif num == 14:
            t["data_location"] = val
        elif num == 3:
            raise FormatError(f"tensor {t['name']!r}: segmented tensors are not supported")
    return t


def parse_dim(buf):
    out = None
    for num, _, val in fields(buf):
        if num == 1:
            out = _signed64(val)
        elif num == 2:
            out = _str(val)
    return out


def parse_type(buf) -> dict:
    for num, _, val in fields(buf):
        if num == 1:  # tensor_type
            elem, shape = 0, None
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    elem = v2
                elif n2 == 2:
                    shape = [parse_dim(d) for n3, _, d in fields(v2) if n3 == 1]
            return {"elem_type": DTYPES.get(elem, str(elem)), "shape": shape}
        if num in (4, 5, 7, 8, 9):
            return {"kind": {4: "sequence", 5: "map", 7: "opaque", 8: "sparse_tensor", 9: "optional"}[num]}
    return {}


def parse_value_info(buf) -> dict:
    out = {"name": ""}
    for num, _, val in fields(buf):
        if num == 1:
            out["name"] = _str(val)
        elif num == 2:
            out.update(parse_type(val))
    return out


def parse_attribute(buf, depth: int) -> dict:
    a = {"name": "", "type": 0, "f": None, "i": None, "s": None, "t": None, "g": None, "floats": [], "ints": [],
         "strings": [], "tensors": [], "graphs": [], "ref_attr_name": None}
    for num, wt, val in fields(buf):
        if num == 1:
            a["name"] = _str(val)
        elif num == 20:
            a["type"] = val
        elif num == 2:
            a["f"] = _floats(wt, val)[0]
        elif num == 3:
            a["i"] = _signed64(val)
        elif num == 4:
            a["s"] = bytes(val)
        elif num == 5:
            a["t"] = parse_tensor(val)
        elif num == 6:
            a["g"] = parse_graph(val, depth + 1)
        elif num == 7:
            a["floats"] += _floats(wt, val)
        elif num == 8:
            a["ints"] += _ints(wt, val)
        elif num == 9:
            a["strings"].append(bytes(val))
        elif num == 10:
            a["tensors"].append(parse_tensor(val))
        elif num == 11:
            a["graphs"].append(parse_graph(val, depth + 1))
        elif num == 21:
            a["ref_attr_name"] = _str(val)
    return a


def parse_node(buf, depth: int) -> dict:
    n = {"input": [], "output": [], "name": "", "op_type": "", "domain": "", "attribute": []}
    for num, _, val in fields(buf):
        if num == 1:
            n["input"].append(_str(val))
        elif num == 2:
            n["output"].append(_str(val))
        elif num == 3:
            n["name"] = _str(val)
        elif num == 4:
            n["op_type"] = _str(val)
        elif num == 7:
            n["domain"] = _str(val)
        elif num == 5:
            n["attribute"].append(parse_attribute(val, depth))
    return n


def parse_graph(buf, depth: int = 0) -> dict:
    if depth > MAX_DEPTH:
        raise FormatError(f"subgraphs nested deeper than {MAX_DEPTH}")
    g = {"name": "", "node": [], "initializer": [], "input": [], "output": [], "value_info": [], "doc_string": "",
         "sparse_initializer": 0}
    for num, _, val in fields(buf):
        if num == 1:
            g["node"].append(parse_node(val, depth))
        elif num == 2:
            g["name"] = _str(val)
        elif num == 5:
            g["initializer"].append(parse_tensor(val))
        elif num == 10:
            g["doc_string"] = _str(val)
        elif num == 11:
            g["input"].append(parse_value_info(val))
        elif num == 12:
            g["output"].append(parse_value_info(val))
        elif num == 13:
            g["value_info"].append(parse_value_info(val))
        elif num == 15:
            g["sparse_initializer"] += 1
    return g


def parse_model(buf: bytes) -> dict:
    m = {"ir_version": 0, "opset_import": [], "producer_name": "", "producer_version": "", "domain": "",
         "model_version": 0, "doc_string": "", "graph": None, "metadata_props": [], "functions": 0}
    for num, wt, val in fields(buf):
        if num == 1:
            m["ir_version"] = _signed64(val)
        elif num == 8:
            dom, ver = "", 0
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    dom = _str(v2)
                elif n2 == 2:
                    ver = _signed64(v2)
            m["opset_import"].append({"domain": dom, "version": ver})
        elif num == 2:
            m["producer_name"] = _str(val)
        elif num == 3:
            m["producer_version"] = _str(val)
        elif num == 4:
            m["domain"] = _str(val)
        elif num == 5:
            m["model_version"] = _signed64(val)
        elif num == 6:
            m["doc_string"] = _str(val)
        elif num == 7:
            m["graph"] = parse_graph(val)
        elif num == 14:
            m["metadata_props"].append(parse_entry(val))
        elif num == 25:
            m["functions"] += 1
    if m["graph"] is None:
        raise FormatError("model has no graph")
    return m


# --------------------------------------------------------------------------
# tensor bytes


def tensor_bytes(t: dict, base: Path, cache: dict) -> tuple[bytes, dict | None]:
    """The tensor's data as raw little-endian bytes (what raw_data or the external
    file holds), and the external-data record if the data is external."""
    if t["data_location"] == 1:
        ext = dict(t["external_data"])
        loc = ext.get("location")
        if not loc or "/" in loc or "\\" in loc or loc.startswith("."):
            raise FormatError(f"tensor {t['name']!r}: external location {loc!r} is not a plain file name")
        offset = int(ext.get("offset", "0"))
        if loc not in cache:
            cache[loc] = (base / loc).read_bytes()
        data = cache[loc]
        length = int(ext["length"]) if "length" in ext else len(data) - offset
        if offset < 0 or length < 0 or offset + length > len(data):
            raise FormatError(f"tensor {t['name']!r}: needs bytes {offset}..{offset + length} of {loc}, "
                              f"which has {len(data)}")
        record = {"location": loc, "offset": offset, "length": length}
        extra = {k: v for k, v in ext.items() if k not in ("location", "offset", "length")}
        if extra:
            record["other"] = extra
        return data[offset:offset + length], record
    if t["raw_data"] is not None:
        return t["raw_data"], None
    dt = t["data_type"]
    if dt == 1:
        return struct.pack(f"<{len(t['float_data'])}f", *t["float_data"]), None
    if dt == 11:
        return struct.pack(f"<{len(t['double_data'])}d", *t["double_data"]), None
    if dt == 7:
        return struct.pack(f"<{len(t['int64_data'])}q", *t["int64_data"]), None
    if dt in (12, 13):
        fmt = "I" if dt == 12 else "Q"
        return struct.pack(f"<{len(t['uint64_data'])}{fmt}", *t["uint64_data"]), None
    if dt in INT32_DATA_SIZES:
        size = INT32_DATA_SIZES[dt]
        mask = (1 << (8 * size)) - 1
        return b"".join((v & mask).to_bytes(size, "little") for v in t["int32_data"]), None
    if dt == 8:
        return b"".join(t["string_data"]), None
    raise FormatError(f"tensor {t['name']!r}: cannot turn typed data of {DTYPES.get(dt, dt)} into bytes")


def describe_tensor(t: dict, base: Path, cache: dict) -> dict:
    data, ext = tensor_bytes(t, base, cache)
    out = {"name": t["name"], "data_type": DTYPES.get(t["data_type"], str(t["data_type"])), "dims": t["dims"],
           "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
           "storage": "external" if ext else ("raw_data" if t["raw_data"] is not None else "typed")}
    if ext:
        out["external"] = ext
    return out


# --------------------------------------------------------------------------
# description


def describe_attribute(a: dict, base: Path, cache: dict) -> dict:
    ty = ATTR_TYPES.get(a["type"], str(a["type"]))
    if a["ref_attr_name"]:
        return {"type": ty, "ref_attr_name": a["ref_attr_name"]}
    if ty == "FLOAT":
        v = a["f"] if a["f"] is not None else 0.0
    elif ty == "INT":
        v = a["i"] if a["i"] is not None else 0
    elif ty == "STRING":
        v = (a["s"] or b"").decode("utf-8", errors="backslashreplace")
    elif ty == "TENSOR":
        v = describe_tensor(a["t"], base, cache)
    elif ty == "GRAPH":
        v = describe_graph(a["g"], base, cache)
    elif ty == "FLOATS":
        v = a["floats"]
    elif ty == "INTS":
        v = a["ints"]
    elif ty == "STRINGS":
        v = [s.decode("utf-8", errors="backslashreplace") for s in a["strings"]]
    elif ty == "TENSORS":
        v = [describe_tensor(t, base, cache) for t in a["tensors"]]
    elif ty == "GRAPHS":
        v = [describe_graph(g, base, cache) for g in a["graphs"]]
    else:
        raise FormatError(f"attribute {a['name']!r}: type {ty} is not supported")
    return {"type": ty, "value": v}


def describe_graph(g: dict, base: Path, cache: dict) -> dict:
    if g["sparse_initializer"]:
        raise FormatError("sparse initializers are not supported")
    return {
        "name": g["name"],
        "inputs": g["input"],
        "outputs": g["output"],
        "value_info": g["value_info"],
        "nodes": [{
            "name": n["name"], "op_type": n["op_type"], "domain": n["domain"],
            "inputs": n["input"], "outputs": n["output"],
            "attributes": {a["name"]: describe_attribute(a, base, cache) for a in n["attribute"]},
        } for n in g["node"]],
        "initializers": [describe_tensor(t, base, cache) for t in g["initializer"]],
    }


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def describe(path: Path, folder: bool = True) -> dict:
    """Describe DIR/model.onnx (or the given .onnx file) and, with folder=True,
    the other files of its folder."""
    path = Path(path)
    model_path = path / "model.onnx" if path.is_dir() else path
    base = model_path.parent
    m = parse_model(model_path.read_bytes())
    cache: dict = {}
    out = {
        "schema": SCHEMA,
        "model": {
            "ir_version": m["ir_version"],
            "producer_name": m["producer_name"],
            "producer_version": m["producer_version"],
            "domain": m["domain"],
            "model_version": m["model_version"],
            "doc_string": m["doc_string"],
            "opset_import": m["opset_import"],
            "metadata_props": dict(m["metadata_props"]),
            "functions": m["functions"],
        },
        "graph": describe_graph(m["graph"], base, cache),
    }
    out["external_data"] = {"files": {name: {"size": len(data), "sha256": sha256_bytes(data)}
                                      for name, data in sorted(cache.items())}}
    if folder:
        files = {}
        for f in sorted(base.iterdir()):
            if f.is_file() and f != model_path and f.name not in cache:
                data = f.read_bytes()
                files[f.name] = {"size": len(data), "sha256": sha256_bytes(data)}
        out["folder"] = {"files": files}
        genai = base / "genai_config.json"
        if genai.is_file():
            out["folder"]["genai_config.json"] = json.loads(genai.read_text())
    return out


# --------------------------------------------------------------------------
# output


def _compact(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


def dumps(obj, indent: int = 0) -> str:
    """JSON with sorted keys: dicts indented by two spaces, each element of a
    list of dicts (nodes, values, initializers) on one line, except graphs
    (nodes that carry subgraphs are expanded)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k, ensure_ascii=False)}: {dumps(obj[k], indent + 1)}' for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        rows = [f"{pad}  {dumps(x, indent + 1) if _has_graph(x) else _compact(x)}" for x in obj]
        return "[\n" + ",\n".join(rows) + f"\n{pad}]"
    return _compact(obj)


def _has_graph(x) -> bool:
    return isinstance(x, dict) and any(isinstance(a, dict) and a.get("type") in ("GRAPH", "GRAPHS")
                                       for a in x.get("attributes", {}).values())


def _dim(d) -> str:
    return "?" if d is None else str(d)


def _value(v: dict) -> str:
    if "elem_type" not in v:
        return f"{v['name']}: {v.get('kind', '?')}"
    shape = "?" if v["shape"] is None else "[" + ", ".join(_dim(d) for d in v["shape"]) + "]"
    return f"{v['name']}: {v['elem_type']}{shape}"


def _attr_text(name: str, a: dict) -> str:
    if "ref_attr_name" in a:
        return f"{name}=@{a['ref_attr_name']}"
    v = a["value"]
    if a["type"] == "TENSOR":
        return f"{name}=tensor({v['data_type']}{v['dims']} sha256:{v['sha256'][:12]})"
    if a["type"] == "GRAPH":
        return f"{name}=graph({v['name']})"
    if a["type"] == "STRING":
        return f"{name}={json.dumps(v)}"
    return f"{name}={v}"


def text(desc: dict) -> str:
    """A human-readable rendering: one line per value, node and initializer."""
    lines = []
    m = desc["model"]
    lines.append(f"ir_version {m['ir_version']}; producer {m['producer_name']!r} {m['producer_version']!r}; "
                 f"domain {m['domain']!r}; model_version {m['model_version']}; doc_string {m['doc_string']!r}")
    lines.append("opset_import " + ", ".join(f"{o['domain'] or 'ai.onnx'}:{o['version']}" for o in m["opset_import"]))
    lines.append(f"metadata_props {m['metadata_props']}")

    def graph(g: dict, ind: str) -> None:
        lines.append(f"{ind}graph {g['name']!r}: {len(g['nodes'])} nodes, {len(g['initializers'])} initializers, "
                     f"{len(g['value_info'])} value_info")
        for v in g["inputs"]:
            lines.append(f"{ind}  input  {_value(v)}")
        for v in g["outputs"]:
            lines.append(f"{ind}  output {_value(v)}")
        for v in g["value_info"]:
            lines.append(f"{ind}  value_info {_value(v)}")
        for i, n in enumerate(g["nodes"]):
            dom = f"{n['domain']}." if n["domain"] else ""
            attrs = " ".join(_attr_text(k, a) for k, a in sorted(n["attributes"].items()))
            lines.append(f"{ind}  [{i}] {dom}{n['op_type']} {n['name']!r} ({', '.join(n['inputs'])}) -> "
                         f"({', '.join(n['outputs'])}){' ' + attrs if attrs else ''}")
            for k, a in sorted(n["attributes"].items()):
                if a.get("type") == "GRAPH":
                    lines.append(f"{ind}    {k}:")
                    graph(a["value"], ind + "      ")
        for t in g["initializers"]:
            ext = t.get("external")
            where = f" @{ext['location']}+{ext['offset']}:{ext['length']}" if ext else f" ({t['storage']})"
            lines.append(f"{ind}  init {t['name']}: {t['data_type']}{t['dims']} {t['nbytes']} B{where} "
                         f"sha256:{t['sha256'][:16]}")

    graph(desc["graph"], "")
    for name, f in desc["external_data"]["files"].items():
        lines.append(f"external file {name}: {f['size']} B sha256:{f['sha256']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model folder (with model.onnx) or an .onnx file")
    ap.add_argument("--out", type=Path, help="write here instead of standard output")
    ap.add_argument("--text", action="store_true", help="human-readable, one line per node")
    ap.add_argument("--no-folder", action="store_true", help="leave out the other files of the folder")
    args = ap.parse_args()
    try:
        desc = describe(args.model, folder=not args.no_folder)
    except (OSError, FormatError, ValueError, KeyError) as e:
        print(f"onnx_dump: {args.model}: {e}", file=sys.stderr)
        return 2
    s = text(desc) if args.text else dumps(desc) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(s)
    else:
        sys.stdout.write(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
