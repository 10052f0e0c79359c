//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through the same harness bodies the
//! cargo-fuzz targets run, so CI checks the corpora and the regression inputs without cargo-fuzz.
//!
//! Owns: nothing but the replay loop. The bodies and their invariants are the test kit's
//! (`ftpnat_testkit::fuzz`, testkit/src/fuzz/). Must not: check anything of its own: a corpus file fails exactly when it would
//! crash the fuzz target.

use ftpnat_testkit::fuzz as fuzz_harness;

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

/// Issue 15: the engine corpus again, each program run straight and restarted before every step
/// (the `engine_restart` target has no corpus of its own: it explores from the engine's).
#[test]
fn engine_restart_corpus() {
    replay("engine", fuzz_harness::engine_restart);
}

#[test]
fn pcap_read_corpus() {
    replay("pcap_read", fuzz_harness::pcap_read);
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", fuzz_harness::config_toml);
}

#[test]
fn control_request_corpus() {
    replay("control_request", fuzz_harness::control_request);
}

#[test]
fn metrics_request_corpus() {
    replay("metrics_request", fuzz_harness::metrics_request);
}

/// The capture seeds reach past the header: every format the reader knows yields frames from some seed
/// (a corpus that stopped reaching the records would make the fuzz runs shallow unnoticed).
#[test]
fn capture_seeds_reach_the_records() {
    use ftpnat::io::pcap::CaptureReader;
    for want in
        ["seed-pcap-le-us-raw", "seed-pcap-be-ns-ipv4", "seed-pcapng-two-sections", "seed-gzip-pcapng"]
    {
        let (_, data) = corpus("pcap_read")
            .into_iter()
            .find(|(p, _)| p.file_name().is_some_and(|n| n == want))
            .unwrap_or_else(|| panic!("{want} is missing"));
        let src = Box::new(std::io::Cursor::new(data));
        let mut r = CaptureReader::from_reader(std::path::Path::new(want), src).unwrap();
        let mut n = 0;
        while r.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert!(n >= 2, "{want}: {n} frames");
    }
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
        "pcap_read" => fuzz_harness::pcap_read(&data),
        "config_toml" => fuzz_harness::config_toml(&data),
        "control_request" => fuzz_harness::control_request(&data),
        "metrics_request" => fuzz_harness::metrics_request(&data),
        t => panic!("unknown target {t}"),
    }
}
