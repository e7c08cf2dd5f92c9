//! Token-by-token comparison of two next-token distributions, and the KL-divergence report of
//! llama.cpp's `perplexity --kl-divergence` over every scored token
//! (`tools/perplexity/perplexity.cpp`, ggml-org/llama.cpp@050fc7f: `kl_divergence_result`, the
//! `log_softmax` that fills it, and the statistics `kl_divergence` prints).
//!
//! The figures are llama-perplexity's, with one difference of method: llama.cpp stores the base
//! model's log-probabilities rounded to 16 bits, and so leaves out of the divergence every token
//! whose base log-probability is below -16. Here the baseline's logits are used as they are, in
//! full, so each token's divergence is the exact `sum_i p_base(i) (ln p_base(i) - ln p_q(i))`.

use serde::{Deserialize, Serialize};

use crate::stats::{covariance, mean_and_uncertainty, median, percentile};

/// How one scored token compares: the negative log-likelihood of the correct next token under
/// each model, the KL divergence from the baseline's distribution to the artefact's, the change
/// in the correct token's probability, and whether both models rank the same token first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenComparison {
    /// `-ln p_q(correct)` (the artefact).
    pub nll_q: f64,
    /// `-ln p_base(correct)`.
    pub nll_base: f64,
    /// `KL(p_base || p_q)` in nats.
    pub kld: f64,
    /// `p_q(correct) - p_base(correct)`.
    pub p_diff: f64,
    /// Whether the two rows' first maxima are the same token.
    pub same_top: bool,
}

/// The index and value of the first maximum of `row` (NaNs ignored; index 0 when there is no
/// number).
fn first_max(row: &[f32]) -> (usize, f32) {
    // A lane-wise maximum the compiler vectorizes, then the first position holding it.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let max = tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    (row.iter().position(|&v| v == max).unwrap_or(0), max)
}

/// The sum of `values` in f64, over four independent lanes (which the compiler vectorizes).
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0f64; 4];
    let chunks = values.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v as f64;
        }
    }
    tail.iter().map(|&v| v as f64).sum::<f64>() + (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// `ln sum_i e^row(i)` and `sum_i e^(row(i) - max)`, in f64, with each `e^(row(i) - max)` left in
/// `scratch`.
fn log_sum_exp(row: &[f32], max: f32, scratch: &mut Vec<f32>) -> (f64, f64) {
    scratch.clear();
    scratch.extend(row.iter().map(|&v| v - max));
    phiquant_quant::exp_inplace(scratch);
    let sum = sum_f64(scratch);
    (max as f64 + sum.ln(), sum)
}

/// `sum_i e(i) * ((base(i) - q(i)) - shift)` over the terms with `e(i) > 0`, in f64 lanes.
fn weighted_log_ratio(e: &[f32], base: &[f32], q: &[f32], shift: f64) -> f64 {
    let term = |e: f32, b: f32, v: f32| {
        if e > 0.0 { e as f64 * ((b as f64 - v as f64) - shift) } else { 0.0 }
    };
    let mut lanes = [0f64; 4];
    let n = e.len() / 4 * 4;
    for ((ec, bc), qc) in
        e[..n].chunks_exact(4).zip(base[..n].chunks_exact(4)).zip(q[..n].chunks_exact(4))
    {
        for i in 0..4 {
            lanes[i] += term(ec[i], bc[i], qc[i]);
        }
    }
    let tail: f64 = (n..e.len()).map(|i| term(e[i], base[i], q[i])).sum();
    tail + (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// Compares one position: `base` and `q` are the two models' logits (one row of the vocabulary
/// each, same length), `target` the correct next token. `scratch` is reused between calls.
///
/// Both rows are log-softmaxed in f64 around their maxima; the divergence sums
/// `p_base(i) * (ln p_base(i) - ln p_q(i))` over the whole vocabulary, each term's log ratio
/// formed as `(base(i) - q(i)) - (lse_base - lse_q)` so that nearly equal distributions do not
/// lose their difference to cancellation.
pub fn compare_token(
    base: &[f32],
    q: &[f32],
    target: usize,
    scratch: &mut Vec<f32>,
) -> TokenComparison {
    debug_assert_eq!(base.len(), q.len());
    debug_assert!(target < base.len());
    let (top_q, max_q) = first_max(q);
    let (lse_q, _) = log_sum_exp(q, max_q, scratch);
    let (top_base, max_base) = first_max(base);
    let (lse_base, sum_base) = log_sum_exp(base, max_base, scratch);
    let kld = weighted_log_ratio(scratch, base, q, lse_base - lse_q) / sum_base;
    let nll_q = lse_q - q[target] as f64;
    let nll_base = lse_base - base[target] as f64;
    TokenComparison {
        nll_q,
        nll_base,
        // A divergence is never negative; rounding can leave it a hair below 0. (A NaN, from
        // logits that are not numbers, stays NaN so that the gates see it.)
        kld: if kld < 0.0 { 0.0 } else { kld },
        p_diff: (-nll_q).exp() - (-nll_base).exp(),
        same_top: top_q == top_base,
    }
}

/// Running sums over scored tokens (llama-perplexity's `kl_divergence_result`), and each token's
/// divergence and probability change for the percentiles. Accumulators of disjoint token sets
/// (one per process) merge into the accumulator of their union.
///
/// A broken artefact can give logits that are not numbers; JSON writes those sums and values as
/// `null`, which read back as NaN.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KldAccumulator {
    #[serde(deserialize_with = "nan_or")]
    sum_nll: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_nll2: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_nll_base: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_nll_base2: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_nll_nll_base: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_kld: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_kld2: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_p_diff: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_p_diff2: f64,
    #[serde(deserialize_with = "nan_or")]
    sum_p_diff4: f64,
    n_same_top: u64,
    count: u64,
    #[serde(deserialize_with = "nans_or")]
    kld_values: Vec<f32>,
    #[serde(deserialize_with = "nans_or")]
    p_diff_values: Vec<f32>,
}

/// A number, or NaN for `null` (how JSON writes a value that is not a number).
fn nan_or<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Numbers, with NaN for each `null`.
fn nans_or<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    Ok(Vec::<Option<f32>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect())
}

impl KldAccumulator {
    /// Adds one token.
    pub fn push(&mut self, t: &TokenComparison) {
        self.sum_nll += t.nll_q;
        self.sum_nll2 += t.nll_q * t.nll_q;
        self.sum_nll_base += t.nll_base;
        self.sum_nll_base2 += t.nll_base * t.nll_base;
        self.sum_nll_nll_base += t.nll_q * t.nll_base;
        self.sum_kld += t.kld;
        self.sum_kld2 += t.kld * t.kld;
        self.sum_p_diff += t.p_diff;
        let p2 = t.p_diff * t.p_diff;
        self.sum_p_diff2 += p2;
        self.sum_p_diff4 += p2 * p2;
        self.n_same_top += u64::from(t.same_top);
        self.count += 1;
        self.kld_values.push(t.kld as f32);
        self.p_diff_values.push(t.p_diff as f32);
    }

    /// Adds every token of `other`.
    pub fn merge(&mut self, other: &KldAccumulator) {
        self.sum_nll += other.sum_nll;
        self.sum_nll2 += other.sum_nll2;
        self.sum_nll_base += other.sum_nll_base;
        self.sum_nll_base2 += other.sum_nll_base2;
        self.sum_nll_nll_base += other.sum_nll_nll_base;
        self.sum_kld += other.sum_kld;
        self.sum_kld2 += other.sum_kld2;
        self.sum_p_diff += other.sum_p_diff;
        self.sum_p_diff2 += other.sum_p_diff2;
        self.sum_p_diff4 += other.sum_p_diff4;
        self.n_same_top += other.n_same_top;
        self.count += other.count;
        self.kld_values.extend_from_slice(&other.kld_values);
        self.p_diff_values.extend_from_slice(&other.p_diff_values);
    }

    /// Tokens added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the value lists agree with the count (a check on a merged or deserialized
    /// accumulator).
    pub(crate) fn is_consistent(&self) -> bool {
        self.kld_values.len() as u64 == self.count && self.p_diff_values.len() as u64 == self.count
    }

    /// The report: llama-perplexity's "Perplexity statistics", "KL divergence statistics" and
    /// "Token probability statistics".
    pub fn summary(&self) -> KldSummary {
        let n = self.count;
        let log_ppl = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let log_ppl_base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let ppl_q = log_ppl.0.exp();
        let ppl_base = log_ppl_base.0.exp();
        let ppl_q = Estimate { value: ppl_q, uncertainty: ppl_q * log_ppl.1 };
        let ppl_base = Estimate { value: ppl_base, uncertainty: ppl_base * log_ppl_base.1 };
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let cor = cov / (log_ppl.1 * log_ppl_base.1);
        let log_ratio = Estimate {
            value: log_ppl.0 - log_ppl_base.0,
            uncertainty: (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * cov)
                .max(0.0)
                .sqrt(),
        };
        let ratio = log_ratio.value.exp();
        let ppl_cov = ppl_q.value * ppl_base.value * cov;
        let ppl_diff = Estimate {
            value: ppl_q.value - ppl_base.value,
            uncertainty: (ppl_q.uncertainty.powi(2) + ppl_base.uncertainty.powi(2) - 2.0 * ppl_cov)
                .max(0.0)
                .sqrt(),
        };

        let mut kld = self.kld_values.clone();
        kld.sort_by(f32::total_cmp);
        let mut p_diff = self.p_diff_values.clone();
        p_diff.sort_by(f32::total_cmp);
        let (kld_mean, kld_err) = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let (p_mean, p_err) = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n);
        let (mse, mse_err) = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.sqrt();
        let same_top = if n == 0 { 0.0 } else { self.n_same_top as f64 / n as f64 };
        let same_top_err =
            if n > 1 { (same_top * (1.0 - same_top) / (n - 1) as f64).sqrt() } else { 0.0 };
        KldSummary {
            tokens: n,
            ppl_q,
            ppl_base,
            log_ppl_correlation: cor.is_finite().then_some(cor),
            log_ppl_ratio: log_ratio,
            ppl_ratio: Estimate { value: ratio, uncertainty: ratio * log_ratio.uncertainty },
            ppl_diff,
            kld: Distribution {
                mean: Estimate { value: kld_mean, uncertainty: kld_err },
                quantiles: quantiles(&kld, &KLD_FRACTIONS),
            },
            p_diff: Distribution {
                mean: Estimate { value: p_mean, uncertainty: p_err },
                quantiles: quantiles(&p_diff, &P_DIFF_FRACTIONS),
            },
            p_diff_rms: Estimate {
                value: rms,
                uncertainty: if rms > 0.0 { 0.5 / rms * mse_err } else { 0.0 },
            },
            same_top: Estimate { value: same_top, uncertainty: same_top_err },
        }
    }
}

/// The fractions llama-perplexity prints for the divergence (maximum first, minimum last; 0.5 is
/// the median).
pub const KLD_FRACTIONS: [f64; 11] =
    [1.0, 0.999, 0.99, 0.95, 0.90, 0.5, 0.10, 0.05, 0.01, 0.001, 0.0];

/// The fractions llama-perplexity prints for Δp (it adds the quartiles).
pub const P_DIFF_FRACTIONS: [f64; 13] =
    [1.0, 0.999, 0.99, 0.95, 0.90, 0.75, 0.5, 0.25, 0.10, 0.05, 0.01, 0.001, 0.0];

fn quantiles(sorted: &[f32], fractions: &[f64]) -> Vec<Quantile> {
    fractions
        .iter()
        .map(|&fraction| {
            let value =
                if fraction == 0.5 { median(sorted) } else { percentile(sorted, fraction as f32) };
            Quantile { fraction, value: value as f64 }
        })
        .collect()
}

/// A value and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its standard error (0 where llama-perplexity gives none: 10 tokens or fewer).
    pub uncertainty: f64,
}

/// The value at one fraction of a sorted distribution (1 the maximum, 0 the minimum, 0.5 the
/// median).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    /// The fraction, 0 to 1.
    pub fraction: f64,
    /// The value there.
    pub value: f64,
}

/// A per-token quantity's mean and quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Mean and its standard error.
    pub mean: Estimate,
    /// Values at [`KLD_FRACTIONS`] or [`P_DIFF_FRACTIONS`], from the maximum down.
    pub quantiles: Vec<Quantile>,
}

impl Distribution {
    /// The value at `fraction`, if it is one of the listed fractions.
    pub fn at(&self, fraction: f64) -> Option<f64> {
        self.quantiles.iter().find(|q| (q.fraction - fraction).abs() < 1e-9).map(|q| q.value)
    }
}

/// llama-perplexity's KL-divergence report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldSummary {
    /// Tokens scored.
    pub tokens: u64,
    /// Mean PPL(Q): the artefact's perplexity.
    pub ppl_q: Estimate,
    /// Mean PPL(base): the baseline's perplexity on the same tokens.
    pub ppl_base: Estimate,
    /// Cor(ln PPL(Q), ln PPL(base)), -1 to 1 (`None` where the errors are 0).
    pub log_ppl_correlation: Option<f64>,
    /// Mean ln(PPL(Q)/PPL(base)).
    pub log_ppl_ratio: Estimate,
    /// PPL(Q)/PPL(base).
    pub ppl_ratio: Estimate,
    /// PPL(Q) - PPL(base).
    pub ppl_diff: Estimate,
    /// KL divergence per token (nats).
    pub kld: Distribution,
    /// Δp = p_Q(correct) - p_base(correct), per token (a probability, not a percentage).
    pub p_diff: Distribution,
    /// RMS Δp.
    pub p_diff_rms: Estimate,
    /// The fraction of tokens whose most likely next token is the same under both models.
    pub same_top: Estimate,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random row of logits.
    fn row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 * scale - scale / 2.0
            })
            .collect()
    }

    /// Log-softmax in f64, directly.
    fn log_softmax(row: &[f32]) -> Vec<f64> {
        let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        row.iter().map(|&v| v as f64 - lse).collect()
    }

    #[test]
    fn one_token_equals_a_direct_computation() {
        let mut scratch = Vec::new();
        for seed in 0..20u64 {
            let base = row(seed, 1000, 12.0);
            let noise = row(seed + 100, 1000, 0.5);
            let q: Vec<f32> = base.iter().zip(&noise).map(|(a, b)| a + b).collect();
            let target = (seed as usize * 37) % 1000;
            let t = compare_token(&base, &q, target, &mut scratch);
            let (lb, lq) = (log_softmax(&base), log_softmax(&q));
            let kld: f64 = lb.iter().zip(&lq).map(|(b, q)| b.exp() * (b - q)).sum();
            assert!((t.kld - kld).abs() <= 1e-6 * kld.max(1e-3), "{seed}: {} vs {kld}", t.kld);
            assert!((t.nll_q + lq[target]).abs() < 1e-5);
            assert!((t.nll_base + lb[target]).abs() < 1e-5);
            let p_diff = lq[target].exp() - lb[target].exp();
            assert!((t.p_diff - p_diff).abs() < 1e-7);
            let argmax = |v: &[f64]| {
                v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
            };
            assert_eq!(t.same_top, argmax(&lb) == argmax(&lq));
        }
        // Logits that are not numbers give a divergence that is not one.
        let mut broken = row(3, 100, 4.0);
        broken[7] = f32::NAN;
        assert!(compare_token(&row(3, 100, 4.0), &broken, 1, &mut scratch).kld.is_nan());
        // Equal rows: no divergence, same top, no change.
        let base = row(7, 500, 20.0);
        let t = compare_token(&base, &base, 3, &mut scratch);
        assert_eq!((t.kld, t.p_diff, t.same_top), (0.0, 0.0, true));
        // A tiny perturbation is not lost to cancellation.
        let mut q = base.clone();
        q[0] += 1e-3;
        let t = compare_token(&base, &q, 3, &mut scratch);
        let kld: f64 =
            log_softmax(&base).iter().zip(log_softmax(&q)).map(|(b, q)| b.exp() * (b - q)).sum();
        assert!((t.kld - kld).abs() < 1e-9 + 0.05 * kld, "{} vs {kld}", t.kld);
    }

    #[test]
    fn summary_equals_a_direct_computation() {
        let mut scratch = Vec::new();
        let mut acc = KldAccumulator::default();
        let mut tokens = Vec::new();
        for seed in 0..300u64 {
            let base = row(seed, 64, 8.0);
            let noise = row(seed + 1000, 64, 2.0);
            let q: Vec<f32> = base.iter().zip(&noise).map(|(a, b)| a + b).collect();
            let t = compare_token(&base, &q, (seed as usize * 7) % 64, &mut scratch);
            acc.push(&t);
            tokens.push(t);
        }
        let s = acc.summary();
        let n = tokens.len() as f64;
        let mean = |f: &dyn Fn(&TokenComparison) -> f64| tokens.iter().map(f).sum::<f64>() / n;
        let sd_of_mean = |f: &dyn Fn(&TokenComparison) -> f64| {
            let m = mean(f);
            (tokens.iter().map(|t| (f(t) - m).powi(2)).sum::<f64>() / n / (n - 1.0)).sqrt()
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert_eq!(s.tokens, 300);
        assert!(close(s.ppl_q.value, mean(&|t| t.nll_q).exp()));
        assert!(close(s.ppl_base.value, mean(&|t| t.nll_base).exp()));
        assert!(close(s.ppl_q.uncertainty, s.ppl_q.value * sd_of_mean(&|t| t.nll_q)));
        assert!(close(s.log_ppl_ratio.value, mean(&|t| t.nll_q - t.nll_base)));
        // The ratio's error is the error of the mean of the per-token differences.
        assert!(close(s.log_ppl_ratio.uncertainty, sd_of_mean(&|t| t.nll_q - t.nll_base)));
        assert!(close(s.ppl_ratio.value, s.ppl_q.value / s.ppl_base.value));
        assert!(close(s.ppl_diff.value, s.ppl_q.value - s.ppl_base.value));
        let (mq, mb) = (mean(&|t| t.nll_q), mean(&|t| t.nll_base));
        let cov: f64 = tokens.iter().map(|t| (t.nll_q - mq) * (t.nll_base - mb)).sum::<f64>() / n;
        let (vq, vb) = (
            tokens.iter().map(|t| (t.nll_q - mq).powi(2)).sum::<f64>() / n,
            tokens.iter().map(|t| (t.nll_base - mb).powi(2)).sum::<f64>() / n,
        );
        let cor = s.log_ppl_correlation.unwrap();
        assert!((cor - cov / (vq * vb).sqrt()).abs() < 1e-9, "{cor}");
        assert!(close(s.kld.mean.value, mean(&|t| t.kld)));
        assert!(close(s.kld.mean.uncertainty, sd_of_mean(&|t| t.kld)));
        let mut sorted: Vec<f64> = tokens.iter().map(|t| t.kld).collect();
        sorted.sort_by(f64::total_cmp);
        assert!((s.kld.at(1.0).unwrap() - sorted[299]).abs() < 1e-6);
        assert!((s.kld.at(0.0).unwrap() - sorted[0]).abs() < 1e-6);
        assert!((s.kld.at(0.5).unwrap() - (sorted[149] + sorted[150]) / 2.0).abs() < 1e-6);
        // Rank 0.99 * 299 = 296.01: between the 297th and 298th values.
        let p99 = 0.99 * sorted[296] + 0.01 * sorted[297];
        assert!((s.kld.at(0.99).unwrap() - p99).abs() < 1e-5 * p99.max(1e-3));
        let rms = mean(&|t| t.p_diff * t.p_diff).sqrt();
        assert!(close(s.p_diff_rms.value, rms));
        assert!(close(s.p_diff.mean.value, mean(&|t| t.p_diff)));
        let same = tokens.iter().filter(|t| t.same_top).count() as f64 / n;
        assert!(close(s.same_top.value, same));
        assert!(close(s.same_top.uncertainty, (same * (1.0 - same) / (n - 1.0)).sqrt()));
        assert_eq!(s.p_diff.quantiles.len(), P_DIFF_FRACTIONS.len());
    }

    #[test]
    fn merged_accumulators_equal_one() {
        let mut scratch = Vec::new();
        let mut all = KldAccumulator::default();
        let mut a = KldAccumulator::default();
        let mut b = KldAccumulator::default();
        for seed in 0..50u64 {
            let base = row(seed, 32, 6.0);
            let q = row(seed + 7, 32, 6.0);
            let t = compare_token(&base, &q, 1, &mut scratch);
            all.push(&t);
            if seed % 2 == 0 { a.push(&t) } else { b.push(&t) }
        }
        a.merge(&b);
        let (x, y) = (all.summary(), a.summary());
        assert!((x.kld.mean.value - y.kld.mean.value).abs() < 1e-12);
        assert_eq!(x.kld.quantiles, y.kld.quantiles);
        assert_eq!(x.same_top, y.same_top);
        assert!(a.is_consistent());
    }
}
