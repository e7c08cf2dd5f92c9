//! `phiquant generate`.

use std::process::ExitCode;

use phiquant_runtime::{Generation, OrtModel, Sampling, generate_timed, stop_tokens};

/// Generate text from a prompt with the native engine (fp32), ONNX Runtime or llama.cpp.
///
/// A checkpoint runs on the native engine; an ONNX model folder (with genai_config.json) in ONNX
/// Runtime on --device; a .gguf file in llama.cpp (greedy only). The prompt is tokenized with the
/// model's tokenizer (BOS added when its tokenizer config says so); generation stops after
/// --max-tokens or at an end-of-sequence token (config.json and generation_config.json, or
/// genai_config.json). Greedy by default; --temperature > 0 samples.
///
/// Examples:
///   phiquant generate ./stories260K --prompt "" --max-tokens 32
///   phiquant generate ./Phi-3-mini-4k-instruct --prompt "The capital of France is" --json
///   phiquant generate ./out/cuda-int4 --device cpu --prompt "Hello"
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub model: super::model::ModelArg,

    #[command(flatten)]
    pub device: super::model::DeviceArg,

    /// The prompt text (may be empty: generation then starts from BOS alone).
    #[arg(long, default_value = "")]
    pub prompt: String,

    /// How many tokens to generate at most (default 64).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,

    /// Sampling temperature; 0 (the default) is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,

    /// Sample from the K most likely tokens only (0, the default, keeps all). Needs --temperature.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,

    /// Sample from the most likely tokens whose probability adds up to P (1, the default, keeps
    /// all). Needs --temperature.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,

    /// Seed of the sampler (default 0); the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Keep generating past end-of-sequence tokens (for benchmarks and fixed-length tests).
    #[arg(long)]
    pub ignore_eos: bool,

    /// Print one JSON object `{"prompt_ids", "token_ids", "text", "timing"}` instead of the text;
    /// `timing` gives prefill and decode seconds and tokens per second.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    }
    .validated()?;
    if super::model::is_onnx(&args.model.model) {
        return exec_onnx(&args, &sampling);
    }
    if super::model::is_gguf(&args.model.model) {
        args.device.cpu_only("llama.cpp")?;
        return exec_gguf(&args, &sampling);
    }
    args.device.cpu_only("the native engine")?;
    let model = super::model::load(&args.model.model, args.model.revision.as_deref(), quiet)?;
    let prompt_ids = model.tokenizer.encode_prompt(&args.prompt)?;
    if prompt_ids.is_empty() {
        anyhow::bail!(
            "--prompt is empty and the tokenizer adds no BOS token: give some prompt text"
        );
    }
    let stop = stop_tokens(&model.resolved.dir, model.engine.spec())?;
    let stop = if args.ignore_eos { Vec::new() } else { stop };
    let g = generate_timed(&model.engine, &prompt_ids, args.max_tokens, &sampling, &stop)?;
    let text = model.tokenizer.decode(&g.token_ids)?;
    print_generation(&args, &prompt_ids, &g, &text, None)
}

/// An ONNX model folder runs in ONNX Runtime on --device, with the folder's tokenizer.
fn exec_onnx(args: &Args, sampling: &Sampling) -> anyhow::Result<ExitCode> {
    let model = OrtModel::load(args.model.model.as_ref(), args.device.onnx(), 0)?;
    let tokenizer = model.tokenizer()?;
    let prompt_ids = tokenizer.encode_prompt(&args.prompt)?;
    if prompt_ids.is_empty() {
        anyhow::bail!(
            "--prompt is empty and the tokenizer adds no BOS token: give some prompt text"
        );
    }
    let stop = if args.ignore_eos { Vec::new() } else { model.eos_token_ids().to_vec() };
    let g = model.generate(&prompt_ids, args.max_tokens, sampling, &stop)?;
    let text = tokenizer.decode(&g.token_ids)?;
    let backend = serde_json::json!({"backend": "onnxruntime", "device": model.device().as_str()});
    print_generation(args, &prompt_ids, &g, &text, Some(backend))
}

/// Prints a generation as text after the prompt, or with --json as one object; `extra` adds
/// fields to the object.
fn print_generation(
    args: &Args,
    prompt_ids: &[u32],
    g: &Generation,
    text: &str,
    extra: Option<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let decoded = g.token_ids.len().saturating_sub(1);
        let mut v = serde_json::json!({
            "prompt_ids": prompt_ids,
            "token_ids": g.token_ids,
            "text": text,
            "timing": {
                "prefill_tokens": prompt_ids.len(),
                "prefill_secs": g.prefill_secs,
                "prefill_tokens_per_sec": prompt_ids.len() as f64 / g.prefill_secs,
                "decode_tokens": decoded,
                "decode_secs": g.decode_secs,
                "decode_tokens_per_sec": decoded as f64 / g.decode_secs,
            },
        });
        if let (Some(obj), Some(serde_json::Value::Object(extra))) = (v.as_object_mut(), extra) {
            obj.extend(extra);
        }
        super::print(&format!("{v}\n"))?;
    } else {
        super::print(&format!("{}{text}\n", args.prompt))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A GGUF file runs in llama.cpp (greedy), with the tokenizer its metadata describes.
fn exec_gguf(args: &Args, sampling: &Sampling) -> anyhow::Result<ExitCode> {
    if sampling.temperature != 0.0 {
        anyhow::bail!(
            "--temperature: sampling is not supported on GGUF files yet (they run greedily in llama.cpp); use --temperature 0"
        );
    }
    let lcpp = phiquant_runtime::LlamaCppModel::load(
        args.model.model.as_ref(),
        rayon::current_num_threads(),
    )?;
    let prompt_ids = lcpp.tokenize(&args.prompt, lcpp.add_bos())?;
    if prompt_ids.is_empty() {
        anyhow::bail!(
            "--prompt is empty and the GGUF's tokenizer adds no BOS token: give some prompt text"
        );
    }
    let start = std::time::Instant::now();
    let token_ids = lcpp.generate_greedy(&prompt_ids, args.max_tokens, &[])?;
    let secs = start.elapsed().as_secs_f64();
    let text = lcpp.detokenize(&token_ids)?;
    if args.json {
        let v = serde_json::json!({
            "prompt_ids": prompt_ids,
            "token_ids": token_ids,
            "text": text,
            "backend": "llama.cpp",
            "timing": { "total_secs": secs },
        });
        super::print(&format!("{v}\n"))?;
    } else {
        super::print(&format!("{}{text}\n", args.prompt))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::model::DeviceName;
    use crate::commands::{Cli, Command};

    #[test]
    fn parses_device() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["phiquant", "generate", "m"], args].concat())?;
            let Command::Generate(args) = cli.command else { panic!("not generate") };
            Ok::<_, clap::Error>(args.device.device)
        };
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["--device", "cpu"]).unwrap(), Some(DeviceName::Cpu));
        assert_eq!(parse(&["--device", "cuda"]).unwrap(), Some(DeviceName::Cuda));
        assert_eq!(parse(&["--device", "dml"]).unwrap(), Some(DeviceName::Dml));
        assert!(parse(&["--device", "tpu"]).is_err());
    }
}
