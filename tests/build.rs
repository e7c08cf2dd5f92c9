//! `phiquant build`: a configuration file to verified artefacts with manifests, skipped when
//! current, and nothing half-written when interrupted.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::{Dir, fixture, shared_model};

fn sha256(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Six targets (three ONNX, three GGUF, dml-int4 with AWQ) with quick verification settings.
const SIX: &str = r#"
[calibration]
file = "calib.txt"
samples = 8
len = 64

[verify]
corpus = "corpus.txt"
ctx = 64
chunks = 3
max_new_tokens = 6
prompts = "prompts.txt"
max_ppl_ratio = 2.0
max_mean_kld = 1.0
min_same_top = 0.5
device = "cpu"

[[target]]
name = "cpu-int4"
[[target]]
name = "dml-int4"
[[target]]
name = "cpu-fp32"
[[target]]
name = "gguf-q4_0"
[[target]]
name = "gguf-q8_0"
[[target]]
name = "gguf-q4_k_m"
"#;

/// The folders of the six artefacts, named as the official releases are.
const SIX_FOLDERS: [&str; 6] = [
    "cpu-int4-rtn-block-32-acc-level-4",
    "dml-int4-awq-block-128",
    "cpu-fp32",
    "gguf-q4_0-rtn",
    "gguf-q8_0",
    "gguf-q4_k_m-rtn",
];

/// Writes the config beside a model and the text files it names; returns the config's path.
fn config(dir: &Dir, model: &Path, body: &str) -> PathBuf {
    // The real corpus where ../shared is there (the tests that need it check), else a story.
    let corpus = std::fs::read_to_string(root_shared("corpora/tinystories-val.txt"))
        .unwrap_or_else(|_| "Once upon a time, there was a little girl named Lily. ".repeat(800));
    std::fs::write(dir.path().join("calib.txt"), &corpus[..20_000]).unwrap();
    std::fs::write(dir.path().join("corpus.txt"), &corpus[20_000..40_000]).unwrap();
    std::fs::write(dir.path().join("prompts.txt"), "Once upon a time\n").unwrap();
    let path = dir.path().join("phiquant.toml");
    std::fs::write(&path, format!("model = {:?}\n{body}", model.display().to_string())).unwrap();
    path
}

fn root_shared(rel: &str) -> PathBuf {
    crate::util::root().join("../shared").join(rel)
}

/// The JSON Lines results of `build --json`.
fn results(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[cfg(feature = "llama-cpp")]
pqtest!(build_six_targets_verified_then_skipped, |dir, cmd| {
    // stories260K-phi3's weights under another folder name: llama.cpp refuses a GGUF whose
    // general.name contains "phi3" without Phi-3's <|endoftext|> (see tests/verify.rs).
    let Some(phi3) = shared_model("stories260K-phi3") else { return };
    let model = dir.copy_model(&phi3, "stories260K-p3");
    let cfg = config(&dir, &model, SIX);
    let out = dir.path().join("dist/stories260K-p3");

    let first = results(&cmd.arg("build").arg(&cfg).arg("--json").stdout());
    assert_eq!(first.len(), 6);
    for (r, folder) in first.iter().zip(SIX_FOLDERS) {
        assert_eq!(r["status"], "written", "{r}");
        assert_eq!(r["verify"]["passed"], true, "{r}");
        let dir = out.join(folder);
        let m: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["schema_version"], 1);
        assert_eq!(m["target"], r["target"]);
        // Every file of the artefact is listed with its digest, and nothing else is there.
        let mut listed: Vec<String> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().into())
            .collect();
        for f in m["files"].as_array().unwrap() {
            let p = dir.join(f["path"].as_str().unwrap());
            assert_eq!(f["sha256"], sha256(&p), "{}", p.display());
            assert_eq!(f["size"], std::fs::metadata(&p).unwrap().len());
        }
        listed.push("manifest.json".into());
        listed.sort();
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        present.sort();
        assert_eq!(listed, present);
        // The source, by digest.
        let src = m["source"]["files"].as_array().unwrap();
        let weights = src.iter().find(|f| f["path"] == "model.safetensors").unwrap();
        assert_eq!(weights["sha256"], sha256(&model.join("model.safetensors")));
        assert_eq!(m["verify"]["passed"], true);
        assert_eq!(m["verify_settings"]["ctx"], 64);
    }
    // Every option of the scheme spelled out; AWQ's calibration and chosen scales recorded.
    let cpu: Value = serde_json::from_slice(
        &std::fs::read(out.join(SIX_FOLDERS[0]).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let w = &cpu["scheme"]["weights"];
    assert_eq!((w["block_size"].as_u64(), w["symmetric"].as_bool()), (Some(32), Some(true)));
    assert_eq!((w["accuracy_level"].as_u64(), w["algo"].as_str()), (Some(4), Some("rtn")));
    assert!(w["rounding"].as_str().unwrap().contains("-m/8"));
    assert!(cpu.get("awq").is_none() && cpu.get("calibration").is_none());
    let dml: Value = serde_json::from_slice(
        &std::fs::read(out.join(SIX_FOLDERS[1]).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dml["scheme"]["weights"]["algo"], "awq");
    assert_eq!(dml["calibration"]["samples"], 8);
    // The search settings, the defaults here.
    let search = &dml["calibration"]["search"];
    assert_eq!((search["grid"].as_u64(), search["refine"].as_u64()), (Some(20), Some(0)));
    assert_eq!(
        (search["joint_clip"].as_bool(), search["two_sided_clip"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(dml["calibration"]["text"]["sha256"], sha256(&dir.path().join("calib.txt")));
    let layers = dml["awq"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5);
    assert!(layers[0]["groups"][0]["group"].is_string(), "{}", layers[0]);
    for name in ["verify.json", "verify.md", "verify.html"] {
        assert!(out.join(name).is_file(), "{name}");
    }

    // A second run skips all six and touches nothing.
    let stamp =
        |f: &str| std::fs::metadata(out.join(f).join("manifest.json")).unwrap().modified().unwrap();
    let before: Vec<_> = SIX_FOLDERS.iter().map(|f| stamp(f)).collect();
    let second = results(&dir.command().arg("build").arg(&cfg).arg("--json").stdout());
    assert!(second.iter().all(|r| r["status"] == "skipped"), "{second:?}");
    assert_eq!(before, SIX_FOLDERS.iter().map(|f| stamp(f)).collect::<Vec<_>>());
    let plan: Value =
        serde_json::from_str(&dir.command().arg("build").arg(&cfg).arg("--plan").stdout()).unwrap();
    let actions: Vec<&str> = plan["artefacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["skip"; 6]);

    // A changed option or a damaged artefact is rebuilt; the rest stay skipped.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace("chunks = 3", "chunks = 2"),
    )
    .unwrap();
    let plan: Value =
        serde_json::from_str(&dir.command().arg("build").arg(&cfg).arg("--plan").stdout()).unwrap();
    assert!(plan["artefacts"].as_array().unwrap().iter().all(|a| a["action"] == "write"));
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace("chunks = 2", "chunks = 3"),
    )
    .unwrap();
    std::fs::write(out.join("gguf-q8_0/gguf-q8_0.gguf"), b"GGUF").unwrap();
    let third = results(&dir.command().arg("build").arg(&cfg).arg("--json").stdout());
    let status: Vec<&str> = third.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["skipped", "skipped", "skipped", "skipped", "written", "skipped"]);
    // --force rewrites everything, to the same bytes.
    let hash = sha256(&out.join(SIX_FOLDERS[0]).join("model.onnx.data"));
    let forced =
        results(&dir.command().arg("build").arg(&cfg).args(["--json", "--force"]).stdout());
    assert!(forced.iter().all(|r| r["status"] == "written"));
    assert_eq!(hash, sha256(&out.join(SIX_FOLDERS[0]).join("model.onnx.data")));
});

/// Sends `signal` to the build once something is being written (a hidden `.partial-` entry in
/// the output), after `committed` artefacts are in place; then nothing may be half-written:
/// exit 130, no temporary entries, and every artefact folder holds its manifest.
fn interrupt(dir: &Dir, cfg: &Path, out: &Path, signal: &str, committed: usize) {
    let killed = signal == "-KILL";
    let mut child = dir.command().arg("build").arg(cfg).spawn();
    let started = Instant::now();
    let entries = |out: &Path| -> Vec<String> {
        std::fs::read_dir(out)
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default()
    };
    loop {
        let names = entries(out);
        let done = names.iter().filter(|n| !n.starts_with('.')).count();
        if done >= committed && names.iter().any(|n| n.contains(".partial-")) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the build ended before it was interrupted");
        assert!(started.elapsed() < Duration::from_secs(300), "no partial artefact seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let names = entries(out);
    if killed {
        // No handler runs: the unfinished artefact stays under its hidden temporary name.
        assert_eq!(output.status.code(), None);
    } else {
        assert_eq!(output.status.code(), Some(130), "{signal}: {stderr}");
        assert!(stderr.ends_with("error: interrupted; unfinished artefacts removed\n"), "{stderr}");
        assert!(names.iter().all(|n| !n.starts_with('.')), "{signal}: left {names:?}");
    }
    for n in names.iter().filter(|n| !n.contains('.')) {
        assert!(out.join(n).join("manifest.json").is_file(), "{signal}: {n} has no manifest");
    }
    assert!(names.len() >= committed, "{names:?}");
}

pqtest!(interrupted_build_leaves_no_artefact_without_manifest, |dir, cmd| {
    let _ = cmd;
    // AWQ on the model's own text (a few seconds), then two more artefacts.
    let cfg = config(
        &dir,
        &fixture("phi4-mini"),
        "[calibration]\nsamples = 32\nlen = 64\n\n[[target]]\nname = \"cpu-fp32\"\n\
         [[target]]\nname = \"dml-int4\"\n[[target]]\nname = \"gguf-f32\"\n",
    );
    let out = dir.path().join("dist/phi4-mini");
    // During the first artefact, and during AWQ once the first is in place.
    interrupt(&dir, &cfg, &out, "-INT", 0);
    interrupt(&dir, &cfg, &out, "-TERM", 1);
    interrupt(&dir, &cfg, &out, "-KILL", 1);
    // What was interrupted is finished by the next run, which also clears what the killed run
    // left; what was done is skipped.
    let r = results(&dir.command().arg("build").arg(&cfg).arg("--json").stdout());
    let status: Vec<&str> = r.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(status[0], "skipped");
    assert_eq!(status.len(), 3);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
});

pqtest!(build_config_errors_are_one_line, |dir, cmd| {
    let _ = cmd;
    let model = fixture("phi3");
    let cases: [(&str, &str); 12] = [
        ("[[target]]\nname = \"cpu-int4\"\nblock = 3\n", "unknown field `block`"),
        ("[[target]\n", "(line 2)"),
        ("", "lists no [[target]]"),
        (
            "[[target]]\nname = \"cpu-int4\"\n[[target]]\nname = \"cpu-int4\"\n",
            "both write cpu-int4-rtn-block-32-acc-level-4",
        ),
        ("[[target]]\nname = \"cpu-fp32\"\nalgo = \"awq\"\n", "algo applies to int4 targets"),
        (
            "[calibration]\nsamples = 4\n[[target]]\nname = \"cpu-fp32\"\n",
            "[calibration] samples applies to targets quantized with AWQ",
        ),
        (
            "[calibration]\njoint_clip = true\n[[target]]\nname = \"cpu-int4\"\n",
            "[calibration] joint_clip applies to targets quantized with AWQ",
        ),
        (
            "[calibration]\nno_refit = true\n[[target]]\nname = \"gguf-q4_0\"\n",
            "[calibration] no_refit applies to targets quantized with AWQ",
        ),
        (
            "[calibration]\nrefine = 101\n[[target]]\nname = \"dml-int4\"\n",
            "--awq-refine 101: expected 0 to 100 sweeps",
        ),
        (
            "[calibration]\nstatistic = \"rms\"\n[[target]]\nname = \"cpu-int4\"\n",
            "[calibration] statistic applies to targets quantized with AWQ",
        ),
        (
            "[calibration]\nstatistic = \"median\"\n[[target]]\nname = \"dml-int4\"\n",
            "unknown variant `median`, expected `mean-abs` or `rms`",
        ),
        ("[[target]]\nname = \"cpu-int4\"\noutput = \"../x\"\n", "expected a plain folder name"),
    ];
    for (body, want) in cases {
        let cfg = config(&dir, &model, body);
        let line = dir.command().arg("build").arg(&cfg).error_line();
        assert!(line.contains(want), "{body:?}: {line}");
        assert!(!dir.path().join("dist").exists(), "{body:?} wrote something");
    }
    let line = dir.command().args(["build", "missing.toml"]).error_line();
    assert!(line.contains("missing.toml"), "{line}");
});

pqtest!(export_writes_manifests_and_json_results, |dir, cmd| {
    let out = dir.path().join("out");
    let run = cmd
        .export(&fixture("qwen2"), &out, &["cpu-int4", "gguf-q8_0", "hf-bf16"])
        .args(["--json", "--group-size", "16"])
        .output();
    assert!(run.status.success());
    // Progress is JSON Lines on stderr: one event per stage step, ending at its total.
    let events = results(&String::from_utf8(run.stderr).unwrap());
    let last = events.iter().rfind(|e| e["target"] == "hf-bf16").unwrap();
    assert_eq!(
        (last["event"].as_str(), last["done"].as_u64()),
        (Some("export"), last["total"].as_u64())
    );
    let r = results(&String::from_utf8(run.stdout).unwrap());
    assert_eq!(r.len(), 3);
    assert_eq!(r[0]["scheme"]["weights"]["block_size"], 16);
    // A GGUF target is a file with its manifest beside it; a folder target holds its own.
    assert_eq!(r[1]["path"], out.join("gguf-q8_0.gguf").display().to_string());
    let side: Value =
        serde_json::from_slice(&std::fs::read(out.join("gguf-q8_0.gguf.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(side["files"][0]["path"], "gguf-q8_0.gguf");
    assert_eq!(side["files"][0]["sha256"], sha256(&out.join("gguf-q8_0.gguf")));
    assert!(out.join("hf-bf16/manifest.json").is_file());
    // Re-exporting over an earlier Hugging Face folder (its manifest included) replaces it.
    dir.command().export(&fixture("qwen2"), &out, &["hf-bf16"]).stdout();
});
