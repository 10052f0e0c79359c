//! A log flood (issue 12): an inside client sends 100,000 malformed `PORT` lines, each refused by the
//! ALG with a WARN. Through the layers `ftpnat run` logs with (`ftpnat::io::log`: a rate limit per
//! reason, a writer thread with a bounded queue) they make a bounded number of log lines, the lines
//! suppressed are accounted for exactly in the "suppressed" lines, and the engine's counters count
//! every refusal. Time is virtual (the limiter's clock is the test's).

#[path = "engine_support/mod.rs"]
mod engine_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as Wall};

use engine_support::*;
use ftpnat::io::log::{LogPipe, RateLimit, BURST, INTERVAL};
use ftpnat::{Engine, Instant, RefusalReason, Side, Verdict};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn a_hundred_thousand_refused_lines_make_a_bounded_log_and_exact_counters() {
    const LINES: u32 = 100_000;
    const PER_PACKET: u32 = 100;
    let base = Wall::now();
    let wall = Arc::new(Mutex::new(base));
    let w = wall.clone();
    let limit = RateLimit::with_clock(Arc::new(move || *w.lock().unwrap()));
    let out = SharedBuf::default();
    let pipe = LogPipe::spawn(out.clone()).unwrap();
    let sub = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(limit.clone())
        .with(tracing_subscriber::fmt::layer().json().with_writer(pipe.clone()));
    let mut e = Engine::new(config());
    let mut seq = 1u32;
    let send = |e: &mut Engine, now: Instant, from: Side, mut p: Vec<u8>| {
        let v = e.handle_packet(now, from, &mut p);
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
    };
    let packets = LINES / PER_PACKET;
    let seconds = 12u32;
    tracing::subscriber::with_default(sub, || {
        let t0 = Instant::from_secs(1000);
        send(&mut e, t0, Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 21, seq, 0, SYN, b""));
        seq += 1;
        send(&mut e, t0, Side::Outside, tcp(REMOTE, 21, PUBLIC, 40000, 500, seq, SYNACK, b""));
        // The server's greeting: before it the ALG trusts no line as FTP (issue 11).
        let hello = b"220 ready\r\n";
        send(&mut e, t0, Side::Outside, tcp(REMOTE, 21, PUBLIC, 40000, 501, seq, PSHACK, hello));
        let server_next = 501 + hello.len() as u32;
        let flood = b"PORT 1\r\n".repeat(PER_PACKET as usize);
        for i in 0..packets {
            // The flood takes 12 s of virtual time: two windows and a bit of a third.
            let at = Duration::from_millis(u64::from(i) * u64::from(seconds) * 1000 / u64::from(packets));
            *wall.lock().unwrap() = base + at;
            send(
                &mut e,
                t0 + at,
                Side::Inside,
                tcp(LAN_HOST, 40000, REMOTE, 21, seq, server_next, PSHACK, &flood),
            );
            seq += flood.len() as u32;
            // The server acknowledges: the client stays within its window (issue 11 tracks it).
            send(&mut e, t0 + at, Side::Outside, tcp(REMOTE, 21, PUBLIC, 40000, server_next, seq, ACK, b""));
        }
        limit.log_suppressed(true);
    });
    assert!(pipe.flush(Duration::from_secs(30)));
    assert_eq!(pipe.lost(), 0);
    // Counters are exact.
    assert_eq!(e.metrics().refused_of(RefusalReason::Malformed), u64::from(LINES));
    // The log is bounded: BURST refusal lines per window, plus one "suppressed" line per window.
    let text = out.text();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let refusals =
        lines.iter().filter(|v| v["fields"]["reason"] == "malformed" && v["target"] == "ftpnat::alg").count();
    let notes: Vec<u64> = lines
        .iter()
        .filter(|v| v["target"] == "ftpnat::log")
        .map(|v| v["fields"]["suppressed"].as_u64().unwrap())
        .collect();
    let windows = (seconds as usize).div_ceil(INTERVAL.as_secs() as usize);
    assert!(refusals <= BURST as usize * windows, "{refusals} refusal lines");
    assert!(refusals >= BURST as usize, "the first ones are logged");
    assert!(lines.len() <= (BURST as usize + 1) * windows, "{} lines:\n{text}", lines.len());
    // Every refusal is either a log line or counted in a "suppressed" line.
    assert_eq!(refusals as u64 + notes.iter().sum::<u64>(), u64::from(LINES), "{notes:?}");
    assert_eq!(limit.suppressed(), notes.iter().sum::<u64>());
    println!(
        "LOGFLOOD lines={LINES} refused.malformed={} log_lines={} refusal_lines={refusals} suppressed_notes={notes:?} bytes={}",
        e.metrics().refused_of(RefusalReason::Malformed),
        lines.len(),
        text.len()
    );
}
