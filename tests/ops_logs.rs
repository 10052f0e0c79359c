//! Logs as an operator gets them with `--log-format json` at trace level: one JSON object per line,
//! structured fields on the notable events, and never the argument of `PASS` or `ACCT`, even when the
//! command is split across segments.

#[path = "engine_support/mod.rs"]
mod engine_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use engine_support::*;
use ftpnat::{Engine, Instant, Side, Verdict};
use serde_json::Value;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn send(e: &mut Engine, t: u64, from: Side, mut p: Vec<u8>) -> Vec<u8> {
    match e.handle_packet(Instant::from_millis(t), from, &mut p) {
        Verdict::Forward(_) => p,
        v => panic!("{v:?}"),
    }
}

#[test]
fn trace_logs_are_json_lines_without_secrets() {
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .finish();
    tracing::subscriber::with_default(sub, || {
        let mut e = Engine::new(config());
        let (c, s) = (
            |seq, ack, f, p: &[u8]| tcp(LAN_HOST, 40000, REMOTE, 21, seq, ack, f, p),
            |seq, ack, f, p: &[u8]| tcp(REMOTE, 21, PUBLIC, 40000, seq, ack, f, p),
        );
        let mut cs = 1000u32;
        let mut ss = 5000u32;
        send(&mut e, 0, Side::Inside, c(cs, 0, SYN, b""));
        cs += 1;
        send(&mut e, 1, Side::Outside, s(ss, cs, SYNACK, b""));
        ss += 1;
        send(&mut e, 2, Side::Inside, c(cs, ss, ACK, b""));
        let hello = b"220 ready\r\n";
        send(&mut e, 2, Side::Outside, s(ss, cs, PSHACK, hello));
        ss += hello.len() as u32;
        for (t, line) in [
            (3u64, &b"USER alice\r\n"[..]),
            (4, b"PASS hun"),
            (5, b"ter2-secret\r\n"),
            (6, b"ACCT acct-secret\r\n"),
            (7, b"pass lower-secret\r\n"),
            (8, b"PORT 10,0,0,2,156,65\r\n"),
        ] {
            send(&mut e, t, Side::Inside, c(cs, ss, PSHACK, line));
            cs += line.len() as u32;
            let reply = b"200 ok\r\n";
            if line.ends_with(b"\n") {
                // The server acknowledges what it got: the PORT line arrived 4 bytes longer.
                let grown = if line.starts_with(b"PORT") { 4 } else { 0 };
                send(&mut e, t, Side::Outside, s(ss, cs + grown, PSHACK, reply));
                ss += reply.len() as u32;
            }
        }
        // An unsolicited inbound packet: a drop line with its reason.
        let mut stray = udp(REMOTE, 9, PUBLIC, 7777, b"x");
        e.handle_packet(Instant::from_millis(9), Side::Outside, &mut stray);
        e.handle_timeout(Instant::from_secs(61));
        e.handle_timeout(Instant::from_secs(100_000));
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    for secret in ["hunter2", "hun\"", "ter2-secret", "acct-secret", "lower-secret"] {
        assert!(!text.contains(secret), "{secret:?} leaked into the logs:\n{text}");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
        })
        .collect();
    assert!(lines.len() > 5, "trace level logs the lines:\n{text}");
    let with = |msg: &str| lines.iter().filter(|v| v["fields"]["message"] == msg).collect::<Vec<_>>();
    let rewrite = with("rewrite");
    assert_eq!(rewrite.len(), 1, "{text}");
    let f = &rewrite[0]["fields"];
    assert_eq!(f["kind"], "port");
    assert_eq!(f["old"], "10,0,0,2,156,65");
    assert_eq!(f["new"], "198,51,100,1,156,65");
    assert_eq!(f["delta"], 4);
    assert_eq!(f["public_port"], 40001);
    assert_eq!(rewrite[0]["target"], "ftpnat::alg");
    let commands: Vec<String> =
        with("command").iter().map(|v| v["fields"]["line"].as_str().unwrap_or("").to_string()).collect();
    assert!(
        commands.iter().any(|l| l.starts_with("PASS ")),
        "the PASS line is logged, redacted: {commands:?}"
    );
    let drop = with("drop");
    assert!(drop.iter().any(|v| v["fields"]["reason"] == "no_mapping"), "{text}");
    assert!(!with("flow created").is_empty() && !with("flow destroyed").is_empty(), "{text}");
    assert!(!with("pinhole created").is_empty() && !with("pinhole expired unused").is_empty(), "{text}");
}
