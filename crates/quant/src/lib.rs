//! Pure numerics for phiquant: quantization kernels bit-exact with ONNX Runtime and llama.cpp,
//! their dequantization, block layouts and float widening.
//!
//! This crate owns the arithmetic of quantization and nothing else: it does no I/O and knows no
//! file format beyond the byte layout of a quantized block. Readers in `phiquant-runtime` hand it
//! byte slices; writers in `phiquant-convert` place its results in ONNX or GGUF files.
//!
//! # Brief overview
//! - [`Matrix`] views a stored weight matrix (f32, f16 or bf16 bytes, row-major, unaligned).
//! - [`quantize_nbits`] produces ONNX Runtime `MatMulNBits` weights ([`NBitsTensor`]) for an
//!   [`NBitsScheme`] (4 or 8 bits, block 16 to 256, symmetric or not, f32 or f16 scales),
//!   byte-equal to ONNX Runtime's own quantizer.
//! - [`quantize_matrix`] and [`dequantize_matrix`] convert rows to and from llama.cpp's formats
//!   ([`BlockFormat`]: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K), byte-equal to its
//!   reference quantizers.
//! - Work is parallel over rows with rayon, and the bytes never depend on the thread count.
//!   Non-finite weights are an error naming the row and column.
//! - [`BlockLayout`] cuts a row into blocks, padding the last one as `MatMulNBits` does.
//! - [`FakeQuant`] applies any of those formats as a function on f32 weights (quantize, then
//!   dequantize), and the AWQ numerics build on it: activation statistics ([`ChannelStats`],
//!   [`Gram`]), the duo-scaling grid ([`awq_scales`], [`weight_mean`]), output errors through
//!   Gram matrices ([`gram_error`]) and the clipping search ([`clip_search`]).
//!
//! # Example
//! ```
//! use phiquant_quant::{BlockFormat, Matrix, NBitsScheme, ScaleType, quantize_matrix, quantize_nbits};
//!
//! let w: Vec<f32> = (0..4 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
//! let m = Matrix::from_f32(&w, 4, 64)?;
//! let int4 = quantize_nbits(&m, &NBitsScheme::new(4, 32, true, ScaleType::F32)?)?;
//! assert_eq!(int4.b.len(), 4 * 2 * 16);
//! let q4_0 = quantize_matrix(BlockFormat::Q4_0, &m)?;
//! assert_eq!(q4_0.len(), 4 * 2 * 18);
//! # Ok::<(), phiquant_quant::Error>(())
//! ```
#![deny(missing_docs)]

mod awq;
mod elements;
mod error;
mod exp;
mod fake;
mod format;
mod ggml;
mod layout;
mod linalg;
mod nbits;
mod simd;
mod widen;

pub use crate::{
    awq::{
        AWQ_GRID, CLIP_STEPS, ChannelStats, ClipMode, ClipOutcome, ClipSearch, Gram, awq_scales,
        clip_search, fake_quantize_scaled, gram_error, scale_gram, weight_mean,
    },
    elements::{ElementType, Matrix},
    error::Error,
    exp::exp_inplace,
    fake::FakeQuant,
    format::BlockFormat,
    ggml::{
        BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ6K, BlockQ8_0, GgmlBlock,
        dequantize_matrix, quantize_matrix, row_bytes,
    },
    layout::{BlockLayout, MATMUL_NBITS_BLOCK_SIZES},
    linalg::{dot, matmul_xwt},
    nbits::{NBitsScheme, NBitsTensor, ScaleType, quantize_nbits},
    widen::{widen_bf16, widen_f16},
};
