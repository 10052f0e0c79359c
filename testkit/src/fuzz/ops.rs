//! Fuzz harness bodies for what reads operator and management input: the capture reader (pcap,
//! pcapng, gzip), the configuration file reader (TOML into flags), the control socket's request parser
//! and the metrics endpoint's HTTP request-head parser.
//!
//! Owns: the invariants checked on each. Must not: do I/O beyond memory, read a clock, or depend on
//! more than `ftpnat`, `serde`, `serde_json` and `ipnet` (the corpus replay in `tests/fuzz_corpus.rs`
//! builds this file as part of the main crate's tests, which have exactly those).

use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ftpnat::config::Forward;
use ftpnat::io::pcap::CaptureReader;
use ftpnat::ops::config_file;
use ftpnat::ops::metrics::{respond, route, Route};
use ftpnat::ops::view::parse_request;
use ftpnat::Config;
use serde::Deserialize;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------------
// pcap_read
// ---------------------------------------------------------------------------------------------------

/// The capture reader on arbitrary bytes (any of pcap, pcapng, gzip-compressed either): no panic, and it
/// ends: every frame's bytes come from the input (or what its gzip members expand to, at most ~1032
/// times their size), and after the first error or the end it reports nothing more.
pub fn pcap_read(data: &[u8]) {
    let path = Path::new("fuzz.pcap");
    let Ok(mut r) = CaptureReader::from_reader(path, Box::new(Cursor::new(data.to_vec()))) else { return };
    let bound = data.len().saturating_mul(1100) + 64;
    let (mut buf, mut frames) = (Vec::new(), 0usize);
    loop {
        match r.next_frame_into(&mut buf) {
            Ok(Some(info)) => {
                frames += 1;
                assert!(
                    info.len <= buf.len() && buf.len() <= bound,
                    "{} bytes of frames from {}",
                    buf.len(),
                    data.len()
                );
                // A record takes at least 12 bytes of the (expanded) input.
                assert!(frames.saturating_mul(12) <= bound, "{frames} frames from {} bytes", data.len());
            }
            Ok(None) => break,
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.pcap: "), "the error names the file: {e}");
                assert!(matches!(r.next_frame_into(&mut buf), Ok(None)), "nothing after an error");
                break;
            }
        }
    }
    assert!(matches!(r.next_frame_into(&mut buf), Ok(None)), "nothing after the end");
}

// ---------------------------------------------------------------------------------------------------
// config_toml
// ---------------------------------------------------------------------------------------------------

/// The kinds of keys `ftpnat run --config` reads, through the same `deserialize_with` helpers (the real
/// key set lives in the binary, main.rs; these are its value types: strings, addresses, prefixes,
/// forwards, port ranges, durations, sizes, numbers, switches, lists).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct RunKeys {
    lan_tun: Option<String>,
    #[serde(deserialize_with = "config_file::de_cidrs")]
    inside: Vec<ipnet::Ipv4Net>,
    public_ip: Option<Ipv4Addr>,
    #[serde(deserialize_with = "config_file::de_forwards")]
    forward: Vec<Forward>,
    #[serde(deserialize_with = "config_file::de_opt_port_range")]
    port_range: Option<RangeInclusive<u16>>,
    max_flows: Option<usize>,
    wan_mtu: Option<u16>,
    ftp_port: Vec<u16>,
    no_ftp_alg: bool,
    #[serde(deserialize_with = "config_file::de_opt_duration")]
    udp_timeout: Option<Duration>,
    #[serde(deserialize_with = "config_file::de_opt_size")]
    capture_max_bytes: Option<u64>,
    capture: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    log_format: Option<String>,
}

const KEYS: &[&str] =
    &["lan-tun", "inside", "public-ip", "forward", "port-range", "max-flows", "udp-timeout"];

/// The configuration file reader on arbitrary text: no panic; an error names the file (and, with a
/// line, a line of the text); a value read becomes a [`Config`] that validates or says why not.
pub fn config_toml(data: &[u8]) {
    // `config_file::read_text` refuses what is not UTF-8 before anything parses it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.split('\n').count();
    match config_file::parse::<RunKeys>(Path::new("fuzz.toml"), text) {
        Err(e) => {
            assert!(e.starts_with("fuzz.toml"), "the error names the file: {e}");
            if let Some(rest) = e.strip_prefix("fuzz.toml line ") {
                let n: usize = rest.split(':').next().and_then(|n| n.parse().ok()).expect("a line number");
                assert!((1..=lines).contains(&n), "line {n} of {lines}: {e}");
            }
        }
        Ok(l) => {
            for key in KEYS {
                if let Some(n) = l.line_of(key) {
                    assert!((1..=lines).contains(&n), "{key} at line {n} of {lines}");
                }
                let _ = l.locate(&format!("--{key}: bad"));
            }
            let v = &l.value;
            if let (Some(ip), false) = (v.public_ip, v.inside.is_empty()) {
                let mut c = Config::new(v.inside.clone(), ip);
                c.forwards = v.forward.clone();
                if let Some(r) = &v.port_range {
                    c.port_range = r.clone();
                }
                if let Some(n) = v.max_flows {
                    c.max_flows = n;
                }
                if let Some(m) = v.wan_mtu {
                    c.mtu[1] = m;
                }
                if let Some(d) = v.udp_timeout {
                    c.timeouts.udp = d;
                }
                if !v.ftp_port.is_empty() {
                    c.ftp.ports = v.ftp_port.clone();
                }
                if let Err(e) = c.validate() {
                    assert!(e.starts_with("--"), "a validation error names its flag: {e}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// control_request
// ---------------------------------------------------------------------------------------------------

/// The control socket's request parser on an arbitrary line: no panic; an error is a `bad request`
/// sent back; a request it takes obeys the protocol's rules and reads back the same once written.
pub fn control_request(data: &[u8]) {
    match parse_request(data) {
        Err(e) => assert!(e.starts_with("bad request"), "{e}"),
        Ok(r) => {
            assert!(r.is_listing() || (r.limit.is_none() && r.cursor.is_none()), "{r:?}");
            assert_ne!(r.limit, Some(0));
            let line = serde_json::to_vec(&r).expect("a request serializes");
            assert!(!line.contains(&b'\n'), "one line");
            assert_eq!(parse_request(&line).expect("a request it took parses again"), r);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// metrics_request
// ---------------------------------------------------------------------------------------------------

/// The largest head in this harness: small, so the "too large" answer is reachable.
const MAX_HEAD: usize = 512;

/// The metrics endpoint's request-head parser on arbitrary bytes: no panic; undecided exactly while
/// the head is incomplete and within the limit; what follows a complete head never changes the
/// answer; the response for it is well-formed HTTP/1.1 with a true Content-Length.
pub fn metrics_request(data: &[u8]) {
    let r = route(data, MAX_HEAD);
    let terminated = contains(data, b"\r\n\r\n") || contains(data, b"\n\n");
    match r {
        None => assert!(!terminated && data.len() <= MAX_HEAD, "undecided on a complete head"),
        Some(got) => {
            assert!(terminated || data.len() > MAX_HEAD);
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\nPOST /other HTTP/1.1\r\n\r\n");
            assert_eq!(route(&more, MAX_HEAD), Some(got), "bytes after the head changed the answer");
            if got == Route::Metrics {
                let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
                assert!(
                    contains(line, b"GET") && contains(line, b"/metrics"),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
            }
            let resp = respond(got, || "ftpnat_x 1\n".into());
            let text = String::from_utf8(resp).expect("a response is text");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
        }
    }
}
