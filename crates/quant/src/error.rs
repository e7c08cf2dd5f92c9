//! The error type of the quantization numerics.

/// What went wrong in a quantization routine.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
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
}
