//! NAT scenarios (RFC 4787, RFC 5382, RFC 5508, RFC 1812) driven packet by packet, every emitted packet
//! checked by an independent parser.

mod engine_support;
use engine_support::*;
use ftpnat::config::Forward;
use ftpnat::{DropReason, Side, Verdict};
use std::net::Ipv4Addr;

#[test]
fn rfc4787_outbound_udp_keeps_port_and_maps_endpoint_independently() {
    let mut r = Rig::new(config());
    let (side, s) = r.pass(Side::Inside, udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    assert_eq!(side, Side::Outside);
    assert_eq!((s.src, s.sport, s.dst, s.dport, s.ttl), (PUBLIC, 5353, REMOTE, 53, 63));
    // REQ-1: the same inside endpoint towards another destination keeps the same mapping.
    let (_, s2) = r.pass(Side::Inside, udp(LAN_HOST, 5353, REMOTE2, 9999, b"q"));
    assert_eq!((s2.src, s2.sport), (PUBLIC, 5353));
    // The answer comes back to the inside host.
    let (side, back) = r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 5353, b"a"));
    assert_eq!(side, Side::Inside);
    assert_eq!((back.src, back.sport, back.dst, back.dport), (REMOTE, 53, LAN_HOST, 5353));
    // REQ-8 default: address-and-port-dependent filtering.
    let (v, _) = r.send(Side::Outside, udp(REMOTE, 54, PUBLIC, 5353, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Filtered));
    let (v, _) = r.send(Side::Outside, udp(REMOTE, 53, PUBLIC, 5354, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    assert_eq!(r.engine.metrics().drops_of(DropReason::Filtered), 1);
}

#[test]
fn second_host_with_same_port_gets_another_public_port() {
    let mut r = Rig::new(config());
    let (_, a) = r.pass(Side::Inside, udp(LAN_HOST, 4000, REMOTE, 53, b"q"));
    let (_, b) = r.pass(Side::Inside, udp(LAN_HOST2, 4000, REMOTE, 53, b"q"));
    assert_eq!(a.sport, 4000);
    assert_ne!(b.sport, 4000);
    let (_, back) = r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, b.sport, b"a"));
    assert_eq!((back.dst, back.dport), (LAN_HOST2, 4000));
}

#[test]
fn udp_checksum_zero_stays_zero() {
    let mut r = Rig::new(config());
    let mut p = udp(LAN_HOST, 7000, REMOTE, 7, b"zero");
    p[26] = 0;
    p[27] = 0;
    let (_, out) = r.send(Side::Inside, p);
    assert_eq!(&out[0].1[26..28], &[0, 0]);
}

#[test]
fn tcp_outbound_handshake_and_rst_keeps_the_mapping_for_the_transitory_timeout() {
    let mut r = Rig::new(config());
    let (_, s) = r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 80, 1, 0, SYN, b""));
    assert_eq!((s.src, s.sport, s.syn), (PUBLIC, 40000, true));
    let (_, s) = r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, 500, 2, SYNACK, b""));
    assert_eq!((s.dst, s.dport), (LAN_HOST, 40000));
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, ACK, b""));
    r.pass(Side::Inside, tcp(LAN_HOST, 40000, REMOTE, 80, 2, 501, PSHACK, b"GET / HTTP/1.0\r\n\r\n"));
    assert_eq!(r.engine.flow_count(), 1);
    // An exact RST (RFC 5961 §3.2: at the client's RCV.NXT) closes the connection; RFC 7857 §2.2: the
    // mapping stays about 4 minutes (the transitory timeout), not hours, so its port is not reused at once.
    let rst = Flags { rst: true, ack: true, ..Default::default() };
    r.pass(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, 501, 20, rst, b""));
    assert_eq!(r.engine.metrics().flows_closed, 1);
    r.advance(11);
    assert_eq!(r.engine.flow_count(), 1);
    r.advance(230);
    assert_eq!(r.engine.flow_count(), 0);
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 80, PUBLIC, 40000, 501, 20, ACK, b"late"));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
}

#[test]
fn rfc5382_established_timeout_is_at_least_2h4m() {
    let mut r = Rig::new(config());
    r.pass(Side::Inside, tcp(LAN_HOST, 40001, REMOTE, 22, 1, 0, SYN, b""));
    r.pass(Side::Outside, tcp(REMOTE, 22, PUBLIC, 40001, 9, 2, SYNACK, b""));
    r.pass(Side::Inside, tcp(LAN_HOST, 40001, REMOTE, 22, 2, 10, ACK, b""));
    r.advance(2 * 3600 + 3 * 60);
    assert_eq!(r.engine.flow_count(), 1, "idle established connection kept for 2h3m");
    r.pass(Side::Outside, tcp(REMOTE, 22, PUBLIC, 40001, 10, 2, PSHACK, b"x"));
    r.advance(2 * 3600 + 5 * 60);
    assert_eq!(r.engine.flow_count(), 0);
}

#[test]
fn tcp_picked_up_mid_stream_from_inside_keeps_its_port() {
    let mut r = Rig::new(config());
    let (_, s) = r.pass(Side::Inside, tcp(LAN_HOST, 50000, REMOTE, 443, 777, 888, PSHACK, b"data"));
    assert_eq!((s.src, s.sport), (PUBLIC, 50000));
    let (_, back) = r.pass(Side::Outside, tcp(REMOTE, 443, PUBLIC, 50000, 888, 781, ACK, b""));
    assert_eq!(back.dst, LAN_HOST);
    // From the outside, a non-SYN never creates state.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 443, PUBLIC, 50001, 1, 1, ACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
}

#[test]
fn port_forward_dnat_and_hairpin() {
    let mut c = config();
    c.forwards.push("tcp:2121=10.0.0.5:21".parse::<Forward>().unwrap());
    let mut r = Rig::new(c);
    let (side, s) = r.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 2121, 1, 0, SYN, b""));
    assert_eq!(side, Side::Inside);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (REMOTE, 33000, Ipv4Addr::new(10, 0, 0, 5), 21));
    let (side, s) =
        r.pass(Side::Inside, tcp(Ipv4Addr::new(10, 0, 0, 5), 21, REMOTE, 33000, 5, 2, SYNACK, b""));
    assert_eq!(side, Side::Outside);
    assert_eq!((s.src, s.sport), (PUBLIC, 2121));
    // Non-SYN to a forward with no connection: a connection in progress when the gateway (re)started,
    // picked up from the outside too (as Linux conntrack does).
    let (side, s) = r.pass(Side::Outside, tcp(REMOTE, 33001, PUBLIC, 2121, 1, 1, ACK, b""));
    assert_eq!((side, s.dst, s.dport), (Side::Inside, Ipv4Addr::new(10, 0, 0, 5), 21));
    // A SYN-ACK or an RST still opens nothing.
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 33002, PUBLIC, 2121, 1, 1, SYNACK, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NotSyn));
    let rst = Flags { rst: true, ..Default::default() };
    let (v, _) = r.send(Side::Outside, tcp(REMOTE, 33003, PUBLIC, 2121, 1, 1, rst, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    // RFC 4787 REQ-9: an inside host reaches the forward through the public address.
    let (side, s) = r.pass(Side::Inside, tcp(LAN_HOST, 41000, PUBLIC, 2121, 1, 0, SYN, b""));
    assert_eq!(side, Side::Inside);
    assert_eq!((s.src, s.dst, s.dport), (PUBLIC, Ipv4Addr::new(10, 0, 0, 5), 21));
    let (side, s2) =
        r.pass(Side::Inside, tcp(Ipv4Addr::new(10, 0, 0, 5), 21, PUBLIC, s.sport, 9, 2, SYNACK, b""));
    assert_eq!(side, Side::Inside);
    assert_eq!((s2.src, s2.sport, s2.dst, s2.dport), (PUBLIC, 2121, LAN_HOST, 41000));
}

#[test]
fn icmp_echo_is_translated_by_identifier() {
    let mut r = Rig::new(config());
    let (_, s) = r.pass(Side::Inside, icmp_echo(LAN_HOST, REMOTE, 0x1234, 1, true));
    assert_eq!((s.src, s.icmp_type, s.sport), (PUBLIC, Some(8), 0x1234));
    let (side, s) = r.pass(Side::Outside, icmp_echo(REMOTE, PUBLIC, 0x1234, 1, false));
    assert_eq!((side, s.dst, s.icmp_type), (Side::Inside, LAN_HOST, Some(0)));
    // An echo reply nobody asked for.
    let (v, _) = r.send(Side::Outside, icmp_echo(REMOTE, PUBLIC, 0x9999, 1, false));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
}

#[test]
fn gateway_answers_pings_on_both_of_its_addresses() {
    let mut r = Rig::new(config());
    let (v, out) = r.send(Side::Inside, icmp_echo(LAN_HOST, Ipv4Addr::new(10, 0, 0, 1), 7, 1, true));
    assert_eq!(v, Verdict::Drop(DropReason::LocalDelivery));
    let s = check(&out[0].1);
    assert_eq!(
        (out[0].0, s.src, s.dst, s.icmp_type),
        (Side::Inside, Ipv4Addr::new(10, 0, 0, 1), LAN_HOST, Some(0))
    );
    let (_, out) = r.send(Side::Outside, icmp_echo(REMOTE, PUBLIC, 7, 1, true));
    assert_eq!(check(&out[0].1).src, PUBLIC);
}

#[test]
fn rfc5508_icmp_error_is_translated_with_the_quoted_packet() {
    let mut r = Rig::new(config());
    let (_, out) = r.send(Side::Inside, udp(LAN_HOST, 6000, REMOTE, 9, b"hello"));
    let emitted = out[0].1.clone();
    // The remote says port unreachable, quoting what it got (the translated datagram).
    let b = etherparse::PacketBuilder::ipv4(REMOTE.octets(), PUBLIC.octets(), 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
    );
    let mut err = Vec::new();
    b.write(&mut err, &emitted).unwrap();
    let (side, s) = r.pass(Side::Outside, err);
    assert_eq!((side, s.src, s.dst, s.icmp_type), (Side::Inside, REMOTE, LAN_HOST, Some(3)));
    // The quoted datagram is the one the inside host sent.
    let quoted = check(&s.payload);
    assert_eq!((quoted.src, quoted.sport, quoted.dst, quoted.dport), (LAN_HOST, 6000, REMOTE, 9));
}

#[test]
fn inside_host_icmp_error_leaves_with_the_public_address() {
    let mut c = config();
    c.forwards.push("udp:5000=10.0.0.2:5000".parse::<Forward>().unwrap());
    let mut r = Rig::new(c);
    let (_, out) = r.send(Side::Outside, udp(REMOTE, 7777, PUBLIC, 5000, b"x"));
    let delivered = out[0].1.clone();
    let b = etherparse::PacketBuilder::ipv4(LAN_HOST.octets(), REMOTE.octets(), 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
    );
    let mut err = Vec::new();
    b.write(&mut err, &delivered).unwrap();
    let (side, s) = r.pass(Side::Inside, err);
    assert_eq!((side, s.src, s.dst), (Side::Outside, PUBLIC, REMOTE));
    let quoted = check(&s.payload);
    assert_eq!((quoted.src, quoted.sport, quoted.dst, quoted.dport), (REMOTE, 7777, PUBLIC, 5000));
}

#[test]
fn rfc1812_ttl_expiry_sends_time_exceeded() {
    let mut r = Rig::new(config());
    let mut p = udp(LAN_HOST, 1000, REMOTE, 33434, b"trace");
    let mut ip = ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap();
    ip.set_ttl(1);
    let (v, out) = r.send(Side::Inside, p);
    assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
    let s = check(&out[0].1);
    assert_eq!(
        (out[0].0, s.src, s.dst, s.icmp_type),
        (Side::Inside, Ipv4Addr::new(10, 0, 0, 1), LAN_HOST, Some(11))
    );
}

#[test]
fn df_packet_over_mtu_gets_fragmentation_needed_and_others_are_fragmented() {
    let mut c = config();
    c.mtu = [1500, 1000];
    let mut r = Rig::new(c);
    let big = vec![0x55u8; 1400];
    let mut p = udp(LAN_HOST, 1000, REMOTE, 9, &big);
    ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap().set_dont_frag(true);
    let (v, out) = r.send(Side::Inside, p);
    assert_eq!(v, Verdict::Drop(DropReason::FragNeeded));
    let s = check(&out[0].1);
    assert_eq!((s.icmp_type, out[0].0), (Some(3), Side::Inside));
    let icmp_hdr = &out[0].1[20..28];
    assert_eq!((icmp_hdr[1], u16::from_be_bytes([icmp_hdr[6], icmp_hdr[7]])), (4, 1000));
    // Without DF the gateway fragments (RFC 791).
    let mut p = udp(LAN_HOST, 1000, REMOTE, 9, &big);
    ftpnat::wire::Ipv4Packet::new_checked(&mut p[..]).unwrap().set_dont_frag(false);
    let (v, out) = r.send(Side::Inside, p);
    assert_eq!(v, Verdict::Forward(Side::Outside));
    assert_eq!(out.len(), 2);
    for (_, f) in &out {
        assert!(f.len() <= 1000);
        assert_eq!(check(f).src, PUBLIC);
    }
}

#[test]
fn fragments_are_translated_and_a_late_first_fragment_releases_the_rest() {
    let mut r = Rig::new(config());
    let payload = vec![7u8; 3000];
    let mut whole = udp(LAN_HOST, 2000, REMOTE, 9, &payload);
    ftpnat::wire::Ipv4Packet::new_checked(&mut whole[..]).unwrap().set_dont_frag(false);
    let frags = ftpnat::wire::ipv4::fragment(&whole, 1500).unwrap();
    assert_eq!(frags.len(), 3);
    // Later fragments first: held until the first one tells the translation.
    let (v, _) = r.send(Side::Inside, frags[2].clone());
    assert_eq!(v, Verdict::Held);
    let (_, out) = r.send(Side::Inside, frags[0].clone());
    assert_eq!(out.len(), 2);
    let (_, out2) = r.send(Side::Inside, frags[1].clone());
    for (_, f) in out.iter().chain(out2.iter()) {
        let s = check(f);
        assert_eq!((s.src, s.dst), (PUBLIC, REMOTE));
    }
    // A later fragment whose first never comes is dropped with its reason once its wait ends.
    let other = udp(LAN_HOST, 2001, REMOTE, 9, &payload);
    let mut f = ftpnat::wire::ipv4::fragment(&other, 1500).unwrap();
    ftpnat::wire::Ipv4Packet::new_checked(&mut f[1][..]).unwrap().set_ident(4242);
    let (v, _) = r.send(Side::Inside, f[1].clone());
    assert_eq!(v, Verdict::Held);
    r.advance(3);
    assert_eq!(r.engine.metrics().drops_of(DropReason::FragmentNoState), 1);
}

#[test]
fn full_table_refuses_new_flows_and_keeps_existing_ones() {
    let mut c = config();
    c.max_flows = 2;
    let mut r = Rig::new(c);
    r.pass(Side::Inside, udp(LAN_HOST, 1, REMOTE, 53, b"a"));
    r.pass(Side::Inside, udp(LAN_HOST, 2, REMOTE, 53, b"a"));
    let (v, _) = r.send(Side::Inside, udp(LAN_HOST, 3, REMOTE, 53, b"a"));
    assert_eq!(v, Verdict::Drop(DropReason::TableFull));
    r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 1, b"still works"));
    r.pass(Side::Inside, udp(LAN_HOST, 2, REMOTE, 53, b"still works"));
}

#[test]
fn udp_mapping_expires_after_its_timeout() {
    let mut r = Rig::new(config());
    // An answered mapping (a datagram each way) keeps the UDP timeout; an unanswered one only
    // --udp-unreplied-timeout (tests/quota.rs).
    r.pass(Side::Inside, udp(LAN_HOST, 9000, REMOTE, 53, b"a"));
    r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 9000, b"a"));
    r.advance(299);
    r.pass(Side::Outside, udp(REMOTE, 53, PUBLIC, 9000, b"a"));
    r.advance(301);
    let (v, _) = r.send(Side::Outside, udp(REMOTE, 53, PUBLIC, 9000, b"a"));
    assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
    assert_eq!(r.engine.nat().mapping_count(), 0);
}

#[test]
fn spoofed_and_martian_packets_are_dropped() {
    let mut r = Rig::new(config());
    let (v, _) = r.send(Side::Inside, udp(REMOTE, 1, REMOTE2, 2, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::SpoofedSource));
    let (v, _) = r.send(Side::Outside, udp(LAN_HOST2, 1, PUBLIC, 2, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Martian));
    let (v, _) = r.send(Side::Outside, udp(REMOTE, 1, REMOTE2, 2, b"x"));
    assert_eq!(v, Verdict::Drop(DropReason::Martian));
    let (v, _) = r.send(Side::Inside, vec![0x45, 0, 0]);
    assert_eq!(v, Verdict::Drop(DropReason::Malformed));
    let mut bad = udp(LAN_HOST, 1, REMOTE, 2, b"x");
    bad[10] ^= 0xff;
    let (v, _) = r.send(Side::Inside, bad);
    assert_eq!(v, Verdict::Drop(DropReason::BadIpChecksum));
}

#[test]
fn icmp_echo_with_a_remapped_identifier_gets_its_reply() {
    let mut r = Rig::new(config());
    r.pass(Side::Inside, icmp_echo(LAN_HOST, REMOTE, 77, 1, true));
    let (_, s) = r.pass(Side::Inside, icmp_echo(LAN_HOST2, REMOTE, 77, 1, true));
    assert_ne!(s.sport, 77, "the second host's identifier is remapped");
    let (side, back) = r.pass(Side::Outside, icmp_echo(REMOTE, PUBLIC, s.sport, 1, false));
    assert_eq!((side, back.dst, back.sport), (Side::Inside, LAN_HOST2, 77));
}

#[test]
fn forwarded_server_picked_up_mid_stream_keeps_the_forward() {
    let mut c = config();
    c.forwards.push("tcp:2121=10.0.0.5:21".parse::<Forward>().unwrap());
    let mut r = Rig::new(c);
    // The gateway restarted under an established connection; the server speaks first.
    let (side, s) = r.pass(
        Side::Inside,
        tcp(Ipv4Addr::new(10, 0, 0, 5), 21, REMOTE, 33000, 900, 100, PSHACK, b"200 ok\r\n"),
    );
    assert_eq!((side, s.src, s.sport), (Side::Outside, PUBLIC, 2121));
    let (side, s) = r.pass(Side::Outside, tcp(REMOTE, 33000, PUBLIC, 2121, 100, 908, PSHACK, b"PASV\r\n"));
    assert_eq!((side, s.dst, s.dport), (Side::Inside, Ipv4Addr::new(10, 0, 0, 5), 21));
}
