//! RFC 7915 translation checked against an independent parser (etherparse): every translated datagram
//! must parse there with right checksums and the fields the RFC prescribes.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, PacketBuilder};
use proptest::prelude::*;

use super::*;
use crate::wire::etherparse_check::seen;
use crate::wire::{icmp, icmpv6, ipv4, ipv6, Ipv4Packet, Ipv6Packet, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(240, 0, 0, 2);
const SERVER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

fn prefix() -> Nat64Prefix {
    "64:ff9b:1::/96".parse().unwrap()
}

fn server6() -> Ipv6Addr {
    prefix().embed(SERVER4)
}

/// The inside host 2001:db8::2 stands for 240.0.0.2; every other IPv4 address is under the prefix.
struct Map;

impl AddrMap for Map {
    fn to_v4(&self, a: Ipv6Addr) -> Option<Ipv4Addr> {
        if a == CLIENT6 {
            Some(CLIENT4)
        } else {
            prefix().extract(a).ok()
        }
    }
    fn to_v6(&self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if a == CLIENT4 {
            Some(CLIENT6)
        } else {
            Some(prefix().embed(a))
        }
    }
}

const P: Params = Params { mtu4: 1500, mtu6: 1500, ident: 0x4242 };

fn v6_tcp(payload: &[u8], hop: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), hop)
        .tcp(50000, 21, 0x1234_5678, 64240)
        .ack(0x0bad_cafe)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn v6_udp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), 64)
        .udp(53000, 53)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn v4_udp(payload: &[u8], df: bool) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(SERVER4.octets(), CLIENT4.octets(), 57)
        .udp(53, 53000)
        .write(&mut v, payload)
        .unwrap();
    Ipv4Packet::new_unchecked(&mut v[..]).set_dont_frag(df);
    v
}

fn v4_tcp(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(SERVER4.octets(), CLIENT4.octets(), 60)
        .tcp(21, 50000, 7, 29200)
        .ack(0x1234_5679)
        .write(&mut v, payload)
        .unwrap();
    v
}

#[test]
fn tcp_v6_to_v4_rfc7915_5_1() {
    let mut b = v6_tcp(b"USER anonymous\r\n", 63);
    Ipv6Packet::new_unchecked(&mut b[..]).set_traffic_class(0xb8);
    Ipv6Packet::new_unchecked(&mut b[..]).set_flow_label(0x12345);
    let tcp = b[40..].to_vec();
    v6_to_v4(&mut b, &Map, &P).unwrap();
    let s = seen(&b);
    assert_eq!((s.v6, s.src, s.dst), (false, CLIENT4.octets().to_vec(), SERVER4.octets().to_vec()));
    assert_eq!((s.proto, s.ttl, s.tos), (IPPROTO_TCP, 63, 0xb8), "hop limit copied, traffic class copied");
    assert_eq!(
        (s.df, s.frag, s.ident),
        (false, None, 0),
        "56 bytes: DF clear, Identification 0 (<= 88 bytes)"
    );
    assert_eq!(s.upper[..16], tcp[..16], "only the checksum changes in the TCP header");
    assert_eq!(s.upper[18..], tcp[18..]);
}

#[test]
fn df_and_ident_by_size() {
    // 1260 bytes of IPv4: DF clear; 1261: DF set. Identification only for 89..=1280 bytes.
    for (payload, df, ident) in
        [(1260 - 28, false, 0x4242), (1261 - 28, true, 0x4242), (1281 - 28, true, 0), (60 - 28, false, 0)]
    {
        let mut b = v6_udp(&vec![7u8; payload]);
        v6_to_v4(&mut b, &Map, &P).unwrap();
        let s = seen(&b);
        assert_eq!((b.len(), s.df, s.ident), (payload + 28, df, ident), "{payload}");
    }
}

#[test]
fn tcp_and_udp_v4_to_v6_rfc7915_4_1() {
    let mut b = v4_tcp(b"220 ready\r\n");
    Ipv4Packet::new_unchecked(&mut b[..]).set_dscp_ecn(0x2e);
    v4_to_v6(&mut b, &Map, &P).unwrap();
    let s = seen(&b);
    assert_eq!((s.v6, s.src, s.dst), (true, server6().octets().to_vec(), CLIENT6.octets().to_vec()));
    assert_eq!((s.proto, s.ttl, s.tos, s.frag), (IPPROTO_TCP, 60, 0x2e, None), "no atomic fragment");
    assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().flow_label(), 0);

    let mut b = v4_udp(b"dns answer", false);
    b.extend_from_slice(&[0, 0, 0]); // link padding is dropped
    v4_to_v6(&mut b, &Map, &P).unwrap();
    assert_eq!(seen(&b).upper[8..], *b"dns answer");
}

#[test]
fn udp_zero_checksum_rfc7915_4_5() {
    let mut b = v4_udp(b"no checksum", false);
    Ipv4Packet::new_unchecked(&mut b[..]).udp_mut().unwrap().clear_checksum();
    v4_to_v6(&mut b, &Map, &P).unwrap();
    assert_ne!(seen(&b).upper[6..8], [0, 0], "computed for IPv6");

    let mut f = v4_udp(&[1u8; 64], false);
    let mut p = Ipv4Packet::new_unchecked(&mut f[..]);
    p.udp_mut().unwrap().clear_checksum();
    p.set_more_frags(true);
    assert_eq!(v4_to_v6(&mut f, &Map, &P), Err(XlatError::UdpZeroChecksumFragment));
}

#[test]
fn ipv4_fragments_get_a_fragment_header() {
    let b = v4_udp(&(0..=255u8).cycle().take(3000).collect::<Vec<_>>(), false);
    let pieces = ipv4::fragment(&b, 1000).unwrap();
    let mut data = Vec::new();
    for mut f in pieces.clone() {
        let (off, mf, id) = {
            let p = Ipv4Packet::new_checked(&f[..]).unwrap();
            (p.frag_offset(), p.more_frags(), p.ident())
        };
        v4_to_v6(&mut f, &Map, &P).unwrap();
        let s = seen(&f);
        assert_eq!(s.frag, Some((off as u16, mf, u32::from(id))), "offset, M, Identification copied");
        assert_eq!(s.proto, IPPROTO_UDP);
        data.extend_from_slice(&s.upper);
    }
    // The first piece's UDP checksum was adjusted for the whole datagram: the reassembled data is
    // what translating the unfragmented datagram gives.
    let mut whole6 = b.clone();
    v4_to_v6(&mut whole6, &Map, &P).unwrap();
    assert!(whole6[40..] == data[..], "same bytes as translating the unfragmented datagram");
}

#[test]
fn ipv6_fragments_become_ipv4_fragments_rfc7915_5_1_1() {
    // A UDP datagram the client fragmented itself: first piece + a later one.
    let udp = {
        let b = v6_udp(&[9u8; 100]);
        b[40..].to_vec()
    };
    for (offset, more, data) in [(0usize, true, &udp[..64]), (64, false, &udp[64..])] {
        let mut f = vec![0u8; 48];
        ipv6::write_header(&mut f, 0, (8 + data.len()) as u16, ipv6::NH_FRAGMENT, 64, CLIENT6, server6());
        ipv6::write_frag_header(&mut f[40..], IPPROTO_UDP, offset, more, 0xabcd_1234);
        f.extend_from_slice(data);
        v6_to_v4(&mut f, &Map, &P).unwrap();
        let s = seen(&f);
        assert_eq!(s.frag, Some((offset as u16, more, 0x1234)), "Identification's low 16 bits");
        assert!(!s.df, "DF clear so IPv4 routers may fragment further");
        assert_eq!(s.proto, IPPROTO_UDP);
        if offset != 0 {
            assert_eq!(s.upper, data, "a later fragment's data is untouched");
        }
    }
    // An atomic fragment (RFC 6946) is a whole datagram: DF clear, its Identification.
    let mut a = vec![0u8; 48];
    ipv6::write_header(&mut a, 0, (8 + udp.len()) as u16, ipv6::NH_FRAGMENT, 64, CLIENT6, server6());
    ipv6::write_frag_header(&mut a[40..], IPPROTO_UDP, 0, false, 77);
    a.extend_from_slice(&udp);
    v6_to_v4(&mut a, &Map, &P).unwrap();
    let s = seen(&a);
    assert_eq!((s.frag, s.df, s.ident), (None, false, 77));
}

#[test]
fn extension_headers_are_dropped_routing_refused() {
    let base = v6_udp(b"through options");
    let mut with = base[..40].to_vec();
    let upper = &base[40..];
    // Hop-by-Hop (8 bytes, PadN) + Routing (Segments Left 0) + the UDP datagram.
    with[6] = ipv6::NH_HOP_BY_HOP;
    with.extend_from_slice(&[ipv6::NH_ROUTING, 0, 1, 4, 0, 0, 0, 0]);
    with.extend_from_slice(&[IPPROTO_UDP, 0, 4, 0, 0, 0, 0, 0]);
    with.extend_from_slice(upper);
    let n = with.len() - 40;
    Ipv6Packet::new_unchecked(&mut with[..]).set_payload_len(n);
    let mut plain = base.clone();
    v6_to_v4(&mut with, &Map, &P).unwrap();
    v6_to_v4(&mut plain, &Map, &P).unwrap();
    assert_eq!(with, plain);
    seen(&with);

    let mut routed = base[..40].to_vec();
    routed[6] = ipv6::NH_ROUTING;
    routed.extend_from_slice(&[IPPROTO_UDP, 0, 4, 1, 0, 0, 0, 0]);
    routed.extend_from_slice(upper);
    let n = routed.len() - 40;
    Ipv6Packet::new_unchecked(&mut routed[..]).set_payload_len(n);
    assert_eq!(v6_to_v4(&mut routed, &Map, &P), Err(XlatError::RoutingHeader { pointer: 43 }));
}

#[test]
fn echo_both_ways() {
    let mut v = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), 64)
        .icmpv6_echo_request(0x77, 3)
        .write(&mut v, b"abcdefgh")
        .unwrap();
    v6_to_v4(&mut v, &Map, &P).unwrap();
    let s = seen(&v);
    assert_eq!(
        (s.proto, s.upper[0], s.upper[1], &s.upper[4..]),
        (IPPROTO_ICMP, 8, 0, &[0, 0x77, 0, 3, b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h'][..])
    );

    let mut r = Vec::new();
    PacketBuilder::ipv4(SERVER4.octets(), CLIENT4.octets(), 50)
        .icmpv4_echo_reply(0x77, 3)
        .write(&mut r, b"abcdefgh")
        .unwrap();
    v4_to_v6(&mut r, &Map, &P).unwrap();
    let s = seen(&r);
    assert_eq!((s.proto, s.upper[0], s.ttl), (58, 129, 50));

    // Informational messages RFC 7915 drops: ICMPv4 timestamp, ICMPv6 neighbour solicitation.
    let mut ts = Vec::new();
    PacketBuilder::ipv4(SERVER4.octets(), CLIENT4.octets(), 50)
        .icmpv4_raw(13, 0, [0; 4])
        .write(&mut ts, &[0; 12])
        .unwrap();
    assert_eq!(v4_to_v6(&mut ts, &Map, &P), Err(XlatError::IcmpUntranslatable));
    let mut ns = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), 255)
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut ns, &[0; 16])
        .unwrap();
    assert_eq!(v6_to_v4(&mut ns, &Map, &P), Err(XlatError::IcmpUntranslatable));
}

#[test]
fn unmapped_and_malformed() {
    let mut b = v6_udp(b"x");
    Ipv6Packet::new_unchecked(&mut b[..]).set_dst_addr("2001:db8:ffff::1".parse().unwrap());
    assert_eq!(v6_to_v4(&mut b, &Map, &P), Err(XlatError::Unmapped));
    let mut b = v6_udp(b"x");
    Ipv6Packet::new_unchecked(&mut b[..]).set_src_addr("2001:db8::99".parse().unwrap());
    assert_eq!(v6_to_v4(&mut b, &Map, &P), Err(XlatError::Unmapped));
    let mut short = v6_udp(b"xyz");
    short.truncate(45);
    assert!(matches!(v6_to_v4(&mut short, &Map, &P), Err(XlatError::Malformed(_))));
    let mut short = v4_udp(b"xyz", true);
    short.truncate(25);
    assert!(matches!(v4_to_v6(&mut short, &Map, &P), Err(XlatError::Malformed(_))));
}

#[test]
fn source_route_refused_rfc7915_4_1() {
    let mut b = v4_udp(b"routed", false);
    // Insert an LSRR option (unexpired: pointer 4 <= length 7) + EOL padding.
    let opts = [131u8, 7, 4, 10, 0, 0, 1, 0];
    b.splice(20..20, opts.iter().copied());
    b[0] = 0x47;
    let n = b.len();
    let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
    p.set_total_len(n);
    p.fill_header_checksum();
    assert_eq!(v4_to_v6(&mut b.clone(), &Map, &P), Err(XlatError::SourceRoute));
    // Expired (pointer past the end): options ignored, translated.
    b[22] = 8;
    Ipv4Packet::new_unchecked(&mut b[..]).fill_header_checksum();
    v4_to_v6(&mut b, &Map, &P).unwrap();
    assert_eq!(seen(&b).upper[8..], *b"routed");
}

#[test]
fn split_for_v6_fits_the_lowest_mtu() {
    let payload: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
    let b = v4_udp(&payload, false);
    let pieces = split_for_v6(&b, 1280).unwrap().expect("1500 bytes with DF clear must be split");
    let mut data = Vec::new();
    for mut f in pieces {
        v4_to_v6(&mut f, &Map, &P).unwrap();
        assert!(f.len() <= 1280, "{}", f.len());
        data.extend_from_slice(&seen(&f).upper);
    }
    let mut whole6 = b.clone();
    v4_to_v6(&mut whole6, &Map, &P).unwrap();
    assert!(data == whole6[40..], "the pieces carry the translated datagram");
    assert_eq!(split_for_v6(&v4_udp(&payload, true), 1280).unwrap(), None, "DF set: the caller's PTB");
    assert_eq!(split_for_v6(&v4_udp(&payload[..1000], false), 1280).unwrap(), None, "fits");
}

/// An ICMPv4 error from a router on the IPv4 path about a datagram the client sent (after its
/// translation), as the router quotes it.
fn v4_error(ty: u8, code: u8, rest: u32, quoted: &[u8]) -> Vec<u8> {
    icmp::build_error(ROUTER4, CLIENT4, ty, code, rest, quoted)
}

#[test]
fn errors_v4_to_v6_quote_the_original_datagram() {
    let original6 = v6_udp(b"a datagram the IPv4 side refused");
    let mut as_sent4 = original6.clone();
    v6_to_v4(&mut as_sent4, &Map, &P).unwrap();
    for (ty, code, rest, want) in [
        (3u8, 3u8, 0u32, (1u8, 4u8, 0u32)), // port unreachable
        (3, 13, 0, (1, 1, 0)),              // administratively prohibited
        (11, 0, 0, (3, 0, 0)),              // TTL exceeded in transit
        (3, 4, 1400, (2, 0, 1420)),         // fragmentation needed → packet too big
        (3, 2, 0, (4, 1, 6)),               // protocol unreachable → parameter problem
        (12, 0, 8 << 24, (4, 0, 7)),        // parameter problem at TTL → at Hop Limit
    ] {
        let mut e = v4_error(ty, code, rest, &as_sent4);
        v4_to_v6(&mut e, &Map, &P).unwrap();
        let s = seen(&e);
        assert_eq!(
            (s.src.clone(), s.dst.clone()),
            (prefix().embed(ROUTER4).octets().to_vec(), CLIENT6.octets().to_vec())
        );
        let got = (s.upper[0], s.upper[1], u32::from_be_bytes(s.upper[4..8].try_into().unwrap()));
        assert_eq!(got, want, "ICMPv4 {ty}/{code}");
        assert_eq!(s.upper[8..], original6[..], "the quote is the datagram the client sent, byte for byte");
    }
    // Types RFC 7915 drops.
    for (ty, code) in [(3u8, 14u8), (4, 0), (5, 1), (12, 1)] {
        let mut e = v4_error(ty, code, 0, &as_sent4);
        assert_eq!(v4_to_v6(&mut e, &Map, &P), Err(XlatError::IcmpUntranslatable), "{ty}/{code}");
    }
}

#[test]
fn errors_v6_to_v4_quote_the_original_datagram() {
    let original4 = v4_tcp(b"data the client could not take");
    let mut as_received6 = original4.clone();
    v4_to_v6(&mut as_received6, &Map, &P).unwrap();
    for (ty, code, rest, want) in [
        (1u8, 4u8, 0u32, (3u8, 3u8, 0u32)),
        (1, 1, 0, (3, 10, 0)),
        (3, 0, 0, (11, 0, 0)),
        (2, 0, 1280, (3, 4, 1260)),
        (4, 0, 24, (12, 0, 16 << 24)),
        (4, 1, 6, (3, 2, 0)),
    ] {
        let mut e = icmpv6::build_error(CLIENT6, server6(), ty, code, rest, &as_received6);
        v6_to_v4(&mut e, &Map, &P).unwrap();
        let s = seen(&e);
        assert_eq!((s.src.clone(), s.dst.clone()), (CLIENT4.octets().to_vec(), SERVER4.octets().to_vec()));
        let got = (s.upper[0], s.upper[1], u32::from_be_bytes(s.upper[4..8].try_into().unwrap()));
        assert_eq!(got, want, "ICMPv6 {ty}/{code}");
        let q = Ipv4Packet::new_checked(&s.upper[8..]).expect("a whole IPv4 datagram quoted");
        assert!(q.verify_header_checksum());
        assert_eq!((q.src_addr(), q.dst_addr(), q.protocol(), q.ttl()), (SERVER4, CLIENT4, IPPROTO_TCP, 60));
        assert_eq!(q.payload(), &original4[20..], "the TCP segment as the server sent it, checksum included");
    }
}

#[test]
fn quoted_echo_and_nested_errors() {
    // Time exceeded about an echo request (traceroute with ICMP): the quoted echo is translated too.
    let mut echo6 = Vec::new();
    PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), 1)
        .icmpv6_echo_request(5, 6)
        .write(&mut echo6, b"tr")
        .unwrap();
    let mut echo4 = echo6.clone();
    v6_to_v4(&mut echo4, &Map, &P).unwrap();
    let mut e = v4_error(11, 0, 0, &echo4);
    v4_to_v6(&mut e, &Map, &P).unwrap();
    assert_eq!(seen(&e).upper[8..], echo6[..]);
    // An error quoting an error: refused (RFC 7915 §4.3).
    let inner = v4_error(3, 3, 0, &echo4);
    let mut nested = icmp::build_error(ROUTER4, SERVER4, 11, 0, 0, &inner);
    Ipv4Packet::new_unchecked(&mut nested[..]).set_dst_addr(CLIENT4);
    Ipv4Packet::new_unchecked(&mut nested[..]).fill_header_checksum();
    assert_eq!(v4_to_v6(&mut nested, &Map, &P), Err(XlatError::BadQuote));
    // A corrupted error is not rebuilt.
    let mut bad = v4_error(3, 3, 0, &echo4);
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(v4_to_v6(&mut bad, &Map, &P), Err(XlatError::BadChecksum));
    // A quote too short for its IP header.
    let mut short = v4_error(3, 3, 0, &echo4[..12]);
    assert_eq!(v4_to_v6(&mut short, &Map, &P), Err(XlatError::BadQuote));
}

#[test]
fn errors_are_truncated_to_fit() {
    let big6 = v6_udp(&vec![0x5a; 1400 - 48]);
    let mut e = icmpv6::build_error(CLIENT6, server6(), 1, 4, 0, &big6);
    let mut sent4 = big6.clone();
    v6_to_v4(&mut sent4, &Map, &P).unwrap();
    // A router quoting 548 bytes of the IPv4 datagram (the RFC 1812 maximum) → ICMPv6 within 1280.
    let mut e4 = v4_error(3, 3, 0, &sent4);
    v4_to_v6(&mut e4, &Map, &P).unwrap();
    assert!(e4.len() <= 1280);
    seen(&e4);
    // The client quoting 1232 bytes → an ICMPv4 error of at most 576 bytes.
    v6_to_v4(&mut e, &Map, &P).unwrap();
    assert_eq!(e.len(), 576);
    seen(&e);
}

#[test]
fn rfc4884_extension_is_carried() {
    let original6 = v6_udp(&[1u8; 200]);
    let mut sent4 = original6.clone();
    v6_to_v4(&mut sent4, &Map, &P).unwrap();
    // ICMPv4 time exceeded with a 128-byte original-datagram field and a 12-byte extension.
    let ext = [0x20, 0, 0, 0, 0, 8, 1, 1, 0xaa, 0xbb, 0xcc, 0xdd];
    let mut body = sent4[..128].to_vec();
    body.extend_from_slice(&ext);
    let mut e = icmp::build_error(ROUTER4, CLIENT4, 11, 0, 32 << 16, &[]);
    e.extend_from_slice(&body);
    let n = e.len();
    let mut p = Ipv4Packet::new_unchecked(&mut e[..]);
    p.set_total_len(n);
    p.fill_header_checksum();
    p.fill_transport_checksum();
    v4_to_v6(&mut e, &Map, &P).unwrap();
    let s = seen(&e);
    let words = usize::from(s.upper[4]);
    assert!(words * 8 >= 128, "length attribute in 64-bit words");
    let quote = &s.upper[8..8 + words * 8];
    assert_eq!(&quote[..128 + 20], &original6[..148], "the 128 quoted IPv4 bytes become 148 IPv6 ones");
    assert_eq!(&s.upper[8 + words * 8..], &ext, "the extension follows the padded quote");
}

proptest! {
    #[test]
    fn round_trip_v6_v4_v6(
        data in proptest::collection::vec(any::<u8>(), 0..1500),
        proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(58u8)],
        hop in 1u8..,
        tc in any::<u8>(),
        sport in any::<u16>(),
    ) {
        let mut b = Vec::new();
        let builder = PacketBuilder::ipv6(CLIENT6.octets(), server6().octets(), hop);
        match proto {
            IPPROTO_TCP => builder.tcp(sport, 80, 1, 1000).write(&mut b, &data).unwrap(),
            IPPROTO_UDP => builder.udp(sport, 80).write(&mut b, &data).unwrap(),
            _ => builder.icmpv6_echo_request(sport, 1).write(&mut b, &data).unwrap(),
        }
        Ipv6Packet::new_unchecked(&mut b[..]).set_traffic_class(tc);
        let original = b.clone();
        v6_to_v4(&mut b, &Map, &P).unwrap();
        let s4 = seen(&b);
        prop_assert_eq!(s4.ttl, hop);
        prop_assert_eq!(s4.df, b.len() > 1260);
        v4_to_v6(&mut b, &Map, &P).unwrap();
        seen(&b);
        prop_assert_eq!(b, original);
    }

    #[test]
    fn round_trip_v4_v6_v4(
        data in proptest::collection::vec(any::<u8>(), 0..1400),
        proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMP)],
        ttl in any::<u8>(),
        tos in any::<u8>(),
        port in any::<u16>(),
    ) {
        let mut b = Vec::new();
        let builder = PacketBuilder::ipv4(SERVER4.octets(), CLIENT4.octets(), ttl);
        match proto {
            IPPROTO_TCP => builder.tcp(80, port, 1, 1000).write(&mut b, &data).unwrap(),
            IPPROTO_UDP => builder.udp(80, port).write(&mut b, &data).unwrap(),
            _ => builder.icmpv4_echo_reply(port, 9).write(&mut b, &data).unwrap(),
        }
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_dscp_ecn(tos);
        // The way back sets DF and Identification by RFC 7915 §5.1's rules: start from those.
        let n = p.as_bytes().len();
        p.set_dont_frag(n > 1260);
        p.set_ident(if (89..=1280).contains(&n) { P.ident } else { 0 });
        let original = b.clone();
        v4_to_v6(&mut b, &Map, &P).unwrap();
        let s6 = seen(&b);
        prop_assert_eq!((s6.ttl, s6.tos), (ttl, tos));
        v6_to_v4(&mut b, &Map, &P).unwrap();
        seen(&b);
        prop_assert_eq!(b, original);
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(mut b in proptest::collection::vec(any::<u8>(), 0..200), v6 in any::<bool>()) {
        if let Some(x) = b.first_mut() {
            *x = (*x & 0x0f) | if v6 { 0x60 } else { 0x40 };
        }
        let mut c = b.clone();
        let _ = v6_to_v4(&mut b, &Map, &P);
        let _ = v4_to_v6(&mut c, &Map, &P);
        let _ = split_for_v6(&c, 1280);
    }

    #[test]
    fn errors_round_trip_their_quote(payload in proptest::collection::vec(any::<u8>(), 0..600), code in prop_oneof![Just(0u8), Just(3), Just(13)]) {
        // Whatever the quoted size, an ICMPv4 error about a translated datagram quotes the client's
        // original bytes (as many as the IPv4 quote held, plus the 20 header bytes IPv6 adds).
        let original6 = v6_udp(&payload);
        let mut sent4 = original6.clone();
        v6_to_v4(&mut sent4, &Map, &P).unwrap();
        let mut e = v4_error(3, code, 0, &sent4);
        let quoted4 = e.len() - 28;
        v4_to_v6(&mut e, &Map, &P).unwrap();
        let s = seen(&e);
        prop_assert_eq!(&s.upper[8..], &original6[..quoted4 + 20]);
    }
}

#[test]
fn etherparse_agrees_on_the_fixtures() {
    // The checker itself fails on a broken checksum (it is not vacuous).
    let mut b = v6_tcp(b"x", 64);
    v6_to_v4(&mut b, &Map, &P).unwrap();
    b[37] ^= 1;
    let r = std::panic::catch_unwind(|| seen(&b));
    assert!(r.is_err(), "a corrupt TCP checksum must fail the check");
    let _ = IpNumber::TCP;
}
