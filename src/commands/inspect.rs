//! `phiquant inspect`.

use std::process::ExitCode;

use phiquant_convert::{HubOptions, ModelSource};

/// Describe a checkpoint and check every tensor against its config
///
/// Reads config.json, opens every safetensors file (sharded checkpoints through
/// model.safetensors.index.json), checks each tensor's name, shape and dtype against the config,
/// and reports the architecture, parameter count, dimensions, rope, dtypes and bytes, tokenizer,
/// and how each target and MatMulNBits group size fits the shapes.
///
/// Examples:
///   phiquant inspect ./Phi-3-mini-4k-instruct
///   phiquant inspect microsoft/Phi-3-mini-4k-instruct --revision main --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Checkpoint folder, or hub id `org/name`.
    ///
    /// An existing path is read in place. Otherwise `org/name` is downloaded from the Hugging
    /// Face Hub (HF_ENDPOINT) into the standard cache (HF_HUB_CACHE, else HF_HOME/hub), fetching
    /// only config, tokenizer and safetensors files; HF_TOKEN authenticates and HF_HUB_OFFLINE=1
    /// uses the cache alone. Pickle checkpoints (pytorch_model.bin, *.pt) are refused.
    pub model: String,

    /// Hub branch, tag or commit (default: main).
    ///
    /// Only for hub ids; the commit it resolves to is reported.
    #[arg(long)]
    pub revision: Option<String>,

    /// Print one JSON object instead of text.
    ///
    /// The object carries `schema_version`; fields include `architecture`, `parameters`,
    /// `layers`, `heads`, `kv_heads`, `head_dim`, `vocab_size`, `tied_embeddings`, `rope`,
    /// `dtypes`, `tokenizer`, `group_sizes` and `targets`.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: Args, quiet: bool) -> anyhow::Result<ExitCode> {
    let source = ModelSource::parse(&args.model, args.revision.as_deref())?;
    let mut hub = HubOptions::from_env();
    hub.progress = !quiet;
    let model = source.resolve(&hub)?;
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
        assert_eq!(args.model, "org/name");
        assert_eq!(args.revision.as_deref(), Some("v2"));
        assert!(args.json);
        assert!(Cli::try_parse_from(["phiquant", "inspect"]).is_err());
    }
}
