//! Nobody starves anybody (issue 12), packet by packet through the engine: a hostile inside host
//! flooding new flows gets its share of the public ports and no more (RFC 6888 REQ-4), counted under its
//! own reason, while another host's connections go through; flows nobody answered give their ports back
//! after the short unreplied timeouts; one outside peer's fragments cannot evict another's; a client
//! announcing data ports in a loop cannot grow the pinhole timers; a lowered share applies on reload.
//!
//! Owns: nothing but these scenarios. Must not: depend on wall time.

mod engine_support;

use std::net::Ipv4Addr;

use engine_support::*;
use ftpnat::config::PortQuota;
use ftpnat::flow::Proto;
use ftpnat::{DropReason, RefusalReason, Side, Verdict};

const FLOODER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 66);
const ACKER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 67);
/// A remote that never answers.
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

const RST: Flags = Flags { syn: false, ack: true, fin: false, rst: true, psh: false };

/// One host tries every public port: it gets its share, the rest is refused as `host_port_quota`
/// (not `ports_exhausted`: the pool is not exhausted), and another host sending from the very same
/// source ports still gets mappings (from the range), so its connections go through.
#[test]
fn a_syn_flood_from_one_host_gets_its_share_of_ports_and_no_more() {
    let mut r = Rig::new(config());
    let share = r.engine.config().ports_per_host();
    assert_eq!(share, 4032, "1/16 of 1024-65535 by default");
    let mut refused = 0u32;
    for sp in 1024..=65535u16 {
        match r.send(Side::Inside, tcp(FLOODER, sp, BLACKHOLE, 80, 1, 0, SYN, b"")).0 {
            Verdict::Forward(Side::Outside) => {}
            Verdict::Drop(DropReason::HostPortQuota) => refused += 1,
            v => panic!("port {sp}: {v:?}"),
        }
    }
    let m = r.engine.metrics();
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, FLOODER), share);
    assert_eq!(refused as usize, 64512 - share);
    assert_eq!(m.drops_of(DropReason::HostPortQuota), u64::from(refused));
    assert_eq!(m.drops_of(DropReason::PortsExhausted), 0, "the pool itself is never exhausted");
    // Another host, from the flooder's own port numbers (now taken as public ports), opens 100
    // connections: each gets a port from the range and an answer comes back to it.
    for sp in 1024..1124u16 {
        let (_, s) = r.pass(Side::Inside, tcp(LAN_HOST, sp, REMOTE, 443, 7, 0, SYN, b""));
        assert_eq!(s.src, PUBLIC);
        let (_, back) = r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, s.sport, 9, 8, SYNACK, b""));
        assert_eq!((back.dst, back.dport), (LAN_HOST, sp));
    }
    assert_eq!(
        r.engine.metrics().drops_of(DropReason::HostPortQuota),
        u64::from(refused),
        "no one else refused"
    );
    // A connection the flooder already has keeps working: refusal is of new ports only.
    let (_, s) = r.pass(Side::Inside, tcp(FLOODER, 1024, BLACKHOLE, 80, 2, 0, ACK, b"x"));
    assert_eq!(s.sport, 1024);
    // ...and a new flow from an endpoint it already holds costs no port (endpoint-independent mapping).
    r.pass(Side::Inside, tcp(FLOODER, 1024, REMOTE2, 80, 1, 0, SYN, b""));
}

/// The same host limit holds for UDP and for ICMP echo identifiers, each protocol with its own pool.
#[test]
fn udp_and_icmp_have_the_same_share_per_host() {
    let mut c = config();
    c.max_ports_per_host = PortQuota::Ports(100);
    let mut r = Rig::new(c);
    for sp in 0..150u16 {
        let (v, _) = r.send(Side::Inside, udp(FLOODER, 20000 + sp, BLACKHOLE, 53, b"q"));
        assert_eq!(v == Verdict::Drop(DropReason::HostPortQuota), sp >= 100, "udp {sp}: {v:?}");
        let (v, _) = r.send(Side::Inside, icmp_echo(FLOODER, BLACKHOLE, 3000 + sp, 1, true));
        assert_eq!(v == Verdict::Drop(DropReason::HostPortQuota), sp >= 100, "icmp {sp}: {v:?}");
    }
    assert_eq!(r.engine.nat().host_ports(Proto::Udp, FLOODER), 100);
    assert_eq!(r.engine.nat().host_ports(Proto::Icmp, FLOODER), 100);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, FLOODER), 0);
    // TCP is another pool: the flooder may still connect.
    r.pass(Side::Inside, tcp(FLOODER, 40000, REMOTE, 80, 1, 0, SYN, b""));
    // Others are unaffected.
    r.pass(Side::Inside, udp(LAN_HOST, 20000, REMOTE, 53, b"q"));
    r.pass(Side::Inside, icmp_echo(LAN_HOST, REMOTE, 3000, 1, true));
    assert_eq!(r.engine.metrics().drops_of(DropReason::HostPortQuota), 100);
}

/// `--max-flows-per-host` still bounds what ports do not: one socket talking to many peers holds one
/// port and many flows.
#[test]
fn one_socket_to_many_peers_is_bounded_by_the_flow_limit_not_the_port_share() {
    let mut c = config();
    c.max_flows_per_host = 1000;
    let mut r = Rig::new(c);
    let mut refused = 0;
    for i in 0..1500u32 {
        let peer = Ipv4Addr::from(0xcb00_7100u32 + i); // 203.0.113.0 onwards
        match r.send(Side::Inside, udp(FLOODER, 6881, peer, 6881, b"dht")).0 {
            Verdict::Forward(_) => {}
            Verdict::Drop(DropReason::HostFlowLimit) => refused += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(refused, 500);
    assert_eq!(r.engine.table().host_count(FLOODER), 1000);
    assert_eq!(r.engine.nat().host_ports(Proto::Udp, FLOODER), 1, "one port, a thousand flows");
}

/// An FTP pinhole's port is a mapping of the announcing host: it counts against the share, and an
/// announcement that would need a port past it is refused (`alg.refused.host_port_quota`), the line
/// left as sent.
#[test]
fn ftp_pinholes_spend_the_announcing_hosts_share() {
    let mut c = config();
    c.max_ports_per_host = PortQuota::Ports(3);
    let mut r = Rig::new(c);
    // The control connection holds port 1; two announcements take ports 2 and 3.
    let server_next = ftp_open(&mut r, LAN_HOST, 40000);
    let mut seq = 2u32;
    let mut port_line = |r: &mut Rig, data_port: u16| {
        let line = format!("PORT 10,0,0,2,{},{}\r\n", data_port >> 8, data_port & 0xff);
        let p = tcp(LAN_HOST, 40000, REMOTE, 21, seq, server_next, PSHACK, line.as_bytes());
        let (_, s) = r.pass(Side::Inside, p);
        seq += line.len() as u32;
        String::from_utf8(s.payload).unwrap()
    };
    assert!(port_line(&mut r, 50000).starts_with("PORT 198,51,100,1,"));
    assert!(port_line(&mut r, 50001).starts_with("PORT 198,51,100,1,"));
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, LAN_HOST), 3);
    let refused = port_line(&mut r, 50002);
    assert_eq!(refused, "PORT 10,0,0,2,195,82\r\n", "left as sent");
    assert_eq!(r.engine.metrics().refused_of(RefusalReason::HostPortQuota), 1);
    assert_eq!(r.engine.pinholes().len(), 2);
    // A new outbound flow from a new endpoint is refused too, under the drop reason.
    let (v, _) = r.send(Side::Inside, tcp(LAN_HOST, 40001, REMOTE, 80, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::HostPortQuota));
    // When a pinhole expires its port comes back.
    r.advance(61);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, LAN_HOST), 1);
    r.pass(Side::Inside, tcp(LAN_HOST, 40001, REMOTE, 80, 1, 0, SYN, b""));
}

/// Unanswered SYNs and bare ACKs picked up from the inside hold their ports for the short unreplied
/// timeout only (60 s), then the host has its whole share again; a connection that was answered keeps
/// the long timeout (RFC 5382 REQ-5: 2 h 4 min).
#[test]
fn unanswered_tcp_gives_its_ports_back_after_the_short_timeout() {
    let mut r = Rig::new(config());
    let share = r.engine.config().ports_per_host();
    let t = r.engine.config().timeouts;
    assert_eq!(t.tcp_unreplied.as_secs(), 60);
    // An answered connection of the flooder itself.
    r.pass(Side::Inside, tcp(FLOODER, 50000, REMOTE, 443, 1, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 50000, 9, 2, SYNACK, b""));
    r.pass(Side::Inside, tcp(FLOODER, 50000, REMOTE, 443, 2, 10, ACK, b""));
    for sp in 1024..1024 + share as u16 + 100 {
        r.send(Side::Inside, tcp(FLOODER, sp, BLACKHOLE, 80, 1, 0, SYN, b""));
        // Bare ACKs: picked up mid-stream as ESTABLISHED (a gateway restart), but nobody answers.
        r.send(Side::Inside, tcp(ACKER, sp, BLACKHOLE, 443, 1, 1, ACK, b""));
    }
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, FLOODER), share);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, ACKER), share);
    let (v, _) = r.send(Side::Inside, tcp(FLOODER, 60000, REMOTE, 80, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::HostPortQuota));
    r.advance(59);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, ACKER), share, "not before the timeout");
    r.advance(2);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, ACKER), 0, "the pickups' ports are back");
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, FLOODER), 1, "only the answered connection is left");
    assert_eq!(r.engine.flow_count(), 1);
    r.pass(Side::Inside, tcp(FLOODER, 60000, REMOTE, 80, 1, 0, SYN, b""));
    r.pass(Side::Inside, tcp(ACKER, 60000, REMOTE, 80, 1, 0, SYN, b""));
    // The answered one lives on for its established timeout.
    r.advance(7000);
    r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 50000, 10, 2, PSHACK, b"late data"));
}

/// A bare ACK picked up from the inside that the remote does answer becomes a normal established
/// connection (the restart case the pickup exists for).
#[test]
fn a_pickup_that_is_answered_keeps_the_established_timeout() {
    let mut r = Rig::new(config());
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 22, 100, 200, PSHACK, b"ls\n"));
    r.pass(Side::Outside, tcp(REMOTE, 22, PUBLIC, 40000, 200, 103, PSHACK, b"a b c\n"));
    r.advance(3600);
    let (_, s) = r.pass(Side::Outside, tcp(REMOTE, 22, PUBLIC, 40000, 206, 103, PSHACK, b"x"));
    assert_eq!((s.dst, s.dport), (LAN_HOST, 40000));
}

/// UDP: datagrams nobody answers keep their mapping 30 s; an answered exchange keeps it 5 min.
#[test]
fn unanswered_udp_gives_its_ports_back_after_30_seconds() {
    let mut r = Rig::new(config());
    for sp in 0..100u16 {
        r.pass(Side::Inside, udp(FLOODER, 20000 + sp, BLACKHOLE, 53, b"q"));
    }
    r.pass(Side::Inside, udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 5353, b"a"));
    r.advance(29);
    // More unanswered datagrams refresh the unanswered timeout only.
    r.pass(Side::Inside, udp(FLOODER, 20000, BLACKHOLE, 53, b"q"));
    r.advance(2);
    assert_eq!(r.engine.nat().host_ports(Proto::Udp, FLOODER), 1);
    r.advance(30);
    assert_eq!(r.engine.nat().host_ports(Proto::Udp, FLOODER), 0);
    r.advance(200);
    let (_, s) = r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 5353, b"still mapped"));
    assert_eq!(s.dst, LAN_HOST);
}

/// Fragments a datagram of [`fragmented`] is cut into.
const PIECES: usize = 4;

/// A peer's 3,000-byte UDP datagram to `public_port`, cut for a 1,000-byte MTU: its fragments in order.
fn fragmented(peer: Ipv4Addr, public_port: u16, ident: u16) -> Vec<Vec<u8>> {
    let whole = udp(peer, 9, PUBLIC, public_port, &[0x5a; 3000]);
    let mut frags = ftpnat::wire::ipv4::fragment(&whole, 1000).unwrap();
    for f in &mut frags {
        ftpnat::wire::Ipv4Packet::new_checked(&mut f[..]).unwrap().set_ident(ident);
    }
    assert_eq!(frags.len(), PIECES);
    frags
}

/// Sets up a UDP flow from `host:port` to `peer:9`; returns its public port.
fn flow(r: &mut Rig, host: Ipv4Addr, port: u16, peer: Ipv4Addr) -> u16 {
    r.pass(Side::Inside, udp(host, port, peer, 9, b"hello")).1.sport
}

/// Sends every fragment; returns how many came out towards the inside, to `host`.
fn deliver(r: &mut Rig, frags: Vec<Vec<u8>>, host: Ipv4Addr) -> usize {
    let mut out = 0;
    for f in frags {
        let (_, got) = r.send(Side::Outside, f);
        out += got.iter().filter(|(side, p)| *side == Side::Inside && check(p).dst == host).count();
    }
    out
}

/// RFC 791 §3.2 fragments carry no ports: a NAT translates the later ones by what the first one
/// left. 5,000 first fragments from one outside peer must not make another host's datagram on another
/// flow get lost, whether its first fragment came before the flood or after it, and whether its later
/// fragments overtook its first.
#[test]
fn first_fragments_from_one_peer_cannot_evict_another_hosts_datagram() {
    let mut r = Rig::new(config());
    let p_port = flow(&mut r, LAN_HOST, 9000, REMOTE);
    let q_port = flow(&mut r, LAN_HOST2, 9001, REMOTE2);
    // Q's first fragment before the flood; its later ones after it.
    let mut before = fragmented(REMOTE2, q_port, 1);
    let first = before.remove(0);
    assert_eq!(deliver(&mut r, vec![first], LAN_HOST2), 1);
    for i in 0..5000u16 {
        let f = fragmented(REMOTE, p_port, 10_000 + i).remove(0);
        assert_eq!(deliver(&mut r, vec![f], LAN_HOST), 1, "the flood itself is forwarded");
    }
    assert_eq!(
        deliver(&mut r, before, LAN_HOST2),
        PIECES - 1,
        "later fragments of the datagram before the flood"
    );
    // A datagram of Q after the flood, in order.
    assert_eq!(deliver(&mut r, fragmented(REMOTE2, q_port, 2), LAN_HOST2), PIECES);
    // And one whose later fragments overtook its first.
    let mut late = fragmented(REMOTE2, q_port, 3);
    late.rotate_left(1);
    assert_eq!(deliver(&mut r, late, LAN_HOST2), PIECES);
    let f = r.engine.fragments();
    assert_eq!(f.states_of(REMOTE), ftpnat::frag::STATES_PER_SOURCE, "the flooder has its share");
    assert!(r.engine.metrics().fragment_states_evicted >= 5000 - ftpnat::frag::STATES_PER_SOURCE as u64);
    assert_eq!(r.engine.metrics().drops_of(DropReason::FragmentNoState), 0);
    // The flooder's own recent datagrams still work too.
    assert_eq!(deliver(&mut r, fragmented(REMOTE, p_port, 77), LAN_HOST), PIECES);
}

/// Later fragments that never get a first one wait (2 s) in a bounded queue; one peer filling it gets
/// its share and is refused as `fragment_source_quota`, and another peer's out-of-order datagram
/// still finds room.
#[test]
fn later_fragments_from_one_peer_cannot_fill_the_waiting_queue() {
    let mut r = Rig::new(config());
    let p_port = flow(&mut r, LAN_HOST, 9000, REMOTE);
    let q_port = flow(&mut r, LAN_HOST2, 9001, REMOTE2);
    let mut refused = 0;
    for i in 0..5000u16 {
        let f = fragmented(REMOTE, p_port, i).remove(1);
        match r.send(Side::Outside, f).0 {
            Verdict::Held => {}
            Verdict::Drop(DropReason::FragmentSourceQuota) => refused += 1,
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(refused, 5000 - ftpnat::frag::WAITING_PER_SOURCE);
    let mut late = fragmented(REMOTE2, q_port, 3);
    late.rotate_left(1);
    assert_eq!(deliver(&mut r, late, LAN_HOST2), PIECES);
    r.advance(3);
    assert_eq!(
        r.engine.metrics().drops_of(DropReason::FragmentNoState),
        ftpnat::frag::WAITING_PER_SOURCE as u64,
        "the flooder's waiting fragments are dropped when their wait ends"
    );
    assert_eq!(r.engine.fragments().waiting(), 0);
}

/// A client announcing data ports in a loop (each replacing the last, RFC 959 allows any number of
/// PORT commands) must not grow the pinhole expiry queue past the live pinholes.
#[test]
fn pinhole_timers_stay_bounded_by_the_live_pinholes() {
    let mut r = Rig::new(config());
    let server_next = ftp_open(&mut r, LAN_HOST, 40000);
    let mut seq = 2u32;
    for i in 0..20_000u32 {
        // Two endpoints in turn: each announcement replaces the earlier one of its endpoint.
        let data_port = 50000 + (i % 2) as u16;
        let line = format!("PORT 10,0,0,2,{},{}\r\n", data_port >> 8, data_port & 0xff);
        let (_, out) =
            r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 21, seq, server_next, PSHACK, line.as_bytes()));
        seq += line.len() as u32;
        // The server acknowledges what it received (the window is tracked, issue 11).
        let acked = out.seq.wrapping_add(out.payload.len() as u32);
        r.pass(Side::Outside, tcp(REMOTE, 21, PUBLIC, 40000, server_next, acked, ACK, b""));
        let ph = r.engine.pinholes();
        assert!(
            ph.timers_queued() <= 2 * ph.len() + 64,
            "{} timers for {} pinholes",
            ph.timers_queued(),
            ph.len()
        );
    }
    assert_eq!(r.engine.pinholes().len(), 2);
    assert!(r.engine.metrics().pinholes_replaced >= 19_998);
    r.advance(61);
    assert!(r.engine.pinholes().is_empty());
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, LAN_HOST), 1, "only the control connection's port");
}

/// SIGHUP: a lowered share applies to new mappings at once; what a host holds stays until it goes.
#[test]
fn a_lowered_share_applies_on_reload() {
    let mut r = Rig::new(config());
    for sp in 0..50u16 {
        let (_, syn) = r.pass(Side::Inside, tcp(FLOODER, 30000 + sp, REMOTE, 80, 1, 0, SYN, b""));
        // Answered: the connections hold their ports past the unreplied timeout.
        r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, syn.sport, 500, 2, SYNACK, b""));
        r.pass(Side::Inside, tcp(FLOODER, 30000 + sp, REMOTE, 80, 2, 501, ACK, b""));
    }
    let mut lower = r.engine.config().clone();
    lower.max_ports_per_host = PortQuota::Ports(40);
    assert!(r.engine.reconfigure(&lower).is_empty());
    assert_eq!(r.engine.config().ports_per_host(), 40);
    let (v, _) = r.send(Side::Inside, tcp(FLOODER, 31000, REMOTE, 80, 1, 0, SYN, b""));
    assert_eq!(v, Verdict::Drop(DropReason::HostPortQuota));
    for sp in 0..11u16 {
        r.pass(Side::Inside, tcp(FLOODER, 30000 + sp, REMOTE, 80, 2, 0, RST, b""));
    }
    // After an RST the mapping is kept 4 minutes (RFC 7857 §2.2, the transitory timeout).
    r.advance(241);
    assert_eq!(r.engine.nat().host_ports(Proto::Tcp, FLOODER), 39);
    r.pass(Side::Inside, tcp(FLOODER, 31000, REMOTE, 80, 1, 0, SYN, b""));
}
