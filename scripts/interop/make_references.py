#!/usr/bin/env python3
"""Reference GGUF files from llama.cpp's own tools, for phiquant's GGUF writer.

For each model (stories260K, stories260K-phi3, SmolLM2-135M) this runs

1. llama.cpp's ``convert_hf_to_gguf.py`` with ``--outtype f32``, ``f16`` and
   ``q8_0`` (the converter's own Q8_0, done by gguf-py in numpy);
2. llama.cpp's ``llama_model_quantize`` (through llama-cpp-python) on the f32
   file: Q4_0 with ``pure = true``, Q8_0 with ``pure = true``, Q4_K_M with the
   default parameters; and, from the f16 file, Q4_0 ``pure`` and Q4_0 with the
   default parameters (the second step of bench_peer.py);

keeps the GGUF files in a cache folder outside git, and writes a canonical JSON
description of each (``gguf_dump.py``: metadata, tensor types, shapes, offsets
and sha256 of the data; no tensor data) to ``fixtures/golden/gguf/<model>/<variant>.json``
plus ``fixtures/golden/gguf/manifest.json`` (versions, commands, whole-file
sha256 and size of every GGUF).

Usage::

    # once: a venv with torch, transformers, sentencepiece, the sdist's gguf-py
    # and llama-cpp-python 0.3.36 built from source (~25 min on 2 cores)
    python3 scripts/interop/make_references.py --setup-venv /tmp/lcppvenv
    # then
    python3 scripts/interop/make_references.py --python /tmp/lcppvenv/bin/python \\
        --cache target/interop

Without ``--setup-venv`` the script checks that ``--python`` can import what it
needs and prints the install commands if not. See fixtures/golden/gguf/README.md.

The model folders are never written to: the two shared stories260K folders are
copied to a temporary folder under the system temp dir (not the repository),
keeping their folder names, since the converter derives ``general.name`` from
the folder name. SmolLM2 is read from ``target/smollm2-hf`` (made by
scripts/golden/smollm2_hf.py).

stories260K-phi3: the stock converter refuses it (Phi3MiniModel.set_vocab wants
a SentencePiece tokenizer.model, the folder has only tokenizer.json). The
script runs the stock converter once to record that error, then converts it
through ``convert_hf_vocab.py``, which makes Phi-3 use the converter's own
``_set_vocab_llama_hf`` (the path LlamaForCausalLM takes for the same
tokenizer.json). Everything else is the stock converter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
# What llama-cpp-python is built with: no llava/mtmd library (not needed for quantizing).
CMAKE_ARGS = "-DLLAVA_BUILD=OFF"

CONVERTER_OUTTYPES = ("f32", "f16", "q8_0")
# variant -> (source variant, llama_ftype name, pure)
QUANTIZED = {
    "q4_0-pure": ("f32", "Q4_0", True),
    "q8_0-pure": ("f32", "Q8_0", True),
    "q4_k_m": ("f32", "Q4_K_M", False),
    "q4_0-pure-from-f16": ("f16", "Q4_0", True),
    # what bench_peer.py times: Q4_0 with the default parameters, from the f16 file
    "q4_0-from-f16": ("f16", "Q4_0", False),
}
VARIANTS = list(CONVERTER_OUTTYPES) + list(QUANTIZED)

CHECK_IMPORTS = r"""
import importlib, json, sys
out = {}
for name in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "sentencepiece", "llama_cpp"):
    try:
        m = importlib.import_module(name)
        out[name] = getattr(m, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        out[name] = None
        print(f"cannot import {name}: {e}", file=sys.stderr)
print(json.dumps(out))
"""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd: list[str], log: Path | None = None, check: bool = True, env: dict | None = None) -> int:
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


# --------------------------------------------------------------------------
# llama.cpp sources


def fetch_sdist(cache: Path, given: str | None, pip_python: str) -> Path:
    if given:
        path = Path(given)
    else:
        dl = cache / "sdist"
        path = dl / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
        if not path.is_file():
            dl.mkdir(parents=True, exist_ok=True)
            # Preparing this sdist's metadata needs scikit-build-core and cmake in pip_python's env.
            bindir = str(Path(pip_python).parent)
            env = dict(os.environ)
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
            run([pip_python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                 "--disable-pip-version-check", "-q", "-d", str(dl), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
                env=env)
    digest = sha256_file(path)
    if digest != LLAMA_CPP_SDIST_SHA256:
        sys.exit(f"{path}: sha256 {digest}, expected {LLAMA_CPP_SDIST_SHA256}")
    return path


def extract_sdist(cache: Path, sdist: Path) -> Path:
    top = cache / "sdist" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    if not (top / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py").is_file():
        (cache / "sdist").mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tf:
            tf.extractall(cache / "sdist", filter="data")
    head = top / ".git" / "modules" / "vendor" / "llama.cpp" / "HEAD"
    commit = head.read_text().strip() if head.is_file() else None
    if commit != LLAMA_CPP_COMMIT:
        sys.exit(f"{head}: llama.cpp commit {commit}, expected {LLAMA_CPP_COMMIT}")
    return top


# --------------------------------------------------------------------------
# environment


def setup_venv(venv: Path, cache: Path, sdist_arg: str | None, share_site_packages: str | None) -> None:
    """Create a venv with everything the converter and the quantizer need."""
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    run(pip + ["-r", str(HERE / "requirements-build.txt")])
    if share_site_packages:
        # reuse an existing torch/transformers install instead of downloading several GB
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "shared-site-packages.pth").write_text(share_site_packages.rstrip("/") + "\n")
    else:
        run(pip + ["-r", str(HERE / "requirements.txt")])
    sdist = fetch_sdist(cache, sdist_arg, py)
    top = extract_sdist(cache, sdist)
    run(pip + ["sentencepiece==0.2.3"])
    # llama.cpp's own gguf-py (0.19.0 at this commit), not PyPI's gguf
    run(pip + [str(top / "vendor" / "llama.cpp" / "gguf-py")])
    have = subprocess.run([py, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True, text=True)
    if have.returncode == 0 and have.stdout.strip() == LLAMA_CPP_PYTHON_VERSION:
        print(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} already installed in {venv}")
        return
    env = dict(os.environ)
    env["CMAKE_ARGS"] = CMAKE_ARGS
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    run(pip + ["--no-build-isolation", str(sdist)], env=env)


def check_python(py: str) -> dict:
    res = subprocess.run([py, "-c", CHECK_IMPORTS], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{py} does not run:\n{res.stderr}")
    versions = json.loads(res.stdout.strip().splitlines()[-1])
    missing = [k for k, v in versions.items() if v is None]
    if missing:
        sys.exit(
            f"{py} lacks {', '.join(missing)}. Either run\n"
            f"  python3 {Path(__file__).relative_to(REPO)} --setup-venv VENV\n"
            "or, in that venv:\n"
            f"  pip install -r scripts/interop/requirements-build.txt -r scripts/interop/requirements.txt\n"
            f"  pip install sentencepiece==0.2.3 SDIST/vendor/llama.cpp/gguf-py\n"
            f"  CMAKE_ARGS={CMAKE_ARGS} pip install --no-build-isolation "
            f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz   # sha256 {LLAMA_CPP_SDIST_SHA256}\n"
            "(SDIST: the extracted llama-cpp-python sdist)")
    if versions["llama_cpp"] != LLAMA_CPP_PYTHON_VERSION:
        sys.exit(f"llama_cpp {versions['llama_cpp']} in {py}, expected {LLAMA_CPP_PYTHON_VERSION}")
    return versions


# --------------------------------------------------------------------------
# models


def model_table(args) -> dict:
    shared = Path(args.shared_models)
    return {
        "stories260K": {"src": shared / "stories260K", "copy": True, "wrapper": False},
        "stories260K-phi3": {"src": shared / "stories260K-phi3", "copy": True, "wrapper": True},
        "smollm2-135m": {"src": Path(args.smollm2_hf), "copy": False, "wrapper": False},
    }


def convert(py: str, converter: Path, model_dir: Path, outtype: str, out: Path, log: Path, wrapper: bool) -> list[str]:
    args = [str(model_dir), "--outtype", outtype, "--outfile", str(out)]
    if wrapper:
        cmd = [py, str(HERE / "convert_hf_vocab.py"), str(converter)] + args
    else:
        cmd = [py, str(converter)] + args
    run(cmd, log=log)
    return cmd


def quantize(py: str, inp: Path, out: Path, ftype: str, pure: bool, log: Path) -> list[str]:
    cmd = [py, str(HERE / "lcpp_quantize.py"), str(inp), str(out), "--ftype", ftype] + (["--pure"] if pure else [])
    run(cmd, log=log)
    return cmd


def dump(py: str, gguf_py: Path, gguf: Path, out: Path) -> None:
    run([py, str(HERE / "gguf_dump.py"), str(gguf), "--gguf-py", str(gguf_py), "--out", str(out)])


def templ(cmd: list[str], subs: dict[str, str]) -> str:
    s = " ".join(cmd)
    for k, v in sorted(subs.items(), key=lambda kv: -len(kv[0])):
        s = s.replace(k, v)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=str(REPO / "target" / "interop"),
                    help="where the GGUF files, logs and the sdist go (outside git; default target/interop)")
    ap.add_argument("--python", help="python of the venv that has torch, transformers, sentencepiece and llama_cpp")
    ap.add_argument("--fixtures", default=str(REPO / "fixtures" / "golden" / "gguf"))
    ap.add_argument("--llama-cpp-sdist", help="llama_cpp_python-0.3.36.tar.gz if already downloaded")
    ap.add_argument("--shared-models", default=str(REPO.parent / "shared" / "models"))
    ap.add_argument("--smollm2-hf", default=str(REPO / "target" / "smollm2-hf"))
    ap.add_argument("--models", default="stories260K,stories260K-phi3,smollm2-135m")
    ap.add_argument("--setup-venv", metavar="VENV", help="create/complete this venv, then exit")
    ap.add_argument("--share-site-packages", metavar="DIR",
                    help="with --setup-venv: add DIR (a site-packages with torch + transformers) through a .pth "
                         "instead of installing requirements.txt")
    args = ap.parse_args()

    cache = Path(args.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if args.setup_venv:
        setup_venv(Path(args.setup_venv).resolve(), cache, args.llama_cpp_sdist, args.share_site_packages)
        print(f"venv ready: run again with --python {Path(args.setup_venv).resolve() / 'bin' / 'python'}")
        return
    if not args.python:
        ap.error("--python is required (or --setup-venv)")
    py = args.python
    versions = check_python(py)
    sdist = fetch_sdist(cache, args.llama_cpp_sdist, py)
    top = extract_sdist(cache, sdist)
    lcpp = top / "vendor" / "llama.cpp"
    converter = lcpp / "convert_hf_to_gguf.py"
    gguf_py = lcpp / "gguf-py"
    versions["gguf (llama.cpp gguf-py)"] = subprocess.run(
        [py, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import gguf, importlib.metadata as m; "
                   "print(m.version('gguf'))", str(gguf_py)], capture_output=True, text=True).stdout.strip()

    fixtures = Path(args.fixtures).resolve()
    table = model_table(args)
    wanted = [m for m in args.models.split(",") if m]
    manifest_path = fixtures / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"models": {}}
    manifest.update({
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "llama_cpp_python_sdist_sha256": LLAMA_CPP_SDIST_SHA256,
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "llama_cpp_python_cmake_args": CMAKE_ARGS,
        "python_packages": versions,
        "variants": {
            **{v: f"convert_hf_to_gguf.py <model> --outtype {v} --outfile <model>-{v}.gguf" for v in CONVERTER_OUTTYPES},
            **{v: f"llama_model_quantize(<model>-{s}.gguf, <model>-{v}.gguf, ftype=LLAMA_FTYPE_MOSTLY_{f}"
                  f"{', pure=true' if p else ''}) from llama_model_quantize_default_params()"
               for v, (s, f, p) in QUANTIZED.items()},
        },
    })

    with tempfile.TemporaryDirectory(prefix="phiquant-interop-") as tmp:
        for name in wanted:
            spec = table[name]
            src = spec["src"]
            if not (src / "config.json").is_file():
                sys.exit(f"{name}: no model at {src}")
            if spec["copy"]:
                model_dir = Path(tmp) / src.name  # the folder name becomes general.name
                shutil.copytree(src, model_dir)
            else:
                model_dir = src
            out = cache / name
            out.mkdir(parents=True, exist_ok=True)
            (fixtures / name).mkdir(parents=True, exist_ok=True)
            entry = {"source": str(src.name), "converter": "convert_hf_to_gguf.py", "files": {}}
            subs = {str(model_dir): f"<{src.name}>", str(out): "<cache>", str(converter): "convert_hf_to_gguf.py",
                    str(HERE): "scripts/interop", py: "python"}
            if spec["wrapper"]:
                log = out / "stock-converter-f32.log"
                rc = run([py, str(converter), str(model_dir), "--outtype", "f32", "--outfile",
                          str(out / "stock-f32.gguf")], log=log, check=False)
                last = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
                entry["stock_converter"] = {"exit_code": rc, "last_line": (last[0] if last else "")
                                            .replace(str(model_dir), f"<{src.name}>")}
                entry["converter"] = "scripts/interop/convert_hf_vocab.py convert_hf_to_gguf.py (Phi3MiniModel.set_vocab -> _set_vocab_llama_hf)"
            for v in CONVERTER_OUTTYPES:
                f = out / f"{name}-{v}.gguf"
                cmd = convert(py, converter, model_dir, v, f, out / f"convert-{v}.log", spec["wrapper"])
                entry["files"][v] = {"command": templ(cmd, subs)}
            for v, (s, ftype, pure) in QUANTIZED.items():
                f = out / f"{name}-{v}.gguf"
                cmd = quantize(py, out / f"{name}-{s}.gguf", f, ftype, pure, out / f"quantize-{v}.log")
                entry["files"][v] = {"command": templ(cmd, subs)}
            for v in VARIANTS:
                f = out / f"{name}-{v}.gguf"
                dump(py, gguf_py, f, fixtures / name / f"{v}.json")
                entry["files"][v].update({"size": f.stat().st_size, "sha256": sha256_file(f)})
            manifest["models"][name] = entry
            manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    run([py, str(HERE / "analyze.py"), "--cache", str(cache), "--gguf-py", str(gguf_py),
         "--shared-models", args.shared_models, "--smollm2-hf", args.smollm2_hf, "--models", ",".join(wanted)],
        log=cache / "analysis.txt")
    print((cache / "analysis.txt").read_text())
    print(f"wrote {fixtures}")


if __name__ == "__main__":
    main()
