//! Directed tests of the stream-correct FTP ALG (issue 4), one or more per bullet of the issue: split
//! lines and Nagle senders, repacketised retransmissions, out-of-order and duplicated segments, RST,
//! SACK/D-SACK, the urgent pointer, ICMP errors quoting rewritten segments, MSS/MTU splitting, the
//! zero-delta counter, and history pruning.
//!
//! Owns: these scenarios. Most are driven packet by packet (`engine_support::Rig`, every emitted packet
//! checked by etherparse) because they need exact control of sequence numbers, options and timing; the
//! Nagle scenario runs real smoltcp stacks (`common`). Must not: reach into the engine beyond its
//! public accessors (metrics, table, the sequence map of a connection).

use ftpnat_testkit::harness as common;
mod engine_support;

use std::net::Ipv4Addr;

use engine_support::{check, rfc1071, Rig, LAN_HOST, PUBLIC, REMOTE};
use etherparse::{Icmpv4Type, IpNumber, Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use ftpnat::{Config, DropReason, Engine, RefusalReason, Side, Verdict};

const C0: u32 = 0xffff_ff00; // client ISN: the stream crosses 2^32 early on
const S0: u32 = 7_000;
const CP: u16 = 40_000;
const SOLID: u32 = 1; // client stream offset of the first data byte (after the SYN)
const GREETING: &[u8] = b"220 ready\r\n";

fn config() -> Config {
    engine_support::config()
}

// ---------------------------------------------------------------------------------------------------------
// Packets

/// A TCP segment: `flags` letters S A F R P; `urg` sets URG and the pointer.
#[allow(clippy::too_many_arguments)]
fn seg(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: &str,
    urg: Option<u16>,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sp, dp, seq, 64_000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(ack),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => panic!("flag {f}"),
        };
    }
    if let Some(u) = urg {
        b = b.urg(u);
    }
    if !opts.is_empty() {
        b = b.options(opts).expect("options fit");
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// The TCP header of an emitted packet (the engine_support checker has verified it).
fn tcp_of(pkt: &[u8]) -> TcpHeaderSlice<'_> {
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap();
    TcpHeaderSlice::from_slice(&pkt[ip.slice().len()..]).unwrap()
}

fn sack_blocks(pkt: &[u8]) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for o in tcp_of(pkt).options_iterator() {
        if let Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) = o {
            v.push(first);
            v.extend(rest.iter().flatten());
        }
    }
    v
}

/// `PORT h1,h2,h3,h4,p1,p2` or `227 …(h1,h2,h3,h4,p1,p2)…` → the port, if the address is `addr`.
fn port_in(line: &[u8], addr: Ipv4Addr) -> Option<u16> {
    let s = std::str::from_utf8(line).ok()?;
    let (a, p) = match s.strip_prefix("PORT ") {
        Some(arg) => common::ftp::parse_host_port(arg.trim_end())?,
        None => common::ftp::parse_227(s.trim_end())?,
    };
    (a == addr).then_some(p)
}

fn port_line(addr: Ipv4Addr, port: u16) -> Vec<u8> {
    format!("PORT {}\r\n", common::ftp::format_host_port(addr, port)).into_bytes()
}

// ---------------------------------------------------------------------------------------------------------
// A control connection through a Rig

/// An FTP control connection of an inside client (10.0.0.2:40000 → 198.51.100.2:21), handshake and the
/// server's greeting done (the ALG honours no announcement before it). Sequence numbers are given as
/// offsets into each sender's stream (`SOLID` = first data byte; the server's ISN is placed so that its
/// first byte after the greeting is at `SOLID` too).
struct Ctl {
    r: Rig,
    /// Server stream offset the client acknowledges with (what it has received).
    c_ack: u32,
}

impl Ctl {
    fn new(cfg: Config, server_mss: Option<u16>) -> Ctl {
        let mut r = Rig::new(cfg);
        let mss = [TcpOptionElement::MaximumSegmentSize(1460)];
        r.pass(Side::Inside, seg(LAN_HOST, CP, REMOTE, 21, C0, 0, "S", None, &mss, b""));
        let smss: Vec<TcpOptionElement> =
            server_mss.map(TcpOptionElement::MaximumSegmentSize).into_iter().collect();
        let hello = GREETING.len() as u32;
        let isn = S0 - hello;
        r.pass(Side::Outside, seg(REMOTE, 21, PUBLIC, CP, isn, C0.wrapping_add(1), "SA", None, &smss, b""));
        r.pass(Side::Inside, seg(LAN_HOST, CP, REMOTE, 21, C0.wrapping_add(1), isn + 1, "A", None, &[], b""));
        r.pass(
            Side::Outside,
            seg(REMOTE, 21, PUBLIC, CP, isn + 1, C0.wrapping_add(1), "PA", None, &[], GREETING),
        );
        Ctl { r, c_ack: SOLID }
    }

    /// Client → server, `off` into the client stream; returns the verdict and every packet out.
    fn up_raw(
        &mut self,
        off: u32,
        flags: &str,
        urg: Option<u16>,
        opts: &[TcpOptionElement],
        p: &[u8],
    ) -> (Verdict, Vec<Vec<u8>>) {
        let pkt = seg(LAN_HOST, CP, REMOTE, 21, C0.wrapping_add(off), S0 + self.c_ack, flags, urg, opts, p);
        let (v, out) = self.r.send(Side::Inside, pkt);
        assert!(out.iter().all(|(s, _)| *s == Side::Outside), "client data leaves outside");
        (v, out.into_iter().map(|x| x.1).collect())
    }

    /// Client → server data; returns (server-space offset of the first byte, bytes) per packet out.
    fn up(&mut self, off: u32, p: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let (v, out) = self.up_raw(off, "PA", None, &[], p);
        assert!(matches!(v, Verdict::Forward(Side::Outside)), "{v:?}");
        out.iter()
            .map(|q| {
                let s = check(q);
                (s.seq.wrapping_sub(C0), s.payload)
            })
            .collect()
    }

    /// Server → client: the server acknowledges `ack_off` (server-space offset into the client stream).
    fn down(
        &mut self,
        s_off: u32,
        ack_off: u32,
        flags: &str,
        opts: &[TcpOptionElement],
        p: &[u8],
    ) -> (Verdict, Vec<Vec<u8>>) {
        let pkt = seg(REMOTE, 21, PUBLIC, CP, S0 + s_off, C0.wrapping_add(ack_off), flags, None, opts, p);
        let (v, out) = self.r.send(Side::Outside, pkt);
        (v, out.into_iter().map(|x| x.1).collect())
    }

    /// What the client acknowledges: an ACK from the server carrying `ack_off` comes back as this.
    fn acked_as(&mut self, ack_off: u32) -> u32 {
        let (v, out) = self.down(self.c_ack, ack_off, "A", &[], b"");
        assert!(matches!(v, Verdict::Forward(Side::Inside)));
        check(&out[0]).ack.wrapping_sub(C0)
    }

    fn map(&self) -> ftpnat::stream::SeqMap {
        let (_, conn) =
            self.r.engine.table().iter().find(|(_, c)| c.alg.is_some()).expect("control connection");
        conn.alg.as_ref().unwrap().stream.seq_map(ftpnat::flow::Dir::Original).clone()
    }

    fn m(&self) -> &ftpnat::Metrics {
        self.r.engine.metrics()
    }
}

/// PORT naming 10.0.0.2:41000 ("160,40"): no public port can keep its length, so the line grows.
const PORT_LINE: &[u8] = b"PORT 10,0,0,2,160,40\r\n";

/// Sends `PORT_LINE` at `SOLID` in one segment; returns the rewritten line and its length change.
fn rewrite_port(c: &mut Ctl) -> (Vec<u8>, i64) {
    let out = c.up(SOLID, PORT_LINE);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SOLID);
    let line = out[0].1.clone();
    let port = port_in(&line, PUBLIC)
        .unwrap_or_else(|| panic!("not rewritten: {:?}", String::from_utf8_lossy(&line)));
    assert_eq!(line, port_line(PUBLIC, port));
    (line.clone(), line.len() as i64 - PORT_LINE.len() as i64)
}

// ---------------------------------------------------------------------------------------------------------
// Split lines and Nagle

/// A client with Nagle on whose PORT/EPRT write is cut at every offset: it sends the first piece and
/// waits for its ACK, which never comes (the gateway holds the piece). Resolution: **retransmit merge**.
/// smoltcp's retransmission timeout (1 s) fires before the gateway's hold timeout (2 s, the default
/// here), and what it retransmits from the unacknowledged point is the whole line, which completes the
/// held candidate: the line is rewritten, no hold-timeout fallback is used.
#[test]
fn nagle_sender_with_a_two_segment_port_completes_by_retransmit_merge() {
    use common::ftp::{split_lines_starting, ClientConfig, Mode, ServerConfig, Transfer, XferDir};
    use common::net::{Event, Net, INSIDE_HOST, OUTSIDE_HOST};
    for (mode, prefix, len) in [(Mode::Port, &b"PORT "[..], 23usize), (Mode::Eprt, &b"EPRT "[..], 24)] {
        for cut in 1..len {
            let mut net = Net::new(Box::new(Engine::new(config())));
            let server = net.ftp_server(OUTSIDE_HOST, ServerConfig::default());
            let cc = ClientConfig::new(OUTSIDE_HOST, 21)
                .transfer(Transfer::new(mode, XferDir::Retr, "50.bin", 50))
                .split(split_lines_starting(prefix, vec![cut]))
                .nagle(true);
            let client = net.ftp_client(INSIDE_HOST, cc);
            net.run(|n| n.app(client).finished() && n.app(server).finished(), 60_000_000);
            let (c, s) = (net.app(client), net.app(server));
            assert!(c.all_ok(), "cut {cut}: {:?} {:?}", c.error, c.transfers);
            let line = s.received_lines.iter().find(|l| l.starts_with(prefix)).unwrap();
            assert!(
                String::from_utf8_lossy(line).contains(if mode == Mode::Port {
                    "198,51,100,1,"
                } else {
                    "|198.51.100.1|"
                }),
                "cut {cut}: {:?}",
                String::from_utf8_lossy(line)
            );
            let m = net.middlebox::<Engine>().metrics();
            assert_eq!(m.refused_of(RefusalReason::HoldTimeout), 0, "cut {cut}: no fallback");
            assert_eq!(m.pinholes_created, 1);
            // The rewritten line reached the server in one segment: the merged retransmission.
            let whole = net.log().any(|e| {
                e.event == Event::Emitted
                    && e.side == Side::Outside
                    && common::pkt::tcp_info(&e.head)
                        .is_some_and(|t| t.payload.starts_with(prefix) && t.payload.ends_with(b"\r\n"))
            });
            assert!(whole, "cut {cut}: rewritten line left in one segment");
        }
    }
}

/// A sender that never merges (it retransmits only the first piece): the hold timeout releases the
/// held bytes as sent, at the right sequence numbers, counted; nothing deadlocks and no pinhole opens.
#[test]
fn sender_that_never_merges_gets_its_line_released_by_the_hold_timeout() {
    let mut c = Ctl::new(config(), Some(1460));
    let (first, rest) = PORT_LINE.split_at(15);
    assert_eq!(c.up(SOLID, first), vec![(SOLID, Vec::new())], "held: a pure ACK leaves");
    c.r.advance(1);
    assert_eq!(c.up(SOLID, first), vec![(SOLID, Vec::new())], "a retransmission of held bytes: still held");
    assert_eq!(c.r.engine.poll_timeout(), Some(c.r.now + core::time::Duration::from_secs(1)));
    c.r.advance(1);
    let released: Vec<_> = std::iter::from_fn(|| c.r.engine.poll_transmit()).collect();
    assert_eq!(released.len(), 1);
    let s = check(&released[0].packet);
    assert_eq!((released[0].side, s.seq.wrapping_sub(C0), &s.payload[..]), (Side::Outside, SOLID, first));
    assert_eq!(c.m().refused_of(RefusalReason::HoldTimeout), 1);
    // The rest follows as sent: the line is no longer a candidate.
    assert_eq!(c.up(SOLID + 15, rest), vec![(SOLID + 15, rest.to_vec())]);
    assert_eq!(c.m().pinholes_created, 0);
    assert!(c.map().is_identity());
}

/// Held bytes gathered over several segments leave, on release, in segments the peer's MSS allows.
#[test]
fn held_bytes_released_by_the_hold_timeout_fit_the_peer_mss() {
    let mut c = Ctl::new(config(), Some(40));
    let mut line = b"PORT ".to_vec();
    line.extend(std::iter::repeat_n(b'1', 115));
    for (i, chunk) in line.chunks(40).enumerate() {
        // Held: a pure ACK at the first held byte leaves for each.
        assert_eq!(c.up(SOLID + 40 * i as u32, chunk), vec![(SOLID, Vec::new())]);
    }
    c.r.advance(2);
    let released: Vec<_> =
        std::iter::from_fn(|| c.r.engine.poll_transmit()).map(|t| check(&t.packet)).collect();
    assert!(
        released.iter().all(|s| s.payload.len() <= 40),
        "{:?}",
        released.iter().map(|s| s.payload.len()).collect::<Vec<_>>()
    );
    let mut at = SOLID;
    let mut all = Vec::new();
    for s in &released {
        assert_eq!(s.seq.wrapping_sub(C0), at, "consecutive sequence numbers");
        at += s.payload.len() as u32;
        all.extend_from_slice(&s.payload);
    }
    assert_eq!(all, line);
}

// ---------------------------------------------------------------------------------------------------------
// Retransmissions

/// The sender retransmits the rewritten PORT line merged with the command after it: the output is the
/// same rewritten line plus the command, at the same sequence numbers, and no second pinhole.
#[test]
fn retransmission_merging_a_rewritten_line_with_the_next_command() {
    let mut c = Ctl::new(config(), Some(1460));
    let (line, delta) = rewrite_port(&mut c);
    assert_eq!(delta, 4);
    let next = b"RETR f\r\n";
    let after = SOLID + PORT_LINE.len() as u32;
    assert_eq!(c.up(after, next), vec![(after + 4, next.to_vec())]);
    let mut merged = PORT_LINE.to_vec();
    merged.extend_from_slice(next);
    let mut want = line.clone();
    want.extend_from_slice(next);
    assert_eq!(c.up(SOLID, &merged), vec![(SOLID, want)]);
    assert_eq!(c.m().pinholes_created, 1);
    assert_eq!(c.m().alg_rewrites_port, 1);
    assert!(c.m().alg_retransmits_rebuilt >= 1);
    assert_eq!(c.map().current_delta(), 4, "the delta counted once");
}

/// Every sub-range of what was sent, retransmitted on its own (split differently, starting or ending
/// mid-line, inside the address), comes out as a slice of the first output stream at the right
/// sequence number; a range cut inside the rewritten text is widened to the whole replacement.
#[test]
fn retransmissions_split_differently_or_starting_mid_line_are_slices_of_the_first_output() {
    let mut c = Ctl::new(config(), Some(1460));
    let (line, _) = rewrite_port(&mut c);
    let tail = b"RETR f\r\nNOOP\r\n";
    let after = SOLID + PORT_LINE.len() as u32;
    c.up(after, tail);
    let mut sent = PORT_LINE.to_vec();
    sent.extend_from_slice(tail);
    let mut first_out = line.clone();
    first_out.extend_from_slice(tail);
    let span = 5..PORT_LINE.len() - 2; // "10,0,0,2,160,40" in the sender's stream
    for a in 0..sent.len() {
        for b in a + 1..=sent.len() {
            let out = c.up(SOLID + a as u32, &sent[a..b]);
            assert_eq!(out.len(), 1);
            let (at, bytes) = &out[0];
            let off = (at - SOLID) as usize;
            assert_eq!(&first_out[off..off + bytes.len()], &bytes[..], "range {a}..{b}");
            if a < span.end && b > span.start {
                let whole = 5..line.len() - 2;
                assert!(off <= whole.start && off + bytes.len() >= whole.end, "range {a}..{b}: widened");
            }
        }
    }
    assert_eq!(c.m().pinholes_created, 1, "no retransmission opens a pinhole");
    assert_eq!(c.map().current_delta(), 4);
}

/// Pipelining: several announcements in one segment, each rewritten at its own offset, every other
/// byte as sent; a retransmission of any part of it is a slice of that output.
#[test]
fn pipelined_announcements_in_one_segment_are_each_rewritten_in_place() {
    let mut c = Ctl::new(config(), Some(1460));
    let lines: [&[u8]; 7] = [
        b"PORT 10,0,0,2,160,40\r\n",
        b"RETR a\r\n",
        b"EPRT |1|10.0.0.2|41001|\r\n",
        b"NOOP\r\n",
        b"port 10,0,0,2,160,42\r\n",
        b"STOR b\r\n",
        b"EPRT !1!10.0.0.2!41003!\n",
    ];
    let sent = lines.concat();
    let out = c.up(SOLID, &sent);
    assert_eq!(out.len(), 1);
    let got = out[0].1.clone();
    let got_lines: Vec<&[u8]> = got.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(got_lines.len(), lines.len());
    for (i, (a, b)) in lines.iter().zip(&got_lines).enumerate() {
        let (sa, sb) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
        match i {
            0 | 4 => {
                let port = port_in(&b.to_ascii_uppercase(), PUBLIC).unwrap_or_else(|| panic!("{sb}"));
                let want = format!("{}{}\r\n", &sa[..5], common::ftp::format_host_port(PUBLIC, port));
                assert_eq!(sb, want);
            }
            2 | 6 => {
                let d = &sa[5..6];
                let (addr, port) =
                    common::ftp::parse_eprt_arg(sb[5..].trim_end()).unwrap_or_else(|| panic!("{sb}"));
                assert_eq!(addr, PUBLIC);
                let eol = if i == 6 { "\n" } else { "\r\n" };
                assert_eq!(sb, format!("EPRT {d}1{d}{PUBLIC}{d}{port}{d}{eol}"));
            }
            _ => assert_eq!(a, b, "line {i} untouched"),
        }
    }
    assert_eq!(c.m().pinholes_created, 4);
    assert_eq!(c.map().edits_in_flight(), 4);
    // Any retransmitted part is a slice of that output.
    for (a, b) in [(3usize, 40usize), (22, 30), (30, 60), (50, sent.len()), (0, sent.len())] {
        let o = c.up(SOLID + a as u32, &sent[a..b]);
        let off = (o[0].0 - SOLID) as usize;
        assert_eq!(&got[off..off + o[0].1.len()], &o[0].1[..], "range {a}..{b}");
    }
    assert_eq!(c.m().pinholes_created, 4);
}

/// A command is recognised only at a real line start: text that merely contains `PORT …` is left
/// alone, and a bare LF ends a line like CRLF does.
#[test]
fn announcements_are_recognised_only_at_a_line_start() {
    let mut c = Ctl::new(config(), Some(1460));
    let quiet = b"NOOP PORT 10,0,0,2,160,40\r\nXPORT 10,0,0,2,160,40\r\nSITE EPRT |1|10.0.0.2|41000|\r\n";
    assert_eq!(c.up(SOLID, quiet), vec![(SOLID, quiet.to_vec())]);
    assert_eq!(c.m().pinholes_created, 0);
    let off = SOLID + quiet.len() as u32;
    let out = c.up(off, b"NOOP\nPORT 10,0,0,2,160,40\r\n");
    assert!(out[0].1.starts_with(b"NOOP\nPORT 198,51,100,1,"), "{:?}", String::from_utf8_lossy(&out[0].1));
    assert_eq!(c.m().pinholes_created, 1);
}

// ---------------------------------------------------------------------------------------------------------
// Out of order, duplicates

/// The second half of a PORT line overtakes the first: refused (nothing is rewritten on bytes that
/// are not in order); the first half is held; the retransmitted second half completes the line, which
/// is rewritten once. A duplicate of the completing segment changes nothing.
#[test]
fn out_of_order_and_duplicated_segments_rewrite_once_at_the_right_bytes() {
    let mut c = Ctl::new(config(), Some(1460));
    let (a, b) = PORT_LINE.split_at(9);
    let (v, out) = c.up_raw(SOLID + 9, "PA", None, &[], b);
    assert_eq!(v, Verdict::Drop(DropReason::AlgOutOfOrder));
    assert!(out.is_empty());
    assert_eq!(c.m().pinholes_created, 0);
    assert_eq!(c.up(SOLID, a), vec![(SOLID, Vec::new())]);
    let out = c.up(SOLID + 9, b);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SOLID);
    let line = out[0].1.clone();
    assert!(port_in(&line, PUBLIC).is_some());
    // Duplicates of either half: slices of the same output, a cut inside the replacement widened
    // to all of it.
    let repl = 5..line.len() - 2;
    assert_eq!(
        c.up(SOLID + 9, b),
        vec![(SOLID + 5, line[repl.start..].to_vec())],
        "duplicate of the 2nd half"
    );
    assert_eq!(c.up(SOLID, a), vec![(SOLID, line[..repl.end].to_vec())], "duplicate of the 1st half");
    assert_eq!(c.up(SOLID, PORT_LINE), vec![(SOLID, line.clone())], "both, merged");
    assert_eq!(c.m().pinholes_created, 1);
    assert_eq!(c.map().current_delta(), 4);
    assert_eq!(c.map().edits_in_flight(), 1);
    let after = SOLID + PORT_LINE.len() as u32;
    assert_eq!(c.up(after, b"NOOP\r\n"), vec![(after + 4, b"NOOP\r\n".to_vec())]);
}

/// The direction the ALG only reads (here: commands of an outside client to a forwarded inside
/// server) refuses a segment past a gap too, so the PASV it carries is not lost and its 227 is
/// rewritten.
#[test]
fn observed_direction_refuses_a_gap_so_a_command_is_never_skipped() {
    let mut cfg = config();
    cfg.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    let mut r = Rig::new(cfg);
    let (c0, s0) = (5_000u32, 9_000u32);
    r.pass(Side::Outside, seg(REMOTE, 50_000, PUBLIC, 21, c0, 0, "S", None, &[], b""));
    r.pass(Side::Inside, seg(LAN_HOST, 21, REMOTE, 50_000, s0, c0 + 1, "SA", None, &[], b""));
    r.pass(Side::Outside, seg(REMOTE, 50_000, PUBLIC, 21, c0 + 1, s0 + 1, "A", None, &[], b""));
    r.pass(Side::Inside, seg(LAN_HOST, 21, REMOTE, 50_000, s0 + 1, c0 + 1, "PA", None, &[], GREETING));
    let s1 = s0 + 1 + GREETING.len() as u32;
    let (v, _) =
        r.send(Side::Outside, seg(REMOTE, 50_000, PUBLIC, 21, c0 + 2, s0 + 1, "PA", None, &[], b"ASV\r\n"));
    assert_eq!(v, Verdict::Drop(DropReason::AlgOutOfOrder));
    r.pass(Side::Outside, seg(REMOTE, 50_000, PUBLIC, 21, c0 + 1, s0 + 1, "PA", None, &[], b"P"));
    r.pass(Side::Outside, seg(REMOTE, 50_000, PUBLIC, 21, c0 + 1, s0 + 1, "PA", None, &[], b"PASV\r\n"));
    let reply = b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n";
    let (_, s) = r.pass(Side::Inside, seg(LAN_HOST, 21, REMOTE, 50_000, s1, c0 + 7, "PA", None, &[], reply));
    assert!(port_in(&s.payload, PUBLIC).is_some(), "{:?}", String::from_utf8_lossy(&s.payload));
    assert_eq!(r.engine.metrics().pinholes_created, 1);
}

// ---------------------------------------------------------------------------------------------------------
// Header fields: RST, SACK, urgent pointer, ICMP

#[test]
fn rst_segments_get_their_seq_and_ack_mapped() {
    let mut c = Ctl::new(config(), Some(1460));
    let (_, delta) = rewrite_port(&mut c);
    let after = SOLID + PORT_LINE.len() as u32;
    // The client resets after the rewritten line: its seq moves by the delta.
    let mut c2 = Ctl::new(config(), Some(1460));
    rewrite_port(&mut c2);
    let (v, out) = c2.up_raw(after, "RA", None, &[], b"");
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let s = check(&out[0]);
    assert_eq!(s.seq.wrapping_sub(C0) as i64, after as i64 + delta);
    assert_eq!(s.ack, S0 + 1);
    // The server resets, acknowledging the rewritten line: its ack comes back into the client's space.
    let (v, out) = c.down(1, after + delta as u32, "RA", &[], b"");
    assert_eq!(v, Verdict::Forward(Side::Inside));
    let s = check(&out[0]);
    assert_eq!((s.seq, s.ack.wrapping_sub(C0)), (S0 + 1, after));
    assert!(tcp_of(&out[0]).rst());
}

/// SACK blocks of the receiver of rewritten data speak of its sequence space: every edge of every
/// block (four, the first a D-SACK below the cumulative ACK, RFC 2883) is mapped back, including edges
/// at the ends of the replacement while it is still in the history.
#[test]
fn sack_and_dsack_blocks_are_all_mapped_back() {
    let mut c = Ctl::new(config(), Some(1460));
    let (line, delta) = rewrite_port(&mut c);
    let d = delta as u32;
    let after = SOLID + PORT_LINE.len() as u32;
    c.up(after, b"NOOP\r\n");
    c.up(after + 6, b"SYST\r\n");
    c.up(after + 12, b"PWD\r\n");
    // Server space: "PORT " 1..6, replacement 6..6+19, CRLF, then NOOP, SYST, PWD.
    let repl_end = SOLID + 5 + (line.len() - 7) as u32;
    // Offsets into the client stream ↔ absolute sequence numbers.
    let abs = |(l, r): (u32, u32)| (C0.wrapping_add(l), C0.wrapping_add(r));
    let rel = |v: Vec<(u32, u32)>| {
        v.into_iter().map(|(l, r)| (l.wrapping_sub(C0), r.wrapping_sub(C0))).collect::<Vec<_>>()
    };
    let sack = |b: [(u32, u32); 4]| {
        [
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(
                abs(b[0]),
                [Some(abs(b[1])), Some(abs(b[2])), Some(abs(b[3]))],
            ),
        ]
    };
    let four = [
        (SOLID, 3),
        (SOLID + 5, repl_end),
        (after + 6 + d, after + 12 + d),
        (after + 12 + d, after + 17 + d),
    ];
    let (_, out) = c.down(1, 3, "A", &sack(four), b"");
    assert_eq!(check(&out[0]).ack.wrapping_sub(C0), 3);
    assert_eq!(
        rel(sack_blocks(&out[0])),
        vec![(SOLID, 3), (SOLID + 5, SOLID + 5 + 15), (after + 6, after + 12), (after + 12, after + 17)]
    );
    // After the line is acknowledged (its edit folded away): a D-SACK of the duplicated NOOP and three
    // more blocks, all by the folded offset.
    let four = [
        (after + d, after + 6 + d),
        (after + 12 + d, after + 14 + d),
        (after + 14 + d, after + 15 + d),
        (after + 15 + d, after + 17 + d),
    ];
    let (_, out) = c.down(1, after + 12 + d, "A", &sack(four), b"");
    assert_eq!(c.map().edits_in_flight(), 0);
    assert_eq!(check(&out[0]).ack.wrapping_sub(C0), after + 12);
    assert_eq!(
        rel(sack_blocks(&out[0])),
        vec![
            (after, after + 6),
            (after + 12, after + 14),
            (after + 14, after + 15),
            (after + 15, after + 17)
        ]
    );
}

/// URG points at the byte after the urgent data (ABOR is sent with the Telnet Synch, RFC 959 §4.1.3).
/// Bytes grown before it move it by the delta; its receiver-space position is that of the same byte.
#[test]
fn urgent_pointer_keeps_pointing_at_the_same_byte_across_a_rewrite() {
    let mut c = Ctl::new(config(), Some(1460));
    // PORT line and the urgent ABOR in one segment: the pointer is relative to the segment's seq.
    let abor = b"\xff\xf4\xff\xf2ABOR\r\n";
    let mut p = PORT_LINE.to_vec();
    p.extend_from_slice(abor);
    let urg = (PORT_LINE.len() + 4) as u16; // just past IAC IP IAC DM
    let (_, out) = c.up_raw(SOLID, "PA", Some(urg), &[], &p);
    let t = tcp_of(&out[0]);
    assert!(t.urg());
    let line_len = check(&out[0]).payload.len() - abor.len();
    assert_eq!(t.urgent_pointer() as usize, line_len + 4, "moved by the growth of the PORT line");
    // A later urgent segment: same pointer (the segment's seq moved, not the offset).
    let after = SOLID + p.len() as u32;
    let (_, out) = c.up_raw(after, "PA", Some(4), &[], abor);
    let t = tcp_of(&out[0]);
    assert!(t.urg());
    assert_eq!(t.urgent_pointer(), 4);
    assert_eq!(check(&out[0]).seq.wrapping_sub(C0), after + 4);
}

/// An ICMP error from beyond the gateway quotes a segment as the gateway sent it (server space): the
/// quoted sequence number goes back to the client's own, with the addresses and ports.
#[test]
fn icmp_error_quoting_a_rewritten_segment_gets_its_sequence_number_mapped() {
    let mut c = Ctl::new(config(), Some(1460));
    let (_, delta) = rewrite_port(&mut c);
    let after = SOLID + PORT_LINE.len() as u32;
    let out = c.up(after, b"NOOP\r\n");
    assert_eq!(out[0].0 as i64, after as i64 + delta);
    // The segment as it left: rebuild it from what the engine emitted.
    let emitted =
        seg(PUBLIC, CP, REMOTE, 21, C0.wrapping_add(out[0].0), S0 + 1, "PA", None, &[], b"NOOP\r\n");
    let router = Ipv4Addr::new(198, 51, 100, 254);
    let quoted = &emitted[..28];
    let b =
        PacketBuilder::ipv4(router.octets(), PUBLIC.octets(), 64).icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1200 },
        ));
    let mut icmp = Vec::new();
    b.write(&mut icmp, quoted).unwrap();
    let (v, out) = c.r.send(Side::Outside, icmp);
    assert_eq!(v, Verdict::Forward(Side::Inside));
    let pkt = &out[0].1;
    let ip = Ipv4HeaderSlice::from_slice(pkt).unwrap();
    assert_eq!((ip.protocol(), ip.destination_addr()), (IpNumber::ICMP, LAN_HOST));
    let inner = &pkt[20 + 8..];
    assert_eq!(rfc1071(&pkt[20..]), 0, "ICMP checksum");
    let qip = Ipv4HeaderSlice::from_slice(inner).unwrap();
    assert_eq!((qip.source_addr(), qip.destination_addr()), (LAN_HOST, REMOTE));
    let q = &inner[20..];
    let (sp, seq) = (u16::from_be_bytes([q[0], q[1]]), u32::from_be_bytes([q[4], q[5], q[6], q[7]]));
    assert_eq!((sp, seq.wrapping_sub(C0)), (CP, after), "quoted seq in the client's space");
}

// ---------------------------------------------------------------------------------------------------------
// Segment size

fn assert_pieces(out: &[(u32, Vec<u8>)], from: u32, want: &[u8], max: usize) {
    let mut at = from;
    let mut all = Vec::new();
    for (s, p) in out {
        assert_eq!(*s, at, "consecutive numbering");
        assert!(p.len() <= max, "piece of {} bytes, limit {max}", p.len());
        at += p.len() as u32;
        all.extend_from_slice(p);
    }
    assert_eq!(all, want);
}

/// A full-MSS segment whose PORT line grows is split into numbered segments within the MSS the server
/// announced in its SYN; with no MSS option, within the 536 bytes RFC 9293 §3.7.1 lets a host assume.
#[test]
fn growing_rewrite_of_a_full_mss_segment_is_split_to_the_peer_mss() {
    for (mss, limit) in [(Some(64u16), 64usize), (None, 536)] {
        let mut c = Ctl::new(config(), mss);
        let mut p = PORT_LINE.to_vec();
        while p.len() < limit {
            p.push(b'x');
        }
        let out = c.up(SOLID, &p);
        assert_eq!(out.len(), 2, "mss {mss:?}");
        let mut want = c.map().rebuild(ftpnat::wire::SeqNum::new(C0.wrapping_add(SOLID)), &p).1;
        assert_eq!(want.len(), limit + 4);
        assert_pieces(&out, SOLID, &want, limit);
        want.clear();
        assert_eq!(c.m().alg_segments_split, 1);
    }
}

/// The same against the gateway's own egress MTU (576 here), smaller than the peer's MSS.
#[test]
fn growing_rewrite_is_split_to_the_egress_mtu() {
    let mut cfg = config();
    cfg.mtu = [1500, 576];
    let mut c = Ctl::new(cfg, Some(1460));
    let mut p = PORT_LINE.to_vec();
    p.resize(536, b'y');
    let out = c.up(SOLID, &p);
    assert_eq!(out.len(), 2);
    let want = c.map().rebuild(ftpnat::wire::SeqNum::new(C0.wrapping_add(SOLID)), &p).1;
    assert_pieces(&out, SOLID, &want, 536);
}

/// RFC 6691 §2: the MSS counts data only, and a sender that includes TCP options must shrink its data
/// by their size. A segment with a timestamp option (12 bytes) that is full for MSS 100 carries 88
/// data bytes; grown by the rewrite, each piece must still carry at most 88.
#[test]
fn split_accounts_for_tcp_options_in_the_segment() {
    let mut c = Ctl::new(config(), Some(100));
    let ts = [TcpOptionElement::Noop, TcpOptionElement::Noop, TcpOptionElement::Timestamp(1, 2)];
    let mut p = PORT_LINE.to_vec();
    p.resize(88, b'z');
    let (v, out) = c.up_raw(SOLID, "PA", None, &ts, &p);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    for q in &out {
        let t = tcp_of(q);
        let data = check(q).payload.len();
        assert!(
            data + t.slice().len() - 20 <= 100,
            "{data} data bytes + {} option bytes > MSS 100",
            t.slice().len() - 20
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Zero delta, history

/// The outside data port is chosen so the rewritten line keeps its length when the port's decimal text
/// allows it. 10.0.0.2 → 198.51.100.1 adds four characters, so only an inside port written with seven
/// ("p1,p2" both ≥ 100) leaves room for a public port written with three ("4..9,0..9").
#[test]
fn zero_delta_counter_and_its_rate_over_a_batch_of_port_commands() {
    let mut c = Ctl::new(config(), Some(1460));
    let mut off = SOLID;
    let mut neutral_possible = 0;
    let n = 64u16;
    for i in 0..n {
        let port = if i % 2 == 0 { (100 + i) * 256 + 100 + i } else { 41_000 + i };
        let line = port_line(LAN_HOST, port);
        let out = c.up(off, &line);
        let got = &out[0].1;
        let p1 = port >> 8;
        let p2 = port & 0xff;
        if p1 >= 100 && p2 >= 100 {
            neutral_possible += 1;
            assert_eq!(got.len(), line.len(), "{:?}", String::from_utf8_lossy(got));
        } else {
            assert_eq!(got.len(), line.len() + 4);
        }
        off += line.len() as u32;
        // The server acknowledges everything and answers, so history and pending replies stay small.
        let ack = off as i64 + c.map().current_delta() as i64;
        let reply = b"200 PORT command successful.\r\n";
        let (_, r) = c.down(c.c_ack, ack as u32, "PA", &[], reply);
        assert_eq!(check(&r[0]).ack.wrapping_sub(C0), off);
        c.c_ack += reply.len() as u32;
    }
    let m = c.m();
    assert_eq!(m.alg_rewrites_port, n as u64);
    assert_eq!(m.alg_rewrites_zero_delta, neutral_possible);
    let rate = m.alg_rewrites_zero_delta as f64 / m.alg_rewrites() as f64;
    eprintln!(
        "zero-delta rate over {n} PORT commands: {:.0}% ({} of {})",
        rate * 100.0,
        m.alg_rewrites_zero_delta,
        m.alg_rewrites()
    );
    assert_eq!(c.map().edits_in_flight(), 0, "all acknowledged");
}

/// Edits stay in the map until the receiver acknowledges past them, then fold into the base offset;
/// a retransmission of pruned bytes draws an ACK (a probe just below the receiver's next byte) instead
/// of bytes the gateway can no longer rebuild.
#[test]
fn history_is_pruned_after_the_peer_acknowledges_past_it() {
    let mut c = Ctl::new(config(), Some(1460));
    let (line, delta) = rewrite_port(&mut c);
    let d = delta as u32;
    let after = SOLID + PORT_LINE.len() as u32;
    c.up(after, b"NOOP\r\n");
    assert_eq!(c.map().edits_in_flight(), 1);
    // An ACK inside the replacement (which starts after "PORT "): the edit is still needed, and the
    // client is told as many bytes into its own span, never all of it (so the line's end is kept).
    assert_eq!(c.acked_as(SOLID + 10), SOLID + 10);
    assert_eq!(c.acked_as(SOLID + 5 + 16), SOLID + 5 + 14);
    assert_eq!(c.map().edits_in_flight(), 1);
    // Past it: folded.
    assert_eq!(c.acked_as(SOLID + line.len() as u32), after);
    assert_eq!(c.map().edits_in_flight(), 0);
    assert_eq!(c.map().current_delta(), 4);
    assert!(!c.map().is_identity());
    // Later bytes still move by the delta.
    assert_eq!(c.up(after + 6, b"SYST\r\n"), vec![(after + 6 + d, b"SYST\r\n".to_vec())]);
    // A retransmission of the pruned line: an empty probe one below what the server acknowledged.
    assert_eq!(c.up(SOLID, PORT_LINE), vec![(SOLID + line.len() as u32 - 1, Vec::new())]);
    // Partly pruned: only the new part leaves.
    assert_eq!(c.acked_as(after + d + 3), after + 3);
    assert_eq!(c.up(after, b"NOOP\r\n"), vec![(after + d + 3, b"P\r\n".to_vec())]);
    assert_eq!(c.m().pinholes_created, 1);
}
