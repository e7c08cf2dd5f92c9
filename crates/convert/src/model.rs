//! A model opened for export, whatever it was given as: a checkpoint folder (local or from the
//! Hub) or a GGUF file. Every writer works from the same three things: a [`WeightSource`] that
//! hands out tensors under their Hugging Face names, the [`DecoderSpec`] they belong to, and the
//! tokenizer and generation files ([`AuxFiles`]).

use std::sync::Arc;

use phiquant_runtime::{
    AuxFiles, Checkpoint, DecoderSpec, WeightSource,
    gguf::{GgufModel, GgufValue},
};

use crate::{Error, ModelKind, Origin, ResolvedModel, gguf::general_name};

/// A model's weights, description and tokenizer, ready to be written as any target.
pub struct SourceModel {
    weights: Arc<dyn WeightSource + Send + Sync>,
    aux: AuxFiles,
    name: String,
    gguf_tokenizer: Option<Vec<(String, GgufValue)>>,
    gguf_general: Vec<(String, GgufValue)>,
}

/// The `general.*` keys a GGUF export computes itself rather than copying from a GGUF input.
const COMPUTED_GENERAL_KEYS: [&str; 7] = [
    "general.architecture",
    "general.type",
    "general.name",
    "general.size_label",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
];

impl std::fmt::Debug for SourceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceModel")
            .field("spec", self.spec())
            .field("aux", &self.aux.origin())
            .field("name", &self.name)
            .finish()
    }
}

impl SourceModel {
    /// Opens and checks `model`: a checkpoint folder through [`Checkpoint::open`], a GGUF file
    /// through [`GgufModel::open`] (its tokenizer rebuilt as Hugging Face files).
    pub fn open(model: &ResolvedModel) -> Result<SourceModel, Error> {
        match model.kind {
            ModelKind::Checkpoint => {
                let ckpt = Checkpoint::open(&model.dir)?;
                let folder = match &model.origin {
                    Origin::Hub { repo, .. } => repo.rsplit('/').next().unwrap_or(repo).to_string(),
                    Origin::Local { path } => std::fs::canonicalize(path)
                        .ok()
                        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .unwrap_or_else(|| "model".into()),
                };
                Ok(SourceModel {
                    aux: AuxFiles::from_dir(&model.dir)?,
                    weights: Arc::new(ckpt),
                    name: general_name(&folder),
                    gguf_tokenizer: None,
                    gguf_general: Vec::new(),
                })
            }
            ModelKind::Gguf => {
                let gguf = GgufModel::open(&model.dir)?;
                let aux = AuxFiles::from_gguf(gguf.file(), gguf.spec())?;
                let file = gguf.file();
                let name = match file.get("general.name").and_then(GgufValue::as_str) {
                    Some(n) => n.to_string(),
                    None => general_name(
                        &model.dir.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default(),
                    ),
                };
                let keys = |keep: &dyn Fn(&str) -> bool| -> Vec<(String, GgufValue)> {
                    file.metadata().iter().filter(|(k, _)| keep(k)).cloned().collect()
                };
                let tokenizer = keys(&|k| k.starts_with("tokenizer."));
                let general =
                    keys(&|k| k.starts_with("general.") && !COMPUTED_GENERAL_KEYS.contains(&k));
                Ok(SourceModel {
                    weights: Arc::new(gguf),
                    aux,
                    name,
                    gguf_tokenizer: Some(tokenizer),
                    gguf_general: general,
                })
            }
        }
    }

    /// The weights, under their Hugging Face names.
    pub fn weights(&self) -> &dyn WeightSource {
        self.weights.as_ref()
    }

    /// The weights, shared (a transform keeps the tensors it does not change from them).
    pub fn shared_weights(&self) -> Arc<dyn WeightSource + Send + Sync> {
        Arc::clone(&self.weights)
    }

    /// The same model (tokenizer, name, GGUF keys) with other weights of the same spec, such as
    /// AWQ's transformed ones ([`crate::awq::awq_transform`]).
    pub fn with_weights(&self, weights: Arc<dyn WeightSource + Send + Sync>) -> SourceModel {
        SourceModel {
            weights,
            aux: self.aux.clone(),
            name: self.name.clone(),
            gguf_tokenizer: self.gguf_tokenizer.clone(),
            gguf_general: self.gguf_general.clone(),
        }
    }

    /// The model.
    pub fn spec(&self) -> &DecoderSpec {
        self.weights.spec()
    }

    /// The tokenizer and generation files: a folder's own, or those rebuilt from a GGUF.
    pub fn aux_files(&self) -> &AuxFiles {
        &self.aux
    }

    /// The name GGUF artefacts carry as `general.name`: a GGUF input's own, else the folder or
    /// repository name as llama.cpp's converter spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptive `general.*` keys of a GGUF input (license, organization, base models
    /// ...), copied into GGUF artefacts; empty for a checkpoint.
    pub fn gguf_general_keys(&self) -> &[(String, GgufValue)] {
        &self.gguf_general
    }

    /// The `tokenizer.*` keys of a GGUF input, copied as they are into GGUF artefacts (so that
    /// llama.cpp tokenizes a re-exported file exactly as the original); `None` for a checkpoint.
    pub fn gguf_tokenizer_keys(&self) -> Option<&[(String, GgufValue)]> {
        self.gguf_tokenizer.as_deref()
    }
}
