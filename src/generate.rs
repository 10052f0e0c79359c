//! `ftpnat generate DIR` (a packaging subcommand of the binary, outside the documented command line): the man pages and shell completions,
//! made from the clap definition of the command line, never written by hand.
//!
//! Owns: what is generated and where it goes under `DIR` (`man/*.1`, `completions/ftpnat.bash`,
//! `completions/_ftpnat`, `completions/ftpnat.fish`), and keeping the output reproducible (the version
//! in the man pages is the package version, without the commit, so the files change only when the
//! command line does). Must not: define flags (`main.rs` does) or install anything. The checked-in copies
//! under `deploy/` are compared with this output by a unit test in `main.rs`, so CI fails when a flag
//! changes and they were not regenerated (`cargo run --release -- generate deploy`).

use std::io;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Files to write, as (path relative to the output directory, contents), in a stable order.
pub fn files(cmd: clap::Command) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    // The commit and profile belong to `--version`, not to documentation that is checked in.
    let mut cmd = cmd.version(env!("CARGO_PKG_VERSION")).disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    man_pages(&cmd, &mut out)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        out.push((Path::new("completions").join(file), buf));
    }
    Ok(out)
}

/// One page for the command and one for each visible subcommand (`ftpnat-run.1`, ...), as
/// `clap_mangen::generate_to` names them.
fn man_pages(cmd: &clap::Command, out: &mut Vec<(PathBuf, Vec<u8>)>) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("ftpnat manual");
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    out.push((Path::new("man").join(man.get_filename()), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, out)?;
    }
    Ok(())
}

/// Writes [`files`] under `dir`, creating `man/` and `completions/`; returns the paths written.
pub fn write_all(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (rel, data) in files(cmd)? {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
