//! `phiquant export`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use phiquant_convert::{
    Algo, ArtefactFormat, QuantOverrides, SourceModel, Weights, find_target,
    gguf::{GgufScheme, export_gguf},
    hf::export_hf,
    onnx::{OnnxScheme, OnnxWeights, export_onnx},
};
use phiquant_quant::BlockFormat;

/// Convert a model into artefacts for each --target.
///
/// The model is a checkpoint folder, a hub id, or a GGUF file (any type phiquant reads: F32,
/// F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K), whose weights are dequantized to f32 and whose
/// tokenizer is rebuilt from its metadata; a GGUF can so be requantized or written back as a
/// Hugging Face folder.
///
/// Each target is written into --out: GGUF targets as `<target>.gguf`, ONNX targets as a folder
/// `<target>/` (model.onnx, model.onnx.data, genai_config.json, tokenizer files) that
/// onnxruntime-genai loads as it is, Hugging Face targets (hf-f16, hf-bf16) as a folder
/// `<target>/`. Files are written under a temporary name and
/// renamed when complete, so an interrupted export leaves nothing half-written. Tensors are read,
/// converted and written one at a time.
///
/// Examples:
///   phiquant export --model ./stories260K --target gguf-q4_0 --target gguf-f16 --out ./out
///   phiquant export --model microsoft/Phi-3-mini-4k-instruct --target gguf-q4_k_m --out ./out
///   phiquant export --model ./model.Q8_0.gguf --target hf-bf16 --target gguf-q4_0 --out ./out
///   phiquant export --model ./Phi-4-mini-instruct --target cpu-int4 --target cuda-fp16 --out ./out
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

    /// Int4 ONNX targets: how codes are chosen (default: the target's).
    #[arg(long, value_enum)]
    pub algo: Option<AlgoArg>,

    /// Int4 ONNX targets: elements per quantization block along the input dimension (16, 32, 64,
    /// 128 or 256; default: the target's). A dimension that is not a multiple gets a zero-padded
    /// last block, as MatMulNBits lays it out.
    #[arg(long)]
    pub group_size: Option<usize>,

    /// Int4 ONNX targets: symmetric codes (no zero points; ONNX Runtime's scale = -m/8).
    #[arg(long, conflicts_with = "asymmetric")]
    pub symmetric: bool,

    /// Int4 ONNX targets: asymmetric codes with zero points.
    #[arg(long)]
    pub asymmetric: bool,

    /// Int4 ONNX targets: MatMulNBits accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8).
    #[arg(long)]
    pub accuracy_level: Option<u8>,
}

/// `--algo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlgoArg {
    /// Round to nearest (ONNX Runtime's MLAS quantizer).
    Rtn,
    /// Activation-aware weight quantization.
    Awq,
}

impl Args {
    fn overrides(&self) -> QuantOverrides {
        QuantOverrides {
            algo: self.algo.map(|a| match a {
                AlgoArg::Rtn => Algo::Rtn,
                AlgoArg::Awq => Algo::Awq,
            }),
            group_size: self.group_size,
            symmetric: if self.symmetric {
                Some(true)
            } else if self.asymmetric {
                Some(false)
            } else {
                None
            },
            accuracy_level: self.accuracy_level,
        }
    }
}

/// How one target is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Gguf(GgufScheme),
    Hf(BlockFormat),
    Onnx(OnnxScheme),
}

fn plan(target: &str, args: &Args) -> anyhow::Result<Plan> {
    let t = find_target(target)
        .with_context(|| format!("--target {target}: unknown target (see `phiquant targets`)"))?;
    let weights = t.weights_with(&args.overrides())?;
    if let Some(scheme) = OnnxScheme::for_target(t, weights) {
        return Ok(Plan::Onnx(scheme));
    }
    match (t.format, weights) {
        (ArtefactFormat::Gguf, Weights::Gguf { base, mixture }) => Ok(Plan::Gguf(GgufScheme {
            base,
            q4_k_m: mixture.is_some() && !args.pure,
            pure: args.pure,
        })),
        (ArtefactFormat::Hf, Weights::Float { dtype }) => Ok(Plan::Hf(dtype)),
        _ => unreachable!("every target is ONNX, GGUF or a Hugging Face folder"),
    }
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every target before any work starts.
    let plans = args
        .targets
        .iter()
        .map(|t| Ok((t.clone(), plan(t, &args)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(opt) = args.overrides().first_option() {
        let int4 = plans.iter().any(|(_, p)| {
            matches!(p, Plan::Onnx(OnnxScheme { weights: OnnxWeights::Int4 { .. }, .. }))
        });
        if !int4 {
            anyhow::bail!(
                "{opt} applies to int4 ONNX targets (cpu-int4, mobile-int4, cuda-int4, dml-int4); \
                 none was given (float weights have nothing to override, and GGUF formats fix \
                 their own blocks)"
            );
        }
    }
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
            Plan::Onnx(scheme) => {
                let done = export_onnx(&model, &scheme, &args.out.join(&target), &mut |_, _| {})?;
                format!(
                    "{target}: {} ({} nodes, {} initializers, {} bytes)\n",
                    done.dir.display(),
                    done.nodes,
                    done.initializers,
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
        assert_eq!(plan("hf-bf16", &args).unwrap(), Plan::Hf(BlockFormat::Bf16));
        assert_eq!(
            plan("gguf-q4_k_m", &args).unwrap(),
            Plan::Gguf(GgufScheme { base: BlockFormat::Q4K, q4_k_m: false, pure: true })
        );
        assert!(matches!(plan("cpu-int4", &args).unwrap(), Plan::Onnx(_)));
        assert!(plan("hf-f8", &args).unwrap_err().to_string().contains("unknown target"));
    }
}
