//! Sources, targets and (from later issues on) the export pipeline and writers of phiquant.
//!
//! This crate owns the path from a `--model` argument to artefacts: finding the model (a local
//! checkpoint folder, a GGUF file, or a Hugging Face Hub repository fetched into the standard
//! cache), the table of export targets with their exact weight schemes, the reports about how a
//! model fits them, and the writers.
//!
//! # Brief overview
//! - [`ModelSource::parse`] reads `--model`/`--revision`; [`ModelSource::resolve`] returns a
//!   [`ResolvedModel`], downloading through [`HubOptions`] (the `HF_*` environment) when needed.
//! - [`SourceModel::open`] opens it for export: weights under Hugging Face names, the model's
//!   spec, and its tokenizer files, whether it came as a folder or a GGUF file.
//! - [`gguf::export_gguf`] writes GGUF targets, [`onnx::export_onnx`] onnxruntime-genai folders,
//!   [`hf::export_hf`] Hugging Face folders.
//! - [`awq::awq_transform`] runs AWQ against a target's quantizer
//!   ([`awq::LinearQuantizers`]) and gives a transformed model that any writer takes through
//!   [`SourceModel::with_weights`].
//! - [`Staged`] writes an artefact under a temporary name and renames it into place when
//!   complete; [`remove_partials`] clears every unfinished one on an interruption.
//! - [`Manifest`] is an artefact's `manifest.json`: source hashes, the scheme, files, AWQ and
//!   verification summaries; its [`ManifestInputs`] decide whether a re-run can skip it.
//! - [`TARGETS`] lists every target ([`Target`]) and [`target_fit`] says how one fits a model.
//! - [`inspect`] opens and checks a checkpoint and builds an [`InspectReport`].
//!
//! # Example
//! ```no_run
//! use phiquant_convert::{HubOptions, ModelSource, inspect};
//!
//! let source = ModelSource::parse("microsoft/Phi-3-mini-4k-instruct", None)?;
//! let model = source.resolve(&HubOptions::from_env())?;
//! let report = inspect(&model)?;
//! println!("{report}");
//! # Ok::<(), phiquant_convert::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod artefact;
pub mod awq;
mod error;
pub mod gguf;
pub mod hf;
mod hub;
mod inspect;
mod manifest;
mod model;
pub mod onnx;
mod source;
mod staging;
mod target;

pub use crate::{
    artefact::{ArtefactWeights, artefact_weights},
    error::Error,
    hub::{AUX_FILES, HubOptions, HubSnapshot, check_revision, fetch, is_repo_id, repo_cache_dir},
    inspect::{DtypeUsage, FileReport, INSPECT_SCHEMA_VERSION, InspectReport, RopeReport, inspect},
    manifest::{
        FileRecord, MANIFEST_FILE, MANIFEST_SCHEMA_VERSION, Manifest, ManifestInputs, SourceRecord,
        hash_file, manifest_path, sha256_hex,
    },
    model::SourceModel,
    source::{ModelKind, ModelSource, Origin, ResolvedModel, is_gguf_file},
    staging::{ScratchFile, Staged, remove_partials},
    target::{
        Algo, ArtefactFormat, GroupFit, QuantOverrides, TARGETS, Target, TargetFit, Weights,
        find_target, group_fits, target_fit,
    },
};
