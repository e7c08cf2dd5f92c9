//! x86-64 AVX2 kernels. Each computes exactly what its portable twin computes (no fused
//! multiply-add, the same comparisons in the same lanes), only eight lanes at a time.

use std::arch::x86_64::*;

use super::{NBitsRowFn, SliceFn};
use crate::nbits::{NBitsScheme, params_from_range, quantize_block, store_params};

/// The AVX2 `MatMulNBits` row kernel, when the CPU has AVX2.
pub(super) fn nbits_row_kernel() -> Option<NBitsRowFn> {
    std::is_x86_feature_detected!("avx2").then_some(nbits_row_avx2_entry as NBitsRowFn)
}

fn nbits_row_avx2_entry(
    s: &NBitsScheme,
    x: &[f32],
    b: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    // SAFETY: this entry point is handed out only after `is_x86_feature_detected!("avx2")`.
    unsafe { nbits_row_avx2(s, x, b, scales, zps) }
}

/// Full blocks whose size is a multiple of 32 go through AVX2; shorter or partial blocks through
/// the portable [`quantize_block`].
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn nbits_row_avx2(
    s: &NBitsScheme,
    x: &[f32],
    b: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    let bs = s.block_size();
    let mut codes = [0u8; 256];
    for (i, (xs, dst)) in x.chunks(bs).zip(b.chunks_exact_mut(s.blob_bytes())).enumerate() {
        if xs.len() == bs && bs.is_multiple_of(32) {
            // SAFETY: AVX2 is enabled for this function; `xs` holds `bs` values and `dst` the
            // block's `bs * bits / 8` bytes.
            unsafe { block_avx2(s, i, xs, dst, scales, zps) };
        } else {
            quantize_block(s, i, xs, &mut codes[..bs], dst, scales, zps);
        }
    }
}

/// # Safety
/// AVX2 must be available; `xs.len()` is a multiple of 32 and `dst.len() == xs.len() * bits / 8`.
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(
    s: &NBitsScheme,
    i: usize,
    xs: &[f32],
    dst: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    debug_assert!(xs.len().is_multiple_of(32) && dst.len() == xs.len() * s.bits() as usize / 8);
    let p = xs.as_ptr();
    // Lane-wise min and max: `minps(v, lo)` is `v < lo ? v : lo`, the portable lanes' test.
    let mut lo = _mm256_set1_ps(f32::MAX);
    let mut hi = _mm256_set1_ps(-f32::MAX);
    for c in 0..xs.len() / 8 {
        // SAFETY: c * 8 + 8 <= xs.len().
        let v = unsafe { _mm256_loadu_ps(p.add(8 * c)) };
        lo = _mm256_min_ps(v, lo);
        hi = _mm256_max_ps(v, hi);
    }
    let (mut los, mut his) = ([0f32; 8], [0f32; 8]);
    // SAFETY: both arrays hold 8 floats.
    unsafe {
        _mm256_storeu_ps(los.as_mut_ptr(), lo);
        _mm256_storeu_ps(his.as_mut_ptr(), hi);
    }
    let (mut min, mut max) = (los[0], his[0]);
    for l in 1..8 {
        if los[l] < min {
            min = los[l];
        }
        if his[l] > max {
            max = his[l];
        }
    }
    let (scale, r, zp) = params_from_range(s, min, max);
    store_params(s, i, scale, zp, scales, zps);

    let rv = _mm256_set1_ps(r);
    let zv = _mm256_set1_ps(zp as f32);
    let maxc = _mm256_set1_ps(s.max_code());
    let zero = _mm256_setzero_ps();
    let half = _mm256_set1_ps(0.5);
    // roundf(v * r + zp) clamped, exactly as `nbits::code`: max(x, 0) maps NaN to 0.
    let code = |v: __m256| -> __m256i {
        let x = _mm256_add_ps(_mm256_mul_ps(v, rv), zv);
        let c = _mm256_min_ps(_mm256_max_ps(x, zero), maxc);
        let t = _mm256_cvttps_epi32(c);
        let frac = _mm256_sub_ps(c, _mm256_cvtepi32_ps(t));
        let ge = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half));
        _mm256_sub_epi32(t, ge)
    };
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let low_byte = _mm256_set1_epi16(0x00ff);
    let d = dst.as_mut_ptr();
    for g in 0..xs.len() / 32 {
        // SAFETY: the four loads stay within the 32 values of group g.
        let (a, b, c, e) = unsafe {
            let q = p.add(32 * g);
            (
                _mm256_loadu_ps(q),
                _mm256_loadu_ps(q.add(8)),
                _mm256_loadu_ps(q.add(16)),
                _mm256_loadu_ps(q.add(24)),
            )
        };
        let ab = _mm256_packs_epi32(code(a), code(b));
        let ce = _mm256_packs_epi32(code(c), code(e));
        // 32 codes as bytes, back in element order.
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, ce), order);
        if s.bits() == 8 {
            // SAFETY: group g owns dst[32g..32g+32].
            unsafe { _mm256_storeu_si256(d.add(32 * g).cast(), bytes) };
        } else {
            // Byte pairs (c0, c1) in each 16-bit lane become c0 | c1 << 4.
            let nib =
                _mm256_and_si256(_mm256_or_si256(bytes, _mm256_srli_epi16::<4>(bytes)), low_byte);
            let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(nib, nib));
            // SAFETY: group g owns dst[16g..16g+16].
            unsafe { _mm_storeu_si128(d.add(16 * g).cast(), _mm256_castsi256_si128(packed)) };
        }
    }
}

/// The AVX2 build of [`crate::exp::exp_slice`], when the CPU has AVX2.
pub(super) fn exp_kernel() -> Option<SliceFn> {
    std::is_x86_feature_detected!("avx2").then_some(exp_avx2_entry as SliceFn)
}

fn exp_avx2_entry(x: &mut [f32]) {
    // SAFETY: handed out only after `is_x86_feature_detected!("avx2")`.
    unsafe { exp_avx2(x) }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn exp_avx2(x: &mut [f32]) {
    crate::exp::exp_slice(x)
}
