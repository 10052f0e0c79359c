//! Port forwards to IPv6 inside hosts through NAT64 (issue 14; RFC 6146 §3.5's static BIB entries):
//! an IPv4 client on the WAN reaches an IPv6-only server at the public address, the server sees the
//! client at its RFC 6052 address under the prefix, and the replies leave as IPv4 from the forward's
//! public endpoint. Every packet that leaves is checked by an independent parser (etherparse), and the
//! adversary's attempts (spoofed stand-ins, other inside hosts, wrong protocols) are refused.
//!
//! Owns: these scenarios. Must not: reach into the engine's internals beyond its public API.

#[path = "nat64_support/ctl.rs"]
mod nat64_ctl;
#[path = "nat64_support/engine.rs"]
mod nat64_engine_support;

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use ftpnat::{Config, DropReason, Engine, Instant, RefusalReason, Side, Verdict};

use nat64_ctl::{Ctl, End};
use nat64_engine_support::*;

/// The IPv6-only server the forwards reach.
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0x10);
/// Another IPv6 inside host, not forwarded to.
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0x11);
/// An IPv4 client on the WAN.
const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// The client's address as the IPv6 server sees it (RFC 6052 §2.2 under the /96).
fn client_synth() -> Ipv6Addr {
    "64:ff9b:1::203.0.113.9".parse().unwrap()
}

fn config_fwd() -> Config {
    let mut c = config64();
    c.forwards.push("tcp:2121=[2001:db8:64::10]:80".parse().unwrap());
    c.forwards.push("udp:5353=[2001:db8:64::10]:53".parse().unwrap());
    c.validate().expect("valid");
    c
}

fn engine_fwd() -> Engine {
    Engine::new(config_fwd())
}

#[test]
fn a_wan_client_reaches_the_ipv6_server_through_a_tcp_forward() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let s = seen(&syn);
    assert!(s.v6, "the server is IPv6-only: {s:?}");
    assert_eq!(
        (s.src, s.dst, s.sport, s.dport, s.seq, s.ttl),
        (client_synth().to_string(), HOST6.to_string(), 50000, 80, 100, 59),
        "RFC 6146 §3.5: the client at its RFC 6052 address, the forward's inside endpoint"
    );
    let mut synack = tcp6(HOST6, client_synth(), 80, 50000, 7000, 101, TcpKind::SynAck, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut synack), Verdict::Forward(Side::Outside));
    let b = seen(&synack);
    assert!(!b.v6);
    assert_eq!(
        (b.src, b.dst, b.sport, b.dport, b.ack),
        (PUBLIC.to_string(), CLIENT4.to_string(), 2121, 50000, 101),
        "the reply leaves from the forward's public endpoint"
    );
    let mut data = tcp4(CLIENT4, PUBLIC, 50000, 2121, 101, 7001, TcpKind::Ack, b"hello", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut data), Verdict::Forward(Side::Inside));
    assert_eq!(seen(&data).payload, b"hello");
    let mut back = tcp6(HOST6, client_synth(), 80, 50000, 7001, 106, TcpKind::Ack, b"world", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut back), Verdict::Forward(Side::Outside));
    assert_eq!(seen(&back).payload, b"world");
    assert_eq!(e.flow_count(), 1);
    let n = e.nat64().unwrap();
    let alias = n.hosts.alias(HOST6).expect("the forward's host holds its stand-in");
    assert_eq!(n.hosts.refs(alias), 3, "two forwards and one connection");
}

#[test]
fn a_udp_forward_and_the_servers_icmpv6_error() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let mut q = udp4(CLIENT4, PUBLIC, 40000, 5353, b"query", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut q), Verdict::Forward(Side::Inside));
    let s = seen(&q);
    assert_eq!((s.v6, s.src, s.dst, s.dport), (true, client_synth().to_string(), HOST6.to_string(), 53));
    let mut a = udp6(HOST6, client_synth(), 53, 40000, b"answer", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut a), Verdict::Forward(Side::Outside));
    let r = seen(&a);
    assert_eq!((r.src, r.sport, r.dst, r.dport), (PUBLIC.to_string(), 5353, CLIENT4.to_string(), 40000));
    // A second query the server's socket no longer takes: its ICMPv6 port unreachable quotes the
    // datagram as it got it, and reaches the client as ICMPv4 quoting what the client sent (RFC 7915
    // §5.2, then the NAT's reverse translation of the quote).
    let mut q2 = udp4(CLIENT4, PUBLIC, 40000, 5353, b"again", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut q2), Verdict::Forward(Side::Inside));
    let mut err = Vec::new();
    PacketBuilder::ipv6(HOST6.octets(), client_synth().octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port))
        .write(&mut err, &q2)
        .unwrap();
    assert_eq!(e.handle_packet(now, Side::Inside, &mut err), Verdict::Forward(Side::Outside));
    let s = seen(&err);
    assert_eq!(
        (s.icmp, s.src.as_str(), s.dst.as_str()),
        (Some((3, 3)), PUBLIC.to_string().as_str(), CLIENT4.to_string().as_str())
    );
    let quote = etherparse::Ipv4HeaderSlice::from_slice(&s.payload).expect("an IPv4 quote");
    assert_eq!((quote.source_addr(), quote.destination_addr()), (CLIENT4, PUBLIC));
    let udp = &s.payload[20..28];
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 5353, "the quoted port is the public one");
}

#[test]
fn an_ipv4_error_from_the_wan_about_a_forwarded_flow_reaches_the_server_as_icmpv6() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let mut q = udp4(CLIENT4, PUBLIC, 40000, 5353, b"query", 60);
    e.handle_packet(now, Side::Outside, &mut q);
    let mut a = udp6(HOST6, client_synth(), 53, 40000, b"answer", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut a), Verdict::Forward(Side::Outside));
    // The client has gone: its port unreachable quotes the answer as it arrived.
    let mut err = Vec::new();
    PacketBuilder::ipv4(CLIENT4.octets(), PUBLIC.octets(), 60)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &a)
        .unwrap();
    assert_eq!(e.handle_packet(now, Side::Outside, &mut err), Verdict::Forward(Side::Inside));
    let s = seen(&err);
    assert!(s.v6);
    assert_eq!((s.icmp, s.dst), (Some((1, 4)), HOST6.to_string()), "port unreachable, RFC 7915 §4.2");
    let quote = etherparse::Ipv6HeaderSlice::from_slice(&s.payload).expect("an IPv6 quote");
    assert_eq!((quote.source_addr(), quote.destination_addr()), (HOST6, client_synth()));
}

/// RFC 4787 REQ-9 / RFC 5382 REQ-8 hairpinning, NAT64 on both ends: an IPv6 inside client reaches
/// the forward at the public address's RFC 6052 form (what DNS64 answers for the public name); the
/// server sees the connection from the public address's form, as for any hairpinned IPv4 flow.
#[test]
fn an_ipv6_inside_client_hairpins_to_the_forward() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let public6: Ipv6Addr = "64:ff9b:1::198.51.100.1".parse().unwrap();
    let mut syn = tcp6(CLIENT6, public6, 41000, 2121, 1, 0, TcpKind::Syn, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut syn), Verdict::Forward(Side::Inside));
    let s = seen(&syn);
    assert_eq!(
        (s.v6, s.src.as_str(), s.dst.as_str(), s.dport),
        (true, public6.to_string().as_str(), HOST6.to_string().as_str(), 80)
    );
    let mut synack = tcp6(HOST6, public6, 80, s.sport, 900, 2, TcpKind::SynAck, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut synack), Verdict::Forward(Side::Inside));
    let b = seen(&synack);
    assert_eq!(
        (b.v6, b.src, b.dst, b.sport, b.dport),
        (true, public6.to_string(), CLIENT6.to_string(), 2121, 41000)
    );
    // And an IPv4 inside client hairpins to it the same way.
    let mut syn4 = tcp4(Ipv4Addr::new(10, 0, 0, 7), PUBLIC, 42000, 2121, 1, 0, TcpKind::Syn, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut syn4), Verdict::Forward(Side::Inside));
    let s4 = seen(&syn4);
    assert_eq!((s4.v6, s4.src, s4.dst), (true, public6.to_string(), HOST6.to_string()));
}

/// The adversary on the WAN: the forward reaches its one host and port, for its protocol, and a
/// spoofed stand-in address never reaches the LAN (it would make the server talk to itself).
#[test]
fn the_forward_reaches_its_target_only() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let alias = e.nat64().unwrap().hosts.alias(HOST6).unwrap();
    // A source in the stand-in block: the server's own stand-in, or another.
    for src in [alias, Ipv4Addr::new(240, 0, 0, 2)] {
        let mut p = tcp4(src, PUBLIC, 50000, 2121, 1, 0, TcpKind::Syn, b"", 60);
        assert_eq!(e.handle_packet(now, Side::Outside, &mut p), Verdict::Drop(DropReason::Martian));
    }
    // The stand-in as a destination from the WAN: never routed to the LAN.
    let mut p = tcp4(CLIENT4, alias, 50000, 80, 1, 0, TcpKind::Syn, b"", 60);
    assert!(matches!(e.handle_packet(now, Side::Outside, &mut p), Verdict::Drop(_)));
    // The TCP forward's port over UDP, and the UDP forward's over TCP: no forward there.
    let mut u = udp4(CLIENT4, PUBLIC, 40000, 2121, b"x", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut u), Verdict::Drop(DropReason::NoMapping));
    let mut t = tcp4(CLIENT4, PUBLIC, 40000, 5353, 1, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut t), Verdict::Drop(DropReason::NoMapping));
    assert_eq!(e.flow_count(), 0);
    // A forwarded connection: another IPv6 inside host speaking as the server (same ports, the
    // client's synthesized address) opens a flow of its own, from another public port; it cannot
    // use the forward's endpoint nor the forwarded connection.
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let mut fake = tcp6(OTHER6, client_synth(), 80, 50000, 7000, 101, TcpKind::SynAck, b"", 64);
    assert_eq!(
        e.handle_packet(now, Side::Inside, &mut fake),
        Verdict::Drop(DropReason::NotSyn),
        "a SYN-ACK answering nothing of its own"
    );
    let mut data = tcp6(OTHER6, client_synth(), 80, 50000, 7001, 101, TcpKind::Ack, b"evil", 64);
    if e.handle_packet(now, Side::Inside, &mut data) == Verdict::Forward(Side::Outside) {
        let s = seen(&data);
        assert_ne!(s.sport, 2121, "picked up as its own outbound flow, never from the forward's port");
    }
    // Inside hosts outside --inside6 cannot use NAT64 at all.
    let mut out6 =
        tcp6("2001:db8:65::10".parse().unwrap(), client_synth(), 80, 50000, 1, 0, TcpKind::Syn, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut out6), Verdict::Drop(DropReason::SpoofedSource));
}

#[test]
fn config_refuses_forwards_nat64_cannot_reach() {
    let mut c = config4();
    c.forwards.push("tcp:2121=[2001:db8:64::10]:80".parse().unwrap());
    assert!(c.validate().unwrap_err().contains("--nat64-prefix"), "no NAT64");
    for (fwd, says) in [
        ("tcp:2121=[2001:db8:65::10]:80", "--inside6"),
        ("tcp:2121=[2001:db8:64::1]:80", "--inside6"),
        ("tcp:2121=[64:ff9b:1::a00:2]:80", "--inside6"),
    ] {
        let mut c = config64();
        c.forwards.push(fwd.parse().unwrap());
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("--forward") && e.contains(says), "{fwd}: {e}");
    }
    // A /64's forwarded hosts stay within the per-/64 share of stand-ins.
    let mut c = config64();
    c.nat64.as_mut().unwrap().max_per_64 = 2;
    for i in 1..=3u16 {
        c.forwards.push(format!("tcp:{}=[2001:db8:64::{}]:80", 8000 + i, 0x100 + i).parse().unwrap());
    }
    assert!(c.validate().unwrap_err().contains("per-/64"));
    c.forwards.pop();
    assert_eq!(c.validate(), Ok(()));
    // Two forwards of one IPv6 host on two public addresses: paired pooling refuses as for IPv4.
    let mut c = config_fwd();
    c.forwards.push("tcp:2121=[2001:db8:64::10]:22".parse().unwrap());
    assert!(c.validate().unwrap_err().contains("forwarded twice"));
}

/// SIGHUP: a forward removed gives its stand-in reference back (the host keeps it while a
/// connection holds it), one added takes one; the rule compares equal whatever stand-in it got.
#[test]
fn reload_adds_and_removes_forwards_to_ipv6_hosts() {
    let mut e = engine_fwd();
    let now = Instant::ZERO;
    let alias = e.nat64().unwrap().hosts.alias(HOST6).unwrap();
    assert_eq!(e.nat64().unwrap().hosts.refs(alias), 2);
    let mut c = config_fwd();
    assert!(e.reconfigure(&c).is_empty());
    assert_eq!(e.nat64().unwrap().hosts.refs(alias), 2, "the same rules: nothing taken twice");
    c.forwards.clear();
    assert!(e.reconfigure(&c).is_empty());
    assert_eq!(e.nat64().unwrap().hosts.alias(HOST6), None, "no forward, no connection: stand-in gone");
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut syn), Verdict::Drop(DropReason::NoMapping));
    c.forwards.push("tcp:2121=[2001:db8:64::11]:80".parse().unwrap());
    assert!(e.reconfigure(&c).is_empty());
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    assert_eq!(seen(&syn).dst, OTHER6.to_string());
    assert_eq!(e.config().forwards[0].to_string(), "tcp:2121=[2001:db8:64::11]:80");
}

// The FTP ALG for an IPv6 server behind a forward: the mirror of RFC 6384 (see `rfc6384`'s header).

const CPORT: u16 = 50000;

fn config_ftp() -> Config {
    let mut c = config64();
    c.forwards.push("tcp:21=[2001:db8:64::10]:21".parse().unwrap());
    c.validate().expect("valid");
    c
}

/// A control connection from [`CLIENT4`] to the IPv6 server through `tcp:21=[HOST6]:21`, driven
/// from both ends.
fn open(cfg: Config) -> Ctl {
    let mut e = Engine::new(cfg);
    let now = Instant::ZERO;
    let mut syn = tcp4(CLIENT4, PUBLIC, CPORT, 21, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let mut sa = tcp6(HOST6, client_synth(), 21, CPORT, 9000, 101, TcpKind::SynAck, b"", 64);
    assert_eq!(e.handle_packet(now, Side::Inside, &mut sa), Verdict::Forward(Side::Outside));
    let mut ack = tcp4(CLIENT4, PUBLIC, CPORT, 21, 101, 9001, TcpKind::Ack, b"", 60);
    assert_eq!(e.handle_packet(now, Side::Outside, &mut ack), Verdict::Forward(Side::Inside));
    let client = End {
        side: Side::Outside,
        build: Box::new(|seq, ack, data| tcp4(CLIENT4, PUBLIC, CPORT, 21, seq, ack, TcpKind::Ack, data, 60)),
        check: Box::new(|s| {
            assert!(
                !s.v6 && s.src == PUBLIC.to_string() && s.sport == 21 && s.dst == CLIENT4.to_string(),
                "{s:?}"
            )
        }),
    };
    let server = End {
        side: Side::Inside,
        build: Box::new(|seq, ack, data| {
            tcp6(HOST6, client_synth(), 21, CPORT, seq, ack, TcpKind::Ack, data, 64)
        }),
        check: Box::new(|s| {
            assert!(s.v6 && s.dst == HOST6.to_string() && s.src == client_synth().to_string(), "{s:?}")
        }),
    };
    let mut c = Ctl { e, client, server, cseq: 101, crcv: 9001, sseq: 9001, srcv: 101 };
    assert_eq!(c.s2c(&[b"220 IPv6 server ready\r\n"]), b"220 IPv6 server ready\r\n");
    c
}

fn port_of_227(l: &str) -> (String, u16) {
    let inner = &l[l.find('(').unwrap() + 1..l.find(')').unwrap()];
    let n: Vec<u16> = inner.split(',').map(|x| x.parse().unwrap()).collect();
    (format!("{}.{}.{}.{}", n[0], n[1], n[2], n[3]), n[4] * 256 + n[5])
}

#[test]
fn pasv_becomes_epsv_and_the_229_a_227_naming_the_public_address() {
    let mut c = open(config_ftp());
    // Split across segments: the line is rebuilt whole.
    let s = c.c2s(&[b"PA", b"SV\r\n"]);
    assert_eq!(s, b"EPSV\r\n", "the IPv6 server gets EPSV");
    let got =
        String::from_utf8(c.s2c(&[b"229 Entering Extended ", b"Passive Mode (|||31000|)\r\n"])).unwrap();
    assert!(got.starts_with("227 Entering Passive Mode ("), "{got}");
    let (addr, port) = port_of_227(&got);
    assert_eq!(addr, PUBLIC.to_string());
    // The client's data connection to the public port reaches the server's data port over IPv6.
    let now = Instant::ZERO;
    let mut syn = tcp4(CLIENT4, PUBLIC, 50001, port, 1, 0, TcpKind::Syn, b"", 60);
    assert_eq!(c.e.handle_packet(now, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let d = seen(&syn);
    assert_eq!((d.v6, d.src, d.dst, d.dport), (true, client_synth().to_string(), HOST6.to_string(), 31000));
    let mut sa = tcp6(HOST6, client_synth(), 31000, 50001, 5, 2, TcpKind::SynAck, b"", 64);
    assert_eq!(c.e.handle_packet(now, Side::Inside, &mut sa), Verdict::Forward(Side::Outside));
    assert_eq!(seen(&sa).sport, port);
    let m = c.e.metrics();
    assert_eq!((m.alg_nat64_epsv, m.alg_nat64_227), (1, 1));
}

#[test]
fn the_pinhole_of_a_translated_229_is_the_clients_only() {
    let mut c = open(config_ftp());
    c.exchange("PASV\r\n", "229 Entering Extended Passive Mode (|||31000|)\r\n");
    let (_, got) = c.exchange("PASV\r\n", "229 Entering Extended Passive Mode (|||31001|)\r\n");
    let (_, port) = port_of_227(&got);
    let mut thief = tcp4(Ipv4Addr::new(203, 0, 113, 66), PUBLIC, 40000, port, 1, 0, TcpKind::Syn, b"", 60);
    assert!(matches!(c.e.handle_packet(Instant::ZERO, Side::Outside, &mut thief), Verdict::Drop(_)));
    // A 229 nobody asked for is left as sent (and opens nothing).
    let got = String::from_utf8(c.s2c(&[b"229 Entering Extended Passive Mode (|||31002|)\r\n"])).unwrap();
    assert_eq!(got, "229 Entering Extended Passive Mode (|||31002|)\r\n");
}

#[test]
fn port_and_eprt1_become_eprt2_naming_the_clients_synthesized_address() {
    let mut c = open(config_ftp());
    let (s, r) = c.exchange("PORT 203,0,113,9,195,81\r\n", "200 EPRT command successful.\r\n");
    assert_eq!(s, format!("EPRT |2|{}|50001|\r\n", client_synth()));
    assert_eq!(r, "200 EPRT command successful.\r\n");
    let (s, _) = c.exchange("EPRT |1|203.0.113.9|50002|\r\n", "200 ok\r\n");
    assert_eq!(s, format!("EPRT |2|{}|50002|\r\n", client_synth()));
    // The server's active data connection leaves as IPv4 from the public address.
    let now = Instant::ZERO;
    let mut syn = tcp6(HOST6, client_synth(), 20, 50001, 1, 0, TcpKind::Syn, b"", 64);
    assert_eq!(c.e.handle_packet(now, Side::Inside, &mut syn), Verdict::Forward(Side::Outside));
    let d = seen(&syn);
    assert_eq!((d.v6, d.src, d.dst, d.dport), (false, PUBLIC.to_string(), CLIENT4.to_string(), 50001));
    assert_eq!(c.e.metrics().alg_nat64_eprt, 2);
    // EPSV 1 (the client's family) is sent as EPSV; a plain EPSV's 229 is the IPv4 ALG's.
    let (s, r) = c.exchange("EPSV 1\r\n", "229 Entering Extended Passive Mode (|||31005|)\r\n");
    assert_eq!(s, "EPSV\r\n");
    assert!(r.starts_with("229 Entering Extended Passive Mode (|||"), "{r}");
}

/// The adversary is the IPv4 client: a PORT naming another host (RFC 2577's bounce), a low port, an
/// EPRT |2| it cannot own, a malformed one: none reaches the server; the gateway answers 501 in place
/// of the server's reply to the NOOP it sent (RFC 6384 §12's substitution).
#[test]
fn bounce_and_bad_ports_never_reach_the_ipv6_server() {
    let mut c = open(config_ftp());
    for (cmd, reason) in [
        ("PORT 203,0,113,66,195,81\r\n", RefusalReason::ThirdHost),
        ("EPRT |1|10.0.0.5|50000|\r\n", RefusalReason::ThirdHost),
        ("PORT 203,0,113,9,0,25\r\n", RefusalReason::LowPort),
        ("EPRT |2|2001:db8:64::10|50000|\r\n", RefusalReason::WrongFamily),
        ("PORT 203,0,113,9\r\n", RefusalReason::Malformed),
    ] {
        let before = c.e.metrics().refused_of(reason);
        let (s, r) = c.exchange(cmd, "200 NOOP ok.\r\n");
        assert_eq!(s, "NOOP\r\n", "{cmd}");
        assert!(r.starts_with("501 "), "{cmd}: {r}");
        assert_eq!(c.e.metrics().refused_of(reason), before + 1, "{cmd}");
    }
    // The session goes on: a good PORT afterwards is translated.
    let (s, _) = c.exchange("PORT 203,0,113,9,195,81\r\n", "200 ok\r\n");
    assert!(s.starts_with("EPRT |2|"), "{s}");
}

/// Without the ALG the IPv6 server gets PASV and PORT as sent (and an IPv6-only server refuses them):
/// the rows above are the ALG's doing.
#[test]
fn without_the_alg_pasv_and_port_pass_as_sent() {
    let mut cfg = config_ftp();
    cfg.ftp.enabled = false;
    let mut c = open(cfg);
    let (s, r) = c.exchange("PASV\r\n", "425 You cannot use PASV on IPv6 connections. Use EPSV instead.\r\n");
    assert_eq!(s, "PASV\r\n");
    assert!(r.starts_with("425"));
    let (s, _) = c.exchange("PORT 203,0,113,9,195,81\r\n", "425 no\r\n");
    assert_eq!(s, "PORT 203,0,113,9,195,81\r\n");
}

/// A reload cannot start NAT64: a forward to an IPv6 host added to a gateway running without it is
/// refused, saying so, never forwarded to an unresolved host.
#[test]
fn reload_refuses_an_ipv6_forward_without_running_nat64() {
    let mut e = Engine::new(config4());
    let refused = e.reconfigure(&config_fwd());
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].starts_with("--forward") && refused[0].contains("NAT64"), "{refused:?}");
    assert!(e.config().forwards.is_empty());
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut syn), Verdict::Drop(DropReason::NoMapping));
}

/// Pipelining and retransmission with the length change of PORT → EPRT |2|: the server gets both
/// commands, the retransmitted segment is rebuilt byte-exact at the same place, and the client's
/// acknowledgement numbers are mapped back to its own space.
#[test]
fn a_pipelined_port_is_rebuilt_byte_exact_when_retransmitted() {
    let mut c = open(config_ftp());
    let at = c.cseq;
    let seg = b"PORT 203,0,113,9,195,81\r\nRETR blob.bin\r\n";
    let want = format!("EPRT |2|{}|50001|\r\nRETR blob.bin\r\n", client_synth());
    assert_eq!(String::from_utf8(c.c2s(&[seg])).unwrap(), want);
    let mut again = tcp4(CLIENT4, PUBLIC, CPORT, 21, at, c.crcv, TcpKind::Ack, seg, 60);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Outside, &mut again), Verdict::Forward(Side::Inside));
    let s = seen(&again);
    assert_eq!(
        (s.payload, s.seq),
        (want.as_bytes().to_vec(), c.srcv - want.len() as u32),
        "rebuilt in place"
    );
    // The server acknowledges everything it got; the client sees its own byte count acknowledged.
    let mut ack = tcp6(HOST6, client_synth(), 21, CPORT, c.sseq, c.srcv, TcpKind::Ack, b"", 64);
    assert_eq!(c.e.handle_packet(Instant::ZERO, Side::Inside, &mut ack), Verdict::Forward(Side::Outside));
    assert_eq!(seen(&ack).ack, c.cseq, "the ack in the client's space");
    assert_eq!(c.e.metrics().alg_nat64_eprt, 1, "the retransmission is not a second translation");
}

/// `ftpnat events`: a forwarded connection to an IPv6 host is followed by `nat64_flow` naming the
/// server's IPv6 endpoint and the client as the server sees it.
#[test]
fn events_name_the_ipv6_server_of_a_forwarded_flow() {
    let mut e = engine_fwd();
    e.set_events(true);
    let mut syn = tcp4(CLIENT4, PUBLIC, 50000, 2121, 100, 0, TcpKind::Syn, b"", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut syn), Verdict::Forward(Side::Inside));
    let events: Vec<ftpnat::events::Event> = std::iter::from_fn(|| e.poll_event()).collect();
    let n64 = events.iter().find(|k| k.kind() == "nat64_flow").expect("a nat64_flow event");
    match n64 {
        ftpnat::events::Event::Nat64Flow { inside6, remote6, .. } => {
            assert_eq!((*inside6.ip(), inside6.port()), (HOST6, 80));
            assert_eq!((*remote6.ip(), remote6.port()), (client_synth(), 50000));
        }
        other => panic!("{other:?}"),
    }
}
