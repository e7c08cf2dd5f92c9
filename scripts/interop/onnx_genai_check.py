#!/usr/bin/env python3
"""Loads ONNX artefact folders the way their users do and reports what happens, as JSON.

    python scripts/interop/onnx_genai_check.py --ids 1,5,9,13 --new-tokens 8 FOLDER [FOLDER ...]

For each folder: `onnx.checker.check_model` on model.onnx (with its external data), then
onnxruntime-genai's `og.Model` on the folder with the providers cleared (CPU), so that folders made
for CUDA or DirectML are checked on a machine without those devices, and a greedy generation of
`--new-tokens` tokens after the prompt ids (og.Tokenizer never adds BOS: pass ids, not text).
Prints {"FOLDER": {"checker": "ok" | error, "tokens": [...] | null, "error": null | text}}.
Exits 1 when any folder fails. Needs `onnx` and `onnxruntime-genai` (scripts/requirements.txt).
"""
import argparse
import json
import sys

import onnx
import onnxruntime_genai as og


def check(folder, ids, new_tokens):
    res = {"checker": "ok", "tokens": None, "error": None}
    try:
        onnx.checker.check_model(f"{folder}/model.onnx")
    except Exception as e:  # the checker's own exception types vary by version
        res["checker"] = str(e).splitlines()[0]
    try:
        config = og.Config(folder)
        config.clear_providers()
        model = og.Model(config)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids)
        out = []
        while not gen.is_done():
            gen.generate_next_token()
            out.append(int(gen.get_next_tokens()[0]))
        res["tokens"] = out
    except Exception as e:
        res["error"] = str(e).splitlines()[0]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", required=True, help="prompt token ids, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("folders", nargs="+")
    a = ap.parse_args()
    ids = [int(x) for x in a.ids.split(",")]
    report = {f: check(f, ids, a.new_tokens) for f in a.folders}
    print(json.dumps(report, indent=1, sort_keys=True))
    bad = [f for f, r in report.items() if r["checker"] != "ok" or r["error"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
