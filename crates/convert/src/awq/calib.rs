//! AWQ's calibration data: windows of token ids, cut from a text file or written by the model
//! itself.

use std::sync::atomic::{AtomicUsize, Ordering};

use phiquant_runtime::{DecoderSpec, Engine, Sampling, Tokenizer, generate};
use rayon::prelude::*;
use serde::Serialize;

use crate::Error;

/// `--calib-samples` when not given (llm-awq and AutoAWQ use 128 samples).
pub const DEFAULT_CALIB_SAMPLES: usize = 128;
/// `--calib-len` when not given (llm-awq and AutoAWQ use 512 tokens), or the model's context when
/// that is shorter.
pub const DEFAULT_CALIB_LEN: usize = 512;
/// The most windows or tokens per window accepted (far beyond what the search needs; a bound on
/// the memory a typo could ask for).
pub const MAX_CALIB_SAMPLES: usize = 1 << 16;

/// Where calibration windows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CalibOrigin {
    /// Cut from a text file.
    Text {
        /// The file, as given.
        path: String,
        /// Tokens the whole file made.
        tokens: usize,
    },
    /// Sampled from the model itself (temperature 1, from its BOS token).
    Generated {
        /// The seed of sample `i` is `seed + i`.
        seed: u64,
    },
}

/// The calibration windows of an AWQ run: `samples` sequences of `len` token ids each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calibration {
    windows: Vec<Vec<u32>>,
    origin: CalibOrigin,
}

/// Checks `--calib-samples` and `--calib-len` (`len` at most the model's context).
pub fn check_calib_shape(samples: usize, len: usize, context: usize) -> Result<(), Error> {
    let bad = |option: &str, value: usize, expected: String| Error::Calibration {
        option: format!("{option} {value}"),
        reason: expected,
    };
    if samples == 0 || samples > MAX_CALIB_SAMPLES {
        return Err(bad("--calib-samples", samples, format!("expected 1 to {MAX_CALIB_SAMPLES}")));
    }
    if len < 2 || len > context {
        return Err(bad(
            "--calib-len",
            len,
            format!("expected 2 to {context} tokens (the model's context)"),
        ));
    }
    Ok(())
}

impl Calibration {
    /// `samples` windows of `len` tokens from `text` (the file `path`), tokenized as a whole
    /// without special tokens and cut at evenly spaced, non-overlapping offsets, so that the
    /// windows cover the whole file; each window starts with BOS when the tokenizer adds one
    /// (as perplexity chunks do). A file too short for the windows is an error.
    pub fn from_text(
        text: &str,
        path: &str,
        tokenizer: &Tokenizer,
        samples: usize,
        len: usize,
    ) -> Result<Calibration, Error> {
        let err = |reason: String| Error::Calibration { option: format!("--calib {path}"), reason };
        if text.trim().is_empty() {
            return Err(err("the file holds no text".into()));
        }
        let tokens = tokenizer.encode_plain(text)?;
        let bos = if tokenizer.adds_bos() { tokenizer.bos() } else { None };
        let body = len - usize::from(bos.is_some());
        let need = samples.saturating_mul(body);
        if tokens.len() < need {
            return Err(err(format!(
                "{} tokens, too few for --calib-samples {samples} x --calib-len {len} (needs {need}); \
                 give a longer file or fewer or shorter samples",
                tokens.len()
            )));
        }
        let stride = tokens.len() / samples;
        let windows = (0..samples)
            .map(|i| bos.into_iter().chain(tokens[i * stride..i * stride + body].iter().copied()))
            .map(Iterator::collect)
            .collect();
        Ok(Calibration {
            windows,
            origin: CalibOrigin::Text { path: path.to_string(), tokens: tokens.len() },
        })
    }

    /// `samples` windows of `len` tokens written by the model: each starts from the model's BOS
    /// token (else its first end-of-sequence token, the document separator of models without a
    /// BOS) and continues with `len - 1` tokens sampled at temperature 1 with seed `seed + i`,
    /// ignoring end-of-sequence tokens. Windows are generated in parallel; `progress(done,
    /// total)` is called as each one finishes. The same seed gives the same windows.
    pub fn generate(
        engine: &Engine,
        samples: usize,
        len: usize,
        seed: u64,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Calibration, Error> {
        let start = start_token(engine.spec());
        let done = AtomicUsize::new(0);
        let windows = (0..samples)
            .into_par_iter()
            .map(|i| {
                let sampling = Sampling {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    seed: seed.wrapping_add(i as u64),
                };
                let mut w = vec![start];
                w.extend(generate(engine, &[start], len - 1, &sampling, &[])?);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, samples);
                Ok(w)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Calibration { windows, origin: CalibOrigin::Generated { seed } })
    }

    /// Windows given as token ids (every window as long as the first).
    pub fn from_windows(windows: Vec<Vec<u32>>, origin: CalibOrigin) -> Result<Calibration, Error> {
        let len = windows.first().map_or(0, Vec::len);
        if windows.is_empty() || len < 2 || windows.iter().any(|w| w.len() != len) {
            return Err(Error::Calibration {
                option: "calibration windows".into(),
                reason: "expected at least one window, all of one length of at least 2 tokens"
                    .into(),
            });
        }
        Ok(Calibration { windows, origin })
    }

    /// The windows.
    pub fn windows(&self) -> &[Vec<u32>] {
        &self.windows
    }

    /// Tokens per window.
    pub fn len(&self) -> usize {
        self.windows.first().map_or(0, Vec::len)
    }

    /// Whether there is no window (never true of a built calibration).
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Where the windows came from.
    pub fn origin(&self) -> &CalibOrigin {
        &self.origin
    }
}

/// The token generated windows start from.
fn start_token(spec: &DecoderSpec) -> u32 {
    spec.bos_token_id.or(spec.eos_token_ids.first().copied()).unwrap_or(0)
}
