//! An FTP control connection is trusted only while it looks like FTP, and a gap in it never stalls it
//! nor turns into a pinhole (issue 11), from the attacker's side: the NAT Slipstreaming HTTP body on
//! port 21, a server that is no FTP server, announcements before the greeting, pipelining before the
//! greeting, a 227/229 naming a privileged port, and recordings or paths that lose control segments in
//! either direction. Each test checks flows, counters and the exact bytes both peers get.
//!
//! Owns: these scenarios and `Peers`, a control connection spoken by hand through
//! `engine_support::Rig` (every emitted packet checked by etherparse), whose two ends track what they
//! were delivered and acknowledge exactly that. Must not: reach into the engine beyond its public
//! accessors.

mod engine_support;

use std::net::Ipv4Addr;

use engine_support::*;
use ftpnat::{Config, DropReason, RefusalReason, Side, Verdict};

/// One TCP connection, client and server each with their own numbers; every byte delivered to either
/// end is kept, in order, and each end acknowledges what it got.
struct Peers {
    c_side: Side,
    s_side: Side,
    /// (src, sport, dst, dport) as the client sends and as the server receives.
    c: (Ipv4Addr, u16, Ipv4Addr, u16),
    s: (Ipv4Addr, u16, Ipv4Addr, u16),
    c_seq: u32,
    s_seq: u32,
    /// Next byte each receiver expects (receiver space).
    c_rcv: u32,
    s_rcv: u32,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Peers {
    fn open(r: &mut Rig, c_side: Side, c: (Ipv4Addr, u16, Ipv4Addr, u16)) -> Peers {
        let (side, syn) = r.pass(c_side, tcp(c.0, c.1, c.2, c.3, 1000, 0, SYN, b""));
        let s = (syn.src, syn.sport, syn.dst, syn.dport);
        let (_, sa) = r.pass(side, tcp(s.2, s.3, s.0, s.1, 9000, 1001, SYNACK, b""));
        r.pass(c_side, tcp(c.0, c.1, c.2, c.3, 1001, sa.seq + 1, ACK, b""));
        Peers {
            c_side,
            s_side: side,
            c,
            s,
            c_seq: 1001,
            s_seq: 9001,
            c_rcv: 9001,
            s_rcv: 1001,
            to_server: Vec::new(),
            to_client: Vec::new(),
        }
    }

    /// An inside client to REMOTE:21.
    fn client_inside(r: &mut Rig) -> Peers {
        Peers::open(r, Side::Inside, (LAN_HOST, 40000, REMOTE, 21))
    }

    /// An outside client to the inside server behind `tcp:21=10.0.0.2:21`.
    fn server_inside(r: &mut Rig) -> Peers {
        Peers::open(r, Side::Outside, (REMOTE, 50000, PUBLIC, 21))
    }

    fn deliver(&mut self, out: &[(Side, Vec<u8>)]) {
        for (side, p) in out {
            let s = check(p);
            let to_server = *side == self.s_side && (s.src, s.sport, s.dst, s.dport) == self.s;
            let (rcv, buf) = if to_server {
                (&mut self.s_rcv, &mut self.to_server)
            } else {
                (&mut self.c_rcv, &mut self.to_client)
            };
            let end = s.seq.wrapping_add(s.payload.len() as u32);
            let skip = rcv.wrapping_sub(s.seq) as usize;
            if skip < s.payload.len() && (end.wrapping_sub(*rcv) as i32) > 0 {
                buf.extend_from_slice(&s.payload[skip..]);
                *rcv = end;
            }
        }
    }

    /// The client sends `bytes` at its next sequence number.
    fn c_send(&mut self, r: &mut Rig, bytes: &[u8]) -> Verdict {
        let c = self.c;
        let pkt = tcp(c.0, c.1, c.2, c.3, self.c_seq, self.c_rcv, PSHACK, bytes);
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        let (v, out) = r.send(self.c_side, pkt);
        self.deliver(&out);
        v
    }

    fn s_send(&mut self, r: &mut Rig, bytes: &[u8]) -> Verdict {
        let s = self.s;
        let pkt = tcp(s.2, s.3, s.0, s.1, self.s_seq, self.s_rcv, PSHACK, bytes);
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        let (v, out) = r.send(self.s_side, pkt);
        self.deliver(&out);
        v
    }

    /// The client's bytes reach the server around the gateway (an asymmetric path; a capture that lost
    /// them): the server has them and will acknowledge them; the gateway never saw them.
    fn c_around(&mut self, bytes: &[u8]) {
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        self.to_server.extend_from_slice(bytes);
        self.s_rcv = self.s_rcv.wrapping_add(bytes.len() as u32);
    }

    fn s_around(&mut self, bytes: &[u8]) {
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        self.to_client.extend_from_slice(bytes);
        self.c_rcv = self.c_rcv.wrapping_add(bytes.len() as u32);
    }

    /// A pure ACK from the client of what it has.
    fn c_ack(&mut self, r: &mut Rig) {
        let c = self.c;
        let (_, out) = r.send(self.c_side, tcp(c.0, c.1, c.2, c.3, self.c_seq, self.c_rcv, ACK, b""));
        self.deliver(&out);
    }
}

fn server_inside_config() -> Config {
    let mut c = config();
    c.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    c
}

fn nothing_opened(r: &Rig) {
    let m = r.engine.metrics();
    assert_eq!((m.alg_rewrites(), m.pinholes_created, r.engine.pinholes().len()), (0, 0, 0));
}

/// The NAT Slipstreaming shape: a browser made to POST to an attacker's server on port 21, whose body
/// holds a PORT line at a real line start.
const SLIP_BODY: &[u8] = b"POST / HTTP/1.1\r\nHost: attacker.example:21\r\nContent-Type: text/plain\r\n\
Content-Length: 40\r\n\r\nxxxx\r\nPORT 10,0,0,2,39,36\r\n";

#[test]
fn http_body_slipstream_opens_no_pinhole_in_one_segment_or_split() {
    // The attacker's server greets or not; the body comes in one segment, or cut right before "PORT".
    for greet in [false, true] {
        for split in [None, Some(SLIP_BODY.len() - 21)] {
            let mut r = Rig::new(config());
            let mut p = Peers::client_inside(&mut r);
            if greet {
                p.s_send(&mut r, b"220 welcome\r\n");
            }
            match split {
                None => {
                    p.c_send(&mut r, SLIP_BODY);
                }
                Some(at) => {
                    p.c_send(&mut r, &SLIP_BODY[..at]);
                    p.c_send(&mut r, &SLIP_BODY[at..]);
                }
            }
            assert_eq!(p.to_server, SLIP_BODY, "the server gets the body byte for byte");
            nothing_opened(&r);
            assert_eq!(
                r.engine.metrics().refused_of(RefusalReason::NotFtp),
                1,
                "greet {greet} split {split:?}"
            );
            // Opaque for good: a later PORT, even a well-formed one after more lines, is not honoured.
            p.c_send(&mut r, b"\r\nPORT 10,0,0,2,39,37\r\n");
            assert!(p.to_server.ends_with(b"PORT 10,0,0,2,39,37\r\n"));
            nothing_opened(&r);
            // And the data connection the attacker wanted finds nothing.
            let (v, _) = r.send(Side::Outside, tcp(REMOTE, 4444, PUBLIC, 39 * 256 + 36, 1, 0, SYN, b""));
            assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
        }
    }
}

#[test]
fn a_header_line_or_binary_makes_the_connection_opaque() {
    for first in [&b"Host: x\r\n"[..], b"\x16\x03\x01\x02\x00\x01\r\n", b" NOOP\r\n", b"GET / HTTP/1.0\r\n"] {
        let mut r = Rig::new(config());
        let mut p = Peers::client_inside(&mut r);
        p.s_send(&mut r, b"220 ready\r\n");
        p.c_send(&mut r, first);
        p.c_send(&mut r, b"PORT 10,0,0,2,39,36\r\n");
        let mut want = first.to_vec();
        want.extend_from_slice(b"PORT 10,0,0,2,39,36\r\n");
        assert_eq!(p.to_server, want);
        nothing_opened(&r);
        assert_eq!(r.engine.metrics().refused_of(RefusalReason::NotFtp), 1);
        let (_, c) = r.engine.table().iter().next().unwrap();
        assert_eq!(c.alg.as_ref().unwrap().ftp().unwrap().state_name(), "not-ftp");
    }
}

#[test]
fn a_server_that_is_no_ftp_server_is_not_trusted() {
    // An inside "FTP" server whose first words are an HTTP status line or an SSH banner: its 227s are
    // never rewritten (server-inside topology), nor the client's lines read.
    for banner in [&b"HTTP/1.1 400 Bad Request\r\n"[..], b"SSH-2.0-OpenSSH_9.6\r\n", b"530 go away\r\n"] {
        let mut r = Rig::new(server_inside_config());
        let mut p = Peers::server_inside(&mut r);
        p.s_send(&mut r, banner);
        p.c_send(&mut r, b"PASV\r\n");
        let reply: &[u8] = b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n";
        p.s_send(&mut r, reply);
        let mut want = banner.to_vec();
        want.extend_from_slice(reply);
        assert_eq!(p.to_client, want, "{:?}", String::from_utf8_lossy(banner));
        nothing_opened(&r);
        assert_eq!(r.engine.metrics().refused_of(RefusalReason::NotFtp), 1);
    }
}

#[test]
fn no_announcement_is_honoured_before_the_greeting_and_one_after_it_is() {
    let mut r = Rig::new(config());
    let mut p = Peers::client_inside(&mut r);
    // Before any greeting: left as sent, counted, no pinhole (the connection is not opaque though).
    p.c_send(&mut r, b"PORT 10,0,0,2,39,36\r\n");
    assert_eq!(p.to_server, b"PORT 10,0,0,2,39,36\r\n");
    nothing_opened(&r);
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::NotFtp), 1);
    // The greeting, then the server answers the early PORT; a PORT after that is rewritten.
    p.s_send(&mut r, b"220 ready\r\n500 no\r\n");
    p.c_send(&mut r, b"PORT 10,0,0,2,39,37\r\n");
    assert!(p.to_server.ends_with(b"\r\n") && p.to_server.windows(18).any(|w| w == b"PORT 198,51,100,1,"));
    assert_eq!((r.engine.metrics().alg_rewrites(), r.engine.pinholes().len()), (1, 1));
}

#[test]
fn commands_pipelined_before_the_greeting_are_answered_in_order() {
    // A client that pipelines its login and PASV before the server greeted (server inside: the 227 is
    // rewritten). The greeting answers none of them: the 227 still answers the PASV.
    let mut r = Rig::new(server_inside_config());
    let mut p = Peers::server_inside(&mut r);
    p.c_send(&mut r, b"USER anonymous\r\nPASS x@y\r\nPASV\r\n");
    p.s_send(&mut r, b"220-Welcome\r\n220 ready\r\n");
    p.s_send(&mut r, b"331 Password please\r\n230 Logged in\r\n");
    p.s_send(&mut r, b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n");
    let text = String::from_utf8_lossy(&p.to_client).to_string();
    assert!(text.ends_with("227 Entering Passive Mode (198,51,100,1,117,48).\r\n"), "{text}");
    assert_eq!(r.engine.pinholes().len(), 1);
    let (side, syn) = r.pass(Side::Outside, tcp(REMOTE, 50001, PUBLIC, 117 * 256 + 48, 1, 0, SYN, b""));
    assert_eq!((side, syn.dst, syn.dport), (Side::Inside, LAN_HOST, 117 * 256 + 48));
    // A 120 ("ready in a while") first is fine too.
    let mut r = Rig::new(server_inside_config());
    let mut p = Peers::server_inside(&mut r);
    p.c_send(&mut r, b"PASV\r\n");
    p.s_send(&mut r, b"120 wait\r\n220 ready\r\n227 Entering Passive Mode (10,0,0,2,117,49).\r\n");
    assert_eq!(r.engine.pinholes().len(), 1);
}

#[test]
fn a_227_or_229_naming_a_privileged_port_follows_the_low_port_policy() {
    for allow in [false, true] {
        let mut c = server_inside_config();
        c.ftp.refuse_low_ports = !allow;
        let mut r = Rig::new(c);
        let mut p = Peers::server_inside(&mut r);
        p.s_send(&mut r, b"220 ready\r\n");
        for (cmd, reply) in [
            (&b"PASV\r\n"[..], &b"227 Entering Passive Mode (10,0,0,2,0,22).\r\n"[..]),
            (b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||23|)\r\n"),
        ] {
            p.c_send(&mut r, cmd);
            let before = p.to_client.len();
            p.s_send(&mut r, reply);
            let got = &p.to_client[before..];
            if allow {
                // The 229 may keep its text (public port 23 is free): the counters below tell.
                assert!(got.starts_with(b"229") || got.windows(13).any(|w| w == b"198,51,100,1,"));
            } else {
                assert_eq!(got, reply, "left byte-identical");
            }
        }
        let m = r.engine.metrics();
        if allow {
            assert_eq!((m.alg_rewrites(), m.pinholes_created), (2, 2));
        } else {
            assert_eq!((m.refused_of(RefusalReason::LowPort), m.pinholes_created), (2, 0));
        }
    }
}

#[test]
fn a_command_lost_to_the_gateway_but_acknowledged_by_the_server_does_not_stall() {
    // Client inside; the client's NOOP goes around the gateway (the server gets and acknowledges it).
    let mut r = Rig::new(config());
    let mut p = Peers::client_inside(&mut r);
    p.s_send(&mut r, b"220 ready\r\n");
    p.c_around(b"NOOP\r\n");
    // The client's next command arrives past the gap: refused until the gap is shown (it would be
    // retransmitted by a real client).
    let next: &[u8] = b"PORT 10,0,0,2,39,40\r\n";
    let at = p.c_seq;
    assert_eq!(p.c_send(&mut r, next), Verdict::Drop(DropReason::AlgOutOfOrder));
    // The server's answer acknowledges the NOOP (and not the PORT, which it never got).
    p.s_send(&mut r, b"200 NOOP ok\r\n");
    assert_eq!(r.engine.metrics().alg_gaps, 1);
    // The client retransmits the PORT line: in order now, but the first line after a gap may have begun
    // in it: left as sent, counted, no pinhole.
    p.c_seq = at;
    p.c_send(&mut r, next);
    assert!(p.to_server.ends_with(next), "{:?}", String::from_utf8_lossy(&p.to_server));
    nothing_opened(&r);
    assert_eq!(r.engine.metrics().alg_gap_lines, 1);
    // The server answers it; from the next line on, announcements are rewritten again.
    p.s_send(&mut r, b"200 PORT ok\r\n");
    p.c_send(&mut r, b"PORT 10,0,0,2,39,41\r\n");
    assert!(String::from_utf8_lossy(&p.to_server).ends_with(",39,41\r\n"));
    assert!(p.to_server.windows(18).any(|w| w == b"PORT 198,51,100,1,"));
    assert_eq!((r.engine.metrics().alg_rewrites(), r.engine.pinholes().len()), (1, 1));
    // Nothing stalled: every byte the client sent is at the server, in order.
    let mut want = b"NOOP\r\n".to_vec();
    want.extend_from_slice(next);
    assert!(p.to_server.starts_with(&want));
}

#[test]
fn a_reply_lost_to_the_gateway_but_acknowledged_by_the_client_does_not_stall() {
    // Server inside (its 227s are rewritten); its reply to a NOOP goes around the gateway.
    let mut r = Rig::new(server_inside_config());
    let mut p = Peers::server_inside(&mut r);
    p.s_send(&mut r, b"220 ready\r\n");
    p.c_send(&mut r, b"NOOP\r\n");
    p.s_around(b"200 NOOP ok\r\n");
    // The client's next command acknowledges the reply the gateway never saw: the reply stream jumps.
    p.c_send(&mut r, b"NOOP\r\n");
    assert_eq!(r.engine.metrics().alg_gaps, 1);
    p.s_send(&mut r, b"200 NOOP ok\r\n");
    p.c_send(&mut r, b"PASV\r\n");
    p.s_send(&mut r, b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n");
    assert!(String::from_utf8_lossy(&p.to_client)
        .ends_with("227 Entering Passive Mode (198,51,100,1,117,48).\r\n"));
    assert_eq!(r.engine.pinholes().len(), 1);
    assert_eq!(r.engine.metrics().drops_of(DropReason::AlgOutOfOrder), 0);
}

#[test]
fn a_gap_inside_an_announcement_is_never_repaired_into_a_pinhole() {
    // Server inside: the first part of a 227 passes the gateway (held: it may be an announcement), the
    // rest goes around it; the client acknowledges the whole line.
    let mut r = Rig::new(server_inside_config());
    let mut p = Peers::server_inside(&mut r);
    p.s_send(&mut r, b"220 ready\r\n");
    p.c_send(&mut r, b"PASV\r\n");
    let line: &[u8] = b"227 Entering Passive Mode (10,0,0,2,117,48).\r\n";
    p.s_send(&mut r, &line[..20]);
    assert_eq!(p.to_client, b"220 ready\r\n", "held");
    // The client got the line another way (the server's path around the gateway carried it whole).
    p.to_client.extend_from_slice(&line[..20]);
    p.c_rcv = p.c_rcv.wrapping_add(20);
    p.s_around(&line[20..]);
    p.c_ack(&mut r);
    let m = r.engine.metrics();
    assert_eq!((m.alg_gaps, m.alg_gap_lines), (1, 1));
    nothing_opened(&r);
    // The server goes on; its next 227 (after a line end seen) is an announcement again.
    p.s_send(&mut r, b"150 x\r\n");
    p.c_send(&mut r, b"PASV\r\n");
    p.s_send(&mut r, b"227 Entering Passive Mode (10,0,0,2,117,49).\r\n");
    assert_eq!(r.engine.pinholes().len(), 1);
    assert!(String::from_utf8_lossy(&p.to_client).ends_with("(198,51,100,1,117,49).\r\n"));
}

#[test]
fn a_command_and_its_reply_both_around_the_gateway_do_not_stall() {
    // No acknowledgement of the command ever crosses the gateway: the client's next command, past the
    // gap, keeps being retransmitted without the bytes before it, while the client acknowledges a reply
    // the gateway never saw. After 3 tries over 2 s the gap is jumped.
    let mut r = Rig::new(config());
    let mut p = Peers::client_inside(&mut r);
    p.s_send(&mut r, b"220 ready\r\n");
    p.c_around(b"SYST\r\n");
    p.s_around(b"215 UNIX\r\n");
    let at = p.c_seq;
    let next: &[u8] = b"NOOP\r\n";
    for t in 0..3 {
        p.c_seq = at;
        let v = p.c_send(&mut r, next);
        if t < 2 {
            assert_eq!(v, Verdict::Drop(DropReason::AlgOutOfOrder), "try {t}");
        } else {
            assert_eq!(v, Verdict::Forward(Side::Outside), "try {t}");
        }
        r.advance(1);
    }
    assert_eq!(r.engine.metrics().alg_gaps, 2, "one each way");
    p.s_send(&mut r, b"200 NOOP ok\r\n");
    p.c_send(&mut r, b"PORT 10,0,0,2,39,42\r\n");
    assert!(p.to_server.windows(18).any(|w| w == b"PORT 198,51,100,1,"));
    assert_eq!(r.engine.pinholes().len(), 1);
}
