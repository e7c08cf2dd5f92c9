//! `genai_config.json`, as onnxruntime-genai's builder writes it (`make_genai_config` and
//! `resolve_special_token_ids` in `builders/base.py`): the decoder's I/O names and shapes, special
//! token ids, and search settings from `generation_config.json`.

use phiquant_runtime::{AuxFiles, DecoderSpec, Tokenizer};
use serde_json::{Value, json};

use super::{Ep, OnnxScheme};
use crate::Error;

fn ids(v: &Value) -> Option<Vec<u64>> {
    match v {
        Value::Number(n) => n.as_u64().map(|i| vec![i]),
        Value::Array(a) => a.iter().map(Value::as_u64).collect(),
        _ => None,
    }
}

/// The configuration for `spec` laid out for `scheme`, with the special tokens and search
/// settings of the model's `generation_config.json` and tokenizer files (`aux`).
pub fn genai_config(
    spec: &DecoderSpec,
    aux: &AuxFiles,
    scheme: &OnnxScheme,
) -> Result<Value, Error> {
    // config.json's special tokens, as the spec read them.
    let mut config = serde_json::Map::new();
    config.insert("bos_token_id".into(), json!(spec.bos_token_id));
    config.insert(
        "eos_token_id".into(),
        match spec.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        },
    );
    config.insert("pad_token_id".into(), json!(spec.pad_token_id));
    let generation = aux.json("generation_config.json")?.unwrap_or(Value::Null);
    // generation_config.json overrides config.json where it says something other than the
    // transformers default.
    let pick = |key: &str, default: Value| -> Option<Value> {
        match generation.get(key) {
            Some(v) if !v.is_null() && *v != default => Some(v.clone()),
            _ => config.get(key).filter(|v| !v.is_null()).cloned(),
        }
    };
    let tokenizer = Tokenizer::from_files(aux, spec.bos_token_id).ok();
    let tokenizer_config = aux.json("tokenizer_config.json")?.unwrap_or(Value::Null);
    let named = |key: &str| -> Option<u64> {
        let t = tokenizer_config.get(key)?;
        let text = t.as_str().or_else(|| t.get("content").and_then(Value::as_str))?;
        tokenizer.as_ref()?.token_id(text).map(u64::from)
    };

    let bos = pick("bos_token_id", Value::Null)
        .and_then(|v| v.as_u64())
        .or_else(|| named("bos_token"))
        .unwrap_or(1);
    let eos = pick("eos_token_id", Value::Null)
        .as_ref()
        .and_then(ids)
        .or_else(|| named("eos_token").map(|i| vec![i]))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Target {
            target: aux.origin().display().to_string(),
            reason: "no eos_token_id in config.json, generation_config.json or the tokenizer; \
                     onnxruntime-genai needs one"
                .into(),
        })?;
    // A chat model ends its turn with the tokenizer's eos_token, which config.json often omits.
    let eos = match named("eos_token") {
        Some(turn_end) if !eos.contains(&turn_end) => {
            std::iter::once(turn_end).chain(eos).collect::<Vec<_>>()
        }
        _ => eos,
    };
    let pad = pick("pad_token_id", Value::Null)
        .and_then(|v| v.as_u64())
        .or_else(|| named("pad_token"))
        .unwrap_or(eos[0]);
    let eos_value = if eos.len() == 1 { json!(eos[0]) } else { json!(eos) };

    let search = |key: &str, default: Value| pick(key, default.clone()).unwrap_or(default);

    let mut inputs = serde_json::Map::new();
    inputs.insert("input_ids".into(), json!("input_ids"));
    inputs.insert("attention_mask".into(), json!("attention_mask"));
    if super::decoder::rotary_outside(spec, scheme) {
        inputs.insert("position_ids".into(), json!("position_ids"));
    }
    inputs.insert("past_key_names".into(), json!("past_key_values.%d.key"));
    inputs.insert("past_value_names".into(), json!("past_key_values.%d.value"));
    let provider_options = match scheme.ep {
        Ep::Cpu => json!([]),
        Ep::Cuda => json!([{ "cuda": { "enable_cuda_graph": "0" } }]),
        Ep::Dml => json!([{ "dml": { "enable_graph_capture": "1" } }]),
    };
    let mut decoder = json!({
        "session_options": { "log_id": "onnxruntime-genai", "provider_options": provider_options },
        "filename": super::MODEL_FILE,
        "head_size": spec.head_dim,
        "hidden_size": spec.hidden_size,
        "inputs": inputs,
        "outputs": {
            "logits": "logits",
            "present_key_names": "present.%d.key",
            "present_value_names": "present.%d.value",
        },
        "num_attention_heads": spec.num_heads,
        "num_hidden_layers": spec.num_layers,
        "num_key_value_heads": spec.num_kv_heads,
    });
    if let Some(sw) = spec.sliding_window {
        decoder["sliding_window"] = json!({
            "window_size": sw.size,
            "slide_key_value_cache": false,
            "slide_inputs": false,
            "layers": [],
            "cache_slack": 0,
        });
    }
    let ctx = spec.max_position_embeddings;
    Ok(json!({
        "model": {
            "bos_token_id": bos,
            "context_length": ctx,
            "decoder": decoder,
            "eos_token_id": eos_value,
            "pad_token_id": pad,
            "type": spec.architecture.model_type(),
            "vocab_size": spec.vocab_size,
        },
        "search": {
            "diversity_penalty": search("diversity_penalty", json!(0.0)),
            "do_sample": search("do_sample", json!(false)),
            "early_stopping": true,
            "length_penalty": search("length_penalty", json!(1.0)),
            "max_length": ctx,
            "min_length": 0,
            "no_repeat_ngram_size": search("no_repeat_ngram_size", json!(0)),
            "num_beams": search("num_beams", json!(1)),
            "num_return_sequences": search("num_return_sequences", json!(1)),
            "past_present_share_buffer": true,
            "repetition_penalty": search("repetition_penalty", json!(1.0)),
            "temperature": search("temperature", json!(1.0)),
            "top_k": search("top_k", json!(50)),
            "top_p": search("top_p", json!(1.0)),
        },
    }))
}
