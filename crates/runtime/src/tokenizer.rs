//! A checkpoint's tokenizer: the small files that carry it ([`AuxFiles`]), what kind it is
//! ([`TokenizerSummary`], read without building it), and the tokenizer itself ([`Tokenizer`]).

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

use crate::Error;

const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// The small files that travel with a model's weights, besides `config.json`: tokenizer,
/// tokenizer config, special tokens, chat template and generation config.
pub const AUX_FILE_NAMES: [&str; 7] = [
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
];

/// A model's [`AUX_FILE_NAMES`] files in memory: read from a checkpoint folder as they are, or
/// rebuilt from a GGUF file's metadata ([`AuxFiles::from_gguf`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxFiles {
    origin: PathBuf,
    from_folder: bool,
    files: BTreeMap<String, Vec<u8>>,
}

impl AuxFiles {
    /// No files yet; `origin` is the folder or file they come from, named in errors.
    pub fn new(origin: &Path, from_folder: bool) -> AuxFiles {
        AuxFiles { origin: origin.to_path_buf(), from_folder, files: BTreeMap::new() }
    }

    /// Reads whichever of [`AUX_FILE_NAMES`] `dir` holds.
    pub fn from_dir(dir: &Path) -> Result<AuxFiles, Error> {
        let mut out = AuxFiles::new(dir, true);
        for name in AUX_FILE_NAMES {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let io = |op| {
                let path = path.clone();
                move |source| Error::Io { op, path, source }
            };
            let file = std::fs::File::open(&path).map_err(io("opening"))?;
            let len = file.metadata().map_err(io("reading metadata of"))?.len();
            if len > MAX_TOKENIZER_BYTES {
                return Err(Error::InvalidField {
                    path,
                    field: "(file size)".into(),
                    value: format!("{len} bytes"),
                    expected: format!("at most {MAX_TOKENIZER_BYTES} bytes"),
                });
            }
            let mut bytes = Vec::with_capacity(len as usize);
            file.take(MAX_TOKENIZER_BYTES).read_to_end(&mut bytes).map_err(io("reading"))?;
            // A truncated or corrupted JSON file is refused here, naming it, rather than
            // copied into an artefact as it is (a Hugging Face or ONNX folder) or skipped by a
            // target that does not read it (issue 9, the fault suite).
            if name.ends_with(".json") {
                serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                    .map_err(|source| Error::Json { path: path.clone(), source })?;
            }
            out.files.insert(name.to_string(), bytes);
        }
        Ok(out)
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.insert(name.to_string(), bytes);
    }

    /// The folder or file the files come from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Where `name` comes from, for messages: its path in the folder, or the GGUF file it was
    /// rebuilt from.
    pub fn path_of(&self, name: &str) -> PathBuf {
        if self.from_folder { self.origin.join(name) } else { self.origin.clone() }
    }

    /// A file's bytes, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// A JSON file parsed, if present.
    pub fn json(&self, name: &str) -> Result<Option<Value>, Error> {
        self.get(name)
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|source| Error::Json { path: self.path_of(name), source })
            })
            .transpose()
    }

    /// Every file, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))
    }
}

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
        TokenizerSummary::from_files(&AuxFiles::from_dir(dir)?)
    }

    /// As [`TokenizerSummary::from_dir`], over files in memory (a folder's, or those rebuilt
    /// from a GGUF).
    pub fn from_files(files: &AuxFiles) -> Result<Option<TokenizerSummary>, Error> {
        let path = files.path_of("tokenizer.json");
        let Some(tok) = files.json("tokenizer.json")? else { return Ok(None) };
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

        let config = files.json("tokenizer_config.json")?;
        let add_bos_token =
            config.as_ref().and_then(|c| c.get("add_bos_token")).and_then(Value::as_bool);
        let chat_template =
            config.as_ref().and_then(|c| c.get("chat_template")).is_some_and(|t| !t.is_null())
                || files.get("chat_template.jinja").is_some();
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
    path: PathBuf,
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
        Tokenizer::from_files(&AuxFiles::from_dir(dir)?, bos_token_id)
    }

    /// Builds the tokenizer from `tokenizer.json` (and `tokenizer_config.json`) in `files`.
    pub fn from_files(files: &AuxFiles, bos_token_id: Option<u32>) -> Result<Tokenizer, Error> {
        let path = files.path_of("tokenizer.json");
        let err = |message: String| Error::Tokenizer { path: path.clone(), message };
        let bytes = files
            .get("tokenizer.json")
            .ok_or_else(|| err("no tokenizer.json in the model folder".into()))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
        let config = files.json("tokenizer_config.json")?;
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
