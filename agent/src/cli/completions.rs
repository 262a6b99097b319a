//! `berth completions SHELL`: a completion script for the shell, on stdout.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, exit};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> ExitCode {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut script);
    super::out::bytes(&script);
    ExitCode::from(exit::SUCCESS)
}
