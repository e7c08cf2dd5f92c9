//! `phiquant export`.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use phiquant_convert::{
    Algo, ArtefactFormat, QuantOverrides, SourceModel, Target, Weights,
    awq::{
        AwqOptions, Calibration, DEFAULT_CALIB_LEN, DEFAULT_CALIB_SAMPLES, LinearQuantizers,
        MAX_CALIB_SAMPLES, awq_transform, check_calib_shape,
    },
    find_target,
    gguf::{GgufScheme, export_gguf},
    hf::export_hf,
    onnx::{OnnxScheme, OnnxWeights, export_onnx},
};
use phiquant_quant::BlockFormat;
use phiquant_runtime::{Engine, Tokenizer};
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

    /// AWQ: calibration text, a UTF-8 file (default: text the model writes itself).
    ///
    /// The file is tokenized whole and cut into --calib-samples windows of --calib-len tokens
    /// at evenly spaced offsets (BOS first when the tokenizer adds one); a file too short for
    /// them is an error. Without it the model samples its own text from its BOS token
    /// (temperature 1, seeded by --calib-seed): no corpus is needed, but generating
    /// samples x len tokens takes a while and holds the whole model in memory meanwhile.
    /// Only with a target quantized by AWQ.
    #[arg(long)]
    pub calib: Option<PathBuf>,

    /// AWQ: calibration windows (default 128).
    #[arg(long)]
    pub calib_samples: Option<usize>,

    /// AWQ: tokens per calibration window (default 512, or the model's context when shorter).
    #[arg(long)]
    pub calib_len: Option<usize>,

    /// AWQ: seed of the self-generated calibration text (default 0; ignored with --calib).
    #[arg(long)]
    pub calib_seed: Option<u64>,

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

/// How one target is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Gguf { scheme: GgufScheme, awq: bool },
    Hf(BlockFormat),
    Onnx { scheme: OnnxScheme, awq: bool },
}

impl Plan {
    fn awq(&self) -> bool {
        matches!(self, Plan::Gguf { awq: true, .. } | Plan::Onnx { awq: true, .. })
    }
}

fn plan(target: &str, args: &Args) -> anyhow::Result<Plan> {
    let t = find_target(target)
        .with_context(|| format!("--target {target}: unknown target (see `phiquant targets`)"))?;
    let weights = t.weights_with(&args.overrides())?;
    let awq = Target::algo_of(&weights) == Algo::Awq;
    if let Some(scheme) = OnnxScheme::for_target(t, weights) {
        return Ok(Plan::Onnx { scheme, awq });
    }
    match (t.format, weights) {
        (ArtefactFormat::Gguf, Weights::Gguf { base, mixture, .. }) => Ok(Plan::Gguf {
            scheme: GgufScheme { base, q4_k_m: mixture.is_some() && !args.pure, pure: args.pure },
            awq,
        }),
        (ArtefactFormat::Hf, Weights::Float { dtype }) => Ok(Plan::Hf(dtype)),
        _ => unreachable!("every target is ONNX, GGUF or a Hugging Face folder"),
    }
}

/// Checks that every option given applies to some target, before any work starts.
fn check_options(args: &Args, plans: &[(String, Plan)]) -> anyhow::Result<()> {
    let o = args.overrides();
    let int4_onnx = plans.iter().any(|(_, p)| {
        matches!(p, Plan::Onnx { scheme: OnnxScheme { weights: OnnxWeights::Int4 { .. }, .. }, .. })
    });
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
    let calib_opt = [
        args.calib.as_ref().map(|_| "--calib"),
        args.calib_samples.map(|_| "--calib-samples"),
        args.calib_len.map(|_| "--calib-len"),
        args.calib_seed.map(|_| "--calib-seed"),
    ]
    .into_iter()
    .flatten()
    .next();
    if let Some(opt) = calib_opt
        && !plans.iter().any(|(_, p)| p.awq())
    {
        anyhow::bail!(
            "{opt} applies to targets quantized with AWQ (--algo awq, or dml-int4's default); \
             none is"
        );
    }
    if let Some(n) = args.calib_samples
        && (n == 0 || n > MAX_CALIB_SAMPLES)
    {
        anyhow::bail!("--calib-samples {n}: expected 1 to {MAX_CALIB_SAMPLES}");
    }
    if let Some(n) = args.calib_len
        && n < 2
    {
        anyhow::bail!("--calib-len {n}: expected at least 2 tokens");
    }
    Ok(())
}

/// Writes one line to stderr (progress), unless `quiet`.
fn note(quiet: bool, line: &str) {
    if !quiet {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// The calibration windows of the AWQ targets: read from --calib, or written by the model.
fn calibration(
    args: &Args,
    text: Option<&str>,
    model: &SourceModel,
    quiet: bool,
) -> anyhow::Result<Calibration> {
    let spec = model.spec();
    let samples = args.calib_samples.unwrap_or(DEFAULT_CALIB_SAMPLES);
    let len = args.calib_len.unwrap_or(DEFAULT_CALIB_LEN.min(spec.max_position_embeddings));
    check_calib_shape(samples, len, spec.max_position_embeddings)?;
    if let (Some(path), Some(text)) = (&args.calib, text) {
        let tokenizer = Tokenizer::from_files(model.aux_files(), spec.bos_token_id)?;
        return Ok(Calibration::from_text(
            text,
            &path.display().to_string(),
            &tokenizer,
            samples,
            len,
        )?);
    }
    let seed = args.calib_seed.unwrap_or(0);
    note(
        quiet,
        &format!(
            "awq: no --calib: the model writes {samples} windows of {len} tokens (seed {seed})"
        ),
    );
    let engine = Engine::load(model.weights())?;
    let step = samples.div_ceil(10);
    let progress = |done: usize, total: usize| {
        if done.is_multiple_of(step) || done == total {
            note(quiet, &format!("awq: calibration text {done}/{total} windows"));
        }
    };
    Ok(Calibration::generate(&engine, samples, len, seed, &progress)?)
}

/// The quantizers AWQ searches against for an AWQ plan.
fn quantizers(target: &str, plan: &Plan, model: &SourceModel) -> anyhow::Result<LinearQuantizers> {
    Ok(match plan {
        Plan::Onnx { scheme, .. } => LinearQuantizers::for_onnx(model.spec(), scheme, target)?,
        Plan::Gguf { scheme, .. } => LinearQuantizers::for_gguf(model.spec(), scheme, target)?,
        Plan::Hf(_) => unreachable!("Hugging Face folders are never AWQ plans"),
    })
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every target and option before any work starts.
    let plans = args
        .targets
        .iter()
        .map(|t| Ok((t.clone(), plan(t, &args)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    check_options(&args, &plans)?;
    let any_awq = plans.iter().any(|(_, p)| p.awq());
    let calib_text = match (&args.calib, any_awq) {
        (Some(path), true) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --calib {}", path.display()))?,
        ),
        _ => None,
    };
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
    // The AWQ quantizers and the calibration windows, still before anything is written.
    let keys = plans
        .iter()
        .map(|(t, p)| p.awq().then(|| quantizers(t, p, &model)).transpose())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let calib = match any_awq {
        true => Some(calibration(&args, calib_text.as_deref(), &model, quiet)?),
        false => None,
    };
    drop(calib_text);
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
    // AWQ runs once per distinct quantizer; its weights serve every target that shares it and
    // are dropped after the last one.
    let mut transformed: Vec<(LinearQuantizers, String, Arc<SourceModel>)> = Vec::new();
    let mut lines = String::new();
    for (i, (target, plan)) in plans.iter().enumerate() {
        let source = match &keys[i] {
            None => None,
            Some(key) => Some(match transformed.iter().find(|(k, ..)| k == key) {
                Some((_, first, m)) => {
                    note(
                        quiet,
                        &format!(
                            "awq {target}: the same quantizer as {first}, reusing its weights"
                        ),
                    );
                    Arc::clone(m)
                }
                None => {
                    let m =
                        Arc::new(run_awq(&args, target, i, key, &model, calib.as_ref(), quiet)?);
                    transformed.push((key.clone(), target.clone(), Arc::clone(&m)));
                    m
                }
            }),
        };
        let model = source.as_deref().unwrap_or(&model);
        let awq = if plan.awq() { ", awq" } else { "" };
        let line = match *plan {
            Plan::Gguf { scheme, .. } => {
                let done = export_gguf(model, &scheme, &args.out.join(format!("{target}.gguf")))?;
                let kind = if scheme.base == BlockFormat::F32 {
                    "f32".to_string()
                } else {
                    scheme.base.name().to_string()
                };
                format!(
                    "{target}: {} ({} tensors, {} bytes, {kind}{awq})\n",
                    done.path.display(),
                    done.tensors,
                    done.bytes
                )
            }
            Plan::Onnx { scheme, .. } => {
                let done = export_onnx(model, &scheme, &args.out.join(target), &mut |_, _| {})?;
                format!(
                    "{target}: {} ({} nodes, {} initializers, {} bytes{awq})\n",
                    done.dir.display(),
                    done.nodes,
                    done.initializers,
                    done.bytes
                )
            }
            Plan::Hf(format) => {
                let done = export_hf(model, format, &args.out.join(target))?;
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
                Plan::Gguf { .. } => args.out.join(format!("{target}.gguf")),
                Plan::Onnx { .. } | Plan::Hf(_) => args.out.join(target),
            };
            let job = Job {
                artefact: &artefact,
                target: Some(target),
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
        // Weights no later target needs are dropped (with their scratch file).
        if let Some(key) = &keys[i]
            && !keys[i + 1..].iter().any(|k| k.as_ref() == Some(key))
        {
            transformed.retain(|(k, ..)| k != key);
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

/// Runs AWQ for `target` (the `index`-th) and returns the model with its transformed weights.
fn run_awq(
    args: &Args,
    target: &str,
    index: usize,
    key: &LinearQuantizers,
    model: &SourceModel,
    calib: Option<&Calibration>,
    quiet: bool,
) -> anyhow::Result<SourceModel> {
    let calib = calib.context("internal error: AWQ without calibration windows")?;
    let started = std::time::Instant::now();
    let scratch =
        args.out.join(format!(".awq-{index}-{target}.partial-{}.safetensors", std::process::id()));
    let weights = awq_transform(
        model.shared_weights(),
        calib,
        key,
        &AwqOptions::default(),
        &scratch,
        &mut |r| note(quiet, &format!("awq {target}: {r}")),
    )?;
    note(
        quiet,
        &format!(
            "awq {target}: {} layers in {:.1} s over {} windows of {} tokens",
            model.spec().num_layers,
            started.elapsed().as_secs_f64(),
            calib.windows().len(),
            calib.len()
        ),
    );
    Ok(model.with_weights(Arc::new(weights)))
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
        assert_eq!(args.calib.as_deref(), Some(std::path::Path::new("c.txt")));
        assert_eq!(
            (args.calib_samples, args.calib_len, args.calib_seed),
            (Some(32), Some(256), Some(7))
        );
        let plans = vec![("gguf-q4_0".to_string(), plan("gguf-q4_0", &args).unwrap())];
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
