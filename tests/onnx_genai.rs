//! Every ONNX target's folder in its real consumer: `onnx.checker` accepts the model and
//! onnxruntime-genai 0.18 (from the project venv, `scripts/requirements.txt`) loads the folder as it
//! is and generates (CUDA and DirectML folders with the providers cleared, on the CPU). The fp32
//! folder's greedy tokens equal the native engine's.

use std::path::{Path, PathBuf};

use phiquant_runtime::{Checkpoint, Engine, Sampling, generate};
use serde_json::Value;

use crate::util::{root, skip_note};

const PROMPT: [u32; 6] = [1, 5, 9, 13, 17, 21];
const NEW_TOKENS: usize = 8;

/// The project venv's Python when it has onnxruntime-genai; `None` (with a note) outside CI.
fn genai_python() -> Option<PathBuf> {
    let python = root().join(".venv/bin/python");
    let ok = python.is_file()
        && std::process::Command::new(&python)
            .args(["-c", "import onnx, onnxruntime_genai"])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs .venv with onnx and onnxruntime-genai (run scripts/setup.sh)"
    );
    skip_note("no .venv with onnxruntime-genai; run scripts/setup.sh");
    None
}

fn engine_greedy(model: &Path) -> Vec<u32> {
    let ckpt = Checkpoint::open(model).unwrap();
    let engine = Engine::load(&ckpt).unwrap();
    generate(&engine, &PROMPT, NEW_TOKENS, &Sampling::GREEDY, &[]).unwrap()
}

pqtest!(onnx_folders_load_and_generate_in_onnxruntime_genai, |dir, _cmd| {
    let Some(python) = genai_python() else { return };
    let models = crate::util::architecture_models();
    let targets = crate::util::ONNX_TARGETS;
    let mut folders = Vec::new();
    for (name, path) in &models {
        let out = dir.path().join(name);
        dir.command()
            .export(path, &out, &targets)
            .args(["--algo", "rtn"]) // dml-int4's default AWQ would need calibration time
            .stdout();
        folders.extend(targets.iter().map(|t| out.join(t)));
    }
    let ids: Vec<String> = PROMPT.iter().map(u32::to_string).collect();
    let out = std::process::Command::new(&python)
        .arg(root().join("scripts/interop/onnx_genai_check.py"))
        .args(["--ids", &ids.join(","), "--new-tokens", &NEW_TOKENS.to_string()])
        .args(&folders)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    for f in &folders {
        let r = &report[f.to_str().unwrap()];
        assert_eq!(r["checker"], "ok", "{}: onnx.checker: {}", f.display(), r["checker"]);
        assert!(r["error"].is_null(), "{}: onnxruntime-genai: {}", f.display(), r["error"]);
        assert!(!r["tokens"].as_array().unwrap().is_empty(), "{}", f.display());
    }
    assert!(out.status.success());
    for (name, path) in &models {
        let want = engine_greedy(path);
        let f = dir.path().join(name).join("cpu-fp32");
        let got: Vec<u32> = report[f.to_str().unwrap()]["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        // onnxruntime-genai stops at EOS; up to there the tokens are the engine's.
        assert_eq!(got[..], want[..got.len()], "{name}: greedy tokens");
        let spec = Checkpoint::open(path).unwrap();
        use phiquant_runtime::WeightSource;
        let eos = &spec.spec().eos_token_ids;
        assert!(
            got.len() == NEW_TOKENS || eos.contains(got.last().unwrap()),
            "{name}: stopped early at {got:?}"
        );
    }
});
