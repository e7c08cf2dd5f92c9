//! A Hugging Face tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata: the inverse
//! of what llama.cpp's converter (`convert_hf_to_gguf.py` `_set_vocab_*`, gguf-py `vocab.py`)
//! and phiquant's GGUF writer store.
//!
//! - `tokenizer.ggml.model = "llama"` (SentencePiece-style BPE, as Llama 2 and Phi-3) becomes a
//!   BPE model with byte fallback and `▁` for spaces. GGUF keeps no merges for it, so they are
//!   derived from the vocabulary as transformers' `SentencePieceExtractor` derives them from a
//!   `tokenizer.model`: every split of a piece into two pieces is a merge, ranked by the piece's
//!   score (by its id when the scores are all equal, as the -1000 placeholders of converted
//!   `tokenizer.json` files are).
//! - `"gpt2"` (byte-level BPE) keeps its merges and gets the pre-tokenizer that
//!   `tokenizer.ggml.pre` names: `default`/`gpt-2` (GPT-2's regex), `smollm`/`starcoder`/
//!   `refact` (single digits, then GPT-2's regex), `qwen2`/`deepseek-r1-qwen` (Qwen2's regex and
//!   NFC), `llama-bpe`/`llama3`/`llama-v3` (Llama 3's regex, whole-word tokens first).
//!
//! Token types (`LLAMA_TOKEN_TYPE_*`): unknown (2) and control (3) tokens become special added
//! tokens, user-defined ones (4) non-special added tokens, unused ones (5, the `[PAD..]` fillers
//! up to the embedding's rows) are left out, bytes (6) stay in the vocabulary for byte fallback.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::{GgufFile, GgufValue, spec::Meta};
use crate::{AuxFiles, DecoderSpec, Error, config::MAX_VOCAB};

const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

/// The tokens llama.cpp ends generation at by their text, besides the declared EOS.
const END_OF_GENERATION: [&str; 7] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
];

/// GPT-2's split regex (`pre_tokenizers::byte_level`), used by ByteLevel with `use_regex`.
fn byte_level(use_regex: bool, trim_offsets: bool) -> Value {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    })
}

fn split(pattern: &str) -> Value {
    json!({
        "type": "Split",
        "pattern": { "Regex": pattern },
        "behavior": "Isolated",
        "invert": false,
    })
}

/// Qwen2's pre-tokenizer regex (its tokenizer.json; llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's (its tokenizer.json; llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The names of `tokenizer.ggml.pre` that phiquant rebuilds.
const PRE_NAMES: &str = "default, gpt-2, smollm, starcoder, refact, qwen2, deepseek-r1-qwen, \
                         llama-bpe, llama3 or llama-v3";

/// (normalizer, pre-tokenizer, ignore_merges) of a byte-level BPE tokenizer named `pre`.
fn byte_level_parts(pre: &str) -> Option<(Value, Value, bool)> {
    Some(match pre {
        "default" | "gpt-2" | "gpt2" => (Value::Null, byte_level(true, true), false),
        "smollm" | "starcoder" | "refact" => (
            Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    { "type": "Digits", "individual_digits": true },
                    byte_level(true, true),
                ],
            }),
            false,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({ "type": "NFC" }),
            json!({
                "type": "Sequence",
                "pretokenizers": [split(QWEN2_REGEX), byte_level(false, false)],
            }),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [split(LLAMA3_REGEX), byte_level(false, true)],
            }),
            true,
        ),
        _ => return None,
    })
}

/// The merges of a SentencePiece BPE vocabulary (transformers `SentencePieceExtractor.extract`):
/// for each normal piece, every split into two normal pieces, ordered by the piece's score
/// (higher first; `None` or all equal: by id) and then by the ids of the two halves.
fn sentencepiece_merges(
    tokens: &[String],
    types: &[i64],
    scores: Option<&[f32]>,
) -> Vec<[String; 2]> {
    let mut normal: HashMap<&str, usize> = HashMap::new();
    for (id, t) in tokens.iter().enumerate() {
        if types[id] == NORMAL {
            normal.entry(t.as_str()).or_insert(id);
        }
    }
    let scored = scores.filter(|s| s.windows(2).any(|w| w[0] != w[1]));
    let mut pieces: Vec<usize> =
        (0..tokens.len()).filter(|&id| normal.get(tokens[id].as_str()) == Some(&id)).collect();
    if let Some(s) = scored {
        // Stable: equal scores keep id order.
        pieces.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    }
    let mut merges = Vec::new();
    for id in pieces {
        let piece = tokens[id].as_str();
        let mut local: Vec<(usize, usize, &str, &str)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = piece.split_at(at);
                Some((*normal.get(l)?, *normal.get(r)?, l, r))
            })
            .collect();
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(_, _, l, r)| [l.to_string(), r.to_string()]));
    }
    merges
}

/// A GGUF merge `"left right"` as a pair (llama.cpp splits at the first space after the first
/// character, so that a left part may itself be a space).
fn merge_pair(m: &str) -> Option<[String; 2]> {
    let first = m.chars().next()?.len_utf8();
    let at = first + m[first..].find(' ')?;
    Some([m[..at].to_string(), m[at + 1..].to_string()])
}

/// A post-processor that adds `bos` and `eos` (text and id) around each sequence.
fn template(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Value {
    let special =
        |t: &str, type_id: u32| json!({ "SpecialToken": { "id": t, "type_id": type_id } });
    let seq = |id: &str, type_id: u32| json!({ "Sequence": { "id": id, "type_id": type_id } });
    let mut single = Vec::new();
    let mut pair = Vec::new();
    single.extend(bos.map(|b| special(b.0, 0)));
    single.push(seq("A", 0));
    single.extend(eos.map(|e| special(e.0, 0)));
    pair.extend(single.iter().cloned());
    pair.extend(bos.map(|b| special(b.0, 1)));
    pair.push(seq("B", 1));
    pair.extend(eos.map(|e| special(e.0, 1)));
    let mut specials = Map::new();
    for (t, id) in [bos, eos].into_iter().flatten() {
        specials.insert(t.to_string(), json!({ "id": t, "ids": [id], "tokens": [t] }));
    }
    json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    })
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    out.push(b'\n');
    out
}

impl AuxFiles {
    /// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` rebuilt from the
    /// `tokenizer.ggml.*` metadata of `file` (whose model is `spec`).
    pub fn from_gguf(file: &GgufFile, spec: &DecoderSpec) -> Result<AuxFiles, Error> {
        let m = Meta { file };
        let model_key = "tokenizer.ggml.model";
        let model = m.str(model_key)?.ok_or_else(|| m.missing(model_key))?;
        if model != "llama" && model != "gpt2" {
            return Err(m.invalid(
                model_key,
                &GgufValue::String(model.into()),
                "llama (SentencePiece-style BPE) or gpt2 (byte-level BPE)",
            ));
        }
        let tokens_key = "tokenizer.ggml.tokens";
        let tokens: Vec<String> = match m.get(tokens_key) {
            None => return Err(m.missing(tokens_key)),
            Some(v @ GgufValue::Array(_, items)) => {
                if items.is_empty() || items.len() as u64 > MAX_VOCAB {
                    return Err(m.invalid(
                        tokens_key,
                        v,
                        format!("an array of 1 to {MAX_VOCAB} strings"),
                    ));
                }
                items
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| m.invalid(tokens_key, v, "an array of strings"))?
            }
            Some(v) => return Err(m.invalid(tokens_key, v, "an array of strings")),
        };
        let n = tokens.len();
        let types_key = "tokenizer.ggml.token_type";
        let types: Vec<i64> = match m.get(types_key) {
            None => vec![NORMAL; n],
            Some(v @ GgufValue::Array(_, items)) => {
                let expected = format!("an array of {n} integers (one per token)");
                if items.len() != n {
                    return Err(m.invalid(types_key, v, expected));
                }
                items
                    .iter()
                    .map(|t| match t {
                        GgufValue::I32(x) => Some(i64::from(*x)),
                        other => other.as_u64().map(|x| x as i64),
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| m.invalid(types_key, v, expected))?
            }
            Some(v) => return Err(m.invalid(types_key, v, "an array of integers")),
        };
        let scores_key = "tokenizer.ggml.scores";
        let scores: Option<Vec<f32>> = match m.get(scores_key) {
            None => None,
            Some(v @ GgufValue::Array(_, items)) => {
                let expected = format!("an array of {n} floats (one per token)");
                if items.len() != n {
                    return Err(m.invalid(scores_key, v, expected));
                }
                Some(
                    items
                        .iter()
                        .map(|s| match s {
                            GgufValue::F32(x) => Some(*x),
                            _ => None,
                        })
                        .collect::<Option<_>>()
                        .ok_or_else(|| m.invalid(scores_key, v, expected))?,
                )
            }
            Some(v) => return Err(m.invalid(scores_key, v, "an array of floats")),
        };

        let token_of = |key: &str| -> Result<Option<(&str, u32)>, Error> {
            match m.token_id(key)? {
                None => Ok(None),
                Some(id) => match tokens.get(id as usize) {
                    Some(t) => Ok(Some((t.as_str(), id))),
                    None => Err(m.invalid(
                        key,
                        &GgufValue::U32(id),
                        format!("a token id below {n} (the vocabulary)"),
                    )),
                },
            }
        };
        let bos = token_of("tokenizer.ggml.bos_token_id")?;
        let eos = token_of("tokenizer.ggml.eos_token_id")?;
        let pad = token_of("tokenizer.ggml.padding_token_id")?;
        let unk = match token_of("tokenizer.ggml.unknown_token_id")? {
            Some((t, _)) => Some(t),
            None => types.iter().position(|&t| t == UNKNOWN).map(|i| tokens[i].as_str()),
        };
        // llama.cpp's defaults when the keys are absent: SentencePiece adds BOS, byte-level BPE
        // does not (but Llama 3 does).
        let pre = m.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let spm = model == "llama";
        let add_bos = m
            .bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(spm || matches!(pre, "llama-bpe" | "llama3" | "llama-v3"));
        let add_eos = m.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let space_prefix = m.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(spm);

        let mut vocab = Map::new();
        let mut ids: HashSet<&str> = HashSet::new();
        let mut added = Vec::new();
        for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            if ty == UNUSED || !ids.insert(t.as_str()) {
                continue;
            }
            vocab.insert(t.clone(), Value::from(id));
            if matches!(ty, UNKNOWN | CONTROL | USER_DEFINED) {
                added.push(json!({
                    "id": id,
                    "content": t,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": ty != USER_DEFINED,
                }));
            }
        }
        let (bos_t, eos_t) = (bos.filter(|_| add_bos), eos.filter(|_| add_eos));
        let tokenizer = if spm {
            let merges = sentencepiece_merges(&tokens, &types, scores.as_deref());
            let mut normalizers = Vec::new();
            if space_prefix {
                normalizers.push(json!({ "type": "Prepend", "prepend": "\u{2581}" }));
            }
            normalizers.push(json!({
                "type": "Replace", "pattern": { "String": " " }, "content": "\u{2581}",
            }));
            let mut decoders = vec![
                json!({ "type": "Replace", "pattern": { "String": "\u{2581}" }, "content": " " }),
                json!({ "type": "ByteFallback" }),
                json!({ "type": "Fuse" }),
            ];
            if space_prefix {
                decoders.push(json!({ "type": "Strip", "content": " ", "start": 1, "stop": 0 }));
            }
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added,
                "normalizer": { "type": "Sequence", "normalizers": normalizers },
                "pre_tokenizer": null,
                "post_processor": if bos_t.is_some() || eos_t.is_some() {
                    template(bos_t, eos_t)
                } else {
                    Value::Null
                },
                "decoder": { "type": "Sequence", "decoders": decoders },
                "model": {
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": unk,
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": true,
                    "byte_fallback": true,
                    "ignore_merges": false,
                    "vocab": vocab,
                    "merges": merges,
                },
            })
        } else {
            let (normalizer, pre_tokenizer, ignore_merges) =
                byte_level_parts(pre).ok_or_else(|| {
                    m.invalid(
                        "tokenizer.ggml.pre",
                        &GgufValue::String(pre.into()),
                        format!("one of the pre-tokenizers phiquant rebuilds: {PRE_NAMES}"),
                    )
                })?;
            let merges_key = "tokenizer.ggml.merges";
            let merges: Vec<[String; 2]> = match m.get(merges_key) {
                None => return Err(m.missing(merges_key)),
                Some(v @ GgufValue::Array(_, items)) => items
                    .iter()
                    .map(|x| x.as_str().and_then(merge_pair))
                    .collect::<Option<_>>()
                    .ok_or_else(|| m.invalid(merges_key, v, "an array of \"left right\" pairs"))?,
                Some(v) => return Err(m.invalid(merges_key, v, "an array of strings")),
            };
            let post = byte_level(true, false);
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": added,
                "normalizer": normalizer,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": if bos_t.is_some() || eos_t.is_some() {
                    json!({
                        "type": "Sequence",
                        "processors": [post, template(bos_t, eos_t)],
                    })
                } else {
                    post
                },
                "decoder": {
                    "type": "ByteLevel",
                    "add_prefix_space": true,
                    "trim_offsets": true,
                    "use_regex": true,
                },
                "model": {
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": null,
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": false,
                    "byte_fallback": false,
                    "ignore_merges": ignore_merges,
                    "vocab": vocab,
                    "merges": merges,
                },
            })
        };

        let mut config = json!({
            "add_bos_token": add_bos,
            "add_eos_token": add_eos,
            "bos_token": bos.map(|b| b.0),
            "eos_token": eos.map(|e| e.0),
            "unk_token": unk,
            "pad_token": pad.map(|p| p.0),
            "clean_up_tokenization_spaces": false,
            "model_max_length": spec.max_position_embeddings,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(t) = m.str("tokenizer.chat_template")? {
            config["chat_template"] = t.into();
        }
        // Generation stops where llama.cpp's does: at the end-of-sequence token, and at the
        // end-of-generation tokens it recognises by their text (`llama_vocab::load`, "find EOT
        // token"), which GGUF files do not list.
        let mut stop = spec.eos_token_ids.clone();
        for (id, t) in tokens.iter().enumerate() {
            if END_OF_GENERATION.contains(&t.as_str()) && !stop.contains(&(id as u32)) {
                stop.push(id as u32);
            }
        }
        let mut generation = Map::new();
        generation.insert("bos_token_id".into(), spec.bos_token_id.into());
        generation.insert(
            "eos_token_id".into(),
            match stop.as_slice() {
                [] => Value::Null,
                [one] => (*one).into(),
                many => many.into(),
            },
        );
        if let Some(p) = spec.pad_token_id {
            generation.insert("pad_token_id".into(), p.into());
        }

        let mut files = AuxFiles::new(file.path(), false);
        files.insert("tokenizer.json", pretty(&tokenizer));
        files.insert("tokenizer_config.json", pretty(&config));
        files.insert("generation_config.json", pretty(&Value::Object(generation)));
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_of_a_sentencepiece_vocabulary() {
        let tokens: Vec<String> =
            ["<unk>", "a", "b", "ab", "c", "abc", "bc"].iter().map(|s| s.to_string()).collect();
        let types = [UNKNOWN, 1, 1, 1, 1, 1, 1];
        let m = sentencepiece_merges(&tokens, &types, None);
        let pairs: Vec<String> = m.iter().map(|[l, r]| format!("{l} {r}")).collect();
        // "abc" splits as ab+c (ids 3, 4) and a+bc (ids 1, 6): ordered by the left id.
        assert_eq!(pairs, ["a b", "a bc", "ab c", "b c"]);
        // Scores override ids: "bc" first.
        let scores = [0.0, 0.0, 0.0, -3.0, 0.0, -5.0, -1.0];
        let m = sentencepiece_merges(&tokens, &types, Some(&scores));
        assert_eq!(m[0], ["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn merge_pairs_split_after_the_first_character() {
        assert_eq!(merge_pair("Ġ t").unwrap(), ["Ġ".to_string(), "t".to_string()]);
        assert_eq!(merge_pair("  x").unwrap(), [" ".to_string(), "x".to_string()]);
        assert_eq!(merge_pair("ab"), None);
    }
}
