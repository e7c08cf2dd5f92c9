//! Glue shared by the commands that run a model: `--model` to a loaded engine and tokenizer.

use phiquant_convert::{HubOptions, ModelSource, ResolvedModel};
use phiquant_runtime::{Checkpoint, Engine, Tokenizer, WeightSource};

/// A model ready to run.
pub struct LoadedModel {
    pub resolved: ResolvedModel,
    pub engine: Engine,
    pub tokenizer: Tokenizer,
}

/// Resolves `model` (a folder or hub id), checks the checkpoint, and loads it in f32.
pub fn load(model: &str, revision: Option<&str>, quiet: bool) -> anyhow::Result<LoadedModel> {
    let source = ModelSource::parse(model, revision)?;
    let mut hub = HubOptions::from_env();
    hub.progress = !quiet;
    let resolved = source.resolve(&hub)?;
    let checkpoint = Checkpoint::open(&resolved.dir)?;
    let tokenizer = Tokenizer::from_dir(&resolved.dir, checkpoint.spec().bos_token_id)?;
    let engine = Engine::load(&checkpoint)?;
    Ok(LoadedModel { resolved, engine, tokenizer })
}

/// Whether `model` names a GGUF file (run through llama.cpp rather than the native engine).
pub fn is_gguf(model: &str) -> bool {
    let p = std::path::Path::new(model);
    p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
