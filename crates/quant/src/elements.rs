//! Weight matrices as stored: little-endian f32, f16 or bf16 bytes, read one row at a time.

use crate::{Error, widen_bf16, widen_f16};

/// The element type of a stored weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl ElementType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 | ElementType::Bf16 => 2,
        }
    }
}

/// A row-major matrix of `rows x cols` elements held as little-endian bytes (as memory-mapped
/// from a checkpoint: no alignment is assumed).
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    bytes: &'a [u8],
    dtype: ElementType,
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// Wraps `bytes`, checking that they hold exactly `rows * cols` elements.
    pub fn new(
        bytes: &'a [u8],
        dtype: ElementType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, Error> {
        let expected =
            rows.checked_mul(cols).and_then(|n| n.checked_mul(dtype.size())).unwrap_or(usize::MAX);
        if bytes.len() != expected {
            return Err(Error::LengthMismatch {
                what: "matrix bytes",
                actual: bytes.len(),
                expected,
            });
        }
        if cols == 0 {
            return Err(Error::EmptyRow);
        }
        Ok(Matrix { bytes, dtype, rows, cols })
    }

    /// A matrix over `f32` values.
    pub fn from_f32(values: &'a [f32], rows: usize, cols: usize) -> Result<Self, Error> {
        Matrix::new(bytemuck::cast_slice(values), ElementType::F32, rows, cols)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (elements per row).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The stored element type.
    pub fn dtype(&self) -> ElementType {
        self.dtype
    }

    /// Row `r` as `f32` values without copying, when the matrix is f32 and suitably aligned; the
    /// values are checked to be finite.
    pub fn row_f32(&self, r: usize) -> Option<Result<&'a [f32], Error>> {
        if self.dtype != ElementType::F32 {
            return None;
        }
        let width = self.cols * 4;
        let row: &[f32] = bytemuck::try_cast_slice(&self.bytes[r * width..(r + 1) * width]).ok()?;
        Some(check_finite(r, row).map(|()| row))
    }

    /// Widens row `r` into `out` (length `cols`) and checks that every value is finite.
    pub fn read_row(&self, r: usize, out: &mut [f32]) -> Result<(), Error> {
        let width = self.cols * self.dtype.size();
        let src = &self.bytes[r * width..(r + 1) * width];
        match self.dtype {
            ElementType::F32 => {
                for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            ElementType::F16 => widen_f16(src, out)?,
            ElementType::Bf16 => widen_bf16(src, out)?,
        }
        check_finite(r, out)
    }
}

/// Errors with the first non-finite value of row `row`.
pub(crate) fn check_finite(row: usize, values: &[f32]) -> Result<(), Error> {
    // A branch-free reduction first (vectorizes); the position only on failure.
    let bad = values.iter().fold(false, |acc, v| acc | (v.abs() > f32::MAX) | v.is_nan());
    if bad {
        let (col, &value) =
            values.iter().enumerate().find(|(_, v)| !v.is_finite()).expect("found above");
        return Err(Error::NonFinite { row, col, value });
    }
    Ok(())
}

/// Rounds `v` to the nearest IEEE half and back, as a weight cast to fp16 before quantization.
pub(crate) fn round_to_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}
