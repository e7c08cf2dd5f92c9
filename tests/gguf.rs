//! `phiquant export` to GGUF: contents, determinism, and failures that leave nothing behind.

use phiquant_runtime::{Checkpoint, WeightSource, gguf::GgufFile};

use crate::util::{edit_safetensors_header, fixture, shared_model};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pqtest!(gguf_f32_holds_the_checkpoint, |dir, cmd| {
    for name in ["llama", "phi3-longrope", "qwen2"] {
        let model = fixture(name);
        let out = dir.path().join(name);
        dir.command().export(&model, &out, &["gguf-f32"]).stdout();
        let f = GgufFile::open(&out.join("gguf-f32.gguf")).unwrap();
        let ckpt = Checkpoint::open(&model).unwrap();
        let spec = ckpt.spec();
        assert_eq!(f.version(), 3);
        let emb = ckpt.tensor("model.embed_tokens.weight").unwrap().to_f32().unwrap();
        assert_eq!(f32s(f.data("token_embd.weight").unwrap()), emb, "{name}");
        assert_eq!(
            f.info("token_embd.weight").unwrap().dims,
            vec![spec.hidden_size as u64, spec.vocab_size as u64]
        );
        // Llama's q rows are permuted for llama.cpp's rotary layout; row 1 of head 0 is HF row
        // head_dim / 2.
        if name == "llama" {
            let q =
                ckpt.tensor("model.layers.0.self_attn.q_proj.weight").unwrap().to_f32().unwrap();
            let g = f32s(f.data("blk.0.attn_q.weight").unwrap());
            let (h, hd) = (spec.hidden_size, spec.head_dim);
            assert_eq!(&g[h..2 * h], &q[(hd / 2) * h..(hd / 2 + 1) * h]);
            assert_ne!(g, q);
        }
        if name == "phi3-longrope" {
            assert!(f.info("rope_factors_long.weight").is_some());
            assert!(f.info("blk.1.attn_qkv.weight").is_some());
        }
        if name == "qwen2" {
            assert!(f.info("blk.0.attn_q.bias").is_some());
            assert!(f.info("output.weight").is_none(), "tied embeddings have no output tensor");
        }
        let arch = f.get("general.architecture").and_then(|v| v.as_str()).unwrap().to_string();
        assert_eq!(
            f.get(&format!("{arch}.block_count")).and_then(|v| v.as_u64()),
            Some(spec.num_layers as u64)
        );
    }
    let _ = cmd;
});

pqtest!(gguf_bytes_do_not_depend_on_threads, |dir, cmd| {
    let model = fixture("phi4-mini");
    let run = |threads: &str, sub: &str| {
        let out = dir.path().join(sub);
        dir.command()
            .env("RAYON_NUM_THREADS", threads)
            .export(&model, &out, &["gguf-q4_k_m", "gguf-q8_0"])
            .stdout();
        (
            std::fs::read(out.join("gguf-q4_k_m.gguf")).unwrap(),
            std::fs::read(out.join("gguf-q8_0.gguf")).unwrap(),
        )
    };
    assert!(run("1", "one") == run("2", "two"));
    let _ = cmd;
});

pqtest!(gguf_export_failures_leave_nothing, |dir, cmd| {
    // NaN in a weight: one-line error naming the tensor and row, no file.
    let model = dir.copy_model(&fixture("phi3"), "nan");
    let st = model.join("model.safetensors");
    let mut offset = 0;
    edit_safetensors_header(&st, |h| offset = crate::util::offsets(h, "model.norm.weight").0);
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut bytes = bytes;
    let at = 8 + n + offset as usize + 4 * 3;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, bytes).unwrap();
    let out = dir.path().join("out");
    let line = cmd.export(&model, &out, &["gguf-q8_0"]).error_line();
    assert!(line.contains("tensor `model.norm.weight`: row 0, column 3 holds NaN"), "{line}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left in --out");

    // An unknown target, or AWQ for a type with no 4-bit rounding, is refused before any work.
    let line = dir
        .command()
        .export(&fixture("phi3"), &out, &["gguf-q8_0"])
        .args(["--algo", "awq"])
        .error_line();
    assert!(line.contains("--algo applies to int4 targets"), "{line}");
    let line = dir.command().export(&fixture("phi3"), &out, &["gguf-q3"]).error_line();
    assert!(line.contains("--target gguf-q3: unknown target"), "{line}");
});

pqtest!(gguf_read_only_output_folder, |dir, cmd| {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.path().join("ro");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(out.join("probe"), b"x").is_ok() {
        // Running as root: permissions do not stop writes, so there is nothing to test here.
        std::fs::remove_file(out.join("probe")).unwrap();
        crate::util::skip_note("read-only folders are writable for this user (root)");
        return;
    }
    let line = cmd.export(&fixture("llama"), &out, &["gguf-f16"]).error_line();
    assert!(line.contains("creating"), "{line}");
});

pqtest!(stories260k_q4_0_pure, |dir, cmd| {
    let Some(model) = shared_model("stories260K") else { return };
    let out = dir.path().join("o");
    cmd.export(&model, &out, &["gguf-q4_0"]).arg("--pure").stdout();
    let f = GgufFile::open(&out.join("gguf-q4_0.gguf")).unwrap();
    // ffn_down rows (172) fit no 32-block: F16; everything else Q4_0, the tied embedding too.
    assert_eq!(f.info("blk.0.ffn_down.weight").unwrap().type_id, 1);
    assert_eq!(f.info("blk.0.attn_q.weight").unwrap().type_id, 2);
    assert_eq!(f.info("token_embd.weight").unwrap().type_id, 2);
    assert_eq!(f.info("output_norm.weight").unwrap().type_id, 0);
});

/// phiquant's gguf-f32 of stories260K run in llama.cpp against the native engine on the
/// checkpoint: logits within 1e-3, and the same greedy continuation from BOS.
#[cfg(feature = "llama-cpp")]
#[test]
fn llama_cpp_runs_phiquant_gguf_like_the_engine() {
    use phiquant_runtime::{Engine, LlamaCppModel, Logits, Sampling, generate};

    let Some(model) = shared_model("stories260K") else { return };
    let dir = crate::util::Dir::new("llama_cpp_runs_phiquant_gguf");
    let out = dir.path().join("o");
    dir.command().export(&model, &out, &["gguf-f32"]).stdout();
    let lcpp = LlamaCppModel::load(&out.join("gguf-f32.gguf"), 2).unwrap();
    let engine = Engine::load(&Checkpoint::open(&model).unwrap()).unwrap();
    let vocab = engine.spec().vocab_size;
    assert_eq!(lcpp.vocab_size(), vocab);

    // Token ids from the checkpoint's own tokenizer (llama.cpp's SentencePiece-style tokenizer
    // built from tokenizer.json's vocabulary does not split every text the same way).
    let tok = phiquant_runtime::Tokenizer::from_dir(&model, Some(1)).unwrap();
    let ids = tok
        .encode_prompt(
            "Once upon a time, there was a little dog named Max. He liked to run and play.",
        )
        .unwrap();
    let theirs = lcpp.logits(&ids).unwrap();
    let ours = engine.session(ids.len()).forward(&ids, Logits::All).unwrap().to_vec();
    assert_eq!(theirs.len(), ours.len());
    let diff = theirs.iter().zip(&ours).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    crate::util::note(&format!(
        "llama.cpp vs engine on stories260K gguf-f32: max |logit diff| {diff:e} over {} logits",
        ours.len()
    ));
    assert!(diff <= 1e-3, "max |logit diff| {diff}");

    let want = generate(&engine, &[1], 48, &Sampling::GREEDY, &[]).unwrap();
    let got = lcpp.generate_greedy(&[1], 48, &[]).unwrap();
    assert_eq!(got, want);
    assert!(
        tok.decode(&got)
            .unwrap()
            .starts_with("Once upon a time, there was a little girl named Lily.")
    );
}

/// `generate` and `perplexity` on a GGUF file run in llama.cpp.
#[cfg(feature = "llama-cpp")]
#[test]
fn commands_run_gguf_files_in_llama_cpp() {
    let Some(model) = shared_model("stories260K") else { return };
    let dir = crate::util::Dir::new("commands_run_gguf");
    let out = dir.path().join("o");
    dir.command().export(&model, &out, &["gguf-q8_0"]).stdout();
    let gguf = out.join("gguf-q8_0.gguf");
    let v: serde_json::Value = serde_json::from_str(
        &dir.command().arg("generate").arg(&gguf).args(["--max-tokens", "16", "--json"]).stdout(),
    )
    .unwrap();
    assert_eq!(v["backend"], "llama.cpp");
    assert!(v["text"].as_str().unwrap().starts_with("Once upon a time"), "{v}");
    let corpus = model.join("../../corpora/tinystories-val.txt");
    let p: serde_json::Value = serde_json::from_str(
        &dir.command()
            .arg("perplexity")
            .arg(&gguf)
            .arg("--corpus")
            .arg(&corpus)
            .args(["--ctx", "128", "--chunks", "4", "--json"])
            .stdout(),
    )
    .unwrap();
    assert_eq!(p["tokens_scored"], 4 * 63);
    let ppl = p["ppl"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 50.0, "{ppl}");
    let line = dir.command().arg("generate").arg(&gguf).args(["--temperature", "0.5"]).error_line();
    assert!(line.contains("sampling is not supported on GGUF files yet"), "{line}");
}
