//! The error type of the runtime: every variant names the file, and the tensor or field where one
//! is involved, so that a user can act on a one-line message.

use std::path::PathBuf;

use crate::{Device, Dtype};

/// What went wrong while reading or checking a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while touching a file.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What phiquant was doing ("reading", "opening", "mapping").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file that does not parse.
    #[error("{}: malformed JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with line and column.
        source: serde_json::Error,
    },
    /// A required field is absent.
    #[error("{}: missing `{field}`", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The field's name.
        field: &'static str,
    },
    /// A field has a value phiquant cannot use.
    #[error("{}: `{field}` is {value}, expected {expected}", path.display())]
    InvalidField {
        /// The file.
        path: PathBuf,
        /// The field's name (dotted for nested fields).
        field: String,
        /// The value found, as written.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// The architecture is not one phiquant knows.
    #[error(
        "{}: unknown architecture `{found}` (phiquant reads Phi3ForCausalLM, LlamaForCausalLM, \
         MistralForCausalLM and Qwen2ForCausalLM)",
        path.display()
    )]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The architecture named there.
        found: String,
    },
    /// A file ends before a structure it declares.
    #[error("{}: {what} needs {needed} bytes, only {remaining} remain (truncated file?)", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The structure being read.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// A safetensors header that is not valid.
    #[error("{}: invalid safetensors header: {problem}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: HeaderProblem,
    },
    /// A GGUF header (magic, version, counts, metadata or tensor table) that is not valid.
    #[error("{}: invalid GGUF header: {problem}", path.display())]
    GgufHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: HeaderProblem,
    },
    /// A tensor that is malformed, missing, or disagrees with the config.
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    Tensor {
        /// The file holding (or expected to hold) the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        problem: TensorProblem,
    },
    /// A shard named by the index is not in the folder.
    #[error("{}: shard `{shard}` (holding `{tensor}`) does not exist", path.display())]
    MissingShard {
        /// The index file.
        path: PathBuf,
        /// The shard's file name.
        shard: String,
        /// A tensor the index places in that shard.
        tensor: String,
    },
    /// A file name read from an index or a listing that could escape its folder.
    #[error("{}: file name `{name}` is not a plain relative path", path.display())]
    UnsafeFileName {
        /// The file that named it.
        path: PathBuf,
        /// The offending name.
        name: String,
    },
    /// The folder holds only pickle weights, which phiquant refuses to load.
    #[error(
        "{}: only PyTorch pickle weights found ({}); phiquant does not load pickle files because \
         unpickling can run arbitrary code. Use a checkpoint with *.safetensors weights (for example \
         save it again with transformers' `save_pretrained(..., safe_serialization=True)`)",
        path.display(), files.join(", ")
    )]
    PickleOnly {
        /// The folder or repository.
        path: PathBuf,
        /// The pickle files seen.
        files: Vec<String>,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// More tokens than the session was sized for.
    #[error("{needed} positions needed but the context holds {capacity}")]
    ContextFull {
        /// Positions needed.
        needed: usize,
        /// Positions available.
        capacity: usize,
    },
    /// A model feature the engine does not implement.
    #[error("unsupported: {what} ({limit})")]
    Unsupported {
        /// The feature.
        what: String,
        /// What is supported.
        limit: String,
    },
    /// The tokenizer library refused a file or a text.
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// An inference backend (llama.cpp, ONNX Runtime) refused a model or failed while running it.
    #[error("{}: {backend}: {message}", path.display())]
    Backend {
        /// The backend ("llama.cpp").
        backend: &'static str,
        /// The model file.
        path: PathBuf,
        /// What failed, with the backend's own explanation where it gave one.
        message: String,
    },
    /// A GGUF metadata key the model needs is absent.
    #[error("{}: missing GGUF metadata key `{key}`", path.display())]
    MissingKey {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// ONNX Runtime's shared library could not be found or loaded.
    #[error("{0}")]
    OrtLibrary(OrtLibraryProblem),
    /// An execution provider that the ONNX Runtime library in use cannot run here.
    #[error(
        "{}: the {device} execution provider is not available: {reason}; run with --device cpu \
         to check the graph's numbers on the CPU provider",
        path.display()
    )]
    DeviceUnavailable {
        /// The model file.
        path: PathBuf,
        /// The device asked for.
        device: Device,
        /// Why it cannot be used.
        reason: String,
    },
    /// A device name phiquant does not run models on.
    #[error("unknown device `{name}` (expected cpu, cuda or dml)")]
    UnknownDevice {
        /// The name given.
        name: String,
    },
    /// The folder holds no weights phiquant can read.
    #[error("{}: no model.safetensors or model.safetensors.index.json found{}", path.display(), found_note(found))]
    NoWeights {
        /// The folder.
        path: PathBuf,
        /// Other safetensors files seen there (for example shards without their index).
        found: Vec<String>,
    },
}

impl Error {
    /// Generation was asked to continue an empty prompt.
    pub(crate) fn empty_prompt() -> Error {
        Error::InvalidField {
            path: "prompt".into(),
            field: "prompt".into(),
            value: "empty".into(),
            expected: "at least one token (a BOS token or some text)".into(),
        }
    }
}

fn found_note(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found {} without an index)", found.join(", "))
    }
}

/// Why ONNX Runtime's shared library is not available. Every message names both ways of providing
/// it: `ORT_DYLIB_PATH`, and the project venv that `scripts/setup.sh` creates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrtLibraryProblem {
    /// No library in any of the places searched.
    #[error(
        "ONNX Runtime's shared library was not found: set ORT_DYLIB_PATH to the full path of {lib}, \
         or run `bash scripts/setup.sh` to install onnxruntime==1.31.1 into the project venv \
         ({venv_lib}; PHIQUANT_VENV names another venv); looked for .venv in {} and their parent folders",
        searched_list(searched),
        lib = crate::onnxruntime::LIBRARY_EXAMPLE,
        venv_lib = crate::onnxruntime::VENV_LIBRARY_PATTERN
    )]
    NotFound {
        /// The folders whose `.venv`, and whose parents' `.venv`, were looked into, in order.
        searched: Vec<PathBuf>,
    },
    /// An environment variable names a library or venv that is not there.
    #[error(
        "{var} is `{}`, which {what}; point ORT_DYLIB_PATH at {lib} (in the project venv: {venv_lib}), \
         or unset {var}",
        path.display(),
        lib = crate::onnxruntime::LIBRARY_EXAMPLE,
        venv_lib = crate::onnxruntime::VENV_LIBRARY_PATTERN
    )]
    BadVariable {
        /// `ORT_DYLIB_PATH` or `PHIQUANT_VENV`.
        var: &'static str,
        /// Its value.
        path: PathBuf,
        /// What is wrong with it ("is not a file").
        what: &'static str,
    },
    /// The library exists but ONNX Runtime could not be started from it.
    #[error(
        "{}: cannot load ONNX Runtime: {message} (phiquant needs ONNX Runtime 1.31, the \
         library of onnxruntime==1.31.1: set ORT_DYLIB_PATH to it, or run `bash scripts/setup.sh` \
         for the project venv)",
        path.display()
    )]
    Load {
        /// The library file.
        path: PathBuf,
        /// The loader's or ONNX Runtime's explanation.
        message: String,
    },
}

fn searched_list(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        return "nowhere".into();
    }
    searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// What is wrong with a safetensors or GGUF header as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The declared header is larger than any real header.
    #[error("declared header length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The header is not UTF-8 JSON of the expected shape.
    #[error("{0}")]
    Malformed(String),
    /// Bytes after the last tensor's data.
    #[error("{bytes} bytes after the end of the last tensor's data")]
    TrailingBytes {
        /// How many.
        bytes: u64,
    },
    /// More tensors than any real checkpoint has.
    #[error("{count} tensors exceed the limit of {max}")]
    TooManyTensors {
        /// How many are declared.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// What is wrong with one tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorProblem {
    /// A dtype name that safetensors does not define.
    #[error("unknown dtype `{0}`")]
    UnknownDtype(String),
    /// A dtype phiquant does not accept for this tensor.
    #[error("dtype {found} is not supported (expected {expected})")]
    UnsupportedDtype {
        /// The dtype in the file.
        found: Dtype,
        /// The dtypes accepted.
        expected: &'static str,
    },
    /// The offsets do not span the bytes that the shape and dtype need.
    #[error("shape {shape:?} of {dtype} needs {needed} bytes but its data_offsets span {span}")]
    SizeMismatch {
        /// The declared shape.
        shape: Vec<usize>,
        /// The declared dtype.
        dtype: Dtype,
        /// Bytes the shape needs.
        needed: u64,
        /// Bytes the offsets cover.
        span: u64,
    },
    /// The shape's element count overflows.
    #[error("shape {0:?} is too large")]
    ShapeOverflow(Vec<usize>),
    /// `data_offsets` with the end before the start.
    #[error("data_offsets [{begin}, {end}] end before they begin")]
    ReversedOffsets {
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
    },
    /// Data past the end of the file.
    #[error(
        "data_offsets end at byte {end} but the data section has only {data_len} bytes (truncated file?)"
    )]
    OutOfRange {
        /// End offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// Data shared with another tensor.
    #[error("data_offsets [{begin}, {end}] overlap tensor `{other}`")]
    Overlap {
        /// Start offset.
        begin: u64,
        /// End offset.
        end: u64,
        /// The tensor it overlaps.
        other: String,
    },
    /// Unclaimed bytes before the tensor.
    #[error("{bytes} unclaimed bytes before its data (offsets must be contiguous)")]
    Gap {
        /// How many.
        bytes: u64,
    },
    /// A GGUF tensor whose data offset is not a multiple of the file's alignment.
    #[error("data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The offset, from the start of the data section.
        offset: u64,
        /// `general.alignment` (32 when absent).
        alignment: u64,
    },
    /// The shape disagrees with the config.
    #[error("shape {found:?} does not match {expected:?} implied by config.json")]
    ShapeMismatch {
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor the config needs is absent.
    #[error("missing (config.json implies it)")]
    Missing,
    /// A tensor that has no place in the model the config describes.
    #[error("not part of a {architecture} model with {layers} layers")]
    Unexpected {
        /// The architecture.
        architecture: &'static str,
        /// The number of layers.
        layers: usize,
    },
    /// The same tensor in two files.
    #[error("also present in `{other}`")]
    Duplicate {
        /// The other file.
        other: String,
    },
    /// The index names a shard that does not hold the tensor.
    #[error("listed in the index for this shard, but the shard does not hold it")]
    NotInShard,
    /// A tensor the GGUF metadata implies is absent.
    #[error("missing (the GGUF metadata implies it)")]
    MissingFromGguf,
    /// A ggml tensor type phiquant cannot dequantize.
    #[error(
        "ggml type {name} ({id}) is not supported (phiquant reads F32, F16, BF16, Q8_0, Q4_0, \
         Q4_1, Q5_0, Q4_K and Q6_K)"
    )]
    UnsupportedGgmlType {
        /// The `ggml_type` number.
        id: u32,
        /// llama.cpp's name for it, or `unknown`.
        name: &'static str,
    },
    /// A GGUF tensor whose rows (`ne0`) are not a whole number of its type's blocks.
    #[error(
        "rows of {row} elements are not whole {name} blocks of {block} (ne0 must be a multiple of {block})"
    )]
    PartialBlock {
        /// `ne0`, the row length.
        row: u64,
        /// The type's block length.
        block: u64,
        /// llama.cpp's name of the type.
        name: &'static str,
    },
    /// A GGUF tensor with a zero dimension.
    #[error("dimensions {0:?} hold no element")]
    Empty(Vec<usize>),
    /// A GGUF tensor whose dimensions disagree with the model its metadata describes.
    #[error("dimensions {found:?} (ne0 first) do not match {expected:?} implied by the metadata")]
    GgufDims {
        /// The dimensions in the file.
        found: Vec<u64>,
        /// The dimensions the metadata implies.
        expected: Vec<u64>,
    },
    /// A GGUF tensor that has no place in the model its metadata describes.
    #[error(
        "not part of a `{architecture}` model with {layers} layers (as the metadata describes it)"
    )]
    UnexpectedGguf {
        /// llama.cpp's architecture name.
        architecture: String,
        /// The number of layers.
        layers: usize,
    },
}
