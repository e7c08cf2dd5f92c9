//! The llama.cpp backend proper, through the `llama-cpp-2` safe bindings.
//!
//! Two things in those bindings shape this file. `LlamaBackend::init` may run only once per
//! process (a second call is an error), so the backend lives in a `OnceLock`. And creating two
//! contexts from one model at the same time is unsound (llama.cpp may write the model's
//! `n_ctx_train` while it builds a context: the FIXME on `LlamaModel::new_context` in
//! llama-cpp-2 0.1.160, pointing at <https://github.com/ggml-org/llama.cpp/blob/f45576aa86c07d60d346b469651a098a15cc4f81/src/llama-context.cpp#L3751>),
//! so context creation takes a lock; running several contexts at once is fine.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use llama_cpp_2::LlamaModelLoadError;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

use super::{BACKEND, log};
use crate::{Error, argmax};

/// Tokens per `llama_decode` call, and so the most logits rows one call produces. 512 is
/// llama.cpp's default `n_batch`/`n_ubatch`: larger batches buy little on a CPU and cost a
/// bigger compute buffer.
const MAX_BATCH: usize = 512;

/// The most bytes of text [`Model::tokenize`] accepts: llama.cpp takes lengths as `i32`, and
/// llama-cpp-2 panics past that.
const MAX_TEXT_BYTES: usize = 1 << 30;

/// The most ids [`Model::detokenize`] accepts, so that the text stays well under llama.cpp's
/// `i32` limit on lengths.
const MAX_DETOKENIZE: usize = 1 << 22;

/// The process's llama.cpp backend, or why it could not start.
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND_HANDLE: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND_HANDLE
        .get_or_init(|| {
            log::install();
            LlamaBackend::init().map_err(|e| format!("could not start llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A loaded model and what phiquant needs to know about it.
#[derive(Debug)]
pub(crate) struct Model {
    model: LlamaModel,
    backend: &'static LlamaBackend,
    path: PathBuf,
    threads: i32,
    vocab_size: usize,
    /// The most positions one call may use: the model's training context.
    max_positions: usize,
    /// Held while a context is created (see the module docs).
    context_lock: Mutex<()>,
}

impl Model {
    pub(crate) fn load(path: &Path, threads: usize) -> Result<Model, Error> {
        let fail = |message: String| Error::Backend {
            backend: BACKEND,
            path: path.to_path_buf(),
            message,
        };
        // llama-cpp-2 asserts (in debug builds) that the file exists: check first, with a proper
        // I/O error.
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            op: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(fail("not a file".into()));
        }
        let backend = backend().map_err(fail)?;
        let threads = if threads == 0 { rayon::current_num_threads() } else { threads };
        let threads = i32::try_from(threads).unwrap_or(i32::MAX).max(1);
        let params = LlamaModelParams::default().with_n_gpu_layers(0);
        let (model, logged) = log::capture(|| LlamaModel::load_from_file(backend, path, &params));
        let model = model.map_err(|e| {
            let message = match e {
                // llama.cpp said why in its log.
                LlamaModelLoadError::NullResult => "cannot load the model".to_string(),
                e => format!("cannot load the model ({e})"),
            };
            fail(with_log(message, &logged))
        })?;
        let vocab_size = usize::try_from(model.n_vocab()).unwrap_or(0);
        if vocab_size == 0 {
            return Err(fail("the model has an empty vocabulary".into()));
        }
        // Read from the metadata rather than `LlamaModel::n_ctx_train`, which panics on a value
        // that does not fit an i32.
        let context_key = match model.meta_val_str("general.architecture") {
            Ok(arch) => format!("{arch}.context_length"),
            Err(e) => return Err(fail(format!("cannot read `general.architecture`: {e}"))),
        };
        let max_positions = model
            .meta_val_str(&context_key)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| fail(format!("missing or invalid `{context_key}`")))?;
        // Positions are i32 in llama.cpp.
        let max_positions = usize::try_from(max_positions.min(i32::MAX as u64)).unwrap_or(0);
        Ok(Model {
            model,
            backend,
            path: path.to_path_buf(),
            threads,
            vocab_size,
            max_positions,
            context_lock: Mutex::new(()),
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub(crate) fn bos(&self) -> Option<u32> {
        u32::try_from(self.model.vocab().bos().0).ok().filter(|&id| (id as usize) < self.vocab_size)
    }

    pub(crate) fn add_bos(&self) -> bool {
        self.model.vocab().should_add_bos()
    }

    pub(crate) fn tokenize(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, Error> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(self.fail(format!(
                "cannot tokenize {} bytes of text (the limit is {MAX_TEXT_BYTES})",
                text.len()
            )));
        }
        // `add_special` is off so that llama.cpp adds neither BOS nor EOS by the model's
        // settings; BOS is added below as asked. `parse_special` turns written special tokens
        // into their ids, as Hugging Face tokenizers does.
        let tokens = self.model.vocab().tokenize(text.as_bytes(), false, true);
        let mut ids = Vec::with_capacity(tokens.len() + 1);
        if add_bos {
            ids.extend(self.bos());
        }
        // llama.cpp's ids are never negative.
        ids.extend(tokens.iter().map(|t| t.0.max(0) as u32));
        Ok(ids)
    }

    pub(crate) fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        if ids.len() > MAX_DETOKENIZE {
            return Err(self.fail(format!(
                "cannot detokenize {} ids at once (the limit is {MAX_DETOKENIZE})",
                ids.len()
            )));
        }
        let tokens = self.tokens(ids)?;
        // Special tokens are not rendered (`unparse_special` off), as
        // `Tokenizer::decode(ids, skip_special_tokens=true)`.
        let bytes = self.model.vocab().detokenize(&tokens, false, false);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(crate) fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let tokens = self.tokens(tokens)?;
        self.check_positions(tokens.len())?;
        let len = tokens.len().saturating_mul(self.vocab_size);
        let mut out = Vec::new();
        out.try_reserve_exact(len).map_err(|_| {
            self.fail(format!(
                "cannot allocate {} bytes for the logits of {} tokens",
                len.saturating_mul(4),
                tokens.len()
            ))
        })?;
        let batch_size = tokens.len().min(MAX_BATCH);
        let mut ctx = self.context(tokens.len(), batch_size)?;
        let mut batch = LlamaBatch::new(batch_size, 1);
        for (chunk_index, chunk) in tokens.chunks(batch_size).enumerate() {
            let start = chunk_index * batch_size;
            batch.clear();
            for (i, &token) in chunk.iter().enumerate() {
                self.add(&mut batch, token, start + i, true)?;
            }
            self.decode(&mut ctx, &mut batch, start)?;
            for i in 0..chunk.len() {
                out.extend_from_slice(self.row(&ctx, i)?);
            }
        }
        Ok(out)
    }

    pub(crate) fn generate_greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        if prompt.is_empty() {
            return Err(Error::empty_prompt());
        }
        let prompt = self.tokens(prompt)?;
        let positions = prompt.len().saturating_add(max_tokens);
        self.check_positions(positions)?;
        if max_tokens == 0 {
            return Ok(Vec::new());
        }
        let batch_size = prompt.len().min(MAX_BATCH);
        let mut ctx = self.context(positions, batch_size)?;
        let mut batch = LlamaBatch::new(batch_size, 1);
        // The prompt, in batches, asking for the logits of its last token only.
        for (chunk_index, chunk) in prompt.chunks(batch_size).enumerate() {
            let start = chunk_index * batch_size;
            batch.clear();
            for (i, &token) in chunk.iter().enumerate() {
                self.add(&mut batch, token, start + i, start + i + 1 == prompt.len())?;
            }
            self.decode(&mut ctx, &mut batch, start)?;
        }
        let mut next = argmax(self.row(&ctx, batch.n_tokens().saturating_sub(1) as usize)?);
        let mut out = Vec::with_capacity(max_tokens);
        loop {
            out.push(next);
            if stop.contains(&next) || out.len() == max_tokens {
                return Ok(out);
            }
            let pos = prompt.len() + out.len() - 1;
            batch.clear();
            self.add(&mut batch, LlamaToken(next as i32), pos, true)?;
            self.decode(&mut ctx, &mut batch, pos)?;
            next = argmax(self.row(&ctx, 0)?);
        }
    }

    /// A backend error about this model.
    fn fail(&self, message: String) -> Error {
        Error::Backend { backend: BACKEND, path: self.path.clone(), message }
    }

    /// `ids` as llama.cpp tokens, each checked against the vocabulary (llama.cpp aborts the
    /// process on some out-of-range ids instead of returning an error).
    fn tokens(&self, ids: &[u32]) -> Result<Vec<LlamaToken>, Error> {
        ids.iter()
            .map(|&id| {
                if (id as usize) < self.vocab_size {
                    // vocab_size came from an i32, so the id fits.
                    Ok(LlamaToken(id as i32))
                } else {
                    Err(Error::TokenOutOfRange { token: id, vocab_size: self.vocab_size })
                }
            })
            .collect()
    }

    /// Refuses to run past the model's training context.
    fn check_positions(&self, needed: usize) -> Result<(), Error> {
        if needed > self.max_positions {
            return Err(Error::ContextFull { needed, capacity: self.max_positions });
        }
        Ok(())
    }

    /// A fresh context for `positions` positions, fed `batch_size` tokens at a time.
    fn context(&self, positions: usize, batch_size: usize) -> Result<LlamaContext<'_>, Error> {
        // Both were checked against `max_positions`, which fits an i32.
        let n_ctx = NonZeroU32::new(u32::try_from(positions).unwrap_or(u32::MAX));
        let n_batch = u32::try_from(batch_size).unwrap_or(u32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(n_ctx)
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(1)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads)
            .with_embeddings(false)
            .with_no_perf(true)
            // Keys and values in f32 and no flash attention: verification compares the
            // artefact's weights, so the cache must not add f16 rounding of its own.
            .with_type_k(llama_cpp_2::context::params::KvCacheType::F32)
            .with_type_v(llama_cpp_2::context::params::KvCacheType::F32)
            .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED);
        let _guard = self.context_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (ctx, logged) = log::capture(|| self.model.new_context(self.backend, params));
        ctx.map_err(|e| {
            self.fail(with_log(
                format!("cannot create a context of {positions} positions ({e})"),
                &logged,
            ))
        })
    }

    /// Appends `token` at position `pos` of sequence 0.
    fn add(
        &self,
        batch: &mut LlamaBatch,
        token: LlamaToken,
        pos: usize,
        logits: bool,
    ) -> Result<(), Error> {
        // Positions were checked against `max_positions`, which fits an i32.
        let pos = i32::try_from(pos).unwrap_or(i32::MAX);
        batch.add(token, pos, &[0], logits).map_err(|e| {
            self.fail(format!("cannot add token {} at position {pos} to a batch: {e}", token.0))
        })
    }

    /// Runs the model over `batch`, whose first token sits at position `start`.
    fn decode(
        &self,
        ctx: &mut LlamaContext,
        batch: &mut LlamaBatch,
        start: usize,
    ) -> Result<(), Error> {
        let (result, logged) = log::capture(|| ctx.decode(batch));
        result.map_err(|e| {
            self.fail(with_log(
                format!("decoding {} tokens from position {start} failed ({e})", batch.n_tokens()),
                &logged,
            ))
        })
    }

    /// The logits of the `i`-th token of the last batch decoded (which asked for them).
    fn row<'a>(&self, ctx: &'a LlamaContext, i: usize) -> Result<&'a [f32], Error> {
        // `get_logits_ith` panics when the row was not asked for; every caller asked.
        let row = ctx.get_logits_ith(i32::try_from(i).unwrap_or(i32::MAX));
        if row.len() != self.vocab_size {
            return Err(self.fail(format!(
                "llama.cpp returned {} logits per token, expected {}",
                row.len(),
                self.vocab_size
            )));
        }
        Ok(row)
    }
}

/// `message`, then what llama.cpp logged about it (if anything), or a pointer to the log.
fn with_log(message: String, logged: &str) -> String {
    if logged.is_empty() {
        format!("{message}; set {}=1 to see llama.cpp's log", log::LOG_ENV)
    } else {
        format!("{message}: {logged}")
    }
}
