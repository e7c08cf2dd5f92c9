//! The reports as Markdown: a summary table of every artefact, then each artefact's gates,
//! statistics and continuations.

use std::fmt::Write;

use super::{gate_value, num, pct, quantile_label, verdict};
use crate::VerifyReport;

/// Escapes text for a Markdown table cell (pipes, newlines, backticks and angle brackets).
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('`', "\\`")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

/// The reports as a Markdown document.
pub fn markdown(reports: &[VerifyReport]) -> String {
    let mut o = String::new();
    let passed = reports.iter().filter(|r| r.passed).count();
    let _ = writeln!(o, "# phiquant verification\n");
    let _ = writeln!(o, "{passed} of {} artefacts passed every gate.\n", reports.len());
    let _ = writeln!(
        o,
        "| artefact | target | runtime | device | precision | PPL(Q) | PPL(base) | PPL ratio | \
         mean KLD | KLD p99 | same top p | greedy agreement | gates |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in reports {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.artefact),
            cell(&r.target),
            cell(&r.backend),
            cell(&r.device),
            r.precision,
            num(r.ppl_q, 4),
            num(r.ppl_base, 4),
            num(r.ppl_ratio, 4),
            num(r.kld_mean, 5),
            num(r.kld_p99, 5),
            pct(r.same_top_p, 2),
            r.greedy_agreement.map_or("n/a".into(), |a| pct(a, 1)),
            if r.passed {
                "pass".into()
            } else {
                format!("**FAIL** ({})", r.failed_gates().count())
            }
        );
    }
    for r in reports {
        let s = &r.statistics;
        let _ = writeln!(o, "\n## {} ({})\n", cell(&r.target), cell(&r.artefact));
        let _ = writeln!(
            o,
            "Baseline `{}` in the native engine (f32); corpus {}: {} chunks of {} tokens, {} \
             tokens scored.\n",
            cell(&r.baseline),
            cell(&r.corpus),
            r.chunks,
            r.ctx,
            r.tokens_scored
        );
        let _ = writeln!(o, "{}\n", cell(&verdict(r)));
        let _ = writeln!(o, "| gate | value | limit | passed |\n|---|---:|---:|---|");
        for g in &r.gates {
            let bound = match g.bound {
                crate::Bound::AtMost => "≤",
                crate::Bound::AtLeast => "≥",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {bound} {} | {} |",
                g.name,
                gate_value(g),
                g.limit,
                if g.passed { "yes" } else { "**no**" }
            );
        }
        let e = |e: crate::Estimate, d: usize| {
            format!("{} ± {}", num(e.value, d), num(e.uncertainty, d))
        };
        let _ = writeln!(o, "\n| statistic | value |\n|---|---:|");
        let _ = writeln!(o, "| Mean PPL(Q) | {} |", e(s.ppl_q, 6));
        let _ = writeln!(o, "| Mean PPL(base) | {} |", e(s.ppl_base, 6));
        let cor = s.log_ppl_correlation.map_or("n/a".into(), |c| pct(c, 2));
        let _ = writeln!(o, "| Cor(ln PPL(Q), ln PPL(base)) | {cor} |");
        let _ = writeln!(o, "| Mean ln(PPL(Q)/PPL(base)) | {} |", e(s.log_ppl_ratio, 6));
        let _ = writeln!(o, "| Mean PPL(Q)/PPL(base) | {} |", e(s.ppl_ratio, 6));
        let _ = writeln!(o, "| Mean PPL(Q)−PPL(base) | {} |", e(s.ppl_diff, 6));
        let _ = writeln!(o, "| Mean KLD | {} |", e(s.kld.mean, 6));
        for q in &s.kld.quantiles {
            let _ = writeln!(o, "| {} KLD | {} |", quantile_label(q.fraction), num(q.value, 6));
        }
        let p = |v: f64| format!("{}%", num(v * 100.0, 3));
        let _ = writeln!(
            o,
            "| Mean Δp | {} ± {} |",
            p(s.p_diff.mean.value),
            p(s.p_diff.mean.uncertainty)
        );
        for q in &s.p_diff.quantiles {
            let _ = writeln!(o, "| {} Δp | {} |", quantile_label(q.fraction), p(q.value));
        }
        let _ =
            writeln!(o, "| RMS Δp | {} ± {} |", p(s.p_diff_rms.value), p(s.p_diff_rms.uncertainty));
        let _ =
            writeln!(o, "| Same top p | {} ± {} |", p(s.same_top.value), p(s.same_top.uncertainty));
        if !r.generation.prompts.is_empty() {
            let _ = writeln!(
                o,
                "\nGreedy continuations ({} tokens at most), agreement {}:\n",
                r.generation.max_new_tokens,
                r.generation.agreement.map_or("n/a".into(), |a| pct(a, 1))
            );
            let _ = writeln!(
                o,
                "| prompt | agreement | first divergence | baseline | artefact |\n|---|---:|---:|---|---|"
            );
            for p in &r.generation.prompts {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {}{} |",
                    cell(&p.prompt),
                    pct(p.agreement, 1),
                    p.first_divergence.map_or("none".into(), |d| d.to_string()),
                    cell(&p.baseline_text),
                    cell(&p.artefact_text),
                    if p.degenerate { " **(loops)**" } else { "" }
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_their_cells() {
        let md = markdown(&[crate::render::testutil::report("cpu-int4", 0.3)]);
        assert!(md.contains("| artefact | target |"));
        assert!(md.contains("out/cpu-int4 &lt;&&gt;"), "{md}");
        assert!(md.contains("| Same top p |"));
        assert!(md.contains("| kld_mean |"));
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
