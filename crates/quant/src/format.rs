//! The block-quantized storage formats and their geometry.

/// A weight storage format, as far as its block geometry goes.
///
/// The element and byte counts per block are those of llama.cpp's `ggml` type traits
/// (ggml-org/llama.cpp `ggml/src/ggml.c`, `type_traits`), and of ONNX Runtime's `MatMulNBits`
/// for the 4-bit form with a block size chosen at export time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BlockFormat {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// llama.cpp Q8_0: 32 elements, one f16 scale.
    Q8_0,
    /// llama.cpp Q4_0: 32 elements, one f16 scale, symmetric.
    Q4_0,
    /// llama.cpp Q4_1: 32 elements, f16 scale and minimum.
    Q4_1,
    /// llama.cpp Q5_0: 32 elements (the Q4_K_M fallback for rows that are not a multiple of 256).
    Q5_0,
    /// llama.cpp Q4_K: super-blocks of 256.
    Q4K,
    /// llama.cpp Q6_K: super-blocks of 256.
    Q6K,
}

impl BlockFormat {
    /// Every format, in a fixed order.
    pub const ALL: [BlockFormat; 9] = [
        BlockFormat::F32,
        BlockFormat::F16,
        BlockFormat::Bf16,
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q4K,
        BlockFormat::Q6K,
    ];

    /// Elements per block: a row must be a multiple of this to be stored in the format.
    pub const fn block_len(self) -> usize {
        match self {
            BlockFormat::F32 | BlockFormat::F16 | BlockFormat::Bf16 => 1,
            BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q4_1 | BlockFormat::Q5_0 => 32,
            BlockFormat::Q4K | BlockFormat::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::F32 => 4,
            BlockFormat::F16 | BlockFormat::Bf16 => 2,
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q4K => 144,
            BlockFormat::Q6K => 210,
        }
    }

    /// The name llama.cpp uses for the type.
    pub const fn name(self) -> &'static str {
        match self {
            BlockFormat::F32 => "F32",
            BlockFormat::F16 => "F16",
            BlockFormat::Bf16 => "BF16",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q6K => "Q6_K",
        }
    }

    /// Whether a row of `len` elements can be stored in this format without a fallback.
    pub const fn fits_row(self, len: usize) -> bool {
        len > 0 && len.is_multiple_of(self.block_len())
    }

    /// Bytes needed for a row of `len` elements, or `None` when the row does not fit.
    pub const fn row_bytes(self, len: usize) -> Option<usize> {
        if self.fits_row(len) { Some(len / self.block_len() * self.block_bytes()) } else { None }
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_weight_match_llama_cpp() {
        // Bits per weight as llama.cpp prints them for each type.
        let bpw = |f: BlockFormat| f.block_bytes() as f64 * 8.0 / f.block_len() as f64;
        assert_eq!(bpw(BlockFormat::Q4_0), 4.5);
        assert_eq!(bpw(BlockFormat::Q4_1), 5.0);
        assert_eq!(bpw(BlockFormat::Q5_0), 5.5);
        assert_eq!(bpw(BlockFormat::Q8_0), 8.5);
        assert_eq!(bpw(BlockFormat::Q4K), 4.5);
        assert_eq!(bpw(BlockFormat::Q6K), 6.5625);
    }

    #[test]
    fn row_fit() {
        assert!(BlockFormat::Q4_0.fits_row(576));
        assert!(!BlockFormat::Q4K.fits_row(576));
        assert!(!BlockFormat::Q8_0.fits_row(172));
        assert!(BlockFormat::F16.fits_row(172));
        assert!(!BlockFormat::F16.fits_row(0));
        assert_eq!(BlockFormat::Q4K.row_bytes(1536), Some(6 * 144));
        assert_eq!(BlockFormat::Q4K.row_bytes(576), None);
    }
}
