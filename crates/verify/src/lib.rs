//! Verification of phiquant artefacts: each one run in the runtime that consumes it and compared
//! with the full-precision model, with the numbers a build pipeline can gate on.
//!
//! The artefact runs in its consumer ([`OrtModel`](phiquant_runtime::OrtModel) on an execution
//! provider, [`LlamaCppModel`](phiquant_runtime::LlamaCppModel), or the native engine for a
//! Hugging Face folder); the baseline runs in the native engine at f32 ([`NativeRunner`]), on the
//! same token ids. Both sit behind the [`Runner`] trait.
//!
//! # Brief overview
//! - [`Verifier`] (built by [`VerifierBuilder`]) scores a corpus in chunks as llama.cpp's
//!   `perplexity --kl-divergence` does (BOS first, the second half of each chunk scored), comparing
//!   the two models' distributions position by position as each chunk comes ([`compare_token`]),
//!   so that only one chunk's logits are ever held; then it continues a few prompts greedily with
//!   both models. The result is a [`Measurement`], which parts made in several processes (one per
//!   GPU) [merge](Measurement::merge) into.
//! - [`KldAccumulator::summary`] gives llama-perplexity's report ([`KldSummary`]): PPL(Q),
//!   PPL(base), their correlation, ratio and difference with uncertainties, the KL divergence's
//!   mean, maximum and percentiles, Δp's, and the same-top-token rate.
//! - [`GenerationReport`] compares the continuations (first divergence, agreement) and flags a
//!   continuation that [loops](find_repetition) where the baseline's does not.
//! - [`Precision::limits`] gives default [`GateLimits`]; [`VerifyReport`] applies them
//!   ([`Gate`]) and serializes as versioned JSON; [`terminal`], [`markdown`] and [`html`] render
//!   it.
//!
//! # Example
//! ```no_run
//! use phiquant_runtime::{Checkpoint, Engine, OrtModel, Tokenizer, WeightSource};
//! use phiquant_verify::{
//!     NativeRunner, Precision, ReportMeta, VerifierBuilder, VerifyReport, Workload, terminal,
//! };
//!
//! let ckpt = Checkpoint::open("models/Phi-3-mini-4k-instruct".as_ref())?;
//! let tokenizer = Tokenizer::from_dir(ckpt.dir(), ckpt.spec().bos_token_id)?;
//! let engine = Engine::load(&ckpt)?;
//! let mut artefact = OrtModel::load("out/cpu-int4".as_ref(), None, 0)?;
//! let corpus = tokenizer.encode_prompt(phiquant_verify::BUILTIN_CORPUS)?;
//! let prompts = vec![tokenizer.encode_prompt("The capital of France is")?];
//! let work = Workload { corpus: &corpus, bos: tokenizer.bos(), prompts: &prompts, stop: &[] };
//! let verifier = VerifierBuilder::new().ctx(512).chunks(Some(4)).build()?;
//! let m = verifier.measure(&work, &mut NativeRunner::new(&engine), &mut artefact)?;
//! let meta = ReportMeta {
//!     artefact: "out/cpu-int4".into(),
//!     target: "cpu-int4".into(),
//!     backend: "onnxruntime".into(),
//!     device: "cpu".into(),
//!     precision: Precision::Int4,
//!     baseline: "models/Phi-3-mini-4k-instruct".into(),
//!     corpus: "built-in".into(),
//! };
//! let decode = |ids: &[u32]| tokenizer.decode(ids).unwrap_or_default();
//! let report = VerifyReport::new(meta, &m, &Precision::Int4.limits(), &decode);
//! print!("{}", terminal(&report));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod corpus;
mod error;
mod gates;
mod generation;
mod kld;
mod render;
mod report;
mod runner;
mod stats;
mod verifier;

pub use crate::{
    corpus::BUILTIN_CORPUS,
    error::Error,
    gates::{Bound, Gate, GateLimits, Precision, evaluate},
    generation::{
        DEFAULT_NEW_TOKENS, DEFAULT_PROMPTS, GenerationReport, PromptReport, PromptRun, Repetition,
        agreement, find_repetition, first_divergence,
    },
    kld::{
        Distribution, Estimate, KLD_FRACTIONS, KldAccumulator, KldSummary, P_DIFF_FRACTIONS,
        Quantile, TokenComparison, compare_token,
    },
    render::{html, markdown, terminal},
    report::{REPORT_SCHEMA_VERSION, ReportMeta, ReportSet, VerifyReport},
    runner::{NativeRunner, Runner},
    verifier::{
        MAX_CTX, MAX_NEW_TOKENS, MEASUREMENT_SCHEMA_VERSION, Measurement, Timing, Verifier,
        VerifierBuilder, Workload,
    },
};
