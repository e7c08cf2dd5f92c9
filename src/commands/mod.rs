//! One file per subcommand, each with its `Args` and `exec()`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod build;
pub mod completions;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod model;
pub mod perplexity;
pub mod pipeline;
pub mod progress;
pub mod targets;
pub mod verify;

/// Convert, quantize and verify small language models for ONNX Runtime and llama.cpp.
#[derive(Debug, Parser)]
#[command(name = "phiquant", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print no progress bars.
    ///
    /// Progress bars are drawn on stderr, and only when stderr is a terminal; --quiet hides them
    /// there too. Results and errors are still printed.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Inspect(inspect::Args),
    Export(export::Args),
    Build(build::Args),
    Generate(generate::Args),
    Perplexity(perplexity::Args),
    Targets(targets::Args),
    Verify(verify::Args),
    Completions(completions::Args),
}

/// Runs the parsed command.
pub fn exec(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(args) => inspect::exec(args, cli.quiet),
        Command::Export(args) => export::exec(args, cli.quiet),
        Command::Build(args) => build::exec(args, cli.quiet),
        Command::Generate(args) => generate::exec(args, cli.quiet),
        Command::Perplexity(args) => perplexity::exec(args, cli.quiet),
        Command::Targets(args) => targets::exec(args),
        Command::Verify(args) => verify::exec(args, cli.quiet),
        Command::Completions(args) => completions::exec(args),
    }
}

/// Writes `text` to stdout (an error on a closed pipe is reported to `main`, which exits 0).
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
