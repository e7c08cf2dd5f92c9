//! What kind of tokenizer a checkpoint ships, read from `tokenizer.json` and
//! `tokenizer_config.json` without building it.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::{Error, read_json_file};

const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// A summary of a checkpoint's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenizerSummary {
    /// `bpe-sentencepiece` (BPE with byte fallback and `▁` spaces, as Llama and Phi-3),
    /// `bpe-byte-level` (GPT-2 style, as Qwen2 and Phi-4-mini), or the model type in lower case
    /// (`bpe`, `unigram`, `wordpiece`, `wordlevel`).
    pub kind: String,
    /// Entries of the model vocabulary plus added tokens not in it.
    pub vocab_size: usize,
    /// The added tokens marked special.
    pub special_tokens: Vec<String>,
    /// Whether encoding prepends BOS (`add_bos_token` in tokenizer_config.json).
    pub add_bos_token: Option<bool>,
    /// Whether a chat template is present.
    pub chat_template: bool,
}

impl TokenizerSummary {
    /// Reads `tokenizer.json` (and `tokenizer_config.json` when present) from `dir`; `Ok(None)`
    /// when the folder has no `tokenizer.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<TokenizerSummary>, Error> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let tok = read_json_file(&path, MAX_TOKENIZER_BYTES)?;
        let model = tok
            .get("model")
            .filter(|m| m.is_object())
            .ok_or(Error::MissingField { path: path.clone(), field: "model" })?;
        let model_type = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
        let byte_level = |v: Option<&Value>| contains_type(v, "ByteLevel");
        let kind = match model_type {
            "BPE" if byte_level(tok.get("pre_tokenizer")) || byte_level(tok.get("decoder")) => {
                "bpe-byte-level".to_string()
            }
            "BPE" if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) => {
                "bpe-sentencepiece".to_string()
            }
            other => other.to_ascii_lowercase(),
        };
        let vocab = model.get("vocab");
        let mut vocab_size = match vocab {
            Some(Value::Object(m)) => m.len(),
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        };
        let mut special_tokens = Vec::new();
        if let Some(Value::Array(added)) = tok.get("added_tokens") {
            for t in added {
                let content = t.get("content").and_then(Value::as_str).unwrap_or_default();
                let in_vocab = match vocab {
                    Some(Value::Object(m)) => m.contains_key(content),
                    _ => false,
                };
                if !in_vocab {
                    vocab_size += 1;
                }
                if t.get("special").and_then(Value::as_bool) == Some(true) {
                    special_tokens.push(content.to_string());
                }
            }
        }

        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json_file(&config_path, MAX_TOKENIZER_BYTES)?)
        } else {
            None
        };
        let add_bos_token =
            config.as_ref().and_then(|c| c.get("add_bos_token")).and_then(Value::as_bool);
        let chat_template =
            config.as_ref().and_then(|c| c.get("chat_template")).is_some_and(|t| !t.is_null())
                || dir.join("chat_template.jinja").is_file();
        Ok(Some(TokenizerSummary {
            kind,
            vocab_size,
            special_tokens,
            add_bos_token,
            chat_template,
        }))
    }
}

fn contains_type(v: Option<&Value>, wanted: &str) -> bool {
    match v {
        Some(Value::Object(m)) => {
            m.get("type").and_then(Value::as_str) == Some(wanted)
                || ["pretokenizers", "decoders"].iter().any(|k| {
                    m.get(*k)
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|x| contains_type(Some(x), wanted)))
                })
        }
        _ => false,
    }
}

/// A checkpoint's tokenizer (`tokenizer.json` through the `tokenizers` crate), with BOS handled as
/// the checkpoint's `tokenizer_config.json` says (`add_bos_token`), falling back to what the
/// tokenizer's own post-processor does.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: std::path::PathBuf,
    bos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`; `bos_token_id` is the model config's, used when the tokenizer
    /// config names no BOS token.
    pub fn from_dir(dir: &Path, bos_token_id: Option<u32>) -> Result<Tokenizer, Error> {
        let path = dir.join("tokenizer.json");
        let err = |message: String| Error::Tokenizer { path: path.clone(), message };
        if !path.is_file() {
            return Err(err("no tokenizer.json in the model folder".into()));
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json_file(&config_path, MAX_TOKENIZER_BYTES)?)
        } else {
            None
        };
        let named_bos = config
            .as_ref()
            .and_then(|c| c.get("bos_token"))
            .and_then(|b| b.as_str().or_else(|| b.get("content").and_then(Value::as_str)))
            .and_then(|name| inner.token_to_id(name));
        let bos = named_bos.or(bos_token_id);
        let add_bos = match config
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(Value::as_bool)
        {
            Some(v) => v,
            None => {
                // What the post-processor does with special tokens on.
                let with = inner.encode("a", true).map_err(|e| err(e.to_string()))?;
                bos.is_some()
                    && with.get_ids().first() == bos.as_ref()
                    && inner.encode("a", false).map_err(|e| err(e.to_string()))?.get_ids().first()
                        != bos.as_ref()
            }
        };
        Ok(Tokenizer { inner, path, bos, add_bos: add_bos && bos.is_some() })
    }

    /// The BOS token id, if the tokenizer has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The id of a token given by its text (`</s>`, `<|im_end|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether encoding a prompt prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Token ids of `text` without any special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, Error> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a prompt: BOS (when the checkpoint adds it) and the text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode_plain(text)?);
        Ok(ids)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }
}
