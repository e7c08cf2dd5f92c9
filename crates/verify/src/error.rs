//! The error type of the verification crate.

/// What went wrong while verifying an artefact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Running a model, reading it or tokenizing failed.
    #[error(transparent)]
    Runtime(#[from] phiquant_runtime::Error),
    /// A setting outside its range.
    #[error("{option} {value}: {expected}")]
    InvalidOption {
        /// The option, as the command line spells it (`--ctx`).
        option: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The artefact and the baseline disagree on the vocabulary, so their distributions cannot
    /// be compared token by token.
    #[error(
        "the artefact's logits have {artefact} columns but the baseline's {baseline}: they do \
         not share a vocabulary"
    )]
    VocabMismatch {
        /// The artefact's vocabulary size.
        artefact: usize,
        /// The baseline's vocabulary size.
        baseline: usize,
    },
    /// The corpus is shorter than one chunk.
    #[error("the corpus gives {tokens} tokens, fewer than one chunk of --ctx {ctx}")]
    ShortCorpus {
        /// Tokens in the corpus.
        tokens: usize,
        /// Tokens per chunk.
        ctx: usize,
    },
    /// A model returned logits of the wrong size.
    #[error("the {model} returned {got} logits for {tokens} tokens, expected {expected}")]
    LogitsShape {
        /// `artefact` or `baseline`.
        model: &'static str,
        /// Values returned.
        got: usize,
        /// Tokens run.
        tokens: usize,
        /// Values expected (`tokens * vocab`).
        expected: usize,
    },
    /// Partial measurements (from one process per device) that cannot be read or merged.
    #[error("{origin}: {reason}")]
    Partial {
        /// Where the measurement came from (a file, a device).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}
