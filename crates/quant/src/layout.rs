//! The cut of one weight row into quantization blocks.

use crate::Error;

/// The block sizes that ONNX Runtime's `MatMulNBits` accepts and that phiquant offers as
/// `--group-size`: powers of two from 16 to 256 (ORT contrib op spec, `block_size` attribute).
pub const MATMUL_NBITS_BLOCK_SIZES: [usize; 5] = [16, 32, 64, 128, 256];

/// How a row of `k` input features is cut into blocks of `block_size` elements.
///
/// When `k` is not a multiple of the block size the last block is shorter; formats that store
/// whole blocks (ONNX Runtime's `MatMulNBits`) pad it with zeros, so the stored row holds
/// [`BlockLayout::padded_len`] elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    k: usize,
    block_size: usize,
}

impl BlockLayout {
    /// A layout for rows of `k` elements in blocks of `block_size`, which must be a power of two
    /// of at least 16 (the `MatMulNBits` rule).
    pub fn new(k: usize, block_size: usize) -> Result<Self, Error> {
        if block_size < 16 || !block_size.is_power_of_two() {
            return Err(Error::InvalidBlockSize {
                block_size,
                expected: "a power of two of at least 16",
            });
        }
        if k == 0 {
            return Err(Error::EmptyRow);
        }
        Ok(Self { k, block_size })
    }

    /// The row length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The number of blocks, counting a shorter last block.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    /// The number of real elements in the last block (equal to the block size when `k` divides
    /// evenly).
    pub fn last_block_len(&self) -> usize {
        self.k - (self.blocks() - 1) * self.block_size
    }

    /// The row length once the last block is padded to a whole block.
    pub fn padded_len(&self) -> usize {
        self.blocks() * self.block_size
    }

    /// How many zero elements padding adds to each row.
    pub fn padding(&self) -> usize {
        self.padded_len() - self.k
    }

    /// Whether `k` is a multiple of the block size.
    pub fn is_exact(&self) -> bool {
        self.padding() == 0
    }

    /// The element range of block `index` within the unpadded row.
    pub fn block_range(&self, index: usize) -> std::ops::Range<usize> {
        let start = (index * self.block_size).min(self.k);
        start..(start + self.block_size).min(self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_rows_have_no_padding() {
        let layout = BlockLayout::new(4096, 32).unwrap();
        assert_eq!(layout.blocks(), 128);
        assert_eq!(layout.last_block_len(), 32);
        assert!(layout.is_exact());
    }

    #[test]
    fn short_last_block_is_padded() {
        // stories260K's ffn 172 with block 32: 5 full blocks and 12 elements.
        let layout = BlockLayout::new(172, 32).unwrap();
        assert_eq!(layout.blocks(), 6);
        assert_eq!(layout.last_block_len(), 12);
        assert_eq!(layout.padded_len(), 192);
        assert_eq!(layout.block_range(5), 160..172);
    }

    #[test]
    fn row_shorter_than_a_block() {
        let layout = BlockLayout::new(8, 256).unwrap();
        assert_eq!(layout.blocks(), 1);
        assert_eq!(layout.last_block_len(), 8);
        assert_eq!(layout.padding(), 248);
    }

    #[test]
    fn rejects_bad_block_sizes_and_empty_rows() {
        for bad in [0, 1, 8, 24, 48, 100] {
            assert!(matches!(
                BlockLayout::new(64, bad),
                Err(Error::InvalidBlockSize { block_size, .. }) if block_size == bad
            ));
        }
        assert_eq!(BlockLayout::new(0, 32), Err(Error::EmptyRow));
    }
}
