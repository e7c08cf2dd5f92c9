//! `phiquant inspect`.

use std::process::ExitCode;

/// Describe a checkpoint and check every tensor against its config
///
/// Reads config.json, opens every safetensors file (sharded checkpoints through
/// model.safetensors.index.json), checks each tensor's name, shape and dtype against the config,
/// and reports the architecture, parameter count, dimensions, rope, dtypes and bytes, tokenizer,
/// and how each target and MatMulNBits group size fits the shapes. A GGUF file is described as
/// the model phiquant rebuilds from its metadata, with its tensors by llama.cpp type.
///
/// Examples:
///   phiquant inspect ./Phi-3-mini-4k-instruct
///   phiquant inspect microsoft/Phi-3-mini-4k-instruct --revision main --json
///   phiquant inspect ./SmolLM2-135M-Instruct.Q4_1.gguf
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(flatten)]
    pub model: super::model::ModelArg,

    /// Print one JSON object instead of text.
    ///
    /// The object carries `schema_version`; fields include `architecture`, `parameters`,
    /// `layers`, `heads`, `kv_heads`, `head_dim`, `vocab_size`, `tied_embeddings`, `rope`,
    /// `dtypes`, `tokenizer`, `group_sizes` and `targets`.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let model = super::model::resolve(&args.model.model, args.model.revision.as_deref(), quiet)?;
    let report = phiquant_convert::inspect(&model)?;
    if args.json {
        super::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        super::print(&report.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::{Cli, Command};

    #[test]
    fn parses_inspect_flags() {
        let cli =
            Cli::try_parse_from(["phiquant", "inspect", "org/name", "--revision", "v2", "--json"])
                .unwrap();
        let Command::Inspect(args) = cli.command else { panic!("not inspect") };
        assert_eq!(args.model.model, "org/name");
        assert_eq!(args.model.revision.as_deref(), Some("v2"));
        assert!(args.json);
        assert!(Cli::try_parse_from(["phiquant", "inspect"]).is_err());
    }
}
