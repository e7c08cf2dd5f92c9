//! `phiquant export`.

use std::{path::PathBuf, process::ExitCode};

use phiquant_convert::{Algo, QuantOverrides, Target, find_target};

use super::{
    pipeline::{CalibArgs, Job, Plan, Settings},
    progress::Progress,
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
/// Int4 targets quantize with round-to-nearest (RTN) or AWQ (--algo awq, the default of
/// dml-int4; also for gguf-q4_0, gguf-q4_1 and gguf-q4_k_m): AWQ runs the model layer by layer
/// over calibration text (--calib, or text the model writes itself), scales and clips each
/// layer's weights against the target's own quantizer, then writes them as RTN would. A line per
/// layer on stderr gives the chosen scales and how much they lower the error (not with --quiet).
///
/// Examples:
///   phiquant export --model ./stories260K --target gguf-q4_0 --target gguf-f16 --out ./out
///   phiquant export --model microsoft/Phi-3-mini-4k-instruct --target gguf-q4_k_m --out ./out
///   phiquant export --model ./model.Q8_0.gguf --target hf-bf16 --target gguf-q4_0 --out ./out
///   phiquant export --model ./Phi-4-mini-instruct --target cpu-int4 --target cuda-fp16 --out ./out
///   phiquant export --model ./Phi-4-mini-instruct --target dml-int4 --calib wiki.txt --out ./out
///   phiquant export --model ./SmolLM2-135M --target cpu-int4 --algo awq --group-size 128 --out ./out
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

    /// Int4 targets: round-to-nearest or AWQ (default: the target's; AWQ for dml-int4).
    ///
    /// Applies to the int4 ONNX targets and to gguf-q4_0, gguf-q4_1 and gguf-q4_k_m (AWQ
    /// prepares the weights llama.cpp's quantizer then rounds); with several targets it goes to
    /// those, and it is an error when none is given. AWQ reads calibration text: see --calib.
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

    #[command(flatten)]
    pub calib: CalibArgs,

    /// Print results as JSON Lines on stdout (one object per artefact: target, path, manifest,
    /// files, bytes, scheme, verify summary) and progress as JSON Lines events on stderr.
    #[arg(long)]
    pub json: bool,

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
    /// Activation-aware weight quantization: weights scaled and clipped on calibration text.
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

/// Checks that every option given applies to some target, before any work starts.
fn check_options(args: &Args, plans: &[(String, Plan)]) -> anyhow::Result<()> {
    let o = args.overrides();
    let int4_onnx = plans.iter().any(|(_, p)| p.int4_onnx());
    let onnx_only = QuantOverrides { algo: None, ..o };
    if let Some(opt) = onnx_only.first_option()
        && !int4_onnx
    {
        anyhow::bail!(
            "{opt} applies to int4 ONNX targets (cpu-int4, mobile-int4, cuda-int4, dml-int4); \
             none was given (float weights have nothing to override, and GGUF formats fix \
             their own blocks)"
        );
    }
    let takes_algo = args.targets.iter().filter_map(|t| find_target(t)).any(Target::takes_algo);
    if o.algo.is_some() && !takes_algo {
        anyhow::bail!(
            "--algo applies to int4 targets (cpu-int4, mobile-int4, cuda-int4, dml-int4, \
             gguf-q4_0, gguf-q4_1, gguf-q4_k_m); none was given (float weights and gguf-q8_0 \
             have no 4-bit rounding to search)"
        );
    }
    if let Some((opt, _)) = args.calib.first_given()
        && !plans.iter().any(|(_, p)| p.awq())
    {
        anyhow::bail!(
            "{opt} applies to targets quantized with AWQ (--algo awq, or dml-int4's default); \
             none is"
        );
    }
    args.calib.check()?;
    Ok(())
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every target and option before any work starts.
    let overrides = args.overrides();
    let plans = args
        .targets
        .iter()
        .map(|t| Ok((t.clone(), Plan::of(t, &overrides, args.pure)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_options(&args, &plans)?;
    if args.verify {
        // The limits given replace every target's defaults: check them before any work.
        args.verify_run.gates.limits(phiquant_verify::Precision::Fp32)?;
    } else if let Some(flag) =
        args.verify_run.first_given().or(args.verify_device.map(|_| "--verify-device"))
    {
        anyhow::bail!("{flag} applies to --verify, which was not given");
    }
    let jobs: Vec<Job> = plans
        .into_iter()
        .map(|(target, plan)| {
            let dest = match plan {
                Plan::Gguf { .. } => args.out.join(format!("{target}.gguf")),
                Plan::Onnx { .. } | Plan::Hf(_) => args.out.join(&target),
            };
            Job { target, plan, dest, gguf_in_folder: false }
        })
        .collect();
    let settings = Settings {
        model: &args.model,
        revision: args.revision.as_deref(),
        calib: &args.calib,
        verify: args.verify.then_some((&args.verify_run, args.verify_device)),
        reports: &args.out,
        skip_current: false,
    };
    super::pipeline::run(&jobs, &settings, &Progress::new(quiet, args.json))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use phiquant_convert::gguf::GgufScheme;
    use phiquant_quant::BlockFormat;

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
        let plan = |t: &str, a: &Args| Plan::of(t, &a.overrides(), a.pure);
        assert_eq!(plan("hf-bf16", &args).unwrap(), Plan::Hf(BlockFormat::Bf16));
        assert_eq!(
            plan("gguf-q4_k_m", &args).unwrap(),
            Plan::Gguf {
                scheme: GgufScheme { base: BlockFormat::Q4K, q4_k_m: false, pure: true },
                awq: false
            }
        );
        assert!(matches!(plan("cpu-int4", &args).unwrap(), Plan::Onnx { awq: false, .. }));
        assert!(matches!(plan("dml-int4", &args).unwrap(), Plan::Onnx { awq: true, .. }));
        assert!(plan("hf-f8", &args).unwrap_err().to_string().contains("unknown target"));
    }

    #[test]
    fn parses_awq_flags() {
        let cli = Cli::try_parse_from([
            "phiquant",
            "export",
            "--model",
            "m",
            "--target",
            "gguf-q4_0",
            "--out",
            "o",
            "--algo",
            "awq",
            "--calib",
            "c.txt",
            "--calib-samples",
            "32",
            "--calib-len",
            "256",
            "--calib-seed",
            "7",
        ])
        .unwrap();
        let Command::Export(args) = cli.command else { panic!("not export") };
        assert_eq!(args.algo, Some(AlgoArg::Awq));
        assert_eq!(args.calib.calib.as_deref(), Some(std::path::Path::new("c.txt")));
        let c = &args.calib;
        assert_eq!((c.calib_samples, c.calib_len, c.calib_seed), (Some(32), Some(256), Some(7)));
        let plan = Plan::of("gguf-q4_0", &args.overrides(), args.pure).unwrap();
        let plans = vec![("gguf-q4_0".to_string(), plan)];
        assert!(plans[0].1.awq());
        assert!(check_options(&args, &plans).is_ok());
        assert!(
            Cli::try_parse_from([
                "phiquant",
                "export",
                "--model",
                "m",
                "--target",
                "t",
                "--out",
                "o",
                "--calib-samples",
                "x"
            ])
            .is_err()
        );
    }
}
