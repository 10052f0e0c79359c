//! Fuzz harness bodies: the FTP line parser, one direction's framer + sequence map, and the whole engine;
//! in [`ops`], the readers of operator and management input (captures, the config file, control and
//! metrics requests).
//!
//! Owns: the byte-driven decoders that turn fuzz input into calls, and the invariants checked after each
//! call. The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line wrappers around [`ftp_parse`],
//! [`stream`] and [`engine`]; `tests/fuzz_corpus.rs` replays every committed corpus file through the
//! same functions (this crate is its dev-dependency), so CI checks the corpus without cargo-fuzz.
//! Packets are built with the kit's builder ([`crate::pkt`]) and checksums checked with its RFC 1071.
//! Must not: read a clock or do I/O. A violated invariant panics: that is how libFuzzer sees a finding.
//!
//! Decoders read bytes with [`Input`], which yields zeros once the input is exhausted, so every input is
//! a valid program and short inputs still reach deep states.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use ftpnat::alg::finding::{Line, LineAction as Action};
use ftpnat::alg::ftp::framer::{OneWay, Speaker};
use ftpnat::alg::ftp::parse::{self, Candidate, Command, Kind};
use ftpnat::config::Forward;
use ftpnat::metrics::Metrics;
use ftpnat::stream::{self, Incoming, SegmentOut};
use ftpnat::wire::SeqNum;
use ftpnat::{Config, DropReason, Engine, Instant, Side, Verdict};

pub mod ops;
pub use ops::{config_toml, control_request, metrics_request, pcap_read};

static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints every decoded operation to stderr (for reading a crash input; off in fuzzing).
pub fn set_trace(on: bool) {
    TRACE.store(on, std::sync::atomic::Ordering::Relaxed);
}

macro_rules! trace {
    ($($t:tt)*) => {
        if TRACE.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($t)*);
        }
    };
}

/// Reads fuzz input front to back; past the end every read is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

// ---------------------------------------------------------------------------------------------------
// ftp_parse
// ---------------------------------------------------------------------------------------------------

/// Prefixes the first input byte may choose, so mutations start inside each grammar.
const LINE_PREFIXES: &[&[u8]] = &[
    b"",
    b"PORT ",
    b"EPRT ",
    b"227 ",
    b"229 (",
    b"EPRT |1|",
    b"227 Entering Passive Mode (",
    b"229 Entering Extended Passive Mode (|||",
    b"PASS ",
    b"port 10,0,0,",
    b"ACCT ",
    b"AUTH ",
];

/// Every function of `alg::ftp::parse` on the input as one line, with consistency properties:
/// a parse names a span inside the line; every prefix of a parsed line is a framer candidate (else the
/// framer would have let it go unheld and it could never be rewritten); classification agrees with the
/// parse; replacing the span with `format_span` of the parsed values, or of other values, gives a line
/// that parses back to exactly those values with every other byte kept; redaction hides PASS/ACCT
/// arguments and never emits a line break.
pub fn ftp_parse(data: &[u8]) {
    let (sel, rest) = data.split_first().map_or((0, &[][..]), |(s, r)| (*s, r));
    let mut line = LINE_PREFIXES[sel as usize % LINE_PREFIXES.len()].to_vec();
    line.extend_from_slice(rest);
    check_line(&line);
    check_line(data);
}

type Parser = fn(&[u8]) -> Result<parse::Announce, parse::ParseError>;

fn parser(kind: Kind) -> Parser {
    match kind {
        Kind::Port => parse::parse_port,
        Kind::Eprt => parse::parse_eprt,
        Kind::Pasv227 => parse::parse_227,
        Kind::Epsv229 => parse::parse_229,
    }
}

fn splice(line: &[u8], span: &Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut v = line[..span.start].to_vec();
    v.extend_from_slice(with);
    v.extend_from_slice(&line[span.end..]);
    v
}

fn strip_eol(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
        None => line,
    }
}

fn check_line(line: &[u8]) {
    let show = || String::from_utf8_lossy(line).into_owned();
    for kind in [Kind::Port, Kind::Eprt, Kind::Pasv227, Kind::Epsv229] {
        let from_client = matches!(kind, Kind::Port | Kind::Eprt);
        let Ok(an) = parser(kind)(line) else { continue };
        assert_eq!(an.kind, kind, "{}", show());
        assert!(
            an.span.start <= an.span.end && an.span.end <= line.len(),
            "span {:?} of {}",
            an.span,
            show()
        );
        assert_eq!(an.addr.is_none(), kind == Kind::Epsv229, "{}", show());
        for i in 0..=line.len() {
            assert_eq!(
                parse::candidate(&line[..i], from_client),
                Candidate::Maybe,
                "prefix {i} of {}",
                show()
            );
        }
        match kind {
            Kind::Port => assert_eq!(parse::classify_command(line), Command::Port, "{}", show()),
            Kind::Eprt => assert_eq!(parse::classify_command(line), Command::Eprt, "{}", show()),
            Kind::Pasv227 => assert_eq!(parse::reply_code(line), Some((227, false)), "{}", show()),
            Kind::Epsv229 => assert_eq!(parse::reply_code(line), Some((229, false)), "{}", show()),
        }
        let addr = an.addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        // The values this line announces, re-formatted canonically.
        let h = line.iter().fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(b as u32));
        let targets = [
            (addr, an.port),
            (Ipv4Addr::UNSPECIFIED, 0),
            (Ipv4Addr::BROADCAST, u16::MAX),
            (Ipv4Addr::new(198, 51, 100, 1), 1024),
            (Ipv4Addr::from(h), (h >> 7) as u16),
        ];
        for (a, p) in targets {
            let with = parse::format_span(kind, a, p, an.delim);
            assert_eq!(with.len(), parse::formatted_len(kind, a, p));
            let again = splice(line, &an.span, &with);
            let an2 = parser(kind)(&again).unwrap_or_else(|e| {
                panic!("{} rewritten to {} does not parse: {e:?}", show(), String::from_utf8_lossy(&again))
            });
            let want_addr = if kind == Kind::Epsv229 { None } else { Some(a) };
            assert_eq!((an2.addr, an2.port, an2.delim), (want_addr, p, an.delim), "{}", show());
            assert_eq!(an2.span, an.span.start..an.span.start + with.len(), "{}", show());
        }
    }
    let cmd = parse::classify_command(line);
    parse::reply_code(line);
    parse::candidate(line, true);
    parse::candidate(line, false);
    let r = parse::redacted(line);
    assert!(!r.contains('\n') && !r.contains('\r'), "redacted output has a line break: {r:?}");
    if matches!(cmd, Command::Pass | Command::Acct) {
        let body = strip_eol(line);
        // classify_command's verb is the four bytes before the first SP; whatever follows is secret.
        let verb = String::from_utf8_lossy(&body[..4]);
        let want = if body.len() > 4 { format!("{verb} ****") } else { verb.into_owned() };
        assert_eq!(r, want, "redaction of {}", show());
    }
}

// ---------------------------------------------------------------------------------------------------
// stream
// ---------------------------------------------------------------------------------------------------

const STREAM_DICT: &[&[u8]] = &[
    b"PORT 10,0,0,2,4,1\r\n",
    b"EPRT |1|10.0.0.2|1025|\r\n",
    b"port 1,2,3,4,5,6\n",
    b"USER anonymous\r\n",
    b"RETR PORT 1,2,3,4,5,6\r\n",
    b"PO",
    b"RT ",
    b"\r\n",
    b"\n",
    b"227 Entering Passive Mode (10,0,0,5,4,1).\r\n",
    b"229 Entering Extended Passive Mode (|||1025|)\r\n",
    b"211-features\r\n",
    b" PORT 1,2,3,4,5,6\r\n",
    b"211 end\r\n",
    b"227 ",
    b"229 ",
    b"EPRT ",
    b"200 ok\r\n",
    b"\x16\x03\x03\x00\x05hello",
    b"\x17\x03\x03\x00\x03P\no",
];

/// The sender's side of one direction: what it has sent so far, offsets from ISN + 1.
struct Sender {
    isn: SeqNum,
    bytes: Vec<u8>,
}

impl Sender {
    fn seq(&self, off: usize) -> SeqNum {
        self.isn.add(1).add(off as u32)
    }
    fn append(&mut self, d: &mut Input<'_>, cap: usize) {
        let pick = d.u8();
        let room = cap.saturating_sub(self.bytes.len());
        match pick % 8 {
            0..=3 => {
                let w = STREAM_DICT[d.u8() as usize % STREAM_DICT.len()];
                self.bytes.extend_from_slice(&w[..w.len().min(room)]);
            }
            4 => {
                // Padding: a long run so later text lands at chosen offsets (NAT Slipstreaming shape).
                let n = (d.u16() as usize % 1200).min(room);
                let b = if d.bool() { b'A' } else { b' ' };
                self.bytes.extend(std::iter::repeat_n(b, n));
            }
            _ => {
                let n = d.u8() as usize;
                let raw = d.bytes(n.min(room));
                self.bytes.extend_from_slice(raw);
            }
        }
    }
}

/// What the receiver got, by receiver-space sequence number; checks every byte against earlier copies.
#[derive(Default)]
struct Received {
    bytes: HashMap<u32, u8>,
    /// Contiguous receive point (what a real receiver would acknowledge).
    next: Option<SeqNum>,
}

impl Received {
    /// Records a segment; panics if a byte differs from what was delivered at that number before (a
    /// retransmission must rebuild exactly the first output).
    fn record(&mut self, seq: SeqNum, payload: &[u8], what: &str, check: bool) {
        for (i, &b) in payload.iter().enumerate().filter(|_| check) {
            let k = seq.add(i as u32).get();
            match self.bytes.get(&k) {
                Some(&old) => assert_eq!(
                    old,
                    b,
                    "{what}: receiver byte {k} was {old:#04x}, now {b:#04x} (retransmission differs from first output)"
                ),
                None => {
                    self.bytes.insert(k, b);
                }
            }
        }
        if let Some(n) = self.next {
            let end = seq.add(payload.len() as u32);
            if seq.le(n) && n.lt(end) {
                let mut n = end;
                while self.bytes.contains_key(&n.get()) {
                    n = n.add(1);
                }
                self.next = Some(n);
            }
        }
    }
}

/// An edit the callback asked for and the framer applied: `(input seq of the span, span length, with)`.
type Edit = (SeqNum, u32, Vec<u8>);

/// One direction's framer ([`Stream`]) and its sequence map fed arbitrary segment sequences: new data,
/// retransmissions of any range (repacketised), SYN/FIN anywhere, receiver acknowledgements (which prune
/// history), hold timeouts and TLS opacity switches. Invariants: no panic; every byte the receiver gets
/// at a sequence number is the byte first sent there (full-history rebuild); the output stream equals
/// the input with exactly the edits the callback asked for; `unmap(map(s)) == s` outside edited spans and
/// `map` is monotone; a refused segment (gap) really starts beyond the bytes received.
pub fn stream(data: &[u8]) {
    let mut d = Input::new(data);
    let cfg = d.u8();
    let rewrite = cfg & 1 == 0;
    let from_client = cfg & 2 == 0;
    let chaos = cfg & 4 != 0;
    let max_line = 64 + d.u8() as usize * 2;
    let cap = 8192;
    let mut tx = Sender { isn: SeqNum::new(d.u32()), bytes: Vec::new() };
    let mut s = OneWay::new(
        if rewrite { stream::Edit::Rewrite } else { stream::Edit::Observe },
        if from_client { Speaker::Client } else { Speaker::Server },
        max_line,
    );
    let mut now = Instant::from_secs(1);
    let mut rx = Received::default();
    let mut edits: Vec<Edit> = Vec::new();
    let mut calls = 0u32;
    // Offset at which the framer started (SYN: 0; a pickup: the first segment's offset).
    let mut start: Option<usize> = None;
    let mut wild = false;
    let mut finished = false;
    let mut ops = 0;
    while !d.is_empty() && ops < 2000 {
        ops += 1;
        let op = d.u8();
        match op % 8 {
            0..=3 => {
                // A sender writes nothing after its FIN (RFC 9293 §3.6): the stream ends there.
                if (op & 0x10 != 0 || tx.bytes.is_empty()) && !finished {
                    tx.append(&mut d, cap);
                }
                let total = tx.bytes.len();
                let next_off = match start {
                    Some(_) => s.emitted().add(s.held_len() as u32).diff(tx.seq(0)).max(0) as usize,
                    None => 0,
                };
                let syn = (start.is_none() && op & 0x80 == 0) || op & 0x88 == 0x88;
                let off = if syn {
                    0
                } else if op & 0x20 == 0 {
                    next_off.min(total)
                } else {
                    d.u16() as usize % (total + 1)
                };
                let len = if op & 0x40 == 0 { total - off } else { d.u16() as usize % (total - off + 1) };
                let fin = off + len == total && d.u8() & 0x0f == 0;
                finished |= fin;
                let payload = &tx.bytes[off..off + len];
                let seq = if syn { tx.isn } else { tx.seq(off) };
                if start.is_none() {
                    start = Some(off);
                    rx.next = Some(tx.seq(off));
                }
                let mut cb = |line: &Line<'_>| -> Action {
                    calls += 1;
                    callback(line, from_client, chaos, calls, &mut edits)
                };
                trace!(
                    "segment seq={seq:?} syn={syn} fin={fin} off={off} payload={:?}",
                    String::from_utf8_lossy(payload)
                );
                if rewrite {
                    let before_next = s.emitted().add(s.held_len() as u32);
                    match s.segment(Incoming { seq, syn, fin, payload }, now, &mut cb) {
                        Ok(out) => {
                            let out = out.expect("an edited direction");
                            trace!(
                                "  -> seq={:?} fin={} {:?}",
                                out.seq,
                                out.fin,
                                String::from_utf8_lossy(&out.payload)
                            );
                            record_out(&mut rx, &out, wild)
                        }
                        Err(DropReason::AlgOutOfOrder) => {
                            let a = if syn { seq.add(1) } else { seq };
                            let a = s.map().horizon().map_or(a, |h| if a.lt(h) { h } else { a });
                            assert!(
                                a.gt(before_next),
                                "gap refusal for a segment at {a:?} <= next {before_next:?}"
                            );
                        }
                        Err(e) => panic!("unexpected refusal {e:?}"),
                    }
                } else {
                    // A refused (out-of-order) segment is the engine dropping it; nothing to check.
                    let _ = s.segment(Incoming { seq, syn, fin, payload }, now, &mut cb);
                }
            }
            4 => {
                // The receiver acknowledges what it has (or a little less: an old duplicate ACK).
                if let Some(n) = rx.next {
                    let back = (d.u8() % 4) as u32;
                    let ack_in = s.map().unmap(n.sub(back));
                    trace!("ack {:?} -> prune {ack_in:?}", n.sub(back));
                    s.ack(ack_in);
                }
            }
            5 => {
                // A wild acknowledgement: beyond what was delivered. The history promise no longer holds
                // (the receiver lied), but nothing may panic.
                let a = SeqNum::new(d.u32());
                let ack_in = s.map().unmap(a);
                trace!("wild ack {a:?}");
                // As the engine does: history is forgotten, and bytes the framer never saw jumped.
                s.ack(ack_in);
                wild = true;
            }
            6 => {
                now = now + core::time::Duration::from_millis(d.u16() as u64 * 10);
                if s.hold_deadline(core::time::Duration::from_secs(2)).is_some_and(|t| t <= now) {
                    if let Some(stream::Released { seq: at, bytes, .. }) = s.release_held() {
                        trace!("release at {at:?} {:?}", String::from_utf8_lossy(&bytes));
                        record_out(&mut rx, &SegmentOut { seq: at, payload: bytes, fin: false }, wild);
                    }
                }
            }
            _ => {
                trace!("go_{}", if op & 0x10 != 0 { "opaque" } else { "clear" });
                if op & 0x10 != 0 {
                    s.framer.go_opaque();
                } else {
                    s.framer.go_clear();
                }
            }
        }
        check_map(&s, &tx, start, &edits, wild);
    }
    if wild || !rewrite {
        return;
    }
    let Some(start) = start else { return };
    // The whole output so far is the input with the applied edits, nothing else.
    // A consumed FIN takes a sequence number but is no byte of the stream.
    let end = s.emitted().diff(tx.seq(0)).min(tx.bytes.len() as i32);
    if end < start as i32 {
        return;
    }
    let mut want = Vec::new();
    let mut at = start;
    for (e_seq, e_len, with) in &edits {
        let e_off = e_seq.diff(tx.seq(0)) as usize;
        assert!(e_off >= at, "edits overlap or go backwards");
        want.extend_from_slice(&tx.bytes[at..e_off]);
        want.extend_from_slice(with);
        at = e_off + *e_len as usize;
    }
    assert!(at <= end as usize, "an edit reaches past the decided bytes");
    want.extend_from_slice(&tx.bytes[at..end as usize]);
    let base = tx.seq(start);
    for (i, &b) in want.iter().enumerate() {
        let got = rx.bytes.get(&base.add(i as u32).get()).copied();
        assert_eq!(got, Some(b), "receiver byte {i} of the output stream (of {})", want.len());
    }
}

fn record_out(rx: &mut Received, out: &SegmentOut, wild: bool) {
    if wild {
        return;
    }
    rx.record(out.seq, &out.payload, "stream", true);
}

/// The session stand-in: rewrites PORT/EPRT (client) or 227/229 (server) lines it is offered held, each
/// time to a different value (so a second call for the same line would show up as different bytes);
/// in chaos mode it also asks for arbitrary spans.
fn callback(line: &Line<'_>, from_client: bool, chaos: bool, calls: u32, edits: &mut Vec<Edit>) -> Action {
    if !line.held {
        return Action::Keep;
    }
    let kinds: [Kind; 2] =
        if from_client { [Kind::Port, Kind::Eprt] } else { [Kind::Pasv227, Kind::Epsv229] };
    let addr = Ipv4Addr::from(calls.wrapping_mul(0x9e37_79b9));
    let port = (calls.wrapping_mul(7919) & 0xffff) as u16;
    trace!("  line held={} start={:?} {:?}", line.held, line.start, String::from_utf8_lossy(line.bytes));
    let mut act = None;
    for k in kinds {
        if let Ok(an) = parser(k)(line.bytes) {
            act = Some((an.span, parse::format_span(k, addr, port, an.delim)));
            break;
        }
    }
    if act.is_none() && chaos {
        // The span starts inside the line: an insertion at its end would sit before the next line's
        // first byte, which the stream has not seen yet (no ALG edits outside the line it judges).
        let n = line.bytes.len();
        let a = (calls as usize * 7) % n.max(1);
        let b = (a + calls as usize % 5).min(n + 2);
        act = Some((a..b, vec![b'X'; calls as usize % 9]));
    }
    match act {
        Some((span, with)) => {
            if span.start <= span.end && span.end <= line.bytes.len() && !line.truncated {
                edits.push((line.start.add(span.start as u32), span.len() as u32, with.clone()));
            }
            Action::Replace(span, with)
        }
        None => Action::Keep,
    }
}

/// `map` is monotone and `unmap` inverts it outside edited spans, over the range the map still covers.
fn check_map(s: &OneWay, tx: &Sender, start: Option<usize>, edits: &[Edit], wild: bool) {
    let Some(start) = start else { return };
    if wild {
        return;
    }
    let lo = match s.map().horizon() {
        Some(h) if h.gt(tx.seq(start)) => h,
        _ => tx.seq(start),
    };
    let hi = s.emitted();
    let n = hi.diff(lo);
    if n <= 0 {
        return;
    }
    // Sampled: every point for short streams, a stride for long ones.
    let step = (n as usize / 256).max(1);
    let mut prev: Option<SeqNum> = None;
    for i in (0..=n as usize).step_by(step) {
        let p = lo.add(i as u32);
        let o = s.map().map(p);
        if let Some(q) = prev {
            assert!(q.le(o), "map not monotone at {p:?}");
        }
        prev = Some(o);
        // A deletion (empty replacement) leaves its start and end at one receiver position, which
        // unmaps to the end (an ACK there covers the deleted bytes): its start is not invertible.
        let inside =
            edits.iter().any(|(e, l, with)| (e.lt(p) || (*e == p && with.is_empty())) && p.lt(e.add(*l)));
        if !inside {
            assert_eq!(s.map().unmap(o), p, "unmap(map({p:?}))");
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// engine
// ---------------------------------------------------------------------------------------------------

pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const INSIDE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn inside_host(b: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 2 + b % 6)
}
fn outside_host(b: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 2 + b % 3)
}

use crate::csum::rfc1071;
use crate::pkt::{Ip, Tcp};

/// An IPv4 datagram (TTL 64) with a correct header checksum; `payload` as it is.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ident: u16, df: bool, payload: &[u8]) -> Vec<u8> {
    Ip::new(src, dst).ident(ident).df(df).datagram(proto, payload)
}

/// A TCP segment in an IPv4 datagram (identification `sp ^ dp`, no DF), checksums right. `opts` is
/// padded to a multiple of 4.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    urg: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let t = Tcp { urg, opts, ..Tcp::new(sp, dp, seq, ack, flags, payload) };
    Ip::new(src, dst).ident(sp ^ dp).df(false).tcp(&t)
}

pub fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8], zero_csum: bool) -> Vec<u8> {
    Ip::new(src, dst).ident(sp).df(false).udp(sp, dp, payload, zero_csum)
}

pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: u32, body: &[u8]) -> Vec<u8> {
    Ip::new(src, dst).ident(0x1c).df(false).icmp(ty, code, rest, body)
}

/// TCP seq/ack/flags and payload text, for traces.
fn describe(pkt: &[u8]) -> String {
    match check_packet(pkt, false) {
        Ok(Checked { tcp: Some((seq, ack, flags, payload)), .. }) => {
            format!("seq={seq} ack={ack} flags={flags:#04x} {:?}", String::from_utf8_lossy(&payload))
        }
        _ => String::new(),
    }
}

/// What an emitted packet says, read by etherparse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl Tuple {
    fn reversed(self) -> Tuple {
        Tuple { proto: self.proto, src: self.dst, sport: self.dport, dst: self.src, dport: self.sport }
    }
}

pub struct Checked {
    pub tuple: Tuple,
    pub tcp: Option<(u32, u32, u8, Vec<u8>)>,
    pub fragment: bool,
}

/// Parses a packet with etherparse (an implementation independent of ftpnat's wire code) and checks the
/// IPv4 header checksum and total length, and, unless `transport` is false or it is a fragment, the
/// TCP/UDP/ICMP checksum.
pub fn check_packet(pkt: &[u8], transport: bool) -> Result<Checked, String> {
    use etherparse::{Ipv4HeaderSlice, SlicedPacket, TransportSlice};
    let ip = Ipv4HeaderSlice::from_slice(pkt).map_err(|e| format!("IPv4 header: {e:?}"))?;
    let hdr = ip.to_header();
    if hdr.calc_header_checksum() != hdr.header_checksum {
        return Err("IPv4 header checksum".into());
    }
    if hdr.total_len as usize != pkt.len() {
        return Err(format!("total length {} but {} bytes", hdr.total_len, pkt.len()));
    }
    let (src, dst) = (ip.source_addr(), ip.destination_addr());
    let fragment = hdr.is_fragmenting_payload();
    let mut c =
        Checked { tuple: Tuple { proto: hdr.protocol.0, src, sport: 0, dst, dport: 0 }, tcp: None, fragment };
    if fragment {
        return Ok(c);
    }
    let sliced = SlicedPacket::from_ip(pkt).map_err(|e| format!("etherparse: {e:?}"))?;
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let payload = t.payload();
            if transport {
                let want = t
                    .to_header()
                    .calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload)
                    .map_err(|e| format!("{e:?}"))?;
                if want != t.checksum() {
                    return Err(format!("TCP checksum {:#06x}, want {want:#06x}", t.checksum()));
                }
            }
            c.tuple.sport = t.source_port();
            c.tuple.dport = t.destination_port();
            let flags = pkt[ip.slice().len() + 13];
            c.tcp = Some((t.sequence_number(), t.acknowledgment_number(), flags, payload.to_vec()));
        }
        Some(TransportSlice::Udp(u)) => {
            if transport && u.checksum() != 0 {
                let want = u
                    .to_header()
                    .calc_checksum_ipv4_raw(src.octets(), dst.octets(), u.payload())
                    .map_err(|e| format!("{e:?}"))?;
                if want != u.checksum() {
                    return Err("UDP checksum".into());
                }
            }
            c.tuple.sport = u.source_port();
            c.tuple.dport = u.destination_port();
        }
        Some(TransportSlice::Icmpv4(i)) => {
            if transport && rfc1071(i.slice()) != 0 {
                return Err("ICMP checksum".into());
            }
            let h = i.bytes5to8();
            c.tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            c.tuple.dport = c.tuple.sport;
        }
        _ if hdr.protocol.0 == 6 || hdr.protocol.0 == 17 => {
            return Err("TCP/UDP datagram that etherparse cannot read".into());
        }
        _ => {}
    }
    Ok(c)
}

/// A simulated TCP connection: the client and the server each keep their own byte stream, so every
/// retransmission carries the bytes first sent (as real TCP does).
struct Sim {
    client_side: Side,
    server_side: Side,
    /// As the client sends it.
    c_tuple: Tuple,
    /// As the server receives it (learned from the engine's output).
    s_tuple: Option<Tuple>,
    tx: [Sender; 2],
    syn_sent: [bool; 2],
    sent: [usize; 2],
    /// What each receiver got, by its own sequence space: [0] the server (from the client), [1] the client.
    rx: [Received; 2],
}

impl Sim {
    fn side(&self, dir: usize) -> Side {
        if dir == 0 {
            self.client_side
        } else {
            self.server_side
        }
    }
}

struct World {
    engine: Engine,
    now: Instant,
    sims: Vec<Sim>,
    next_port: u16,
    /// Recent emitted packets, for replies and ICMP errors about them.
    recent: Vec<(Side, Vec<u8>)>,
    /// False once the input carried bytes not from the simulated senders: the history check is off.
    consistent: bool,
    flows_expired: u64,
    max_flows: usize,
    max_per_host: usize,
    max_pinholes_host: usize,
    max_pinholes_conn: usize,
    /// The configuration the engine was made with (a restart restores under it).
    config: Config,
    restarts: Restarts,
    /// FNV-1a digest of every verdict and every emitted packet (side, bytes), in order.
    trail: u64,
}

const CLIENT_DICT: &[&str] = &[
    "USER anonymous\r\n",
    "PASS hunter2\r\n",
    "PORT {me},4,1\r\n",
    "EPRT |1|{dot}|1025|\r\n",
    "PASV\r\n",
    "EPSV\r\n",
    "RETR PORT 1,2,3,4,5,6\r\n",
    "PORT 198,51,100,3,31,144\r\n",
    "PORT 0,0,0,0,19,137\r\n",
    "PORT {me},0,21\r\n",
    "AUTH TLS\r\n",
    "CCC\r\n",
    "PORT {me},",
    "5,6\r\n",
    "QUIT\r\n",
    "EPRT |2|::1|5282|\r\n",
];

const SERVER_DICT: &[&str] = &[
    "220 ready\r\n",
    "227 Entering Passive Mode ({me},4,1).\r\n",
    "229 Entering Extended Passive Mode (|||1025|)\r\n",
    "200 PORT command successful\r\n",
    "150 here it comes\r\n",
    "226 done\r\n",
    "234 go ahead\r\n",
    "500 no\r\n",
    "211-PORT 1,2,3,4,5,6\r\n",
    "211 end\r\n",
    "227 Entering Passive Mode (198,51,100,3,4,1)\r\n",
    "331 password please\r\n",
    "230 ok\r\n",
];

fn dict_line(dict: &[&str], i: u8, me: Ipv4Addr) -> Vec<u8> {
    let o = me.octets();
    dict[i as usize % dict.len()]
        .replace("{me}", &format!("{},{},{},{}", o[0], o[1], o[2], o[3]))
        .replace("{dot}", &me.to_string())
        .into_bytes()
}

/// The whole engine fed packets on both sides, with time steps. Most packets come from simulated TCP
/// connections (so FTP control streams are in order and reach the ALG), the rest are UDP, ICMP (echo,
/// and errors quoting packets the engine emitted), fragments, mutated and raw datagrams, and SYNs at
/// open pinholes. Invariants after every step: every emitted packet parses (etherparse) with valid
/// checksums; no inside address leaves on the outside and only inside addresses are reached inside;
/// `flow_count() <= max_flows`; per-host flow and pinhole counts within bounds; pinholes per control
/// connection within bounds; no port mapping outlives its holders; `poll_timeout()` is later than the
/// time just handled (no busy loop); and, while all input came from the simulated senders, every byte a
/// receiver gets at a sequence number equals what it got there before.
pub fn engine(data: &[u8]) {
    engine_run(data);
}

/// [`engine`], returning the counters from before the final expiry (to show what a corpus file reaches).
pub fn engine_run(data: &[u8]) -> Option<Metrics> {
    world_run(data, Restarts::Never).map(|(m, _)| m)
}

/// Issue 15, a restart changes nothing: the [`engine`] program run once straight and once with the
/// engine saved and restored ([`Engine::save_state`], [`Engine::restore`]) before every step, on top
/// of [`engine`]'s own invariants. Every packet emitted (side and bytes, in order), every verdict and
/// the counters are the same both ways.
pub fn engine_restart(data: &[u8]) {
    let straight = world_run(data, Restarts::Never);
    let restarted = world_run(data, Restarts::EveryStep);
    match (straight, restarted) {
        (Some((m1, t1)), Some((m2, t2))) => {
            assert_eq!(t1, t2, "what the engine emitted differs once it is restarted before every step");
            assert_eq!(format!("{m1:?}"), format!("{m2:?}"), "the counters differ with restarts");
        }
        (None, None) => {}
        (a, b) => panic!("one run had no world: {:?} / {:?}", a.is_some(), b.is_some()),
    }
}

/// Whether [`World`] saves and restores its engine before every step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restarts {
    Never,
    EveryStep,
}

/// The counters from before the final expiry, and a digest of every verdict and emitted packet.
fn world_run(data: &[u8], restarts: Restarts) -> Option<(Metrics, u64)> {
    let mut d = Input::new(data);
    let mut w = World::new(&mut d)?;
    w.restarts = restarts;
    let mut ops = 0;
    while !d.is_empty() && ops < 1000 {
        ops += 1;
        w.step(&mut d);
    }
    let m = w.engine.metrics().clone();
    let trail = w.trail;
    // Everything expires in the end, and takes its port mappings and pinholes along.
    w.advance(w.now + core::time::Duration::from_secs(100_000_000));
    assert_eq!(w.engine.flow_count(), 0, "flows left after every timeout");
    assert!(w.engine.pinholes().is_empty(), "pinholes left after every timeout");
    assert_eq!(w.engine.nat().mapping_count(), 0, "port mappings leaked");
    Some((m, trail))
}

impl World {
    fn new(d: &mut Input<'_>) -> Option<World> {
        let c = d.u8();
        let mut config = Config::new(vec!["10.0.0.0/24".parse().ok()?], PUBLIC);
        config.max_flows = 1 + d.u8() as usize % 48;
        config.max_flows_per_host = 1 + d.u8() as usize % 24;
        config.ftp.max_pinholes_per_host = 1 + d.u8() as usize % 8;
        config.ftp.max_pinholes_per_conn = 1 + d.u8() as usize % 4;
        if c & 1 != 0 {
            let lo = 1024 + d.u8() as u16;
            config.port_range = lo..=lo + (d.u8() % 16) as u16;
        }
        if c & 2 != 0 {
            config.forwards.push(Forward {
                public_addr: None,
                proto: ftpnat::flow::Proto::Tcp,
                public_port: 21,
                inside_addr: INSIDE_SERVER,
                inside_port: 21,
                inside6: None,
            });
        }
        if c & 4 != 0 {
            config.forwards.push(Forward {
                public_addr: None,
                proto: ftpnat::flow::Proto::Udp,
                public_port: 53,
                inside_addr: INSIDE_SERVER,
                inside_port: 53,
                inside6: None,
            });
        }
        if c & 8 != 0 {
            config.mtu = [576 + d.u16() % 1000, 576 + d.u16() % 1000];
        }
        if c & 16 != 0 {
            config.ftp.refuse_low_ports = false;
        }
        if c & 32 != 0 {
            config.ftp.max_line = 64 + d.u8() as usize;
        }
        if c & 64 != 0 {
            config.forwards.push(Forward {
                public_addr: None,
                proto: ftpnat::flow::Proto::Tcp,
                public_port: 2121,
                inside_addr: Ipv4Addr::new(10, 0, 0, 6),
                inside_port: 2121,
                inside6: None,
            });
            config.ftp.ports.push(2121);
        }
        if c & 128 != 0 {
            config.ftp.enabled = false;
        }
        config.validate().ok()?;
        Some(World {
            max_flows: config.max_flows,
            max_per_host: config.max_flows_per_host,
            max_pinholes_host: config.ftp.max_pinholes_per_host,
            max_pinholes_conn: config.ftp.max_pinholes_per_conn,
            engine: Engine::new(config.clone()),
            config,
            restarts: Restarts::Never,
            trail: 0xcbf2_9ce4_8422_2325,
            now: Instant::from_secs(1000),
            sims: Vec::new(),
            next_port: 30000,
            recent: Vec::new(),
            consistent: true,
            flows_expired: 0,
        })
    }

    fn step(&mut self, d: &mut Input<'_>) {
        if self.restarts == Restarts::EveryStep {
            let state = self.engine.save_state();
            let (engine, refused) = Engine::restore(self.config.clone(), &state)
                .unwrap_or_else(|e| panic!("the engine's own state is refused: {e}"));
            assert!(refused.is_empty(), "forwards refused on restore: {refused:?}");
            self.engine = engine;
        }
        let op = d.u8();
        match op % 16 {
            0 | 1 => {
                let dt = match d.u8() % 8 {
                    0 => 0,
                    1 => 1_000,
                    2 => 100_000,
                    3 => 1_000_000,
                    4 => 2_500_000,
                    5 => 61_000_000,
                    6 => 301_000_000,
                    _ => d.u32() as u64 * 1000,
                };
                let t = self.now + core::time::Duration::from_micros(dt);
                self.advance(t);
            }
            2 => self.new_conn(d),
            3..=8 => self.send(d),
            9 => self.pinhole_syn(d),
            10 => self.udp(d),
            11 => self.icmp(d),
            12 => self.fragments(d),
            13 => self.mutate(d),
            14 => {
                // A raw datagram (e.g. a captured packet from a real session in a seed file).
                let side = if d.bool() { Side::Outside } else { Side::Inside };
                let n = d.u16() as usize % 1600;
                let pkt = d.bytes(n).to_vec();
                self.consistent = false;
                let ok = check_packet(&pkt, true).is_ok();
                self.inject(side, pkt, ok, None);
            }
            _ => self.reply(d),
        }
        self.check_bounds();
    }

    /// Advances time and runs the engine's timers the way the runtime does.
    fn advance(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        let mut rounds = 0;
        while let Some(due) = self.engine.poll_timeout() {
            if due > now {
                break;
            }
            rounds += 1;
            assert!(rounds < 100, "handle_timeout({now:?}) leaves poll_timeout at {due:?}: busy loop");
            self.engine.handle_timeout(now);
            self.drain(true, None);
        }
        if let Some(due) = self.engine.poll_timeout() {
            assert!(due > now, "poll_timeout {due:?} not after the time just handled {now:?}");
        }
        for p in self.engine.pinholes().iter() {
            assert!(p.expires > now, "pinhole {} outlived its expiry", p.public_port);
        }
        self.check_bounds();
    }

    fn check_bounds(&mut self) {
        let e = &self.engine;
        assert!(e.flow_count() <= self.max_flows, "{} flows > max {}", e.flow_count(), self.max_flows);
        for i in 0..8u8 {
            let h = Ipv4Addr::new(10, 0, 0, i);
            assert!(e.table().host_count(h) <= self.max_per_host, "host {h} over its flow limit");
        }
        let mut per_host: HashMap<Ipv4Addr, usize> = HashMap::new();
        let mut per_conn: HashMap<u32, usize> = HashMap::new();
        for p in e.pinholes().iter() {
            *per_host.entry(p.inside.addr).or_default() += 1;
            *per_conn.entry(p.control.slot()).or_default() += 1;
        }
        assert!(per_host.values().all(|&n| n <= self.max_pinholes_host), "pinholes per host {per_host:?}");
        assert!(per_conn.values().all(|&n| n <= self.max_pinholes_conn), "pinholes per control {per_conn:?}");
        let holders = e.flow_count() + e.pinholes().len();
        assert!(
            e.nat().mapping_count() <= holders,
            "{} mappings for {holders} holders",
            e.nat().mapping_count()
        );
        let expired = e.metrics().flows_expired;
        if expired != self.flows_expired {
            // A flow went: a later one on the same addresses starts with fresh sequence maps.
            self.flows_expired = expired;
            for s in &mut self.sims {
                s.rx[0].bytes.clear();
                s.rx[1].bytes.clear();
            }
        }
    }

    /// Hands a packet to the engine and checks everything that comes out. `valid`: the input itself had
    /// right checksums, so the output must too. `from`: (sim, dir) that sent it, to learn addresses.
    fn inject(&mut self, side: Side, mut pkt: Vec<u8>, valid: bool, from: Option<(usize, usize)>) -> Verdict {
        trace!("t={:?} in {side}: {} {}", self.now, ftpnat::engine::summary(&pkt), describe(&pkt));
        let v = self.engine.handle_packet(self.now, side, &mut pkt);
        trace!("  verdict {v:?}");
        self.digest(format!("{v:?}").as_bytes());
        if let Verdict::Forward(to) = v {
            self.emitted(to, pkt, valid, from);
        }
        self.drain(valid, from);
        v
    }

    fn drain(&mut self, valid: bool, from: Option<(usize, usize)>) {
        while let Some(t) = self.engine.poll_transmit() {
            self.emitted(t.side, t.packet, valid, from);
        }
    }

    fn digest(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.trail = (self.trail ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn emitted(&mut self, side: Side, pkt: Vec<u8>, valid: bool, from: Option<(usize, usize)>) {
        trace!("  out {side}: {} {}", ftpnat::engine::summary(&pkt), describe(&pkt));
        self.digest(&[side.index() as u8]);
        self.digest(&pkt);
        let c =
            check_packet(&pkt, valid).unwrap_or_else(|e| panic!("emitted packet on {side}: {e}: {pkt:02x?}"));
        let inside = |a: Ipv4Addr| a.octets()[..3] == [10, 0, 0];
        match side {
            Side::Outside => assert!(!inside(c.tuple.src), "inside source {} leaked outside", c.tuple.src),
            Side::Inside => assert!(inside(c.tuple.dst), "{} sent inside", c.tuple.dst),
        }
        if let (Some((k, 0)), Some(_)) = (from, &c.tcp) {
            let s = &mut self.sims[k];
            if side == s.server_side {
                s.s_tuple = Some(c.tuple);
            }
        }
        if let Some((seq, _ack, flags, payload)) = &c.tcp {
            for s in &mut self.sims {
                let dir = if s.s_tuple == Some(c.tuple) && side == s.server_side {
                    0
                } else if c.tuple == s.c_tuple.reversed() && side == s.client_side {
                    1
                } else {
                    continue;
                };
                let first = if flags & 0x02 != 0 { seq.wrapping_add(1) } else { *seq };
                if flags & 0x02 != 0 && s.rx[dir].next.is_none() {
                    s.rx[dir].next = Some(SeqNum::new(first));
                }
                // Data on an RST is not delivered (RFC 9293 §3.5.3): the connection is gone.
                let payload: &[u8] = if flags & 0x04 != 0 { &[] } else { payload };
                s.rx[dir].record(SeqNum::new(first), payload, "engine", self.consistent);
                break;
            }
        }
        if self.recent.len() >= 16 {
            self.recent.remove(0);
        }
        self.recent.push((side, pkt));
    }

    fn new_conn(&mut self, d: &mut Input<'_>) {
        if self.sims.len() >= 12 {
            return;
        }
        let kind = d.u8();
        let port = |d: &mut Input<'_>| match d.u8() % 6 {
            0..=2 => 21,
            3 => 2121,
            4 => 80,
            _ => d.u16(),
        };
        self.next_port = self.next_port.wrapping_add(1).max(1024);
        let sp = self.next_port;
        let (client_side, server_side, src, dst, dp) = match kind % 4 {
            0 | 1 => (Side::Inside, Side::Outside, inside_host(d.u8()), outside_host(d.u8()), port(d)),
            2 => (Side::Outside, Side::Inside, outside_host(d.u8()), PUBLIC, port(d)),
            _ => (Side::Inside, Side::Inside, inside_host(d.u8()), PUBLIC, port(d)),
        };
        let c_tuple = Tuple { proto: 6, src, sport: sp, dst, dport: dp };
        self.add_sim(client_side, server_side, c_tuple, d.u32(), d.u32());
        let k = self.sims.len() - 1;
        self.send_on(k, 0, 0x02, 0, 0, d);
    }

    fn add_sim(&mut self, client_side: Side, server_side: Side, c_tuple: Tuple, isn_c: u32, isn_s: u32) {
        self.sims.push(Sim {
            client_side,
            server_side,
            c_tuple,
            s_tuple: None,
            tx: [
                Sender { isn: SeqNum::new(isn_c), bytes: Vec::new() },
                Sender { isn: SeqNum::new(isn_s), bytes: Vec::new() },
            ],
            syn_sent: [false; 2],
            sent: [0; 2],
            rx: [Received::default(), Received::default()],
        });
    }

    /// A SYN at an open pinhole: from its peer (mostly) or another address, SYN or not.
    fn pinhole_syn(&mut self, d: &mut Input<'_>) {
        let mut ph: Vec<(u16, Ipv4Addr, Ipv4Addr)> =
            self.engine.pinholes().iter().map(|p| (p.public_port, p.peer, p.inside.addr)).collect();
        // In port order, not the hash table's (which a restored engine's differs in).
        ph.sort_unstable();
        let pick = d.u8();
        let (port, peer) = match ph.get(pick as usize % ph.len().max(1)) {
            Some(&(p, peer, _)) => (p, peer),
            None => (d.u16(), outside_host(d.u8())),
        };
        let src = if d.u8() % 4 == 0 { outside_host(d.u8()) } else { peer };
        if self.sims.len() >= 12 {
            self.sims.remove(0);
        }
        self.next_port = self.next_port.wrapping_add(1).max(1024);
        let sp = self.next_port;
        let (client_side, server_side) = if src.octets()[..3] == [10, 0, 0] {
            (Side::Inside, Side::Inside)
        } else {
            (Side::Outside, Side::Inside)
        };
        let c_tuple = Tuple { proto: 6, src, sport: sp, dst: PUBLIC, dport: port };
        self.add_sim(client_side, server_side, c_tuple, d.u32(), d.u32());
        let k = self.sims.len() - 1;
        let flags = if d.u8() % 8 == 0 { 0x10 } else { 0x02 };
        self.send_on(k, 0, flags, 0, 0, d);
    }

    fn send(&mut self, d: &mut Input<'_>) {
        if self.sims.is_empty() {
            return self.new_conn(d);
        }
        let k = d.u8() as usize % self.sims.len();
        let dir = (d.u8() & 1) as usize;
        let mode = d.u8();
        let flags = match mode % 8 {
            0..=4 => 0x18,                      // ACK|PSH
            5 => 0x11,                          // FIN|ACK
            6 => 0x14,                          // RST|ACK
            _ => d.u8() | (0x10 * (mode >> 7)), // anything
        };
        // New bytes for this sender.
        if mode & 0x08 != 0 {
            let me = {
                let s = &self.sims[k];
                match (dir, s.s_tuple) {
                    (0, _) => s.c_tuple.src,
                    (_, Some(t)) => t.dst,
                    _ => s.c_tuple.dst,
                }
            };
            let cap = 16384;
            let sender = &mut self.sims[k].tx[dir];
            if sender.bytes.len() < cap {
                match d.u8() % 4 {
                    0..=2 => {
                        let dict = if dir == 0 { CLIENT_DICT } else { SERVER_DICT };
                        let line = dict_line(dict, d.u8(), me);
                        sender.bytes.extend_from_slice(&line);
                    }
                    _ => sender.append(d, cap),
                }
            }
        }
        let total = self.sims[k].tx[dir].bytes.len();
        let sent = self.sims[k].sent[dir];
        let (off, len) = if mode & 0x10 != 0 && total > 0 {
            // A retransmission of any range, repacketised.
            let off = d.u16() as usize % total;
            (off, 1 + d.u16() as usize % (total - off))
        } else {
            (sent, (total - sent).min(if mode & 0x20 != 0 { 1 + d.u8() as usize } else { 1400 }))
        };
        self.send_on(k, dir, flags, off, len, d);
    }

    /// Sends `len` bytes from offset `off` of `dir`'s stream (a SYN first if that sender sent none).
    fn send_on(&mut self, k: usize, dir: usize, flags: u8, off: usize, len: usize, d: &mut Input<'_>) {
        let s = &self.sims[k];
        let side = s.side(dir);
        let t = if dir == 0 {
            s.c_tuple
        } else {
            match s.s_tuple {
                Some(t) => t.reversed(),
                None => return,
            }
        };
        let opt_sel = d.u8();
        let mut flags = flags;
        let mut opts = Vec::new();
        let syn = !s.syn_sent[dir];
        if syn {
            // The first packet of each side is its SYN (SYN-ACK for the server), with an MSS.
            flags = if dir == 0 { 0x02 } else { 0x12 };
            let mss = if opt_sel & 1 != 0 { d.u16() } else { 1460 };
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
        }
        let other = 1 - dir;
        let ack = s.rx[other].next.map_or(0, |n| n.get().wrapping_sub((opt_sel >> 4) as u32 % 3));
        if !syn && opt_sel & 2 != 0 {
            // One SACK block somewhere after the acknowledgement (RFC 2018).
            let a = ack.wrapping_add(d.u8() as u32);
            let b = a.wrapping_add(1 + d.u8() as u32);
            opts.extend_from_slice(&[1, 1, 5, 10]);
            opts.extend_from_slice(&a.to_be_bytes());
            opts.extend_from_slice(&b.to_be_bytes());
        }
        let (seq, payload) = if syn {
            (s.tx[dir].isn.get(), Vec::new())
        } else {
            let end = (off + len).min(s.tx[dir].bytes.len());
            (s.tx[dir].seq(off).get(), s.tx[dir].bytes[off.min(end)..end].to_vec())
        };
        if !syn && flags & 0x02 != 0 {
            // A SYN flag on a later segment moves where its data sits in sequence space: the sender is
            // no longer consistent with itself, so the receivers' history check is off from here.
            self.consistent = false;
        }
        let pkt = tcp(t.src, t.sport, t.dst, t.dport, seq, ack, flags, 0, &opts, &payload);
        let s = &mut self.sims[k];
        if syn {
            s.syn_sent[dir] = true;
        } else {
            s.sent[dir] = s.sent[dir].max(off + payload.len());
        }
        self.inject(side, pkt, true, Some((k, dir)));
    }

    fn udp(&mut self, d: &mut Input<'_>) {
        let out = d.bool();
        let (side, src, dst) = if out {
            (Side::Outside, outside_host(d.u8()), PUBLIC)
        } else {
            (Side::Inside, inside_host(d.u8()), if d.u8() % 8 == 0 { PUBLIC } else { outside_host(d.u8()) })
        };
        let sp = if d.bool() { 53 } else { 1024 + d.u16() % 64 };
        let dp = if d.bool() { 53 } else { 1024 + d.u16() % 64 };
        let n = d.u8() as usize;
        let payload = d.bytes(n).to_vec();
        let zero = d.u8() % 8 == 0;
        let pkt = udp(src, sp, dst, dp, &payload, zero);
        self.inject(side, pkt, true, None);
    }

    /// A reply to a recent emitted UDP/ICMP packet, from where it went (the reverse translation path).
    fn reply(&mut self, d: &mut Input<'_>) {
        if self.recent.is_empty() {
            return;
        }
        let (side, pkt) = self.recent[d.u8() as usize % self.recent.len()].clone();
        let Ok(c) = check_packet(&pkt, false) else { return };
        let t = c.tuple;
        let reply = match t.proto {
            17 => udp(t.dst, t.dport, t.src, t.sport, b"reply", false),
            1 => icmp(t.dst, t.src, 0, 0, (t.sport as u32) << 16 | 1, b"ping"),
            _ => return,
        };
        self.inject(side, reply, true, None);
    }

    /// ICMP: an echo request, or an error about a recent emitted packet sent back by where it went.
    fn icmp(&mut self, d: &mut Input<'_>) {
        let sel = d.u8();
        if sel & 1 == 0 || self.recent.is_empty() {
            let (side, src, dst) = if sel & 2 == 0 {
                (Side::Inside, inside_host(d.u8()), outside_host(d.u8()))
            } else {
                (Side::Outside, outside_host(d.u8()), PUBLIC)
            };
            let pkt = icmp(src, dst, 8, 0, (d.u16() as u32) << 16 | 1, b"ping");
            self.inject(side, pkt, true, None);
            return;
        }
        let (side, orig) = self.recent[d.u8() as usize % self.recent.len()].clone();
        let Ok(c) = check_packet(&orig, false) else { return };
        let (ty, code, rest) = match sel >> 1 & 3 {
            0 => (3, 3, 0),
            1 => (3, 4, 576),
            2 => (11, 0, 0),
            _ => (3, 1, 0),
        };
        let quote = match sel >> 3 & 3 {
            0 => orig.len().min(28),
            1 => orig.len(),
            2 => orig.len().min(20 + d.u8() as usize % 16),
            _ => orig.len().min(548),
        };
        // From the destination itself or from a router on the way.
        let from = if sel & 0x20 != 0 {
            c.tuple.dst
        } else if side == Side::Outside {
            Ipv4Addr::new(203, 0, 113, 9)
        } else {
            Ipv4Addr::new(10, 0, 0, 254)
        };
        let pkt = icmp(from, c.tuple.src, ty, code, rest, &orig[..quote]);
        self.inject(side, pkt, true, None);
    }

    /// A UDP or TCP datagram cut into fragments (RFC 791), sent in a chosen order, some missing.
    fn fragments(&mut self, d: &mut Input<'_>) {
        let out = d.bool();
        let n = 100 + d.u16() as usize % 3000;
        let body = vec![d.u8(); n];
        let (side, src, dst) = if out {
            (Side::Outside, outside_host(d.u8()), PUBLIC)
        } else {
            (Side::Inside, inside_host(d.u8()), outside_host(d.u8()))
        };
        let mut whole = if d.bool() {
            udp(src, 1024 + d.u8() as u16, dst, 53, &body, false)
        } else {
            tcp(src, 1024 + d.u8() as u16, dst, 21, d.u32(), 0, 0x18, 0, &[], &body)
        };
        let ident = d.u16();
        whole[4..6].copy_from_slice(&ident.to_be_bytes());
        whole[10] = 0;
        whole[11] = 0;
        let c = rfc1071(&whole[..20]);
        whole[10..12].copy_from_slice(&c.to_be_bytes());
        let mtu = 68 + d.u16() as usize % 1400;
        let Ok(mut frags) = ftpnat::wire::ipv4::fragment(&whole, mtu) else { return };
        let order = d.u8();
        if order & 1 != 0 {
            frags.reverse();
        }
        if order & 2 != 0 && frags.len() > 1 {
            frags.remove(order as usize % frags.len());
        }
        for f in frags {
            self.inject(side, f, true, None);
        }
    }

    /// A structured packet with bytes changed afterwards (IP header checksum fixed so it gets past the
    /// first check): its outputs are not held to transport checksums.
    fn mutate(&mut self, d: &mut Input<'_>) {
        let (side, mut pkt) = match self.recent.get(d.u8() as usize % self.recent.len().max(1)) {
            // Send an emitted packet back in from the side it left by: a loop, or a reflection.
            Some((s, p)) if d.bool() => (*s, p.clone()),
            _ => (Side::Inside, udp(inside_host(d.u8()), 4000, outside_host(0), 53, b"query", false)),
        };
        let n = 1 + d.u8() % 8;
        for _ in 0..n {
            let at = d.u16() as usize;
            let v = d.u8();
            if !pkt.is_empty() {
                let i = at % pkt.len();
                pkt[i] = v;
            }
        }
        if d.bool() && pkt.len() >= 20 {
            let hl = ((pkt[0] & 0x0f) as usize * 4).clamp(20, pkt.len());
            pkt[10] = 0;
            pkt[11] = 0;
            let c = rfc1071(&pkt[..hl]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        }
        self.consistent = false;
        self.inject(side, pkt, false, None);
    }
}
