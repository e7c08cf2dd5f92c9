//! The verification report: what was compared, llama-perplexity's statistics, the generation
//! check, the gates and the time taken, serialized as versioned JSON.

use serde::{Deserialize, Serialize};

use crate::{
    Error, Gate, GateLimits, GenerationReport, KldSummary, Measurement, Precision, Timing, evaluate,
};

/// The version of the report JSON ([`VerifyReport`] and [`ReportSet`]); checked on read.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// What a report describes, besides its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportMeta {
    /// The artefact's path.
    pub artefact: String,
    /// The target it was made for (`cpu-int4`, `gguf-q8_0`), or its format when unknown.
    pub target: String,
    /// The runtime that ran it: `onnxruntime`, `llama.cpp` or `native`.
    pub backend: String,
    /// The device it ran on: `cpu`, `cuda:1`; several joined by commas.
    pub device: String,
    /// The precision whose gates apply.
    pub precision: Precision,
    /// The baseline model (path or hub id).
    pub baseline: String,
    /// The corpus (a path, or `built-in`).
    pub corpus: String,
}

/// The report of one artefact.
///
/// The flat fields up to `gates` are the ones a pipeline reads; `statistics` holds the full
/// llama-perplexity report and `generation` every continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The artefact's path.
    pub artefact: String,
    /// Its target.
    pub target: String,
    /// Its runtime.
    pub backend: String,
    /// Its device.
    pub device: String,
    /// The precision whose gates apply.
    pub precision: Precision,
    /// The baseline.
    pub baseline: String,
    /// The corpus.
    pub corpus: String,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks scored.
    pub chunks: usize,
    /// Tokens scored.
    pub tokens_scored: u64,
    /// The artefact's perplexity.
    pub ppl_q: f64,
    /// The baseline's perplexity on the same tokens.
    pub ppl_base: f64,
    /// PPL(Q)/PPL(base).
    pub ppl_ratio: f64,
    /// Mean KL divergence per token (nats).
    pub kld_mean: f64,
    /// The 99th percentile of the per-token KL divergence.
    pub kld_p99: f64,
    /// The fraction of tokens with the same most likely next token (0 to 1).
    pub same_top_p: f64,
    /// The fraction of greedy positions with the same token (0 to 1; `null` when no prompt
    /// was continued).
    pub greedy_agreement: Option<f64>,
    /// Whether every gate passed.
    pub passed: bool,
    /// Each gate.
    pub gates: Vec<Gate>,
    /// The limits the gates applied.
    pub limits: GateLimits,
    /// llama-perplexity's KL-divergence report.
    pub statistics: KldSummary,
    /// The generation check.
    pub generation: GenerationReport,
    /// Seconds spent.
    pub timing: Timing,
}

impl VerifyReport {
    /// The report of `measurement` under `limits`; `decode` gives the text of token ids.
    pub fn new(
        meta: ReportMeta,
        measurement: &Measurement,
        limits: &GateLimits,
        decode: &dyn Fn(&[u32]) -> String,
    ) -> VerifyReport {
        let statistics = measurement.accumulator.summary();
        let generation =
            GenerationReport::new(&measurement.generations, measurement.max_new_tokens, decode);
        let gates = evaluate(limits, &statistics, &generation);
        VerifyReport {
            schema_version: REPORT_SCHEMA_VERSION,
            artefact: meta.artefact,
            target: meta.target,
            backend: meta.backend,
            device: meta.device,
            precision: meta.precision,
            baseline: meta.baseline,
            corpus: meta.corpus,
            ctx: measurement.ctx,
            chunks: measurement.chunks,
            tokens_scored: statistics.tokens,
            ppl_q: statistics.ppl_q.value,
            ppl_base: statistics.ppl_base.value,
            ppl_ratio: statistics.ppl_ratio.value,
            kld_mean: statistics.kld.mean.value,
            kld_p99: statistics.kld.at(0.99).unwrap_or(f64::NAN),
            same_top_p: statistics.same_top.value,
            greedy_agreement: generation.agreement,
            passed: gates.iter().all(|g| g.passed),
            gates,
            limits: *limits,
            statistics,
            generation,
            timing: measurement.timing,
        }
    }

    /// The gates that failed.
    pub fn failed_gates(&self) -> impl Iterator<Item = &Gate> {
        self.gates.iter().filter(|g| !g.passed)
    }

    /// The report as pretty-printed JSON (with a final newline).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads a report, checking its schema version.
    pub fn from_json(text: &str, origin: &str) -> Result<VerifyReport, Error> {
        from_json(text, origin)
    }
}

/// The reports of several artefacts (`phiquant export --verify`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSet {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Whether every artefact passed every gate.
    pub passed: bool,
    /// Each artefact's report, in the order verified.
    pub reports: Vec<VerifyReport>,
}

impl ReportSet {
    /// The set of `reports`.
    pub fn new(reports: Vec<VerifyReport>) -> ReportSet {
        ReportSet {
            schema_version: REPORT_SCHEMA_VERSION,
            passed: reports.iter().all(|r| r.passed),
            reports,
        }
    }

    /// The set as pretty-printed JSON (with a final newline).
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Reads a set, checking its schema version.
    pub fn from_json(text: &str, origin: &str) -> Result<ReportSet, Error> {
        from_json(text, origin)
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| unreachable!("plain data serializes: {e}"));
    s.push('\n');
    s
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, Error> {
    let fail = |reason: String| Error::Partial { origin: origin.into(), reason };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not a report: {e}")))?;
    match v.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(REPORT_SCHEMA_VERSION) => {}
        other => {
            return Err(fail(format!(
                "schema_version {}, expected {REPORT_SCHEMA_VERSION}",
                other.map_or("missing".into(), |v| v.to_string())
            )));
        }
    }
    serde_json::from_value(v).map_err(|e| fail(format!("not a report: {e}")))
}
