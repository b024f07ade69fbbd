//! Shell completions and man pages, generated from the same clap
//! definitions that parse the command line, so they cannot drift.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Command, CommandFactory};
use clap_complete::Shell;

use crate::Cli;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write a page per command (berth.1, berth-fn.1, berth-fn-deploy.1, …)
    /// into this directory instead of printing berth(1) to stdout.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `berth completion SHELL`: the script on stdout, e.g.
/// `berth completion bash > /etc/bash_completion.d/berth`.
pub fn completion(args: &CompletionArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut out);
    out.flush()?;
    Ok(0)
}

/// `berth man`: berth(1) on stdout, or a page per command in a directory.
pub fn man(args: &ManArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    cmd.build();
    match &args.dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let written = write_pages(&cmd, "berth", dir)?;
            eprintln!("berth: {written} man pages written to {}", dir.display());
        }
    }
    Ok(0)
}

/// Writes `name.1` for `cmd` and, below it, one page per subcommand.
fn write_pages(cmd: &Command, name: &str, dir: &Path) -> Result<usize> {
    let page = cmd.clone().name(name.to_owned());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
