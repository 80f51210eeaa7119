//! Writes the shell completions and manual pages of the `latus` command
//! line, generated from its definition (`latus::cli::Cli`), for the Debian
//! package (`scripts/package-deb.sh`):
//!
//!     cargo run --example package_assets -- OUT
//!
//! makes `OUT/completions/{latus.bash,_latus,latus.fish}` and
//! `OUT/man/latus.1` plus one page per command (`latus-mount.1`,
//! `latus-key-export.1`, ...).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: package_assets OUT_DIR")?;
    let mut cmd = latus::cli::Cli::command();
    cmd.build();

    let completions = out.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        (Shell::Bash, "latus.bash"),
        (Shell::Zsh, "_latus"),
        (Shell::Fish, "latus.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "latus", &mut buf);
        write(&completions.join(file), &buf)?;
    }

    let man = out.join("man");
    fs::create_dir_all(&man)?;
    pages(&cmd, "latus", &man)
}

/// The page of `cmd` as `NAME.1`, then one per visible subcommand.
fn pages(cmd: &clap::Command, name: &str, dir: &Path) -> Result<()> {
    let mut buf = Vec::new();
    let page = cmd
        .clone()
        .display_name(name)
        .version(env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(page).render(&mut buf)?;
    write(&dir.join(format!("{name}.1")), &buf)?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}
