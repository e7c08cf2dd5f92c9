//! Pure numerics for phiquant: how weights are cut into quantization blocks and how stored floats
//! widen to `f32`.
//!
//! This crate owns the arithmetic of quantization and nothing else: it does no I/O and knows no file
//! format. Readers in `phiquant-runtime` hand it byte slices; writers in `phiquant-convert` take its
//! results and lay them out in ONNX or GGUF files.
//!
//! # Brief overview
//! - [`BlockLayout`] splits a row of `K` input features into blocks of a group size, with the zero
//!   padding of the last block that ONNX Runtime's `MatMulNBits` uses when `K` is not a multiple of
//!   the block.
//! - [`BlockFormat`] names the block-quantized formats and their geometry (elements and bytes per
//!   block), which decides whether a row of a given length can be stored in that format at all.
//! - [`widen_f16`] and [`widen_bf16`] turn little-endian half-precision bytes into `f32`.
//!
//! # Example
//! ```
//! use phiquant_quant::BlockLayout;
//!
//! // SmolLM2's hidden size 576 in blocks of 128: four full blocks and one of 64.
//! let layout = BlockLayout::new(576, 128)?;
//! assert_eq!(layout.blocks(), 5);
//! assert_eq!(layout.last_block_len(), 64);
//! assert_eq!(layout.padding(), 64);
//! # Ok::<(), phiquant_quant::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod format;
mod layout;
mod widen;

pub use crate::{
    error::Error,
    format::BlockFormat,
    layout::{BlockLayout, MATMUL_NBITS_BLOCK_SIZES},
    widen::{widen_bf16, widen_f16},
};
