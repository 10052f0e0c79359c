//! Peer emulation: what an outside host would have sent had it only ever seen the gateway's side.
//!
//! Owns: the rewrite of a WAN-side IPv4 packet recorded on a flat network (addressed to an inside host,
//! acknowledging the inside host's own sequence numbers) into the packet the outside peer sends through
//! a NAT: addressed to the public address and the port the gateway gave the flow, its acknowledgement and
//! SACK edges in the gateway's rewritten sequence space, a data connection towards an announced endpoint
//! addressed to the endpoint the gateway wrote into the line, an ICMP error quoting what the gateway
//! emitted. Must not: change the engine's state (it only reads the connection table, the NAT and the
//! configuration) or touch LAN-side packets.
//!
//! Every rewrite goes through the incremental wire setters, so a packet with right checksums keeps them
//! and one fed with wrong checksums (`--trust-input-checksums`) stays wrong.

use crate::engine::Engine;
use crate::flow::{Endpoint, FlowKey, Proto};
use crate::wire::{checksum, icmp, Ipv4Packet, SeqNum};

/// What the emulation decided, for tests and debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulated {
    /// Part of a connection the gateway tracks; addressed like its translated side.
    Connection,
    /// Towards a static port forward's inside target: addressed to the forward's public port.
    Forward,
    /// Towards an inside endpoint the NAT maps (an announced data endpoint, or an EIM mapping).
    Mapping,
    /// Nothing on the gateway knows this destination: addressed to the public address, port unchanged.
    Unknown,
    /// An ICMP error: outer destination and quoted packet as the gateway emitted it.
    IcmpError,
    /// Not parsable or not a protocol with ports: only the destination address changed (or nothing).
    Other,
}

/// Rewrites a WAN-side IPv4 datagram in place into what the outside peer would have sent.
pub fn emulate(engine: &Engine, pkt: &mut [u8]) -> Emulated {
    let public = engine.config().public_ip;
    let Ok(ip) = Ipv4Packet::new_checked(&pkt[..]) else { return Emulated::Other };
    let (src, dst, proto_n) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    let first_fragment = ip.frag_offset() == 0;
    let fragmented = ip.is_fragment();
    let Some(proto) = Proto::from_number(proto_n).filter(|_| first_fragment) else {
        // Later fragments follow their first fragment, which is always addressed to the public address.
        set_dst(pkt, public);
        return Emulated::Other;
    };
    let ports = match proto {
        Proto::Tcp | Proto::Udp => {
            let p = ip.payload();
            match p.get(..4) {
                Some(h) => (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])),
                None => {
                    set_dst(pkt, public);
                    return Emulated::Other;
                }
            }
        }
        Proto::Icmp => match ip.icmp() {
            Ok(i) if i.is_error() => {
                return emulate_icmp_error(engine, pkt);
            }
            Ok(i) if matches!(i.msg_type(), 0 | 8) => (i.echo_ident(), i.echo_ident()),
            _ => {
                set_dst(pkt, public);
                return Emulated::Other;
            }
        },
    };
    let key = FlowKey::new(proto, Endpoint::new(src, ports.0), Endpoint::new(dst, ports.1));
    let table = engine.table();
    if let Some((id, d)) = table.lookup(&key.reversed()) {
        if let Some(conn) = table.get(id) {
            // `d` is the way the inside host's packets of this flow travel; the peer answers the other
            // way, addressed as the gateway's translation of `d` showed it.
            let to = conn.keys[d.reverse().index()];
            set_dst_endpoint(pkt, proto, to.dst, fragmented);
            if proto == Proto::Tcp {
                if let Some(ftp) = conn.ftp.as_ref() {
                    let map = &ftp.streams[d.index()].map;
                    if !map.is_identity() {
                        map_ack(pkt, |s| map.map(s));
                    }
                }
            }
            return Emulated::Connection;
        }
    }
    let inside = Endpoint::new(dst, ports.1);
    let cfg = engine.config();
    if let Some(f) =
        cfg.forwards.iter().find(|f| f.proto == proto && f.inside_addr == dst && f.inside_port == ports.1)
    {
        set_dst_endpoint(pkt, proto, Endpoint::new(public, f.public_port), fragmented);
        return Emulated::Forward;
    }
    if let Some(port) = engine.nat().lookup(proto, inside) {
        set_dst_endpoint(pkt, proto, Endpoint::new(public, port), fragmented);
        return Emulated::Mapping;
    }
    set_dst(pkt, public);
    Emulated::Unknown
}

/// An ICMP error from outside about a packet an inside host sent: the peer quotes what it received,
/// which is the gateway's translation of it (RFC 5508 §4.2 seen from the other end).
fn emulate_icmp_error(engine: &Engine, pkt: &mut [u8]) -> Emulated {
    let public = engine.config().public_ip;
    set_dst(pkt, public);
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    let Ok(mut ic) = ip.icmp_mut() else { return Emulated::IcmpError };
    ic.edit_payload(|q| {
        let Ok(quoted) = icmp::parse_quoted(q) else { return };
        let Some(proto) = Proto::from_number(quoted.protocol) else { return };
        let (Some(sp), Some(dp)) = (quoted.src_port, quoted.dst_port) else { return };
        let qkey = FlowKey::new(proto, Endpoint::new(quoted.src, sp), Endpoint::new(quoted.dst, dp));
        let table = engine.table();
        let Some((id, d)) = table.lookup(&qkey) else { return };
        let Some(conn) = table.get(id) else { return };
        let out = conn.translated(d);
        // A quoted echo carries one identifier, which the source side's mapping chose.
        let dst_port = (proto != Proto::Icmp).then_some(out.dst.port);
        icmp::quoted_set_src(q, out.src.addr, Some(out.src.port));
        icmp::quoted_set_dst(q, out.dst.addr, dst_port);
        if let (Proto::Tcp, Some(ftp)) = (proto, conn.ftp.as_ref()) {
            let map = &ftp.streams[d.index()].map;
            if let Some(s) = icmp::quoted_tcp_seq(q) {
                icmp::quoted_set_tcp_seq(q, map.map(s));
            }
        }
    });
    Emulated::IcmpError
}

fn set_dst(pkt: &mut [u8], addr: std::net::Ipv4Addr) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    if ip.dst_addr() != addr {
        ip.set_dst_addr(addr);
    }
}

/// Sets destination address and port (ICMP echo: the identifier) with every checksum kept right.
fn set_dst_endpoint(pkt: &mut [u8], proto: Proto, to: Endpoint, fragmented: bool) {
    set_dst(pkt, to.addr);
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    if fragmented {
        // A first fragment: the transport views refuse it (their lengths speak of the whole datagram),
        // but the ports are there and the checksum covers the whole datagram, so an incremental update
        // of the port stays right.
        let csum_at = match proto {
            Proto::Tcp => 16,
            Proto::Udp => 6,
            Proto::Icmp => return,
        };
        let p = ip.payload_mut();
        if p.len() < csum_at + 2 {
            return;
        }
        let old = u16::from_be_bytes([p[2], p[3]]);
        if old == to.port {
            return;
        }
        p[2..4].copy_from_slice(&to.port.to_be_bytes());
        let c = u16::from_be_bytes([p[csum_at], p[csum_at + 1]]);
        if proto == Proto::Udp && c == 0 {
            return;
        }
        let mut n = checksum::update_u16(c, old, to.port);
        if proto == Proto::Udp && n == 0 {
            n = 0xFFFF;
        }
        p[csum_at..csum_at + 2].copy_from_slice(&n.to_be_bytes());
        return;
    }
    match proto {
        Proto::Tcp => {
            if let Ok(mut t) = ip.tcp_mut() {
                if t.dst_port() != to.port {
                    t.set_dst_port(to.port);
                }
            }
        }
        Proto::Udp => {
            if let Ok(mut u) = ip.udp_mut() {
                if u.dst_port() != to.port {
                    u.set_dst_port(to.port);
                }
            }
        }
        Proto::Icmp => {
            if let Ok(mut i) = ip.icmp_mut() {
                if i.echo_ident() != to.port {
                    i.set_echo_ident(to.port);
                }
            }
        }
    }
}

/// Moves the acknowledgement number and SACK edges through `f` (they speak of the inside host's bytes).
fn map_ack(pkt: &mut [u8], f: impl Fn(SeqNum) -> SeqNum) {
    let mut ip = Ipv4Packet::new_unchecked(&mut pkt[..]);
    let Ok(mut t) = ip.tcp_mut() else { return };
    if t.flags().ack {
        let a = f(t.ack_number());
        if a != t.ack_number() {
            t.set_ack_number(a);
        }
    }
    t.map_sack_blocks(&f);
}
