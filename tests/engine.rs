//! `phiquant generate` and `phiquant perplexity` end to end.

use serde_json::Value;

use crate::util::{fixture, shared_model};

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
}

pqtest!(stories260k_greedy_from_bos, |dir, cmd| {
    let Some(model) = shared_model("stories260K") else { return };
    let v = json(
        &cmd.arg("generate")
            .arg(&model)
            .args(["--prompt", "", "--max-tokens", "16", "--json"])
            .stdout(),
    );
    assert_eq!(v["prompt_ids"], serde_json::json!([1]));
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 16);
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("Once upon a time, there was a little girl named Lily."), "{text}");
    assert!(v["timing"]["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
    let plain = dir.command().arg("generate").arg(&model).args(["--max-tokens", "16"]).stdout();
    assert_eq!(plain.trim_end(), text);
});

pqtest!(sampling_is_reproducible_by_seed, |dir, cmd| {
    let model = fixture("llama");
    let args = [
        "--prompt",
        "once upon",
        "--max-tokens",
        "12",
        "--temperature",
        "1.0",
        "--top-k",
        "40",
        "--json",
    ];
    let run = |seed: &str| {
        json(
            &dir.command()
                .arg("generate")
                .arg(&model)
                .args(args)
                .args(["--seed", seed, "--ignore-eos"])
                .stdout(),
        )["token_ids"]
            .clone()
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
    let _ = cmd;
});

pqtest!(stories260k_perplexity_matches_transformers, |dir, cmd| {
    let Some(model) = shared_model("stories260K") else { return };
    let corpus = model.join("../../corpora/tinystories-val.txt");
    let v = json(
        &cmd.arg("perplexity")
            .arg(&model)
            .arg("--corpus")
            .arg(&corpus)
            .args(["--ctx", "256", "--chunks", "16", "--json"])
            .stdout(),
    );
    // transformers (fixtures/golden/engine/stories260K/perplexity.json): 3.508071821891495.
    let ppl = v["ppl"].as_f64().unwrap();
    assert!((ppl / 3.508071821891495 - 1.0).abs() < 1e-4, "{ppl}");
    assert_eq!(v["tokens_scored"], 16 * 127);
    assert_eq!(v["chunks"], 16);
    assert_eq!(v["ctx"], 256);
    let full = json(
        &dir.command()
            .arg("perplexity")
            .arg(&model)
            .arg("--corpus")
            .arg(&corpus)
            .args(["--ctx", "256", "--chunks", "16", "--full-window", "--json"])
            .stdout(),
    );
    assert!((full["ppl"].as_f64().unwrap() / 4.316972646321575 - 1.0).abs() < 1e-4, "{full}");
});

pqtest!(engine_bad_input, |dir, cmd| {
    let model = fixture("llama");
    let line =
        cmd.arg("perplexity").arg(&model).args(["--corpus", "/no/such/file.txt"]).error_line();
    assert!(line.contains("reading --corpus /no/such/file.txt"), "{line}");
    let line = dir.command().arg("generate").arg(&model).args(["--temperature=-1"]).error_line();
    assert!(line.contains("`temperature` is -1"), "{line}");
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let line = dir.command().arg("perplexity").arg(&model).arg("--corpus").arg(&short).error_line();
    assert!(line.contains("expected at least one chunk of 512 tokens"), "{line}");
    let no_tok = dir.copy_model(&model, "no-tokenizer");
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    let line = dir.command().arg("generate").arg(&no_tok).error_line();
    assert!(
        line.contains("tokenizer.json: tokenizer: no tokenizer.json in the model folder"),
        "{line}"
    );
});
