//! The terminal table: llama-perplexity's KL-divergence report, line for line, then the
//! generation check, the gates and the time taken.

use std::fmt::Write;

use super::{gate_value, num, quantile_label, verdict};
use crate::VerifyReport;

/// The report as text for a terminal.
pub fn terminal(r: &VerifyReport) -> String {
    let mut o = String::new();
    let s = &r.statistics;
    let _ = writeln!(o, "artefact: {} ({}, {} on {})", r.artefact, r.target, r.backend, r.device);
    let _ = writeln!(o, "baseline: {} (native engine, f32)", r.baseline);
    let _ = writeln!(
        o,
        "corpus:   {}: {} chunks of {} tokens, {} tokens scored",
        r.corpus, r.chunks, r.ctx, r.tokens_scored
    );
    let est = |e: crate::Estimate, digits: usize| {
        format!("{:>10} ± {:>10}", num(e.value, digits), num(e.uncertainty, digits))
    };
    let _ = writeln!(o, "\n====== Perplexity statistics ======");
    let _ = writeln!(o, "Mean PPL(Q)                   : {}", est(s.ppl_q, 6));
    let _ = writeln!(o, "Mean PPL(base)                : {}", est(s.ppl_base, 6));
    let cor = s.log_ppl_correlation.map_or("n/a".into(), |c| format!("{:6.2}%", c * 100.0));
    let _ = writeln!(o, "Cor(ln(PPL(Q)), ln(PPL(base))): {cor}");
    let _ = writeln!(o, "Mean ln(PPL(Q)/PPL(base))     : {}", est(s.log_ppl_ratio, 6));
    let _ = writeln!(o, "Mean PPL(Q)/PPL(base)         : {}", est(s.ppl_ratio, 6));
    let _ = writeln!(o, "Mean PPL(Q)-PPL(base)         : {}", est(s.ppl_diff, 6));

    let _ = writeln!(o, "\n====== KL divergence statistics ======");
    let _ = writeln!(o, "Mean    KLD: {}", est(s.kld.mean, 6));
    for q in &s.kld.quantiles {
        let _ = writeln!(o, "{:<8}KLD: {:>10}", quantile_label(q.fraction), num(q.value, 6));
    }

    let _ = writeln!(o, "\n====== Token probability statistics ======");
    let p = |v: f64| num(v * 100.0, 3);
    let _ = writeln!(
        o,
        "Mean    Δp: {:>7} ± {:>6} %",
        p(s.p_diff.mean.value),
        p(s.p_diff.mean.uncertainty)
    );
    for q in &s.p_diff.quantiles {
        let _ = writeln!(o, "{:<8}Δp: {:>7}%", quantile_label(q.fraction), p(q.value));
    }
    let _ = writeln!(
        o,
        "RMS Δp    : {:>7} ± {:>6} %",
        p(s.p_diff_rms.value),
        p(s.p_diff_rms.uncertainty)
    );
    let _ =
        writeln!(o, "Same top p: {:>7} ± {:>6} %", p(s.same_top.value), p(s.same_top.uncertainty));

    let g = &r.generation;
    if !g.prompts.is_empty() {
        let _ = writeln!(
            o,
            "\n====== Greedy generation ({} tokens per prompt) ======",
            g.max_new_tokens
        );
        for (i, p) in g.prompts.iter().enumerate() {
            let divergence = p
                .first_divergence
                .map_or("identical".into(), |d| format!("first divergence at token {d}"));
            let looping = match (p.artefact_repetition, p.degenerate) {
                (Some(rep), true) => {
                    format!(", LOOPS (period {}, {} tokens)", rep.period, rep.covered)
                }
                (Some(_), false) => ", loops as the baseline does".into(),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                o,
                "prompt {}: agreement {:>6}, {divergence}{looping}",
                i + 1,
                num(p.agreement * 100.0, 1) + "%"
            );
        }
        let _ = writeln!(o, "agreement: {}%", num(g.agreement.unwrap_or(f64::NAN) * 100.0, 2));
    }

    let _ = writeln!(o, "\n====== Gates ({}) ======", r.precision);
    for gate in &r.gates {
        let op = match gate.bound {
            crate::Bound::AtMost => "<=",
            crate::Bound::AtLeast => ">=",
        };
        let _ = writeln!(
            o,
            "{:<20} {:>12} {op} {:<10} {}",
            gate.name,
            gate_value(gate),
            gate.limit,
            if gate.passed { "pass" } else { "FAIL" }
        );
    }
    let _ = writeln!(o, "{}", verdict(r));
    let t = &r.timing;
    let _ = writeln!(
        o,
        "time: artefact {:.2} s (load {:.2}, logits {:.2}, generation {:.2}); baseline {:.2} s \
         (load {:.2}, logits {:.2}, generation {:.2}); statistics {:.2} s; total {:.2} s",
        t.artefact_load_secs + t.artefact_logits_secs + t.artefact_generation_secs,
        t.artefact_load_secs,
        t.artefact_logits_secs,
        t.artefact_generation_secs,
        t.baseline_load_secs + t.baseline_logits_secs + t.baseline_generation_secs,
        t.baseline_load_secs,
        t.baseline_logits_secs,
        t.baseline_generation_secs,
        t.statistics_secs,
        t.total_secs
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_llama_perplexity_lines_and_the_gates() {
        let text = terminal(&crate::render::testutil::report("cpu-int4", 0.3));
        for line in [
            "Mean PPL(Q)                   :",
            "Cor(ln(PPL(Q)), ln(PPL(base))):",
            "Mean PPL(Q)/PPL(base)         :",
            "99.9%   KLD:",
            "Median  KLD:",
            "Minimum KLD:",
            "75.0%   Δp:",
            "RMS Δp    :",
            "Same top p:",
            "prompt 1: agreement",
            "ppl_ratio",
            "degenerate_prompts",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
