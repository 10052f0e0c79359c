//! Build script: the commit and build profile that `ftpnat --version` reports.
//!
//! Owns: finding the commit the sources come from, and handing it and the profile to the crate as
//! `FTPNAT_COMMIT` and `FTPNAT_PROFILE`. Must not: generate code or touch anything outside `OUT_DIR`.
//!
//! Where the commit comes from, first found wins:
//! 1. `FTPNAT_BUILD_COMMIT` in the environment (a packager who knows better).
//! 2. git, when the crate is the top of a git work tree (not a tarball unpacked inside some other
//!    repository): `HEAD`'s hash, `-dirty` when tracked files that make the binary (`src/`,
//!    `Cargo.toml`, `Cargo.lock`, `build.rs`) differ from it.
//! 3. `build-commit`, which `git archive` fills in (`export-subst` in `.gitattributes`), so a release
//!    tarball without `.git` still knows its commit.
//! 4. `.cargo_vcs_info.json`, which `cargo package` writes into a crate tarball.
//! 5. `unknown`.
//!
//! The script reruns when those sources change, not on every commit: a commit of what was just built
//! rebuilds nothing (every target of the package would be rebuilt otherwise), so such a build still
//! says `<previous commit>-dirty`, which is what it was built from. Fresh builds (`cargo install`,
//! `cargo deb` in a clean checkout, CI) name their commit exactly.

use std::path::Path;
use std::process::Command;

/// Hash characters shown: enough to be unique in any repository of this size, short enough to read.
const SHOWN: usize = 12;
/// The files whose changes make a different binary (and so rerun this script).
const SOURCES: [&str; 6] = ["src", "core/src", "Cargo.toml", "core/Cargo.toml", "Cargo.lock", "build.rs"];

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    for s in SOURCES.iter().chain(&["build-commit", ".cargo_vcs_info.json"]) {
        if root.join(s).exists() {
            println!("cargo:rerun-if-changed={s}");
        }
    }
    println!("cargo:rerun-if-env-changed=FTPNAT_BUILD_COMMIT");
    let commit = std::env::var("FTPNAT_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_string())
        .or_else(|| from_git(root))
        .or_else(|| from_archive(root))
        .or_else(|| from_cargo_package(root))
        .unwrap_or_else(|| "unknown".to_string());
    // "release" or "debug": whether the build inherits from cargo's release or dev profile.
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=FTPNAT_COMMIT={commit}");
    println!("cargo:rustc-env=FTPNAT_PROFILE={profile}");
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn short(hash: &str) -> Option<String> {
    let h = hash.trim();
    (h.len() >= 7 && h.chars().all(|c| c.is_ascii_hexdigit())).then(|| h[..h.len().min(SHOWN)].to_string())
}

fn from_git(root: &Path) -> Option<String> {
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    // A tarball unpacked inside another repository must not take that repository's commit.
    let same =
        |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    if !same(Path::new(&top), root) {
        return None;
    }
    let hash = short(&git(root, &["rev-parse", "HEAD"])?)?;
    let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    args.extend(SOURCES);
    let dirty = git(root, &args).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

fn from_archive(root: &Path) -> Option<String> {
    // Unexpanded (`$Format:%H$`) in a checkout; the commit's hash in a `git archive` tarball.
    short(&std::fs::read_to_string(root.join("build-commit")).ok()?)
}

fn from_cargo_package(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".cargo_vcs_info.json")).ok()?;
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + 6..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    short(&rest[start..end])
}
