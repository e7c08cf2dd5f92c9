//! Perplexity over a token stream, scored as llama.cpp's `perplexity` tool scores it
//! (`tools/perplexity/perplexity.cpp`): consecutive chunks of `ctx` tokens, each evaluated on its
//! own with its first token replaced by BOS when the model adds one, and only the second half of
//! each chunk scored (the logits at position `j` predict token `j + 1`, for
//! `j` in `ctx/2 .. ctx-1`). The full-window mode scores every position of the chunk.

use serde::Serialize;

use crate::{Engine, Error, Logits};

/// Which positions of a chunk are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Positions `ctx/2 .. ctx-1`, as llama-perplexity.
    SecondHalf,
    /// Positions `0 .. ctx-1`.
    FullWindow,
}

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// exp(mean negative log-likelihood).
    pub ppl: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// Tokens scored.
    pub tokens_scored: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Scoring mode.
    pub scoring: Scoring,
}

/// `log softmax(logits)[target]`, accumulated in f64.
pub fn log_prob(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[target as usize] as f64 - max - sum.ln()
}

/// Scores `tokens` in chunks of `ctx` (at most `max_chunks`) on the native engine, calling `each`
/// with `(chunk, position, log-probability of the next token)` for every scored position.
pub fn perplexity(
    engine: &Engine,
    tokens: &[u32],
    ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    scoring: Scoring,
    each: impl FnMut(usize, usize, f64),
) -> Result<PerplexityReport, Error> {
    let mut session = engine.session(ctx);
    let logits = |chunk: &[u32]| -> Result<Vec<f32>, Error> {
        session.reset();
        Ok(session.forward(chunk, Logits::All)?.to_vec())
    };
    perplexity_with(engine.spec().vocab_size, tokens, ctx, max_chunks, bos, scoring, logits, each)
}

/// As [`perplexity`], with any model that returns the logits of every position of a chunk
/// (`[ctx, vocab]`, fresh context per call): the llama.cpp and ONNX Runtime backends use it.
#[allow(clippy::too_many_arguments)]
pub fn perplexity_with(
    vocab: usize,
    tokens: &[u32],
    ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
    scoring: Scoring,
    mut logits_of: impl FnMut(&[u32]) -> Result<Vec<f32>, Error>,
    mut each: impl FnMut(usize, usize, f64),
) -> Result<PerplexityReport, Error> {
    if ctx < 4 {
        return Err(Error::InvalidField {
            path: "perplexity".into(),
            field: "ctx".into(),
            value: ctx.to_string(),
            expected: "at least 4 tokens".into(),
        });
    }
    let available = tokens.len() / ctx;
    let chunks = max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        return Err(Error::InvalidField {
            path: "perplexity".into(),
            field: "corpus".into(),
            value: format!("{} tokens", tokens.len()),
            expected: format!("at least one chunk of {ctx} tokens"),
        });
    }
    let first = match scoring {
        Scoring::SecondHalf => ctx / 2,
        Scoring::FullWindow => 0,
    };
    let mut chunk_tokens = vec![0u32; ctx];
    let (mut nll_sum, mut scored) = (0f64, 0usize);
    for c in 0..chunks {
        chunk_tokens.copy_from_slice(&tokens[c * ctx..(c + 1) * ctx]);
        if let Some(b) = bos {
            chunk_tokens[0] = b;
        }
        let logits = logits_of(&chunk_tokens)?;
        if logits.len() != ctx * vocab {
            return Err(Error::ContextFull { needed: ctx * vocab, capacity: logits.len() });
        }
        for j in first..ctx - 1 {
            let lp = log_prob(&logits[j * vocab..(j + 1) * vocab], chunk_tokens[j + 1]);
            each(c, j, lp);
            nll_sum -= lp;
            scored += 1;
        }
    }
    let nll = nll_sum / scored as f64;
    Ok(PerplexityReport { ppl: nll.exp(), nll, tokens_scored: scored, chunks, ctx, scoring })
}
