//! Issue 15 item 1, "hitless restart", with the real binary and real FTP software in network namespaces:
//! ftpnat stopped with SIGTERM and started again with the same flags and `--state-file` loses no session.
//!
//! What it proves, through `netns-scripts/restart.sh` (the topology and the scenario; this file runs it
//! and reads its table):
//! - **With the state file, every session survives four restarts.** curl (PORT, EPRT, PASV, EPSV)
//!   and lftp (PORT, PASV, EPSV) against vsftpd (strict: no foreign PORT or PASV addresses), each
//!   session ONE control connection fetching several files; the first restart lands in the middle of
//!   every 200 MiB transfer (rate-limited), the second and third between two transfers of a session
//!   (curl's, lftp's); every file arrives sha256-equal, the client never reconnected (curl: every later
//!   URL "Re-using existing connection"; lftp: one connect, no retries) nor got a 4xx/5xx reply, and
//!   the command after the restarts on the same control connection (LIST; PWD and ls) works. PORT and
//!   EPRT change the line's length, so the ALG's sequence deltas must come back from the file. A Python
//!   ftplib session sends PORT before the first restart and RETR after the third: vsftpd's data
//!   connection needs the restored pinhole. A raw socket sends half a PORT line, the fourth restart
//!   comes, then the other half: the ALG's held bytes must come back for the line to be rewritten.
//!   ftpnat logs `state saved` and `state loaded` (flows > 0, pinholes > 0 while one is open) and exits
//!   0 each time.
//! - **Without it, the same test fails** (`STATE=off`): the proof that the test can see a lost session.
//!   Active-mode sessions (PORT/EPRT: pinholes, rewritten lines) must fail there; passive ones may
//!   survive a stateless restart by mid-stream pickup with port preservation, which the table shows.
//! - **Bad state files are refused, never trusted** (`SCENARIO=badfiles`): corrupt, truncated,
//!   foreign-version, another program's, empty, unreadable (a directory), and mismatched (other
//!   `--public-ip`, other `--inside`) files each give the warning `state file ignored` with its
//!   `reason`, are kept as `PATH.rejected`, and ftpnat starts empty, forwards FTP, and exits 0 on
//!   SIGTERM; a missing file is a plain start.
//!
//! Honours `FTPNAT_WORKERS` (CI's second run: 2, multi-queue persistent devices). Needs root: without it
//! the tests print `SKIP (needs root + netns)`, and fail under `CI=true`. The three tests take turns
//! (one lock: each moves gigabytes through the gateway); every wait is bounded; the script tears its
//! namespaces down on exit.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use netns_support::*;

/// One at a time: each run moves 1.4 GB through ftpnat on a machine that may have two CPUs.
static TURN: Mutex<()> = Mutex::new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A whole run of the script, however slow the machine (it bounds its own clients at 170 s).
const LIMIT: Duration = Duration::from_secs(240);

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// `N/M` from the last line `WHAT: N/M ...`.
    fn tally(&self, what: &str) -> Option<(u32, u32)> {
        let line = self.stdout.lines().rev().find(|l| l.starts_with(&format!("{what}: ")))?;
        let (n, m) = line.split_whitespace().nth(1)?.split_once('/')?;
        Some((n.parse().ok()?, m.parse().ok()?))
    }

    /// The table's rows for `session`'s `file` (`s1`, `big`, `s2`, `next`).
    fn row(&self, session: &str, file: &str) -> Option<&str> {
        self.stdout.lines().find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(session) && w.nth(1) == Some(file)
        })
    }

    fn all(&self) -> String {
        format!("exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

fn workers() -> String {
    std::env::var("FTPNAT_WORKERS").ok().filter(|w| !w.is_empty()).unwrap_or_else(|| "1".into())
}

/// Runs `netns-scripts/restart.sh` with `env`, under a lock and a hard time limit; prints its table.
fn restart_sh(test: &str, env: &[(&str, &str)]) -> Run {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = format!("ftpnat-r{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
    let secs = LIMIT.as_secs().to_string();
    let out = Command::new("timeout")
        .args(["-k", "5", &secs])
        .arg(script("restart.sh"))
        .env("FTPNAT_BIN", env!("CARGO_BIN_EXE_ftpnat"))
        .env("FTPNAT_WORKERS", workers())
        .env("RESTART_PREFIX", &prefix)
        .env("RUST_LOG", "ftpnat=info")
        .env_remove("RESTART_DIR")
        .env_remove("SCENARIO")
        .env_remove("STATE")
        .env_remove("NO_RESTART")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{test}: cannot run restart.sh: {e}"));
    let run = Run { status: out.status.code(), stdout: text(&out.stdout), stderr: text(&out.stderr) };
    // The table, whatever happens (stderr is not captured by the harness when the test fails, and
    // `--nocapture` shows it in any case); a copy in the target directory.
    let table: String =
        run.stdout.lines().take_while(|l| !l.starts_with("---- ")).collect::<Vec<_>>().join("\n");
    eprintln!("=== {test} (workers {}) ===\n{table}", workers());
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-w{}.txt", workers())),
        run.all(),
    );
    run
}

#[test]
fn restart_with_state_file_is_hitless() {
    let test = "restart_with_state_file_is_hitless";
    if !netns_available(test) {
        return;
    }
    let run = restart_sh(test, &[]);
    let (n, m) = run.tally("restart").unwrap_or_else(|| panic!("{test}: no tally line:\n{}", run.all()));
    assert!(m >= 45, "{test}: only {m} transfers in the table (45 expected):\n{}", run.all());
    assert_eq!((n, run.status), (m, Some(0)), "{test}: {n}/{m} transfers survived:\n{}", run.all());
    for line in [
        "restart 1: state saved",
        "restart 1: state loaded",
        "restart 1: pinholes restored",
        "restart 2: state saved",
        "restart 2: state loaded",
        "restart 2: pinholes restored",
        "restart 3: state saved",
        "restart 3: state loaded",
        "restart 3: pinholes restored",
        "restart 4: state saved",
        "restart 4: state loaded",
    ] {
        assert!(run.stdout.contains(&format!("OK    {line}")), "{test}: no '{line}':\n{}", run.all());
    }
    // Where the restarts landed, as the table says (the script fails a session whose note says NOT):
    // restart 1 in the middle of each 200 MiB transfer, 2 and 3 between transfers.
    for s in [
        "curl-mid-PORT",
        "curl-mid-EPRT",
        "curl-mid-PASV",
        "curl-mid-EPSV",
        "lftp-PORT",
        "lftp-PASV",
        "lftp-EPSV",
    ] {
        let next = run.row(s, "next").unwrap_or_default();
        assert!(next.contains("restart 1 at "), "{test}: {s}: restart 1 not in big: {next}");
    }
    for s in ["lftp-PORT", "lftp-PASV", "lftp-EPSV"] {
        let next = run.row(s, "next").unwrap_or_default();
        assert!(next.contains("restart 3 between big and s2"), "{test}: {s}: restart 3 not between: {next}");
    }
    let pin = run.row("ftplib-PORT", "next").unwrap_or_default();
    assert!(pin.contains("PORT sent before restart 1, RETR after restart 3"), "{test}: ftplib-PORT: {pin}");
    let held = run.row("raw-PORT-held", "next").unwrap_or_default();
    assert!(held.contains("restart 4 with half its PORT line held"), "{test}: raw-PORT-held: {held}");
    assert!(!run.stdout.contains("hold ran out"), "{test}: an ALG hold ran out:\n{}", run.all());
    for s in ["curl-gap-PORT", "curl-gap-EPRT", "curl-gap-PASV", "curl-gap-EPSV"] {
        let next = run.row(s, "next").unwrap_or_default();
        assert!(
            next.contains("restart 1 between s1 and s2") && next.contains("restart 2 between s2 and LIST"),
            "{test}: {s}: restarts not between transfers: {next}"
        );
    }
}

#[test]
fn restart_without_state_file_fails() {
    let test = "restart_without_state_file_fails";
    if !netns_available(test) {
        return;
    }
    let run = restart_sh(test, &[("STATE", "off")]);
    let (n, m) = run.tally("restart").unwrap_or_else(|| panic!("{test}: no tally line:\n{}", run.all()));
    assert!(
        m >= 45 && n < m,
        "{test}: {n}/{m} survived without a state file: the test proves nothing:\n{}",
        run.all()
    );
    assert_ne!(run.status, Some(0), "{test}: the script passed without a state file:\n{}", run.all());
    // Active mode needs what only the state file carries (pinholes, the PORT/EPRT rewrite's deltas).
    for s in ["curl-mid-PORT", "curl-mid-EPRT", "lftp-PORT", "ftplib-PORT", "raw-PORT-held"] {
        let row = run.row(s, "next").unwrap_or_default();
        assert!(
            row.split_whitespace().nth(5) == Some("FAIL"),
            "{test}: {s} survived a stateless restart: {row}"
        );
    }
    assert!(!run.stdout.contains("state loaded"), "{test}: a state file was loaded:\n{}", run.all());
}

#[test]
fn bad_state_files_are_refused_and_start_empty() {
    let test = "bad_state_files_are_refused_and_start_empty";
    if !netns_available(test) {
        return;
    }
    let run = restart_sh(test, &[("SCENARIO", "badfiles")]);
    let (n, m) = run.tally("badfiles").unwrap_or_else(|| panic!("{test}: no tally line:\n{}", run.all()));
    assert_eq!((n, m, run.status), (9, 9, Some(0)), "{test}: {n}/{m} cases OK:\n{}", run.all());
    for (case, reason) in [
        ("corrupt", "reason=corrupt"),
        ("truncated", "reason=truncated"),
        ("version", "reason=version"),
        ("foreign", "reason=foreign"),
        ("empty", "reason=truncated"),
        ("unreadable", "reason=unreadable"),
        ("mismatch-ip", "reason=mismatch"),
        ("mismatch-inside", "reason=mismatch"),
    ] {
        let row = run.stdout.lines().find(|l| l.split_whitespace().nth(1) == Some(case)).unwrap_or_default();
        assert!(row.starts_with("  OK") && row.contains(reason), "{test}: {case}: {row}");
    }
}
