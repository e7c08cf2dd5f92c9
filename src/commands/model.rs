//! Glue shared by the commands that run a model: `--model` to a loaded engine and tokenizer.

use phiquant_convert::{HubOptions, ModelSource, ResolvedModel};
use phiquant_runtime::{Checkpoint, Engine, Tokenizer, WeightSource};

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
