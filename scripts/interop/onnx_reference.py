#!/usr/bin/env python3
"""Reference ONNX folders from onnxruntime-genai's model builder, for phiquant's ONNX writer.

For each model (stories260K-phi3, stories260K, SmolLM2-135M-Instruct and the six
tiny checkpoints in fixtures/models/) and each combination

    int4-cpu   -p int4 -e cpu    (block 32, accuracy_level 4: the builder's CPU defaults)
    int4-cuda  -p int4 -e cuda
    int4-dml   -p int4 -e dml
    fp32-cpu   -p fp32 -e cpu
    fp16-cuda  -p fp16 -e cuda

this runs ``python -m onnxruntime_genai.models.builder -i MODEL -o OUT -p P -e E``,
keeps the folders in a cache outside git (``target/onnxref/<model>/<combo>/``,
with the builder's log next to each), and writes a canonical JSON description of
each folder (``onnx_dump.py``: opsets, inputs/outputs, nodes with attributes,
initializers with sha256 of their bytes, genai_config.json; no tensor data) to
``fixtures/golden/onnx/<model>/<combo>.json``, plus ``fixtures/golden/onnx/manifest.json``
(versions, command lines, outcome of every run, whole-file sha256 and size).

It also checks, and records in the manifest:

* that ``--extra_options int4_accuracy_level=4`` on the CPU gives byte-identical
  files to the plain ``-p int4 -e cpu`` (the name of the official
  "cpu-int4-rtn-block-32-acc-level-4" release);
* that the standard-library protobuf reader of onnx_dump.py agrees with the
  ``onnx`` package on every folder (``--skip-parser-check`` to skip);
* that onnxruntime-genai loads every CPU folder and what it generates greedily
  (8 new tokens after the prompt ids ``PROMPT_IDS``): ``og_greedy`` in the manifest.

Usage::

    # once: a venv with the packages of scripts/interop/requirements-onnx.txt
    python3 scripts/interop/onnx_reference.py --setup-venv /tmp/ogvenv \\
        [--share-site-packages /path/to/site-packages-with-torch]
    # then
    python3 scripts/interop/onnx_reference.py --python /tmp/ogvenv/bin/python

Failed builder runs are not fatal: the manifest records the exit code and the
last line of the error, and no golden file is written for them.

The model folders are never written to: the two shared stories260K folders and
the fixtures are copied to a temporary folder under the system temp dir first
(keeping their folder names). SmolLM2 is rebuilt from the shared GGUF by
scripts/golden/smollm2_hf.py into ``--smollm2-hf`` (outside the repository,
since it holds third-party weights) unless that folder already has a
model.safetensors. See fixtures/golden/onnx/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts

import onnx_dump  # noqa: E402

OG_VERSION = "0.18.0"
FIXTURE_MODELS = ("phi3", "phi3-longrope", "phi4-mini", "llama", "mistral", "qwen2")
MODELS = ("stories260K-phi3", "stories260K", "smollm2-135m-instruct") + FIXTURE_MODELS
# combo -> builder arguments after -i/-o
COMBOS = {
    "int4-cpu": ["-p", "int4", "-e", "cpu"],
    "int4-cuda": ["-p", "int4", "-e", "cuda"],
    "int4-dml": ["-p", "int4", "-e", "dml"],
    "fp32-cpu": ["-p", "fp32", "-e", "cpu"],
    "fp16-cuda": ["-p", "fp16", "-e", "cuda"],
}
# extra runs that must reproduce another combo byte for byte (no golden of their own)
SAME_AS = {
    "int4-cpu-acc4": ("int4-cpu", ["-p", "int4", "-e", "cpu", "--extra_options", "int4_accuracy_level=4"]),
}
# Builder defects found in these references, recorded in the manifest so that nobody copies them.
KNOWN_ISSUES = {
    "phi4-mini": (
        "onnxruntime-genai 0.18.0 Model.has_lm_head() takes any nn.Linear with out_features == vocab_size "
        "for the LM head while it walks model.modules(). In this fixture 2 * intermediate_size == vocab_size "
        "(2 * 160 == 320), so layer 0's gate_up_proj is taken for the LM head: /lm_head/MatMul reads "
        "/model/layers.0/post_attention_layernorm/output_0 and the final norm's output dangles (see "
        "dangling_outputs). The lm_head and tied-embedding weights themselves are right. Do not reproduce "
        "this wiring; a fixture whose 2 * intermediate_size differs from vocab_size avoids it."),
}
PROMPT_IDS = [1, 5, 9, 13, 17, 21]
GREEDY_TOKENS = 8

CHECK_IMPORTS = r"""
import importlib, json, sys
out = {}
for name in ("onnxruntime_genai", "onnxruntime", "onnx", "onnx_ir", "torch", "transformers", "tokenizers",
             "safetensors", "numpy", "google.protobuf", "ml_dtypes"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        out[name] = None
        print(f"cannot import {name}: {e}", file=sys.stderr)
print(json.dumps(out))
"""

# Runs in the builder's venv: compares onnx_dump.py's reading of a folder with the onnx package's.
PARSER_CHECK = r"""
import json, sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import onnx, onnx.numpy_helper
from onnx import external_data_helper
import onnx_dump

folder = sys.argv[2]
ours = onnx_dump.describe(folder, folder=False)
m = onnx.load(folder + "/model.onnx", load_external_data=False)
problems = []

def check(what, a, b):
    if a != b:
        problems.append(f"{what}: onnx {a!r} != onnx_dump {b!r}")

def vi(v):
    t = v.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
                 for d in t.shape.dim]
    return {"name": v.name, "elem_type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": shape}

def graph(g, d, where):
    check(where + " name", g.name, d["name"])
    for key, field in (("inputs", g.input), ("outputs", g.output), ("value_info", g.value_info)):
        check(f"{where} {key}", [vi(v) for v in field], d[key])
    check(where + " node count", len(g.node), len(d["nodes"]))
    for n, dn in zip(g.node, d["nodes"]):
        w = f"{where} node {n.name}"
        check(w, (n.name, n.op_type, n.domain, list(n.input), list(n.output)),
              (dn["name"], dn["op_type"], dn["domain"], dn["inputs"], dn["outputs"]))
        check(w + " attribute names", sorted(a.name for a in n.attribute), sorted(dn["attributes"]))
        for a in n.attribute:
            da = dn["attributes"].get(a.name, {})
            check(f"{w} {a.name} type", onnx.AttributeProto.AttributeType.Name(a.type), da.get("type"))
            v = onnx.helper.get_attribute_value(a)
            if a.type == onnx.AttributeProto.GRAPH:
                graph(v, da["value"], f"{w}/{a.name}")
            elif a.type == onnx.AttributeProto.TENSOR:
                arr = onnx.numpy_helper.to_array(v)
                check(f"{w} {a.name} dims", list(v.dims), da["value"]["dims"])
                import hashlib
                check(f"{w} {a.name} sha256", hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest(),
                      da["value"]["sha256"])
            elif a.type == onnx.AttributeProto.STRING:
                check(f"{w} {a.name}", v.decode(), da["value"])
            elif a.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.INTS):
                check(f"{w} {a.name}", list(v), da["value"])
            else:
                check(f"{w} {a.name}", v, da["value"])
    check(where + " initializer count", len(g.initializer), len(d["initializers"]))
    for t, dt in zip(g.initializer, d["initializers"]):
        w = f"{where} initializer {t.name}"
        check(w, (t.name, onnx.TensorProto.DataType.Name(t.data_type), list(t.dims)),
              (dt["name"], dt["data_type"], dt["dims"]))
        if external_data_helper.uses_external_data(t):
            info = external_data_helper.ExternalDataInfo(t)
            check(w + " external", (info.location, info.offset or 0, info.length),
                  (dt["external"]["location"], dt["external"]["offset"], dt["external"]["length"]))

check("ir_version", m.ir_version, ours["model"]["ir_version"])
check("producer", (m.producer_name, m.producer_version), (ours["model"]["producer_name"], ours["model"]["producer_version"]))
check("opset_import", [{"domain": o.domain, "version": o.version} for o in m.opset_import], ours["model"]["opset_import"])
check("metadata_props", {p.key: p.value for p in m.metadata_props}, ours["model"]["metadata_props"])
graph(m.graph, ours["graph"], "graph")
# the tensor hashes against the onnx package's own loading of the external data
full = onnx.load(folder + "/model.onnx", load_external_data=True)
import hashlib
for t, dt in zip(full.graph.initializer, ours["graph"]["initializers"]):
    arr = onnx.numpy_helper.to_array(t)
    if t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                       onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BFLOAT16):
        check(f"initializer {t.name} sha256", hashlib.sha256(arr.tobytes()).hexdigest(), dt["sha256"])
print(json.dumps(problems))
"""

# Runs in the builder's venv: load a folder with onnxruntime-genai, generate greedily.
OG_GREEDY = r"""
import json, sys
import onnxruntime_genai as og
folder, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = og.Model(folder)
params = og.GeneratorParams(model)
params.set_search_options(do_sample=False, max_length=len(ids) + n, batch_size=1)
gen = og.Generator(model, params)
gen.append_tokens(ids)
out = []
while not gen.is_done():
    gen.generate_next_token()
    out.append(int(gen.get_next_tokens()[0]))
print(json.dumps(out))
"""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list, log: Path | None = None, check: bool = True, env: dict | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    if log is None:
        rc = subprocess.run([str(c) for c in cmd], env=env).returncode
    else:
        with open(log, "w") as f:
            rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if check and rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:] if log else []
        sys.exit(f"command failed ({rc}): {' '.join(map(str, cmd))}\n" + "\n".join(tail))
    return rc


def last_error(log: Path) -> str:
    """The last line of a Python traceback in the log (or its last non-empty line)."""
    lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith((" ", "\t", "Traceback")) and ("Error" in ln or "Exception" in ln):
            return ln
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------
# environment


def setup_venv(venv: Path, share_site_packages: list[str]) -> None:
    """Create a venv with the builder and everything it imports."""
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    if share_site_packages:
        # reuse an existing torch/transformers install instead of downloading several GB
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "shared-site-packages.pth").write_text("".join(p.rstrip("/") + "\n" for p in share_site_packages))
    run([py, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(HERE / "requirements-onnx.txt")])


def check_python(py: str) -> dict:
    res = subprocess.run([py, "-c", CHECK_IMPORTS], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{py} does not run:\n{res.stderr}")
    versions = json.loads(res.stdout.strip().splitlines()[-1])
    missing = [k for k, v in versions.items() if v is None]
    if missing:
        sys.exit(f"{py} lacks {', '.join(missing)}. Either run\n"
                 f"  python3 {Path(__file__).relative_to(REPO)} --setup-venv VENV\n"
                 "or, in that venv:\n  pip install -r scripts/interop/requirements-onnx.txt")
    if versions["onnxruntime_genai"] != OG_VERSION:
        sys.exit(f"onnxruntime_genai {versions['onnxruntime_genai']} in {py}, expected {OG_VERSION}")
    return versions


def builder_env() -> dict:
    env = dict(os.environ)
    # Local folders only; never ask the hub. No GPU even where there is one: the references are
    # what the builder writes on a CPU-only machine.
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    return env


# --------------------------------------------------------------------------
# models


def model_sources(args, tmp: Path, py: str) -> dict[str, Path]:
    """Model name -> folder the builder reads (a temporary copy for the small ones)."""
    shared = Path(args.shared_models)
    out = {}
    for name in args.models:
        if name in ("stories260K", "stories260K-phi3"):
            src = shared / name
        elif name in FIXTURE_MODELS:
            src = REPO / "fixtures" / "models" / name
        elif name == "smollm2-135m-instruct":
            src = Path(args.smollm2_hf)
            if not (src / "model.safetensors").is_file():
                run([py, str(REPO / "scripts" / "golden" / "smollm2_hf.py"),
                     "--gguf", shared / name / "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "--config-dir", shared / name, "--out", src])
            out[name] = src
            continue
        else:
            sys.exit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        if not (src / "config.json").is_file():
            sys.exit(f"{name}: no model at {src}")
        copy = tmp / name
        shutil.copytree(src, copy)
        out[name] = copy
    return out


def build(py: str, src: Path, out: Path, combo_args: list[str], log: Path) -> tuple[int, list[str]]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    hf_cache = out.parent / (out.name + ".hfcache")
    cmd = [py, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out)] + combo_args + \
          ["-c", str(hf_cache)]
    rc = run(cmd, log=log, check=False, env=builder_env())
    if hf_cache.is_dir() and not any(hf_cache.iterdir()):
        hf_cache.rmdir()
    return rc, cmd


def folder_files(out: Path) -> dict:
    return {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(out.iterdir()) if f.is_file()}


def parser_check(py: str, out: Path) -> list[str]:
    res = subprocess.run([py, "-c", PARSER_CHECK, str(HERE), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        return [f"parser check did not run: {res.stderr.strip().splitlines()[-1:]}"]
    return json.loads(res.stdout.strip().splitlines()[-1])


def dangling_outputs(desc: dict) -> list[str]:
    """Node outputs of the main graph that no node reads and that are not graph outputs."""
    g = desc["graph"]
    used = {i for n in g["nodes"] for i in n["inputs"]} | {o["name"] for o in g["outputs"]}
    return [o for n in g["nodes"] for o in n["outputs"] if o and o not in used]


def og_greedy(py: str, out: Path) -> dict:
    res = subprocess.run([py, "-c", OG_GREEDY, str(out), json.dumps(PROMPT_IDS), str(GREEDY_TOKENS)],
                         capture_output=True, text=True, env=builder_env())
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit {res.returncode}"}
    return {"tokens": json.loads(res.stdout.strip().splitlines()[-1])}


def templ(cmd: list[str], subs: dict[str, str]) -> str:
    s = " ".join(str(c) for c in cmd)
    for k, v in sorted(subs.items(), key=lambda kv: -len(kv[0])):
        s = s.replace(k, v)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(REPO / "target" / "onnxref"),
                    help="where the builder's folders and logs go (outside git; default target/onnxref)")
    ap.add_argument("--python", help="python of the venv with onnxruntime-genai, onnx-ir, torch, transformers")
    ap.add_argument("--fixtures", default=str(REPO / "fixtures" / "golden" / "onnx"))
    ap.add_argument("--shared-models", default=str(REPO.parent / "shared" / "models"))
    ap.add_argument("--smollm2-hf", default=str(Path(tempfile.gettempdir()) / "phiquant-onnxref-smollm2-hf"),
                    help="SmolLM2 safetensors folder; made with scripts/golden/smollm2_hf.py when missing")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    ap.add_argument("--combos", default=",".join(COMBOS), help=f"comma-separated (default {','.join(COMBOS)})")
    ap.add_argument("--skip-parser-check", action="store_true")
    ap.add_argument("--skip-generate", action="store_true", help="do not run onnxruntime-genai on the CPU folders")
    ap.add_argument("--setup-venv", metavar="VENV", help="create/complete this venv, then exit")
    ap.add_argument("--share-site-packages", metavar="DIR", action="append", default=[],
                    help="with --setup-venv: add DIR (a site-packages with torch + transformers) through a .pth "
                         "instead of downloading them (repeatable)")
    args = ap.parse_args()

    if args.setup_venv:
        setup_venv(Path(args.setup_venv).resolve(), args.share_site_packages)
        print(f"venv ready: run again with --python {Path(args.setup_venv).resolve() / 'bin' / 'python'}")
        return
    if not args.python:
        ap.error("--python is required (or --setup-venv)")
    py = args.python
    versions = check_python(py)
    args.models = [m for m in args.models.split(",") if m]
    combos = [c for c in args.combos.split(",") if c]
    for c in combos:
        if c not in COMBOS:
            sys.exit(f"unknown combo {c!r}; known: {', '.join(COMBOS)}")
    if Path(args.smollm2_hf).resolve().is_relative_to(REPO):
        sys.exit("--smollm2-hf must be outside the repository (third-party weights)")

    cache = Path(args.cache).resolve()
    fixtures = Path(args.fixtures).resolve()
    manifest_path = fixtures / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    manifest.update({
        "onnxruntime_genai": versions["onnxruntime_genai"],
        "python_packages": versions,
        "combos": {c: "python -m onnxruntime_genai.models.builder -i <model> -o <out> " + " ".join(a)
                   + " -c <out>.hfcache" for c, a in COMBOS.items()},
        "same_as_checks": {c: {"same_as": s, "args": " ".join(a)} for c, (s, a) in SAME_AS.items()},
        "builder_env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""},
        "og_greedy": {"prompt_ids": PROMPT_IDS, "new_tokens": GREEDY_TOKENS,
                      "how": "og.Model(folder); search do_sample=False, max_length=len(prompt)+new_tokens; "
                             "append_tokens(prompt); generate_next_token until done"},
    })
    manifest.setdefault("models", {})

    with tempfile.TemporaryDirectory(prefix="phiquant-onnxref-") as tmp:
        sources = model_sources(args, Path(tmp), py)
        for name in args.models:
            src = sources[name]
            entry = manifest["models"].setdefault(name, {})
            entry["source"] = src.name if name != "smollm2-135m-instruct" else \
                "shared/models/smollm2-135m-instruct via scripts/golden/smollm2_hf.py"
            if name in KNOWN_ISSUES:
                entry["known_issue"] = KNOWN_ISSUES[name]
            runs = entry.setdefault("runs", {})
            (fixtures / name).mkdir(parents=True, exist_ok=True)
            todo = [(c, COMBOS[c], None) for c in combos] + \
                   [(c, a, s) for c, (s, a) in SAME_AS.items() if s in combos]
            for combo, combo_args, same_as in todo:
                out = cache / name / combo
                log = cache / name / f"{combo}.log"
                out.parent.mkdir(parents=True, exist_ok=True)
                rc, cmd = build(py, src, out, combo_args, log)
                subs = {str(src): f"<{name}>", str(out): "<out>", py: "python"}
                record = {"command": templ(cmd, subs), "exit_code": rc}
                if rc != 0:
                    record["error"] = last_error(log).replace(str(src), f"<{name}>").replace(str(out), "<out>")
                    runs[combo] = record
                    golden = fixtures / name / f"{combo}.json"
                    if same_as is None and golden.exists():
                        golden.unlink()
                    print(f"{name} {combo}: FAILED: {record['error']}")
                    continue
                record["files"] = folder_files(out)
                if same_as is not None:
                    ref = runs.get(same_as, {}).get("files")
                    record = {"command": record["command"], "exit_code": rc,
                              "identical_to_" + same_as: record["files"] == ref}
                    runs[combo] = record
                    print(f"{name} {combo}: identical to {same_as}: {record['identical_to_' + same_as]}")
                    continue
                if not args.skip_parser_check:
                    record["parser_check_problems"] = parser_check(py, out)
                    if record["parser_check_problems"]:
                        print(f"{name} {combo}: onnx_dump disagrees with onnx: {record['parser_check_problems'][:5]}")
                if combo.endswith("-cpu") and not args.skip_generate:
                    record["og_greedy"] = og_greedy(py, out)
                desc = onnx_dump.describe(out)
                record["dangling_outputs"] = dangling_outputs(desc)
                (fixtures / name / f"{combo}.json").write_text(onnx_dump.dumps(desc) + "\n")
                runs[combo] = record
                print(f"{name} {combo}: ok, {len(desc['graph']['nodes'])} nodes")
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {fixtures}")


if __name__ == "__main__":
    main()
