//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same harness bodies the
//! cargo-fuzz targets run, so CI checks the corpora and the regression inputs without cargo-fuzz.
//!
//! Owns: nothing but the replay loop. The bodies and their invariants are in `fuzz/src/lib.rs`, included
//! here as a module. Must not: check anything of its own: a corpus file fails exactly when it would
//! crash the fuzz target.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_harness;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read corpus file"))).collect()
}

fn replay(target: &str, body: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for (path, data) in &files {
        let r = std::panic::catch_unwind(|| body(data));
        assert!(r.is_ok(), "{target}: corpus file {} fails", path.display());
    }
    println!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn ftp_parse_corpus() {
    replay("ftp_parse", fuzz_harness::ftp_parse);
}

#[test]
fn stream_corpus() {
    replay("stream", fuzz_harness::stream);
}

#[test]
fn engine_corpus() {
    replay("engine", fuzz_harness::engine);
}

/// The seeds recorded from real sessions reach the ALG: rewrites happen and pinholes are used (a seed
/// that stopped reaching that deep would make the fuzz runs shallow without anyone noticing).
#[test]
fn session_seeds_reach_the_alg() {
    for (name, data) in corpus("engine") {
        let name = name.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-snat") && !name.starts_with("seed-dnat") {
            continue;
        }
        let m = fuzz_harness::engine_run(&data).expect("seed configuration is valid");
        println!(
            "{name}: rewrites {} pinholes created {} used {}",
            m.alg_rewrites(),
            m.pinholes_created,
            m.pinholes_used
        );
        assert!(m.flows_created >= 2, "{name}: control and data connections: {m:?}");
        if name.contains("dnat-port") || name.contains("snat-pasv") {
            // The announcing side is outside (its own address is right as it is): nothing to rewrite.
            continue;
        }
        assert!(m.alg_rewrites() >= 2, "{name}: {m:?}");
        assert!(m.pinholes_used >= 1, "{name}: {m:?}");
    }
}

/// Replays one input with every decoded operation printed, to read a crash:
/// `FUZZ_TARGET=stream FUZZ_FILE=fuzz/artifacts/stream/crash-... cargo test --test fuzz_corpus replay_one
/// -- --ignored --nocapture`.
#[test]
#[ignore = "a debugging tool: run by hand with FUZZ_TARGET and FUZZ_FILE set"]
fn replay_one() {
    let target = std::env::var("FUZZ_TARGET").expect("FUZZ_TARGET");
    let data = std::fs::read(std::env::var("FUZZ_FILE").expect("FUZZ_FILE")).expect("read FUZZ_FILE");
    fuzz_harness::set_trace(true);
    match target.as_str() {
        "ftp_parse" => fuzz_harness::ftp_parse(&data),
        "stream" => fuzz_harness::stream(&data),
        "engine" => fuzz_harness::engine(&data),
        t => panic!("unknown target {t}"),
    }
}
