//! The export pipeline that `export` and `build` share: one source model, a list of artefacts
//! (each a target with its scheme and destination), AWQ once per distinct quantizer, and for
//! each artefact: stage, write, verify the staged files, write `manifest.json`, commit.
//!
//! An artefact appears whole, with its manifest, or not at all: it is written under a temporary
//! name ([`Staged`]) and renamed only once its manifest is in it. With `skip_current`, an
//! artefact whose manifest records the same inputs (source hashes, scheme, calibration,
//! verification settings, phiquant version) and whose files are all there is left as it is.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context;
use phiquant_convert::{
    Algo, ArtefactFormat, Error as ConvertError, FileRecord, Manifest, ManifestInputs,
    QuantOverrides, ScratchFile, SourceModel, SourceRecord, Staged, Target, Weights,
    awq::{
        AwqOptions, AwqOptionsBuilder, Calibration, DEFAULT_CALIB_LEN, DEFAULT_CALIB_SAMPLES,
        LinearQuantizers, Statistic, awq_transform, check_calib_shape,
    },
    find_target,
    gguf::{GgufScheme, export_gguf},
    hash_file,
    hf::{check_destination, export_hf},
    manifest_path,
    onnx::{IoType, OnnxScheme, OnnxWeights, export_onnx},
    sha256_hex,
};
use phiquant_quant::BlockFormat;
use phiquant_runtime::{DeviceSpec, Engine, Tokenizer};
use phiquant_verify::{ReportSet, VerifyReport};
use serde_json::{Value, json};

use super::{
    progress::Progress,
    verify::{Baseline, EXIT_FAILED, Inputs, RunArgs, report_failures, verify_here, write_reports},
};

/// How one target is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Gguf { scheme: GgufScheme, awq: bool },
    Hf(BlockFormat),
    Onnx { scheme: OnnxScheme, awq: bool },
}

impl Plan {
    /// The plan of `target` with `overrides` applied (and `pure` for GGUF targets).
    pub fn of(target: &str, overrides: &QuantOverrides, pure: bool) -> anyhow::Result<Plan> {
        let t = find_target(target).with_context(|| {
            format!("--target {target}: unknown target (see `phiquant targets`)")
        })?;
        let weights = t.weights_with(overrides)?;
        let awq = Target::algo_of(&weights) == Algo::Awq;
        if let Some(scheme) = OnnxScheme::for_target(t, weights) {
            return Ok(Plan::Onnx { scheme, awq });
        }
        match (t.format, weights) {
            (ArtefactFormat::Gguf, Weights::Gguf { base, mixture, .. }) => Ok(Plan::Gguf {
                scheme: GgufScheme { base, q4_k_m: mixture.is_some() && !pure, pure },
                awq,
            }),
            (ArtefactFormat::Hf, Weights::Float { dtype }) => Ok(Plan::Hf(dtype)),
            _ => unreachable!("every target is ONNX, GGUF or a Hugging Face folder"),
        }
    }

    pub fn awq(&self) -> bool {
        matches!(self, Plan::Gguf { awq: true, .. } | Plan::Onnx { awq: true, .. })
    }

    /// Whether this writes int4 ONNX weights (the targets --group-size and the others apply to).
    pub fn int4_onnx(&self) -> bool {
        matches!(
            self,
            Plan::Onnx { scheme: OnnxScheme { weights: OnnxWeights::Int4 { .. }, .. }, .. }
        )
    }

    /// Every option that decides the artefact's weights, spelled out for the manifest (DESIGN
    /// §8 item 10: look-alike schemes must not be confused).
    pub fn record(&self) -> Value {
        let algo = if self.awq() { "awq" } else { "rtn" };
        match *self {
            Plan::Onnx { scheme, .. } => {
                let io = match scheme.io {
                    IoType::F32 => "fp32",
                    IoType::F16 => "fp16",
                };
                let weights = match scheme.weights {
                    OnnxWeights::Float => json!({"type": "float", "dtype": io}),
                    OnnxWeights::Int4 { block_size, symmetric, accuracy_level } => json!({
                        "type": "matmul_nbits",
                        "bits": 4,
                        "block_size": block_size,
                        "symmetric": symmetric,
                        "zero_points": !symmetric,
                        "accuracy_level": accuracy_level,
                        "scale_dtype": io,
                        "quantized_from": if io == "fp16" { "fp16-cast weights" } else { "source weights" },
                        "rounding": if symmetric {
                            "MLAS q4_dq.cpp symmetric: scale = -m/8 (m the block's element of largest magnitude), q = clamp(roundf(v/scale + 8), 0, 15)"
                        } else {
                            "MLAS q4_dq.cpp asymmetric: scale = (max - min)/15 over min(min, 0) and max(max, 0), zp = clamp(roundf(-min/scale), 0, 15)"
                        },
                        "algo": algo,
                    }),
                };
                json!({"format": "onnx", "ep": scheme.ep, "io": io, "weights": weights})
            }
            Plan::Gguf { scheme, .. } => json!({
                "format": "gguf",
                "base": scheme.base.name(),
                "mixture": scheme.q4_k_m.then_some("Q4_K_M"),
                "pure": scheme.pure,
                "rounding": "llama.cpp ggml-quants.c quantize_row_*_ref",
                "algo": algo,
            }),
            Plan::Hf(format) => json!({"format": "hf", "dtype": format.name()}),
        }
    }
}

/// One artefact to write.
pub struct Job {
    /// The `--target` name.
    pub target: String,
    pub plan: Plan,
    /// The artefact: a folder, or the `.gguf` file of a GGUF target written flat.
    pub dest: PathBuf,
    /// GGUF targets: the file goes into the folder `dest` (as `<target>.gguf`, with
    /// `manifest.json` beside it) instead of being `dest`, with `<dest>.manifest.json`.
    pub gguf_in_folder: bool,
}

impl Job {
    fn flat_file(&self) -> bool {
        matches!(self.plan, Plan::Gguf { .. }) && !self.gguf_in_folder
    }

    /// The path of the runnable artefact (a GGUF file or a model folder) once committed, or
    /// inside the staged path `root`.
    fn artefact(&self, root: &Path) -> PathBuf {
        match self.plan {
            Plan::Gguf { .. } if self.gguf_in_folder => root.join(format!("{}.gguf", self.target)),
            _ => root.to_path_buf(),
        }
    }

    /// Where its manifest is.
    fn manifest(&self) -> PathBuf {
        if self.flat_file() {
            manifest_path(&self.dest)
        } else {
            self.dest.join(phiquant_convert::MANIFEST_FILE)
        }
    }

    /// The folder the manifest's file paths are relative to.
    fn root(&self) -> PathBuf {
        if self.flat_file() {
            self.dest.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            self.dest.clone()
        }
    }
}

/// AWQ calibration: what `--calib*` (or a build file's `[calibration]`) says.
#[derive(Debug, Clone, Default, clap::Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibArgs {
    /// AWQ: calibration text, a UTF-8 file (default: text the model writes itself).
    ///
    /// The file is tokenized whole and cut into --calib-samples windows of --calib-len tokens
    /// at evenly spaced offsets (BOS first when the tokenizer adds one); a file too short for
    /// them is an error. Without it the model samples its own text from its BOS token
    /// (temperature 1, seeded by --calib-seed): no corpus is needed, but generating
    /// samples x len tokens takes a while and holds the whole model in memory meanwhile.
    /// Only with a target quantized by AWQ.
    #[arg(long = "calib")]
    #[serde(rename = "file")]
    pub calib: Option<PathBuf>,

    /// AWQ: calibration windows (default 128).
    #[arg(long = "calib-samples")]
    #[serde(rename = "samples")]
    pub calib_samples: Option<usize>,

    /// AWQ: tokens per calibration window (default 512, or the model's context when shorter).
    #[arg(long = "calib-len")]
    #[serde(rename = "len")]
    pub calib_len: Option<usize>,

    /// AWQ: seed of the self-generated calibration text (default 0; ignored with --calib).
    #[arg(long = "calib-seed")]
    #[serde(rename = "seed")]
    pub calib_seed: Option<u64>,

    /// AWQ search: score every scale candidate with its weights clipped (the clipping search
    /// inside the scale search) instead of clipping after the scales are chosen.
    #[arg(long = "awq-joint-clip")]
    #[serde(default)]
    pub joint_clip: bool,

    /// AWQ search: sweeps of per-channel refinement of the chosen scales (default 0, at most
    /// 100). Each sweep tries every input channel's scale at x0.6, x0.8, x1.25 and x1.6 on its
    /// group's loss: 4 x channels evaluations where the grid costs 21, so for small models
    /// only (on a 260K-parameter model two sweeps take the search from 8 s to 4 minutes).
    #[arg(long = "awq-refine")]
    pub refine: Option<usize>,

    /// AWQ search: keep the clipping search's block scales as they are, without the
    /// least-squares refit of each row's scales that follows it by default (the search as it
    /// was before 2026-12-07). Saves 10 to 60 percent of the clipping search's time (7 percent
    /// of SmolLM2-135M's export); the refit lowers the KL divergence by 1 to 3 percent in the
    /// native engine, within the noise through ONNX Runtime (BENCHMARKS.md).
    #[arg(long = "awq-no-refit")]
    #[serde(default)]
    pub no_refit: bool,

    /// AWQ search: the per-input-channel activation statistic of the scales
    /// `x^a / w^(1-a)`: mean-abs (mean |x|, the reference's; the default) or rms (root mean
    /// square, each channel's weight in the output error the search minimizes). With
    /// --awq-joint-clip --awq-refine 2 it gave the lowest KL divergence measured on a
    /// 260K-parameter model's out-of-domain text; in its domain the two were within 2 percent
    /// (BENCHMARKS.md).
    #[arg(long = "awq-statistic", value_enum)]
    pub statistic: Option<StatisticArg>,
}

/// AWQ's activation statistic, as `--awq-statistic` and a build file's `statistic` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatisticArg {
    /// mean |x| (the reference's).
    MeanAbs,
    /// sqrt(mean x²).
    Rms,
}

impl From<StatisticArg> for Statistic {
    fn from(s: StatisticArg) -> Statistic {
        match s {
            StatisticArg::MeanAbs => Statistic::MeanAbs,
            StatisticArg::Rms => Statistic::Rms,
        }
    }
}

impl CalibArgs {
    /// The first option given, if any: its flag and its key in a build file's `[calibration]`.
    pub fn first_given(&self) -> Option<(&'static str, &'static str)> {
        [
            self.calib.as_ref().map(|_| ("--calib", "file")),
            self.calib_samples.map(|_| ("--calib-samples", "samples")),
            self.calib_len.map(|_| ("--calib-len", "len")),
            self.calib_seed.map(|_| ("--calib-seed", "seed")),
            self.joint_clip.then_some(("--awq-joint-clip", "joint_clip")),
            self.refine.map(|_| ("--awq-refine", "refine")),
            self.no_refit.then_some(("--awq-no-refit", "no_refit")),
            self.statistic.map(|_| ("--awq-statistic", "statistic")),
        ]
        .into_iter()
        .flatten()
        .next()
    }

    /// The AWQ search settings: the defaults with the options given. A value out of range is
    /// refused under its option's name.
    pub fn search(&self) -> anyhow::Result<AwqOptions> {
        let mut b = AwqOptionsBuilder::new();
        b.joint_clip(self.joint_clip).refit_scales(!self.no_refit);
        if let Some(n) = self.refine {
            b.refine(n);
        }
        if let Some(s) = self.statistic {
            b.statistic(s.into());
        }
        b.build().map_err(|e| match e {
            ConvertError::AwqSetting { setting: "refine", value, expected } => {
                anyhow::anyhow!("--awq-refine {value}: {expected}")
            }
            e => e.into(),
        })
    }

    /// Windows and tokens per window: as given, else 128 and 512 (or the model's context when
    /// shorter).
    fn shape(&self, spec: &phiquant_runtime::DecoderSpec) -> (usize, usize) {
        let samples = self.calib_samples.unwrap_or(DEFAULT_CALIB_SAMPLES);
        let len = self.calib_len.unwrap_or(DEFAULT_CALIB_LEN.min(spec.max_position_embeddings));
        (samples, len)
    }

    /// Checks the values that need no model.
    pub fn check(&self) -> anyhow::Result<()> {
        use phiquant_convert::awq::MAX_CALIB_SAMPLES;
        if let Some(n) = self.calib_samples
            && (n == 0 || n > MAX_CALIB_SAMPLES)
        {
            anyhow::bail!("--calib-samples {n}: expected 1 to {MAX_CALIB_SAMPLES}");
        }
        if let Some(n) = self.calib_len
            && n < 2
        {
            anyhow::bail!("--calib-len {n}: expected at least 2 tokens");
        }
        self.search()?;
        Ok(())
    }
}

/// What a pipeline run does besides writing the artefacts.
pub struct Settings<'a> {
    /// `--model` and `--revision`.
    pub model: &'a str,
    pub revision: Option<&'a str>,
    pub calib: &'a CalibArgs,
    /// Verification of each artefact: what is measured, and the device for ONNX targets.
    pub verify: Option<(&'a RunArgs, Option<DeviceSpec>)>,
    /// Where verify.json, verify.md and verify.html go.
    pub reports: &'a Path,
    /// Leave artefacts whose manifest matches this run's inputs as they are.
    pub skip_current: bool,
}

/// The source's file digests: computed before anything else when a run must tell current
/// artefacts from stale ones, otherwise on a thread of their own while the first artefact is
/// written (hashing reads every byte of the source: about as long as an export), and waited for
/// at the first manifest.
pub struct SourceDigests {
    ready: Option<SourceRecord>,
    pending: Option<std::thread::JoinHandle<Result<SourceRecord, ConvertError>>>,
}

impl SourceDigests {
    fn get(&mut self) -> anyhow::Result<&SourceRecord> {
        if let Some(thread) = self.pending.take() {
            let record = thread.join().map_err(|_| {
                anyhow::anyhow!("internal error: the source digest thread panicked")
            })?;
            self.ready = Some(record?);
        }
        self.ready.as_ref().context("internal error: no source digests")
    }
}

/// The source opened and each job's inputs (their `source` filled from [`SourceDigests`]), with
/// the manifests of the artefacts that are current already.
pub struct Prepared {
    pub model: SourceModel,
    pub source: SourceDigests,
    pub inputs: Vec<ManifestInputs>,
    pub current: Vec<Option<Manifest>>,
    calib_text: Option<String>,
    /// The AWQ search settings, checked once.
    search: AwqOptions,
}

/// Resolves and opens the model, hashes its files, and finds which artefacts are current.
pub fn prepare(jobs: &[Job], s: &Settings<'_>, progress: &Progress) -> anyhow::Result<Prepared> {
    let calib_text = match (&s.calib.calib, jobs.iter().any(|j| j.plan.awq())) {
        (Some(path), true) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --calib {}", path.display()))?,
        ),
        _ => None,
    };
    let resolved = super::model::resolve(s.model, s.revision, progress.quiet() || progress.json())?;
    let model = SourceModel::open(&resolved)?;
    // Every artefact ships or converts the tokenizer: one that does not build is refused before
    // anything is written.
    if model.aux_files().get("tokenizer.json").is_some() {
        Tokenizer::from_files(model.aux_files(), model.spec().bos_token_id)?;
    }
    let source = match s.skip_current {
        true => SourceDigests { ready: Some(SourceRecord::of(&resolved)?), pending: None },
        false => {
            let resolved = resolved.clone();
            let thread = std::thread::spawn(move || SourceRecord::of(&resolved));
            SourceDigests { ready: None, pending: Some(thread) }
        }
    };
    // Until the digests are in, each job's inputs carry an empty source record.
    let known = source.ready.clone().unwrap_or(SourceRecord {
        kind: String::new(),
        repo: None,
        revision: None,
        commit: None,
        files: Vec::new(),
    });
    let search = s.calib.search()?;
    let calib_record = calibration_record(s.calib, &search, calib_text.as_deref(), &model);
    let verify_record = s.verify.map(|(run, device)| verify_record(run, device)).transpose()?;
    let inputs: Vec<ManifestInputs> = jobs
        .iter()
        .map(|j| ManifestInputs {
            phiquant_version: env!("CARGO_PKG_VERSION").into(),
            target: j.target.clone(),
            source: known.clone(),
            scheme: j.plan.record(),
            calibration: j.plan.awq().then(|| calib_record.clone()),
            verify_settings: verify_record.clone(),
        })
        .collect();
    let mut current: Vec<Option<Manifest>> = Vec::with_capacity(jobs.len());
    for (job, inputs) in jobs.iter().zip(&inputs) {
        let found = match s.skip_current {
            true => Manifest::read(&job.manifest())?
                .filter(|m| &m.inputs == inputs && m.files_present(&job.root())),
            false => None,
        };
        current.push(found);
    }
    Ok(Prepared { model, source, inputs, current, calib_text, search })
}

/// Runs `jobs`: every artefact written (or skipped as current), verified when asked, with its
/// manifest. Prints a line (or with --json, an object) per artefact on stdout.
pub fn run(jobs: &[Job], s: &Settings<'_>, progress: &Progress) -> anyhow::Result<ExitCode> {
    let Prepared { model, mut source, inputs, current, calib_text, search } =
        prepare(jobs, s, progress)?;

    // The AWQ quantizers and the calibration windows, before anything is written.
    let keys = jobs
        .iter()
        .zip(&current)
        .map(|(j, c)| match (j.plan.awq(), c) {
            (true, None) => quantizers(&j.target, &j.plan, &model).map(Some),
            _ => Ok(None),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let calib = match keys.iter().any(Option::is_some) {
        true => Some(calibration(s.calib, calib_text.as_deref(), &model, progress)?),
        false => None,
    };
    drop(calib_text);
    for job in jobs {
        let parent = job.dest.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let mut check = match s.verify {
        Some((run, device)) if current.iter().any(Option::is_none) => {
            let baseline = Baseline::borrowed(&model, s.model)?;
            let inputs = Inputs::read(run, &baseline)?;
            Some(Check { baseline, inputs, reports: Vec::new(), run, device })
        }
        _ => None,
    };
    // AWQ runs once per distinct quantizer; its weights serve every target that shares it and
    // are dropped after the last one.
    let mut transformed: Vec<(LinearQuantizers, String, Arc<SourceModel>, Value)> = Vec::new();
    let mut failed_before = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let target = &job.target;
        if let Some(m) = &current[i] {
            let passed = m.verify.as_ref().and_then(|v| v.get("passed")).and_then(Value::as_bool);
            if passed == Some(false) {
                failed_before.push(target.clone());
            }
            emit(progress, job, "skipped", "current: its manifest matches this run", m)?;
            continue;
        }
        let (awq_model, awq_record) = match &keys[i] {
            None => (None, None),
            Some(key) => match transformed.iter().find(|(k, ..)| k == key) {
                Some((_, first, m, r)) => {
                    progress.note(
                        "awq",
                        &format!(
                            "awq {target}: the same quantizer as {first}, reusing its weights"
                        ),
                    );
                    (Some(Arc::clone(m)), Some(r.clone()))
                }
                None => {
                    let calib =
                        calib.as_ref().context("internal error: AWQ without calibration")?;
                    let (m, r) = run_awq(job, key, &model, calib, &search, progress)?;
                    let m = Arc::new(m);
                    transformed.push((key.clone(), target.clone(), Arc::clone(&m), r.clone()));
                    (Some(m), Some(r))
                }
            },
        };
        let source_model = awq_model.as_deref().unwrap_or(&model);
        let manifest = write_one(
            job,
            source_model,
            &inputs[i],
            &mut source,
            awq_record,
            check.as_mut(),
            progress,
        )?;
        emit(progress, job, "written", "", &manifest)?;
        // Weights no later target needs are dropped (with their scratch file).
        if let Some(key) = &keys[i]
            && !keys[i + 1..].iter().any(|k| k.as_ref() == Some(key))
        {
            transformed.retain(|(k, ..)| k != key);
        }
    }
    let mut failed = false;
    if let Some(Check { reports, .. }) = check {
        let out = |name: &str| s.reports.join(name);
        let (json, md, html) = (out("verify.json"), out("verify.md"), out("verify.html"));
        let set = ReportSet::new(reports);
        std::fs::write(&json, set.to_json())
            .with_context(|| format!("writing {}", json.display()))?;
        write_reports(&set.reports, None, Some(&md), Some(&html))?;
        failed = report_failures(&set.reports);
    }
    for target in &failed_before {
        progress.note("failed", &format!("{target}: its recorded verification failed a gate"));
    }
    Ok(if failed || !failed_before.is_empty() {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Verification state shared by the artefacts of a run.
struct Check<'m, 'a> {
    baseline: Baseline<'m>,
    inputs: Inputs,
    reports: Vec<VerifyReport>,
    run: &'a RunArgs,
    device: Option<DeviceSpec>,
}

/// Writes one artefact into its staged place, verifies it there, adds its manifest and
/// commits it.
fn write_one(
    job: &Job,
    model: &SourceModel,
    inputs: &ManifestInputs,
    source: &mut SourceDigests,
    awq: Option<Value>,
    check: Option<&mut Check<'_, '_>>,
    progress: &Progress,
) -> anyhow::Result<Manifest> {
    let target = job.target.as_str();
    let stage = match job.flat_file() {
        true => Staged::file(&job.dest)?,
        false => {
            if matches!(job.plan, Plan::Hf(_)) {
                check_destination(&job.dest)?;
            }
            Staged::dir(&job.dest)?
        }
    };
    let artefact = job.artefact(stage.path());
    match job.plan {
        Plan::Gguf { scheme, .. } => {
            let bar = progress.stage("export", target, 0, "tensors");
            export_gguf(model, &scheme, &artefact, &mut |d, n| {
                bar.set_total(n as u64);
                bar.set(d as u64)
            })?;
        }
        Plan::Onnx { scheme, .. } => {
            let bar = progress.stage("export", target, model.spec().num_layers as u64, "layers");
            export_onnx(model, &scheme, &artefact, &mut |d, _| bar.set(d as u64))?;
        }
        Plan::Hf(format) => {
            let bar = progress.stage("export", target, 0, "tensors");
            export_hf(model, format, &artefact, &mut |d, n| {
                bar.set_total(n as u64);
                bar.set(d as u64)
            })?;
        }
    }
    let verified = match check {
        None => None,
        Some(c) => {
            let bar = progress.stage("verify", target, 0, "chunks and prompts");
            let step = |done: usize, total: usize| {
                bar.set_total(total as u64);
                bar.set(done as u64);
            };
            let job_v = super::verify::Job {
                artefact: &artefact,
                target: Some(target),
                device: c.device,
                precision: None,
                progress: Some(&step),
            };
            let mut report = verify_here(&job_v, c.run, &mut c.baseline, &c.inputs)
                .with_context(|| format!("--target {target}: --verify"))?;
            report.artefact = job.artefact(&job.dest).display().to_string();
            let summary = verify_summary(&report);
            c.reports.push(report);
            Some(summary)
        }
    };
    let files: Vec<FileRecord> = match job.flat_file() {
        true => {
            let name = job.dest.file_name().map(|n| n.to_string_lossy().into_owned());
            vec![hash_file(stage.path(), name.unwrap_or_default())?]
        }
        false => Manifest::hash_folder(stage.path())?,
    };
    let inputs = ManifestInputs { source: source.get()?.clone(), ..inputs.clone() };
    let manifest = Manifest::new(inputs, files, awq, verified);
    if job.flat_file() {
        // The file first, then its manifest: a manifest never describes a file not there.
        stage.commit()?;
        let side = Staged::file(&job.manifest())?;
        manifest.write(side.path())?;
        side.commit()?;
    } else {
        manifest.write(&stage.path().join(phiquant_convert::MANIFEST_FILE))?;
        stage.commit()?;
    }
    Ok(manifest)
}

/// The line (or JSON object) of one artefact on stdout.
fn emit(
    progress: &Progress,
    job: &Job,
    status: &str,
    why: &str,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    let path = job.artefact(&job.dest);
    if progress.json() {
        let value = json!({
            "target": job.target,
            "status": status,
            "path": path,
            "manifest": job.manifest(),
            "files": manifest.files.len(),
            "bytes": bytes,
            "scheme": manifest.inputs.scheme,
            "verify": manifest.verify,
        });
        return super::print(&format!("{value}\n"));
    }
    let awq = if job.plan.awq() { ", awq" } else { "" };
    let kind = match job.plan {
        Plan::Gguf { scheme, .. } if scheme.base == BlockFormat::F32 => "f32".to_string(),
        Plan::Gguf { scheme, .. } => scheme.base.name().to_string(),
        Plan::Onnx { scheme, .. } => match scheme.weights {
            OnnxWeights::Float => "float".into(),
            OnnxWeights::Int4 { block_size, .. } => format!("int4 block {block_size}"),
        },
        Plan::Hf(format) => format.name().to_ascii_lowercase(),
    };
    let mut line = format!(
        "{}: {} ({} files, {bytes} bytes, {kind}{awq}){}{}\n",
        job.target,
        path.display(),
        manifest.files.len(),
        if status == "skipped" { ": skipped, " } else { "" },
        why,
    );
    if let Some(v) = &manifest.verify {
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let agreement = v
            .get("greedy_agreement")
            .and_then(Value::as_f64)
            .map_or(String::new(), |a| format!(", greedy agreement {:.1}%", a * 100.0));
        line.push_str(&format!(
            "{}: verified on {} ({}): PPL ratio {:.4}, mean KLD {:.5}, same top {:.2}%{agreement}: {}\n",
            job.target,
            v.get("device").and_then(Value::as_str).unwrap_or("?"),
            v.get("backend").and_then(Value::as_str).unwrap_or("?"),
            num("ppl_ratio"),
            num("kld_mean"),
            num("same_top_p") * 100.0,
            if v.get("passed").and_then(Value::as_bool) == Some(true) { "pass" } else { "FAIL" }
        ));
    }
    super::print(&line)
}

/// The verification figures a manifest keeps (no timings: the manifest stays deterministic).
fn verify_summary(r: &VerifyReport) -> Value {
    json!({
        "passed": r.passed,
        "device": r.device,
        "backend": r.backend,
        "precision": r.precision,
        "corpus": r.corpus,
        "ctx": r.ctx,
        "chunks": r.chunks,
        "tokens_scored": r.tokens_scored,
        "ppl_q": r.ppl_q,
        "ppl_base": r.ppl_base,
        "ppl_ratio": r.ppl_ratio,
        "kld_mean": r.kld_mean,
        "kld_p99": r.kld_p99,
        "same_top_p": r.same_top_p,
        "greedy_agreement": r.greedy_agreement,
        "failed_gates": r.failed_gates().map(|g| g.describe()).collect::<Vec<_>>(),
    })
}

/// A file's name and digest for a manifest (its path is where this run found it, and could
/// differ between two runs of the same input).
fn file_digest(path: &Path) -> anyhow::Result<Value> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let rec = hash_file(path, name)?;
    Ok(json!({"file": rec.path, "size": rec.size, "sha256": rec.sha256}))
}

/// What verification measures and its gates, as a manifest records them.
fn verify_record(run: &RunArgs, device: Option<DeviceSpec>) -> anyhow::Result<Value> {
    let corpus = run.corpus.as_deref().map(file_digest).transpose()?;
    let prompts = run.prompts.as_deref().map(file_digest).transpose()?;
    let g = &run.gates;
    Ok(json!({
        "corpus": corpus.unwrap_or_else(|| json!("built-in")),
        "prompts": prompts.unwrap_or_else(|| json!("built-in")),
        "ctx": run.ctx(),
        "chunks": run.chunks,
        "max_new_tokens": run.max_new_tokens(),
        "max_ppl_ratio": g.max_ppl_ratio,
        "max_mean_kld": g.max_mean_kld,
        "min_same_top": g.min_same_top,
        "device": device.map(|d| d.to_string()),
    }))
}

/// The calibration and AWQ search settings, as a manifest records them.
fn calibration_record(
    calib: &CalibArgs,
    search: &AwqOptions,
    text: Option<&str>,
    model: &SourceModel,
) -> Value {
    let (samples, len) = calib.shape(model.spec());
    let source = match (&calib.calib, text) {
        (Some(path), Some(text)) => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            json!({"file": name, "sha256": sha256_hex(text.as_bytes())})
        }
        _ => json!({"self_generated": {"seed": calib.calib_seed.unwrap_or(0), "temperature": 1.0}}),
    };
    json!({
        "text": source,
        "samples": samples,
        "len": len,
        "search": search,
    })
}

/// The calibration windows of the AWQ targets: read from --calib, or written by the model.
fn calibration(
    calib: &CalibArgs,
    text: Option<&str>,
    model: &SourceModel,
    progress: &Progress,
) -> anyhow::Result<Calibration> {
    let spec = model.spec();
    let (samples, len) = calib.shape(spec);
    check_calib_shape(samples, len, spec.max_position_embeddings)?;
    if let (Some(path), Some(text)) = (&calib.calib, text) {
        let tokenizer = Tokenizer::from_files(model.aux_files(), spec.bos_token_id)?;
        return Ok(Calibration::from_text(
            text,
            &path.display().to_string(),
            &tokenizer,
            samples,
            len,
        )?);
    }
    let seed = calib.calib_seed.unwrap_or(0);
    progress.note(
        "calibration",
        &format!(
            "awq: no --calib: the model writes {samples} windows of {len} tokens (seed {seed})"
        ),
    );
    let engine = Engine::load(model.weights())?;
    let bar = progress.stage("calibrate", "calibration text", samples as u64, "windows");
    Ok(Calibration::generate(&engine, samples, len, seed, &|done, _| bar.set(done as u64))?)
}

/// The quantizers AWQ searches against for an AWQ plan.
fn quantizers(target: &str, plan: &Plan, model: &SourceModel) -> anyhow::Result<LinearQuantizers> {
    Ok(match plan {
        Plan::Onnx { scheme, .. } => LinearQuantizers::for_onnx(model.spec(), scheme, target)?,
        Plan::Gguf { scheme, .. } => LinearQuantizers::for_gguf(model.spec(), scheme, target)?,
        Plan::Hf(_) => unreachable!("Hugging Face folders are never AWQ plans"),
    })
}

/// Runs AWQ for `job` and returns the model with its transformed weights, and the chosen
/// scales for the manifest.
fn run_awq(
    job: &Job,
    key: &LinearQuantizers,
    model: &SourceModel,
    calib: &Calibration,
    search: &AwqOptions,
    progress: &Progress,
) -> anyhow::Result<(SourceModel, Value)> {
    let target = &job.target;
    let started = std::time::Instant::now();
    let scratch = ScratchFile::beside(&job.dest.with_file_name(format!(
        "{}.awq.safetensors",
        job.dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    )));
    let layers = model.spec().num_layers;
    let bar = progress.stage("awq", target, layers as u64, "layers");
    let mut chosen = Vec::with_capacity(layers);
    let weights =
        awq_transform(model.shared_weights(), calib, key, search, scratch.path(), &mut |r| {
            progress.note("awq", &format!("awq {target}: {r}"));
            chosen.push(json!({"layer": r.layer, "groups": r.groups}));
            bar.set(r.layer as u64 + 1);
        })?;
    drop(bar);
    progress.note(
        "awq",
        &format!(
            "awq {target}: {layers} layers in {:.1} s over {} windows of {} tokens",
            started.elapsed().as_secs_f64(),
            calib.windows().len(),
            calib.len()
        ),
    );
    Ok((model.with_weights(Arc::new(weights)), json!({"layers": chosen})))
}
