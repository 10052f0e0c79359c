//! TCP state that cannot be lied to (issue 11), from the attacker's side: an off-path host that knows a
//! connection's 4-tuple but not its sequence numbers sends RSTs, FINs, ACKs and SACKs; an inside host
//! answers an inbound opening the gateway refused; a forwarded session is picked up from the outside.
//! Each test checks the flows, the counters and the exact bytes on both sides.
//!
//! Owns: these scenarios, driven packet by packet through `engine_support::Rig` (every emitted packet
//! checked by etherparse). Must not: reach into the engine beyond its public accessors.

mod engine_support;

use std::net::Ipv4Addr;

use engine_support::*;
use etherparse::{PacketBuilder, TcpOptionElement};
use ftpnat::conntrack::TcpState;
use ftpnat::flow::{Dir, Endpoint, Proto};
use ftpnat::{DropReason, Side, Verdict};

const C_ISN: u32 = 0x1000_0000;
const S_ISN: u32 = 0x7000_0000;
const RST: Flags = Flags { syn: false, ack: false, fin: false, rst: true, psh: false };
const RSTACK: Flags = Flags { syn: false, ack: true, fin: false, rst: true, psh: false };
const FINACK: Flags = Flags { syn: false, ack: true, fin: true, rst: false, psh: false };

/// A TCP segment with options (SACK blocks).
#[allow(clippy::too_many_arguments)]
fn tcp_opts(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, seq, 64_000)
        .ack(ack)
        .options(opts)
        .expect("options fit");
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// An established connection 10.0.0.2:`cport` -> REMOTE:`sport`, some data each way. Returns the
/// next sequence number of the client and of the server.
fn established(r: &mut Rig, cport: u16, sport: u16) -> (u32, u32) {
    r.pass(Side::Inside, tcp(LAN_HOST, cport, REMOTE, sport, C_ISN, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, sport, PUBLIC, cport, S_ISN, C_ISN + 1, SYNACK, b""));
    r.pass(Side::Inside, tcp(LAN_HOST, cport, REMOTE, sport, C_ISN + 1, S_ISN + 1, ACK, b""));
    let req = b"GET / HTTP/1.0\r\n\r\n";
    r.pass(Side::Inside, tcp(LAN_HOST, cport, REMOTE, sport, C_ISN + 1, S_ISN + 1, PSHACK, req));
    let c = C_ISN + 1 + req.len() as u32;
    r.pass(Side::Outside, tcp(REMOTE, sport, PUBLIC, cport, S_ISN + 1, c, PSHACK, &[b'x'; 1000]));
    let s = S_ISN + 1 + 1000;
    r.pass(Side::Inside, tcp(LAN_HOST, cport, REMOTE, sport, c, s, ACK, b""));
    (c, s)
}

/// The one connection's TCP state and expiry.
fn state(r: &Rig) -> (TcpState, ftpnat::Instant) {
    let (_, c) = r.engine.table().iter().next().expect("a connection");
    (c.tcp(), c.expires())
}

/// Spoofed segments an off-path attacker sends from REMOTE:80 to PUBLIC:40000 with sequence numbers
/// it cannot know: far ahead, far behind, half the space away.
fn blind_seqs(next: u32) -> [u32; 4] {
    [
        next.wrapping_add(100_000_000),
        next.wrapping_sub(100_000_000),
        next.wrapping_add(1 << 31),
        next ^ 0x5a5a_5a5a,
    ]
}

#[test]
fn spoofed_rst_outside_the_window_changes_nothing() {
    let mut r = Rig::new(config());
    let (c, s) = established(&mut r, 40000, 80);
    let before = state(&r);
    assert_eq!(before.0, TcpState::Established);
    r.advance(5);
    for seq in blind_seqs(s) {
        for f in [RST, RSTACK] {
            let (v, out) = r.send(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, seq, 12345, f, b""));
            assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow), "RST seq {seq:#x}");
            assert!(out.is_empty(), "nothing reaches the inside host");
        }
    }
    // No close, no timeout change.
    assert_eq!(state(&r), before);
    let m = r.engine.metrics();
    assert_eq!((m.flows_closed, m.drops_of(DropReason::TcpOutOfWindow)), (0, 8));
    // The real connection goes on, both ways, byte for byte.
    let (_, got) = r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, s, c, PSHACK, b"more"));
    assert_eq!((got.dst, got.dport, got.seq, got.payload), (LAN_HOST, 40000, s, b"more".to_vec()));
    let (_, got) = r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 80, c, s + 4, ACK, b""));
    assert_eq!((got.src, got.ack), (PUBLIC, s + 4));
    // It keeps the established timeout (RFC 5382 REQ-5): still there after 2 hours.
    r.advance(2 * 3600);
    assert_eq!(r.engine.flow_count(), 1);
}

#[test]
fn spoofed_rst_in_the_window_but_not_exact_is_passed_unchanged_and_changes_nothing() {
    let mut r = Rig::new(config());
    let (c, s) = established(&mut r, 40000, 80);
    let before = state(&r);
    r.advance(5);
    // RFC 5961 §3.2: in the window but not RCV.NXT (s): the receiver answers with a challenge ACK.
    let (side, got) = r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, s + 1000, 0, RST, b""));
    assert_eq!((side, got.dst, got.dport, got.seq), (Side::Inside, LAN_HOST, 40000, s + 1000));
    assert_eq!(state(&r), before, "no close, no timeout change");
    assert_eq!(r.engine.metrics().tcp_rst_ignored, 1);
    // The inside host's challenge ACK goes out; a real peer that did reset answers it with an exact RST.
    let (_, ch) = r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 80, c, s, ACK, b""));
    assert_eq!((ch.src, ch.seq, ch.ack), (PUBLIC, c, s));
    r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, s, 0, RST, b""));
    assert_eq!(state(&r).0, TcpState::Reset);
    assert_eq!(r.engine.metrics().flows_closed, 1);
}

#[test]
fn exact_rst_keeps_the_mapping_four_minutes_then_a_new_syn_may_reopen_it() {
    let mut c = config();
    c.port_range = 1024..=1024;
    let mut r = Rig::new(c);
    let (c, s) = established(&mut r, 1024, 80);
    r.pass(Side::Inside, tcp(LAN_HOST, 1024, REMOTE, 80, c, s, RSTACK, b""));
    assert_eq!(state(&r).0, TcpState::Reset);
    // RFC 7857 §2.2: the mapping (public port 1024, the only one) stays; another inside host wanting a
    // new mapping finds no port.
    r.advance(200);
    let (v, _) = r.send(Side::Inside, tcp(LAN_HOST2, 1024, REMOTE, 81, 5, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::PortsExhausted));
    // A new SYN on the same 4-tuple reopens it at once (RFC 9293 §3.10.7.4), as a new connection.
    let (_, syn) = r.pass(Side::Inside, tcp(LAN_HOST, 1024, REMOTE, 80, 0x4444_0000, 0, SYN, b""));
    assert_eq!((syn.sport, syn.seq), (1024, 0x4444_0000));
    assert_eq!(state(&r).0, TcpState::SynSent);
    // After 4 minutes without packets the mapping goes, and its port is free again.
    r.pass(Side::Inside, tcp(LAN_HOST, 1024, REMOTE, 80, 0x4444_0001, 0, RST, b""));
    r.advance(241);
    assert_eq!(r.engine.flow_count(), 0);
    r.pass(Side::Inside, tcp(LAN_HOST2, 1024, REMOTE, 81, 5, 0, SYN, b""));
}

#[test]
fn spoofed_fin_outside_the_window_keeps_the_established_timeout() {
    let mut r = Rig::new(config());
    let (c, s) = established(&mut r, 40000, 80);
    let before = state(&r);
    for seq in blind_seqs(s) {
        let (v, _) = r.send(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, seq, c, FINACK, b""));
        assert!(
            matches!(v, Verdict::Drop(DropReason::TcpOutOfWindow) | Verdict::Forward(Side::Inside)),
            "{v:?}"
        );
    }
    // A FIN with the right sequence number but an acknowledgement of bytes the client never sent.
    let (v, _) =
        r.send(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, s, c.wrapping_add(1_000_000), FINACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow));
    assert_eq!(state(&r), before, "still ESTABLISHED with its 2 h 4 min timeout");
    // The real FIN: transitory timeout.
    r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, s, c, FINACK, b""));
    assert_eq!(state(&r).0, TcpState::FinWait);
}

#[test]
fn blind_ack_far_ahead_on_a_rewritten_control_connection_prunes_nothing() {
    let mut r = Rig::new(config());
    let mut s_next = ftp_open(&mut r, LAN_HOST, 40100);
    let mut c_next = 2u32;
    // A PORT the gateway makes 4 bytes longer: the control connection has a sequence delta in force.
    let line = b"PORT 10,0,0,2,160,40\r\n";
    let (_, out) = r.pass(Side::Inside, tcp(LAN_HOST, 40100, REMOTE, 21, c_next, s_next, PSHACK, line));
    assert!(out.payload.starts_with(b"PORT 198,51,100,1,"));
    let grown = out.payload.len() as u32 - line.len() as u32;
    c_next += line.len() as u32;
    let edits = |r: &Rig| {
        let (_, conn) = r.engine.table().iter().find(|(_, c)| c.alg.is_some()).unwrap();
        let m = &conn.alg.as_ref().unwrap().stream.seq_map(Dir::Original);
        (m.edits_in_flight(), m.horizon())
    };
    let before = edits(&r);
    assert_eq!(before.0, 1);
    // The attacker (spoofing the server) acknowledges next + 10^8, with the server's right sequence
    // number even: beyond anything the client sent.
    let spoof = tcp(REMOTE, 21, PUBLIC, 40100, s_next, c_next + grown + 100_000_000, ACK, b"");
    let (v, out) = r.send(Side::Outside, spoof);
    assert_eq!((v, out.len()), (Verdict::Drop(DropReason::TcpOutOfWindow), 0));
    assert_eq!(edits(&r), before, "no prune of the edit history, no move of the horizon");
    // The control connection still carries every command, byte for byte.
    for _ in 0..3 {
        let (_, out) =
            r.pass(Side::Inside, tcp(LAN_HOST, 40100, REMOTE, 21, c_next, s_next, PSHACK, b"NOOP\r\n"));
        assert_eq!((out.payload.as_slice(), out.seq), (&b"NOOP\r\n"[..], c_next + grown));
        c_next += 6;
        let reply = b"200 NOOP ok.\r\n";
        let (_, back) =
            r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, 40100, s_next, c_next + grown, PSHACK, reply));
        assert_eq!((back.payload.as_slice(), back.ack), (&reply[..], c_next));
        s_next += reply.len() as u32;
    }
    assert_eq!(r.engine.metrics().drops_of(DropReason::TcpOutOfWindow), 1);
}

#[test]
fn sack_blocks_beyond_what_was_sent_are_mapped_and_not_acted_on() {
    let mut r = Rig::new(config());
    let s_next = ftp_open(&mut r, LAN_HOST, 40101);
    let line = b"PORT 10,0,0,2,160,41\r\n";
    let (_, out) = r.pass(Side::Inside, tcp(LAN_HOST, 40101, REMOTE, 21, 2, s_next, PSHACK, line));
    let grown = out.payload.len() as u32 - line.len() as u32;
    let c_end = 2 + line.len() as u32;
    // A real ACK of the line, carrying D-SACK/SACK blocks (two options) far beyond anything sent.
    let far = c_end + grown + 50_000_000;
    let opts = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement((far, far + 10), [None, None, None]),
        TcpOptionElement::SelectiveAcknowledgement((far + 20, far + 30), [None, None, None]),
    ];
    let (v, out) =
        r.send(Side::Outside, tcp_opts(REMOTE, 21, PUBLIC, 40101, s_next, c_end + grown, &opts, b""));
    assert_eq!((v, out.len()), (Verdict::Forward(Side::Inside), 1));
    assert_eq!(check(&out[0].1).ack, c_end);
    // Every block of both options comes back in the client's space (past the edit: by its delta).
    let blocks = sack_blocks(&out[0].1);
    assert_eq!(blocks, vec![(far - grown, far + 10 - grown), (far + 20 - grown, far + 30 - grown)]);
    // The edit was acknowledged (the ACK is in the window): pruned, no more.
    let (_, conn) = r.engine.table().iter().find(|(_, c)| c.alg.is_some()).unwrap();
    let m = &conn.alg.as_ref().unwrap().stream.seq_map(Dir::Original);
    assert_eq!((m.edits_in_flight(), m.horizon().map(|h| h.get())), (0, Some(c_end)));
}

/// Every SACK block of every SACK option of a packet, as etherparse reads them.
fn sack_blocks(pkt: &[u8]) -> Vec<(u32, u32)> {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(pkt).unwrap();
    let t = etherparse::TcpHeaderSlice::from_slice(&pkt[ip.slice().len()..]).unwrap();
    let mut v = Vec::new();
    for o in t.options_iterator() {
        if let Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) = o {
            v.push(first);
            v.extend(rest.iter().flatten());
        }
    }
    v
}

#[test]
fn refused_inbound_opening_answered_by_the_inside_host_opens_nothing() {
    let mut r = Rig::new(config());
    // An outside host opens towards public port 8080: nothing is mapped there.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 33333, PUBLIC, 8080, 500, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    // The inside host answers anyway (a recording of a flat network, a second path): SYN-ACK, ACK,
    // data, FIN, RST. None of it crosses, none of it opens a mapping.
    let answers = [
        tcp(LAN_HOST, 8080, REMOTE, 33333, 900, 501, SYNACK, b""),
        tcp(LAN_HOST, 8080, REMOTE, 33333, 901, 501, ACK, b""),
        tcp(LAN_HOST, 8080, REMOTE, 33333, 901, 501, PSHACK, b"220 welcome\r\n"),
        tcp(LAN_HOST, 8080, REMOTE, 33333, 914, 501, FINACK, b""),
        tcp(LAN_HOST, 8080, REMOTE, 33333, 915, 501, RSTACK, b""),
    ];
    for a in answers {
        let (v, out) = r.send(Side::Inside, a);
        assert_eq!((v, out.len()), (Verdict::Drop(DropReason::RefusedFlow), 0));
    }
    assert_eq!(r.engine.flow_count(), 0);
    assert_eq!(r.engine.nat().lookup(Proto::Tcp, Endpoint::new(LAN_HOST, 8080)), None);
    // The outside host's next packets find nothing either.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 33333, PUBLIC, 8080, 501, 901, PSHACK, b"USER x\r\n"));
    assert!(matches!(v, Verdict::Drop(DropReason::NoMapping)), "{v:?}");
    let (v, _) = r.send(Side::Inside, tcp(LAN_HOST, 8080, REMOTE, 33333, 914, 509, ACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::RefusedFlow));
    let m = r.engine.metrics();
    assert_eq!((m.drops_of(DropReason::RefusedFlow), m.flows_created), (6, 0));
    // Other remotes and ports are not affected: a connection the gateway never refused is still
    // picked up mid-stream from the inside.
    r.pass(Side::Inside, tcp(LAN_HOST, 8080, REMOTE2, 33333, 77, 88, PSHACK, b"hi"));
    // A fresh SYN from the inside host on the refused ports is an opening of its own.
    r.pass(Side::Inside, tcp(LAN_HOST, 8080, REMOTE, 33333, 7000, 0, SYN, b""));
    // After two minutes of silence the refusal is forgotten (pickup works again).
    let mut r = Rig::new(config());
    r.send(Side::Outside, tcp(REMOTE, 33334, PUBLIC, 8081, 500, 0, SYN, b""));
    r.advance(121);
    r.pass(Side::Inside, tcp(LAN_HOST, 8081, REMOTE, 33334, 901, 501, ACK, b""));
}

#[test]
fn a_refused_data_connection_nobody_announced_never_crosses() {
    // The second half of the "refused, then picked up" attack on a control connection: the server
    // opens a data connection to an inside port nobody announced; the client host answers it.
    let mut r = Rig::new(config());
    let s_next = ftp_open(&mut r, LAN_HOST, 40200);
    let _ = s_next;
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 20, PUBLIC, 50123, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    for (seq, f, p) in [(100, SYNACK, &b""[..]), (101, ACK, b""), (101, PSHACK, &[7u8; 500][..])] {
        let (v, out) = r.send(Side::Inside, tcp(LAN_HOST, 50123, REMOTE, 20, seq, 2, f, p));
        assert_eq!((v, out.len()), (Verdict::Drop(DropReason::RefusedFlow), 0));
    }
    assert_eq!(r.engine.flow_count(), 1, "only the control connection");
}

#[test]
fn forwarded_session_in_progress_is_picked_up_from_the_outside() {
    let mut c = config();
    c.forwards.push("tcp:2121=10.0.0.5:21".parse().unwrap());
    c.forwards.push("tcp:8443=10.0.0.5:443".parse().unwrap());
    // The gateway (re)starts: a fresh engine under sessions already running.
    let mut r = Rig::new(c);
    let server = Ipv4Addr::new(10, 0, 0, 5);
    // Plain TCP: the client's next data segment arrives first.
    let (side, got) = r.pass(Side::Outside, tcp(REMOTE, 51000, PUBLIC, 8443, 7000, 9000, PSHACK, b"tls..."));
    assert_eq!((side, got.dst, got.dport, got.payload), (Side::Inside, server, 443, b"tls...".to_vec()));
    let (side, got) = r.pass(Side::Inside, tcp(server, 443, REMOTE, 51000, 9000, 7006, PSHACK, b"answer"));
    assert_eq!((side, got.src, got.sport), (Side::Outside, PUBLIC, 8443));
    // The picked-up connection learned its window from both sides: blind packets are still refused.
    for seq in blind_seqs(7006) {
        let (v, _) = r.send(Side::Outside, tcp(REMOTE, 51000, PUBLIC, 8443, seq, 9006, RST, b""));
        assert!(matches!(v, Verdict::Drop(DropReason::TcpOutOfWindow)), "{v:?}");
    }
    assert_eq!(r.engine.flow_count(), 1);
    // An FTP control connection through the forward: picked up with its ALG. The first lines are not
    // known to start at a line start; after one, announcements are rewritten.
    let c = |seq, ack, p: &[u8]| tcp(REMOTE, 52000, PUBLIC, 2121, seq, ack, PSHACK, p);
    let s = |seq, ack, p: &[u8]| tcp(server, 21, REMOTE, 52000, seq, ack, PSHACK, p);
    let (side, got) = r.pass(Side::Outside, c(100, 500, b"NOOP\r\n"));
    assert_eq!((side, got.dst, got.dport), (Side::Inside, server, 21));
    r.pass(Side::Outside, c(106, 500, b"PASV\r\n"));
    r.pass(Side::Inside, s(500, 112, b"200 NOOP ok.\r\n"));
    let (_, got) = r.pass(Side::Inside, s(514, 112, b"227 Entering Passive Mode (10,0,0,5,117,48).\r\n"));
    assert!(
        got.payload.starts_with(b"227 Entering Passive Mode (198,51,100,1,"),
        "{:?}",
        String::from_utf8_lossy(&got.payload)
    );
    assert_eq!(r.engine.pinholes().len(), 1);
    let (_, conn) = r.engine.table().iter().find(|(_, c)| c.alg.is_some()).unwrap();
    assert_eq!(
        (conn.tcp(), conn.key(Dir::Original).src),
        (TcpState::Established, Endpoint::new(REMOTE, 52000))
    );
    assert_eq!(r.engine.metrics().drops_of(DropReason::NotSyn), 0);
}

#[test]
fn picked_up_from_the_inside_too_learns_its_window() {
    let mut r = Rig::new(config());
    r.pass(Side::Inside, tcp(LAN_HOST, 45000, REMOTE, 443, 1_000_000, 2_000_000, PSHACK, b"hello"));
    r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 45000, 2_000_000, 1_000_005, PSHACK, b"world"));
    for seq in blind_seqs(2_000_005) {
        let (v, _) = r.send(Side::Outside, tcp(REMOTE, 443, PUBLIC, 45000, seq, 1_000_005, RSTACK, b""));
        assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow));
    }
    let (v, _) =
        r.send(Side::Outside, tcp(REMOTE, 443, PUBLIC, 45000, 2_000_005, 1_000_005 + 100_000_000, ACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow), "acknowledges bytes never sent");
    assert_eq!(state(&r).0, TcpState::Established);
    // The exact RST of the real peer still closes it.
    r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 45000, 2_000_005, 0, RST, b""));
    assert_eq!(state(&r).0, TcpState::Reset);
}

#[test]
fn a_syn_ack_that_does_not_answer_the_syn_opens_nothing() {
    let mut r = Rig::new(config());
    r.pass(Side::Inside, tcp(LAN_HOST, 46000, REMOTE, 80, C_ISN, 0, SYN, b""));
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 80, PUBLIC, 46000, 5, C_ISN + 77, SYNACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::TcpOutOfWindow));
    assert_eq!(state(&r).0, TcpState::SynSent);
    r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 46000, 5, C_ISN + 1, SYNACK, b""));
    assert_eq!(state(&r).0, TcpState::SynReceived);
}

/// A segment whose acknowledgement is older than the window ("behind": Linux ignores such a packet
/// but passes it) still goes through the ALG: an inside client that writes its PORT with a stale ACK
/// gets it rewritten like any other (the inside address never leaves), and a late retransmission of a
/// rewritten line is rebuilt from the edit history, never sent as the client wrote it. The stale ACK
/// itself moves nothing. (Found by the engine fuzz target: such segments were passed through with their
/// sequence number mapped but their bytes as sent.)
#[test]
fn stale_acks_and_old_duplicates_do_not_bypass_the_alg() {
    let mut r = Rig::new(config());
    let s_next = ftp_open(&mut r, LAN_HOST, 40300);
    let mut c_next = 2u32;
    // The server sends more than the window (the client's 64,000, at least 66,000) so an ACK of none
    // of it is behind the window.
    let mut s = s_next;
    for _ in 0..80 {
        let reply = [b'x'; 1000];
        r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, 40300, s, c_next, ACK, &reply));
        s += 1000;
        r.pass(Side::Inside, tcp(LAN_HOST, 40300, REMOTE, 21, c_next, s, ACK, b""));
    }
    let ignored = r.engine.metrics().tcp_window_ignored;
    // A PORT carrying an acknowledgement 80,000 bytes old.
    let line = b"PORT 10,0,0,2,160,60\r\n";
    let (_, out) = r.pass(Side::Inside, tcp(LAN_HOST, 40300, REMOTE, 21, c_next, s_next, PSHACK, line));
    assert_eq!(r.engine.metrics().tcp_window_ignored, ignored + 1, "the ACK is behind the window");
    assert_eq!(out.payload, b"PORT 198,51,100,1,160,60\r\n", "rewritten all the same");
    let grown = out.payload.len() as u32 - line.len() as u32;
    c_next += line.len() as u32;
    // The server acknowledges it; then the client's (long delayed) first copy of the line arrives with
    // the same stale ACK: rebuilt, not the inside address.
    r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, 40300, s, c_next + grown, ACK, b""));
    let (v, out) = r.send(Side::Inside, tcp(LAN_HOST, 40300, REMOTE, 21, 2, s_next, PSHACK, line));
    assert_eq!(v, Verdict::Forward(Side::Outside));
    let seen = check(&out[0].1);
    assert!(
        !seen.payload.windows(8).any(|w| w == b"10,0,0,2"),
        "{:?}",
        String::from_utf8_lossy(&seen.payload)
    );
    // Nothing acted on the stale ACKs: the next command goes through at its place.
    let (_, out) = r.pass(Side::Inside, tcp(LAN_HOST, 40300, REMOTE, 21, c_next, s, PSHACK, b"NOOP\r\n"));
    assert_eq!((out.payload.as_slice(), out.seq), (&b"NOOP\r\n"[..], c_next + grown));
}
