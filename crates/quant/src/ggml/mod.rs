//! llama.cpp's block formats, bit-exact with its reference quantizers
//! (ggml-org/llama.cpp `ggml/src/ggml-quants.c`, the `quantize_row_*_ref` and
//! `dequantize_row_*` functions; block layouts from `ggml/src/ggml-common.h`).
//!
//! Every block is a `#[repr(C)]` struct of byte arrays (alignment 1, so a slice of blocks can be
//! viewed over any byte buffer), with a compile-time size check.

mod float;
mod q4_0;
mod q4_1;
mod q4k;
mod q5_0;
mod q6k;
mod q8_0;

use rayon::prelude::*;

pub use self::{
    q4_0::BlockQ4_0, q4_1::BlockQ4_1, q4k::BlockQ4K, q5_0::BlockQ5_0, q6k::BlockQ6K,
    q8_0::BlockQ8_0,
};
use crate::{BlockFormat, Error, Matrix};

/// A block of a llama.cpp quantized format.
pub trait GgmlBlock: bytemuck::Pod + Send + Sync {
    /// The format.
    const FORMAT: BlockFormat;
    /// Elements per block.
    const BLOCK_LEN: usize;
    /// Quantizes `x` (exactly `BLOCK_LEN` values) as the reference does.
    fn quantize(x: &[f32]) -> Self;
    /// Writes the block's `BLOCK_LEN` values into `out`.
    fn dequantize(&self, out: &mut [f32]);
}

/// llama.cpp's `nearest_int`: round to nearest, ties to even, through the float adder (valid for
/// |x| <= 4194303, which every caller guarantees).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// `GGML_FP32_TO_FP16`: round to nearest even.
#[inline]
pub(crate) fn fp16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

/// `GGML_FP16_TO_FP32`.
#[inline]
pub(crate) fn from_fp16(b: [u8; 2]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// Bytes of a row of `cols` elements in `format`, checking that the row fits the format.
pub fn row_bytes(format: BlockFormat, cols: usize) -> Result<usize, Error> {
    format.row_bytes(cols).ok_or(Error::RowDoesNotFit {
        format: format.name(),
        cols,
        block_len: format.block_len(),
    })
}

fn quantize_with<B: GgmlBlock>(m: &Matrix<'_>, out: &mut [u8]) -> Result<(), Error> {
    let row_len = m.cols() / B::BLOCK_LEN * size_of::<B>();
    out.par_chunks_mut(row_len).enumerate().try_for_each_init(
        || vec![0f32; m.cols()],
        |buf, (r, dst)| {
            m.read_row(r, buf)?;
            let blocks: &mut [B] = bytemuck::cast_slice_mut(dst);
            for (b, x) in blocks.iter_mut().zip(buf.chunks_exact(B::BLOCK_LEN)) {
                *b = B::quantize(x);
            }
            Ok(())
        },
    )
}

fn dequantize_with<B: GgmlBlock>(bytes: &[u8], cols: usize, out: &mut [f32]) {
    let row_len = cols / B::BLOCK_LEN * size_of::<B>();
    out.par_chunks_mut(cols).zip(bytes.par_chunks(row_len)).for_each(|(dst, src)| {
        let blocks: &[B] = bytemuck::cast_slice(src);
        for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(B::BLOCK_LEN)) {
            b.dequantize(y);
        }
    });
}

/// Quantizes one block of `format` and writes back its dequantized values: what
/// [`quantize_matrix`] followed by [`dequantize_matrix`] gives for these elements. `x` holds
/// exactly `format.block_len()` values (any number for the float formats); `out` as many.
pub(crate) fn fake_quantize_block(format: BlockFormat, x: &[f32], out: &mut [f32]) {
    fn with<B: GgmlBlock>(x: &[f32], out: &mut [f32]) {
        B::quantize(x).dequantize(out)
    }
    debug_assert_eq!(x.len(), out.len());
    match format {
        BlockFormat::F32 => out.copy_from_slice(x),
        BlockFormat::F16 => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = from_fp16(fp16(v));
            }
        }
        BlockFormat::Bf16 => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = f32::from_bits((float::bf16_bits(v) as u32) << 16);
            }
        }
        BlockFormat::Q8_0 => with::<BlockQ8_0>(x, out),
        BlockFormat::Q4_0 => with::<BlockQ4_0>(x, out),
        BlockFormat::Q4_1 => with::<BlockQ4_1>(x, out),
        BlockFormat::Q5_0 => with::<BlockQ5_0>(x, out),
        BlockFormat::Q4K => with::<BlockQ4K>(x, out),
        BlockFormat::Q6K => with::<BlockQ6K>(x, out),
    }
}

/// Quantizes every row of `m` into `format`, in parallel over rows; the bytes are the same for
/// any number of threads. Rows must be a multiple of the format's block length.
pub fn quantize_matrix(format: BlockFormat, m: &Matrix<'_>) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; row_bytes(format, m.cols())? * m.rows()];
    match format {
        BlockFormat::F32 => float::quantize_f32(m, &mut out)?,
        BlockFormat::F16 => float::quantize_f16(m, &mut out)?,
        BlockFormat::Bf16 => float::quantize_bf16(m, &mut out)?,
        BlockFormat::Q8_0 => quantize_with::<BlockQ8_0>(m, &mut out)?,
        BlockFormat::Q4_0 => quantize_with::<BlockQ4_0>(m, &mut out)?,
        BlockFormat::Q4_1 => quantize_with::<BlockQ4_1>(m, &mut out)?,
        BlockFormat::Q5_0 => quantize_with::<BlockQ5_0>(m, &mut out)?,
        BlockFormat::Q4K => quantize_with::<BlockQ4K>(m, &mut out)?,
        BlockFormat::Q6K => quantize_with::<BlockQ6K>(m, &mut out)?,
    }
    Ok(out)
}

/// Dequantizes `bytes` holding rows of `cols` elements in `format` into `out`.
pub fn dequantize_matrix(
    format: BlockFormat,
    bytes: &[u8],
    cols: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let row = row_bytes(format, cols)?;
    let rows = out.len() / cols;
    if !out.len().is_multiple_of(cols) || bytes.len() != row * rows {
        return Err(Error::LengthMismatch {
            what: "quantized bytes",
            actual: bytes.len(),
            expected: row * rows,
        });
    }
    match format {
        BlockFormat::F32 => float::dequantize_f32(bytes, out),
        BlockFormat::F16 => crate::widen_f16(bytes, out)?,
        BlockFormat::Bf16 => crate::widen_bf16(bytes, out)?,
        BlockFormat::Q8_0 => dequantize_with::<BlockQ8_0>(bytes, cols, out),
        BlockFormat::Q4_0 => dequantize_with::<BlockQ4_0>(bytes, cols, out),
        BlockFormat::Q4_1 => dequantize_with::<BlockQ4_1>(bytes, cols, out),
        BlockFormat::Q5_0 => dequantize_with::<BlockQ5_0>(bytes, cols, out),
        BlockFormat::Q4K => dequantize_with::<BlockQ4K>(bytes, cols, out),
        BlockFormat::Q6K => dequantize_with::<BlockQ6K>(bytes, cols, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        for (x, want) in
            [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (3.49, 3), (-7.6, -8), (63.0, 63)]
        {
            assert_eq!(nearest_int(x), want, "{x}");
        }
    }

    #[test]
    fn sizes_match_the_format_table() {
        assert_eq!(size_of::<BlockQ8_0>(), BlockFormat::Q8_0.block_bytes());
        assert_eq!(size_of::<BlockQ4_0>(), BlockFormat::Q4_0.block_bytes());
        assert_eq!(size_of::<BlockQ4_1>(), BlockFormat::Q4_1.block_bytes());
        assert_eq!(size_of::<BlockQ5_0>(), BlockFormat::Q5_0.block_bytes());
        assert_eq!(size_of::<BlockQ4K>(), BlockFormat::Q4K.block_bytes());
        assert_eq!(size_of::<BlockQ6K>(), BlockFormat::Q6K.block_bytes());
    }

    #[test]
    fn fake_quantization_equals_quantize_then_dequantize() {
        let (n, k) = (3, 512);
        let x: Vec<f32> =
            (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.41) * 0.07).collect();
        let m = Matrix::from_f32(&x, n, k).unwrap();
        for format in BlockFormat::ALL {
            let mut want = vec![0f32; n * k];
            dequantize_matrix(format, &quantize_matrix(format, &m).unwrap(), k, &mut want).unwrap();
            let mut got = vec![0f32; n * k];
            let len = format.block_len();
            for (xs, o) in x.chunks_exact(len).zip(got.chunks_exact_mut(len)) {
                fake_quantize_block(format, xs, o);
            }
            assert_eq!(got, want, "{format}");
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        let x = vec![0.5f32; 2 * 48];
        let m = Matrix::from_f32(&x, 2, 48).unwrap();
        assert!(matches!(
            quantize_matrix(BlockFormat::Q4_0, &m),
            Err(Error::RowDoesNotFit { cols: 48, .. })
        ));
        assert!(quantize_matrix(BlockFormat::F16, &m).is_ok());
    }
}
