//! The reports as one self-contained HTML page: inline CSS and inline SVG charts (perplexity
//! ratio per artefact, KL-divergence percentiles per artefact, greedy token agreement per prompt),
//! then each artefact's gates, statistics and continuations. Nothing is loaded from elsewhere,
//! so the page opens as it is from a CI run's artefacts.

use std::fmt::Write;

use super::{gate_value, num, pct, quantile_label, verdict};
use crate::VerifyReport;

/// Series colours (colour-blind-safe where it matters: blue, orange, green, pink, ...).
const COLOURS: [&str; 8] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;\
color:#222;background:#fff;max-width:1100px}h1{margin-bottom:.2em}table{border-collapse:collapse;\
margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;\
vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2}\
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}svg{display:block;\
margin:.4em 0 1.4em;background:#fcfcfc;border:1px solid #e4e4e4}svg text{font-size:12px;\
fill:#333}.gen{font-family:ui-monospace,monospace;white-space:pre-wrap;font-size:12px}\
details{margin:.4em 0 1em}";

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn colour(i: usize) -> &'static str {
    COLOURS[i % COLOURS.len()]
}

/// The reports as an HTML document.
pub fn html(reports: &[VerifyReport]) -> String {
    let mut o = String::new();
    let passed = reports.iter().filter(|r| r.passed).count();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>phiquant verification</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>phiquant verification</h1>\n<p class=\"{}\">{passed} of {} artefacts passed every \
         gate.</p>\n",
        if passed == reports.len() { "pass" } else { "fail" },
        reports.len()
    );
    summary_table(&mut o, reports);
    let _ = writeln!(o, "<h2>Perplexity ratio PPL(Q)/PPL(base)</h2>");
    ratio_chart(&mut o, reports);
    let _ = writeln!(o, "<h2>KL divergence percentiles</h2>");
    kld_chart(&mut o, reports);
    let _ = writeln!(o, "<h2>Greedy token agreement</h2>");
    agreement_chart(&mut o, reports);
    for r in reports {
        artefact_section(&mut o, r);
    }
    let _ = writeln!(o, "</body>\n</html>");
    o
}

fn summary_table(o: &mut String, reports: &[VerifyReport]) {
    let _ = writeln!(
        o,
        "<table>\n<tr><th>artefact</th><th>target</th><th>runtime</th><th>device</th>\
         <th>precision</th><th>PPL(Q)</th><th>PPL(base)</th><th>PPL ratio</th><th>mean KLD</th>\
         <th>KLD p99</th><th>same top p</th><th>greedy agreement</th><th>gates</th></tr>"
    );
    for r in reports {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>{}</tr>",
            esc(&r.artefact),
            esc(&r.target),
            esc(&r.backend),
            esc(&r.device),
            r.precision,
            num(r.ppl_q, 4),
            num(r.ppl_base, 4),
            num(r.ppl_ratio, 4),
            num(r.kld_mean, 5),
            num(r.kld_p99, 5),
            pct(r.same_top_p, 2),
            r.greedy_agreement.map_or("n/a".into(), |a| pct(a, 1)),
            if r.passed {
                "<td class=\"pass\">pass</td>".to_string()
            } else {
                format!("<td class=\"fail\">FAIL ({})</td>", r.failed_gates().count())
            }
        );
    }
    let _ = writeln!(o, "</table>");
}

/// Horizontal bars from 1 to each artefact's ratio, with its uncertainty and its gate's limit.
fn ratio_chart(o: &mut String, reports: &[VerifyReport]) {
    let (w, left, right, row) = (900.0, 190.0, 80.0, 34.0);
    let h = 40.0 + row * reports.len() as f64;
    let finite = |v: f64| v.is_finite().then_some(v);
    let values = reports.iter().flat_map(|r| {
        [
            finite(r.statistics.ppl_ratio.value - r.statistics.ppl_ratio.uncertainty),
            finite(r.statistics.ppl_ratio.value + r.statistics.ppl_ratio.uncertainty),
            finite(r.limits.max_ppl_ratio),
        ]
        .into_iter()
        .flatten()
    });
    let (mut lo, mut hi) = values.fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(0.0005);
    lo -= pad;
    hi += pad;
    let x = |v: f64| left + (v.clamp(lo, hi) - lo) / (hi - lo) * (w - left - right);
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"perplexity ratio per artefact\">"
    );
    for tick in ticks(lo, hi, 6) {
        let tx = x(tick);
        let _ = writeln!(
            o,
            "<line x1=\"{tx:.1}\" y1=\"20\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{tx:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            h - 10.0,
            trim_number(tick)
        );
    }
    let one = x(1.0);
    let _ = writeln!(
        o,
        "<line x1=\"{one:.1}\" y1=\"20\" x2=\"{one:.1}\" y2=\"{:.1}\" stroke=\"#555\"/>",
        h - 10.0
    );
    for (i, r) in reports.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let ratio = r.statistics.ppl_ratio;
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 14.0,
            esc(&r.target)
        );
        if ratio.value.is_finite() {
            let (a, b) = (x(1.0).min(x(ratio.value)), x(1.0).max(x(ratio.value)));
            let _ = writeln!(
                o,
                "<rect x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"20\" fill=\"{}\">\
                 <title>{}: {}</title></rect>",
                (b - a).max(1.0),
                colour(i),
                esc(&r.target),
                num(ratio.value, 6)
            );
            let (e0, e1) = (x(ratio.value - ratio.uncertainty), x(ratio.value + ratio.uncertainty));
            let _ = writeln!(
                o,
                "<line x1=\"{e0:.1}\" y1=\"{:.1}\" x2=\"{e1:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>",
                y + 10.0,
                y + 10.0
            );
        }
        let lx = x(r.limits.max_ppl_ratio);
        let _ = writeln!(
            o,
            "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{lx:.1}\" y2=\"{:.1}\" stroke=\"#cf222e\" \
             stroke-width=\"3\"><title>limit {}</title></line>",
            y - 3.0,
            y + 23.0,
            r.limits.max_ppl_ratio
        );
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            w - right + 6.0,
            y + 14.0,
            num(ratio.value, 4)
        );
    }
    let _ = writeln!(
        o,
        "</svg>\n<p>Bars run from 1 to each ratio, with ± one standard error; the red mark is the gate's limit.</p>"
    );
}

/// Each artefact's KL-divergence percentiles as a line over a logarithmic axis.
fn kld_chart(o: &mut String, reports: &[VerifyReport]) {
    // From the 0.1 % percentile up to the maximum (the minimum is often 0, off a log axis).
    let fractions = [0.001, 0.01, 0.05, 0.10, 0.5, 0.90, 0.95, 0.99, 0.999, 1.0];
    let (w, h, left, bottom, top) = (900.0, 320.0, 70.0, 40.0, 20.0);
    let series: Vec<Vec<f64>> = reports
        .iter()
        .map(|r| fractions.iter().map(|&f| r.statistics.kld.at(f).unwrap_or(f64::NAN)).collect())
        .collect();
    let positive = series.iter().flatten().copied().filter(|v| v.is_finite() && *v > 0.0);
    let (min, max) =
        positive.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if min.is_finite() {
        (min.log10().floor().max(-12.0), max.log10().ceil().max(min.log10().floor() + 1.0))
    } else {
        (-6.0, 0.0)
    };
    let plot_w = w - left - 20.0 - 150.0;
    let x = |i: usize| left + plot_w * i as f64 / (fractions.len() - 1) as f64;
    let y = |v: f64| {
        let l = if v > 0.0 && v.is_finite() { v.log10().clamp(lo, hi) } else { lo };
        top + (hi - l) / (hi - lo) * (h - top - bottom)
    };
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"KL divergence percentiles\">"
    );
    for e in (lo as i32)..=(hi as i32) {
        let ty = y(10f64.powi(e));
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{:.1}\" y2=\"{ty:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{e}</text>",
            left + plot_w,
            left - 6.0,
            ty + 4.0
        );
    }
    for (i, &f) in fractions.iter().enumerate() {
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            h - bottom + 18.0,
            quantile_label(f).replace("imum", "")
        );
    }
    for (k, (r, values)) in reports.iter().zip(&series).enumerate() {
        let points: Vec<String> =
            values.iter().enumerate().map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v))).collect();
        let _ = writeln!(
            o,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            points.join(" "),
            colour(k)
        );
        for (i, &v) in values.iter().enumerate() {
            let _ = writeln!(
                o,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"><title>{} {}: {}</title></circle>",
                x(i),
                y(v),
                colour(k),
                esc(&r.target),
                quantile_label(fractions[i]),
                num(v, 6)
            );
        }
        let ly = top + 8.0 + 18.0 * k as f64;
        let lx = left + plot_w + 16.0;
        let _ = writeln!(
            o,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            ly - 10.0,
            colour(k),
            lx + 18.0,
            ly,
            esc(&r.target)
        );
    }
    let _ = writeln!(
        o,
        "</svg>\n<p>KL divergence per token (nats), from the 0.1 % percentile to the maximum, on a logarithmic axis.</p>"
    );
}

/// Per artefact, one bar per prompt: the fraction of greedy positions with the baseline's token.
fn agreement_chart(o: &mut String, reports: &[VerifyReport]) {
    let prompts = reports.iter().map(|r| r.generation.prompts.len()).max().unwrap_or(0);
    if prompts == 0 {
        let _ = writeln!(o, "<p>No generation check was run.</p>");
        return;
    }
    let (left, top, bottom, plot_h, bar) = (60.0, 20.0, 60.0, 200.0, 16.0);
    let group = bar * prompts as f64 + 24.0;
    let w = (left + 20.0 + group * reports.len() as f64).max(400.0) + 170.0;
    let h = top + plot_h + bottom;
    let y = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"greedy token agreement\">"
    );
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            y(v),
            w - 170.0,
            y(v),
            left - 6.0,
            y(v) + 4.0,
            t * 25
        );
    }
    for (k, r) in reports.iter().enumerate() {
        let gx = left + 12.0 + group * k as f64;
        for (i, p) in r.generation.prompts.iter().enumerate() {
            let bx = gx + bar * i as f64;
            let top_y = y(p.agreement);
            let _ = writeln!(
                o,
                "<rect x=\"{bx:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}, prompt {}: {} (first divergence {})</title></rect>",
                bar - 3.0,
                (y(0.0) - top_y).max(0.5),
                colour(i),
                esc(&r.target),
                i + 1,
                pct(p.agreement, 1),
                p.first_divergence.map_or("none".into(), |d| d.to_string())
            );
        }
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + bar * r.generation.prompts.len() as f64 / 2.0,
            top + plot_h + 18.0,
            esc(&r.target),
            gx + bar * r.generation.prompts.len() as f64 / 2.0,
            top + plot_h + 34.0,
            r.generation.agreement.map_or("n/a".into(), |a| pct(a, 1))
        );
    }
    let first = &reports.iter().find(|r| !r.generation.prompts.is_empty());
    for i in 0..prompts {
        let ly = top + 10.0 + 18.0 * i as f64;
        let lx = w - 160.0;
        let label = first
            .and_then(|r| r.generation.prompts.get(i))
            .map_or(String::new(), |p| p.prompt.chars().take(18).collect());
        let _ = writeln!(
            o,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">P{} {}</text>",
            ly - 10.0,
            colour(i),
            lx + 18.0,
            ly,
            i + 1,
            esc(label.trim())
        );
    }
    let _ = writeln!(
        o,
        "</svg>\n<p>The share of generated positions where the artefact's greedy token is the baseline's, per prompt.</p>"
    );
}

fn artefact_section(o: &mut String, r: &VerifyReport) {
    let s = &r.statistics;
    let _ = writeln!(o, "<h2>{} <small>{}</small></h2>", esc(&r.target), esc(&r.artefact));
    let _ = writeln!(
        o,
        "<p>{} on {}, {} gates; baseline <code>{}</code> in the native engine (f32); corpus {}: \
         {} chunks of {} tokens, {} tokens scored.</p>\n<p class=\"{}\">{}</p>",
        esc(&r.backend),
        esc(&r.device),
        r.precision,
        esc(&r.baseline),
        esc(&r.corpus),
        r.chunks,
        r.ctx,
        r.tokens_scored,
        if r.passed { "pass" } else { "fail" },
        esc(&verdict(r))
    );
    let _ =
        writeln!(o, "<table>\n<tr><th>gate</th><th>value</th><th>limit</th><th>passed</th></tr>");
    for g in &r.gates {
        let bound = match g.bound {
            crate::Bound::AtMost => "≤",
            crate::Bound::AtLeast => "≥",
        };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{bound} {}</td>{}</tr>",
            esc(&g.name),
            gate_value(g),
            g.limit,
            if g.passed { "<td class=\"pass\">yes</td>" } else { "<td class=\"fail\">no</td>" }
        );
    }
    let _ = writeln!(o, "</table>\n<details><summary>All statistics</summary>\n<table>");
    let e =
        |e: crate::Estimate, d: usize| format!("{} ± {}", num(e.value, d), num(e.uncertainty, d));
    let mut rows: Vec<(String, String)> = vec![
        ("Mean PPL(Q)".into(), e(s.ppl_q, 6)),
        ("Mean PPL(base)".into(), e(s.ppl_base, 6)),
        (
            "Cor(ln PPL(Q), ln PPL(base))".into(),
            s.log_ppl_correlation.map_or("n/a".into(), |c| pct(c, 2)),
        ),
        ("Mean ln(PPL(Q)/PPL(base))".into(), e(s.log_ppl_ratio, 6)),
        ("Mean PPL(Q)/PPL(base)".into(), e(s.ppl_ratio, 6)),
        ("Mean PPL(Q)−PPL(base)".into(), e(s.ppl_diff, 6)),
        ("Mean KLD".into(), e(s.kld.mean, 6)),
    ];
    rows.extend(
        s.kld
            .quantiles
            .iter()
            .map(|q| (format!("{} KLD", quantile_label(q.fraction)), num(q.value, 6))),
    );
    let p = |v: f64| format!("{}%", num(v * 100.0, 3));
    rows.push((
        "Mean Δp".into(),
        format!("{} ± {}", p(s.p_diff.mean.value), p(s.p_diff.mean.uncertainty)),
    ));
    rows.extend(
        s.p_diff
            .quantiles
            .iter()
            .map(|q| (format!("{} Δp", quantile_label(q.fraction)), p(q.value))),
    );
    rows.push((
        "RMS Δp".into(),
        format!("{} ± {}", p(s.p_diff_rms.value), p(s.p_diff_rms.uncertainty)),
    ));
    rows.push((
        "Same top p".into(),
        format!("{} ± {}", p(s.same_top.value), p(s.same_top.uncertainty)),
    ));
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", esc(&k), esc(&v));
    }
    let _ = writeln!(o, "</table>\n</details>");
    if !r.generation.prompts.is_empty() {
        let _ = writeln!(
            o,
            "<table>\n<tr><th>prompt</th><th>agreement</th><th>first divergence</th>\
             <th>baseline</th><th>artefact</th></tr>"
        );
        for p in &r.generation.prompts {
            let _ = writeln!(
                o,
                "<tr><td class=\"gen\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"gen\">{}</td><td class=\"gen\">{}{}</td></tr>",
                esc(&p.prompt),
                pct(p.agreement, 1),
                p.first_divergence.map_or("none".into(), |d| d.to_string()),
                esc(&p.baseline_text),
                esc(&p.artefact_text),
                if p.degenerate { " <span class=\"fail\">(loops)</span>" } else { "" }
            );
        }
        let _ = writeln!(o, "</table>");
    }
    let t = &r.timing;
    let _ = writeln!(
        o,
        "<p>Time: artefact {:.2} s (load {:.2}, logits {:.2}, generation {:.2}); baseline {:.2} \
         s (load {:.2}, logits {:.2}, generation {:.2}); statistics {:.2} s; total {:.2} s.</p>",
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
}

/// About `n` round tick values between `lo` and `hi`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) {
        return Vec::new();
    }
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64 + 1e-9)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 50 {
        out.push(t);
        t += step;
    }
    out
}

/// A tick value without trailing zeros.
fn trim_number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::report;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let page = html(&[report("cpu-int4", 0.3), report("gguf-q8_0", 0.05)]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("<svg ").count(), 3);
        // Nothing external: no scripts, links, images or remote URLs.
        for external in
            ["<script", "<link", "<img", "src=", "href=", "http://", "https://", "@import", "url("]
        {
            let hits: Vec<_> = page
                .match_indices(external)
                .map(|(i, _)| &page[i.saturating_sub(40)..i + 40])
                .collect();
            // The SVG namespace is an identifier, not a resource.
            assert!(
                hits.iter().all(|h| h.contains("xmlns=\"http://www.w3.org/2000/svg\"")),
                "{external}: {hits:?}"
            );
        }
        assert!(page.contains("out/cpu-int4 &lt;&amp;&gt;"));
        assert!(!page.contains("out/cpu-int4 <&>"));
        assert!(page.contains("&lt;[5, 6, 7, 8]&gt;"));
    }

    #[test]
    fn ticks_are_round() {
        let t = ticks(0.99, 1.11, 6);
        assert_eq!(t.len(), 6, "{t:?}");
        for (v, want) in t.iter().zip([1.0, 1.02, 1.04, 1.06, 1.08, 1.1]) {
            assert!((v - want).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(ticks(1.0, 1.0, 6), Vec::<f64>::new());
        assert_eq!(trim_number(1.020000), "1.02");
        assert_eq!(trim_number(1.0), "1");
    }
}
