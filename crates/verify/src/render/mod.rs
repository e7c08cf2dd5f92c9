//! The report as people read it: a terminal table (llama-perplexity's layout, then the
//! generation check, the gates and the time taken), Markdown, and a self-contained HTML page with
//! SVG charts.

mod html;
mod markdown;
mod terminal;

pub use self::{html::html, markdown::markdown, terminal::terminal};

/// `Maximum`, `Median`, `Minimum`, or the percentage (`99.9%`) for a quantile's fraction.
pub(crate) fn quantile_label(fraction: f64) -> String {
    if fraction >= 1.0 {
        "Maximum".into()
    } else if fraction <= 0.0 {
        "Minimum".into()
    } else if (fraction - 0.5).abs() < 1e-9 {
        "Median".into()
    } else {
        let pct = fraction * 100.0;
        if (pct - pct.round()).abs() < 1e-9 { format!("{pct:.1}%") } else { format!("{pct}%") }
    }
}

/// A number with `digits` decimals, or `n/a` when it is not a number.
pub(crate) fn num(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{v:.digits$}") } else { "n/a".into() }
}

/// A fraction as a percentage with `digits` decimals.
pub(crate) fn pct(v: f64, digits: usize) -> String {
    if v.is_finite() { format!("{:.digits$}%", v * 100.0) } else { "n/a".into() }
}

/// What a gate's value is, as its limit is written.
pub(crate) fn gate_value(g: &crate::Gate) -> String {
    g.value.map_or("n/a".into(), |v| format!("{v:.6}"))
}

/// The one-line verdict of a report.
pub(crate) fn verdict(r: &crate::VerifyReport) -> String {
    if r.passed {
        "PASSED: every gate".into()
    } else {
        let failed: Vec<String> = r.failed_gates().map(crate::Gate::describe).collect();
        format!("FAILED: {}", failed.join("; "))
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A report with made-up numbers, for the renderers' tests.

    use crate::generation::PromptRun;
    use crate::kld::compare_token;
    use crate::{KldAccumulator, Measurement, Precision, ReportMeta, Timing, VerifyReport};

    pub(crate) fn report(target: &str, noise: f32) -> VerifyReport {
        let mut acc = KldAccumulator::default();
        let mut scratch = Vec::new();
        for i in 0..200usize {
            let base: Vec<f32> = (0..50).map(|j| ((i * 7 + j * 13) % 17) as f32 * 0.5).collect();
            let q: Vec<f32> = base
                .iter()
                .enumerate()
                .map(|(j, v)| v + noise * (((i + j * 3) % 5) as f32 - 2.0))
                .collect();
            acc.push(&compare_token(&base, &q, i % 50, &mut scratch));
        }
        let m = Measurement {
            schema_version: crate::MEASUREMENT_SCHEMA_VERSION,
            ctx: 64,
            chunks: 4,
            chunks_done: vec![0, 1, 2, 3],
            prompts: 2,
            max_new_tokens: 8,
            accumulator: acc,
            generations: vec![
                PromptRun {
                    index: 0,
                    prompt: vec![1],
                    baseline: vec![5, 6, 7, 8],
                    artefact: vec![5, 6, 9, 9],
                },
                PromptRun { index: 1, prompt: vec![2], baseline: vec![4; 8], artefact: vec![4; 8] },
            ],
            timing: Timing { total_secs: 1.5, ..Timing::default() },
        };
        let meta = ReportMeta {
            artefact: format!("out/{target} <&>"),
            target: target.into(),
            backend: "onnxruntime".into(),
            device: "cpu".into(),
            precision: Precision::Int4,
            baseline: "models/base".into(),
            corpus: "built-in".into(),
        };
        VerifyReport::new(meta, &m, &Precision::Int4.limits(), &|ids| format!("<{ids:?}>"))
    }

    #[test]
    fn labels() {
        assert_eq!(super::quantile_label(0.999), "99.9%");
        assert_eq!(super::quantile_label(0.99), "99.0%");
        assert_eq!(super::quantile_label(1.0), "Maximum");
        assert_eq!(super::quantile_label(0.5), "Median");
        assert_eq!(super::num(f64::NAN, 2), "n/a");
        assert_eq!(super::pct(0.9771, 1), "97.7%");
    }
}
