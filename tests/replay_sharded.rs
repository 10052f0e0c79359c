//! `ftpnat replay --workers N` (issue 18: "the replay may shard by the same rule to use several
//! threads, with outputs identical to one thread's"): over every committed case under `tests/pcap/`
//! and every capture of the shared corpus (when present), N engines on N threads write byte for byte
//! what the same N engines write one after the other on one thread (LAN pcap, WAN pcap, summary),
//! and every counter of the summary is one engine's (each frame went to one engine, a flow's frames
//! all to the same one: frames split from their flow would show as drops one engine has not).

use std::path::{Path, PathBuf};

use ftpnat::replay::{self, cli, Schedule};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("pcap");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/pcap exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("args").exists())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no case under {}", root.display());
    v
}

/// The corpus captures (every pcap/pcapng file under the corpus folder), when it is there.
fn corpus() -> Vec<PathBuf> {
    // `../shared/corpus` from the repository (as tests/replay_corpus.rs), or from a worktree's parent.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = match std::env::var_os("FTPNAT_CORPUS") {
        Some(p) => vec![PathBuf::from(p)],
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

/// Replays `argv` (the case's args, outputs appended) with `workers` engines on `schedule` into
/// `dir`; the three outputs' bytes (or the error) and the summary.
fn replay(argv: &[String], dir: &Path, workers: u16, schedule: Schedule) -> Result<[Vec<u8>; 3], String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut argv = argv.to_vec();
    let files = [dir.join("lan.pcap"), dir.join("wan.pcap"), dir.join("summary.json")];
    for (flag, p) in ["--lan-out", "--wan-out", "--summary"].iter().zip(&files) {
        argv.push(flag.to_string());
        argv.push(p.display().to_string());
    }
    let args = cli::parse_args(&argv).map_err(|e| e.to_string())?;
    let r = if workers == 1 {
        replay::run(&args.options(), &args.files())
    } else {
        replay::run_sharded(&args.options(), &args.files(), workers, schedule)
    };
    r.map_err(|e| e.to_string())?;
    Ok(files.map(|p| std::fs::read(p).unwrap()))
}

fn compare(name: &str, argv: &[String], failures: &mut Vec<String>) -> bool {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-sharded").join(name.replace('/', "_"));
    let one = match replay(argv, &tmp.join("one"), 1, Schedule::Sequential) {
        Ok(o) => o,
        // A capture one engine does not replay either (a configuration the corpus split gets wrong)
        // has nothing to compare.
        Err(_) => return false,
    };
    let one_in: serde_json::Value = serde_json::from_slice(&one[2]).unwrap();
    for n in [2u16, 3] {
        let seq = replay(argv, &tmp.join(format!("seq{n}")), n, Schedule::Sequential);
        let thr = replay(argv, &tmp.join(format!("thr{n}")), n, Schedule::Threads);
        match (seq, thr) {
            (Ok(s), Ok(t)) => {
                for (i, what) in ["LAN pcap", "WAN pcap", "summary"].iter().enumerate() {
                    if s[i] != t[i] {
                        failures.push(format!("{name}, {n} workers: the threads' {what} differs"));
                    }
                }
                // Every frame went to an engine once, and to the right one: a flow's packets split
                // between engines would show as drops (no mapping, out of window) one engine has not.
                let v: serde_json::Value = serde_json::from_slice(&t[2]).unwrap();
                if v != one_in {
                    failures.push(format!("{name}, {n} workers: summary {v} vs one engine's {one_in}"));
                }
            }
            (s, t) => failures.push(format!("{name}, {n} workers: {:?} / {:?}", s.err(), t.err())),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    true
}

#[test]
fn threads_write_what_the_same_shards_write_one_after_the_other() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mut argv: Vec<String> = std::fs::read_to_string(case.join("args"))
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        argv[0] = case.join(&argv[0]).display().to_string();
        // NAT64 replays on one engine.
        if argv.iter().any(|a| a == "--nat64-prefix") {
            continue;
        }
        compared += usize::from(compare(&name, &argv, &mut failures));
    }
    assert!(compared >= 5, "only {compared} cases compared");
    let corpus = corpus();
    if corpus.is_empty() {
        eprintln!("replay_sharded: the shared corpus is absent: only the committed cases were compared");
    }
    for p in corpus {
        // Both sides of every private network as inside: the corpus' clients and servers both end up
        // behind the gateway in one split or another.
        for (split, inside) in [("10", "10.0.0.0/8"), ("192", "192.168.0.0/16"), ("172", "172.16.0.0/12")] {
            let argv = vec![
                p.display().to_string(),
                "--inside".into(),
                inside.into(),
                "--public-ip".into(),
                "198.51.100.77".into(),
            ];
            let name = format!("{}-{split}", p.display());
            compared += usize::from(compare(&name, &argv, &mut failures));
        }
    }
    eprintln!("replay_sharded: {compared} replays compared at 2 and 3 workers");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A bad count is refused naming the flag; NAT64 replays on one engine.
#[test]
fn bad_worker_counts_and_nat64_are_refused() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pcap/port-client-inside/input.pcap");
    let base = |extra: &[&str]| {
        let mut v = vec![case.display().to_string(), "--inside".into(), "10.0.0.0/8".into()];
        v.extend(
            ["--public-ip", "198.51.100.1", "--lan-out", "/dev/null", "--wan-out", "/dev/null"]
                .map(String::from),
        );
        v.extend(extra.iter().map(|s| s.to_string()));
        cli::parse_args(&v).unwrap()
    };
    for n in [0u16, 65] {
        let a = base(&[]);
        let e = replay::run_sharded(&a.options(), &a.files(), n, Schedule::Threads).unwrap_err();
        assert!(e.to_string().contains("--workers"), "{e}");
    }
    let a = base(&["--inside", "2001:db8::/64", "--nat64-prefix", "64:ff9b::/96"]);
    let e = replay::run_sharded(&a.options(), &a.files(), 2, Schedule::Threads).unwrap_err();
    assert!(e.to_string().contains("--workers"), "{e}");
}
