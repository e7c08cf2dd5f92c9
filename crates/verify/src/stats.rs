//! The summary statistics of llama.cpp's KL-divergence report, as `tools/perplexity/perplexity.cpp`
//! defines them (ggml-org/llama.cpp@050fc7f, `kl_divergence`): a mean and its standard error from
//! running sums, a covariance from running sums, and percentiles by linear interpolation between
//! the sorted values.

/// The mean of `count` values whose sum is `sum` and sum of squares `sum2`, and the standard
/// error of that mean, `sqrt(var / (count - 1))`. As llama-perplexity: the error is 0 when the
/// variance is not positive or there are at most 10 values, and both are 0 for no values.
pub(crate) fn mean_and_uncertainty(sum: f64, sum2: f64, count: u64) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let mean = sum / n;
    let var = sum2 / n - mean * mean;
    let err = if var > 0.0 && count > 10 { (var / (n - 1.0)).sqrt() } else { 0.0 };
    (mean, err)
}

/// The covariance of the means of two series from their sums and the sum of their products,
/// divided by `count - 1` (the covariance of the two means' estimates); 0 below 10 values.
pub(crate) fn covariance(sum_a: f64, sum_b: f64, sum_ab: f64, count: u64) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1.0)
}

/// The value at `fraction` of the sorted `values`, interpolated linearly between the two nearest
/// ranks (rank `fraction * (len - 1)`); the first value at or below 0, the last at or above 1,
/// and 0 for no values. The rank is computed in f32, as llama-perplexity computes it.
pub(crate) fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else { return 0.0 };
    if fraction <= 0.0 {
        return first;
    }
    if fraction >= 1.0 {
        return last;
    }
    let p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    let frac = p - ip as f32;
    (1.0 - frac) * sorted[ip] + frac * sorted[(ip + 1).min(sorted.len() - 1)]
}

/// The median of the sorted `values`: the middle value, or the mean of the middle two; 0 for no
/// values.
pub(crate) fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n.is_multiple_of(2) => 0.5 * (sorted[n / 2] + sorted[n / 2 - 1]),
        _ => sorted[n / 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_error_match_the_textbook_formulas() {
        let xs: Vec<f64> = (0..40).map(|i| (i as f64 * 0.7).sin() + 2.0).collect();
        let n = xs.len() as f64;
        let (sum, sum2) = (xs.iter().sum::<f64>(), xs.iter().map(|x| x * x).sum::<f64>());
        let (mean, err) = mean_and_uncertainty(sum, sum2, xs.len() as u64);
        let want_mean = sum / n;
        // The population variance over n - 1: the sample variance of the mean's estimate.
        let var = xs.iter().map(|x| (x - want_mean).powi(2)).sum::<f64>() / n;
        assert!((mean - want_mean).abs() < 1e-12);
        assert!((err - (var / (n - 1.0)).sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_uncertainty(5.0, 25.0, 1), (5.0, 0.0));
        assert_eq!(mean_and_uncertainty(0.0, 0.0, 0), (0.0, 0.0));
        assert_eq!(mean_and_uncertainty(10.0, 10.0, 10).1, 0.0);
    }

    #[test]
    fn covariance_of_a_series_with_itself_is_its_squared_error() {
        let xs: Vec<f64> = (0..25).map(|i| (i as f64).sqrt()).collect();
        let (sum, sum2) = (xs.iter().sum::<f64>(), xs.iter().map(|x| x * x).sum::<f64>());
        let (_, err) = mean_and_uncertainty(sum, sum2, 25);
        assert!((covariance(sum, sum, sum2, 25) - err * err).abs() < 1e-12);
        assert_eq!(covariance(1.0, 1.0, 1.0, 9), 0.0);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [0.0f32, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 0.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(percentile(&v, 0.5), 2.0);
        assert!((percentile(&v, 0.9) - 3.6).abs() < 1e-6);
        assert!((percentile(&v, 0.999) - 3.996).abs() < 1e-5);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(median(&v), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 8.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }
}
