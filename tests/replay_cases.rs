//! Replays every committed case under `tests/pcap/<case>/` (input capture, `args`, expected summary,
//! README) and checks the summary against `expected-summary.json`, properties 1–6 with the independent
//! checker in `replay_check`, the per-frame drop accounting, and the link layer kept by
//! `--keep-link-layer`. When `tshark` is installed, its expert analysis of the outputs must show no
//! malformed packet and no checksum error.

mod replay_check;

use std::path::{Path, PathBuf};

use ftpnat::io::pcap::CaptureReader;
use ftpnat::replay::{cli, MemoryOutput, Replayer};
use replay_check::{check, flatten, read_capture, Setup};

fn cases() -> Vec<PathBuf> {
    replay_check::committed_cases()
}

struct Outputs {
    lan: PathBuf,
    wan: PathBuf,
    summary: PathBuf,
}

/// Runs `ftpnat replay` for a case as its `args` say, outputs in a temporary directory of the calling
/// test (`who`): the tests run in parallel and must not write each other's files.
fn replay(case: &Path, who: &str) -> (Vec<String>, Outputs, cli::ReplayArgs) {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let list: Vec<String> = std::fs::read_to_string(case.join("args"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-cases").join(who).join(&name);
    std::fs::create_dir_all(&tmp).unwrap();
    let o =
        Outputs { lan: tmp.join("lan.pcap"), wan: tmp.join("wan.pcap"), summary: tmp.join("summary.json") };
    let mut argv = list.clone();
    argv[0] = case.join(&list[0]).display().to_string();
    for (flag, p) in [("--lan-out", &o.lan), ("--wan-out", &o.wan), ("--summary", &o.summary)] {
        argv.push(flag.into());
        argv.push(p.display().to_string());
    }
    let args = cli::parse_args(&argv).unwrap_or_else(|e| panic!("{name}: args: {e}"));
    ftpnat::replay::run(&args.options(), &args.files()).unwrap_or_else(|e| panic!("{name}: {e}"));
    (list, o, args)
}

fn fcs_ok(frame: &[u8]) -> bool {
    frame.len() > 4 && {
        let (body, tail) = frame.split_at(frame.len() - 4);
        crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body).to_le_bytes() == tail
    }
}

#[test]
fn cases_match_expected_summaries_and_keep_properties() {
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        assert!(case.join("README.md").exists(), "{name}: README.md missing");
        let (list, out, args) = replay(&case, "summaries");
        let got = flatten(&serde_json::from_str(&std::fs::read_to_string(&out.summary).unwrap()).unwrap());
        let want = flatten(
            &serde_json::from_str(&std::fs::read_to_string(case.join("expected-summary.json")).unwrap())
                .unwrap(),
        );
        if got != want {
            let mut diff: Vec<String> = want
                .keys()
                .chain(got.keys())
                .filter(|k| want.get(*k) != got.get(*k))
                .map(|k| format!("{k}: expected {:?}, got {:?}", want.get(k), got.get(k)))
                .collect();
            diff.sort();
            diff.dedup();
            failures.push(format!(
                "{name}: summary differs from expected-summary.json:\n    {}",
                diff.join("\n    ")
            ));
        }
        let setup = Setup::from_args(&list[1..]);
        let input = read_capture(&args.input);
        let lan = read_capture(&out.lan);
        let wan = read_capture(&out.wan);
        let report = check(&setup, &input, &lan.pkts, &wan.pkts, &got);
        for f in &report.failures {
            failures.push(format!("{name}: {f}"));
        }
        // Every input IP packet produced output or is counted in exactly one drop.
        let mut r = Replayer::new(&args.options()).unwrap();
        let mut sink = MemoryOutput { discard: true, ..Default::default() };
        let mut reader = CaptureReader::open(&args.input).unwrap();
        let mut n = 0;
        while let Some(f) = reader.next_frame().unwrap() {
            n += 1;
            r.frame(f.ts_micros, f.linktype, &f.data, &mut sink).unwrap();
            let o = r.last_frame();
            if o.ip
                && !((o.outputs > 0 && o.drops == 0)
                    || (o.outputs == 0 && o.drops == 1)
                    || (o.held && o.drops == 0))
            {
                failures.push(format!("{name}: frame {n}: {o:?}"));
            }
        }
        // The link layer: raw IP by default; the input's framing (FCS recomputed) when kept.
        let in_lt = CaptureReader::open(&args.input).unwrap().next_frame().unwrap().unwrap().linktype;
        let in_fcs = {
            let mut rd = CaptureReader::open(&args.input).unwrap();
            let mut all = true;
            while let Some(f) = rd.next_frame().unwrap() {
                all &= fcs_ok(&f.data);
            }
            all
        };
        for p in [&out.lan, &out.wan] {
            let mut rd = CaptureReader::open(p).unwrap();
            while let Some(f) = rd.next_frame().unwrap() {
                if args.keep_link_layer {
                    if f.linktype != in_lt {
                        failures
                            .push(format!("{name}: output link type {} instead of {}", f.linktype, in_lt));
                        break;
                    }
                    if in_fcs && !fcs_ok(&f.data) {
                        failures.push(format!("{name}: output frame with a wrong FCS in {}", p.display()));
                        break;
                    }
                } else if f.linktype.0 != 101 {
                    failures.push(format!("{name}: output link type {} instead of raw IP (101)", f.linktype));
                    break;
                }
            }
        }
        println!(
            "{name}: {} ({} rewrites checked, {} data connections crossed)",
            if report.failures.is_empty() { "ok" } else { "FAIL" },
            report.rewrites_seen,
            report.data_conns_checked
        );
        for n in report.notes.iter().take(3) {
            println!("  note: {n}");
        }
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// tshark's expert info over every output: no malformed packet, no checksum error.
#[test]
fn tshark_finds_no_malformed_packets_or_bad_checksums() {
    let mut problems = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let (_, out, _) = replay(&case, "tshark");
        for p in [&out.lan, &out.wan] {
            match replay_check::tshark_problems(p) {
                None => {
                    println!("SKIP: tshark is not installed");
                    return;
                }
                Some(bad) => problems.extend(bad.into_iter().map(|b| format!("{name} {}: {b}", p.display()))),
            }
        }
    }
    assert!(problems.is_empty(), "tshark:\n{}", problems.join("\n"));
}
