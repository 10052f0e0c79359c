//! Peer emulation: what an outside host would have sent had it only ever seen the gateway's side.
//!
//! Owns: the rewrite of a WAN-side IPv4 packet recorded on a flat network (addressed to an inside host,
//! acknowledging the inside host's own sequence numbers) into the packet the outside peer sends through
//! a NAT: addressed to the public address and the port the gateway gave the flow, its acknowledgement and
//! SACK edges in the gateway's rewritten sequence space (chosen so that the gateway maps each back to
//! exactly the number the inside host recorded, also inside a rewritten span), a data connection
//! towards an announced endpoint
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
            let to = conn.key(d.reverse());
            set_dst_endpoint(pkt, proto, to.dst, fragmented);
            if proto == Proto::Tcp {
                if let Some(alg) = conn.alg.as_ref() {
                    let map = alg.stream.seq_map(d);
                    if !map.is_identity() {
                        // The acknowledgement the gateway maps back to exactly what the inside host
                        // recorded, even inside a rewritten span (SeqMap::map_ack).
                        map_ack(pkt, |s| map.map_ack(s));
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
        set_dst_endpoint(pkt, proto, Endpoint::new(cfg.forward_addr(f), f.public_port), fragmented);
        return Emulated::Forward;
    }
    if let Some(public) = engine.nat().lookup(proto, inside) {
        set_dst_endpoint(pkt, proto, public.endpoint(), fragmented);
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
        if let (Proto::Tcp, Some(alg)) = (proto, conn.alg.as_ref()) {
            let map = alg.stream.seq_map(d);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::flow::Side;
    use crate::time::Instant;
    use crate::wire::TcpFlags;
    use crate::Verdict;
    use std::net::Ipv4Addr;

    const IN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IN2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const OUT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const PUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

    fn engine() -> Engine {
        let mut c = Config::new(vec!["10.0.0.0/24".parse().unwrap()], PUB);
        c.send_icmp_errors = false;
        c.forwards.push("tcp:2121=10.0.0.3:21".parse().unwrap());
        Engine::new(c)
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        src: Ipv4Addr,
        sp: u16,
        dst: Ipv4Addr,
        dp: u16,
        seq: u32,
        ack: u32,
        f: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sp.to_be_bytes());
        t[2..4].copy_from_slice(&dp.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 0x50;
        t[13] = f;
        p.extend_from_slice(&t);
        p.extend_from_slice(payload);
        let n = p.len();
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.set_total_len(n);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        p
    }

    fn echo(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, ident: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[ty, 0, 0, 0]);
        p.extend_from_slice(&ident.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        p
    }

    fn dst_of(p: &[u8]) -> (Ipv4Addr, u16) {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        let port = ip.tcp().map(|t| t.dst_port()).unwrap_or(0);
        (ip.dst_addr(), port)
    }

    fn all_checksums_right(p: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(p).unwrap();
        ip.verify_header_checksum() && ip.verify_transport_checksum()
    }

    #[test]
    fn answers_go_to_the_mapping_and_acks_follow_the_rewrites() {
        let mut e = engine();
        let t = Instant::from_secs(1);
        let mut syn = tcp(IN, 40000, OUT, 21, 99, 0, 0x02, b"");
        assert_eq!(e.handle_packet(t, Side::Inside, &mut syn), Verdict::Forward(Side::Outside));
        let mut synack = tcp(OUT, 21, IN, 40000, 999, 100, 0x12, b"");
        assert_eq!(emulate(&e, &mut synack), Emulated::Connection);
        assert_eq!(dst_of(&synack), (PUB, 40000));
        assert!(all_checksums_right(&synack));
        assert_eq!(e.handle_packet(t, Side::Outside, &mut synack), Verdict::Forward(Side::Inside));
        // The server's greeting (the ALG honours no announcement before it).
        let mut hello = tcp(OUT, 21, IN, 40000, 1000, 100, 0x18, b"220 ready\r\n");
        emulate(&e, &mut hello);
        assert_eq!(e.handle_packet(t, Side::Outside, &mut hello), Verdict::Forward(Side::Inside));
        // A PORT whose rewrite is longer (10,0,0,2 -> 203,0,113,1 and a short port text).
        let line = b"PORT 10,0,0,2,4,1\r\n";
        let mut port = tcp(IN, 40000, OUT, 21, 100, 1011, 0x18, line);
        assert_eq!(e.handle_packet(t, Side::Inside, &mut port), Verdict::Forward(Side::Outside));
        let grown = Ipv4Packet::new_checked(&port[..]).unwrap().tcp().unwrap().payload().len();
        assert!(grown > line.len());
        // A recorded ACK that ends inside the rewritten address (the recorded server had the line in two
        // segments): the inside host gets exactly the number it recorded, not the span's start.
        let mut partial = tcp(OUT, 21, IN, 40000, 1011, 100 + 9, 0x10, b"");
        emulate(&e, &mut partial);
        assert_eq!(e.handle_packet(t, Side::Outside, &mut partial), Verdict::Forward(Side::Inside));
        assert_eq!(
            Ipv4Packet::new_checked(&partial[..]).unwrap().tcp().unwrap().ack_number(),
            SeqNum::new(109)
        );
        // The server acknowledges the line as it saw it (grown); the recording acknowledges 100+len.
        let mut ack = tcp(OUT, 21, IN, 40000, 1011, 100 + line.len() as u32, 0x10, b"");
        emulate(&e, &mut ack);
        let ip = Ipv4Packet::new_checked(&ack[..]).unwrap();
        assert_eq!(ip.tcp().unwrap().ack_number(), SeqNum::new(100 + grown as u32));
        assert!(all_checksums_right(&ack));
        assert_eq!(e.handle_packet(t, Side::Outside, &mut ack), Verdict::Forward(Side::Inside));
        // ... and the inside host gets its own number back.
        assert_eq!(
            Ipv4Packet::new_checked(&ack[..]).unwrap().tcp().unwrap().ack_number(),
            SeqNum::new(100 + line.len() as u32)
        );
        // The server's data connection to the announced endpoint goes to the endpoint the line names.
        let mut data_syn = tcp(OUT, 20, IN, 1025, 5000, 0, 0x02, b"");
        assert_eq!(emulate(&e, &mut data_syn), Emulated::Mapping);
        let (addr, port) = dst_of(&data_syn);
        assert_eq!(addr, PUB);
        assert_eq!(Some(port), e.nat().lookup(Proto::Tcp, Endpoint::new(IN, 1025)).map(|p| p.port()));
        assert_eq!(e.handle_packet(t, Side::Outside, &mut data_syn), Verdict::Forward(Side::Inside));
        assert_eq!(dst_of(&data_syn), (IN, 1025));
    }

    #[test]
    fn forwards_and_unknown_destinations() {
        let e = engine();
        let mut to_server = tcp(OUT, 5555, IN2, 21, 1, 0, 0x02, b"");
        assert_eq!(emulate(&e, &mut to_server), Emulated::Forward);
        assert_eq!(dst_of(&to_server), (PUB, 2121));
        let mut stray = tcp(OUT, 5555, IN, 8080, 1, 0, 0x02, b"");
        assert_eq!(emulate(&e, &mut stray), Emulated::Unknown);
        assert_eq!(dst_of(&stray), (PUB, 8080));
        assert!(all_checksums_right(&stray));
        let mut garbage = vec![0x45, 0, 0];
        assert_eq!(emulate(&e, &mut garbage), Emulated::Other);
    }

    #[test]
    fn icmp_error_quotes_what_the_gateway_sent() {
        let mut e = engine();
        let t = Instant::from_secs(1);
        let mut syn = tcp(IN, 40001, OUT, 80, 7, 0, 0x02, b"");
        e.handle_packet(t, Side::Inside, &mut syn);
        let sent = syn.clone();
        // The recorded error quotes the packet as the inside host sent it.
        let original = tcp(IN, 40001, OUT, 80, 7, 0, 0x02, b"");
        let mut body = vec![3, 3, 0, 0, 0, 0, 0, 0];
        body.extend_from_slice(&original[..28]);
        let mut err = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0];
        err.extend_from_slice(&OUT.octets());
        err.extend_from_slice(&IN.octets());
        err.extend_from_slice(&body);
        let n = err.len();
        let mut ip = Ipv4Packet::new_unchecked(&mut err[..]);
        ip.set_total_len(n);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        assert_eq!(emulate(&e, &mut err), Emulated::IcmpError);
        let ip = Ipv4Packet::new_checked(&err[..]).unwrap();
        assert_eq!(ip.dst_addr(), PUB);
        assert!(ip.verify_header_checksum() && ip.verify_transport_checksum());
        let icmp = ip.icmp().unwrap();
        let quoted = &icmp.payload()[..28];
        assert_eq!(&quoted[12..16], &sent[12..16], "quoted source is the public address");
        assert_eq!(&quoted[20..22], &sent[20..22], "quoted source port is the mapped port");
        let mut err2 = err.clone();
        assert_eq!(e.handle_packet(t, Side::Outside, &mut err2), Verdict::Forward(Side::Inside));
    }

    #[test]
    fn echo_reply_follows_the_mapped_identifier() {
        let mut e = engine();
        let t = Instant::from_secs(1);
        let mut req = echo(IN, OUT, 8, 77);
        assert_eq!(e.handle_packet(t, Side::Inside, &mut req), Verdict::Forward(Side::Outside));
        let mut rep = echo(OUT, IN, 0, 77);
        assert_eq!(emulate(&e, &mut rep), Emulated::Connection);
        assert_eq!(e.handle_packet(t, Side::Outside, &mut rep), Verdict::Forward(Side::Inside));
        assert!(all_checksums_right(&rep));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut e = engine();
        let mut syn =
            tcp(IN, 40000, OUT, 21, 99, 0, TcpFlags { syn: true, ..Default::default() }.to_byte(), b"");
        e.handle_packet(Instant::ZERO, Side::Inside, &mut syn);
        let base = tcp(OUT, 21, IN, 40000, 999, 100, 0x12, b"abc");
        for cut in 0..base.len() {
            for flip in [0usize, 9, 20, 33] {
                let mut p = base[..cut].to_vec();
                if let Some(b) = p.get_mut(flip) {
                    *b ^= 0xff;
                }
                emulate(&e, &mut p);
            }
        }
    }
}
