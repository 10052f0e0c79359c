//! Abuse of the FTP ALG, segment by segment (RFC 2577 bounce and low ports, unsolicited replies, text that
//! only looks like an announcement, NAT Slipstreaming alignment, overlong and malformed numbers, pinhole
//! misuse, holds that never complete, secrets in logs). Each test asserts the refusal, the counter that
//! names its reason, and that the control connection and other flows keep working afterwards.
//!
//! Owns: the `Ctl` driver (one FTP control connection spoken packet by packet through
//! `engine_support::Rig`, every emitted packet checked by etherparse). Must not: reach into engine
//! internals beyond its public accessors.

mod engine_support;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use engine_support::*;
use ftpnat::{Config, DropReason, RefusalReason, Side, Verdict};

/// One TCP connection spoken by hand: the client and the server each keep their sequence numbers, and
/// each acknowledges what the gateway actually delivered to it (receiver-space numbers).
struct Ctl {
    c_side: Side,
    s_side: Side,
    /// (src, sport, dst, dport) as the client sends.
    c: (Ipv4Addr, u16, Ipv4Addr, u16),
    /// (src, sport, dst, dport) as the server receives (learned from the SYN that left the gateway).
    s: (Ipv4Addr, u16, Ipv4Addr, u16),
    c_seq: u32,
    s_seq: u32,
    /// Next byte each receiver expects (receiver space).
    c_rcv: u32,
    s_rcv: u32,
    /// Every payload byte delivered to each peer, in order.
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

const C_ISN: u32 = 0x1000_0000;
const S_ISN: u32 = 0x7000_0000;

impl Ctl {
    /// Opens a connection: SYN, SYN-ACK, ACK. `c` is the client's tuple as it sends.
    fn open(r: &mut Rig, c_side: Side, c: (Ipv4Addr, u16, Ipv4Addr, u16)) -> Ctl {
        Ctl::open_with(r, c_side, c, C_ISN, S_ISN)
    }

    fn open_with(
        r: &mut Rig,
        c_side: Side,
        c: (Ipv4Addr, u16, Ipv4Addr, u16),
        c_isn: u32,
        s_isn: u32,
    ) -> Ctl {
        let (side, syn) = r.pass(c_side, tcp(c.0, c.1, c.2, c.3, c_isn, 0, SYN, b""));
        assert!(syn.syn);
        let s = (syn.src, syn.sport, syn.dst, syn.dport);
        let mut ctl = Ctl {
            c_side,
            s_side: side,
            c,
            s,
            c_seq: c_isn.wrapping_add(1),
            s_seq: s_isn.wrapping_add(1),
            c_rcv: 0,
            s_rcv: syn.seq.wrapping_add(1),
            to_server: Vec::new(),
            to_client: Vec::new(),
        };
        let (_, sa) = r.pass(side, tcp(s.2, s.3, s.0, s.1, s_isn, ctl.s_rcv, SYNACK, b""));
        ctl.c_rcv = sa.seq.wrapping_add(1);
        r.pass(c_side, tcp(c.0, c.1, c.2, c.3, ctl.c_seq, ctl.c_rcv, ACK, b""));
        ctl
    }

    /// The client of an FTP control connection from the inside to an outside server, greeted (the ALG
    /// honours no announcement before the server's greeting).
    fn client_inside(r: &mut Rig, client_port: u16) -> Ctl {
        let mut ctl = Ctl::open(r, Side::Inside, (LAN_HOST, client_port, REMOTE, 21));
        ctl.s_send(r, b"220 ready\r\n");
        ctl
    }

    /// An outside client to the inside server behind `tcp:21=10.0.0.2:21`, greeted.
    fn server_inside(r: &mut Rig, client_port: u16) -> Ctl {
        let mut ctl = Ctl::open(r, Side::Outside, (REMOTE, client_port, PUBLIC, 21));
        ctl.s_send(r, b"220 ready\r\n");
        ctl
    }

    fn deliver(&mut self, out: &[(Side, Vec<u8>)]) {
        for (side, p) in out {
            let s = check(p);
            let to_server = *side == self.s_side && (s.src, s.sport, s.dst, s.dport) == self.s;
            let to_client = *side == self.c_side && (s.dst, s.dport, s.src, s.sport) == self.c;
            let (rcv, buf) = if to_server {
                (&mut self.s_rcv, &mut self.to_server)
            } else if to_client {
                (&mut self.c_rcv, &mut self.to_client)
            } else {
                continue;
            };
            // In-order delivery only, like a receiver with no reassembly queue.
            let end = s.seq.wrapping_add(s.payload.len() as u32);
            let skip = rcv.wrapping_sub(s.seq) as usize;
            if skip < s.payload.len() && (end.wrapping_sub(*rcv) as i32) > 0 {
                buf.extend_from_slice(&s.payload[skip..]);
                *rcv = end;
            }
        }
    }

    /// Client sends `bytes` as one segment; returns the verdict and everything that left.
    fn c_send(&mut self, r: &mut Rig, bytes: &[u8]) -> (Verdict, Vec<(Side, Vec<u8>)>) {
        let c = self.c;
        let pkt = tcp(c.0, c.1, c.2, c.3, self.c_seq, self.c_rcv, PSHACK, bytes);
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        let (v, out) = r.send(self.c_side, pkt);
        self.deliver(&out);
        (v, out)
    }

    fn s_send(&mut self, r: &mut Rig, bytes: &[u8]) -> (Verdict, Vec<(Side, Vec<u8>)>) {
        let s = self.s;
        let pkt = tcp(s.2, s.3, s.0, s.1, self.s_seq, self.s_rcv, PSHACK, bytes);
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        let (v, out) = r.send(self.s_side, pkt);
        self.deliver(&out);
        (v, out)
    }

    /// The last complete line the server received.
    fn last_line_at_server(&self) -> String {
        last_line(&self.to_server)
    }
    fn last_line_at_client(&self) -> String {
        last_line(&self.to_client)
    }

    /// A full PORT exchange that must work: announced, rewritten to the public address, answered 200,
    /// and the server's data SYN reaches the client's announced endpoint. Returns the public port.
    fn good_port(&mut self, r: &mut Rig, data_port: u16) -> u16 {
        let o = self.c.0.octets();
        let line =
            format!("PORT {},{},{},{},{},{}\r\n", o[0], o[1], o[2], o[3], data_port >> 8, data_port & 0xff);
        let rewrites = r.engine.metrics().alg_rewrites_port;
        self.c_send(r, line.as_bytes());
        assert_eq!(r.engine.metrics().alg_rewrites_port, rewrites + 1, "PORT rewritten");
        let got = self.last_line_at_server();
        let (addr, port) = port_arg(&got).unwrap_or_else(|| panic!("server got {got:?}"));
        assert_eq!(addr, PUBLIC, "{got:?}");
        self.s_send(r, b"200 PORT command successful\r\n");
        let (side, syn) = r.pass(Side::Outside, tcp(self.s.2, 20, PUBLIC, port, 9, 0, SYN, b""));
        assert_eq!((side, syn.dst, syn.dport), (Side::Inside, self.c.0, data_port));
        port
    }
}

fn last_line(buf: &[u8]) -> String {
    let s = String::from_utf8_lossy(buf);
    s.trim_end_matches(['\r', '\n']).rsplit('\n').next().unwrap_or("").trim_end_matches('\r').to_string()
}

/// `PORT h1,h2,h3,h4,p1,p2` → address and port.
fn port_arg(line: &str) -> Option<(Ipv4Addr, u16)> {
    let n: Vec<u8> = line.strip_prefix("PORT ")?.split(',').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    (n.len() == 6).then(|| (Ipv4Addr::new(n[0], n[1], n[2], n[3]), u16::from(n[4]) << 8 | u16::from(n[5])))
}

/// `227 ... (h1,h2,h3,h4,p1,p2)` → address and port.
fn pasv_arg(line: &str) -> Option<(Ipv4Addr, u16)> {
    let open = line.find('(')?;
    let close = line[open..].find(')')? + open;
    port_arg(&format!("PORT {}", &line[open + 1..close]))
}

fn server_inside_config() -> Config {
    let mut c = config();
    c.forwards.push("tcp:21=10.0.0.2:21".parse().unwrap());
    c
}

/// An unrelated UDP flow still works both ways (other flows are not collateral damage).
fn other_flow_works(r: &mut Rig) {
    let (_, out) = r.pass(Side::Inside, udp(LAN_HOST2, 5353, REMOTE2, 53, b"q"));
    let (_, back) = r.pass(Side::Outside, udp(REMOTE2, 53, PUBLIC, out.sport, b"a"));
    assert_eq!((back.dst, back.dport), (LAN_HOST2, 5353));
}

/// Sends each line, asserts it reached the server byte-identical, opened no pinhole, and was counted
/// under `reason`; then the control connection still rewrites a good PORT and other flows work.
fn refused_lines(lines: &[&[u8]], reason: RefusalReason) {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40000);
    for (i, &line) in lines.iter().enumerate() {
        let before = ctl.to_server.len();
        ctl.c_send(&mut r, line);
        assert_eq!(
            &ctl.to_server[before..],
            line,
            "{:?} must pass byte-identical",
            String::from_utf8_lossy(line)
        );
        assert_eq!(
            r.engine.metrics().refused_of(reason),
            i as u64 + 1,
            "{:?}",
            String::from_utf8_lossy(line)
        );
        assert!(r.engine.pinholes().is_empty(), "no pinhole for {:?}", String::from_utf8_lossy(line));
        ctl.s_send(&mut r, b"500 Illegal PORT command\r\n");
    }
    assert_eq!(r.engine.metrics().alg_rewrites(), 0);
    ctl.good_port(&mut r, 5001);
    other_flow_works(&mut r);
}

#[test]
fn port_and_eprt_naming_a_third_host_or_another_inside_host_are_refused() {
    refused_lines(
        &[
            b"PORT 198,51,100,3,31,144\r\n",
            b"PORT 10,0,0,3,31,144\r\n",
            b"EPRT |1|198.51.100.3|8080|\r\n",
            b"EPRT |1|10.0.0.3|8080|\r\n",
            // The gateway's own addresses are other hosts too.
            b"PORT 198,51,100,1,31,144\r\n",
            b"PORT 10,0,0,1,31,144\r\n",
            b"PORT 255,255,255,255,31,144\r\n",
        ],
        RefusalReason::ThirdHost,
    );
}

#[test]
fn data_ports_below_1024_are_refused() {
    refused_lines(
        &[
            b"PORT 10,0,0,2,0,21\r\n",
            b"PORT 10,0,0,2,3,255\r\n", // 1023
            b"EPRT |1|10.0.0.2|80|\r\n",
            b"EPRT |1|10.0.0.2|0|\r\n",
            b"PORT 0,0,0,0,0,22\r\n",
        ],
        RefusalReason::LowPort,
    );
    // 1024 is the first port allowed.
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40001);
    ctl.good_port(&mut r, 1024);
}

#[test]
fn numbers_out_of_range_and_overflowing_digit_strings_are_refused() {
    refused_lines(
        &[
            b"PORT 10,0,0,2,256,1\r\n",
            b"PORT 10,0,0,256,4,1\r\n",
            b"PORT 10,0,0,2,4,1000\r\n",
            b"PORT 10,0,0,2,4,18446744073709551617\r\n",
            b"PORT 10,0,0,2,4,340282366920938463463374607431768211457\r\n",
            b"EPRT |1|10.0.0.2|65536|\r\n",
            b"EPRT |1|10.0.0.2|4294967297|\r\n",
            b"EPRT |1|10.0.0.2|18446744073709551617|\r\n",
            b"EPRT |1|10.0.0.258|5000|\r\n",
            b"PORT 10,0,0,2,4,-1\r\n",
            b"PORT 10,0,0,2,4\r\n",
        ],
        RefusalReason::Malformed,
    );
}

#[test]
fn nul_bytes_and_non_ascii_are_refused_or_ignored_never_rewritten() {
    // Lines that are PORT/EPRT candidates but carry NUL or non-ASCII bytes: malformed.
    refused_lines(
        &[
            b"PORT 10,0,0,2,4,1\0\r\n",
            b"PORT 10,0,0,2,4,\xd9\xa1\r\n", // an Arabic-Indic digit is not a digit
            b"PORT 10,0,0,2,4,\xef\xbc\x91\r\n", // fullwidth digit one
            b"EPRT |1|10.0.0.2|5000\0|\r\n",
            b"EPRT \xff1\xff10.0.0.2\xff5000\xff\r\n",
            b"PORT \x0010,0,0,2,4,1\r\n",
        ],
        RefusalReason::Malformed,
    );
    // Lines whose verb is not made of letters are no FTP commands at all (RFC 959 §5.3.1): never
    // rewritten, and the connection is opaque from then on, so even a good PORT after them passes as
    // sent.
    for line in [&b"\0PORT 10,0,0,2,4,1\r\n"[..], b"P\0RT 10,0,0,2,4,1\r\n", b"\xefPORT 10,0,0,2,4,1\r\n"] {
        let mut r = Rig::new(config());
        let mut ctl = Ctl::client_inside(&mut r, 40002);
        ctl.c_send(&mut r, line);
        assert_eq!(ctl.to_server, line);
        let good: &[u8] = b"PORT 10,0,0,2,4,1\r\n";
        ctl.c_send(&mut r, good);
        assert!(ctl.to_server.ends_with(good));
        let m = r.engine.metrics();
        assert_eq!((m.alg_rewrites(), m.refused_of(RefusalReason::NotFtp)), (0, 1));
        assert!(r.engine.pinholes().is_empty());
        other_flow_works(&mut r);
    }
}

#[test]
fn reply_227_or_229_without_a_pending_pasv_is_refused() {
    let mut r = Rig::new(server_inside_config());
    let mut ctl = Ctl::server_inside(&mut r, 50000);
    let unsolicited: [&[u8]; 3] = [
        b"227 Entering Passive Mode (10,0,0,2,4,1)\r\n",
        b"229 Entering Extended Passive Mode (|||1025|)\r\n",
        b"227 Entering Passive Mode (10,0,0,2,4,2)\r\n",
    ];
    for (i, line) in unsolicited.iter().enumerate() {
        if i == 2 {
            // Pending is a PORT, not a PASV: its answer is not a 227.
            ctl.c_send(&mut r, b"PORT 198,51,100,2,4,1\r\n");
        }
        let before = ctl.to_client.len();
        ctl.s_send(&mut r, line);
        assert_eq!(&ctl.to_client[before..], *line, "left byte-identical");
        assert_eq!(r.engine.metrics().refused_of(RefusalReason::Unsolicited), i as u64 + 1);
        assert!(r.engine.pinholes().is_empty());
    }
    // A real PASV still works afterwards.
    ctl.c_send(&mut r, b"PASV\r\n");
    ctl.s_send(&mut r, b"227 Entering Passive Mode (10,0,0,2,4,1)\r\n");
    let (addr, port) = pasv_arg(&ctl.last_line_at_client()).unwrap();
    assert_eq!(addr, PUBLIC);
    let (side, syn) = r.pass(Side::Outside, tcp(REMOTE, 50001, PUBLIC, port, 1, 0, SYN, b""));
    assert_eq!((side, syn.dst, syn.dport), (Side::Inside, LAN_HOST, 1025));
    // The client may not send a 227 "command" and have it rewritten: a client line that is no FTP
    // command (RFC 959 §5.3.1) makes the connection opaque for good.
    let line: &[u8] = b"227 Entering Passive Mode (198,51,100,2,4,1)\r\n";
    ctl.c_send(&mut r, line);
    assert!(ctl.to_server.ends_with(line));
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::NotFtp), 1);
    ctl.c_send(&mut r, b"PASV\r\n");
    let reply: &[u8] = b"227 Entering Passive Mode (10,0,0,2,4,2)\r\n";
    ctl.s_send(&mut r, reply);
    assert!(ctl.to_client.ends_with(reply), "opaque: left as sent");
    assert!(r.engine.pinholes().is_empty());
    other_flow_works(&mut r);
}

#[test]
fn port_text_inside_a_file_name_is_not_an_announcement() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40003);
    for line in [
        &b"RETR PORT 10,0,0,2,4,1\r\n"[..],
        b"STOR PORT 10,0,0,2,4,1\r\n",
        b"CWD \r\nPORT 10,0,0,2,4,1 is a directory\r\n", // two lines: the second is a (malformed) PORT
        b"MKD  PORT 10,0,0,2,4,1\r\n",
        b"SITE EPRT |1|10.0.0.2|5000|\r\n",
    ] {
        let before = ctl.to_server.len();
        ctl.c_send(&mut r, line);
        assert_eq!(&ctl.to_server[before..], line);
    }
    let m = r.engine.metrics();
    assert_eq!(m.alg_rewrites(), 0);
    assert!(r.engine.pinholes().is_empty());
    // Only the real line start was judged (and refused as malformed: trailing text).
    assert_eq!(m.refused_of(RefusalReason::Malformed), 1);
    ctl.good_port(&mut r, 5003);
}

#[test]
fn announcement_inside_a_multi_line_reply_is_not_honoured() {
    let mut r = Rig::new(server_inside_config());
    let mut ctl = Ctl::server_inside(&mut r, 50002);
    ctl.c_send(&mut r, b"PASV\r\n");
    // RFC 959 §4.2: inside a multi-line reply, a line starting with a code is text unless it ends the
    // reply (same code, then SP).
    let reply: &[u8] =
        b"211-status follows\r\n227 Entering Passive Mode (10,0,0,2,4,1)\r\n229 (|||1025|)\r\n211 end\r\n";
    let before = ctl.to_client.len();
    ctl.s_send(&mut r, reply);
    assert_eq!(&ctl.to_client[before..], reply);
    assert!(r.engine.pinholes().is_empty());
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::Unsolicited), 2);
    // The 211 consumed the pending PASV: the next PASV works.
    ctl.c_send(&mut r, b"PASV\r\n");
    ctl.s_send(&mut r, b"227 Entering Passive Mode (10,0,0,2,4,2)\r\n");
    assert_eq!(pasv_arg(&ctl.last_line_at_client()).unwrap().0, PUBLIC);
    assert_eq!(r.engine.pinholes().len(), 1);
    // In the other topology the server's replies travel WAN→LAN and are never rewritten at all.
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40004);
    ctl.c_send(&mut r, b"PASV\r\n");
    let line: &[u8] = b"227 Entering Passive Mode (198,51,100,2,4,1)\r\n";
    ctl.s_send(&mut r, line);
    assert!(ctl.to_client.ends_with(line));
    assert_eq!(r.engine.metrics().alg_rewrites(), 0);
}

#[test]
fn port_text_inside_a_data_connection_is_not_an_announcement() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40005);
    let public_port = ctl.good_port(&mut r, 5004);
    // The data connection the server opened: outside 198.51.100.2:20 → inside 10.0.0.2:5004.
    let (_, sa) = r.pass(Side::Inside, tcp(LAN_HOST, 5004, REMOTE, 20, 77, 10, SYNACK, b""));
    assert_eq!(sa.sport, public_port);
    let data: &[u8] =
        b"PORT 10,0,0,2,4,1\r\n227 Entering Passive Mode (10,0,0,2,4,1)\r\nEPRT |1|10.0.0.2|5000|\r\n";
    for (side, pkt) in [
        (Side::Inside, tcp(LAN_HOST, 5004, REMOTE, 20, 78, 10, PSHACK, data)),
        (Side::Outside, tcp(REMOTE, 20, PUBLIC, public_port, 10, 78, PSHACK, data)),
    ] {
        let (_, s) = r.pass(side, pkt);
        assert_eq!(s.payload, data);
    }
    // Nor inside any other TCP connection, e.g. to a web server.
    let (_, s) = r.pass(Side::Inside, tcp(LAN_HOST, 41000, REMOTE, 80, 1, 1, PSHACK, data));
    assert_eq!(s.payload, data);
    let m = r.engine.metrics();
    assert_eq!((m.alg_rewrites(), r.engine.pinholes().len()), (1, 0));
    ctl.good_port(&mut r, 5005);
}

#[test]
fn nat_slipstreaming_alignment_does_not_make_a_line_start() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40006);
    // Padding so that "PORT ..." starts a TCP segment in the middle of a line (the attacker chose the
    // segment boundary, as a browser's POST body can).
    let pad = vec![b'A'; 1000];
    let mut first = b"USER ".to_vec();
    first.extend_from_slice(&pad);
    ctl.c_send(&mut r, &first);
    ctl.c_send(&mut r, b"PORT 10,0,0,2,4,1\r\n");
    // And across a boundary chosen to split inside the verb.
    ctl.c_send(&mut r, b"NOOP xP");
    ctl.c_send(&mut r, b"ORT 10,0,0,2,4,1\r\n");
    // An HTTP-like body sent to the FTP port: no line in it is a PORT at a line start except the last.
    let mut body = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec();
    body.extend_from_slice(b"xxxxPORT 10,0,0,2,4,1\r\n");
    ctl.c_send(&mut r, &body);
    let m = r.engine.metrics();
    assert_eq!(m.alg_rewrites(), 0);
    assert!(r.engine.pinholes().is_empty());
    assert!(ctl.to_server.ends_with(b"xxxxPORT 10,0,0,2,4,1\r\n"));
    // A connection picked up mid-stream (the gateway restarted): the first bytes are not known to be a
    // line start, so a PORT there is not trusted either.
    let mut r = Rig::new(config());
    let (_, s) =
        r.pass(Side::Inside, tcp(LAN_HOST, 40007, REMOTE, 21, 5000, 9, PSHACK, b"PORT 10,0,0,2,4,1\r\n"));
    assert_eq!(s.payload, b"PORT 10,0,0,2,4,1\r\n");
    assert!(r.engine.pinholes().is_empty());
    // After a line end it is in sync again.
    let (_, s) =
        r.pass(Side::Inside, tcp(LAN_HOST, 40007, REMOTE, 21, 5019, 9, PSHACK, b"PORT 10,0,0,2,4,1\r\n"));
    assert!(s.payload.starts_with(b"PORT 198,51,100,1,"), "{:?}", String::from_utf8_lossy(&s.payload));
}

#[test]
fn overlong_candidate_lines_are_released_not_buffered() {
    let mut c = config();
    c.ftp.max_line = 128;
    let mut r = Rig::new(c);
    let mut ctl = Ctl::client_inside(&mut r, 40008);
    // A PORT line that never ends, 40 KB in 100-byte segments: the gateway holds at most a line's worth.
    let mut sent = b"PORT ".to_vec();
    ctl.c_send(&mut r, b"PORT ");
    for i in 0..400 {
        let chunk = if i % 2 == 0 { [b'1'; 100] } else { [b','; 100] };
        ctl.c_send(&mut r, &chunk);
        sent.extend_from_slice(&chunk);
        let held: usize = r
            .engine
            .table()
            .iter()
            .filter_map(|(_, c)| c.alg.as_ref())
            .map(|a| a.stream.held_len(ftpnat::flow::Dir::Original))
            .sum();
        assert!(held <= 128, "held {held} bytes");
    }
    ctl.c_send(&mut r, b"\r\n");
    sent.extend_from_slice(b"\r\n");
    assert_eq!(ctl.to_server, sent, "every byte passed, unchanged");
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::Overlong), 1);
    // A valid announcement padded past the limit is refused as overlong, left as sent.
    let mut long = b"PORT 10,0,0,2,4,1".to_vec();
    long.extend(std::iter::repeat_n(b' ', 200));
    long.extend_from_slice(b"\r\n");
    let before = ctl.to_server.len();
    ctl.c_send(&mut r, &long);
    assert_eq!(&ctl.to_server[before..], &long[..]);
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::Overlong), 2);
    assert!(r.engine.pinholes().is_empty());
    ctl.good_port(&mut r, 5006);
}

#[test]
fn a_hold_that_never_completes_is_released_as_sent_and_counted() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40009);
    let (v, out) = ctl.c_send(&mut r, b"PORT 10,0,0,2,4");
    // Held: nothing of the candidate leaves yet (the ACK-only shell may).
    assert!(matches!(v, Verdict::Forward(_)));
    assert!(out.iter().all(|(_, p)| check(p).payload.is_empty()));
    assert!(ctl.to_server.is_empty());
    assert!(r.engine.poll_timeout().is_some());
    // Time passes: the hold limit (2 s) releases the bytes as they were.
    r.now = r.now + core::time::Duration::from_secs(3);
    r.engine.handle_timeout(r.now);
    let mut released = Vec::new();
    while let Some(t) = r.engine.poll_transmit() {
        check(&t.packet);
        released.push((t.side, t.packet));
    }
    ctl.deliver(&released);
    assert_eq!(ctl.to_server, b"PORT 10,0,0,2,4");
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::HoldTimeout), 1);
    // The rest of the line is no longer a candidate: not rewritten, no pinhole.
    ctl.c_send(&mut r, b",1\r\n");
    assert_eq!(ctl.to_server, b"PORT 10,0,0,2,4,1\r\n");
    assert!(r.engine.pinholes().is_empty());
    // No busy loop: nothing more is due.
    assert!(r.engine.poll_timeout().is_none_or(|t| t > r.now));
    ctl.s_send(&mut r, b"200 ok\r\n");
    ctl.good_port(&mut r, 5007);
}

#[test]
fn a_pinhole_admits_exactly_one_syn_from_the_announced_peer_before_expiry() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40010);
    ctl.c_send(&mut r, b"PORT 10,0,0,2,19,137\r\n");
    let (_, port) = port_arg(&ctl.last_line_at_server()).unwrap();
    ctl.s_send(&mut r, b"200 ok\r\n");
    // Wrong source address: filtered, and the pinhole stays for the right one.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE2, 20, PUBLIC, port, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::Filtered));
    // A non-SYN from the right peer: refused, pinhole stays.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, PUBLIC, port, 1, 1, ACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    let syn_ack = Flags { syn: true, ack: true, ..Default::default() };
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, PUBLIC, port, 1, 1, syn_ack, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    assert_eq!(r.engine.pinholes().len(), 1);
    // The right SYN: used once.
    let (side, s) = r.pass(Side::Outside, tcp(REMOTE, 20, PUBLIC, port, 1, 0, SYN, b""));
    assert_eq!((side, s.dst, s.dport), (Side::Inside, LAN_HOST, 19 * 256 + 137));
    assert!(r.engine.pinholes().is_empty());
    // Used twice: another SYN from the same peer on another source port is not admitted.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 21000, PUBLIC, port, 5, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::Filtered));
    let m = r.engine.metrics();
    assert_eq!((m.pinholes_created, m.pinholes_used), (1, 1));
    assert_eq!(m.drops_of(DropReason::Filtered), 2);
    assert_eq!(m.drops_of(DropReason::NotSyn), 2);
    // After expiry: a new announcement's pinhole is gone at 60 s, and a SYN then finds nothing.
    ctl.c_send(&mut r, b"PORT 10,0,0,2,19,138\r\n");
    let (_, port2) = port_arg(&ctl.last_line_at_server()).unwrap();
    ctl.s_send(&mut r, b"200 ok\r\n");
    r.advance(61);
    assert_eq!(r.engine.metrics().pinholes_expired, 1);
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, PUBLIC, port2, 1, 0, SYN, b""));
    assert!(matches!(v, Verdict::Drop(DropReason::NoMapping | DropReason::Filtered)), "{v:?}");
    assert_eq!(r.engine.metrics().pinholes_used, 1);
    // The control connection is fine.
    ctl.good_port(&mut r, 5008);
    other_flow_works(&mut r);
}

#[test]
fn server_refusal_removes_the_pinhole_at_once() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40011);
    ctl.c_send(&mut r, b"PORT 10,0,0,2,19,139\r\n");
    let (_, port) = port_arg(&ctl.last_line_at_server()).unwrap();
    assert_eq!(r.engine.pinholes().len(), 1);
    ctl.s_send(&mut r, b"500 Illegal PORT command\r\n");
    assert!(r.engine.pinholes().is_empty());
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, PUBLIC, port, 1, 0, SYN, b""));
    assert!(matches!(v, Verdict::Drop(_)));
    assert_eq!(r.engine.metrics().pinholes_refused_by_server, 1);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[test]
fn pass_and_acct_arguments_never_reach_the_logs_at_any_level() {
    let cap = Capture::default();
    for json in [false, true] {
        let builder =
            tracing_subscriber::fmt().with_writer(cap.clone()).with_max_level(tracing::Level::TRACE);
        let run = || {
            let mut r = Rig::new(config());
            let mut ctl = Ctl::client_inside(&mut r, 40012 + json as u16);
            ctl.c_send(&mut r, b"USER alice\r\n");
            ctl.s_send(&mut r, b"331 password please\r\n");
            ctl.c_send(&mut r, b"PASS Sup3rS3cretPw\r\n");
            // Split across segments, lower case, a tab separator, Telnet IAC in front.
            ctl.c_send(&mut r, b"pass Sp1itSec");
            ctl.c_send(&mut r, b"retPw\r\n");
            ctl.c_send(&mut r, b"PASS\tTabbedSecretPw\r\n");
            ctl.c_send(&mut r, b"\xff\xf4PASS IacSecretPw\r\n");
            ctl.c_send(&mut r, b"ACCT AcctSecretPw\r\n");
            // And in a refused line, which is logged at warn.
            ctl.c_send(&mut r, b"PORT 198,51,100,3,4,1\r\n");
            ctl.good_port(&mut r, 5009);
            // The drop log at debug level carries packets: payload must not be in it.
            let c = ctl.c;
            r.send(
                Side::Inside,
                tcp(c.0, c.1, c.2, c.3, ctl.c_seq.wrapping_add(100_000), 1, PSHACK, b"PASS GapSecretPw\r\n"),
            );
        };
        if json {
            tracing::subscriber::with_default(builder.json().finish(), run);
        } else {
            tracing::subscriber::with_default(builder.finish(), run);
        }
    }
    let logs = String::from_utf8_lossy(&cap.0.lock().unwrap()).into_owned();
    for secret in
        ["Sup3rS3cretPw", "Sp1itSec", "retPw", "TabbedSecretPw", "IacSecretPw", "AcctSecretPw", "GapSecretPw"]
    {
        assert!(!logs.contains(secret), "{secret} appears in the logs");
    }
    // The logs are not simply empty: the commands were traced, redacted.
    assert!(logs.contains("PASS ****"), "{logs}");
    assert!(logs.contains("ACCT ****"));
    assert!(logs.contains("USER alice"));
}

#[test]
fn control_connection_reopened_on_the_same_ports_is_a_new_stream() {
    // A client that reconnects from the same source port right after an RST (or after both FINs, within
    // the closed-state timeout) starts a new byte stream with a new ISN: the old edit history and line
    // framing must not apply to it.
    for close_with_fin in [false, true] {
        let mut r = Rig::new(config());
        let mut ctl = Ctl::client_inside(&mut r, 40020);
        ctl.good_port(&mut r, 5010); // lengthens the line: the old stream has a sequence delta
        let c = ctl.c;
        let s = ctl.s;
        if close_with_fin {
            let fin = Flags { fin: true, ack: true, ..Default::default() };
            r.pass(Side::Inside, tcp(c.0, c.1, c.2, c.3, ctl.c_seq, ctl.c_rcv, fin, b""));
            r.pass(Side::Outside, tcp(s.2, s.3, s.0, s.1, ctl.s_seq, ctl.s_rcv.wrapping_add(1), fin, b""));
        } else {
            let rst = Flags { rst: true, ack: true, ..Default::default() };
            r.pass(Side::Inside, tcp(c.0, c.1, c.2, c.3, ctl.c_seq, ctl.c_rcv, rst, b""));
        }
        r.advance(1);
        let mut again = Ctl::open_with(&mut r, Side::Inside, c, 0x3000_0000, 0x5000_0000);
        assert_eq!(again.s_rcv, 0x3000_0001, "the new SYN keeps its own sequence number");
        again.s_send(&mut r, b"220 ready again\r\n");
        assert_eq!(again.to_client, b"220 ready again\r\n");
        again.c_send(&mut r, b"USER bob\r\n");
        assert_eq!(again.to_server, b"USER bob\r\n", "fin {close_with_fin}");
        again.good_port(&mut r, 5011);
    }
}

#[test]
fn tls_and_ccc_switches_do_not_make_a_line_start_mid_line() {
    // NAT Slipstreaming through a mode switch: a browser made to send "AUTH TLS" or "CCC" to an
    // attacker's server on port 21, which answers 234 / 200; the browser's next segment starts with
    // "PORT ..." in the middle of a line. The ALG must not take it for a line start.
    for (switch, answer) in [(&b"AUTH TLS\r\n"[..], &b"234 go\r\n"[..]), (b"CCC\r\n", b"200 ok\r\n")] {
        let mut r = Rig::new(config());
        let mut ctl = Ctl::client_inside(&mut r, 40030);
        let mut first = switch.to_vec();
        first.extend_from_slice(b"Content-Type: text/plain xxxx");
        ctl.c_send(&mut r, &first);
        ctl.s_send(&mut r, answer);
        ctl.c_send(&mut r, b"PORT 10,0,0,2,13,61\r\n");
        let mut sent = first.clone();
        sent.extend_from_slice(b"PORT 10,0,0,2,13,61\r\n");
        assert_eq!(ctl.to_server, sent, "{:?}", String::from_utf8_lossy(switch));
        assert!(r.engine.pinholes().is_empty(), "{:?} opened a pinhole", String::from_utf8_lossy(switch));
        assert_eq!(r.engine.metrics().alg_rewrites(), 0);
    }
}

#[test]
fn a_candidate_held_when_tls_starts_leaves_in_order() {
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40031);
    // A pipelined, incomplete PORT line is held when the server accepts AUTH TLS.
    ctl.c_send(&mut r, b"AUTH TLS\r\nPORT 10,0,0,2,");
    ctl.s_send(&mut r, b"234 go\r\n");
    let hello = [0x16, 0x03, 0x01, 0x00, 0x02, 0xaa, 0xbb];
    ctl.c_send(&mut r, &hello);
    let mut want = b"AUTH TLS\r\nPORT 10,0,0,2,".to_vec();
    want.extend_from_slice(&hello);
    assert_eq!(ctl.to_server, want, "every byte once, in order");
    assert!(r.engine.pinholes().is_empty());
}

#[test]
fn a_control_segment_with_a_bad_tcp_checksum_is_not_read_or_re_checksummed() {
    // The ALG rebuilds (and re-checksums) segments whose bytes it changes. A segment corrupted on the way
    // in must not be read and sent on with a fresh, valid checksum: the receiver would accept corrupt
    // bytes, and the sender's good retransmission would be rebuilt from the corrupt history.
    let mut r = Rig::new(config());
    let mut ctl = Ctl::client_inside(&mut r, 40040);
    let c = ctl.c;
    let mut bad = tcp(c.0, c.1, c.2, c.3, ctl.c_seq, ctl.c_rcv, PSHACK, b"PORT 10,0,0,2,4,1\r\n");
    let n = bad.len();
    bad[n - 3] ^= 0x02; // "4,1" -> "4,3" in flight; the TCP checksum no longer matches
    let (v, _) = r.send(Side::Inside, bad);
    assert_eq!(v, Verdict::Drop(DropReason::AlgBadChecksum));
    assert!(r.engine.pinholes().is_empty());
    // The sender's retransmission (the bytes it really sent) is read as if the first never came.
    ctl.c_send(&mut r, b"PORT 10,0,0,2,4,1\r\n");
    let (addr, _) = port_arg(&ctl.last_line_at_server()).unwrap();
    assert_eq!(addr, PUBLIC);
    assert_eq!(r.engine.pinholes().iter().next().map(|p| p.inside.port), Some(1025));
}
