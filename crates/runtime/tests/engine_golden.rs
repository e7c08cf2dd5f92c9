//! The engine against transformers (fp32, eager attention), from the outputs that
//! `scripts/golden/engine.py` wrote into `fixtures/golden/engine`: full logits, long-context
//! (LongRoPE and sliding-window) logits, greedy continuations, tokenizer ids, perplexity.

use std::path::{Path, PathBuf};

use phiquant_runtime::{
    Checkpoint, Engine, Logits, Sampling, Scoring, Tokenizer, WeightSource, generate, perplexity,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::util::{root, source_dir};

fn golden() -> PathBuf {
    root().join("fixtures/golden/engine")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Every model of the manifest that is present: (name, folder, manifest entry).
fn models() -> Vec<(String, PathBuf, Value)> {
    let manifest = json(&golden().join("manifest.json"));
    assert_eq!(manifest["schema_version"], 1);
    let mut out = Vec::new();
    for (name, entry) in manifest["models"].as_object().unwrap() {
        if let Some(dir) = source_dir(entry["source"].as_str().unwrap()) {
            out.push((name.clone(), dir, entry.clone()));
        }
    }
    out
}

fn load(dir: &Path) -> (Engine, Tokenizer) {
    let ckpt = Checkpoint::open(dir).unwrap();
    let tok = Tokenizer::from_dir(dir, ckpt.spec().bos_token_id).unwrap();
    (Engine::load(&ckpt).unwrap(), tok)
}

/// A measurement line for `cargo test -- --nocapture`.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn logits_within_1e4_of_transformers() {
    let all = models();
    assert!(all.len() >= 6, "fixture models missing");
    for (name, dir, entry) in all {
        let (engine, _) = load(&dir);
        let files = &entry["files"];
        let mut cases = vec![("prompt_ids", "logits")];
        if files.get("logits_long").is_some() {
            cases.push(("prompt_long", "logits_long"));
        }
        for (prompt_key, logits_key) in cases {
            let prompt =
                ids(&json(&golden().join(&name).join(files[prompt_key].as_str().unwrap())));
            let want = f32s(&golden().join(&name).join(files[logits_key].as_str().unwrap()));
            let mut session = engine.session(prompt.len());
            let got = session.forward(&prompt, Logits::All).unwrap();
            let diff = max_abs_diff(got, &want);
            note(&format!("{name} {logits_key}: max |diff| {diff:e} over {} logits", want.len()));
            assert!(diff <= 1e-4, "{name} {logits_key}: max |diff| {diff}");
        }
    }
}

#[test]
fn greedy_32_tokens_identical() {
    for (name, dir, entry) in models() {
        let (engine, tok) = load(&dir);
        let g = json(&golden().join(&name).join(entry["files"]["greedy"].as_str().unwrap()));
        let prompt = ids(&g["prompt_ids"]);
        let want = ids(&g["token_ids"]);
        let got = generate(&engine, &prompt, want.len(), &Sampling::GREEDY, &[]).unwrap();
        assert_eq!(got, want, "{name}");
        if let Some(text) = g["text"].as_str() {
            let all: Vec<u32> = prompt.iter().chain(&got).copied().collect();
            assert_eq!(tok.decode(&all).unwrap(), text, "{name}");
        }
        if name.starts_with("stories260K") {
            let text = tok.decode(&got).unwrap();
            assert!(
                text.starts_with("Once upon a time, there was a little girl named Lily."),
                "{name}: {text}"
            );
        }
    }
}

#[test]
fn tokenizer_ids_match() {
    for (name, dir, entry) in models() {
        let (_, tok) = load(&dir);
        for case in json(&golden().join(&name).join(entry["files"]["tokenize"].as_str().unwrap()))
            .as_array()
            .unwrap()
        {
            let text = case["text"].as_str().unwrap();
            assert_eq!(tok.encode_plain(text).unwrap(), ids(&case["ids"]), "{name}: {text:?}");
            assert_eq!(
                tok.encode_prompt(text).unwrap(),
                ids(&case["ids_add_special"]),
                "{name}: {text:?}"
            );
            assert_eq!(
                tok.decode(&ids(&case["ids"])).unwrap(),
                case["decode_skip_special"].as_str().unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn perplexity_within_001_percent() {
    for (name, dir, entry) in models() {
        let Some(file) = entry["files"].get("perplexity").and_then(Value::as_str) else { continue };
        let want = json(&golden().join(&name).join(file));
        let Some(corpus) = source_dir(&format!("shared/{}", want["corpus"].as_str().unwrap()))
        else {
            continue;
        };
        let (engine, tok) = load(&dir);
        // llama.cpp tokenizes the whole file with special tokens: BOS first.
        let stream = tok.encode_prompt(&std::fs::read_to_string(corpus).unwrap()).unwrap();
        assert_eq!(stream.len() as u64, want["stream"]["tokens"].as_u64().unwrap(), "{name}");
        let bytes: Vec<u8> = stream.iter().flat_map(|t| t.to_le_bytes()).collect();
        let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            sha,
            want["stream"]["sha256_u32le"].as_str().unwrap(),
            "{name}: token stream differs"
        );
        let ctx = want["ctx"].as_u64().unwrap() as usize;
        let chunks = want["chunks"].as_u64().unwrap() as usize;
        let bos = tok.adds_bos().then(|| tok.bos()).flatten();
        for (scoring, key) in
            [(Scoring::SecondHalf, None), (Scoring::FullWindow, Some("full_window"))]
        {
            let w = key.map_or(&want, |k| &want[k]);
            let report =
                perplexity(&engine, &stream, ctx, Some(chunks), bos, scoring, |_, _, _| {})
                    .unwrap();
            assert_eq!(report.tokens_scored as u64, w["tokens_scored"].as_u64().unwrap());
            let rel = (report.ppl / w["ppl"].as_f64().unwrap() - 1.0).abs();
            note(&format!(
                "{name} {scoring:?}: ppl {:.6} vs transformers {} (relative {rel:e})",
                report.ppl, w["ppl"]
            ));
            assert!(
                rel <= 1e-4,
                "{name} {scoring:?}: ppl {} vs {} ({rel:e})",
                report.ppl,
                w["ppl"]
            );
        }
    }
}
