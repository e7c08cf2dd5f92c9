//! `phiquant targets`.

use std::{fmt::Write, process::ExitCode};

use phiquant_convert::TARGETS;

/// List every export target with its exact weight scheme.
///
/// Every target accepts overrides at export (--algo, --group-size, --symmetric/--asymmetric,
/// --accuracy-level); the scheme shown is the default, named after the official release where
/// one exists.
///
/// Examples:
///   phiquant targets
///   phiquant targets --json | jq '.[] | select(.format == "onnx") | .name'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Print a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    if args.json {
        let rows: Vec<serde_json::Value> = TARGETS
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).expect("targets serialize");
                v["scheme"] = t.scheme().into();
                v
            })
            .collect();
        super::print(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for t in &TARGETS {
        let format = format!("{:?}", t.format).to_ascii_uppercase();
        writeln!(out, "{:<12} {:<5} {:<5} {}", t.name, format, t.io_dtype, t.consumer)?;
        writeln!(out, "{:24}{}", "", t.scheme())?;
        if let Some(release) = t.release_name {
            writeln!(out, "{:24}matches the official `{release}` release", "")?;
        }
        if let Some(note) = t.note {
            writeln!(out, "{:24}note: {note}", "")?;
        }
    }
    super::print(&out)?;
    Ok(ExitCode::SUCCESS)
}
