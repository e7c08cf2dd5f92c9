//! Glue shared by the commands that run a model: `--model` to a loaded engine and tokenizer.

use phiquant_convert::{HubOptions, ModelSource, ResolvedModel};
use phiquant_runtime::{Checkpoint, Device, Engine, Tokenizer, WeightSource};

/// A model ready to run.
pub struct LoadedModel {
    pub resolved: ResolvedModel,
    pub engine: Engine,
    pub tokenizer: Tokenizer,
}

/// The model a command runs on: a positional folder or hub id, and its revision.
#[derive(Debug, clap::Args)]
pub struct ModelArg {
    /// Checkpoint folder, GGUF file, or hub id `org/name`.
    ///
    /// An existing path is read in place; a GGUF file runs in llama.cpp (generate, perplexity)
    /// or is described as the model its metadata defines (inspect). Otherwise `org/name` is
    /// downloaded from the Hugging Face Hub (HF_ENDPOINT) into the standard cache (HF_HUB_CACHE,
    /// else HF_HOME/hub), fetching only config, tokenizer and safetensors files; HF_TOKEN
    /// authenticates and HF_HUB_OFFLINE=1 uses the cache alone. Pickle checkpoints
    /// (pytorch_model.bin, *.pt) are refused.
    pub model: String,

    /// Hub branch, tag or commit (default: main).
    ///
    /// Only for hub ids; the commit it resolves to is reported.
    #[arg(long)]
    pub revision: Option<String>,
}

/// Makes `model` (a folder or hub id at `revision`) available locally, with a download progress
/// bar unless `quiet`.
pub fn resolve(model: &str, revision: Option<&str>, quiet: bool) -> anyhow::Result<ResolvedModel> {
    let source = ModelSource::parse(model, revision)?;
    let mut hub = HubOptions::from_env();
    hub.progress = !quiet;
    Ok(source.resolve(&hub)?)
}

/// Resolves `model` (a folder or hub id), checks the checkpoint, and loads it in f32.
pub fn load(model: &str, revision: Option<&str>, quiet: bool) -> anyhow::Result<LoadedModel> {
    let resolved = resolve(model, revision, quiet)?;
    let checkpoint = Checkpoint::open(&resolved.dir)?;
    let tokenizer = Tokenizer::from_dir(&resolved.dir, checkpoint.spec().bos_token_id)?;
    let engine = Engine::load(&checkpoint)?;
    Ok(LoadedModel { resolved, engine, tokenizer })
}

/// Whether `model` names a GGUF file (run through llama.cpp rather than the native engine).
pub fn is_gguf(model: &str) -> bool {
    phiquant_convert::is_gguf_file(std::path::Path::new(model))
}

/// Whether `model` names an onnxruntime-genai folder (a directory with `genai_config.json`), run
/// through ONNX Runtime rather than the native engine.
pub fn is_onnx(model: &str) -> bool {
    phiquant_runtime::is_onnx_folder(std::path::Path::new(model))
}

/// The execution provider a command runs an ONNX folder on.
#[derive(Debug, clap::Args)]
pub struct DeviceArg {
    /// Execution provider for an ONNX model folder: cpu, cuda or dml.
    ///
    /// Default: the provider the folder's genai_config.json names (cpu when it names none).
    /// `--device cpu` runs any ONNX folder on ONNX Runtime's CPU provider, which checks a
    /// graph's numbers where its own provider is missing. cuda needs the onnxruntime-gpu library,
    /// dml the onnxruntime-directml one (Windows). Checkpoints (the native engine) and GGUF files
    /// (llama.cpp) run on the CPU only.
    #[arg(long, value_enum)]
    pub device: Option<DeviceName>,
}

/// The values of `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceName {
    Cpu,
    Cuda,
    Dml,
}

impl DeviceArg {
    /// The device for an ONNX folder (`None`: the folder's own).
    pub fn onnx(&self) -> Option<Device> {
        self.device.map(|d| match d {
            DeviceName::Cpu => Device::Cpu,
            DeviceName::Cuda => Device::Cuda,
            DeviceName::Dml => Device::DirectMl,
        })
    }

    /// Refuses a device other than the CPU for a model that runs on `runner` (the CPU only).
    pub fn cpu_only(&self, runner: &str) -> anyhow::Result<()> {
        match self.onnx() {
            None | Some(Device::Cpu) => Ok(()),
            Some(device) => anyhow::bail!(
                "--device {}: {runner} runs on the CPU only; other devices are for ONNX model \
                 folders (with genai_config.json)",
                device.as_str()
            ),
        }
    }
}
