//! `phiquant export`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use phiquant_convert::{
    Algo, Origin, QuantOverrides, Weights, find_target,
    gguf::{GgufScheme, export_gguf},
    onnx::{OnnxScheme, OnnxWeights, export_onnx},
};
use phiquant_quant::BlockFormat;
use phiquant_runtime::Checkpoint;

/// Convert a checkpoint into artefacts for each --target.
///
/// Each target is written into --out: GGUF targets as `<target>.gguf`, ONNX targets as a folder
/// `<target>/` (model.onnx, model.onnx.data, genai_config.json, tokenizer files) that
/// onnxruntime-genai loads as it is. Files are written under a
/// temporary name and renamed when complete, so an interrupted export leaves nothing half-written.
/// Tensors are read, quantized and written one at a time.
///
/// Examples:
///   phiquant export --model ./stories260K --target gguf-q4_0 --target gguf-f16 --out ./out
///   phiquant export --model microsoft/Phi-3-mini-4k-instruct --target gguf-q4_k_m --out ./out
///   phiquant export --model ./Phi-4-mini-instruct --target cpu-int4 --target cuda-fp16 --out ./out
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

/// What one `--target` asks for.
enum Plan {
    Gguf(GgufScheme),
    Onnx(OnnxScheme),
}

fn plan(target: &str, args: &Args) -> anyhow::Result<Plan> {
    let t = find_target(target)
        .with_context(|| format!("--target {target}: unknown target (see `phiquant targets`)"))?;
    let weights = t.weights_with(&args.overrides())?;
    if let Some(scheme) = OnnxScheme::for_target(t, weights) {
        if args.pure {
            return Err(phiquant_convert::Error::Target {
                target: target.into(),
                reason: "--pure applies to GGUF targets".into(),
            }
            .into());
        }
        return Ok(Plan::Onnx(scheme));
    }
    match weights {
        Weights::Gguf { base, mixture } => Ok(Plan::Gguf(GgufScheme {
            base,
            q4_k_m: mixture.is_some() && !args.pure,
            pure: args.pure,
        })),
        _ => unreachable!("targets are ONNX or GGUF"),
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
    for (target, plan) in plans {
        match plan {
            Plan::Gguf(scheme) => {
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
            Plan::Onnx(scheme) => {
                let dir = args.out.join(&target);
                let done = export_onnx(&ckpt, &resolved.dir, &scheme, &dir, &mut |_, _| {})?;
                lines.push_str(&format!(
                    "{target}: {} ({} nodes, {} initializers, {} bytes)\n",
                    done.dir.display(),
                    done.nodes,
                    done.initializers,
                    done.bytes
                ));
            }
        }
    }
    super::print(&lines)?;
    Ok(ExitCode::SUCCESS)
}
