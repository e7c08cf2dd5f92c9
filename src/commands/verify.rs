//! `phiquant verify`, and the verification `phiquant export --verify` runs after each target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use phiquant_convert::{SourceModel, artefact_weights, find_target};
use phiquant_runtime::{
    Device, DeviceSpec, Engine, LlamaCppModel, OrtModel, Tokenizer, stop_tokens_of,
};
use phiquant_verify::{
    BUILTIN_CORPUS, DEFAULT_NEW_TOKENS, DEFAULT_PROMPTS, GateLimits, Measurement, NativeRunner,
    Precision, ReportMeta, ReportSet, Runner, VerifierBuilder, VerifyReport, Workload,
};

/// Exit status for a failed gate.
pub const EXIT_FAILED: u8 = 1;

/// Tokens per chunk by default, as llama-perplexity.
const DEFAULT_CTX: usize = 512;

/// The most prompts a --prompts file may hold.
const MAX_PROMPTS: usize = 64;

/// The largest --corpus file read.
const MAX_CORPUS_BYTES: u64 = 256 << 20;

/// The most devices (processes) one verification is split over.
const MAX_DEVICES: usize = 64;

/// Verify an artefact against its full-precision model, with gates a pipeline can fail on.
///
/// The artefact runs in its consumer: an ONNX model folder (genai_config.json) in ONNX Runtime on
/// --device, a .gguf file in llama.cpp, a Hugging Face folder in the native engine. The baseline
/// (--baseline: a checkpoint folder, a hub id, or a GGUF file, whose weights are dequantized)
/// runs in the native engine at f32, on the same token ids: the corpus and the prompts are
/// tokenized once, by the baseline's tokenizer.
///
/// The corpus is cut into chunks of --ctx tokens, each evaluated on its own with BOS first, and
/// the second half of each chunk is scored, as llama.cpp's `perplexity --kl-divergence` does; the
/// report is that tool's: PPL(Q), PPL(base), their correlation, ratio and difference with
/// uncertainties, the KL divergence's mean, maximum, 99.9/99/95/90 % percentiles, median,
/// 10/5/1/0.1 % and minimum, the same for Δp = p_Q(correct) - p_base(correct) with its RMS, and
/// "same top p" (how often both models rank the same token first). Only one chunk's logits are
/// held at a time. Then a few prompts are continued greedily by both models and compared token by
/// token (first divergence, agreement), and each continuation is checked for a loop.
///
/// Gates (defaults by the precision of the artefact's weights; --precision overrides the
/// detected one, and each --max/--min flag one limit):
///   precision  ppl_ratio <=  kld_mean <=  same_top_p >=  degenerate_prompts <=
///   int4       1.10          0.10         85%            0
///   int8       1.01          0.01         95%            0
///   fp16       1.005         0.002        97%            0
///   fp32       1.001         0.0002       99%            0
/// (int4 covers 4 to 6 bits per weight: MatMulNBits int4, Q4_0, Q4_1, Q4_K_M, Q5_0, Q6_K; int8
/// covers Q8_0; fp16 covers f16 and bf16.) For comparison, llama.cpp's figures for Llama-3-8B
/// on wikitext-2: Q8_0 KLD 0.0014 and 97.7 % same top; Q4_K_M ratio 1.028, KLD 0.031, 91.9 %.
///
/// Prints the report as a table on stdout; --json, --markdown and --html write it to files.
/// Exit status: 0 every gate passed, 1 a gate failed (named on stderr), 2 an error.
///
/// Examples:
///   phiquant verify ./out/cpu-int4 --baseline ./Phi-3-mini-4k-instruct
///   phiquant verify ./out/gguf-q8_0.gguf --baseline ./model --corpus wiki.test.raw --chunks 20
///   phiquant verify ./out/cuda-int4 --baseline ./model --device cuda:1 --json report.json
///   phiquant verify ./out/cuda-int4 --baseline ./model --device cuda:0,cuda:1 --html r.html
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The artefact: an ONNX model folder, a GGUF file, or a Hugging Face folder.
    pub artefact: PathBuf,

    /// The full-precision model: checkpoint folder, hub id `org/name`, or GGUF file.
    ///
    /// It runs in phiquant's native engine at f32 (a GGUF's weights dequantized), and its
    /// tokenizer tokenizes the corpus and the prompts for both models.
    #[arg(long)]
    pub baseline: String,

    /// Hub branch, tag or commit of --baseline (default: main; only for hub ids).
    #[arg(long)]
    pub revision: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,

    /// Where the artefact runs: cpu, cuda, cuda:N, dml or dml:N (repeat, or separate by commas,
    /// to split the work over several devices).
    ///
    /// Default: the device the ONNX folder's genai_config.json names (cpu when it names none);
    /// GGUF files (llama.cpp) and Hugging Face folders (the native engine) run on the CPU only.
    /// `cuda:1` selects GPU 1 through the execution provider's device_id. With several devices,
    /// one process per device (ONNX Runtime's multi-instance pattern) verifies every N-th chunk
    /// and prompt, and their measurements are merged into one report; each GPU then needs its
    /// index (cuda:0,cuda:1). CUDA needs the onnxruntime-gpu library, DirectML the
    /// onnxruntime-directml one; where the provider or the GPU is missing this is an error.
    #[arg(long = "device", value_delimiter = ',')]
    pub devices: Vec<DeviceSpec>,

    /// The precision whose default gates apply: int4, int8, fp16 or fp32 (default: detected
    /// from the type that holds most of the artefact's weights).
    #[arg(long)]
    pub precision: Option<Precision>,

    /// The target named in the report (default: the artefact's file or folder name when it is a
    /// target's, as `export` names them, else its format).
    #[arg(long)]
    pub target: Option<String>,

    /// Write the report as JSON to this file (`-`: stdout, instead of the table).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write the report as Markdown to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Write the report as a self-contained HTML page (inline SVG charts) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,

    /// Internal: run part I of N of the work and print the raw measurement (one process of a
    /// multi-device verification).
    #[arg(long, hide = true, value_parser = parse_worker)]
    pub worker: Option<(usize, usize)>,
}

/// What is measured and how it is judged: shared by `verify` and `export --verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// UTF-8 text to score (default: a built-in text of about 2,000 tokens).
    ///
    /// For figures comparable with llama.cpp's, use wikitext-2's wiki.test.raw.
    #[arg(long)]
    pub corpus: Option<PathBuf>,

    /// Tokens per chunk (default 512, as llama-perplexity); the second half of each is scored.
    #[arg(long)]
    pub ctx: Option<usize>,

    /// Score at most N chunks (default: every whole chunk of the corpus).
    #[arg(long)]
    pub chunks: Option<usize>,

    /// Prompts for the generation check, one per line (default: four built-in prompts: a story,
    /// a fact, code, a list). Empty lines are skipped.
    #[arg(long)]
    pub prompts: Option<PathBuf>,

    /// Tokens each prompt is continued by, greedily (default 32; 0 skips the generation check).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,

    #[command(flatten)]
    pub gates: GateArgs,
}

impl RunArgs {
    /// Tokens per chunk.
    pub fn ctx(&self) -> usize {
        self.ctx.unwrap_or(DEFAULT_CTX)
    }

    /// Tokens generated per prompt.
    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens.unwrap_or(DEFAULT_NEW_TOKENS)
    }

    /// The first flag given, if any (`export` accepts them only with --verify).
    pub fn first_given(&self) -> Option<&'static str> {
        if self.corpus.is_some() {
            Some("--corpus")
        } else if self.ctx.is_some() {
            Some("--ctx")
        } else if self.chunks.is_some() {
            Some("--chunks")
        } else if self.prompts.is_some() {
            Some("--prompts")
        } else if self.max_new_tokens.is_some() {
            Some("--max-new-tokens")
        } else {
            self.gates.first_given()
        }
    }
}

/// Limits that replace the precision's defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GateArgs {
    /// Fail when PPL(Q)/PPL(base) is above R (default by precision: see above).
    #[arg(long, value_name = "R")]
    pub max_ppl_ratio: Option<f64>,

    /// Fail when the mean KL divergence (nats per token) is above K (default by precision).
    #[arg(long, value_name = "K")]
    pub max_mean_kld: Option<f64>,

    /// Fail when the same-top-token rate is below P: a fraction (0.95) or a percentage (95%)
    /// (default by precision).
    #[arg(long, value_name = "P", value_parser = parse_fraction)]
    pub min_same_top: Option<f64>,
}

impl GateArgs {
    /// The first limit given, as its flag, if any.
    pub fn first_given(&self) -> Option<&'static str> {
        if self.max_ppl_ratio.is_some() {
            Some("--max-ppl-ratio")
        } else if self.max_mean_kld.is_some() {
            Some("--max-mean-kld")
        } else if self.min_same_top.is_some() {
            Some("--min-same-top")
        } else {
            None
        }
    }

    /// `precision`'s limits with the given ones in their place.
    pub fn limits(&self, precision: Precision) -> anyhow::Result<GateLimits> {
        let mut limits = precision.limits();
        if let Some(r) = self.max_ppl_ratio {
            limits.max_ppl_ratio = r;
        }
        if let Some(k) = self.max_mean_kld {
            limits.max_mean_kld = k;
        }
        if let Some(p) = self.min_same_top {
            limits.min_same_top = p;
        }
        Ok(limits.validated()?)
    }
}

/// `0.95` or `95%` as a fraction.
fn parse_fraction(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    let v = v / scale;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` is not a fraction from 0 to 1 (or a percentage up to 100%)"));
    }
    Ok(v)
}

/// `I/N` with I < N.
fn parse_worker(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not I/N with I < N");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if i >= n || n > MAX_DEVICES {
        return Err(bad());
    }
    Ok((i, n))
}

/// A source model owned, or borrowed from an export.
enum Source<'s> {
    Owned(Box<SourceModel>),
    Borrowed(&'s SourceModel),
}

impl Source<'_> {
    fn get(&self) -> &SourceModel {
        match self {
            Source::Owned(m) => m,
            Source::Borrowed(m) => m,
        }
    }
}

/// The full-precision model: its name, tokenizer and stop tokens; the engine is loaded when
/// first needed.
pub struct Baseline<'s> {
    name: String,
    source: Source<'s>,
    tokenizer: Tokenizer,
    stop: Vec<u32>,
    engine: Option<Engine>,
    load_secs: f64,
}

impl<'s> Baseline<'s> {
    /// Opens `model` (a folder, hub id or GGUF file) without loading its weights.
    pub fn open(
        model: &str,
        revision: Option<&str>,
        quiet: bool,
    ) -> anyhow::Result<Baseline<'static>> {
        let resolved = super::model::resolve(model, revision, quiet)
            .with_context(|| format!("--baseline {model}"))?;
        let source = SourceModel::open(&resolved).with_context(|| format!("--baseline {model}"))?;
        Baseline::new(Source::Owned(Box::new(source)), model)
    }

    /// The baseline of an export: its source model, named `name`.
    pub fn borrowed(source: &'s SourceModel, name: &str) -> anyhow::Result<Baseline<'s>> {
        Baseline::new(Source::Borrowed(source), name)
    }

    fn new(source: Source<'s>, name: &str) -> anyhow::Result<Baseline<'s>> {
        let model = source.get();
        let spec = model.spec();
        let tokenizer = Tokenizer::from_files(model.aux_files(), spec.bos_token_id)?;
        let stop = stop_tokens_of(model.aux_files(), spec)?;
        Ok(Baseline {
            name: name.to_string(),
            source,
            tokenizer,
            stop,
            engine: None,
            load_secs: 0.0,
        })
    }

    /// The engine, loading every weight as f32 the first time.
    fn engine(&mut self) -> anyhow::Result<&Engine> {
        if self.engine.is_none() {
            let start = Instant::now();
            self.engine = Some(
                Engine::load(self.source.get().weights())
                    .with_context(|| format!("loading the baseline {}", self.name))?,
            );
            self.load_secs = start.elapsed().as_secs_f64();
        }
        Ok(self.engine.as_ref().unwrap_or_else(|| unreachable!("loaded above")))
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids).unwrap_or_else(|_| format!("{ids:?}"))
    }
}

/// The corpus and prompts, tokenized by the baseline.
pub struct Inputs {
    corpus_name: String,
    corpus: Vec<u32>,
    bos: Option<u32>,
    prompts: Vec<Vec<u32>>,
}

impl Inputs {
    /// Reads and tokenizes `run`'s corpus and prompts (the built-in ones where none is given).
    pub fn read(run: &RunArgs, baseline: &Baseline<'_>) -> anyhow::Result<Inputs> {
        let tok = &baseline.tokenizer;
        let (corpus_name, text) = match &run.corpus {
            Some(path) => {
                (path.display().to_string(), read_text(path, "--corpus", MAX_CORPUS_BYTES)?)
            }
            None => ("built-in".to_string(), BUILTIN_CORPUS.to_string()),
        };
        // As llama.cpp tokenizes a corpus: with special tokens, so BOS leads the stream.
        let corpus = tok.encode_prompt(&text)?;
        let texts: Vec<String> = match &run.prompts {
            Some(path) => {
                let text = read_text(path, "--prompts", 1 << 20)?;
                let lines: Vec<String> =
                    text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
                if lines.is_empty() {
                    anyhow::bail!("--prompts {}: no prompts (one per line)", path.display());
                }
                if lines.len() > MAX_PROMPTS {
                    anyhow::bail!(
                        "--prompts {}: {} prompts, at most {MAX_PROMPTS}",
                        path.display(),
                        lines.len()
                    );
                }
                lines
            }
            None => DEFAULT_PROMPTS.iter().map(|p| p.to_string()).collect(),
        };
        let prompts = texts.iter().map(|p| tok.encode_prompt(p)).collect::<Result<_, _>>()?;
        let bos = if tok.adds_bos() { tok.bos() } else { None };
        Ok(Inputs { corpus_name, corpus, bos, prompts })
    }
}

/// A text file of at most `max` bytes, naming `flag` and the path in errors.
fn read_text(path: &Path, flag: &str, max: u64) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {flag} {}", path.display()))?
        .len();
    if len > max {
        anyhow::bail!("{flag} {}: {len} bytes, more than the {max} read", path.display());
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {flag} {} (UTF-8 text)", path.display()))
}

/// What an artefact is, before it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Onnx,
    Gguf,
    Hf,
}

impl Kind {
    fn of(path: &Path) -> anyhow::Result<Kind> {
        let s = path.to_string_lossy();
        if super::model::is_onnx(&s) {
            Ok(Kind::Onnx)
        } else if super::model::is_gguf(&s) {
            Ok(Kind::Gguf)
        } else if path.join("config.json").is_file() {
            Ok(Kind::Hf)
        } else if !path.exists() {
            anyhow::bail!("{}: no such file or folder", path.display())
        } else {
            anyhow::bail!(
                "{}: not an ONNX model folder (genai_config.json), a GGUF file or a Hugging Face \
                 folder (config.json)",
                path.display()
            )
        }
    }

    fn backend(self) -> &'static str {
        match self {
            Kind::Onnx => "onnxruntime",
            Kind::Gguf => "llama.cpp",
            Kind::Hf => "native",
        }
    }

    /// Refuses a device other than the CPU where the runtime has none.
    fn check_device(self, device: Option<DeviceSpec>) -> anyhow::Result<()> {
        let runner = match self {
            Kind::Onnx => return Ok(()),
            Kind::Gguf => "llama.cpp (a GGUF file)",
            Kind::Hf => "the native engine (a Hugging Face folder)",
        };
        match device {
            None | Some(DeviceSpec { device: Device::Cpu, .. }) => Ok(()),
            Some(d) => anyhow::bail!(
                "--device {d}: phiquant runs {runner} on the CPU only; other devices are for ONNX \
                 model folders"
            ),
        }
    }
}

/// A loaded artefact.
enum Artefact {
    Onnx(Box<OrtModel>),
    Gguf(Box<LlamaCppModel>),
    Hf(Box<Engine>),
}

impl Artefact {
    fn load(path: &Path, kind: Kind, device: Option<DeviceSpec>) -> anyhow::Result<Artefact> {
        kind.check_device(device)?;
        Ok(match kind {
            Kind::Onnx => Artefact::Onnx(Box::new(OrtModel::load_on(path, device, 0)?)),
            Kind::Gguf => {
                Artefact::Gguf(Box::new(LlamaCppModel::load(path, rayon::current_num_threads())?))
            }
            Kind::Hf => {
                let ckpt = phiquant_runtime::Checkpoint::open(path)?;
                Artefact::Hf(Box::new(Engine::load(&ckpt)?))
            }
        })
    }

    /// The device it runs on, as the command line names it.
    fn device(&self) -> String {
        match self {
            Artefact::Onnx(m) => m.device_spec().to_string(),
            Artefact::Gguf(_) | Artefact::Hf(_) => "cpu".into(),
        }
    }

    fn measure(
        &mut self,
        verifier: &phiquant_verify::Verifier,
        work: &Workload<'_>,
        baseline: &mut dyn Runner,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Measurement, phiquant_verify::Error> {
        let v = verifier;
        match self {
            Artefact::Onnx(m) => v.measure_with_progress(work, baseline, m.as_mut(), progress),
            Artefact::Gguf(m) => v.measure_with_progress(work, baseline, m.as_mut(), progress),
            Artefact::Hf(e) => {
                v.measure_with_progress(work, baseline, &mut NativeRunner::new(e), progress)
            }
        }
    }
}

/// One artefact to verify.
pub struct Job<'a> {
    pub artefact: &'a Path,
    /// The target's name, when known.
    pub target: Option<&'a str>,
    /// The device (`None`: the artefact's own).
    pub device: Option<DeviceSpec>,
    pub precision: Option<Precision>,
    /// Called with (done, total) after each chunk and prompt.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

/// The target an artefact's name says it was made for, else its format.
fn target_name(path: &Path, kind: Kind) -> String {
    let name = match kind {
        Kind::Gguf => path.file_stem(),
        Kind::Onnx | Kind::Hf => path.file_name(),
    };
    let name = name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if find_target(&name).is_some() {
        return name;
    }
    match kind {
        Kind::Onnx => "onnx".into(),
        Kind::Gguf => "gguf".into(),
        Kind::Hf => "hf".into(),
    }
}

fn verifier(run: &RunArgs, shard: (usize, usize)) -> anyhow::Result<phiquant_verify::Verifier> {
    Ok(VerifierBuilder::new()
        .ctx(run.ctx())
        .chunks(run.chunks)
        .max_new_tokens(run.max_new_tokens())
        .shard(shard.0, shard.1)
        .build()?)
}

/// The precision of `job`'s artefact: given, or detected from its weights.
fn precision(job: &Job<'_>) -> anyhow::Result<Precision> {
    match job.precision {
        Some(p) => Ok(p),
        None => Ok(Precision::from_bits(artefact_weights(job.artefact)?.bits)),
    }
}

/// Verifies one artefact in this process, on one device: loads it, then the baseline's engine,
/// and measures.
pub fn verify_here(
    job: &Job<'_>,
    run: &RunArgs,
    baseline: &mut Baseline<'_>,
    inputs: &Inputs,
) -> anyhow::Result<VerifyReport> {
    let start = Instant::now();
    let kind = Kind::of(job.artefact)?;
    let precision = precision(job)?;
    let limits = run.gates.limits(precision)?;
    let verifier = verifier(run, (0, 1))?;
    let (mut measurement, device) = measure(job, kind, &verifier, baseline, inputs)?;
    measurement.timing.total_secs = start.elapsed().as_secs_f64();
    let meta = meta(job, kind, device, precision, baseline, inputs);
    Ok(VerifyReport::new(meta, &measurement, &limits, &|ids| baseline.decode(ids)))
}

/// Loads the artefact (first, so that a missing device fails fast) and the baseline's engine,
/// and runs `verifier`.
fn measure(
    job: &Job<'_>,
    kind: Kind,
    verifier: &phiquant_verify::Verifier,
    baseline: &mut Baseline<'_>,
    inputs: &Inputs,
) -> anyhow::Result<(Measurement, String)> {
    let start = Instant::now();
    let mut artefact = Artefact::load(job.artefact, kind, job.device)
        .with_context(|| format!("loading the artefact {}", job.artefact.display()))?;
    let artefact_load = start.elapsed().as_secs_f64();
    let stop = baseline.stop.clone();
    baseline.engine()?;
    let baseline_load = baseline.load_secs;
    let engine = baseline.engine.as_ref().unwrap_or_else(|| unreachable!("loaded above"));
    let work =
        Workload { corpus: &inputs.corpus, bos: inputs.bos, prompts: &inputs.prompts, stop: &stop };
    let mut m = artefact
        .measure(
            verifier,
            &work,
            &mut NativeRunner::new(engine),
            job.progress.unwrap_or(&|_, _| {}),
        )
        .with_context(|| format!("verifying {}", job.artefact.display()))?;
    m.timing.artefact_load_secs = artefact_load;
    m.timing.baseline_load_secs = baseline_load;
    Ok((m, artefact.device()))
}

fn meta(
    job: &Job<'_>,
    kind: Kind,
    device: String,
    precision: Precision,
    baseline: &Baseline<'_>,
    inputs: &Inputs,
) -> ReportMeta {
    ReportMeta {
        artefact: job.artefact.display().to_string(),
        target: job.target.map_or_else(|| target_name(job.artefact, kind), str::to_string),
        backend: kind.backend().into(),
        device,
        precision,
        baseline: baseline.name.clone(),
        corpus: inputs.corpus_name.clone(),
    }
}

/// Verifies one artefact on several devices: one worker process per device, each measuring
/// every N-th chunk and prompt, merged here.
fn verify_split(
    args: &Args,
    job: &Job<'_>,
    baseline: &Baseline<'_>,
    inputs: &Inputs,
) -> anyhow::Result<VerifyReport> {
    let start = Instant::now();
    let kind = Kind::of(job.artefact)?;
    for d in &args.devices {
        kind.check_device(Some(*d))?;
        if d.device != Device::Cpu && d.index.is_none() {
            anyhow::bail!(
                "--device {d}: give each GPU's index (cuda:0,cuda:1) when verifying on several \
                 devices"
            );
        }
    }
    if args.devices.len() > MAX_DEVICES {
        anyhow::bail!("--device: {} devices, at most {MAX_DEVICES}", args.devices.len());
    }
    let precision = precision(job)?;
    let limits = args.run.gates.limits(precision)?;
    // Checked here so that a bad setting is one error, not one per worker.
    verifier(&args.run, (0, 1))?;
    let exe = std::env::current_exe().context("finding phiquant's own executable")?;
    let n = args.devices.len();
    // The workers share the CPU for the baseline: each gets its share of the threads, unless
    // RAYON_NUM_THREADS says otherwise.
    let threads = (std::thread::available_parallelism().map_or(1, |p| p.get()) / n).max(1);
    let children = args
        .devices
        .iter()
        .enumerate()
        .map(|(i, device)| {
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("--quiet")
                .arg("verify")
                .arg(job.artefact)
                .arg("--baseline")
                .arg(&args.baseline);
            if let Some(r) = &args.revision {
                cmd.arg("--revision").arg(r);
            }
            if let Some(c) = &args.run.corpus {
                cmd.arg("--corpus").arg(c);
            }
            if let Some(p) = &args.run.prompts {
                cmd.arg("--prompts").arg(p);
            }
            cmd.arg("--ctx").arg(args.run.ctx().to_string());
            if let Some(c) = args.run.chunks {
                cmd.arg("--chunks").arg(c.to_string());
            }
            cmd.arg("--max-new-tokens").arg(args.run.max_new_tokens().to_string());
            cmd.arg("--device").arg(device.to_string());
            cmd.arg("--worker").arg(format!("{i}/{n}"));
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                cmd.env("RAYON_NUM_THREADS", threads.to_string());
            }
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().with_context(|| format!("starting the worker for --device {device}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut parts = Vec::with_capacity(n);
    let mut first_error = None;
    for (child, device) in children.into_iter().zip(&args.devices) {
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for the worker for --device {device}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
            let line = line.strip_prefix("error: ").unwrap_or(line).to_string();
            first_error.get_or_insert_with(|| anyhow::anyhow!("--device {device}: {line}"));
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parts.push(Measurement::from_json(
            text.trim(),
            &format!("the worker for --device {device}"),
        )?);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut measurement = Measurement::merge(parts)?;
    measurement.timing.total_secs = start.elapsed().as_secs_f64();
    let devices: Vec<String> = args.devices.iter().map(DeviceSpec::to_string).collect();
    let meta = meta(job, kind, devices.join(","), precision, baseline, inputs);
    Ok(VerifyReport::new(meta, &measurement, &limits, &|ids| baseline.decode(ids)))
}

/// Writes the reports where the flags say; `None` skips a format.
pub fn write_reports(
    reports: &[VerifyReport],
    json: Option<&Path>,
    markdown: Option<&Path>,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    let write = |path: &Path, flag: &str, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {flag} {}", path.display()))
    };
    if let Some(path) = json.filter(|p| *p != Path::new("-")) {
        let text = match reports {
            [one] => one.to_json(),
            many => ReportSet::new(many.to_vec()).to_json(),
        };
        write(path, "--json", text)?;
    }
    if let Some(path) = markdown {
        write(path, "--markdown", phiquant_verify::markdown(reports))?;
    }
    if let Some(path) = html {
        write(path, "--html", phiquant_verify::html(reports))?;
    }
    Ok(())
}

/// One line per failed artefact on stderr, naming its failed gates.
pub fn report_failures(reports: &[VerifyReport]) -> bool {
    let mut failed = false;
    let mut err = std::io::stderr().lock();
    for r in reports.iter().filter(|r| !r.passed) {
        failed = true;
        let gates: Vec<String> = r.failed_gates().map(|g| g.describe()).collect();
        let _ = writeln!(
            err,
            "verification failed: {} ({}): {}",
            r.artefact,
            r.target,
            gates.join("; ")
        );
    }
    failed
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    // Check every setting before any work starts.
    verifier(&args.run, args.worker.unwrap_or((0, 1)))?;
    args.run.gates.limits(args.precision.unwrap_or(Precision::Fp32))?;
    if args.worker.is_some() && args.devices.len() != 1 {
        anyhow::bail!("--worker runs on exactly one --device");
    }
    let kind = Kind::of(&args.artefact)?;
    if let [device] = args.devices[..] {
        kind.check_device(Some(device))?;
    }
    let mut baseline = Baseline::open(&args.baseline, args.revision.as_deref(), quiet)?;
    let inputs = Inputs::read(&args.run, &baseline)?;
    // A bar on a terminal (never in a worker process, whose stderr is the parent's).
    let progress = super::progress::Progress::new(quiet || args.worker.is_some(), false);
    let name = args.artefact.display().to_string();
    let bar = progress.stage("verify", &name, 0, "chunks and prompts");
    let step = |done: usize, total: usize| {
        bar.set_total(total as u64);
        bar.set(done as u64);
    };
    let job = Job {
        artefact: &args.artefact,
        target: args.target.as_deref(),
        device: args.devices.first().copied(),
        precision: args.precision,
        progress: Some(&step),
    };
    if let Some(shard) = args.worker {
        let verifier = verifier(&args.run, shard)?;
        let (m, _) = measure(&job, kind, &verifier, &mut baseline, &inputs)?;
        super::print(&format!("{}\n", m.to_json()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = if args.devices.len() > 1 {
        verify_split(&args, &job, &baseline, &inputs)?
    } else {
        verify_here(&job, &args.run, &mut baseline, &inputs)?
    };
    let reports = [report];
    write_reports(&reports, args.json.as_deref(), args.markdown.as_deref(), args.html.as_deref())?;
    if args.json.as_deref() == Some(Path::new("-")) {
        super::print(&reports[0].to_json())?;
    } else {
        super::print(&phiquant_verify::terminal(&reports[0]))?;
    }
    if report_failures(&reports) {
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::commands::{Cli, Command};

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let cli =
            Cli::try_parse_from([&["phiquant", "verify", "a", "--baseline", "b"], extra].concat())?;
        let Command::Verify(args) = cli.command else { panic!("not verify") };
        Ok(args)
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.run.ctx(), a.run.chunks, a.run.max_new_tokens()), (512, None, 32));
        assert_eq!(a.run.first_given(), None);
        assert!(a.devices.is_empty() && a.precision.is_none() && a.worker.is_none());
        let a = parse(&["--device", "cuda:1", "--min-same-top", "95%", "--max-ppl-ratio", "1.01"])
            .unwrap();
        assert_eq!(a.devices, vec![DeviceSpec { device: Device::Cuda, index: Some(1) }]);
        assert_eq!(a.run.gates.min_same_top, Some(0.95));
        assert_eq!(a.run.gates.max_ppl_ratio, Some(1.01));
        let a = parse(&["--device", "cuda:0,cuda:1", "--device", "cpu"]).unwrap();
        assert_eq!(a.devices.len(), 3);
        assert_eq!(parse(&["--min-same-top", "0.9"]).unwrap().run.gates.min_same_top, Some(0.9));
        assert_eq!(parse(&["--precision", "int8"]).unwrap().precision, Some(Precision::Int8));
        for bad in [
            &["--device", "tpu"][..],
            &["--device", "cpu:1"],
            &["--min-same-top", "95"],
            &["--min-same-top", "x%"],
            &["--precision", "int2"],
            &["--worker", "2/2"],
            &["--ctx", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--worker", "1/3"]).unwrap().worker, Some((1, 3)));
    }

    #[test]
    fn help_states_the_default_gates() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut("verify").unwrap().render_long_help().to_string();
        for p in Precision::ALL {
            let l = p.limits();
            let line = help
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("{p} ")))
                .unwrap_or_else(|| panic!("no line for {p} in\n{help}"));
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[1].parse::<f64>().unwrap(), l.max_ppl_ratio, "{line}");
            assert_eq!(cols[2].parse::<f64>().unwrap(), l.max_mean_kld, "{line}");
            let same = cols[3].trim_end_matches('%').parse::<f64>().unwrap() / 100.0;
            assert!((same - l.min_same_top).abs() < 1e-12, "{line}");
            assert_eq!(cols[4].parse::<usize>().unwrap(), l.max_degenerate_prompts, "{line}");
        }
    }

    #[test]
    fn target_names_come_from_the_export_layout() {
        assert_eq!(target_name(Path::new("out/gguf-q8_0.gguf"), Kind::Gguf), "gguf-q8_0");
        assert_eq!(target_name(Path::new("out/cpu-int4"), Kind::Onnx), "cpu-int4");
        assert_eq!(target_name(Path::new("out/mine"), Kind::Onnx), "onnx");
        assert_eq!(target_name(Path::new("x.gguf"), Kind::Gguf), "gguf");
    }
}
