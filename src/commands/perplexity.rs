//! `phiquant perplexity`.

use std::process::ExitCode;

use anyhow::Context;
use phiquant_runtime::{LlamaCppModel, OrtModel, Scoring, perplexity, perplexity_with};

/// Measure perplexity on a text file with the native engine (fp32), ONNX Runtime or llama.cpp.
///
/// A checkpoint runs on the native engine; an ONNX model folder (with genai_config.json) in ONNX
/// Runtime on --device; a .gguf file in llama.cpp.
///
/// The whole file is tokenized, cut into chunks of --ctx tokens, and each chunk evaluated on its
/// own with its first token replaced by BOS (when the model uses one), as llama.cpp's perplexity
/// tool does. By default only the second half of each chunk is scored (llama-perplexity);
/// --full-window scores every position.
///
/// Examples:
///   phiquant perplexity ./stories260K --corpus tinystories-val.txt --ctx 256 --chunks 16
///   phiquant perplexity ./Phi-3-mini-4k-instruct --corpus wiki.test.raw --json
///   phiquant perplexity ./out/cpu-int4 --corpus wiki.test.raw --ctx 512 --chunks 8
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub model: super::model::ModelArg,

    #[command(flatten)]
    pub device: super::model::DeviceArg,

    /// UTF-8 text file to score.
    #[arg(long)]
    pub corpus: std::path::PathBuf,

    /// Tokens per chunk (default 512, as llama-perplexity).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,

    /// Score at most N chunks (default: every whole chunk of the file).
    #[arg(long)]
    pub chunks: Option<usize>,

    /// Score every position of each chunk instead of its second half.
    #[arg(long)]
    pub full_window: bool,

    /// Print one JSON object `{"ppl", "nll", "tokens_scored", "chunks", "ctx", "scoring"}`.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading --corpus {}", args.corpus.display()))?;
    let scoring = if args.full_window { Scoring::FullWindow } else { Scoring::SecondHalf };
    let report = if super::model::is_onnx(&args.model.model) {
        // An ONNX folder runs in ONNX Runtime, tokenized by the folder's tokenizer.
        let model = OrtModel::load(args.model.model.as_ref(), args.device.onnx(), 0)?;
        let tokenizer = model.tokenizer()?;
        let tokens = tokenizer.encode_prompt(&text)?;
        let bos = if tokenizer.adds_bos() { tokenizer.bos() } else { None };
        let logits = |c: &[u32]| model.logits(c);
        perplexity_with(
            model.vocab_size(),
            &tokens,
            args.ctx,
            args.chunks,
            bos,
            scoring,
            logits,
            |_, _, _| {},
        )?
    } else if super::model::is_gguf(&args.model.model) {
        args.device.cpu_only("llama.cpp")?;
        // A GGUF file runs in llama.cpp, tokenized by its own metadata, as llama-perplexity does.
        let lcpp = LlamaCppModel::load(args.model.model.as_ref(), rayon::current_num_threads())?;
        let tokens = lcpp.tokenize(&text, lcpp.add_bos())?;
        let bos = if lcpp.add_bos() { lcpp.bos() } else { None };
        let logits = |c: &[u32]| lcpp.logits(c);
        perplexity_with(
            lcpp.vocab_size(),
            &tokens,
            args.ctx,
            args.chunks,
            bos,
            scoring,
            logits,
            |_, _, _| {},
        )?
    } else {
        args.device.cpu_only("the native engine")?;
        let model = super::model::load(&args.model.model, args.model.revision.as_deref(), quiet)?;
        // As llama.cpp tokenizes the corpus: with special tokens, so BOS leads the stream.
        let tokens = model.tokenizer.encode_prompt(&text)?;
        let bos = if model.tokenizer.adds_bos() { model.tokenizer.bos() } else { None };
        perplexity(&model.engine, &tokens, args.ctx, args.chunks, bos, scoring, |_, _, _| {})?
    };
    if args.json {
        super::print(&format!("{}\n", serde_json::to_string(&report)?))?;
    } else {
        super::print(&format!(
            "PPL = {:.4}  (mean NLL {:.6} over {} tokens, {} chunks of {}, {:?})\n",
            report.ppl, report.nll, report.tokens_scored, report.chunks, report.ctx, report.scoring
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
