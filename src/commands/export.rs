//! `phiquant export`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use phiquant_convert::{
    ArtefactFormat, Origin, Weights, find_target,
    gguf::{GgufScheme, export_gguf},
};
use phiquant_quant::BlockFormat;
use phiquant_runtime::Checkpoint;

/// Convert a checkpoint into artefacts for each --target.
///
/// Each target is written into --out: GGUF targets as `<target>.gguf`. Files are written under a
/// temporary name and renamed when complete, so an interrupted export leaves nothing half-written.
/// Tensors are read, quantized and written one at a time.
///
/// Examples:
///   phiquant export --model ./stories260K --target gguf-q4_0 --target gguf-f16 --out ./out
///   phiquant export --model microsoft/Phi-3-mini-4k-instruct --target gguf-q4_k_m --out ./out
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Checkpoint folder, or hub id `org/name`.
    #[arg(long)]
    pub model: String,

    /// Hub branch, tag or commit (default: main; only for hub ids).
    #[arg(long)]
    pub revision: Option<String>,

    /// A target from `phiquant targets` (repeat for several).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,

    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,

    /// GGUF: store every quantized tensor in the target's base type, as `llama-quantize --pure`
    /// (without it the output matrix gets 6 bits, and gguf-q4_k_m its full mixture).
    #[arg(long)]
    pub pure: bool,
}

fn gguf_scheme(target: &str, pure: bool) -> anyhow::Result<GgufScheme> {
    let t = find_target(target)
        .with_context(|| format!("--target {target}: unknown target (see `phiquant targets`)"))?;
    match (t.format, t.weights) {
        (ArtefactFormat::Gguf, Weights::Gguf { base, mixture }) => {
            Ok(GgufScheme { base, q4_k_m: mixture.is_some() && !pure, pure })
        }
        _ => Err(phiquant_convert::Error::Target {
            target: target.into(),
            reason: "ONNX export is not implemented yet; GGUF targets (gguf-*) are".into(),
        }
        .into()),
    }
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every target before any work starts.
    let schemes = args
        .targets
        .iter()
        .map(|t| Ok((t.clone(), gguf_scheme(t, args.pure)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resolved = super::model::resolve(&args.model, args.revision.as_deref(), quiet)?;
    let ckpt = Checkpoint::open(&resolved.dir)?;
    let name = match &resolved.origin {
        Origin::Hub { repo, .. } => repo.rsplit('/').next().unwrap_or(repo).to_string(),
        Origin::Local { path } => std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let mut lines = String::new();
    for (target, scheme) in schemes {
        let path = args.out.join(format!("{target}.gguf"));
        let done = export_gguf(&ckpt, &resolved.dir, &name, &scheme, &path)?;
        let kind = if scheme.base == BlockFormat::F32 {
            "f32".to_string()
        } else {
            scheme.base.name().to_string()
        };
        lines.push_str(&format!(
            "{target}: {} ({} tensors, {} bytes, {kind})\n",
            done.path.display(),
            done.tensors,
            done.bytes
        ));
    }
    super::print(&lines)?;
    Ok(ExitCode::SUCCESS)
}
