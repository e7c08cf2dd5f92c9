//! The llama.cpp backend: runs a GGUF file on the CPU through the `llama-cpp-2` bindings, so that
//! phiquant can check its own GGUF output against the program that GGUF files are made for.
//!
//! The backend sits behind the `llama-cpp` feature (on by default in the `phiquant` binary).
//! Without it, [`LlamaCppModel::load`] returns an [`Error::Backend`] that says so, and everything
//! else still compiles: the model type is then uninhabited, so no other method can be reached.
//!
//! llama.cpp logs a great deal to stderr; phiquant silences it unless `PHIQUANT_LLAMA_LOG` is set
//! (to anything but `0`). Its error lines are kept either way and end up in the [`Error`] a
//! failed call returns.

use std::path::Path;

use crate::Error;

#[cfg(feature = "llama-cpp")]
mod enabled;
#[cfg(feature = "llama-cpp")]
mod log;
#[cfg(feature = "llama-cpp")]
use self::enabled as imp;

#[cfg(not(feature = "llama-cpp"))]
mod disabled;
#[cfg(not(feature = "llama-cpp"))]
use self::disabled as imp;

/// The name the backend goes by in [`Error::Backend`].
pub(crate) const BACKEND: &str = "llama.cpp";

/// A GGUF model loaded into llama.cpp, run on the CPU.
///
/// Every call builds its own llama.cpp context (KV cache and all), so calls are independent of one
/// another, and the model is `Send` and `Sync`: several threads may run it at once.
#[derive(Debug)]
pub struct LlamaCppModel {
    inner: imp::Model,
}

impl LlamaCppModel {
    /// Loads the GGUF file at `path`, to run with `threads` CPU threads (0: as many as rayon's
    /// pool has).
    ///
    /// A file llama.cpp cannot read (truncated, corrupt, an unknown architecture) gives an
    /// [`Error::Backend`] that carries llama.cpp's own explanation.
    pub fn load(path: &Path, threads: usize) -> Result<LlamaCppModel, Error> {
        imp::Model::load(path, threads).map(|inner| LlamaCppModel { inner })
    }

    /// The number of rows of the output embedding: the length of each row of logits.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// The BOS token id, if the GGUF names one.
    pub fn bos(&self) -> Option<u32> {
        self.inner.bos()
    }

    /// Whether the GGUF's metadata (`tokenizer.ggml.add_bos_token`) asks for BOS at the start of
    /// a prompt.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos()
    }

    /// Token ids of `text` by llama.cpp's tokenizer, with BOS first when `add_bos` is set and the
    /// model has one. Special tokens written in the text (`<|im_start|>`) become their ids, as
    /// Hugging Face tokenizers does.
    pub fn tokenize(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, Error> {
        self.inner.tokenize(text, add_bos)
    }

    /// Text of `ids`, special tokens skipped (as [`crate::Tokenizer::decode`]); bytes that are not
    /// UTF-8 (half a character at the end) become U+FFFD.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner.detokenize(ids)
    }

    /// The logits at every position of `tokens` (positions `0..n`, in a fresh context): a
    /// row-major `[tokens.len(), vocab_size()]` matrix.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        self.inner.logits(tokens)
    }

    /// Greedy decoding with a KV cache: up to `max_tokens` ids after `prompt`, stopping after any
    /// id in `stop` (which is included), as [`crate::generate()`] with greedy sampling.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        self.inner.generate_greedy(prompt, max_tokens, stop)
    }
}
