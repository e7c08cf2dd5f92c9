//! The error type of the quantization numerics.

/// What went wrong in a quantization routine.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A block size that the format does not allow.
    #[error("block size {block_size} is not allowed: {expected}")]
    InvalidBlockSize {
        /// The block size asked for.
        block_size: usize,
        /// What the format accepts.
        expected: &'static str,
    },
    /// A bit width the format does not offer.
    #[error("{bits}-bit quantization is not supported (expected 4 or 8)")]
    InvalidBits {
        /// The bits asked for.
        bits: u8,
    },
    /// A row with no elements cannot be cut into blocks.
    #[error("a row of length 0 cannot be quantized")]
    EmptyRow,
    /// Input and output slices of different lengths.
    #[error("length mismatch: {what} has {actual} elements, expected {expected}")]
    LengthMismatch {
        /// Which buffer disagreed.
        what: &'static str,
        /// The length it has.
        actual: usize,
        /// The length required.
        expected: usize,
    },
    /// A row whose length is not a multiple of the format's block.
    #[error("rows of {cols} elements do not fit {format} (needs a multiple of {block_len})")]
    RowDoesNotFit {
        /// The format.
        format: &'static str,
        /// The row length.
        cols: usize,
        /// The format's block length.
        block_len: usize,
    },
    /// NaN or infinity in the weights.
    #[error("row {row}, column {col} holds {value}: weights must be finite")]
    NonFinite {
        /// Row index.
        row: usize,
        /// Column index.
        col: usize,
        /// The value found.
        value: f32,
    },
}
