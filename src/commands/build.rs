//! `phiquant build`: every artefact of a model from one configuration file.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use phiquant_convert::{Algo, QuantOverrides, find_target};
use phiquant_runtime::DeviceSpec;
use serde::Deserialize;
use serde_json::json;

use super::{
    pipeline::{CalibArgs, Job, Plan, Settings},
    progress::Progress,
    verify::{GateArgs, RunArgs},
};

/// Build every artefact a configuration file lists, for pipelines that run unattended.
///
/// The file (TOML) names one model and its targets, each with its own overrides, the AWQ
/// calibration and the verification gates:
///
///   model = "microsoft/Phi-3-mini-4k-instruct"   # folder, GGUF file or hub id
///   revision = "main"                            # hub ids only
///   out = "dist"                                 # default: dist/ beside the file
///   name = "phi3-mini"                           # default: the model's folder, file or repo name
///
///   [calibration]                                # AWQ targets (default: self-written text)
///   file = "calib.txt"
///   samples = 128
///   len = 512
///   joint_clip = false                           # AWQ search options, as --awq-*
///   refine = 0
///   no_refit = false
///   statistic = "mean-abs"
///
///   [verify]                                     # verify every artefact (omit to skip)
///   corpus = "wiki.test.raw"
///   chunks = 20
///   max_ppl_ratio = 1.1
///
///   [[target]]
///   name = "cpu-int4"
///   [[target]]
///   name = "dml-int4"                            # AWQ by default
///   [[target]]
///   name = "gguf-q4_k_m"
///   algo = "awq"
///   [[target]]
///   name = "cpu-int4"
///   group_size = 128
///   symmetric = false
///   output = "cpu-int4-asym-128"                 # the artefact's folder name
///
/// Each [[target]] takes name and, where they apply, algo (rtn, awq), group_size, symmetric,
/// accuracy_level (int4 ONNX targets), pure (GGUF targets) and output. [verify] takes corpus,
/// ctx, chunks, prompts, max_new_tokens, max_ppl_ratio, max_mean_kld, min_same_top and device,
/// as the flags of `phiquant verify`. Relative paths are relative to the file.
///
/// Every artefact is a folder <out>/<name>/<artefact>, named after the official releases:
/// `<target>-<algo>-block-<bs>[-acc-level-N]` for int4 ONNX targets (cpu-int4-rtn-block-32-
/// acc-level-4), `<target>-<algo>` for 4-bit GGUF targets, `<target>` otherwise (`-pure` added
/// for --pure GGUF). A folder holds the ONNX files, the Hugging Face files or `<target>.gguf`,
/// and manifest.json: the source's files with their sha256, every option of the scheme, the
/// calibration, each file's size and sha256, AWQ's chosen scales and the verification summary.
/// Each folder is written under a temporary name and renamed once complete with its manifest,
/// so an interrupted build (Ctrl-C, SIGTERM: exit 130) leaves no artefact without one. A
/// re-run skips every artefact whose manifest records the same inputs and whose files are all
/// there (--force rewrites them). Verification reports go to <out>/<name>/verify.{json,md,html}.
///
/// Exit status: 0 every artefact written or current and every gate passed, 1 a gate failed
/// (also one recorded in a skipped artefact's manifest), 2 an error (nothing half-written).
///
/// Examples:
///   phiquant build phiquant.toml
///   phiquant build phiquant.toml --plan          # what would run, as JSON
///   phiquant build phiquant.toml --force --json  # rewrite everything; JSON Lines results
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (TOML; see above).
    pub config: PathBuf,

    /// Print what would run as JSON (each artefact's path, scheme and whether it is current)
    /// and write nothing.
    ///
    /// The model is resolved and its files hashed to tell current artefacts from stale ones (a
    /// hub id is fetched into the cache, as a run would).
    #[arg(long)]
    pub plan: bool,

    /// Rewrite every artefact, current or not.
    #[arg(long)]
    pub force: bool,

    /// The output folder (default: the file's `out`, else dist/ beside the file).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Print results as JSON Lines on stdout and progress as JSON Lines events on stderr.
    #[arg(long)]
    pub json: bool,
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    model: String,
    revision: Option<String>,
    out: Option<PathBuf>,
    name: Option<String>,
    #[serde(default)]
    calibration: CalibArgs,
    verify: Option<VerifyConfig>,
    #[serde(default, rename = "target")]
    targets: Vec<TargetConfig>,
}

/// `[verify]`: the options of `phiquant verify`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyConfig {
    corpus: Option<PathBuf>,
    ctx: Option<usize>,
    chunks: Option<usize>,
    prompts: Option<PathBuf>,
    max_new_tokens: Option<usize>,
    max_ppl_ratio: Option<f64>,
    max_mean_kld: Option<f64>,
    min_same_top: Option<f64>,
    device: Option<String>,
}

/// One `[[target]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetConfig {
    name: String,
    algo: Option<String>,
    group_size: Option<usize>,
    symmetric: Option<bool>,
    accuracy_level: Option<u8>,
    #[serde(default)]
    pure: bool,
    output: Option<String>,
}

impl TargetConfig {
    /// The plan of this target, each override checked against what the target takes.
    fn plan(&self, i: usize) -> anyhow::Result<Plan> {
        let at = || format!("[[target]] {} ({})", i + 1, self.name);
        let t = find_target(&self.name)
            .with_context(|| format!("{}: unknown target (see `phiquant targets`)", at()))?;
        let algo = match self.algo.as_deref() {
            None => None,
            Some("rtn") => Some(Algo::Rtn),
            Some("awq") => Some(Algo::Awq),
            Some(other) => anyhow::bail!("{}: algo `{other}`: expected rtn or awq", at()),
        };
        let overrides = QuantOverrides {
            algo,
            group_size: self.group_size,
            symmetric: self.symmetric,
            accuracy_level: self.accuracy_level,
        };
        if algo.is_some() && !t.takes_algo() {
            anyhow::bail!("{}: algo applies to int4 targets only", at());
        }
        let plan = Plan::of(&self.name, &overrides, self.pure).with_context(at)?;
        let onnx_only = QuantOverrides { algo: None, ..overrides };
        if let Some(opt) = onnx_only.first_option()
            && !plan.int4_onnx()
        {
            let key = opt.trim_start_matches("--").replace('-', "_");
            let key = if key == "asymmetric" { "symmetric".into() } else { key };
            anyhow::bail!("{}: {key} applies to int4 ONNX targets only", at());
        }
        if self.pure && !matches!(plan, Plan::Gguf { .. }) {
            anyhow::bail!("{}: pure applies to GGUF targets only", at());
        }
        Ok(plan)
    }

    /// The artefact's folder name.
    fn folder(&self, plan: &Plan) -> String {
        if let Some(name) = &self.output {
            return name.clone();
        }
        let algo = if plan.awq() { "awq" } else { "rtn" };
        let pure = if self.pure { "-pure" } else { "" };
        match plan {
            Plan::Onnx { scheme, .. } => match scheme.weights {
                phiquant_convert::onnx::OnnxWeights::Int4 {
                    block_size, accuracy_level, ..
                } => {
                    let acc = match accuracy_level {
                        0 => String::new(),
                        n => format!("-acc-level-{n}"),
                    };
                    format!("{}-{algo}-block-{block_size}{acc}", self.name)
                }
                phiquant_convert::onnx::OnnxWeights::Float => self.name.clone(),
            },
            Plan::Gguf { .. } if find_target(&self.name).is_some_and(|t| t.takes_algo()) => {
                format!("{}-{algo}{pure}", self.name)
            }
            Plan::Gguf { .. } => format!("{}{pure}", self.name),
            Plan::Hf(_) => self.name.clone(),
        }
    }
}

/// A folder or file name that stays inside the output folder.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\']);
    anyhow::ensure!(ok, "{what} `{name}`: expected a plain folder name (no path separators)");
    Ok(())
}

/// The model's folder name: the file's `name`, else the last part of the path or repo id.
fn model_name(config: &Config) -> String {
    config.name.clone().unwrap_or_else(|| {
        let path = Path::new(&config.model);
        let base = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let base = base.unwrap_or_else(|| config.model.clone());
        match base.rsplit_once('.') {
            Some((stem, ext)) if ext.eq_ignore_ascii_case("gguf") => stem.to_string(),
            _ => base,
        }
    })
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: Config = toml::from_str(&text).map_err(|e| {
        // toml's message spans several lines (the offending line and a caret): keep its
        // first line and the position.
        let msg = e.message().lines().next().unwrap_or_default().to_string();
        let at = e
            .span()
            .map(|s| line_of(&text, s.start))
            .map_or(String::new(), |l| format!(" (line {l})"));
        anyhow::anyhow!("{}{at}: {msg}", args.config.display())
    })?;
    let base = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    anyhow::ensure!(
        !config.targets.is_empty(),
        "{}: lists no [[target]]; add at least one (see `phiquant build --help`)",
        args.config.display()
    );
    // The model: a path relative to the file when it exists there, else a hub id.
    let model = {
        let local = rel(Path::new(&config.model));
        if local.exists() { local.display().to_string() } else { config.model.clone() }
    };
    let name = model_name(&config);
    check_name("name", &name)?;
    let out =
        args.out.clone().unwrap_or_else(|| rel(config.out.as_deref().unwrap_or(Path::new("dist"))));
    let root = out.join(&name);

    let mut jobs = Vec::new();
    let mut folders: BTreeMap<String, usize> = BTreeMap::new();
    for (i, t) in config.targets.iter().enumerate() {
        let plan = t.plan(i)?;
        let folder = t.folder(&plan);
        check_name(&format!("[[target]] {} ({}): output", i + 1, t.name), &folder)?;
        if let Some(first) = folders.insert(folder.clone(), i) {
            anyhow::bail!(
                "[[target]] {} and {} ({}) both write {folder}; give one an `output` name",
                first + 1,
                i + 1,
                t.name
            );
        }
        jobs.push(Job {
            target: t.name.clone(),
            plan,
            dest: root.join(&folder),
            gguf_in_folder: true,
        });
    }
    let mut calib = config.calibration.clone();
    calib.calib = calib.calib.as_deref().map(rel);
    if let Some((_, key)) = calib.first_given().filter(|_| !jobs.iter().any(|j| j.plan.awq())) {
        anyhow::bail!(
            "{}: [calibration] {key} applies to targets quantized with AWQ; none is",
            args.config.display(),
        );
    }
    calib.check()?;
    let verify = config.verify.as_ref().map(|v| -> anyhow::Result<(RunArgs, Option<DeviceSpec>)> {
        let run = RunArgs {
            corpus: v.corpus.as_deref().map(rel),
            ctx: v.ctx,
            chunks: v.chunks,
            prompts: v.prompts.as_deref().map(rel),
            max_new_tokens: v.max_new_tokens,
            gates: GateArgs {
                max_ppl_ratio: v.max_ppl_ratio,
                max_mean_kld: v.max_mean_kld,
                min_same_top: v.min_same_top,
            },
        };
        run.gates.limits(phiquant_verify::Precision::Fp32)?;
        let device = v
            .device
            .as_deref()
            .map(|d| d.parse::<DeviceSpec>())
            .transpose()
            .map_err(|e| anyhow::anyhow!("[verify] device: {e}"))?;
        Ok((run, device))
    });
    let verify = verify.transpose()?;
    let settings = Settings {
        model: &model,
        revision: config.revision.as_deref(),
        calib: &calib,
        verify: verify.as_ref().map(|(run, device)| (run, *device)),
        reports: &root,
        skip_current: !args.force,
    };
    let progress = Progress::new(quiet, args.json);
    if args.plan {
        let prepared = super::pipeline::prepare(&jobs, &settings, &progress)?;
        let artefacts: Vec<_> = jobs
            .iter()
            .zip(&prepared.current)
            .map(|(j, current)| {
                json!({
                    "target": j.target,
                    "path": j.dest,
                    "scheme": j.plan.record(),
                    "verify": settings.verify.is_some(),
                    "action": if current.is_some() { "skip" } else { "write" },
                })
            })
            .collect();
        let plan = json!({
            "config": args.config,
            "model": model,
            "revision": config.revision,
            "out": root,
            "artefacts": artefacts,
        });
        super::print(&format!("{}\n", serde_json::to_string_pretty(&plan)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    super::pipeline::run(&jobs, &settings, &progress)
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(toml_text: &str) -> TargetConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn names_artefacts_after_the_official_releases() {
        let cases = [
            ("name = \"cpu-int4\"", "cpu-int4-rtn-block-32-acc-level-4"),
            ("name = \"dml-int4\"", "dml-int4-awq-block-128"),
            ("name = \"cuda-int4\"", "cuda-int4-rtn-block-32"),
            (
                "name = \"cpu-int4\"\ngroup_size = 128\nalgo = \"awq\"",
                "cpu-int4-awq-block-128-acc-level-4",
            ),
            ("name = \"gguf-q4_0\"\nalgo = \"awq\"", "gguf-q4_0-awq"),
            ("name = \"gguf-q4_0\"\npure = true", "gguf-q4_0-rtn-pure"),
            ("name = \"gguf-q8_0\"", "gguf-q8_0"),
            ("name = \"cpu-fp32\"", "cpu-fp32"),
            ("name = \"hf-bf16\"\noutput = \"mine\"", "mine"),
        ];
        for (text, want) in cases {
            let t = target(text);
            assert_eq!(t.folder(&t.plan(0).unwrap()), want, "{text}");
        }
    }

    #[test]
    fn refuses_overrides_a_target_does_not_take() {
        for (text, want) in [
            ("name = \"gguf-q4_0\"\ngroup_size = 64", "group_size applies to int4 ONNX"),
            ("name = \"cpu-fp32\"\nalgo = \"awq\"", "algo applies to int4 targets"),
            ("name = \"cpu-int4\"\npure = true", "pure applies to GGUF"),
            ("name = \"cpu-int4\"\nalgo = \"gptq\"", "algo `gptq`"),
            ("name = \"cpu-int4\"\ngroup_size = 48", "--group-size 48"),
            ("name = \"cpu-int5\"", "unknown target"),
        ] {
            let e = format!("{:#}", target(text).plan(2).unwrap_err());
            assert!(e.contains(want) && e.contains("[[target]] 3"), "{text}: {e}");
        }
        assert!(toml::from_str::<TargetConfig>("name = \"cpu-int4\"\nblock = 3").is_err());
    }

    #[test]
    fn parses_build_flags() {
        use clap::Parser;
        let cli = crate::commands::Cli::try_parse_from([
            "phiquant", "build", "p.toml", "--plan", "--force", "--out", "o", "--json",
        ])
        .unwrap();
        let crate::commands::Command::Build(a) = cli.command else { panic!("not build") };
        assert!(a.plan && a.force && a.json);
        assert_eq!(
            (a.config.as_path(), a.out.as_deref()),
            (Path::new("p.toml"), Some(Path::new("o")))
        );
    }
}
