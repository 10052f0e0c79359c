//! An independent judge of `ftpnat replay` outputs: properties 1–6 of issue 5, made as strict as issue
//! 11's cases: an inside host's answer to a refused inbound opening never crosses (nor opens anything),
//! connections through a forward are picked up from either side and never dropped mid-stream, a gap in
//! a recorded control stream does not stall it (every byte the model frames in order after it must
//! reach the other side), and a control connection is only trusted while it looks like FTP. A segment
//! beyond any window the connection can have (more than 2^30 past what its receiver acknowledged, or
//! acknowledging more than 2^30 past what the other side sent) must be dropped and change nothing; an
//! RST closes the model's connection only at a sequence number a real peer's RST carries, so everything
//! after a spoofed one must still cross.
//!
//! Split by concept: [`packet`] (reading captures and packets), [`checksums`] (property 1),
//! [`normalise`] (comparison), [`reassembly`] (TCP streams), [`setup`] (the replay's arguments),
//! [`model`] (what the gateway must do, from the input alone), [`verdict`] (the checks and the report).
//!
//! Owns: reading captures with etherparse (link layer included), its own TCP stream reassembly, and its
//! own model of what the gateway must do — which WAN packets have a mapping, a forward or a pinhole,
//! which PORT/EPRT/227/229 lines must be rewritten and which refused — built from the input capture and
//! the replay arguments alone. Must not: ask the engine or the replayer anything. Only the summary JSON
//! (the replay's published output) is read, for its drop counts.
#![allow(dead_code)]

mod packet;
pub use packet::*;
mod checksums;
pub use checksums::*;
mod normalise;
pub use normalise::*;
mod reassembly;
pub use reassembly::*;
mod setup;
pub use setup::*;
mod model;
pub use model::*;
mod verdict;
// tests/replay_restart.rs compares outputs byte for byte and judges none.
#[allow(unused_imports)]
pub use verdict::*;

/// The corpus captures (every pcap/pcapng file under the corpus folder), when it is there.
pub fn corpus_captures() -> Vec<std::path::PathBuf> {
    // `../shared/corpus` from the repository (as tests/replay_corpus.rs), or from a worktree's parent.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::var_os("FTPNAT_CORPUS") {
        Some(p) => vec![std::path::PathBuf::from(p)],
        None => vec![root.join("../shared/corpus"), root.join("../../shared/corpus")],
    };
    let Some(dir) = dirs.into_iter().find(|d| d.is_dir()) else { return Vec::new() };
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng" || x == "gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A committed case's `ftpnat replay` arguments (its `args` file, one a line), the input made a path.
pub fn case_argv(case: &std::path::Path) -> Vec<String> {
    let mut argv: Vec<String> = std::fs::read_to_string(case.join("args"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    argv[0] = case.join(&argv[0]).display().to_string();
    argv
}

/// A corpus capture's replays: both sides of every private network as inside (the corpus' clients
/// and servers each end up behind the gateway in one split or another), named `<path>-<split>`.
pub fn corpus_splits(p: &std::path::Path) -> Vec<(String, Vec<String>)> {
    [("10", "10.0.0.0/8"), ("192", "192.168.0.0/16"), ("172", "172.16.0.0/12")]
        .into_iter()
        .map(|(split, inside)| {
            let argv = [&p.display().to_string(), "--inside", inside, "--public-ip", "198.51.100.77"];
            (format!("{}-{split}", p.display()), argv.map(String::from).to_vec())
        })
        .collect()
}

/// The committed cases: every folder under `tests/pcap/` with an `args` file, in name order.
pub fn committed_cases() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("pcap");
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .expect("tests/pcap exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("args").exists())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no case under {}", root.display());
    v
}
