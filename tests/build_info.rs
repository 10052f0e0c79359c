//! `build.rs`, the source of `ftpnat --version`'s commit, run on its own against the ways sources reach a
//! builder: this git checkout, a `git archive` tarball (no `.git`), a `cargo package` tarball, a plain
//! copy that knows nothing, a tarball unpacked inside some other repository, and a packager's override.
//! The script is compiled with `rustc` and run with the environment cargo would give it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("ftpnat-build-info-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// The build script compiled once into `dir`.
fn compile(dir: &Path) -> PathBuf {
    let exe = dir.join("build-script");
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&exe)
        .arg(repo().join("build.rs"))
        .output()
        .expect("rustc runs");
    assert!(out.status.success(), "build.rs does not compile: {}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Runs the script as cargo would for a crate at `root`; the commit and profile it hands the crate.
fn run(exe: &Path, root: &Path, commit_env: Option<&str>) -> (String, String) {
    let mut c = Command::new(exe);
    c.env("CARGO_MANIFEST_DIR", root).env("PROFILE", "release").env_remove("FTPNAT_BUILD_COMMIT");
    if let Some(v) = commit_env {
        c.env("FTPNAT_BUILD_COMMIT", v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("cargo:rustc-env={key}=")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    (get("FTPNAT_COMMIT"), get("FTPNAT_PROFILE"))
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The sources as a plain copy: build.rs and build-commit as they are in the work tree.
fn copy_sources(to: &Path) {
    for f in ["build.rs", "build-commit"] {
        std::fs::copy(repo().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn without_git_the_commit_comes_from_the_tarball_or_is_unknown() {
    let s = scratch("plain");
    let exe = compile(&s.0);
    let plain = s.0.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    copy_sources(&plain);
    assert_eq!(run(&exe, &plain, None), ("unknown".to_string(), "release".to_string()));
    // A packager who knows the commit says so.
    assert_eq!(run(&exe, &plain, Some("1a2b3c4d5e6f")).0, "1a2b3c4d5e6f");
    // `cargo package` writes .cargo_vcs_info.json into the crate tarball.
    std::fs::write(
        plain.join(".cargo_vcs_info.json"),
        "{\n  \"git\": {\n    \"sha1\": \"0123456789abcdef0123456789abcdef01234567\"\n  },\n  \"path_in_vcs\": \"\"\n}\n",
    )
    .unwrap();
    assert_eq!(run(&exe, &plain, None).0, "0123456789ab");
}

#[test]
fn a_git_archive_tarball_and_the_checkout_name_head() {
    let Some(head) = git(&repo(), &["rev-parse", "HEAD"]) else {
        eprintln!("SKIP: {} is not a git checkout; the tarball cases above still ran", repo().display());
        return;
    };
    let s = scratch("archive");
    let exe = compile(&s.0);
    // The checkout itself: HEAD, maybe -dirty.
    let (commit, _) = run(&exe, &repo(), None);
    assert_eq!(commit.trim_end_matches("-dirty"), &head[..12], "{commit}");
    // `git archive HEAD` fills build-commit in (export-subst): the tarball knows its commit without .git.
    let tar = git(&repo(), &["archive", "--format=tar", "-o", s.0.join("src.tar").to_str().unwrap(), "HEAD"]);
    assert!(tar.is_some(), "git archive failed");
    let unpacked = s.0.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let ok =
        Command::new("tar").arg("-xf").arg(s.0.join("src.tar")).arg("-C").arg(&unpacked).status().unwrap();
    assert!(ok.success());
    assert!(!unpacked.join(".git").exists());
    assert_eq!(run(&exe, &unpacked, None).0, &head[..12]);
    // A plain copy unpacked inside some other repository must not take that repository's commit.
    let other = s.0.join("other");
    std::fs::create_dir_all(other.join("vendor/ftpnat")).unwrap();
    assert!(git(&other, &["init", "-q"]).is_some());
    let _ = git(
        &other,
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
    );
    copy_sources(&other.join("vendor/ftpnat"));
    assert_eq!(run(&exe, &other.join("vendor/ftpnat"), None).0, "unknown");
}
