//! Test support for the engine's unit tests: packets built by etherparse (a builder independent of
//! `wire`), an engine with a small configuration, and driving it.
//!
//! Owns: nothing the engine uses; test-only. Must not: check outputs with `wire`'s own parser (tests
//! read them with `wire::etherparse_check::seen`).

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::{Engine, Transmit, Verdict};
use crate::config::Config;
use crate::flow::Side;
use crate::time::Instant;
use crate::wire::tcp::flags;

/// An inside host, the gateway's LAN address (`Config::new` takes the prefix's first host), the public
/// address and a host on the Internet.
pub(super) const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub(super) const LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(super) const PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub(super) const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub(super) const NOW: Instant = Instant::from_secs(1_000);

pub(super) fn config() -> Config {
    let c = Config::new(vec!["10.0.0.0/24".parse().expect("prefix")], PUBLIC);
    c.validate().expect("a valid test configuration");
    c
}

pub(super) fn engine() -> Engine {
    Engine::new(config())
}

/// A TCP segment (window 64000, no options) with the flag bits of `wire::tcp::flags`, TTL 64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tcp(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    seq: u32,
    ack: u32,
    f: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sp, dp, seq, 64_000);
    if f & flags::SYN != 0 {
        b = b.syn();
    }
    if f & flags::ACK != 0 {
        b = b.ack(ack);
    }
    if f & flags::FIN != 0 {
        b = b.fin();
    }
    if f & flags::RST != 0 {
        b = b.rst();
    }
    if f & flags::PSH != 0 {
        b = b.psh();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("etherparse writes the segment");
    v
}

pub(super) fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .expect("etherparse writes the datagram");
    v
}

pub(super) fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(ident, seq)
        .write(&mut v, &[0x5a; 56])
        .expect("etherparse writes the echo");
    v
}

/// The same packet with another TTL, its header checksum recomputed by etherparse.
pub(super) fn with_ttl(p: Vec<u8>, ttl: u8) -> Vec<u8> {
    let (mut h, rest) = etherparse::Ipv4Header::from_slice(&p).expect("an IPv4 packet");
    h.time_to_live = ttl;
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

/// Hands `pkt` to the engine from `from` at [`NOW`]; returns the verdict, the packet as it would be
/// written, and whatever the engine queued.
pub(super) fn run(e: &mut Engine, from: Side, pkt: &[u8]) -> (Verdict, Vec<u8>, Vec<Transmit>) {
    let mut buf = pkt.to_vec();
    let v = e.handle_packet(NOW, from, &mut buf);
    let out = std::iter::from_fn(|| e.poll_transmit()).collect();
    (v, buf, out)
}

/// Opens an outbound TCP connection HOST:sp → REMOTE:dp through the three-way handshake; returns the
/// public port the gateway chose.
pub(super) fn open_tcp(e: &mut Engine, sp: u16, dp: u16) -> u16 {
    let (v, syn, _) = run(e, Side::Inside, &tcp(HOST, sp, REMOTE, dp, 100, 0, flags::SYN, b""));
    assert_eq!(v, Verdict::Forward(Side::Outside), "the SYN leaves");
    let public_port = u16::from_be_bytes([syn[20], syn[21]]);
    let synack = tcp(REMOTE, dp, PUBLIC, public_port, 500, 101, flags::SYN | flags::ACK, b"");
    assert_eq!(run(e, Side::Outside, &synack).0, Verdict::Forward(Side::Inside), "the SYN-ACK returns");
    let ack = tcp(HOST, sp, REMOTE, dp, 101, 501, flags::ACK, b"");
    assert_eq!(run(e, Side::Inside, &ack).0, Verdict::Forward(Side::Outside), "the ACK leaves");
    public_port
}
