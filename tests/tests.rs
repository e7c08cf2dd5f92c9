//! phiquant's integration tests: the CLI end to end, on the fixtures and the `../shared` models.

#[macro_use]
mod macros;
mod util;

mod awq;
mod bad_input;
mod build;
mod determinism;
mod engine;
mod faults;
mod fixtures;
mod gguf;
mod gguf_input;
mod gguf_interop;
mod hub;
mod hub_server;
mod inspect;
mod onnx;
mod onnx_genai;
mod onnx_interop;
#[cfg(feature = "onnxruntime")]
mod ort;
mod verify;
