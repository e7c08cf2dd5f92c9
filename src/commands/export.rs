//! `phiquant export`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use phiquant_convert::{
    ArtefactFormat, SourceModel, Weights, find_target,
    gguf::{GgufScheme, export_gguf},
    hf::export_hf,
};
use phiquant_quant::BlockFormat;

/// Convert a model into artefacts for each --target.
///
/// The model is a checkpoint folder, a hub id, or a GGUF file (any type phiquant reads: F32,
/// F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K), whose weights are dequantized to f32 and whose
/// tokenizer is rebuilt from its metadata; a GGUF can so be requantized or written back as a
/// Hugging Face folder.
///
/// Each target is written into --out: GGUF targets as `<target>.gguf`, Hugging Face targets
/// (hf-f16, hf-bf16) as a folder `<target>/`. Files are written under a temporary name and
/// renamed when complete, so an interrupted export leaves nothing half-written. Tensors are read,
/// converted and written one at a time.
///
/// Examples:
///   phiquant export --model ./stories260K --target gguf-q4_0 --target gguf-f16 --out ./out
///   phiquant export --model microsoft/Phi-3-mini-4k-instruct --target gguf-q4_k_m --out ./out
///   phiquant export --model ./model.Q8_0.gguf --target hf-bf16 --target gguf-q4_0 --out ./out
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Checkpoint folder, GGUF file, or hub id `org/name`.
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
    /// (without it the output matrix gets 6 bits, and gguf-q4_k_m its full mixture). Other
    /// targets ignore it.
    #[arg(long)]
    pub pure: bool,
}

/// How one target is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Gguf(GgufScheme),
    Hf(BlockFormat),
}

fn plan(target: &str, pure: bool) -> anyhow::Result<Plan> {
    let t = find_target(target)
        .with_context(|| format!("--target {target}: unknown target (see `phiquant targets`)"))?;
    match (t.format, t.weights) {
        (ArtefactFormat::Gguf, Weights::Gguf { base, mixture }) => {
            Ok(Plan::Gguf(GgufScheme { base, q4_k_m: mixture.is_some() && !pure, pure }))
        }
        (ArtefactFormat::Hf, Weights::Float { dtype }) => Ok(Plan::Hf(dtype)),
        _ => Err(phiquant_convert::Error::Target {
            target: target.into(),
            reason: "ONNX export is not implemented yet; GGUF targets (gguf-*) and Hugging Face \
                     folders (hf-*) are"
                .into(),
        }
        .into()),
    }
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every target before any work starts.
    let plans = args
        .targets
        .iter()
        .map(|t| Ok((t.clone(), plan(t, args.pure)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resolved = super::model::resolve(&args.model, args.revision.as_deref(), quiet)?;
    let model = SourceModel::open(&resolved)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let mut lines = String::new();
    for (target, plan) in plans {
        let line = match plan {
            Plan::Gguf(scheme) => {
                let done = export_gguf(&model, &scheme, &args.out.join(format!("{target}.gguf")))?;
                let kind = if scheme.base == BlockFormat::F32 {
                    "f32".to_string()
                } else {
                    scheme.base.name().to_string()
                };
                format!(
                    "{target}: {} ({} tensors, {} bytes, {kind})\n",
                    done.path.display(),
                    done.tensors,
                    done.bytes
                )
            }
            Plan::Hf(format) => {
                let done = export_hf(&model, format, &args.out.join(&target))?;
                format!(
                    "{target}: {} ({} tensors, {} bytes, {})\n",
                    done.path.display(),
                    done.tensors,
                    done.bytes,
                    format.name().to_ascii_lowercase()
                )
            }
        };
        lines.push_str(&line);
    }
    super::print(&lines)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    #[test]
    fn parses_export_flags_and_plans_targets() {
        let cli = Cli::try_parse_from([
            "phiquant",
            "export",
            "--model",
            "m.gguf",
            "--target",
            "hf-bf16",
            "--target",
            "gguf-q4_k_m",
            "--out",
            "o",
            "--pure",
        ])
        .unwrap();
        let Command::Export(args) = cli.command else { panic!("not export") };
        assert_eq!(args.targets, ["hf-bf16", "gguf-q4_k_m"]);
        assert!(args.pure);
        assert_eq!(plan("hf-bf16", true).unwrap(), Plan::Hf(BlockFormat::Bf16));
        assert_eq!(
            plan("gguf-q4_k_m", true).unwrap(),
            Plan::Gguf(GgufScheme { base: BlockFormat::Q4K, q4_k_m: false, pure: true })
        );
        assert!(plan("cpu-int4", false).unwrap_err().to_string().contains("ONNX export"));
        assert!(plan("hf-f8", false).unwrap_err().to_string().contains("unknown target"));
    }
}
