//! Model definitions, weight readers and inference backends for phiquant (the native CPU engine,
//! ONNX Runtime and llama.cpp), with its tokenizer and generation.
//!
//! This crate owns what a model *is*: one canonical description of a decoder-only transformer
//! ([`DecoderSpec`]) read from a Hugging Face `config.json`, the mapping from each architecture's
//! tensor names (fused or not) onto that description, and the readers that hand out tensors
//! ([`WeightSource`]: safetensors checkpoints and GGUF files). Every tensor's shape and dtype is
//! checked against the config when a checkpoint is opened, before any work starts.
//!
//! # Brief overview
//! - [`DecoderSpec::from_config_file`] parses Phi3ForCausalLM (plain, LongRoPE, partial rotary),
//!   LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM configs, in the transformers 4 and
//!   5 spellings.
//! - [`DecoderSpec::expected_tensors`] and [`DecoderSpec::weight_location`] map checkpoint names
//!   onto the canonical [`Linear`] projections.
//! - [`Checkpoint::open`] reads a folder with `model.safetensors` or a sharded
//!   `model.safetensors.index.json` through memory maps ([`SafetensorsFile`]).
//! - [`TokenizerSummary`] describes the tokenizer a checkpoint ships; [`Tokenizer`] runs it, from
//!   a folder or from [`AuxFiles`] held in memory.
//! - [`Engine`] is the native fp32 CPU engine (transformers' eager numerics): a [`Session`] holds
//!   a KV cache, [`ActivationHook`] sees every linear layer's input, and [`LayerRunner`] runs one
//!   layer at a time with only that layer's weights in memory.
//! - [`generate()`] decodes greedily or by sampling; [`perplexity()`] scores a token stream as
//!   llama.cpp's perplexity tool does.
//! - [`gguf::GgufFile`] reads GGUF files; [`gguf::GgufModel`] reads one back as a model (its
//!   [`DecoderSpec`] from the metadata, its tensors under Hugging Face names, dequantized to f32
//!   one at a time) and [`AuxFiles::from_gguf`] rebuilds its tokenizer as Hugging Face files;
//!   [`LlamaCppModel`] runs a GGUF through llama.cpp (feature `llama-cpp`).
//! - [`OrtModel`] runs an onnxruntime-genai folder ([`GenaiConfig`], `model.onnx`) through ONNX
//!   Runtime on a [`Device`] (feature `onnxruntime`), with an [`OrtSession`] holding its key/value
//!   cache; [`find_ort_library`] says where ONNX Runtime's shared library comes from.
//!
//! # Example
//! ```no_run
//! use phiquant_runtime::{Checkpoint, WeightSource};
//!
//! let ckpt = Checkpoint::open("models/Phi-3-mini-4k-instruct".as_ref())?;
//! let spec = ckpt.spec();
//! println!("{} layers, {} heads of {}", spec.num_layers, spec.num_heads, spec.head_dim);
//! let embedding = ckpt.tensor("model.embed_tokens.weight")?.to_f32()?;
//! # Ok::<(), phiquant_runtime::Error>(())
//! ```
#![deny(missing_docs)]

mod checkpoint;
mod config;
mod dtype;
mod engine;
mod error;
mod generate;
pub mod gguf;
mod llamacpp;
mod naming;
mod onnxruntime;
mod perplexity;
mod safetensors;
mod spec;
mod tokenizer;

use std::{io::Read, path::Path};

pub use crate::{
    checkpoint::{
        Checkpoint, INDEX_FILE, SINGLE_FILE, TensorView, WeightSource, is_pickle_weight_name,
        is_plain_file_name,
    },
    dtype::Dtype,
    engine::{
        ActivationHook, Engine, LayerRunner, LayerWeights, LinearInput, Logits, ModelWeights,
        RopeCache, RopeTables, Session, rms_norm,
    },
    error::{Error, HeaderProblem, OrtLibraryProblem, TensorProblem},
    generate::{
        Generation, Sampling, argmax, generate, generate_timed, stop_tokens, stop_tokens_of,
    },
    llamacpp::LlamaCppModel,
    naming::{ExpectedTensor, Linear, TensorRole, TensorSlice},
    onnxruntime::{
        Device, DeviceSpec, GENAI_CONFIG, GenaiConfig, GenaiNames, LIBRARY_EXAMPLE, ORT_DYLIB_PATH,
        OrtModel, OrtSession, PHIQUANT_VENV, ProviderOptions, VENV_LIBRARY_PATTERN,
        find_ort_library, is_onnx_folder,
    },
    perplexity::{PerplexityReport, Scoring, log_prob, perplexity, perplexity_with},
    safetensors::{SafetensorsFile, TensorInfo},
    spec::{Architecture, Biases, DecoderSpec, Rope, RopeScaling, SlidingWindow},
    tokenizer::{AUX_FILE_NAMES, AuxFiles, Tokenizer, TokenizerSummary},
};

/// Reads a JSON file of at most `max_bytes`, naming the file in every error.
pub(crate) fn read_json_file(path: &Path, max_bytes: u64) -> Result<serde_json::Value, Error> {
    let io = |op| move |source| Error::Io { op, path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io("opening"))?;
    let len = file.metadata().map_err(io("reading metadata of"))?.len();
    if len > max_bytes {
        return Err(Error::InvalidField {
            path: path.to_path_buf(),
            field: "(file size)".into(),
            value: format!("{len} bytes"),
            expected: format!("at most {max_bytes} bytes"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes).read_to_end(&mut bytes).map_err(io("reading"))?;
    serde_json::from_slice(&bytes)
        .map_err(|source| Error::Json { path: path.to_path_buf(), source })
}
