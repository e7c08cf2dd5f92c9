//! `phiquant inspect` and `phiquant targets` on the shared models and the fixtures.

use serde_json::Value;

use crate::util::{fixture, shared_model};

fn inspect_json(cmd: &mut crate::util::TestCommand, model: &std::path::Path) -> Value {
    let out = cmd.arg("inspect").arg(model).arg("--json").stdout();
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("--json output does not parse: {e}\n{out}"))
}

fn assert_stories260k(v: &Value, architecture: &str, qkv_layout: &str) {
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["architecture"], architecture);
    assert_eq!(v["parameters"], 260_032);
    assert_eq!(v["layers"], 5);
    assert_eq!(v["heads"], 8);
    assert_eq!(v["kv_heads"], 4);
    assert_eq!(v["head_dim"], 8);
    assert_eq!(v["vocab_size"], 512);
    assert_eq!(v["tied_embeddings"], true);
    assert_eq!(v["hidden_size"], 64);
    assert_eq!(v["intermediate_size"], 172);
    assert_eq!(v["qkv_layout"], qkv_layout);
    assert_eq!(v["rope"]["kind"], "default");
    assert_eq!(v["dtypes"][0]["dtype"], "F32");
    assert_eq!(v["dtypes"][0]["bytes"], 260_032 * 4);
    assert_eq!(v["tokenizer"]["kind"], "bpe-sentencepiece");
    assert_eq!(v["tokenizer"]["add_bos_token"], true);
    // ffn 172 is not a multiple of 32: int4 pads the down projections, GGUF q4_0 falls back.
    let target = |name: &str| {
        v["targets"].as_array().unwrap().iter().find(|t| t["target"] == name).unwrap().clone()
    };
    assert_eq!(target("cpu-int4")["status"], "padded");
    assert_eq!(target("cpu-int4")["matrices_affected"], 5);
    assert_eq!(target("gguf-q4_0")["status"], "fallback");
    assert_eq!(target("cpu-fp32")["status"], "exact");
    let g32 = &v["group_sizes"][1];
    assert_eq!(g32["group_size"], 32);
    assert_eq!(g32["padded_dims"], serde_json::json!([172]));
}

pqtest!(stories260k_phi3_layout, |dir, cmd| {
    let Some(model) = shared_model("stories260K-phi3") else { return };
    let v = inspect_json(&mut cmd, &model);
    assert_stories260k(&v, "Phi3ForCausalLM", "fused");
    let _ = dir;
});

pqtest!(stories260k_llama_layout, |dir, cmd| {
    let Some(model) = shared_model("stories260K") else { return };
    let v = inspect_json(&mut cmd, &model);
    assert_stories260k(&v, "LlamaForCausalLM", "separate");
    let _ = dir;
});

pqtest!(stories260k_text_report, |dir, cmd| {
    let Some(model) = shared_model("stories260K-phi3") else { return };
    let out = cmd.arg("inspect").arg(&model).stdout();
    assert!(out.contains("architecture  Phi3ForCausalLM\n"), "{out}");
    assert!(out.contains("parameters    260,032\n"), "{out}");
    assert!(
        out.contains("5 layers, hidden 64, ffn 172, 8 heads / 4 kv heads of 8, vocab 512"),
        "{out}"
    );
    assert!(out.contains("tied (LM head = embedding)"), "{out}");
    assert!(out.contains("dml-int4"), "{out}");
    let _ = dir;
});

pqtest!(smollm2_config_is_read, |dir, cmd| {
    // The shared SmolLM2 folder ships a GGUF and its HF config, not safetensors: the config parses
    // and the missing weights are reported plainly.
    let Some(model) = shared_model("smollm2-135m-instruct") else { return };
    let line = cmd.arg("inspect").arg(&model).error_line();
    assert!(line.contains("no model.safetensors or model.safetensors.index.json found"), "{line}");
    let _ = dir;
});

/// Expected facts for each fixture: architecture, parameters, rope kind, rotary dim, tied,
/// sliding window, q/k/v bias, tokenizer kind, stored dtype.
#[allow(clippy::type_complexity)]
const FIXTURES: [(&str, &str, u64, &str, u64, bool, Option<u64>, bool, &str, &str); 6] = [
    (
        "phi3",
        "Phi3ForCausalLM",
        110_912,
        "default",
        16,
        false,
        Some(64),
        false,
        "bpe-sentencepiece",
        "F32",
    ),
    (
        "phi3-longrope",
        "Phi3ForCausalLM",
        110_912,
        "longrope",
        16,
        false,
        Some(256),
        false,
        "bpe-sentencepiece",
        "BF16",
    ),
    (
        "phi4-mini",
        "Phi3ForCausalLM",
        172_512,
        "longrope",
        12,
        true,
        Some(512),
        false,
        "bpe-byte-level",
        "BF16",
    ),
    (
        "llama",
        "LlamaForCausalLM",
        111_936,
        "llama3",
        16,
        false,
        None,
        false,
        "bpe-sentencepiece",
        "F16",
    ),
    (
        "mistral",
        "MistralForCausalLM",
        115_008,
        "default",
        16,
        false,
        Some(32),
        false,
        "bpe-sentencepiece",
        "F32",
    ),
    ("qwen2", "Qwen2ForCausalLM", 94_784, "default", 16, true, None, true, "bpe-byte-level", "F32"),
];

pqtest!(every_fixture_variant, |dir, cmd| {
    for (name, arch, params, rope, rotary, tied, window, qkv_bias, tok, dtype) in FIXTURES {
        let v = inspect_json(&mut dir.command(), &fixture(name));
        assert_eq!(v["architecture"], arch, "{name}");
        assert_eq!(v["parameters"], params, "{name}");
        assert_eq!(v["rope"]["kind"], rope, "{name}");
        assert_eq!(v["rope"]["rotary_dim"], rotary, "{name}");
        assert_eq!(v["tied_embeddings"], tied, "{name}");
        assert_eq!(v["sliding_window"]["size"].as_u64(), window, "{name}");
        assert_eq!(v["biases"]["qkv"], qkv_bias, "{name}");
        assert_eq!(v["tokenizer"]["kind"], tok, "{name}");
        assert_eq!(v["dtypes"].as_array().unwrap().len(), 1, "{name}");
        assert_eq!(v["dtypes"][0]["dtype"], dtype, "{name}");
        assert_eq!(v["tokenizer"]["vocab_size"], 320, "{name}");
    }
    // Sharded: both shards are read.
    let v = inspect_json(&mut cmd, &fixture("mistral"));
    let files: Vec<&str> =
        v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(files, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
    // Phi-4-mini-like: GQA 6/2 with partial rotary 0.75 of head_dim 16.
    let v = inspect_json(&mut dir.command(), &fixture("phi4-mini"));
    assert_eq!((v["heads"].as_u64(), v["kv_heads"].as_u64()), (Some(6), Some(2)));
    assert_eq!(v["rope"]["partial_rotary_factor"], 0.75);
    assert_eq!(v["original_context"], 128);
});

pqtest!(targets_lists_every_target, |dir, cmd| {
    let out = cmd.arg("targets").stdout();
    for name in
        ["cpu-int4", "mobile-int4", "cuda-int4", "cuda-fp16", "dml-int4", "cpu-fp32", "gguf-q4_k_m"]
    {
        assert!(out.contains(name), "{name} missing:\n{out}");
    }
    assert!(out.contains("DirectML is deprecated"), "{out}");
    let json: Value =
        serde_json::from_str(&dir.command().args(["targets", "--json"]).stdout()).unwrap();
    let dml = json.as_array().unwrap().iter().find(|t| t["name"] == "dml-int4").unwrap();
    assert_eq!(dml["weights"]["algo"], "awq");
    assert_eq!(dml["weights"]["block_size"], 128);
    assert_eq!(json.as_array().unwrap().len(), 14);
});

pqtest!(closed_stdout_is_not_an_error, |dir, cmd| {
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_phiquant"))
        .args(["targets"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() || out.status.code() == Some(0), "{:?}", out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let _ = (dir, cmd);
});
