//! `phiquant`: convert, quantize and verify small language models for ONNX Runtime and llama.cpp.
//!
//! # Overview
//! The binary is flag definitions and glue only; the work lives in the library crates:
//! - `phiquant-quant` (`crates/quant`): pure quantization numerics, no I/O.
//! - `phiquant-runtime` (`crates/runtime`): model definitions, weight readers, inference backends.
//! - `phiquant-convert` (`crates/convert`): model sources (local and Hub), the target table,
//!   export pipeline and writers.
//! - `phiquant-verify` (`crates/verify`): verification statistics, reports and gates.
//!
//! Each subcommand is one file in `src/commands/`. Exit codes: 0 success, 1 a failed check,
//! 2 an error (bad input, I/O, network), 0 when stdout is closed early (a broken pipe).

use std::{io::Write, process::ExitCode};

use clap::Parser;

mod commands;

/// Exit status for an error.
const EXIT_ERROR: u8 = 2;

/// Exit status after SIGINT or SIGTERM (128 + SIGINT, as shells report an interrupted command).
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help and version go to stdout and succeed.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors: clap's message folded onto one line, exit 2.
            let _ = writeln!(std::io::stderr().lock(), "{}", one_line(&e.to_string()));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // An interrupted run removes its unfinished artefacts (they are all under temporary names)
    // and exits 130: a pipeline never finds half an artefact. A commit in progress completes
    // first, so what is in place is whole.
    let _ = ctrlc::set_handler(|| {
        phiquant_convert::remove_partials();
        let _ =
            writeln!(std::io::stderr().lock(), "error: interrupted; unfinished artefacts removed");
        std::process::exit(EXIT_INTERRUPTED);
    });
    match commands::exec(cli) {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes joined by ": ".
            let _ = writeln!(std::io::stderr().lock(), "error: {}", error_line(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// clap's multi-line usage error as one line: its message, tips and a pointer to --help.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    format!("{} (see --help)", parts.join("; ").replace(":;", ":"))
}

/// The error and its causes joined by ": ", each cause once: several of the libraries' errors
/// already end with their source's text, which `{:#}` would print again.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.ends_with(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
