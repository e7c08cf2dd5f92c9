//! Dense f32 linear algebra for the native engine.

use crate::Error;

/// `out = x · wᵀ`: `x` is `t x k`, `w` is `n x k` (a weight in the Hugging Face layout, one row
/// per output feature), `out` is `t x n`; all row-major.
pub fn matmul_xwt(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    matmul(x, t, k, w, n, false, out)
}

/// The lengths checked, then `out = x · w` (`w` row-major `k x n` when `w_is_k_by_n`) or
/// `x · wᵀ` (`w` row-major `n x k`). For a symmetric `w` the first reads a column block of `w`
/// as the row block it equals.
pub(crate) fn matmul(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    n: usize,
    w_is_k_by_n: bool,
    out: &mut [f32],
) -> Result<(), Error> {
    for (what, len, expected) in
        [("x", x.len(), t * k), ("w", w.len(), n * k), ("out", out.len(), t * n)]
    {
        if len != expected {
            return Err(Error::LengthMismatch { what, actual: len, expected });
        }
    }
    if t == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    crate::simd::gemm(x, t, k, w, n, w_is_k_by_n, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product() {
        let (t, k, n) = (5, 37, 11);
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.05).collect();
        let mut out = vec![0f32; t * n];
        matmul_xwt(&x, t, k, &w, n, &mut out).unwrap();
        for r in 0..t {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                assert!((out[r * n + c] - want).abs() < 1e-4, "{r},{c}");
            }
        }
        assert!(matmul_xwt(&x, t, k, &w, n + 1, &mut out).is_err());
        // The same product with `w` stored transposed (`k x n`).
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let mut out2 = vec![0f32; t * n];
        matmul(&x, t, k, &wt, n, true, &mut out2).unwrap();
        for (i, (a, b)) in out.iter().zip(&out2).enumerate() {
            assert!((a - b).abs() < 1e-4, "{i}: {a} vs {b}");
        }
        assert!(matmul(&x, t, k, &wt, n + 1, true, &mut out2).is_err());
    }
}

/// `sum(a[i] * b[i])` with eight independent partial sums (so the compiler keeps them in vector
/// lanes), combined pairwise at the end. The order is fixed, so the result is deterministic.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ta.iter().zip(tb).enumerate() {
        acc[l] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(test)]
mod dot_tests {
    use super::dot;

    #[test]
    fn dot_matches_a_plain_sum() {
        for n in [0, 1, 7, 8, 9, 64, 100] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want).abs() <= 1e-3 * want.abs().max(1.0), "{n}");
        }
    }
}
