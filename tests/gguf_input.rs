//! GGUF files as input (`--model file.gguf`) and Hugging Face folders as output (`hf-f16`,
//! `hf-bf16`): round trips through GGUF, requantization, the tokenizer rebuilt from GGUF
//! metadata, the native engine on both, and malformed GGUF input.

use std::path::{Path, PathBuf};

use phiquant_convert::gguf::{PlannedTensor, model_keys, tokenizer_keys, write_gguf};
use phiquant_quant::BlockFormat;
use phiquant_runtime::{
    AuxFiles, Checkpoint, Engine, Logits, Tokenizer, WeightSource,
    gguf::{GgmlType, GgufFile, GgufModel, GgufValue},
};

use crate::util::{Dir, fixture, note, root, shared_model};

const FIXTURES: [&str; 6] = ["llama", "mistral", "phi3", "phi3-longrope", "phi4-mini", "qwen2"];

/// Texts that exercise spaces, digits, punctuation, non-ASCII and byte fallback.
const PROBES: [&str; 6] = [
    "Hello world",
    "  two  spaces,\ttab\nnew line\n\n",
    "Numbers: 1234567 and 3.14159, 2024-11-21.",
    "naïve café — 東京 🙂 ümlaut",
    "it's we've they'll I'm you'd DON'T",
    "",
];

/// The first `max` bytes of a shared corpus (cut at a line end), or nothing when absent.
fn corpus(name: &str, max: usize) -> Option<String> {
    let path = root().join("../shared/corpora").join(name);
    let text = std::fs::read_to_string(path).ok()?;
    let cut = text[..text.floor_char_boundary(max.min(text.len()))].rfind('\n').unwrap_or(0);
    Some(text[..cut].to_string())
}

/// Asserts that the tokenizer rebuilt from `gguf`'s metadata gives the ids (and the decoded
/// text) of the checkpoint tokenizer in `original`, on the probes and a few kB of each corpus.
fn assert_same_tokenizer(original: &Path, gguf: &Path, extra: &[&str]) -> usize {
    let model = GgufModel::open(gguf).unwrap();
    assert_same_tokenizer_of(original, model.file(), model.spec(), extra)
}

fn assert_same_tokenizer_of(
    original: &Path,
    file: &GgufFile,
    spec: &phiquant_runtime::DecoderSpec,
    extra: &[&str],
) -> usize {
    let gguf = file.path();
    let aux = AuxFiles::from_gguf(file, spec).unwrap();
    let rebuilt = Tokenizer::from_files(&aux, spec.bos_token_id).unwrap();
    let theirs = Tokenizer::from_dir(original, spec.bos_token_id).unwrap();
    assert_eq!(rebuilt.bos(), theirs.bos(), "{}", gguf.display());
    assert_eq!(rebuilt.adds_bos(), theirs.adds_bos(), "{}", gguf.display());
    let mut texts: Vec<String> = PROBES.iter().chain(extra).map(|s| s.to_string()).collect();
    for name in ["tinystories-val.txt", "sotu.txt"] {
        if let Some(text) = corpus(name, 6000) {
            texts.extend(text.split("\n\n").map(str::to_string));
            texts.push(text);
        }
    }
    let mut tokens = 0;
    for text in &texts {
        let want = theirs.encode_plain(text).unwrap();
        let got = rebuilt.encode_plain(text).unwrap();
        assert_eq!(got, want, "{}: ids differ on {text:?}", gguf.display());
        assert_eq!(rebuilt.decode(&got).unwrap(), theirs.decode(&want).unwrap(), "{text:?}");
        assert_eq!(rebuilt.encode_prompt(text).unwrap(), theirs.encode_prompt(text).unwrap());
        tokens += want.len();
    }
    tokens
}

fn export(dir: &Dir, model: &Path, out: &Path, targets: &[&str]) {
    dir.command().export(model, out, targets).stdout();
}

pqtest!(rebuilt_tokenizers_give_the_original_ids, |dir, cmd| {
    // phiquant's own GGUF files: SentencePiece-style (llama, phi3) and byte-level ones.
    let mut models: Vec<PathBuf> = ["llama", "phi3", "qwen2", "phi4-mini"].map(fixture).to_vec();
    models.extend(["stories260K", "stories260K-phi3"].iter().filter_map(|m| shared_model(m)));
    for model in &models {
        let out = dir.path().join(model.file_name().unwrap());
        export(&dir, model, &out, &["gguf-f32"]);
        let n = assert_same_tokenizer(model, &out.join("gguf-f32.gguf"), &[]);
        note(&format!("{}: {n} tokens identical", model.display()));
    }
    // llama.cpp's own GGUF of SmolLM2 (byte-level BPE, pre-tokenizer `smollm`), and phiquant's
    // re-export of it.
    let Some(smol) = shared_model("smollm2-135m-instruct") else { return };
    let gguf = smol.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let chat = ["<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"];
    let n = assert_same_tokenizer(&smol, &gguf, &chat);
    note(&format!("SmolLM2 (llama.cpp Q4_1 GGUF): {n} tokens identical"));
    let aux = {
        let m = GgufModel::open(&gguf).unwrap();
        AuxFiles::from_gguf(m.file(), m.spec()).unwrap()
    };
    let config = aux.json("tokenizer_config.json").unwrap().unwrap();
    assert!(config["chat_template"].as_str().unwrap().contains("<|im_start|>"));
    assert_eq!(config["eos_token"], "<|im_end|>");

    // phiquant's own tokenizer keys for SmolLM2 (the shared folder has no weights, so a GGUF of
    // metadata alone): read back, they give the original ids too.
    let spec = phiquant_runtime::DecoderSpec::from_config_file(&smol.join("config.json")).unwrap();
    let mut metadata = model_keys(&spec, "SmolLM2", 0, 0);
    metadata.extend(tokenizer_keys(&AuxFiles::from_dir(&smol).unwrap(), &spec).unwrap());
    let path = dir.path().join("smollm2-keys.gguf");
    let mut out = std::fs::File::create(&path).unwrap();
    write_gguf::<_, std::io::Error>(&mut out, &metadata, &[], 32, |_, _| Ok(Vec::new())).unwrap();
    drop(out);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.get("tokenizer.ggml.pre").and_then(GgufValue::as_str), Some("smollm"));
    let n = assert_same_tokenizer_of(&smol, &file, &spec, &chat);
    note(&format!("SmolLM2 (phiquant's tokenizer keys): {n} tokens identical"));
    let _ = cmd;
});

pqtest!(rebuilt_byte_level_pre_tokenizers, |dir, cmd| {
    // The qwen2 fixture's byte-level vocabulary under Qwen2's and Llama 3's pre-tokenizers (as
    // their tokenizer.json files spell them); phiquant's writer names them `qwen2` and
    // `llama-bpe`, and the reader must rebuild the same splits.
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    for (name, pattern, nfc, pre) in
        [("qwen2-pre", qwen2, true, "qwen2"), ("llama-bpe-pre", llama3, false, "llama-bpe")]
    {
        let model = dir.copy_model(&fixture("qwen2"), name);
        crate::util::edit_json(&model.join("tokenizer.json"), |t| {
            t["pre_tokenizer"] = serde_json::json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
                     "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                     "use_regex": false},
                ],
            });
            if nfc {
                t["normalizer"] = serde_json::json!({"type": "NFC"});
            }
            if pre == "llama-bpe" {
                t["model"]["ignore_merges"] = true.into();
            }
        });
        let out = dir.path().join(format!("{name}-out"));
        export(&dir, &model, &out, &["gguf-f32"]);
        let f = GgufFile::open(&out.join("gguf-f32.gguf")).unwrap();
        assert_eq!(f.get("tokenizer.ggml.pre").and_then(GgufValue::as_str), Some(pre));
        assert_same_tokenizer(&model, &out.join("gguf-f32.gguf"), &["1234567 abc'S  x"]);
    }
    let _ = cmd;
});

/// Every file of a folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

pqtest!(hf_through_gguf_f32_equals_hf_directly, |dir, cmd| {
    let mut models: Vec<PathBuf> = FIXTURES.map(fixture).to_vec();
    models.extend(["stories260K", "stories260K-phi3"].iter().filter_map(|m| shared_model(m)));
    for model in &models {
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        let direct = dir.path().join(format!("{name}-direct"));
        let via = dir.path().join(format!("{name}-via"));
        export(&dir, model, &direct, &["hf-f16", "hf-bf16", "gguf-f32"]);
        export(&dir, &direct.join("gguf-f32.gguf"), &via, &["hf-f16", "hf-bf16", "gguf-f32"]);
        // A GGUF read back and written again is the same file.
        assert!(
            std::fs::read(direct.join("gguf-f32.gguf")).unwrap()
                == std::fs::read(via.join("gguf-f32.gguf")).unwrap(),
            "{name}: gguf-f32 -> gguf-f32 changed the file"
        );
        for target in ["hf-f16", "hf-bf16"] {
            let a = files(&direct.join(target));
            let b = files(&via.join(target));
            assert!(
                file(&a, "model.safetensors") == file(&b, "model.safetensors"),
                "{name} {target}: weights differ"
            );
            // config.json is the same text, but for what GGUF does not record: phiquant's GGUF
            // writer drops Llama 3 rope scaling (llama.cpp's converter stores it as a
            // `rope_freqs` tensor); GGUF has one padding id, which the tokenizer config supplies
            // when config.json has none; Phi-3 GGUFs never say whether head_dim was explicit.
            let lossy: &[&str] = match name.as_str() {
                "llama" => &["rope_scaling"],
                "qwen2" => &["pad_token_id"],
                "stories260K-phi3" => &["head_dim"],
                _ => &[],
            };
            let (ca, cb) = (file(&a, "config.json"), file(&b, "config.json"));
            if lossy.is_empty() {
                eqnice!(String::from_utf8_lossy(ca), String::from_utf8_lossy(cb));
            }
            let va: serde_json::Value = serde_json::from_slice(ca).unwrap();
            let vb: serde_json::Value = serde_json::from_slice(cb).unwrap();
            let keys: std::collections::BTreeSet<&String> =
                va.as_object().unwrap().keys().chain(vb.as_object().unwrap().keys()).collect();
            let differing: Vec<&str> =
                keys.into_iter().filter(|k| va.get(*k) != vb.get(*k)).map(|k| k.as_str()).collect();
            assert_eq!(differing, lossy, "{name} {target}: config.json fields that differ");
            // Both folders are checkpoints phiquant reads, to the same model.
            let sa = Checkpoint::open(&direct.join(target)).unwrap();
            let sb = Checkpoint::open(&via.join(target)).unwrap();
            if lossy.is_empty() {
                assert_eq!(sa.spec(), sb.spec(), "{name}");
            }
        }
        // Exporting again gives the same bytes (and replaces the earlier folder).
        let before = files(&direct.join("hf-bf16"));
        export(&dir, model, &direct, &["hf-bf16"]);
        assert!(files(&direct.join("hf-bf16")) == before, "{name}: hf-bf16 not deterministic");
    }
    let _ = cmd;
});

pqtest!(gguf_requantization_is_idempotent, |dir, cmd| {
    // Dequantizing a GGUF and quantizing it again to the same type gives the same bytes: every
    // block's values lie on the grid its scale (and minimum) define, so the quantizer finds the
    // same scale. Checked for each type and model here rather than assumed.
    let mut models: Vec<PathBuf> =
        ["phi3-longrope", "phi4-mini", "qwen2", "mistral"].map(fixture).to_vec();
    models.extend(["stories260K", "stories260K-phi3"].iter().filter_map(|m| shared_model(m)));
    let targets = ["gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_1", "gguf-q4_k_m"];
    for model in &models {
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        for pure in [false, true] {
            let first = dir.path().join(format!("{name}-{pure}-1"));
            let mut c = dir.command();
            c.export(model, &first, &targets);
            if pure {
                c.arg("--pure");
            }
            c.stdout();
            for t in targets {
                let second = dir.path().join(format!("{name}-{pure}-{t}"));
                let mut c = dir.command();
                c.export(&first.join(format!("{t}.gguf")), &second, &[t]);
                if pure {
                    c.arg("--pure");
                }
                c.stdout();
                assert!(
                    std::fs::read(first.join(format!("{t}.gguf"))).unwrap()
                        == std::fs::read(second.join(format!("{t}.gguf"))).unwrap(),
                    "{name} {t} (pure {pure}): requantizing changed the file"
                );
            }
        }
    }
    let _ = cmd;
});

pqtest!(llama_cpp_gguf_requantizes_to_its_own_bytes, |dir, cmd| {
    // llama.cpp's own Q4_1 file of SmolLM2 (llama_model_quantize): phiquant reads it, and its
    // gguf-q4_1 holds every tensor byte for byte, keeping the descriptive general.* keys.
    let Some(smol) = shared_model("smollm2-135m-instruct") else { return };
    let src = GgufFile::open(&smol.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let out = dir.path().join("o");
    cmd.export(src.path(), &out, &["gguf-q4_1"]).stdout();
    let ours = GgufFile::open(&out.join("gguf-q4_1.gguf")).unwrap();
    assert_eq!(ours.tensors().len(), src.tensors().len());
    for t in src.tensors() {
        let o = ours.info(&t.name).unwrap_or_else(|| panic!("no {}", t.name));
        assert_eq!((o.type_id, &o.dims), (t.type_id, &t.dims), "{}", t.name);
        assert!(ours.data(&t.name) == src.data(&t.name), "{} differs", t.name);
    }
    for (k, v) in src.metadata() {
        if k.starts_with("tokenizer.") || k == "general.license" || k == "general.organization" {
            assert_eq!(ours.get(k), Some(v), "{k}");
        }
    }
});

/// Logits of every position of `ids` from `source`.
fn logits(source: &dyn WeightSource, ids: &[u32]) -> Vec<f32> {
    let engine = Engine::load(source).unwrap();
    engine.session(ids.len()).forward(ids, Logits::All).unwrap().to_vec()
}

pqtest!(engine_on_gguf_f32_equals_the_checkpoint, |dir, cmd| {
    let mut models: Vec<PathBuf> = FIXTURES.map(fixture).to_vec();
    models.extend(["stories260K", "stories260K-phi3"].iter().filter_map(|m| shared_model(m)));
    let ids: Vec<u32> = vec![1, 45, 300, 17, 99, 260, 5, 77, 120, 3, 250, 8];
    for model in &models {
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        if name == "llama" {
            continue; // Llama 3 rope scaling is not stored in phiquant's GGUF (see above).
        }
        let out = dir.path().join(&name);
        export(&dir, model, &out, &["gguf-f32", "hf-f16"]);
        let ckpt = Checkpoint::open(model).unwrap();
        let gguf = GgufModel::open(&out.join("gguf-f32.gguf")).unwrap();
        assert_eq!(gguf.spec().rope, ckpt.spec().rope, "{name}");
        for info in ckpt.tensor_infos() {
            let want = ckpt.tensor(&info.name).unwrap().to_f32().unwrap();
            assert!(
                gguf.tensor(&info.name).unwrap().to_f32().unwrap() == want,
                "{name}: {}",
                info.name
            );
        }
        let want = logits(&ckpt, &ids);
        assert!(logits(&gguf, &ids) == want, "{name}: logits differ");
        // The hf-f16 folder runs too, within f16 rounding of the original.
        let f16 = Checkpoint::open(&out.join("hf-f16")).unwrap();
        let got = logits(&f16, &ids);
        let diff = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 0.05, "{name}: hf-f16 logits off by {diff}");
    }
    let _ = cmd;
});

pqtest!(hf_folder_from_gguf_generates, |dir, cmd| {
    let Some(model) = shared_model("stories260K") else { return };
    let a = dir.path().join("a");
    export(&dir, &model, &a, &["gguf-q8_0"]);
    let b = dir.path().join("b");
    export(&dir, &a.join("gguf-q8_0.gguf"), &b, &["hf-f16"]);
    let v: serde_json::Value = serde_json::from_str(
        &dir.command()
            .arg("generate")
            .arg(b.join("hf-f16"))
            .args(["--max-tokens", "24", "--json"])
            .stdout(),
    )
    .unwrap();
    assert_eq!(v["prompt_ids"], serde_json::json!([1]));
    let text = v["text"].as_str().unwrap();
    assert!(text.starts_with("Once upon a time"), "{text}");
    let _ = cmd;
});

type Metadata = Vec<(String, GgufValue)>;

/// Writes a copy of the GGUF `src` to `dst` with its metadata edited by `edit` (tensors kept).
fn rewrite_gguf(src: &Path, dst: &Path, edit: impl FnOnce(&mut Metadata)) {
    let f = GgufFile::open(src).unwrap();
    let mut metadata = f.metadata().to_vec();
    edit(&mut metadata);
    let tensors: Vec<PlannedTensor> = f
        .tensors()
        .iter()
        .map(|t| PlannedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            format: GgmlType::from_id(t.type_id).unwrap().0,
        })
        .collect();
    let mut out = std::fs::File::create(dst).unwrap();
    write_gguf::<_, std::io::Error>(&mut out, &metadata, &tensors, 32, |_, t| {
        Ok(f.data(&t.name).unwrap().to_vec())
    })
    .unwrap();
}

fn set(metadata: &mut [(String, GgufValue)], key: &str, value: GgufValue) {
    metadata.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
}

pqtest!(bad_gguf_input_is_one_line_and_leaves_nothing, |dir, cmd| {
    let good_dir = dir.path().join("good");
    export(&dir, &fixture("phi3-longrope"), &good_dir, &["gguf-q8_0"]);
    let good = good_dir.join("gguf-q8_0.gguf");
    let bad = |name: &str, edit: &dyn Fn(&mut Metadata)| {
        let p = dir.path().join(name);
        rewrite_gguf(&good, &p, |m| edit(m));
        p
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            bad("arch.gguf", &|m| {
                set(m, "general.architecture", GgufValue::String("gemma2".into()))
            }),
            "`general.architecture` is \"gemma2\", expected llama, phi3 or qwen2",
        ),
        (
            bad("key.gguf", &|m| m.retain(|(k, _)| k != "phi3.block_count")),
            "missing GGUF metadata key `phi3.block_count`",
        ),
        (
            bad("layers.gguf", &|m| set(m, "phi3.block_count", GgufValue::U32(3))),
            "tensor `blk.2.attn_norm.weight`: missing (the GGUF metadata implies it)",
        ),
        (
            bad("heads.gguf", &|m| set(m, "phi3.attention.head_count_kv", GgufValue::U32(3))),
            "`phi3.attention.head_count_kv` is 3, expected a divisor of phi3.attention.head_count (4)",
        ),
        (
            bad("rope.gguf", &|m| {
                m.retain(|(k, _)| k != "phi3.rope.dimension_count");
                m.push(("phi3.rope.dimension_count".into(), GgufValue::U32(5)));
            }),
            "`phi3.rope.dimension_count` is 5, expected an even number from 2 to the head size",
        ),
        (
            bad("tok.gguf", &|m| set(m, "tokenizer.ggml.model", GgufValue::String("bert".into()))),
            "`tokenizer.ggml.model` is \"bert\", expected llama (SentencePiece-style BPE) or gpt2",
        ),
        (
            bad("eos.gguf", &|m| set(m, "tokenizer.ggml.eos_token_id", GgufValue::U32(99999))),
            "`tokenizer.ggml.eos_token_id` is 99999, expected a token id below 320",
        ),
    ];
    for (path, want) in &cases {
        let out = dir.path().join(format!("out-{}", path.file_stem().unwrap().to_string_lossy()));
        let line = dir.command().export(path, &out, &["hf-f16", "gguf-q4_0"]).error_line();
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(line.contains(want), "{line}\nlacks: {want}");
        assert_eq!(std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0), 0, "{line}");
    }

    // A BOS token marked unused (so left out of the rebuilt vocabulary) is odd but not an error.
    let odd = bad("odd.gguf", &|m| {
        let (_, GgufValue::Array(_, types)) =
            m.iter_mut().find(|(k, _)| k == "tokenizer.ggml.token_type").unwrap()
        else {
            panic!("token types are an array")
        };
        types[1] = GgufValue::I32(5);
    });
    dir.command().export(&odd, &dir.path().join("o-odd"), &["hf-f16"]).stdout();

    // A byte-level GGUF with a pre-tokenizer phiquant does not rebuild.
    let q = dir.path().join("q");
    export(&dir, &fixture("qwen2"), &q, &["gguf-f16"]);
    let pre = dir.path().join("pre.gguf");
    rewrite_gguf(&q.join("gguf-f16.gguf"), &pre, |m| {
        set(m, "tokenizer.ggml.pre", GgufValue::String("chatglm-bpe".into()))
    });
    let line = dir.command().export(&pre, &dir.path().join("o-pre"), &["hf-f16"]).error_line();
    assert!(line.contains("`tokenizer.ggml.pre` is \"chatglm-bpe\", expected one of"), "{line}");

    // An unsupported tensor type: the type id of `output_norm.weight` patched to Q2_K (10).
    let mut bytes = std::fs::read(&good).unwrap();
    let name = b"output_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    bytes[ty..ty + 4].copy_from_slice(&10u32.to_le_bytes());
    let q2k = dir.path().join("q2k.gguf");
    std::fs::write(&q2k, bytes).unwrap();
    let line = dir.command().export(&q2k, &dir.path().join("o-q2k"), &["hf-f16"]).error_line();
    assert!(
        line.contains("tensor `output_norm.weight`: ggml type Q2_K (10) is not supported"),
        "{line}"
    );

    // Truncated: one line naming what is missing.
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let line = dir.command().export(&cut, &dir.path().join("o-cut"), &["hf-f16"]).error_line();
    assert!(line.contains("data section has only"), "{line}");

    // --revision does not apply to a file.
    let line = cmd
        .export(&good, &dir.path().join("o-rev"), &["hf-f16"])
        .args(["--revision", "main"])
        .error_line();
    assert!(line.contains("--revision applies only to hub ids"), "{line}");
});

pqtest!(hf_export_replaces_only_its_own_folders, |dir, cmd| {
    let out = dir.path().join("o");
    std::fs::create_dir_all(out.join("hf-f16")).unwrap();
    std::fs::write(out.join("hf-f16/notes.txt"), b"mine").unwrap();
    let line = cmd.export(&fixture("phi3"), &out, &["hf-f16"]).error_line();
    assert!(line.contains("holds files other than an earlier export's"), "{line}");
    assert_eq!(std::fs::read(out.join("hf-f16/notes.txt")).unwrap(), b"mine");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["hf-f16"], "no partial folder left");
    // An earlier export is replaced.
    std::fs::remove_file(out.join("hf-f16/notes.txt")).unwrap();
    dir.command().export(&fixture("phi3"), &out, &["hf-f16"]).stdout();
    dir.command().export(&fixture("qwen2"), &out, &["hf-f16"]).stdout();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("hf-f16/config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "qwen2");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
});

pqtest!(inspect_describes_a_gguf_as_its_model, |dir, cmd| {
    let Some(model) = shared_model("stories260K-phi3") else { return };
    let out = dir.path().join("o");
    export(&dir, &model, &out, &["gguf-q8_0"]);
    let json = |c: &mut crate::util::TestCommand, m: &Path| -> serde_json::Value {
        serde_json::from_str(&c.arg("inspect").arg(m).arg("--json").stdout()).unwrap()
    };
    let a = json(&mut cmd, &model);
    let b = json(&mut dir.command(), &out.join("gguf-q8_0.gguf"));
    for key in [
        "architecture",
        "parameters",
        "layers",
        "heads",
        "kv_heads",
        "head_dim",
        "vocab_size",
        "tied_embeddings",
        "rope",
        "qkv_layout",
        "tokenizer",
        "targets",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    let types: Vec<&str> =
        b["dtypes"].as_array().unwrap().iter().map(|d| d["dtype"].as_str().unwrap()).collect();
    assert_eq!(types, ["F16", "F32", "Q8_0"]);
    assert_eq!(b["files"][0]["name"], "gguf-q8_0.gguf");
});

pqtest!(phi3_gguf_with_separate_q_k_v_reads_as_fused, |dir, cmd| {
    // llama.cpp also loads Phi-3 files that keep q, k and v apart (`attn_q`, `attn_k`,
    // `attn_v` instead of `attn_qkv`); phiquant stacks them back into `qkv_proj`.
    let model = fixture("phi4-mini");
    let out = dir.path().join("o");
    export(&dir, &model, &out, &["gguf-f32"]);
    let f = GgufFile::open(&out.join("gguf-f32.gguf")).unwrap();
    let ckpt = Checkpoint::open(&model).unwrap();
    let spec = ckpt.spec();
    let (q, kv, hidden) = (spec.q_dim(), spec.kv_dim(), spec.hidden_size as u64);
    let mut tensors = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for t in f.tensors() {
        let bytes = f.data(&t.name).unwrap();
        match t.name.strip_suffix(".attn_qkv.weight") {
            Some(blk) => {
                let row = 4 * hidden as usize;
                for (part, range) in
                    [("attn_q", 0..q), ("attn_k", q..q + kv), ("attn_v", q + kv..q + 2 * kv)]
                {
                    tensors.push(PlannedTensor {
                        name: format!("{blk}.{part}.weight"),
                        dims: vec![hidden, range.len() as u64],
                        format: BlockFormat::F32,
                    });
                    data.push(bytes[range.start * row..range.end * row].to_vec());
                }
            }
            None => {
                tensors.push(PlannedTensor {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    format: GgmlType::from_id(t.type_id).unwrap().0,
                });
                data.push(bytes.to_vec());
            }
        }
    }
    let split = dir.path().join("split.gguf");
    let mut file = std::fs::File::create(&split).unwrap();
    write_gguf::<_, std::io::Error>(&mut file, f.metadata(), &tensors, 32, |i, _| {
        Ok(data[i].clone())
    })
    .unwrap();
    drop(file);
    let gguf = GgufModel::open(&split).unwrap();
    assert!(GgufFile::open(&split).unwrap().info("blk.0.attn_qkv.weight").is_none());
    for info in ckpt.tensor_infos() {
        let want = ckpt.tensor(&info.name).unwrap().to_f32().unwrap();
        assert!(gguf.tensor(&info.name).unwrap().to_f32().unwrap() == want, "{}", info.name);
    }
    let _ = cmd;
});
