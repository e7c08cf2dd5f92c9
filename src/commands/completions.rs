//! `phiquant completions`.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Print a shell completion script on stdout.
///
/// Examples:
///   phiquant completions bash > /etc/bash_completion.d/phiquant
///   phiquant completions zsh > "${fpath[1]}/_phiquant"
///   phiquant completions fish > ~/.config/fish/completions/phiquant.fish
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The shell: bash, elvish, fish, powershell or zsh.
    pub shell: Shell,
}

pub fn exec(args: Args) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::Cli::command(), "phiquant", &mut script);
    super::print(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn writes_a_script_naming_every_command() {
        let cli =
            crate::commands::Cli::try_parse_from(["phiquant", "completions", "bash"]).unwrap();
        let crate::commands::Command::Completions(args) = cli.command else { panic!() };
        let mut script = Vec::new();
        clap_complete::generate(
            args.shell,
            &mut crate::commands::Cli::command(),
            "phiquant",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for command in ["inspect", "export", "build", "verify", "targets", "completions"] {
            assert!(script.contains(command), "{command}");
        }
        assert!(crate::commands::Cli::try_parse_from(["phiquant", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn every_command_help_has_examples() {
        let mut cli = crate::commands::Cli::command();
        for sub in cli.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Examples:\n  phiquant "), "{}: no examples", sub.get_name());
        }
    }
}
