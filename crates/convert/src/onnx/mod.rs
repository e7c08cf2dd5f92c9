//! ONNX artefacts for ONNX Runtime and onnxruntime-genai: a folder with `model.onnx`, all
//! initializers in `model.onnx.data`, `genai_config.json` and the tokenizer files, laid out as
//! onnxruntime-genai's model builder lays them out (DESIGN §3) so that onnxruntime-genai loads the
//! folder unchanged.
//!
//! The graph is built while the weights stream: each matrix is read, converted or quantized and
//! appended to `model.onnx.data` before the next is read, so memory stays near one matrix and the
//! protobuf (`model.onnx`) holds no tensor data and never approaches protobuf's 2 GB limit.
//! The caller stages the folder ([`crate::Staged`]): written under a temporary name and renamed
//! when complete.

pub mod decoder;
mod genai;
pub mod graph;
pub mod proto;

use std::{
    io::BufWriter,
    path::{Path, PathBuf},
};

use prost::Message;
use serde::Serialize;

pub use self::genai::genai_config;
use self::{
    graph::{ExternalData, Graph},
    proto::{ModelProto, OperatorSetIdProto},
};
use crate::{Error, SourceModel};

/// The execution provider a graph is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ep {
    /// CPU (also mobile): packed QKV, rotary inside GroupQueryAttention.
    Cpu,
    /// CUDA: as CPU, fp16 I/O.
    Cuda,
    /// DirectML: unpacked q/k/v, RotaryEmbedding nodes, `position_ids`, no `If`.
    Dml,
}

impl Ep {
    /// The provider's name in onnxruntime-genai's `provider_options`.
    pub fn genai_name(self) -> &'static str {
        match self {
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
            Ep::Dml => "dml",
        }
    }
}

/// The activation type at the model's inputs and outputs (and of its float weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoType {
    /// fp32.
    F32,
    /// fp16.
    F16,
}

/// How the linear layers' weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OnnxWeights {
    /// `MatMul` with float weights in the I/O type.
    Float,
    /// `MatMulNBits` int4 with ONNX Runtime's RTN (MLAS `q4_dq.cpp`).
    Int4 {
        /// Elements per block along K.
        block_size: usize,
        /// Symmetric (no zero points).
        symmetric: bool,
        /// `accuracy_level` (0 = unset, attribute omitted).
        accuracy_level: u8,
    },
}

/// Everything that decides an ONNX artefact's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OnnxScheme {
    /// The graph conventions.
    pub ep: Ep,
    /// I/O type.
    pub io: IoType,
    /// Weight storage.
    pub weights: OnnxWeights,
}

impl OnnxScheme {
    /// The scheme of ONNX target `target` with `weights` (its own, or with overrides applied by
    /// [`crate::Target::weights_with`]); `None` for a GGUF target.
    pub fn for_target(target: &crate::Target, weights: crate::Weights) -> Option<OnnxScheme> {
        if target.format != crate::ArtefactFormat::Onnx {
            return None;
        }
        let ep = match target.name.split('-').next() {
            Some("cuda") => Ep::Cuda,
            Some("dml") => Ep::Dml,
            _ => Ep::Cpu,
        };
        let io = if target.io_dtype == "fp16" { IoType::F16 } else { IoType::F32 };
        let weights = match weights {
            crate::Weights::Int4 { block_size, symmetric, accuracy_level, .. } => {
                OnnxWeights::Int4 { block_size, symmetric, accuracy_level }
            }
            _ => OnnxWeights::Float,
        };
        Some(OnnxScheme { ep, io, weights })
    }
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxExport {
    /// The artefact folder.
    pub dir: PathBuf,
    /// Initializers written.
    pub initializers: usize,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Bytes of `model.onnx` plus `model.onnx.data`.
    pub bytes: u64,
}

/// The file names of an artefact folder.
pub const MODEL_FILE: &str = "model.onnx";
/// The external data file beside [`MODEL_FILE`].
pub const DATA_FILE: &str = "model.onnx.data";
/// onnxruntime-genai's configuration.
pub const GENAI_CONFIG: &str = "genai_config.json";
/// Tokenizer files copied from the checkpoint when present.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
];

/// The ONNX IR version written (the builder's, onnx 1.16+).
pub const IR_VERSION: i64 = 10;
/// The default-domain opset: the lowest that has every op used (Reshape-14, Add-14, Sub-14, Mul-14),
/// so that older runtimes and every EP's kernel registrations match.
pub const OPSET: i64 = 14;
/// The producer name recorded in the model.
pub const PRODUCER: &str = "phiquant";

/// Writes `model` as an onnxruntime-genai folder for `scheme` into the empty folder `dir`
/// (a [`crate::Staged`] folder, which the caller commits). `progress(done, total)` is called
/// after each layer.
pub fn export_onnx(
    model: &SourceModel,
    scheme: &OnnxScheme,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<OnnxExport, Error> {
    let source = model.weights();
    let spec = model.spec();
    let aux = model.aux_files();
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    // Check the generation config and tokenizer before any weight is read.
    let config = genai_config(spec, aux, scheme)?;
    let data_path = dir.join(DATA_FILE);
    let file = std::fs::File::create(&data_path).map_err(io("creating", &data_path))?;
    let data = ExternalData::new(BufWriter::with_capacity(1 << 20, file), DATA_FILE);
    let g = Graph::new(data, data_path.clone());
    let (graph, w) = decoder::build(g, spec, source, scheme, progress)?;
    let file = w.into_inner().map_err(|e| Error::Io {
        op: "writing",
        path: data_path.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io("syncing", &data_path))?;
    let (initializers, nodes) = (graph.initializer.len(), graph.node.len());
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![
            OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) },
            OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) },
        ],
        producer_name: Some(PRODUCER.into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    let model_path = dir.join(MODEL_FILE);
    std::fs::write(&model_path, model.encode_to_vec()).map_err(io("writing", &model_path))?;
    let config_path = dir.join(GENAI_CONFIG);
    let mut text = serde_json::to_string_pretty(&config).expect("a JSON value serializes");
    text.push('\n');
    std::fs::write(&config_path, text).map_err(io("writing", &config_path))?;
    for name in TOKENIZER_FILES {
        if let Some(bytes) = aux.get(name) {
            let to = dir.join(name);
            std::fs::write(&to, bytes).map_err(io("writing", &to))?;
        }
    }
    let mut bytes = 0;
    for f in [MODEL_FILE, DATA_FILE] {
        let p = dir.join(f);
        bytes += std::fs::metadata(&p).map_err(io("reading metadata of", &p))?.len();
    }
    Ok(OnnxExport { dir: dir.to_path_buf(), initializers, nodes, bytes })
}
