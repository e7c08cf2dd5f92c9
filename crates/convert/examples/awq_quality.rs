//! AWQ against round-to-nearest on held-out text, measured with the native engine on
//! fake-quantized weights (every decoder linear layer quantized and dequantized exactly as the
//! target's writer stores it; embedding, norms and LM head in full precision): perplexity and
//! the mean KL divergence from the full-precision model's next-token distributions.
//!
//! ```sh
//! cargo run --release --no-default-features -p phiquant-convert --example awq_quality -- \
//!     --model DIR --calib ../shared/corpora/tinystories-val.txt --samples 32 --len 512 \
//!     --heldout ../shared/corpora/sotu.txt --chunks 8 --ctx 512 --group 128
//! ```
//!
//! Prints one JSON line per variant (`fp`, `rtn-asym`, `awq-asym`, `rtn-sym`, `awq-sym`).
//! Options: `--only asym|sym`, `--loss-tokens N`, `--grid N`, `--no-clip`, `--no-duo`,
//! `--propagation quantized|float`, `--joint-clip`, `--no-refit` (no refit of the block scales
//! after the clipping search, the default before 2026-12-07's fifth stop), `--symmetric-clip`
//! (the reference's clipping search for asymmetric formats too; `--two-sided-clip`, now the
//! default, is accepted so that older commands run unchanged), `--refine SWEEPS` (the
//! per-channel refinement of the scales), `--statistic mean-abs|rms` (AWQ's activation
//! statistic), `--fp16-scales` (the fp16-I/O targets' quantizer),
//! `--linears q,k,v,o,gate,up,down` (only those quantized).
//!
//! For side-by-side runs with another tool (`scripts/bench/autoawq.py`): `--dump-calib FILE`
//! writes the calibration windows (token ids, a JSON array per window) and exits, and
//! `--compare DIR` (repeatable) scores each checkpoint DIR as it is (weights already quantized
//! and dequantized by that tool) against `--model`'s full precision, printing a `compare` line
//! per DIR after `fp` instead of the RTN and AWQ variants.

use std::{io::Write, path::PathBuf, sync::Arc};

use phiquant_convert::{
    awq::{
        AwqOptionsBuilder, Calibration, LinearQuantizers, Propagation, Statistic, awq_transform,
        fake_quantized_model,
    },
    onnx::{Ep, IoType, OnnxScheme, OnnxWeights},
};
use phiquant_quant::{BlockFormat, FakeQuant};
use phiquant_runtime::{Checkpoint, Engine, Logits, ModelWeights, Tokenizer, WeightSource};
use phiquant_verify::compare_token;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    model: PathBuf,
    calib: PathBuf,
    heldout: PathBuf,
    samples: usize,
    len: usize,
    chunks: usize,
    ctx: usize,
    group: usize,
    only: Option<String>,
    options: AwqOptionsBuilder,
    fp16: bool,
    linears: Option<Vec<String>>,
    dump_calib: Option<PathBuf>,
    compare: Vec<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        model: PathBuf::new(),
        calib: PathBuf::new(),
        heldout: PathBuf::new(),
        samples: 32,
        len: 512,
        chunks: 8,
        ctx: 512,
        group: 128,
        only: None,
        options: AwqOptionsBuilder::new(),
        fp16: false,
        linears: None,
        dump_calib: None,
        compare: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--calib" => a.calib = value()?.into(),
            "--heldout" => a.heldout = value()?.into(),
            "--samples" => a.samples = value()?.parse()?,
            "--len" => a.len = value()?.parse()?,
            "--chunks" => a.chunks = value()?.parse()?,
            "--ctx" => a.ctx = value()?.parse()?,
            "--group" => a.group = value()?.parse()?,
            "--only" => a.only = Some(value()?),
            "--loss-tokens" => {
                a.options.loss_tokens(value()?.parse()?);
            }
            "--grid" => {
                a.options.grid(value()?.parse()?);
            }
            "--propagation" => {
                a.options.propagation(match value()?.as_str() {
                    "float" => Propagation::Float,
                    _ => Propagation::Quantized,
                });
            }
            "--no-clip" => {
                a.options.clip(false);
            }
            "--two-sided-clip" => {
                a.options.two_sided_clip(true);
            }
            "--no-refit" => {
                a.options.refit_scales(false);
            }
            "--symmetric-clip" => {
                a.options.two_sided_clip(false);
            }
            "--refine" => {
                a.options.refine(value()?.parse()?);
            }
            "--joint-clip" => {
                a.options.joint_clip(true);
            }
            "--statistic" => {
                a.options.statistic(match value()?.as_str() {
                    "mean-abs" => Statistic::MeanAbs,
                    "rms" => Statistic::Rms,
                    other => return Err(format!("--statistic {other}: mean-abs or rms").into()),
                });
            }
            "--no-duo" => {
                a.options.duo(false);
            }
            "--fp16-scales" => a.fp16 = true,
            "--linears" => a.linears = Some(value()?.split(',').map(String::from).collect()),
            "--dump-calib" => a.dump_calib = Some(value()?.into()),
            "--compare" => a.compare.push(value()?.into()),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(a)
}

/// The full-precision logits of every position of each chunk.
fn reference(fp: &Engine, chunks: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    chunks.iter().map(|c| Ok(fp.session(c.len()).forward(c, Logits::All)?.to_vec())).collect()
}

/// Perplexity of `q` over the chunks (every position scored) and the mean KL divergence of its
/// next-token distributions from the reference logits `p`, each position compared as
/// `phiquant verify` does.
fn score(p: &[Vec<f32>], q: &Engine, chunks: &[Vec<u32>]) -> Result<(f64, f64)> {
    let vocab = q.spec().vocab_size;
    let mut scratch = Vec::new();
    let (mut nll, mut kld, mut n) = (0f64, 0f64, 0usize);
    for (c, p) in chunks.iter().zip(p) {
        let mut s = q.session(c.len());
        let logits = s.forward(c, Logits::All)?;
        for j in 0..c.len() - 1 {
            let row = j * vocab..(j + 1) * vocab;
            let t = compare_token(&p[row.clone()], &logits[row], c[j + 1] as usize, &mut scratch);
            nll += t.nll_q;
            kld += t.kld;
            n += 1;
        }
    }
    Ok(((nll / n as f64).exp(), kld / n as f64))
}

fn main() -> Result<()> {
    let args = parse()?;
    let options = args.options.build()?;
    let ckpt: Arc<dyn WeightSource + Send + Sync> = Arc::new(Checkpoint::open(&args.model)?);
    let spec = ckpt.spec().clone();
    let tokenizer = Tokenizer::from_dir(&args.model, spec.bos_token_id)?;
    let text = std::fs::read_to_string(&args.calib)?;
    let calib = Calibration::from_text(
        &text,
        &args.calib.display().to_string(),
        &tokenizer,
        args.samples,
        args.len,
    )?;
    if let Some(path) = &args.dump_calib {
        let windows: Vec<String> = calib
            .windows()
            .iter()
            .map(|w| {
                let ids: Vec<String> = w.iter().map(u32::to_string).collect();
                format!("[{}]", ids.join(","))
            })
            .collect();
        std::fs::write(path, format!("[{}]\n", windows.join(",\n")))?;
        return Ok(());
    }
    let held = tokenizer.encode_prompt(&std::fs::read_to_string(&args.heldout)?)?;
    let bos = if tokenizer.adds_bos() { tokenizer.bos() } else { None };
    let chunks: Vec<Vec<u32>> = held
        .chunks_exact(args.ctx)
        .take(args.chunks)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect();
    let fp = Engine::load(ckpt.as_ref())?;
    let mut out = std::io::stdout().lock();
    let reference = reference(&fp, &chunks)?;
    let (ppl, _) = score(&reference, &fp, &chunks)?;
    writeln!(out, "{{\"variant\":\"fp\",\"ppl\":{ppl:.4}}}")?;
    if !args.compare.is_empty() {
        for dir in &args.compare {
            let other = Checkpoint::open(dir)?;
            if other.spec() != &spec {
                return Err(format!("{}: not the architecture of --model", dir.display()).into());
            }
            let (ppl, kld) = score(&reference, &Engine::load(&other)?, &chunks)?;
            let dir = dir.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
            writeln!(
                out,
                "{{\"variant\":\"compare\",\"dir\":\"{dir}\",\"ppl\":{ppl:.4},\"kld\":{kld:.5}}}"
            )?;
        }
        return Ok(());
    }
    let scratch =
        std::env::temp_dir().join(format!("awq-quality-{}.safetensors", std::process::id()));
    for sym in [false, true] {
        let name = if sym { "sym" } else { "asym" };
        if args.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let scheme = OnnxScheme {
            ep: Ep::Cpu,
            io: if args.fp16 { IoType::F16 } else { IoType::F32 },
            weights: OnnxWeights::Int4 {
                block_size: args.group,
                symmetric: sym,
                accuracy_level: 0,
            },
        };
        let all = LinearQuantizers::for_onnx(&spec, &scheme, "cpu-int4")?;
        // With --linears, the other projections stay in full precision (an ablation).
        let quantizers = LinearQuantizers::from_fn(&spec, |l, linear, _| {
            let name = format!("{linear:?}").to_lowercase();
            Ok(match &args.linears {
                Some(keep) if !keep.contains(&name) => FakeQuant::Ggml(BlockFormat::F32),
                _ => *all.get(l, linear),
            })
        })?;
        let rtn = fake_quantized_model(ckpt.as_ref(), &quantizers)?;
        let (ppl, kld) = score(&reference, &Engine::new(spec.clone(), rtn)?, &chunks)?;
        writeln!(out, "{{\"variant\":\"rtn-{name}\",\"ppl\":{ppl:.4},\"kld\":{kld:.5}}}")?;
        let started = std::time::Instant::now();
        let mut log = std::io::stderr();
        let awq =
            awq_transform(Arc::clone(&ckpt), &calib, &quantizers, &options, &scratch, &mut |r| {
                let _ = writeln!(log, "{r}");
            })?;
        let secs = started.elapsed().as_secs_f64();
        let weights: ModelWeights = fake_quantized_model(&awq, &quantizers)?;
        drop(awq);
        let (ppl, kld) = score(&reference, &Engine::new(spec.clone(), weights)?, &chunks)?;
        writeln!(
            out,
            "{{\"variant\":\"awq-{name}\",\"ppl\":{ppl:.4},\"kld\":{kld:.5},\"awq_seconds\":{secs:.1}}}"
        )?;
    }
    Ok(())
}
