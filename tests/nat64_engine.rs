//! NAT64 through the engine (issue 14): an IPv6 LAN client reaches IPv4 servers with the mapping,
//! filtering and ICMP behaviour of IPv4 NAT, every packet that leaves checked by an independent parser
//! (etherparse: headers, lengths and every checksum), and the adversary's attempts refused and counted.
//!
//! Owns: these scenarios and their small packet builders. Must not: reach into the engine's internals
//! beyond its public API.

#[path = "nat64_support/engine.rs"]
mod nat64_engine_support;

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{Icmpv4Type, PacketBuilder};
use ftpnat::{DropReason, Engine, Instant, Side, Verdict};

use nat64_engine_support::*;

#[test]
fn without_nat64_ipv6_is_dropped_as_before() {
    let mut e = Engine::new(config4());
    let mut p = udp6(CLIENT6, server6(), 40000, 53, b"q", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Drop(DropReason::NotIpv4));
    assert!(e.nat64().is_none());
}

#[test]
fn udp_goes_out_as_ipv4_and_the_reply_comes_back_as_ipv6() {
    let mut e = engine64();
    let mut p = udp6(CLIENT6, server6(), 40000, 53, b"query", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Forward(Side::Outside));
    let out = seen(&p);
    assert_eq!((out.src, out.dst), (PUBLIC.to_string(), SERVER4.to_string()));
    assert_eq!(
        (out.sport, out.dport, out.ttl),
        (40000, 53, 63),
        "port kept (endpoint-independent), TTL = hop limit - 1"
    );
    assert_eq!(out.payload, b"query");
    // The reply, from the server to the mapping.
    let mut r = udp4(SERVER4, PUBLIC, 53, out.sport, b"answer", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut r), Verdict::Forward(Side::Inside));
    let back = seen(&r);
    assert_eq!((back.src, back.dst), (server6().to_string(), CLIENT6.to_string()));
    assert_eq!((back.sport, back.dport, back.ttl), (53, 40000, 59));
    assert_eq!(back.payload, b"answer");
    // Filtering as IPv4 NAT: another remote is refused.
    let mut x = udp4(Ipv4Addr::new(203, 0, 113, 77), PUBLIC, 53, out.sport, b"spoof", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut x), Verdict::Drop(DropReason::Filtered));
    let m = e.metrics();
    assert_eq!((m.nat64_to_v4, m.nat64_to_v6), (1, 1));
}

#[test]
fn tcp_and_echo_through_nat64() {
    let mut e = engine64();
    let mut syn = tcp6(CLIENT6, server6(), 41000, 80, 1000, 0, TcpKind::Syn, b"", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut syn), Verdict::Forward(Side::Outside));
    let s = seen(&syn);
    assert_eq!((s.src.as_str(), s.dport, s.seq), (PUBLIC.to_string().as_str(), 80, 1000));
    let mut synack = tcp4(SERVER4, PUBLIC, 80, s.sport, 5000, 1001, TcpKind::SynAck, b"", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut synack), Verdict::Forward(Side::Inside));
    let b = seen(&synack);
    assert!(b.v6 && b.dport == 41000 && b.ack == 1001, "{b:?}");
    // Echo: the identifier is the mapping's.
    let mut ping = echo6(CLIENT6, server6(), 0x1234, 1, true, 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut ping), Verdict::Forward(Side::Outside));
    let pv4 = seen(&ping);
    assert_eq!(pv4.icmp, Some((8, 0)));
    let mut pong = echo4(SERVER4, PUBLIC, pv4.sport, 1, false, 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut pong), Verdict::Forward(Side::Inside));
    let p6 = seen(&pong);
    assert_eq!((p6.icmp, p6.sport, p6.dst), (Some((129, 0)), 0x1234, CLIENT6.to_string()));
    assert_eq!(e.flow_count(), 2);
    assert_eq!(e.nat64().unwrap().hosts.len(), 1, "one stand-in for the one IPv6 host");
}

#[test]
fn the_gateway_answers_pings_to_its_ipv6_address_and_hop_limit_1() {
    let mut e = engine64();
    let mut ping = echo6(CLIENT6, GW6, 7, 1, true, 64);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut ping),
        Verdict::Drop(DropReason::LocalDelivery)
    );
    let t = e.poll_transmit().expect("echo reply");
    let r = seen(&t.packet);
    assert_eq!((t.side, r.icmp, r.src.as_str()), (Side::Inside, Some((129, 0)), GW6.to_string().as_str()));
    // RFC 4443 §3.3: hop limit exceeded in transit, from the gateway's own address, quoting the packet.
    let mut last = udp6(CLIENT6, server6(), 40001, 33434, b"trace", 1);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut last),
        Verdict::Drop(DropReason::TtlExceeded)
    );
    let t = e.poll_transmit().expect("time exceeded");
    let r = seen(&t.packet);
    assert_eq!(
        (r.icmp, r.src.as_str(), r.dst.as_str()),
        (Some((3, 0)), GW6.to_string().as_str(), CLIENT6.to_string().as_str())
    );
    assert_eq!(e.nat64().unwrap().hosts.len(), 0, "nothing was created: no stand-in kept");
}

#[test]
fn packet_too_big_for_the_wan_is_reported_as_ipv6_packet_too_big() {
    let mut cfg = config64();
    cfg.mtu[Side::Outside.index()] = 1400;
    let mut e = Engine::new(cfg);
    // 1500-byte IPv6 = 1480-byte IPv4 with DF (> 1260, RFC 7915 §5.1) over a 1400 WAN.
    let mut big = udp6(CLIENT6, server6(), 40000, 9, &vec![7u8; 1500 - 48], 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut big), Verdict::Drop(DropReason::FragNeeded));
    let t = e.poll_transmit().expect("packet too big");
    let r = seen(&t.packet);
    assert_eq!((t.side, r.icmp), (Side::Inside, Some((2, 0))), "{r:?}");
    assert_eq!(r.rest, 1420, "RFC 7915 §4.2: the IPv4 MTU plus 20");
    assert_eq!(r.src, GW6.to_string(), "sent by the gateway");
}

#[test]
fn an_ipv4_error_comes_back_as_icmpv6_with_its_quote_translated() {
    let mut e = engine64();
    let mut p = udp6(CLIENT6, server6(), 40000, 9999, b"anyone?", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
    let sent = p.clone();
    let o = seen(&sent);
    // The server answers port unreachable, quoting what it got.
    let mut err = Vec::new();
    PacketBuilder::ipv4(SERVER4.octets(), PUBLIC.octets(), 60)
        .icmpv4(Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut err, &sent)
        .unwrap();
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut err), Verdict::Forward(Side::Inside));
    let r = seen(&err);
    assert_eq!(
        (r.icmp, r.dst.as_str()),
        (Some((1, 4)), CLIENT6.to_string().as_str()),
        "RFC 7915 §4.2: port unreachable"
    );
    // The quote is the client's own datagram again.
    let q = etherparse::Ipv6HeaderSlice::from_slice(&r.payload).expect("an IPv6 quote");
    assert_eq!((q.source_addr(), q.destination_addr()), (CLIENT6, server6()));
    let udp = &r.payload[40..48];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 40000, "quoted source port is the client's {o:?}");
}

#[test]
fn large_ipv4_datagrams_are_fragmented_to_fit_ipv6() {
    let mut e = engine64();
    let mut p = udp6(CLIENT6, server6(), 40000, 5000, b"hi", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
    let sport = seen(&p).sport;
    // DF clear, 1500 bytes: as IPv6 it would be 1520 > the LAN's 1500.
    let mut big = udp4(SERVER4, PUBLIC, 5000, sport, &vec![3u8; 1472], 60);
    set_df(&mut big, false);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut big), Verdict::Forward(Side::Inside));
    let mut pieces = vec![big];
    while let Some(t) = e.poll_transmit() {
        assert_eq!(t.side, Side::Inside);
        pieces.push(t.packet);
    }
    assert!(pieces.len() >= 2, "fragmented");
    let mut total = 0;
    for p in &pieces {
        assert!(p.len() <= 1500, "fits the LAN MTU: {}", p.len());
        let s = seen(p);
        assert!(s.v6 && s.frag.is_some(), "{s:?}");
        total += p.len() - 48;
    }
    assert_eq!(total, 1480, "every byte of the UDP datagram, once");
    // With DF set it is refused with the MTU an IPv4 sender must use (1500 - 20).
    let mut df = udp4(SERVER4, PUBLIC, 5000, sport, &vec![3u8; 1472], 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut df), Verdict::Drop(DropReason::FragNeeded));
    let t = e.poll_transmit().expect("frag needed");
    let r = seen(&t.packet);
    assert_eq!((t.side, r.icmp, r.rest & 0xffff), (Side::Outside, Some((3, 4)), 1480));
}

#[test]
fn adversary_sources_outside_inside6_and_ipv4_stand_in_spoofing() {
    let mut e = engine64();
    let stranger: Ipv6Addr = "2001:db8:99::5".parse().unwrap();
    let mut p = udp6(stranger, server6(), 1, 2, b"x", 64);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut p),
        Verdict::Drop(DropReason::SpoofedSource)
    );
    // A real client gets a stand-in; an IPv4 LAN host sending from (or to) it is refused.
    let mut ok = udp6(CLIENT6, server6(), 40000, 53, b"q", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut ok);
    let alias = e.nat64().unwrap().hosts.alias(CLIENT6).unwrap();
    let mut forged = udp4(alias, SERVER4, 40000, 53, b"hijack", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut forged), Verdict::Drop(DropReason::Martian));
    let mut to_alias = udp4(Ipv4Addr::new(10, 0, 0, 5), alias, 1, 40000, b"x", 64);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut to_alias),
        Verdict::Drop(DropReason::Martian)
    );
    // From the WAN, 240.0.0.0/4 is a martian too.
    let mut w = udp4(alias, PUBLIC, 53, 40000, b"x", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut w), Verdict::Drop(DropReason::Martian));
}

#[test]
fn adversary_destinations_the_prefix_does_not_map() {
    // The well-known prefix carries global IPv4 addresses only (RFC 6052 §3.1).
    let mut cfg = config64();
    cfg.nat64.as_mut().unwrap().prefix = "64:ff9b::/96".parse().unwrap();
    let mut e = Engine::new(cfg);
    for dst in ["64:ff9b::10.0.0.5", "64:ff9b::127.0.0.1", "2001:db8:1::1", "ff02::1", "fe80::1"] {
        let mut p = udp6(CLIENT6, dst.parse().unwrap(), 1, 2, b"x", 64);
        assert_eq!(
            e.handle_packet(Instant::ZERO, Side::Inside, &mut p),
            Verdict::Drop(DropReason::Nat64Unroutable),
            "{dst}"
        );
    }
    // Non-canonical: a /64 prefix leaves the u-octet (bits 64..71) and the suffix, which must be zero.
    let mut cfg = config64();
    cfg.nat64.as_mut().unwrap().prefix = "2001:db8:6464::/64".parse().unwrap();
    let mut e = Engine::new(cfg);
    let good: Ipv6Addr = "2001:db8:6464:0:cb:71:500::".parse().unwrap();
    let mut p = udp6(CLIENT6, good, 1, 2, b"x", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Forward(Side::Outside));
    assert_eq!(seen(&p).dst, SERVER4.to_string());
    for bad in ["2001:db8:6464:0:1cb:71:500::", "2001:db8:6464:0:cb:71:500:1"] {
        let mut p = udp6(CLIENT6, bad.parse().unwrap(), 1, 2, b"x", 64);
        assert_eq!(
            e.handle_packet(Instant::ZERO, Side::Inside, &mut p),
            Verdict::Drop(DropReason::Nat64Unroutable),
            "{bad}"
        );
    }
    assert_eq!(e.nat64().unwrap().hosts.len(), 1, "refused packets leave no stand-in behind");
}

#[test]
fn adversary_sprays_source_addresses_across_its_64() {
    let mut e = engine64();
    let limit = ftpnat::nat64::DEFAULT_MAX_PER_64 as u16;
    for i in 0..limit + 5 {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0x100, i);
        let mut p = udp6(src, server6(), 40000, 53, b"q", 64);
        let v = e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
        if i < limit {
            assert_eq!(v, Verdict::Forward(Side::Outside), "{i}");
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::Nat64HostLimit), "{i}");
        }
    }
    assert_eq!(e.metrics().drops_of(DropReason::Nat64HostLimit), 5);
    // When the flows expire, the stand-ins go, and the /64 may use new addresses again.
    e.handle_timeout(Instant::ZERO + std::time::Duration::from_secs(3600));
    assert_eq!((e.flow_count(), e.nat64().unwrap().hosts.len()), (0, 0));
    let mut p = udp6(Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0x200, 1), server6(), 1, 53, b"q", 64);
    assert_eq!(
        e.handle_packet(Instant::ZERO + std::time::Duration::from_secs(3600), Side::Inside, &mut p),
        Verdict::Forward(Side::Outside)
    );
}

#[test]
fn adversary_fragmented_icmp_and_routing_headers_are_refused() {
    let mut e = engine64();
    // An ICMPv6 echo in a Fragment header: its checksum covers a length no fragment knows.
    let mut frag = echo6(CLIENT6, server6(), 1, 1, true, 64);
    insert_fragment_header(&mut frag, 0, true, 77);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut frag),
        Verdict::Drop(DropReason::Nat64Untranslatable)
    );
    // RFC 7915 §5.1: a routing header with segments left is answered with a parameter problem.
    let mut rh = udp6(CLIENT6, server6(), 1, 2, b"x", 64);
    insert_routing_header(&mut rh, 1);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut rh),
        Verdict::Drop(DropReason::Nat64Untranslatable)
    );
    let t = e.poll_transmit().expect("parameter problem");
    let r = seen(&t.packet);
    assert_eq!((r.icmp, r.rest), (Some((4, 0)), 43), "pointer at Segments Left");
}

#[test]
fn the_per_host_flow_limit_counts_per_ipv6_host() {
    let mut cfg = config64();
    cfg.max_flows_per_host = 3;
    let mut e = Engine::new(cfg);
    for port in 0..4u16 {
        let mut p = udp6(CLIENT6, server6(), 40000 + port, 53, b"q", 64);
        let v = e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
        let want =
            if port < 3 { Verdict::Forward(Side::Outside) } else { Verdict::Drop(DropReason::HostFlowLimit) };
        assert_eq!(v, want, "{port}");
    }
    let other: Ipv6Addr = "2001:db8:64::3".parse().unwrap();
    let mut p = udp6(other, server6(), 40000, 53, b"q", 64);
    assert_eq!(
        e.handle_packet(Instant::ZERO, Side::Inside, &mut p),
        Verdict::Forward(Side::Outside),
        "another host is not affected"
    );
}

/// RFC 7915 §5.1.1: an IPv6 fragment becomes an IPv4 fragment (identification's low 16 bits, MF = M,
/// offset kept, DF clear); the later fragment follows the first's translation.
#[test]
fn ipv6_fragments_become_ipv4_fragments() {
    let mut e = engine64();
    let whole = udp6(CLIENT6, server6(), 40000, 7000, &[9u8; 64], 64);
    let upper = &whole[40..];
    let (a, b) = upper.split_at(40);
    let frag = |off: u16, more: bool, data: &[u8]| {
        let mut p = whole[..40].to_vec();
        p.extend_from_slice(data);
        p[4..6].copy_from_slice(&(data.len() as u16).to_be_bytes());
        insert_fragment_header(&mut p, off, more, 0x1234_5678);
        p
    };
    let mut first = frag(0, true, a);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut first), Verdict::Forward(Side::Outside));
    let mut second = frag(40, false, b);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut second), Verdict::Forward(Side::Outside));
    let (f1, f2) = (seen(&first), seen(&second));
    assert_eq!((f1.frag, f2.frag), (Some((0, true)), Some((40, false))));
    assert_eq!(
        (f1.src.as_str(), f2.src.as_str()),
        (PUBLIC.to_string().as_str(), PUBLIC.to_string().as_str())
    );
    for p in [&first, &second] {
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0x5678, "identification's low 16 bits");
        assert_eq!(p[6] & 0x40, 0, "DF clear");
    }
    // Reassembled, the UDP checksum is right for the IPv4 pseudo-header.
    let mut l4 = first[20..].to_vec();
    l4.extend_from_slice(&second[20..]);
    let mut v4 = Vec::new();
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    PacketBuilder::ipv4(PUBLIC.octets(), SERVER4.octets(), 63)
        .udp(sport, 7000)
        .write(&mut v4, &l4[8..])
        .unwrap();
    assert_eq!(&v4[20..], &l4[..], "the reassembled datagram is the translated one, checksum included");
}

/// Hairpinning (RFC 4787 REQ-9) from an IPv6 client: the public address under the prefix reaches an
/// inside IPv4 server through its port forward, and the server's answer returns as IPv6.
#[test]
fn an_ipv6_client_reaches_a_forwarded_inside_server_by_hairpin() {
    let mut cfg = config64();
    cfg.forwards.push("udp:5353=10.0.0.9:53".parse().unwrap());
    let mut e = Engine::new(cfg);
    let public6: Ipv6Addr = "64:ff9b:1::198.51.100.1".parse().unwrap();
    let mut p = udp6(CLIENT6, public6, 40000, 5353, b"q", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Forward(Side::Inside));
    let to_server = seen(&p);
    assert!(!to_server.v6 && to_server.dst == "10.0.0.9" && to_server.dport == 53, "{to_server:?}");
    assert_eq!(to_server.src, PUBLIC.to_string());
    let mut r = udp4(Ipv4Addr::new(10, 0, 0, 9), PUBLIC, 53, to_server.sport, b"a", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut r), Verdict::Forward(Side::Inside));
    let back = seen(&r);
    assert!(back.v6 && back.dst == CLIENT6.to_string() && back.src == public6.to_string(), "{back:?}");
    assert_eq!((back.sport, back.dport), (5353, 40000));
}

/// An ICMPv6 error from the IPv6 client (port unreachable for the server's datagram) reaches the IPv4
/// server as ICMPv4 port unreachable quoting the datagram as the server sent it (RFC 7915 §5.2).
#[test]
fn an_icmpv6_error_from_the_client_reaches_the_server_as_icmpv4() {
    let mut e = engine64();
    let mut p = udp6(CLIENT6, server6(), 40000, 53, b"q", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
    let public_port = seen(&p).sport;
    let mut r = udp4(SERVER4, PUBLIC, 53, public_port, b"late answer", 60);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Outside, &mut r), Verdict::Forward(Side::Inside));
    // The client's socket is closed: it answers port unreachable, quoting what it got.
    let mut err = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port))
        .write(&mut err, &r)
        .unwrap();
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut err), Verdict::Forward(Side::Outside));
    let s = seen(&err);
    assert_eq!(
        (s.icmp, s.src.as_str(), s.dst.as_str()),
        (Some((3, 3)), PUBLIC.to_string().as_str(), SERVER4.to_string().as_str())
    );
    let q = etherparse::Ipv4HeaderSlice::from_slice(&s.payload).expect("an IPv4 quote");
    assert_eq!(
        (q.source_addr(), q.destination_addr()),
        (SERVER4, PUBLIC),
        "the datagram as the server sent it"
    );
    let udp = &s.payload[20..28];
    assert_eq!(
        u16::from_be_bytes([udp[2], udp[3]]),
        public_port,
        "quoted destination port is the public one"
    );
}

/// `ftpnat events`: a NAT64 flow's `flow_new` (with the stand-in) is followed by `nat64_flow` naming
/// its IPv6 endpoints; an IPv4 flow has none.
#[test]
fn events_name_the_ipv6_endpoints_of_a_nat64_flow() {
    let mut e = engine64();
    e.set_events(true);
    let mut p = udp6(CLIENT6, server6(), 40000, 53, b"q", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut p);
    let mut v4 = udp4(Ipv4Addr::new(10, 0, 0, 2), SERVER4, 40000, 53, b"q", 64);
    e.handle_packet(Instant::ZERO, Side::Inside, &mut v4);
    let kinds: Vec<ftpnat::events::Event> = std::iter::from_fn(|| e.poll_event()).collect();
    let names: Vec<&str> = kinds.iter().map(|k| k.kind()).collect();
    assert_eq!(names, ["flow_new", "nat64_flow", "flow_new"]);
    match &kinds[1] {
        ftpnat::events::Event::Nat64Flow { inside6, remote6, .. } => {
            assert_eq!((*inside6.ip(), inside6.port()), (CLIENT6, 40000));
            assert_eq!((*remote6.ip(), remote6.port()), (server6(), 53));
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 16's NAT log through NAT64: an operator must trace a public port back to the IPv6
/// subscriber, so block and session records name its IPv6 address (RFC 8158 sourceIPv6Address),
/// never the 240/4 stand-in — also for the block released after the host's last connection, when
/// the stand-in may already serve nobody, and while another IPv6 host is active.
#[test]
fn nat_log_records_name_the_ipv6_subscriber() {
    use ftpnat::nat::{Allocation, BlockPolicy, Record};
    let hold = std::time::Duration::from_secs(60);
    let mut c = config64();
    c.pool.allocation = Allocation::Blocks(BlockPolicy { size: 64, per_host: 2, hold });
    c.pool.log_sessions = true;
    let mut e = Engine::new(c);
    e.set_nat_log(true);
    let drain = |e: &mut Engine| std::iter::from_fn(|| e.nat_log_mut().pop()).collect::<Vec<_>>();
    let other6 = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 7);

    let mut p = udp6(CLIENT6, server6(), 40000, 53, b"q", 64);
    assert_eq!(e.handle_packet(Instant::ZERO, Side::Inside, &mut p), Verdict::Forward(Side::Outside));
    let public = seen(&p).sport;
    let recs = drain(&mut e);
    let alias = match &recs[..] {
        [Record::BlockAllocated { inside, inside6, ports, .. }, Record::SessionCreated { inside: i, inside6: s6, public: pe, .. }] =>
        {
            assert_eq!((*inside6, *s6), (Some(CLIENT6), Some(CLIENT6)), "{recs:?}");
            assert!(ports.contains(public) && pe.port() == public && i.addr() == *inside);
            *inside
        }
        other => panic!("{other:?}"),
    };
    assert!(alias.octets()[0] >= 240, "the stand-in is only the allocator's key");
    // `show mapping PUBLIC:PORT` traces the port to the subscriber.
    use ftpnat::ops::view::{mapping, MappingTarget};
    let m = mapping(&e, Instant::ZERO, MappingTarget::Public(std::net::SocketAddrV4::new(PUBLIC, public)));
    assert_eq!(m["mappings"][0]["inside"], format!("[{CLIENT6}]:40000"), "{m}");
    assert_eq!(m["block"]["owner"], CLIENT6.to_string(), "{m}");
    assert!(!m.to_string().contains(&alias.to_string()), "{m}");

    // The flow times out: its session record still names the host, and the block, held for `hold`
    // after the stand-in is given back, keeps the name until its release record is written.
    let t1 = Instant::from_secs(400);
    e.handle_timeout(t1);
    let recs = drain(&mut e);
    assert!(
        matches!(recs[..], [Record::SessionDeleted { inside6: Some(h), .. }] if h == CLIENT6),
        "{recs:?}"
    );
    assert_eq!(e.nat64().unwrap().hosts.len(), 0, "the stand-in went with the last flow");
    assert_eq!(e.nat().log().host6(alias), Some(CLIENT6), "named while its block is held");

    // Meanwhile another subscriber: its records name it, not the first.
    let mut q = udp6(other6, server6(), 40001, 53, b"q", 64);
    assert_eq!(e.handle_packet(t1, Side::Inside, &mut q), Verdict::Forward(Side::Outside));
    let recs = drain(&mut e);
    assert!(!recs.is_empty() && recs.iter().all(|r| r.inside6() == Some(other6)), "{recs:?}");

    e.handle_timeout(Instant::from_secs(400 + 2 * 60 + 1));
    let released: Vec<_> = drain(&mut e)
        .into_iter()
        .filter(|r| matches!(r, Record::BlockReleased { inside, .. } if *inside == alias))
        .collect();
    assert!(
        matches!(released[..], [Record::BlockReleased { inside6: Some(h), .. }] if h == CLIENT6),
        "{released:?}"
    );
    assert_eq!(e.nat().log().host6(alias), None, "forgotten after the release: bounded by live hosts");
}

/// `--workers 2` (issue 18): an IPv6 host is its /64's worker's. Hosts of two /64s, one per worker,
/// each sent on the *other* worker's queue (as if the kernel had chosen wrongly): the handoff takes
/// each to its owner, whose engine gives it a stand-in and a public port of its own slice, so it leaves
/// on its owner's WAN queue; the IPv4 reply, also read by the wrong worker, is handed to the owner and
/// reaches the host as IPv6. Without the IPv6 rule every IPv6 packet would go to worker 0 and worker 1's
/// host would leave with a port of worker 0's slice.
#[test]
fn two_workers_steer_ipv6_hosts_by_their_64() {
    use ftpnat::io::workers::MemGateway;
    use ftpnat::steer::{host6_worker, slice_range};
    use std::time::Duration;

    let mut config = config4();
    config.nat64 = Some(ftpnat::nat64::Nat64Config::new(
        PREFIX.parse().unwrap(),
        vec!["2001:db8:64::/56".parse().unwrap()],
    ));
    config.validate().unwrap();
    let MemGateway { lans, wans, stop: handle, done } = MemGateway::start(&config, 2, None).unwrap();
    let wait = Duration::from_secs(5);
    for w in 0..2u16 {
        let host = (0..=255u16)
            .map(|n| Ipv6Addr::new(0x2001, 0xdb8, 0x64, n, 0, 0, 0, 2))
            .find(|h| host6_worker(*h, 2) == w)
            .unwrap();
        let wrong = usize::from(1 - w);
        lans[wrong].inject(&udp6(host, server6(), 40000, 53, b"query", 64)).unwrap();
        let out = wans[usize::from(w)].take_within(wait).unwrap().expect("translated by the host's worker");
        let s = seen(&out);
        assert!(!s.v6 && s.src == PUBLIC.to_string(), "{s:?}");
        assert!(slice_range(&config.port_range, 2, w).contains(&s.sport), "worker {w}'s slice: {}", s.sport);
        wans[wrong].inject(&udp4(SERVER4, PUBLIC, 53, s.sport, b"answer", 64)).unwrap();
        let back =
            lans[usize::from(w)].take_within(wait).unwrap().expect("back as IPv6 on its worker's queue");
        let b = seen(&back);
        assert!(b.v6 && b.dst == host.to_string() && b.dport == 40000, "{b:?}");
        assert!(lans[wrong].take().unwrap().is_none() && wans[wrong].take().unwrap().is_none());
    }
    handle.stop().unwrap();
    let (result, counters) = done.join().unwrap().unwrap();
    assert!(result.is_ok());
    let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
    assert_eq!(get("workers.handoff.sent"), 4, "each packet read by the wrong worker: {counters:?}");
    assert_eq!((get("nat64.to_v4"), get("nat64.to_v6")), (2, 2), "{counters:?}");
    assert_eq!(get("flows.created"), 2);
}

/// The adversary with `--workers 2`: one IPv6 host sprays 20 source addresses of its /64, its packets
/// read by both workers' queues in turn. The /64 is one worker's, so the per-/64 share of stand-ins
/// (16) holds exactly as with one engine: 16 addresses get through, 4 are refused and counted, and
/// the other worker creates nothing.
#[test]
fn address_spraying_over_two_workers_meets_the_one_per_64_share() {
    use ftpnat::io::workers::MemGateway;
    use ftpnat::steer::host6_worker;
    use std::time::Duration;

    let config = config64();
    let share = config.nat64.as_ref().unwrap().max_per_64;
    let MemGateway { lans, wans, stop, done } = MemGateway::start(&config, 2, None).unwrap();
    let owner = usize::from(host6_worker(CLIENT6, 2));
    const SPRAYED: u16 = 20;
    for i in 0..SPRAYED {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0x66, 2 + i);
        lans[usize::from(i % 2)].inject(&udp6(src, server6(), 40000, 53, b"q", 64)).unwrap();
    }
    let mut out = 0u32;
    while let Some(p) = wans[owner].take_within(Duration::from_secs(2)).unwrap() {
        assert!(!seen(&p).v6);
        out += 1;
    }
    assert_eq!(out, share, "the share of one /64");
    assert!(wans[1 - owner].take().unwrap().is_none(), "nothing leaves the other worker");
    stop.stop().unwrap();
    let (result, counters) = done.join().unwrap().unwrap();
    assert!(result.is_ok());
    let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
    assert_eq!(get("drops.nat64_host_limit"), u64::from(u32::from(SPRAYED) - share), "{counters:?}");
    assert_eq!(get("workers.handoff.sent"), u64::from(SPRAYED / 2), "half were read by the other worker");
    assert_eq!(get("nat64.to_v4"), u64::from(share));
}
