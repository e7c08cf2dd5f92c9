//! Integration tests of the runtime: the native engine against transformers' outputs.

mod engine_golden;
mod layers;
#[cfg(feature = "llama-cpp")]
mod llamacpp;
#[cfg(feature = "onnxruntime")]
mod ort;
#[cfg(feature = "onnxruntime")]
mod toy_model;
mod util;
