//! Engine-level NAT64 test support: the configuration, packet builders for both families (built with
//! etherparse, not with ftpnat's own wire code) and [`seen`], what etherparse reads in a packet that
//! left the engine after checking its lengths and every checksum.
//!
//! Owns: these helpers. Must not: know what a test checks.

#![allow(dead_code)] // each test file uses a different subset

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    IcmpEchoHeader, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use ftpnat::nat64::Nat64Config;
use ftpnat::{Config, Engine};

pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const SERVER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 2);
pub const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 1);
pub const PREFIX: &str = "64:ff9b:1::/96";

/// The server as the IPv6 client reaches it (what DNS64 would answer).
pub fn server6() -> Ipv6Addr {
    "64:ff9b:1::203.0.113.5".parse().unwrap()
}

pub fn config4() -> Config {
    Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUBLIC)
}

pub fn config64() -> Config {
    let mut c = config4();
    c.nat64 = Some(Nat64Config::new(PREFIX.parse().unwrap(), vec!["2001:db8:64::/64".parse().unwrap()]));
    c.validate().expect("valid");
    c
}

pub fn engine64() -> Engine {
    Engine::new(config64())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpKind {
    Syn,
    SynAck,
    Ack,
    Fin,
}

fn tcp_builder<B>(
    b: B,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    kind: TcpKind,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>
where
    B: Into<etherparse::PacketBuilderStep<etherparse::IpHeaders>>,
{
    let t = b.into().tcp(sport, dport, seq, 65535);
    match kind {
        TcpKind::Syn => t.syn(),
        TcpKind::SynAck => t.syn().ack(ack),
        TcpKind::Ack => t.ack(ack).psh(),
        TcpKind::Fin => t.ack(ack).fin(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    kind: TcpKind,
    data: &[u8],
    hop: u8,
) -> Vec<u8> {
    let mut v = Vec::new();
    tcp_builder(PacketBuilder::ipv6(src.octets(), dst.octets(), hop), sport, dport, seq, ack, kind)
        .write(&mut v, data)
        .unwrap();
    v
}

#[allow(clippy::too_many_arguments)]
pub fn tcp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    kind: TcpKind,
    data: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let mut v = Vec::new();
    tcp_builder(PacketBuilder::ipv4(src.octets(), dst.octets(), ttl), sport, dport, seq, ack, kind)
        .write(&mut v, data)
        .unwrap();
    v
}

pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8], hop: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.octets(), dst.octets(), hop).udp(sport, dport).write(&mut v, data).unwrap();
    v
}

/// A UDP/IPv4 datagram with DF set (as Linux sends them).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8], ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl).udp(sport, dport).write(&mut v, data).unwrap();
    set_df(&mut v, true);
    v
}

pub fn echo6(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, request: bool, hop: u8) -> Vec<u8> {
    let h = IcmpEchoHeader { id, seq };
    let ty = if request { Icmpv6Type::EchoRequest(h) } else { Icmpv6Type::EchoReply(h) };
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.octets(), dst.octets(), hop).icmpv6(ty).write(&mut v, b"ping data").unwrap();
    v
}

pub fn echo4(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, request: bool, ttl: u8) -> Vec<u8> {
    let h = IcmpEchoHeader { id, seq };
    let ty = if request { Icmpv4Type::EchoRequest(h) } else { Icmpv4Type::EchoReply(h) };
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl).icmpv4(ty).write(&mut v, b"ping data").unwrap();
    v
}

/// Sets or clears DF and fixes the IPv4 header checksum.
pub fn set_df(p: &mut [u8], df: bool) {
    if df {
        p[6] |= 0x40;
    } else {
        p[6] &= !0x40;
    }
    fix_ipv4_checksum(p);
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let mut sum = 0u32;
    for c in p[..hl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Puts a Fragment header (offset in bytes, M flag, identification) right after the IPv6 header.
pub fn insert_fragment_header(p: &mut Vec<u8>, offset: u16, more: bool, ident: u32) {
    let nh = p[6];
    let mut h = vec![nh, 0];
    h.extend_from_slice(&((offset & !7) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&ident.to_be_bytes());
    insert_ext(p, 44, &h);
}

/// Puts a type-0-shaped Routing header with `left` segments left (one address) after the IPv6 header.
pub fn insert_routing_header(p: &mut Vec<u8>, left: u8) {
    let nh = p[6];
    let mut h = vec![nh, 2, 0, left, 0, 0, 0, 0];
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    insert_ext(p, 43, &h);
}

fn insert_ext(p: &mut Vec<u8>, kind: u8, h: &[u8]) {
    p[6] = kind;
    let plen = u16::from_be_bytes([p[4], p[5]]) + h.len() as u16;
    p[4..6].copy_from_slice(&plen.to_be_bytes());
    p.splice(40..40, h.iter().copied());
}

/// What etherparse reads in a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub v6: bool,
    pub src: String,
    pub dst: String,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte.
    pub flags: u8,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// ICMP rest of header (MTU, pointer).
    pub rest: u32,
    pub frag: Option<(u16, bool)>,
    pub payload: Vec<u8>,
}

/// Parses with etherparse and asserts lengths and every checksum (skipped on fragments, whose
/// transport checksum covers bytes in other pieces).
pub fn seen(p: &[u8]) -> Seen {
    let s = SlicedPacket::from_ip(p).unwrap_or_else(|e| panic!("etherparse refuses the packet: {e:?}"));
    let mut out = Seen {
        v6: false,
        src: String::new(),
        dst: String::new(),
        ttl: 0,
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        flags: 0,
        icmp: None,
        rest: 0,
        frag: None,
        payload: Vec::new(),
    };
    let (src, dst): (Vec<u8>, Vec<u8>);
    match s.net.as_ref().expect("an IP layer") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum(), "IPv4 header checksum");
            assert_eq!(usize::from(h.total_len()), p.len(), "IPv4 total length");
            out.src = h.source_addr().to_string();
            out.dst = h.destination_addr().to_string();
            out.ttl = h.ttl();
            if h.more_fragments() || h.fragments_offset().value() != 0 {
                out.frag = Some((h.fragments_offset().value() * 8, h.more_fragments()));
            }
            (src, dst) = (h.source().to_vec(), h.destination().to_vec());
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            out.v6 = true;
            assert_eq!(40 + usize::from(h.payload_length()), p.len(), "IPv6 payload length");
            out.src = h.source_addr().to_string();
            out.dst = h.destination_addr().to_string();
            out.ttl = h.hop_limit();
            for e in ip.extensions().clone().into_iter() {
                if let etherparse::Ipv6ExtensionSlice::Fragment(f) = e {
                    let f = f.to_header();
                    out.frag = Some((f.fragment_offset.value() * 8, f.more_fragments));
                }
            }
            (src, dst) = (h.source().to_vec(), h.destination().to_vec());
        }
        NetSlice::Arp(_) => panic!("ARP"),
    }
    if out.frag.is_some() {
        return out;
    }
    match s.transport.expect("a transport layer") {
        TransportSlice::Tcp(t) => {
            let want = if out.v6 {
                t.calc_checksum_ipv6(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
            } else {
                t.calc_checksum_ipv4(src[..].try_into().unwrap(), dst[..].try_into().unwrap())
            };
            assert_eq!(t.checksum(), want.unwrap(), "TCP checksum");
            (out.sport, out.dport, out.seq, out.ack) =
                (t.source_port(), t.destination_port(), t.sequence_number(), t.acknowledgment_number());
            out.flags = t.slice()[13];
            out.payload = t.payload().to_vec();
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            let want = if out.v6 {
                h.calc_checksum_ipv6_raw(
                    src[..].try_into().unwrap(),
                    dst[..].try_into().unwrap(),
                    u.payload(),
                )
            } else {
                h.calc_checksum_ipv4_raw(
                    src[..].try_into().unwrap(),
                    dst[..].try_into().unwrap(),
                    u.payload(),
                )
            };
            assert_eq!(u.checksum(), want.unwrap(), "UDP checksum");
            (out.sport, out.dport) = (u.source_port(), u.destination_port());
            out.payload = u.payload().to_vec();
        }
        TransportSlice::Icmpv4(i) => {
            check_icmp4(&i);
            let b = i.slice();
            out.icmp = Some((b[0], b[1]));
            out.rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            out.sport = u16::from_be_bytes([b[4], b[5]]);
            out.payload = b[8..].to_vec();
        }
        TransportSlice::Icmpv6(i) => {
            check_icmp6(&i, &src, &dst);
            let b = i.slice();
            out.icmp = Some((b[0], b[1]));
            out.rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            out.sport = u16::from_be_bytes([b[4], b[5]]);
            out.payload = b[8..].to_vec();
        }
        other => panic!("unexpected transport {other:?}"),
    }
    out
}

fn check_icmp4(i: &Icmpv4Slice<'_>) {
    let mut h = i.header();
    h.update_checksum(i.payload());
    assert_eq!(i.checksum(), h.checksum, "ICMP checksum");
}

fn check_icmp6(i: &Icmpv6Slice<'_>, src: &[u8], dst: &[u8]) {
    assert!(i.is_checksum_valid(src.try_into().unwrap(), dst.try_into().unwrap()), "ICMPv6 checksum");
}
