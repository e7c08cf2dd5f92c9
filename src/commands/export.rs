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
use phiquant_verify::ReportSet;

use super::verify::{
    Baseline, EXIT_FAILED, Inputs, Job, report_failures, verify_here, write_reports,
};

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
///   phiquant export --model ./model --target cpu-int4 --target gguf-q8_0 --out ./out --verify
///
/// --verify checks each target right after it is written, as `phiquant verify` does, against
/// the model exported from (a GGUF input: its dequantized weights) in the native engine at f32:
/// perplexity and KL divergence on --corpus (a built-in text by default) and a greedy
/// generation check. Gate defaults by the precision of the target's weights:
///   precision  ppl_ratio <=  kld_mean <=  same_top_p >=  degenerate_prompts <=
///   int4       1.10          0.10         85%            0
///   int8       1.01          0.01         95%            0
///   fp16       1.005         0.002        97%            0
///   fp32       1.001         0.0002       99%            0
/// (--max-ppl-ratio, --max-mean-kld and --min-same-top replace them for every target). The
/// reports are written to --out as verify.json, verify.md and verify.html. Each target is
/// verified on its own device (cuda targets on CUDA, dml on DirectML) unless --verify-device
/// says otherwise. When a gate fails, the remaining targets are still written and verified,
/// and the command then exits 1, naming the failed gates.
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

    /// Verify each target after writing it (see above and `phiquant verify --help`).
    #[arg(long)]
    pub verify: bool,

    /// With --verify: the device every ONNX target is verified on: cpu, cuda[:N] or dml[:N]
    /// (default: each target's own; GGUF and Hugging Face targets run on the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub verify_device: Option<phiquant_runtime::DeviceSpec>,

    /// With --verify: what is measured and the gates (the options of `phiquant verify`).
    #[command(flatten)]
    pub verify_run: super::verify::RunArgs,
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
    if args.verify {
        // The limits given replace every target's defaults: check them before any work.
        args.verify_run.gates.limits(phiquant_verify::Precision::Fp32)?;
    } else {
        if let Some(flag) =
            args.verify_run.first_given().or(args.verify_device.map(|_| "--verify-device"))
        {
            anyhow::bail!("{flag} applies to --verify, which was not given");
        }
    }
    let resolved = super::model::resolve(&args.model, args.revision.as_deref(), quiet)?;
    let model = SourceModel::open(&resolved)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    // The baseline of --verify: the source itself, its engine loaded at the first target.
    let mut check = if args.verify {
        let baseline = Baseline::borrowed(&model, &args.model)?;
        let inputs = Inputs::read(&args.verify_run, &baseline)?;
        Some((baseline, inputs, Vec::new()))
    } else {
        None
    };
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
        if let Some((baseline, inputs, reports)) = &mut check {
            let artefact = match plan {
                Plan::Gguf(_) => args.out.join(format!("{target}.gguf")),
                Plan::Onnx(_) | Plan::Hf(_) => args.out.join(&target),
            };
            let job = Job {
                artefact: &artefact,
                target: Some(&target),
                device: args.verify_device,
                precision: None,
            };
            let report = verify_here(&job, &args.verify_run, baseline, inputs)
                .with_context(|| format!("--target {target}: --verify"))?;
            let agreement = report
                .greedy_agreement
                .map_or(String::new(), |a| format!(", greedy agreement {:.1}%", a * 100.0));
            lines.push_str(&format!(
                "{target}: verified on {} ({}): PPL ratio {:.4}, mean KLD {:.5}, same top \
                 {:.2}%{agreement}: {}\n",
                report.device,
                report.backend,
                report.ppl_ratio,
                report.kld_mean,
                report.same_top_p * 100.0,
                if report.passed { "pass" } else { "FAIL" }
            ));
            reports.push(report);
        }
    }
    super::print(&lines)?;
    if let Some((_, _, reports)) = check {
        let out = |name: &str| args.out.join(name);
        let (json, md, html) = (out("verify.json"), out("verify.md"), out("verify.html"));
        let set = ReportSet::new(reports);
        std::fs::write(&json, set.to_json())
            .with_context(|| format!("writing {}", json.display()))?;
        write_reports(&set.reports, None, Some(&md), Some(&html))?;
        if report_failures(&set.reports) {
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
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
