//! Issue 15: a restart with `--state-file` changes nothing. `ftpnat replay --restart-every N` saves
//! the engine's state every N frames ([`Engine::save_state`]) and goes on with an engine restored from
//! it ([`Engine::restore`]); over every committed case under `tests/pcap/` and every capture of the
//! shared corpus (when present, three `--inside` splits each), the LAN pcap, the WAN pcap and the
//! summary are byte for byte those of one engine that never stopped. Restarting after every frame
//! puts a restart between a rewritten PORT and its acknowledgement, inside a held line, between a
//! pinhole's opening and its use, in the middle of a TCP handshake: whatever the state forgot or
//! re-derived differently would change a sequence number, a port or a counter.
//!
//! [`Engine::save_state`]: ftpnat::engine::Engine::save_state
//! [`Engine::restore`]: ftpnat::engine::Engine::restore

mod replay_check;

use std::path::Path;

use ftpnat::replay::{self, cli};
use replay_check::{committed_cases, corpus_captures};

/// Replays `argv` (outputs appended) into `dir`: the three outputs' bytes, or the error.
fn replay(argv: &[String], dir: &Path, restart_every: Option<u32>) -> Result<[Vec<u8>; 3], String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut argv = argv.to_vec();
    let files = [dir.join("lan.pcap"), dir.join("wan.pcap"), dir.join("summary.json")];
    for (flag, p) in ["--lan-out", "--wan-out", "--summary"].iter().zip(&files) {
        argv.push(flag.to_string());
        argv.push(p.display().to_string());
    }
    if let Some(n) = restart_every {
        argv.push("--restart-every".into());
        argv.push(n.to_string());
    }
    let args = cli::parse_args(&argv).map_err(|e| e.to_string())?;
    replay::run(&args.options(), &args.files()).map_err(|e| e.to_string())?;
    Ok(files.map(|p| std::fs::read(p).unwrap()))
}

/// Compares the restarted replays of `argv` with the uninterrupted one; false when the capture does
/// not replay at all (nothing to compare).
fn compare(name: &str, argv: &[String], periods: &[u32], failures: &mut Vec<String>) -> bool {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-restart").join(name.replace('/', "_"));
    let Ok(straight) = replay(argv, &tmp.join("straight"), None) else { return false };
    for &n in periods {
        match replay(argv, &tmp.join(format!("every{n}")), Some(n)) {
            Ok(r) => {
                for (i, what) in ["LAN pcap", "WAN pcap", "summary"].iter().enumerate() {
                    if r[i] != straight[i] {
                        failures.push(format!("{name}, restart every {n} frames: the {what} differs"));
                    }
                }
            }
            Err(e) => failures.push(format!("{name}, restart every {n} frames: {e}")),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    true
}

#[test]
fn a_restart_anywhere_changes_no_output() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in committed_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let argv = replay_check::case_argv(&case);
        compared += usize::from(compare(&name, &argv, &[1, 2, 7], &mut failures));
    }
    assert!(compared >= 10, "only {compared} cases compared");
    let corpus = corpus_captures();
    if corpus.is_empty() {
        eprintln!("replay_restart: THE SHARED CORPUS IS ABSENT: only the committed cases were compared");
    }
    for p in corpus {
        for (name, argv) in replay_check::corpus_splits(&p) {
            compared += usize::from(compare(&name, &argv, &[1], &mut failures));
        }
    }
    eprintln!("replay_restart: {compared} replays compared with restarts");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A state saved under one configuration is refused under another that changes what its mappings
/// mean (the public address here), naming the setting; one that changes only what a reload may
/// change (an idle timeout) is taken.
#[test]
fn a_state_is_restored_only_under_its_configuration() {
    use ftpnat::config::Config;
    use ftpnat::engine::{Engine, RestoreError};
    let inside = vec!["10.0.0.0/24".parse().unwrap()];
    let config = Config::new(inside.clone(), "198.51.100.1".parse().unwrap());
    let saved = Engine::new(config.clone()).save_state();
    let other = Config::new(inside, "198.51.100.2".parse().unwrap());
    match Engine::restore(other, &saved) {
        Err(RestoreError::Mismatch(why)) => {
            assert!(why.contains("198.51.100.1") && why.contains("198.51.100.2"), "{why}")
        }
        r => panic!("restored under another public address: {:?}", r.err()),
    }
    let mut reloaded = config.clone();
    reloaded.timeouts.udp = core::time::Duration::from_secs(7);
    let (e, refused) = Engine::restore(reloaded, &saved).expect("a timeout is no mismatch");
    assert!(refused.is_empty());
    assert_eq!(e.config().timeouts.udp, core::time::Duration::from_secs(7));
    // Cut anywhere, the bytes are refused as corrupt, never a panic.
    for cut in 0..saved.len() {
        assert!(matches!(Engine::restore(config.clone(), &saved[..cut]), Err(RestoreError::Corrupt(_))));
    }
}
