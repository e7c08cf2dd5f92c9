//! The models a verification compares, behind one interface: the artefact in its runtime (ONNX
//! Runtime, llama.cpp, or the native engine for a Hugging Face folder) and the baseline in the
//! native engine at full precision.

use phiquant_runtime::{Engine, LlamaCppModel, Logits, OrtModel, Sampling, Session, generate};

use crate::Error;

/// A language model that verification can run: the logits of every position of a sequence, and
/// greedy continuations.
pub trait Runner {
    /// The runtime that runs it, for reports: `onnxruntime`, `llama.cpp` or `native`.
    fn backend(&self) -> &'static str;

    /// The length of each row of logits.
    fn vocab_size(&self) -> usize;

    /// The most positions one sequence may use, where the model states it.
    fn context_length(&self) -> Option<usize>;

    /// Replaces `out` with the logits of every position of `tokens`, evaluated from an empty
    /// context: row-major `[tokens.len(), vocab_size()]`.
    fn logits(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<(), Error>;

    /// Greedy decoding: up to `max_tokens` ids after `prompt`, stopping after any id in `stop`
    /// (which is included).
    fn greedy(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error>;
}

/// The native engine as a [`Runner`], keeping one session (and its KV cache buffers) between
/// chunks.
#[derive(Debug)]
pub struct NativeRunner<'e> {
    engine: &'e Engine,
    session: Option<Session<'e>>,
}

impl<'e> NativeRunner<'e> {
    /// A runner over `engine`.
    pub fn new(engine: &'e Engine) -> NativeRunner<'e> {
        NativeRunner { engine, session: None }
    }
}

impl Runner for NativeRunner<'_> {
    fn backend(&self) -> &'static str {
        "native"
    }

    fn vocab_size(&self) -> usize {
        self.engine.spec().vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.engine.spec().max_position_embeddings)
    }

    fn logits(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<(), Error> {
        let engine = self.engine;
        let session = match self.session.take() {
            Some(s) if s.capacity() >= tokens.len() => self.session.insert(s),
            _ => self.session.insert(engine.session(tokens.len())),
        };
        session.reset();
        let logits = session.forward(tokens, Logits::All)?;
        out.clear();
        out.extend_from_slice(logits);
        Ok(())
    }

    fn greedy(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        Ok(generate(self.engine, prompt, max_tokens, &Sampling::GREEDY, stop)?)
    }
}

impl Runner for OrtModel {
    fn backend(&self) -> &'static str {
        "onnxruntime"
    }

    fn vocab_size(&self) -> usize {
        OrtModel::vocab_size(self)
    }

    fn context_length(&self) -> Option<usize> {
        Some(OrtModel::context_length(self))
    }

    fn logits(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<(), Error> {
        *out = OrtModel::logits(self, tokens)?;
        Ok(())
    }

    fn greedy(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        Ok(self.generate(prompt, max_tokens, &Sampling::GREEDY, stop)?.token_ids)
    }
}

impl Runner for LlamaCppModel {
    fn backend(&self) -> &'static str {
        "llama.cpp"
    }

    fn vocab_size(&self) -> usize {
        LlamaCppModel::vocab_size(self)
    }

    fn context_length(&self) -> Option<usize> {
        // llama.cpp sizes each call's context to the tokens it runs, and reports a sequence
        // longer than the model was trained for as an error of that call.
        None
    }

    fn logits(&mut self, tokens: &[u32], out: &mut Vec<f32>) -> Result<(), Error> {
        *out = LlamaCppModel::logits(self, tokens)?;
        Ok(())
    }

    fn greedy(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>, Error> {
        Ok(self.generate_greedy(prompt, max_tokens, stop)?)
    }
}
