//! The GGUF v3 file format of llama.cpp (ggml-org/llama.cpp `ggml/include/gguf.h`,
//! `ggml/src/gguf.cpp`; value and tensor type numbers from `gguf-py/gguf/constants.py`):
//! metadata values, tensor types, a validating reader over a memory map, llama.cpp's tensor
//! names, and a GGUF file read back as a model ([`GgufModel`]: its [`crate::DecoderSpec`], its
//! tensors under their Hugging Face names, and its tokenizer as Hugging Face files).

mod model;
mod naming;
mod reader;
mod spec;
mod tokenizer;
mod value;

pub use self::{
    model::GgufModel,
    naming::{gguf_linear_name, gguf_name, permute_qk, qk_permutation, unpermute_qk},
    reader::{GgufFile, GgufTensorInfo},
    value::{GgmlType, GgufValue},
};

/// `"GGUF"` as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version phiquant writes and reads.
pub const GGUF_VERSION: u32 = 3;
/// The alignment of tensor data when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
