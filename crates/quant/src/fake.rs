//! Fake quantization: a storage format's rounding as a function on f32 weights (quantize, then
//! dequantize), for searches that must see the weights a writer will store (AWQ's scale and clip
//! searches). The values are exactly those the writer's bytes dequantize to.

use std::ops::Range;

use rayon::prelude::*;

use crate::{BlockFormat, Error, NBitsScheme, ggml::fake_quantize_block};

/// Elements that share one scale in llama.cpp's formats for AWQ's weight statistic (the
/// sub-block of the K-quants, the block of the others); float formats use it too.
const GGML_GROUP: usize = 32;

/// A quantizer used as a function on f32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeQuant {
    /// ONNX Runtime `MatMulNBits` with this scheme (its block size is the one the writer uses
    /// for the matrix, and f16 scales include the cast of the weights to f16).
    NBits(NBitsScheme),
    /// A llama.cpp type, as llama.cpp's reference quantizer stores it.
    Ggml(BlockFormat),
}

impl FakeQuant {
    /// Elements per independently quantized block: a fake-quantized block depends only on its
    /// own values. `None` for float formats, which have no scale to clip.
    pub fn clip_len(&self) -> Option<usize> {
        match self {
            FakeQuant::NBits(s) => Some(s.block_size()),
            FakeQuant::Ggml(f) if f.block_len() > 1 => Some(f.block_len()),
            FakeQuant::Ggml(_) => None,
        }
    }

    /// Elements that share one scale, the groups of AWQ's weight statistic: the `MatMulNBits`
    /// block, or 32 for llama.cpp's types (the K-quants' sub-blocks).
    pub fn group_len(&self) -> usize {
        match self {
            FakeQuant::NBits(s) => s.block_size(),
            FakeQuant::Ggml(_) => GGML_GROUP,
        }
    }

    /// Whether blocks have a zero point or a minimum (a range not centred on zero): asymmetric
    /// `MatMulNBits`, Q4_1 and Q4_K.
    pub fn is_asymmetric(&self) -> bool {
        match self {
            FakeQuant::NBits(s) => !s.symmetric(),
            FakeQuant::Ggml(f) => matches!(f, BlockFormat::Q4_1 | BlockFormat::Q4K),
        }
    }

    /// Whether a block scaled by a factor `f > 0` fake-quantizes to `f` times the block's own
    /// values up to the f32 rounding of the scale: `MatMulNBits` with f32 scales, whose scale
    /// and zero point come from the block's extremes and whose weights are not cast. f16 scales
    /// (and the weights' cast to f16), llama.cpp's f16 block scales and the K-quants' quantized
    /// sub-block scales round `f` away.
    pub fn is_scale_equivariant(&self) -> bool {
        matches!(self, FakeQuant::NBits(s) if s.scale_type() == crate::ScaleType::F32)
    }

    /// Whether the format rounds at all (F32 stores weights as they are).
    pub fn is_identity(&self) -> bool {
        matches!(self, FakeQuant::Ggml(BlockFormat::F32))
    }

    /// Checks that rows of `cols` elements can be stored: any length for `MatMulNBits` (the last
    /// block is padded), a multiple of the block for llama.cpp's types.
    pub fn check_cols(&self, cols: usize) -> Result<(), Error> {
        match self {
            _ if cols == 0 => Err(Error::EmptyRow),
            FakeQuant::NBits(_) => Ok(()),
            FakeQuant::Ggml(f) if f.fits_row(cols) => Ok(()),
            FakeQuant::Ggml(f) => {
                Err(Error::RowDoesNotFit { format: f.name(), cols, block_len: f.block_len() })
            }
        }
    }

    /// The blocks of a row of `cols` elements in the order the format stores them: whole
    /// `clip_len` blocks with, for `MatMulNBits`, a shorter last one; one block for a float
    /// format.
    pub fn blocks(&self, cols: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let len = self.clip_len().unwrap_or(cols).max(1);
        (0..cols.div_ceil(len)).map(move |b| b * len..((b + 1) * len).min(cols))
    }

    /// Quantizes and dequantizes one block (one of [`FakeQuant::blocks`]) into `out`.
    pub fn apply_block(&self, x: &[f32], out: &mut [f32]) {
        match self {
            FakeQuant::NBits(s) => s.fake_quantize_block(x, out),
            FakeQuant::Ggml(f) => fake_quantize_block(*f, x, out),
        }
    }

    /// Quantizes and dequantizes every row of `w` (`rows x cols`, row-major) into `out`, in
    /// parallel over rows; the values do not depend on the thread count.
    pub fn apply(&self, w: &[f32], cols: usize, out: &mut [f32]) -> Result<(), Error> {
        self.check_cols(cols)?;
        if w.len() != out.len() || !w.len().is_multiple_of(cols) {
            return Err(Error::LengthMismatch {
                what: "fake-quantized output",
                actual: out.len(),
                expected: w.len(),
            });
        }
        out.par_chunks_mut(cols).zip(w.par_chunks(cols)).for_each(|(o, x)| {
            for r in self.blocks(cols) {
                self.apply_block(&x[r.clone()], &mut o[r]);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matrix, ScaleType, quantize_nbits};

    #[test]
    fn blocks_follow_the_layouts() {
        let nbits = FakeQuant::NBits(NBitsScheme::new(4, 128, false, ScaleType::F32).unwrap());
        let got: Vec<_> = nbits.blocks(576).collect();
        assert_eq!(got, vec![0..128, 128..256, 256..384, 384..512, 512..576]);
        assert_eq!(FakeQuant::Ggml(BlockFormat::Q4K).blocks(512).count(), 2);
        let whole: Vec<_> = FakeQuant::Ggml(BlockFormat::F16).blocks(172).collect();
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..172));
        assert_eq!(FakeQuant::Ggml(BlockFormat::F16).clip_len(), None);
        assert!(FakeQuant::Ggml(BlockFormat::Q4_0).check_cols(172).is_err());
        assert!(nbits.check_cols(172).is_ok());
    }

    #[test]
    fn apply_matches_the_writer_on_a_padded_matrix() {
        let (n, k) = (5, 576);
        let x: Vec<f32> = (0..n * k).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.003).collect();
        let s = NBitsScheme::new(4, 128, true, ScaleType::F16).unwrap();
        let mut want = vec![0f32; n * k];
        quantize_nbits(&Matrix::from_f32(&x, n, k).unwrap(), &s)
            .unwrap()
            .dequantize(&mut want)
            .unwrap();
        let mut got = vec![0f32; n * k];
        FakeQuant::NBits(s).apply(&x, k, &mut got).unwrap();
        assert_eq!(got, want);
    }
}
