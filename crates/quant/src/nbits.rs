//! Blockwise round-to-nearest quantization in ONNX Runtime's `MatMulNBits` layout, bit-exact with
//! ONNX Runtime's default quantizer (microsoft/onnxruntime `onnxruntime/core/mlas/lib/q4_dq.cpp`,
//! `BlockwiseQuantizer::quantizeAndTranspose`, reached from Python through
//! `quantize_matmul_4bits` / `quantize_matmul_8bits`; the layout is the contrib op spec's).
//!
//! For each output row `n` and each block of `block_size` input features:
//! - symmetric: `m` is the block's signed value of largest magnitude (`min` on a tie),
//!   `scale = -m / 2^(bits-1)`, zero point `2^(bits-1)`;
//! - asymmetric: `min <= 0 <= max` widened to include zero, `scale = (max - min) / (2^bits - 1)`,
//!   `zp = roundf(-min / scale)` clamped;
//! - `q = clamp(roundf(v * (1 / stored_scale) + zp), 0, 2^bits - 1)`, where `stored_scale` is the
//!   scale after conversion to the scale type (f16 for fp16 models, whose weights are cast to f16
//!   first).
//!
//! `roundf` rounds halves away from zero (not to even); that choice changes about 0.14 % of codes
//! on bf16 weights, so it is kept exactly.

use rayon::prelude::*;

use crate::{BlockLayout, Error, Matrix, elements::round_to_f16};

/// The stored type of the scales (the model's activation type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleType {
    /// f32 scales, for fp32-I/O models.
    F32,
    /// f16 scales, for fp16-I/O models; the weights are cast to f16 before quantization.
    F16,
}

impl ScaleType {
    /// Bytes per scale.
    pub const fn size(self) -> usize {
        match self {
            ScaleType::F32 => 4,
            ScaleType::F16 => 2,
        }
    }
}

/// A `MatMulNBits` quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NBitsScheme {
    bits: u8,
    block_size: usize,
    symmetric: bool,
    scale_type: ScaleType,
}

impl NBitsScheme {
    /// A scheme of `bits` (4 or 8) in blocks of `block_size` (a power of two, 16 to 256 as phiquant
    /// offers; `MatMulNBits` accepts any power of two of at least 16).
    pub fn new(
        bits: u8,
        block_size: usize,
        symmetric: bool,
        scale_type: ScaleType,
    ) -> Result<Self, Error> {
        if bits != 4 && bits != 8 {
            return Err(Error::InvalidBits { bits });
        }
        BlockLayout::new(block_size, block_size)?;
        Ok(NBitsScheme { bits, block_size, symmetric, scale_type })
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Elements per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Whether zero points are implicit (`2^(bits-1)`).
    pub fn symmetric(&self) -> bool {
        self.symmetric
    }

    /// The scale type.
    pub fn scale_type(&self) -> ScaleType {
        self.scale_type
    }

    pub(crate) fn max_code(&self) -> f32 {
        ((1u32 << self.bits) - 1) as f32
    }

    fn mid(&self) -> u8 {
        1u8 << (self.bits - 1)
    }

    /// Bytes of one block's codes.
    pub fn blob_bytes(&self) -> usize {
        self.block_size * self.bits as usize / 8
    }
}

/// A weight matrix quantized for `MatMulNBits`: `b` is `[N, k_blocks, blob]`, `scales` is
/// `[N, k_blocks]` in the scale type (little-endian bytes), and `zero_points` (asymmetric only) is
/// `[N, ceil(k_blocks * bits / 8)]` packed as the op expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NBitsTensor {
    /// Output features (rows of the Hugging Face weight).
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// The scheme.
    pub scheme: NBitsScheme,
    /// Packed codes.
    pub b: Vec<u8>,
    /// Scales, raw bytes.
    pub scales: Vec<u8>,
    /// Packed zero points, for asymmetric schemes.
    pub zero_points: Option<Vec<u8>>,
}

impl NBitsTensor {
    /// Blocks per row.
    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(self.scheme.block_size)
    }

    /// Bytes of zero points per row.
    fn zp_row_bytes(scheme: &NBitsScheme, k_blocks: usize) -> usize {
        (k_blocks * scheme.bits as usize).div_ceil(8)
    }

    fn scale(&self, i: usize) -> f32 {
        match self.scheme.scale_type {
            ScaleType::F32 => {
                f32::from_le_bytes(self.scales[4 * i..4 * i + 4].try_into().expect("4 bytes"))
            }
            ScaleType::F16 => {
                half::f16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]]).to_f32()
            }
        }
    }

    fn zero_point(&self, row: usize, block: usize) -> u8 {
        match &self.zero_points {
            None => self.scheme.mid(),
            Some(zp) => {
                let base = row * Self::zp_row_bytes(&self.scheme, self.k_blocks());
                if self.scheme.bits == 8 {
                    zp[base + block]
                } else {
                    (zp[base + block / 2] >> (4 * (block % 2))) & 0x0f
                }
            }
        }
    }

    /// `(q - zp) * scale` for every element, into `out` (`n * k`, row-major as the Hugging Face
    /// weight).
    pub fn dequantize(&self, out: &mut [f32]) -> Result<(), Error> {
        if out.len() != self.n * self.k {
            return Err(Error::LengthMismatch {
                what: "dequantized output",
                actual: out.len(),
                expected: self.n * self.k,
            });
        }
        let kb = self.k_blocks();
        let blob = self.scheme.blob_bytes();
        for (r, row) in out.chunks_exact_mut(self.k).enumerate() {
            for (i, v) in row.iter_mut().enumerate() {
                let block = i / self.scheme.block_size;
                let j = i % self.scheme.block_size;
                let byte = self.b[(r * kb + block) * blob + j * self.scheme.bits as usize / 8];
                let q = if self.scheme.bits == 8 { byte } else { (byte >> (4 * (j % 2))) & 0x0f };
                *v = (q as i32 - self.zero_point(r, block) as i32) as f32
                    * self.scale(r * kb + block);
            }
        }
        Ok(())
    }
}

/// `roundf(x)` clamped to `0..=max`, as MLAS computes it; NaN (from an infinite reciprocal of a
/// subnormal scale) becomes 0, as the float-to-integer conversion produces on x86.
#[inline(always)]
fn code(x: f32, max: f32) -> u8 {
    // f32::max returns the non-NaN operand: NaN -> 0, +inf -> max, -inf -> 0.
    let c = x.max(0.0).min(max);
    // Exact roundf on [0, 255]: truncate, then add one when the fraction is at least one half
    // (adding 0.5 and truncating would round 0.49999997 up).
    let t = c as i32;
    (t + ((c - t as f32) >= 0.5) as i32) as u8
}

/// The block's minimum and maximum, scanned in eight independent lanes so that the compiler can
/// keep them in vector registers. For finite inputs the result equals a sequential scan's,
/// including the sign of a zero extreme in an all-zero block (lane 0 holds the first element).
#[inline(always)]
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut lo = [f32::MAX; 8];
    let mut hi = [-f32::MAX; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        lo[l] = if v < lo[l] { v } else { lo[l] };
        hi[l] = if v > hi[l] { v } else { hi[l] };
    }
    let (mut min, mut max) = (lo[0], hi[0]);
    for l in 1..8 {
        if lo[l] < min {
            min = lo[l];
        }
        if hi[l] > max {
            max = hi[l];
        }
    }
    (min, max)
}

/// Per-block quantization parameters from the block's range: (stored scale as f32, reciprocal,
/// zero point).
#[inline(always)]
pub(crate) fn params_from_range(s: &NBitsScheme, min: f32, max: f32) -> (f32, f32, u8) {
    let store = |v: f32| match s.scale_type {
        ScaleType::F32 => v,
        ScaleType::F16 => round_to_f16(v),
    };
    let (scale, zp) = if s.symmetric {
        let m = if max.abs() > min.abs() { max } else { min };
        (store(-m / s.mid() as f32), s.mid())
    } else {
        let min = if 0.0 < min { 0.0 } else { min };
        let max = if max < 0.0 { 0.0 } else { max };
        let scale_f = (max - min) / s.max_code();
        let zp_fp = if scale_f != 0.0 { 0.0 - min / scale_f } else { min };
        let zp = if zp_fp < 0.0 {
            0
        } else if zp_fp > s.max_code() {
            s.max_code() as u8
        } else {
            zp_fp.round() as u8
        };
        (store(scale_f), zp)
    };
    let reciprocal = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    (scale, reciprocal, zp)
}

/// Stores block `i`'s scale and (asymmetric) zero point.
#[inline(always)]
pub(crate) fn store_params(
    s: &NBitsScheme,
    i: usize,
    scale: f32,
    zp: u8,
    scales: &mut [u8],
    zps: &mut [u8],
) {
    match s.scale_type {
        ScaleType::F32 => scales[4 * i..4 * i + 4].copy_from_slice(&scale.to_le_bytes()),
        ScaleType::F16 => {
            scales[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes())
        }
    }
    if !s.symmetric {
        if s.bits == 8 {
            zps[i] = zp;
        } else {
            zps[i / 2] |= zp << (4 * (i % 2));
        }
    }
}

/// Quantizes one block: stores its scale and zero point and writes its packed codes.
#[inline(always)]
pub(crate) fn quantize_block(
    s: &NBitsScheme,
    i: usize,
    xs: &[f32],
    codes: &mut [u8],
    dst: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    let (min, max) = min_max(xs);
    let (scale, r, zp) = params_from_range(s, min, max);
    store_params(s, i, scale, zp, scales, zps);
    let max = s.max_code();
    let zpf = zp as f32;
    for (q, &v) in codes.iter_mut().zip(xs) {
        *q = code(v * r + zpf, max);
    }
    // Padding after K gets code 0, as ONNX Runtime leaves it.
    codes[xs.len()..].fill(0);
    if s.bits == 8 {
        dst.copy_from_slice(codes);
    } else {
        for (q, pair) in dst.iter_mut().zip(codes.chunks_exact(2)) {
            *q = pair[0] | (pair[1] << 4);
        }
    }
}

/// Quantizes one row into its codes, scales and zero points (`zps` is ignored for symmetric
/// schemes).
#[inline(always)]
fn quantize_row(s: &NBitsScheme, x: &[f32], b: &mut [u8], scales: &mut [u8], zps: &mut [u8]) {
    let mut codes = [0u8; 256];
    let codes = &mut codes[..s.block_size];
    for (i, (xs, dst)) in x.chunks(s.block_size).zip(b.chunks_exact_mut(s.blob_bytes())).enumerate()
    {
        quantize_block(s, i, xs, codes, dst, scales, zps);
    }
}

/// Quantizes `m` (`[N, K]`, the Hugging Face layout: one row per output feature) for
/// `MatMulNBits`, in parallel over rows; the bytes are the same for any number of threads.
/// Codes of the padding after `K` are zero.
pub fn quantize_nbits(m: &Matrix<'_>, scheme: &NBitsScheme) -> Result<NBitsTensor, Error> {
    let (n, k) = (m.rows(), m.cols());
    let kb = BlockLayout::new(k, scheme.block_size)?.blocks();
    let b_row = kb * scheme.blob_bytes();
    let s_row = kb * scheme.scale_type.size();
    let z_row = NBitsTensor::zp_row_bytes(scheme, kb);
    let mut b = vec![0u8; n * b_row];
    let mut scales = vec![0u8; n * s_row];
    // Symmetric schemes store no zero points; the buffer still gives every row a slice to ignore.
    let mut zps = vec![0u8; n * z_row];
    if !scheme.symmetric && scheme.bits == 4 && kb % 2 == 1 {
        // With an odd number of blocks the last byte's high nibble belongs to no block; ONNX
        // Runtime fills it with the default zero point 8.
        for row in zps.chunks_exact_mut(z_row) {
            row[z_row - 1] = 8 << 4;
        }
    }
    let kernel = crate::simd::nbits_row_kernel();
    b.par_chunks_mut(b_row)
        .zip(scales.par_chunks_mut(s_row))
        .zip(zps.par_chunks_mut(z_row))
        .enumerate()
        .try_for_each_init(
            || vec![0f32; k],
            |buf, (r, ((bq, sq), zq))| -> Result<(), Error> {
                // f32 weights are read in place; others are widened (and cast to f16 for f16
                // scales) into the thread's buffer.
                let row = match (scheme.scale_type, m.row_f32(r)) {
                    (ScaleType::F32, Some(row)) => row?,
                    _ => {
                        m.read_row(r, buf)?;
                        if scheme.scale_type == ScaleType::F16 {
                            for v in buf.iter_mut() {
                                *v = round_to_f16(*v);
                            }
                        }
                        &buf[..]
                    }
                };
                kernel(scheme, row, bq, sq, zq);
                Ok(())
            },
        )?;
    Ok(NBitsTensor {
        n,
        k,
        scheme: *scheme,
        b,
        scales,
        zero_points: (!scheme.symmetric).then_some(zps),
    })
}

impl NBitsScheme {
    /// Quantizes one block and writes back its dequantized values `(q - zp) * scale`: what
    /// [`quantize_nbits`] followed by [`NBitsTensor::dequantize`] gives for these elements, the
    /// cast to f16 of f16-scale schemes included. `xs` holds at most one block; a shorter slice is
    /// the last block of a row whose length is not a multiple of the block (`MatMulNBits` pads it
    /// with zeros, which change neither its range nor its codes). `out` has `xs.len()` values.
    pub fn fake_quantize_block(&self, xs: &[f32], out: &mut [f32]) {
        debug_assert!(xs.len() <= self.block_size && out.len() == xs.len());
        let mut stack = [0f32; 256];
        let mut heap = Vec::new();
        let xs = match self.scale_type {
            ScaleType::F32 => xs,
            ScaleType::F16 => {
                let cast = if xs.len() <= stack.len() {
                    &mut stack[..xs.len()]
                } else {
                    heap.resize(xs.len(), 0f32);
                    &mut heap[..]
                };
                for (c, &v) in cast.iter_mut().zip(xs) {
                    *c = round_to_f16(v);
                }
                &*cast
            }
        };
        let (min, max) = min_max(xs);
        let (scale, r, zp) = params_from_range(self, min, max);
        let (max_code, zpf, zpi) = (self.max_code(), zp as f32, zp as i32);
        for (o, &v) in out.iter_mut().zip(xs) {
            *o = (code(v * r + zpf, max_code) as i32 - zpi) as f32 * scale;
        }
    }
}

/// The scalar row kernel (the SIMD builds compile this same code for wider registers).
#[inline(always)]
pub(crate) fn row_kernel(
    s: &NBitsScheme,
    x: &[f32],
    b: &mut [u8],
    scales: &mut [u8],
    zps: &mut [u8],
) {
    quantize_row(s, x, b, scales, zps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantize(x: &[f32], n: usize, k: usize, bits: u8, bs: usize, sym: bool) -> NBitsTensor {
        let m = Matrix::from_f32(x, n, k).unwrap();
        quantize_nbits(&m, &NBitsScheme::new(bits, bs, sym, ScaleType::F32).unwrap()).unwrap()
    }

    #[test]
    fn symmetric_int4_matches_the_formula() {
        // One block of 16: absmax -2.0 gives scale 0.25, codes v/0.25 + 8.
        let x: Vec<f32> = (0..16).map(|i| -2.0 + 0.25 * i as f32).collect();
        let t = quantize(&x, 1, 16, 4, 16, true);
        assert_eq!(f32::from_le_bytes(t.scales[..4].try_into().unwrap()), 0.25);
        assert_eq!(t.b[0], 1 << 4); // codes 0 and 1
        assert_eq!(t.b[7], 14 | (15 << 4));
        assert!(t.zero_points.is_none());
        let mut y = vec![0f32; 16];
        t.dequantize(&mut y).unwrap();
        assert_eq!(y, x);
    }

    #[test]
    fn padding_and_asymmetric_zero_points() {
        // K = 40 with blocks of 16: three blocks, the last one 8 long and zero-padded.
        let x: Vec<f32> = (0..80).map(|i| ((i * 37 % 23) as f32 - 5.0) * 0.1).collect();
        let t = quantize(&x, 2, 40, 4, 16, false);
        assert_eq!(t.k_blocks(), 3);
        assert_eq!(t.b.len(), 2 * 3 * 8);
        assert_eq!(t.zero_points.as_ref().unwrap().len(), 2 * 2);
        assert!(t.b[2 * 8 + 4..3 * 8].iter().all(|&q| q == 0), "padding codes are zero");
        let mut y = vec![0f32; 80];
        t.dequantize(&mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 0.1, "{a} vs {b}");
        }
    }

    #[test]
    fn roundf_halves_go_away_from_zero() {
        assert_eq!(code(0.5, 15.0), 1);
        assert_eq!(code(0.49999997, 15.0), 0);
        assert_eq!(code(2.5, 15.0), 3);
        assert_eq!(code(14.5, 15.0), 15);
        assert_eq!(code(-0.4, 15.0), 0);
        assert_eq!(code(f32::NAN, 15.0), 0);
        assert_eq!(code(f32::INFINITY, 15.0), 15);
        assert_eq!(code(254.5, 255.0), 255);
    }

    #[test]
    fn all_zero_blocks_have_zero_scale() {
        // -max/8 with max = 0 is -0.0, as in MLAS: numerically zero, never NaN.
        let t = quantize(&[0.0; 64], 1, 64, 4, 32, true);
        assert!((0..2).all(|i| t.scale(i) == 0.0));
        assert!(t.b.iter().all(|&q| q == 0x88));
        let t = quantize(&[0.0; 64], 1, 64, 4, 32, false);
        assert!(t.scales.iter().all(|&b| b == 0));
    }

    #[test]
    fn fake_quantization_equals_quantize_then_dequantize() {
        // Random rows with a short last block, both symmetries, both scale types; the f16 cast
        // of f16-scale schemes included.
        let (n, k) = (7, 200);
        let x: Vec<f32> =
            (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.37) * 0.11).collect();
        for bs in [16, 32, 64, 128, 256] {
            for sym in [true, false] {
                for st in [ScaleType::F32, ScaleType::F16] {
                    let s = NBitsScheme::new(4, bs, sym, st).unwrap();
                    let m = Matrix::from_f32(&x, n, k).unwrap();
                    let mut want = vec![0f32; n * k];
                    quantize_nbits(&m, &s).unwrap().dequantize(&mut want).unwrap();
                    let mut got = vec![0f32; n * k];
                    for (row, out) in x.chunks_exact(k).zip(got.chunks_exact_mut(k)) {
                        for (xs, o) in row.chunks(bs).zip(out.chunks_mut(bs)) {
                            s.fake_quantize_block(xs, o);
                        }
                    }
                    assert_eq!(got, want, "block {bs} symmetric {sym} {st:?}");
                }
            }
        }
    }

    #[test]
    fn non_finite_weights_name_the_row() {
        let mut x = vec![0.5f32; 64];
        x[40] = f32::NAN;
        let m = Matrix::from_f32(&x, 2, 32).unwrap();
        let err = quantize_nbits(&m, &NBitsScheme::new(4, 32, true, ScaleType::F32).unwrap())
            .unwrap_err();
        assert_eq!(err.to_string(), "row 1, column 8 holds NaN: weights must be finite");
    }
}
