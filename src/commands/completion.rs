//! `nvbind completion SHELL`: the shell's completion script for every verb and flag, generated
//! from the same clap definitions the parser uses, so it cannot drift from them.

use std::io::Write as _;

use anyhow::{Context, Result};
use clap_complete::Shell;

#[derive(clap::Args, Debug)]
#[command(after_help = "Installed by the Debian package; by hand:
  nvbind completion bash >/usr/share/bash-completion/completions/nvbind
  nvbind completion zsh  >/usr/share/zsh/vendor-completions/_nvbind
  nvbind completion fish >/usr/share/fish/vendor_completions.d/nvbind.fish")]
pub struct CompletionArgs {
    /// The shell to write the script for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `cli` is the whole command line (`Cli::command()`), handed down by main.
pub fn run(args: &CompletionArgs, mut cli: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "nvbind", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|_| stdout.flush())
        .context("cannot write the completion script to stdout")
}
