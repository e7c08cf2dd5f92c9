//! Runtime selection of the widest instruction set for the hot kernels.
//!
//! The kernels are written once, as plain Rust in their format's file, and compiled a second time
//! inside a function with wider target features (AVX2 on x86-64) so that the compiler vectorizes
//! them for those registers. The choice is made once per process and cached as a function
//! pointer. Fused multiply-add is never enabled: the references round every product separately,
//! and so must we to produce the same bytes.

use std::sync::OnceLock;

use crate::nbits::NBitsScheme;

#[cfg(target_arch = "x86_64")]
mod x86_64;

/// A row kernel of `MatMulNBits` quantization: scheme, widened row, codes, scales, zero points.
pub(crate) type NBitsRowFn = fn(&NBitsScheme, &[f32], &mut [u8], &mut [u8], &mut [u8]);

/// An in-place slice kernel (`exp`).
pub(crate) type SliceFn = fn(&mut [f32]);

/// The fastest `exp` slice kernel this CPU runs.
pub(crate) fn exp_kernel() -> SliceFn {
    static KERNEL: OnceLock<SliceFn> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86_64::exp_kernel() {
            return k;
        }
        crate::exp::exp_slice
    })
}

/// The fastest `MatMulNBits` row kernel this CPU runs.
pub(crate) fn nbits_row_kernel() -> NBitsRowFn {
    static KERNEL: OnceLock<NBitsRowFn> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86_64::nbits_row_kernel() {
            return k;
        }
        crate::nbits::row_kernel
    })
}

/// `out = x · w` for row-major `x` (`t x k`) and `out` (`t x n`), with `w` row-major `k x n`
/// when `w_is_k_by_n`, else row-major `n x k` (`out[t, n] = sum_k x[t, k] * w[n, k]`), through
/// the `gemm` crate's kernels on the current rayon pool. Each output element is reduced by one
/// thread in a fixed order, so results do not depend on the thread count.
pub(crate) fn gemm(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    n: usize,
    w_is_k_by_n: bool,
    out: &mut [f32],
) {
    assert!(x.len() >= t * k && w.len() >= n * k && out.len() >= t * n, "gemm: buffers too small");
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && t * n * k >= 1 << 16 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Element (kk, nn) of the right-hand side: at w[kk * n + nn] (column stride 1, row stride n)
    // or at w[nn * k + kk] (column stride k, row stride 1).
    let (rhs_cs, rhs_rs) = if w_is_k_by_n { (1, n as isize) } else { (k as isize, 1) };
    // SAFETY: the assertion above guarantees every index the strides reach is inside its buffer:
    // dst rows of `n` (row stride n, column stride 1) for `t` rows; lhs rows of `k` for `t` rows;
    // rhs `k x n` with the strides above, every element inside `w[..n * k]`. `out` does not
    // alias the inputs (it is a distinct &mut borrow).
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbits::ScaleType;

    /// The selected (SIMD) kernel against the portable one on random and edge-case rows.
    #[test]
    fn selected_kernel_equals_scalar() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut rows: Vec<Vec<f32>> =
            (0..20).map(|i| (0..(64 * (i % 5) + 100)).map(|_| next() * 0.05).collect()).collect();
        rows.push(vec![0.0; 96]);
        rows.push(vec![1e-40; 96]);
        rows.push((0..96).map(|i| (i as f32 - 48.0) * 0.25).collect());
        for bits in [4, 8] {
            for bs in [16, 32, 128] {
                for sym in [true, false] {
                    let s = NBitsScheme::new(bits, bs, sym, ScaleType::F32).unwrap();
                    for x in &rows {
                        let kb = x.len().div_ceil(bs);
                        let mut a =
                            (vec![0u8; kb * s.blob_bytes()], vec![0u8; kb * 4], vec![0u8; kb]);
                        let mut b = a.clone();
                        nbits_row_kernel()(&s, x, &mut a.0, &mut a.1, &mut a.2);
                        crate::nbits::row_kernel(&s, x, &mut b.0, &mut b.1, &mut b.2);
                        assert_eq!(a, b, "bits {bits} block {bs} symmetric {sym} len {}", x.len());
                    }
                }
            }
        }
    }
}
