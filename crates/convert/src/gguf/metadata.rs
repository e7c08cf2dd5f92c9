//! GGUF metadata as llama.cpp's converter writes it (`convert_hf_to_gguf.py`
//! `set_gguf_parameters`, `set_vocab`; key names from `gguf-py/gguf/constants.py`): general keys,
//! the architecture's hyper-parameters, and the tokenizer from `tokenizer.json`.

use std::collections::BTreeMap;

use phiquant_quant::BlockFormat;
use phiquant_runtime::{Architecture, AuxFiles, DecoderSpec, RopeScaling, gguf::GgufValue};
use serde_json::Value;

use crate::Error;

type Kv = Vec<(String, GgufValue)>;

/// llama.cpp's architecture name.
pub fn arch_name(a: Architecture) -> &'static str {
    match a {
        Architecture::Phi3 => "phi3",
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        _ => "llama",
    }
}

/// `general.file_type` (`LlamaFileType` in gguf-py) of a target.
pub fn file_type(base: BlockFormat, q4_k_m: bool) -> u32 {
    match (base, q4_k_m) {
        (_, true) => 15,
        (BlockFormat::F32, _) => 0,
        (BlockFormat::F16, _) => 1,
        (BlockFormat::Q4_0, _) => 2,
        (BlockFormat::Q4_1, _) => 3,
        (BlockFormat::Q8_0, _) => 7,
        (BlockFormat::Bf16, _) => 32,
        (BlockFormat::Q5_0, _) => 8,
        (BlockFormat::Q4K, _) => 15,
        (BlockFormat::Q6K, _) => 18,
        _ => 0,
    }
}

/// `general.name` from a folder or repository name, as gguf-py's `Metadata` heuristics make it
/// (`gguf-py/gguf/metadata.py`): hyphens become spaces and all-lowercase words are title-cased,
/// except version and number words.
pub fn general_name(folder: &str) -> String {
    folder
        .trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let lower = w.chars().any(char::is_alphabetic) && !w.chars().any(char::is_uppercase);
            let versionish = w.starts_with(|c: char| c.is_ascii_digit())
                || (w.starts_with('v')
                    && w[1..]
                        .split('.')
                        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
            if lower && !versionish {
                let mut c = w.chars();
                let first =
                    c.next().map(|f| f.to_uppercase().collect::<String>()).unwrap_or_default();
                // Python's str.title(): every letter after a non-letter starts a new word.
                let mut out = first;
                let mut prev_alpha = true;
                for ch in c {
                    if ch.is_alphabetic() && !prev_alpha {
                        out.extend(ch.to_uppercase());
                    } else {
                        out.push(ch);
                    }
                    prev_alpha = ch.is_alphabetic();
                }
                out
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `general.size_label` from a parameter count (gguf-py `model_weight_count_rounded_notation`
/// with two significant digits at least: 260032 -> "260K", 134515008 -> "135M", 3.8e9 -> "3.8B").
pub fn size_label(params: u64) -> String {
    let n = params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = (scaled.round_ties_even() as i64).to_string();
    let fix = 2usize.saturating_sub(digits.trim_start_matches('0').len());
    format!("{scaled:.fix$}{suffix}")
}

/// The hyper-parameter keys of `spec` for llama.cpp's architecture; `name` is `general.name` as
/// written (see [`general_name`]).
pub fn model_keys(spec: &DecoderSpec, name: &str, params: u64, ftype: u32) -> Kv {
    let a = arch_name(spec.architecture);
    let k = |key: &str| format!("{a}.{key}");
    let mut kv: Kv = vec![
        ("general.architecture".into(), GgufValue::String(a.into())),
        ("general.type".into(), GgufValue::String("model".into())),
        ("general.name".into(), GgufValue::String(name.into())),
        ("general.size_label".into(), GgufValue::String(size_label(params))),
        (k("block_count"), GgufValue::U32(spec.num_layers as u32)),
        (k("context_length"), GgufValue::U32(spec.max_position_embeddings as u32)),
        (k("embedding_length"), GgufValue::U32(spec.hidden_size as u32)),
        (k("feed_forward_length"), GgufValue::U32(spec.intermediate_size as u32)),
        (k("attention.head_count"), GgufValue::U32(spec.num_heads as u32)),
        (k("attention.head_count_kv"), GgufValue::U32(spec.num_kv_heads as u32)),
        (k("rope.freq_base"), GgufValue::F32(spec.rope.theta as f32)),
        (k("attention.layer_norm_rms_epsilon"), GgufValue::F32(spec.rms_norm_eps as f32)),
        ("general.file_type".into(), GgufValue::U32(ftype)),
        (k("rope.dimension_count"), GgufValue::U32(spec.rope.rotary_dim as u32)),
    ];
    // The Llama-family converter writes head_dim when config.json states it, and the vocabulary
    // size; Phi-3's writes the window (0 without one) and the original context.
    let phi3 = spec.architecture == Architecture::Phi3;
    if !phi3 && spec.explicit_head_dim {
        kv.push((k("attention.key_length"), GgufValue::U32(spec.head_dim as u32)));
        kv.push((k("attention.value_length"), GgufValue::U32(spec.head_dim as u32)));
    }
    if a == "llama" {
        kv.push((k("vocab_size"), GgufValue::U32(spec.vocab_size as u32)));
    }
    if phi3 {
        let w = spec.sliding_window.map_or(0, |w| w.size);
        kv.push((k("attention.sliding_window"), GgufValue::U32(w as u32)));
        kv.push((
            k("rope.scaling.original_context_length"),
            GgufValue::U32(spec.original_context() as u32),
        ));
    } else if let Some(w) = spec.sliding_window {
        kv.push((k("attention.sliding_window"), GgufValue::U32(w.size as u32)));
    }
    match &spec.rope.scaling {
        RopeScaling::LongRope { .. } => {
            let attn = spec.longrope_attention_factor().expect("a LongRoPE spec");
            kv.push((k("rope.scaling.attn_factor"), GgufValue::F32(attn as f32)));
        }
        RopeScaling::Linear { factor } => {
            kv.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
            kv.push((k("rope.scaling.factor"), GgufValue::F32(*factor as f32)));
        }
        RopeScaling::None | RopeScaling::Llama3 { .. } => {}
        _ => {}
    }
    kv.push(("general.quantization_version".into(), GgufValue::U32(2)));
    kv
}

/// The regular expressions of every `Split` in a pre-tokenizer configuration, as written (JSON
/// escapes undone).
fn split_patterns(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(p)) = m.get("Regex") {
                out.push(p.clone());
            }
            m.values().for_each(|x| split_patterns(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| split_patterns(x, out)),
        _ => {}
    }
}

/// llama.cpp's name for a byte-level BPE pre-tokenizer (`tokenizer.ggml.pre`). llama.cpp's
/// converter identifies it by hashing the tokenization of a probe text; phiquant recognises the
/// same families by their `pre_tokenizer` configuration in tokenizer.json (the GGUF reader in
/// `phiquant_runtime::gguf` rebuilds each of these names).
fn pre_tokenizer_name(tok: &Value) -> &'static str {
    let pre = &tok["pre_tokenizer"];
    let text = pre.to_string();
    let digits_individual =
        text.contains("\"Digits\"") && text.contains("\"individual_digits\":true");
    if digits_individual && text.contains("ByteLevel") && !text.contains("\"Split\"") {
        // SmolLM and SmolLM2: individual digits, then GPT-2 byte-level.
        return "smollm";
    }
    let mut patterns = Vec::new();
    split_patterns(pre, &mut patterns);
    let has = |needle: &str| patterns.iter().any(|p| p.contains(needle));
    if has(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?") {
        return "qwen2";
    }
    if has(r"\p{N}{1,3}") {
        return "llama-bpe";
    }
    "default"
}

/// The tokenizer keys from `tokenizer.json` (and `tokenizer_config.json`) in `files`:
/// SentencePiece-style BPE with byte fallback becomes `tokenizer.ggml.model = "llama"`,
/// byte-level BPE `"gpt2"`.
pub fn tokenizer_keys(files: &AuxFiles, spec: &DecoderSpec) -> Result<Kv, Error> {
    let path = files.path_of("tokenizer.json");
    let tok = files.json("tokenizer.json")?.ok_or_else(|| phiquant_runtime::Error::Tokenizer {
        path: path.clone(),
        message: "no tokenizer.json: a GGUF needs the tokenizer".into(),
    })?;
    let config = files.json("tokenizer_config.json")?.unwrap_or(Value::Null);
    let model = &tok["model"];
    let bad = |what: &str| phiquant_runtime::Error::Tokenizer {
        path: path.clone(),
        message: what.into(),
    };
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(
            "only BPE tokenizers (SentencePiece-style or byte-level) can be written to GGUF yet",
        )
        .into());
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("model.vocab is not an object"))?;
    let mut by_id: BTreeMap<u64, (String, i32)> = BTreeMap::new();
    for (text, id) in vocab {
        by_id.insert(
            id.as_u64().ok_or_else(|| bad("a vocab id is not an integer"))?,
            (text.clone(), 1),
        );
    }
    let byte_level = tok["pre_tokenizer"].to_string().contains("ByteLevel");
    if let Some(added) = tok["added_tokens"].as_array() {
        for t in added {
            let id = t["id"].as_u64().ok_or_else(|| bad("an added token has no id"))?;
            let text = t["content"].as_str().unwrap_or_default().to_string();
            let special = t["special"].as_bool().unwrap_or(false);
            by_id.insert(id, (text, if special { 3 } else { 4 }));
        }
    }
    let n = (spec.vocab_size as u64).max(by_id.keys().next_back().map_or(0, |k| k + 1));
    let mut tokens = Vec::with_capacity(n as usize);
    let mut types = Vec::with_capacity(n as usize);
    for id in 0..n {
        let (text, mut ty) = by_id.get(&id).cloned().unwrap_or_else(|| (format!("[PAD{id}]"), 5));
        if !byte_level
            && ty == 1
            && text.len() == 6
            && text.starts_with("<0x")
            && text.ends_with('>')
        {
            ty = 6;
        }
        tokens.push(text);
        types.push(GgufValue::I32(ty));
    }
    let mut kv: Kv = Vec::new();
    let token_id = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
    if byte_level {
        kv.push(("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())));
        kv.push(("tokenizer.ggml.pre".into(), GgufValue::String(pre_tokenizer_name(&tok).into())));
        kv.push(("tokenizer.ggml.tokens".into(), GgufValue::strings(tokens.clone())));
        kv.push(("tokenizer.ggml.token_type".into(), GgufValue::Array(5, types)));
        let merges: Vec<String> = model["merges"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        Value::Array(p) => {
                            p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")
                        }
                        _ => String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        kv.push(("tokenizer.ggml.merges".into(), GgufValue::strings(merges)));
    } else {
        kv.push(("tokenizer.ggml.model".into(), GgufValue::String("llama".into())));
        kv.push(("tokenizer.ggml.pre".into(), GgufValue::String("default".into())));
        kv.push(("tokenizer.ggml.tokens".into(), GgufValue::strings(tokens.clone())));
        kv.push((
            "tokenizer.ggml.scores".into(),
            GgufValue::Array(6, vec![GgufValue::F32(-1000.0); tokens.len()]),
        ));
        kv.push(("tokenizer.ggml.token_type".into(), GgufValue::Array(5, types)));
    }
    let named = |key: &str| {
        config[key]
            .as_str()
            .map(str::to_string)
            .or_else(|| config[key]["content"].as_str().map(str::to_string))
    };
    let bos = spec.bos_token_id.or_else(|| named("bos_token").and_then(|t| token_id(&t)));
    let eos = spec
        .eos_token_ids
        .first()
        .copied()
        .or_else(|| named("eos_token").and_then(|t| token_id(&t)));
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.unknown_token_id", named("unk_token").and_then(|t| token_id(&t))),
        (
            "tokenizer.ggml.padding_token_id",
            spec.pad_token_id.or_else(|| named("pad_token").and_then(|t| token_id(&t))),
        ),
    ] {
        if let Some(id) = id {
            kv.push((key.into(), GgufValue::U32(id)));
        }
    }
    if let Some(b) = config["add_bos_token"].as_bool() {
        kv.push(("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(b)));
    }
    kv.push((
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(config["add_eos_token"].as_bool().unwrap_or(false)),
    ));
    if !byte_level {
        kv.push((
            "tokenizer.ggml.add_sep_token".into(),
            GgufValue::Bool(config["add_sep_token"].as_bool().unwrap_or(false)),
        ));
    }
    if let Some(t) = config["chat_template"].as_str() {
        kv.push(("tokenizer.chat_template".into(), GgufValue::String(t.into())));
    }
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_names() {
        let split = |pattern: &str| {
            serde_json::json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated"},
                {"type": "ByteLevel", "use_regex": false},
            ]}})
        };
        let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        assert_eq!(pre_tokenizer_name(&split(qwen2)), "qwen2");
        assert_eq!(
            pre_tokenizer_name(&split(&qwen2.replace(r"\p{N}|", r"\p{N}{1,3}|"))),
            "llama-bpe"
        );
        let smollm = serde_json::json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, {"type": "ByteLevel"}]}});
        assert_eq!(pre_tokenizer_name(&smollm), "smollm");
        assert_eq!(
            pre_tokenizer_name(&serde_json::json!({"pre_tokenizer": {"type": "ByteLevel"}})),
            "default"
        );
    }

    #[test]
    fn names_and_size_labels_as_gguf_py() {
        assert_eq!(general_name("stories260K"), "stories260K");
        assert_eq!(general_name("stories260K-phi3"), "stories260K Phi3");
        assert_eq!(general_name("smollm2-hf"), "Smollm2 Hf");
        assert_eq!(general_name("Phi-3-mini-4k-instruct"), "Phi 3 Mini 4k Instruct");
        assert_eq!(size_label(260_032), "260K");
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(3_821_079_552), "3.8B");
        assert_eq!(size_label(7_241_732_096), "7.2B");
    }
}
