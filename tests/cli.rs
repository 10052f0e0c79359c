//! The binary's command line as a user meets it, no root needed: every error comes in one style
//! (`ftpnat: error: ...`, whichever part of the program found it), flags named in errors, the version,
//! and the replay outcomes a script relies on (truncated input, a file cut in its header).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn ftpnat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftpnat")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("ftpnat-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

const RUN: [&str; 9] =
    ["run", "--lan-tun", "l0", "--wan-tun", "w0", "--inside", "10.0.0.0/24", "--public-ip", "198.51.100.1"];

/// Errors from clap's parser, the configuration checks, the config file, `replay` and the control-socket
/// client all start with the same prefix (there used to be three styles), and exit non-zero.
#[test]
fn every_error_has_one_prefix() {
    let d = dir("prefix");
    let cfg = d.0.join("bad.toml");
    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    let cut = d.0.join("cut.pcap");
    // A pcap file header (magic a1b2c3d4, little-endian) cut at 20 of its 24 bytes.
    std::fs::write(&cut, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0]).unwrap();
    let (lan, wan) = (d.0.join("l.pcap"), d.0.join("w.pcap"));
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--no-such-flag".into()], 2, "--no-such-flag"),
        (vec!["run".into(), "--udp-timeout".into(), "soon".into()], 2, "--udp-timeout"),
        (
            RUN.iter().map(|s| s.to_string()).chain(["--udp-timeout".into(), "0".into()]).collect(),
            2,
            "--udp-timeout",
        ),
        (vec!["run".into(), "--config".into(), cfg.display().to_string()], 2, "no_such_key"),
        (
            vec![
                "replay".into(),
                cut.display().to_string(),
                "--inside".into(),
                "10.0.0.0/24".into(),
                "--public-ip".into(),
                "203.0.113.1".into(),
                "--lan-out".into(),
                lan.display().to_string(),
                "--wan-out".into(),
                wan.display().to_string(),
            ],
            1,
            "ends inside its file header",
        ),
        (
            vec![
                "show".into(),
                "stats".into(),
                "--control-socket".into(),
                d.0.join("none.sock").display().to_string(),
            ],
            1,
            "none.sock",
        ),
    ];
    for (args, code, names) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = ftpnat(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.starts_with("ftpnat: error: "), "{args:?}: not in the one style: {err}");
        assert!(err.contains(names), "{args:?}: does not name {names}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
    }
}

/// `--udp-timeout -5`: the -5 is the flag's value (refused as negative, naming the flag), not an
/// unknown flag `-5`; and every timeout flag has the same minimum.
#[test]
fn negative_and_tiny_timeouts_are_refused_naming_the_flag() {
    for flag in [
        "--udp-timeout",
        "--icmp-timeout",
        "--tcp-established-timeout",
        "--tcp-transitory-timeout",
        "--ftp-pinhole-timeout",
    ] {
        for value in ["-5", "0", "5ms"] {
            let mut args = RUN.to_vec();
            args.extend([flag, value]);
            let o = ftpnat(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
            assert!(err.contains(flag), "{flag} {value}: {err}");
            assert!(!err.contains("unexpected argument"), "{flag} {value}: {err}");
        }
    }
}

#[test]
fn version_names_commit_and_profile() {
    let o = ftpnat(&["--version"]);
    assert!(o.status.success());
    let v = String::from_utf8_lossy(&o.stdout);
    assert!(v.starts_with(&format!("ftpnat {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(v.contains(" build)"), "{v}");
}

/// `ftpnat replay` of a capture cut inside its last record: replayed up to there, exit 1, the summary on
/// standard output marked `input.incomplete` = 1, both outputs renamed `.incomplete`; the same capture
/// whole gives exit 0, no such key, the outputs under their own names; with `--workers 2` as well.
#[test]
fn a_truncated_replay_is_marked_incomplete() {
    use ftpnat::io::pcap::PcapWriter;
    use ftpnat::wire::link::LinkType;
    let d = dir("replay");
    let udp = |sport: u8| {
        let mut p = vec![0x45, 0, 0, 32, 0, 7, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 198, 51, 100, 2];
        p.extend_from_slice(&[0x13, sport, 0, 53, 0, 12, 0, 0, b'q', b'u', b'e', b'y']);
        let mut ip = ftpnat::wire::Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        p
    };
    let whole = d.0.join("whole.pcap");
    let mut w = PcapWriter::create(&whole, LinkType::RAW).unwrap();
    for i in 0..3u8 {
        w.write(1_700_000_000_000_000 + u64::from(i), &udp(i)).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = d.0.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    // One engine, and the capture shared out to two (issue 18): the same outcome.
    for workers in ["1", "2"] {
        let replay = |input: &std::path::Path| {
            let (lan, wan) = (d.0.join("lan.pcap"), d.0.join("wan.pcap"));
            let args = [
                "replay",
                input.to_str().unwrap(),
                "--inside",
                "10.0.0.0/24",
                "--public-ip",
                "203.0.113.1",
                "--lan-out",
                lan.to_str().unwrap(),
                "--wan-out",
                wan.to_str().unwrap(),
                "--workers",
                workers,
            ];
            ftpnat(&args)
        };
        let o = replay(&cut);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "--workers {workers}: {err}");
        assert!(
            err.starts_with("ftpnat: error: ") && err.contains("cut.pcap") && err.contains("incomplete"),
            "{err}"
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&o.stdout).expect("the summary is still printed");
        assert_eq!(summary["input"]["incomplete"], 1);
        assert_eq!(summary["packets"]["in"]["lan"], 2, "the two whole records were replayed");
        assert!(d.0.join("lan.pcap.incomplete").exists() && d.0.join("wan.pcap.incomplete").exists());
        assert!(!d.0.join("wan.pcap").exists());
        let o = replay(&whole);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(summary["input"].get("incomplete").is_none(), "{summary}");
        assert_eq!(summary["packets"]["in"]["lan"], 3);
        assert!(d.0.join("wan.pcap").exists());
    }
}
