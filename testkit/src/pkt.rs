//! The one packet builder: IPv4 datagrams (RFC 791) carrying TCP (RFC 9293), UDP (RFC 768) or ICMP
//! (RFC 792), every checksum filled with [`crate::csum`], byte by byte from the RFCs (nothing of
//! `ftpnat_core::wire`).
//!
//! [`Ip`] holds the IPv4 header's choices (addresses, identification, DF, TTL); its methods wrap a
//! transport in it. [`Tcp`] is a segment's fields with defaults for the rest. Callers with a fixed
//! shape (the benchmark scenarios, the fuzz harness) keep one-line helpers over these.

use std::net::Ipv4Addr;

use crate::consts::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::csum::{finish, pseudo, rfc1071, sum};

/// The IPv4 header of a datagram to build. [`Ip::new`]: identification 0x1234, DF set, TTL 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ident: u16,
    pub df: bool,
    pub ttl: u8,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Ip {
        Ip { src, dst, ident: 0x1234, df: true, ttl: 64 }
    }
    pub fn ident(self, ident: u16) -> Ip {
        Ip { ident, ..self }
    }
    pub fn df(self, df: bool) -> Ip {
        Ip { df, ..self }
    }
    pub fn ttl(self, ttl: u8) -> Ip {
        Ip { ttl, ..self }
    }

    /// A datagram of `proto` around `l4` (taken as it is: its checksum is the caller's), with a
    /// 20-byte header whose checksum is filled.
    pub fn datagram(&self, proto: u8, l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut p = Vec::with_capacity(total);
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&self.ident.to_be_bytes());
        p.extend_from_slice(&[if self.df { 0x40 } else { 0 }, 0, self.ttl, proto, 0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        let c = rfc1071(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(l4);
        p
    }

    /// A TCP segment in a datagram, both checksums right.
    pub fn tcp(&self, t: &Tcp<'_>) -> Vec<u8> {
        let mut o = t.opts.to_vec();
        o.truncate(40);
        // Options are padded with NOPs to a multiple of 4 bytes (the data offset counts words).
        while o.len() % 4 != 0 {
            o.push(1);
        }
        let hl = 20 + o.len();
        let mut s = Vec::with_capacity(hl + t.payload.len());
        s.extend_from_slice(&t.sp.to_be_bytes());
        s.extend_from_slice(&t.dp.to_be_bytes());
        s.extend_from_slice(&t.seq.to_be_bytes());
        s.extend_from_slice(&t.ack.to_be_bytes());
        s.extend_from_slice(&[((hl / 4) as u8) << 4, t.flags]);
        s.extend_from_slice(&t.window.to_be_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&t.urg.to_be_bytes());
        s.extend_from_slice(&o);
        s.extend_from_slice(t.payload);
        let c = finish(sum(&s, pseudo(self.src, self.dst, PROTO_TCP, s.len())));
        s[16..18].copy_from_slice(&c.to_be_bytes());
        self.datagram(PROTO_TCP, &s)
    }

    /// A UDP datagram; `zero_csum` sends no checksum (0, RFC 768), otherwise a computed 0 goes as 0xFFFF.
    pub fn udp(&self, sp: u16, dp: u16, payload: &[u8], zero_csum: bool) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + payload.len());
        u.extend_from_slice(&sp.to_be_bytes());
        u.extend_from_slice(&dp.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        if !zero_csum {
            let c = match finish(sum(&u, pseudo(self.src, self.dst, PROTO_UDP, u.len()))) {
                0 => 0xffff,
                c => c,
            };
            u[6..8].copy_from_slice(&c.to_be_bytes());
        }
        self.datagram(PROTO_UDP, &u)
    }

    /// An ICMP message: type, code, the 4 bytes after the checksum (`rest`: echo identifier and
    /// sequence, or unused/MTU), then `body`; checksum over the message (no pseudo-header).
    pub fn icmp(&self, ty: u8, code: u8, rest: u32, body: &[u8]) -> Vec<u8> {
        let mut i = vec![ty, code, 0, 0];
        i.extend_from_slice(&rest.to_be_bytes());
        i.extend_from_slice(body);
        let c = rfc1071(&i);
        i[2..4].copy_from_slice(&c.to_be_bytes());
        self.datagram(PROTO_ICMP, &i)
    }

    /// An ICMP echo request (type 8) or reply (type 0) with `body`.
    pub fn icmp_echo(&self, ident: u16, seq: u16, request: bool, body: &[u8]) -> Vec<u8> {
        self.icmp(if request { 8 } else { 0 }, 0, u32::from(ident) << 16 | u32::from(seq), body)
    }
}

/// A TCP segment's fields. [`Tcp::new`]: no options, window 64000, urgent pointer 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp<'a> {
    pub sp: u16,
    pub dp: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub urg: u16,
    pub opts: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Tcp<'a> {
    pub fn new(sp: u16, dp: u16, seq: u32, ack: u32, flags: u8, payload: &'a [u8]) -> Tcp<'a> {
        Tcp { sp, dp, seq, ack, flags, window: 64000, urg: 0, opts: &[], payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{ACK, PSH};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    /// Every checksum of a built datagram verifies (sums to zero with its field in place).
    fn sums_verify(p: &[u8]) {
        assert_eq!(rfc1071(&p[..20]), 0, "IPv4 header");
        let l4 = &p[20..];
        let ok = match p[9] {
            PROTO_ICMP => rfc1071(l4) == 0,
            proto => finish(sum(l4, pseudo(A, B, proto, l4.len()))) == 0,
        };
        assert!(ok, "transport checksum of proto {}", p[9]);
    }

    #[test]
    fn built_datagrams_carry_their_fields_and_right_checksums() {
        let ip = Ip::new(A, B);
        let mut t = Tcp::new(40000, 21, 7, 9, PSH | ACK, b"PORT 1\r\n");
        t.opts = &[2, 4, 5, 0xb4, 3];
        let p = ip.tcp(&t);
        assert_eq!((p[0], p.len()), (0x45, 20 + 28 + 8), "options padded to 8 bytes");
        assert_eq!(&p[4..10], &[0x12, 0x34, 0x40, 0, 64, PROTO_TCP]);
        assert_eq!(p[20 + 12] >> 4, 7, "data offset in words");
        assert_eq!(&p[20 + 28..], b"PORT 1\r\n");
        sums_verify(&p);
        let u = ip.ident(5).df(false).ttl(3).udp(53, 1000, b"q", false);
        assert_eq!(&u[4..10], &[0, 5, 0, 0, 3, PROTO_UDP]);
        sums_verify(&u);
        assert_eq!(&ip.udp(53, 1000, b"q", true)[26..28], &[0, 0], "no checksum");
        let e = ip.icmp_echo(0xbeef, 2, true, &[0x5a; 56]);
        assert_eq!(&e[20..28], &[8, 0, e[22], e[23], 0xbe, 0xef, 0, 2]);
        sums_verify(&e);
    }
}

/// The builder against a second implementation: with etherparse's header choices (identification 0,
/// DF set, TTL 64), etherparse's `PacketBuilder` writes the same bytes.
#[cfg(test)]
mod against_etherparse {
    use super::*;
    use crate::consts::{ACK, FIN, PSH, RST, SYN};
    use etherparse::PacketBuilder;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn ip() -> Ip {
        Ip::new(A, B).ident(0)
    }

    #[test]
    fn tcp_udp_and_echo_come_out_alike() {
        for flags in [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK] {
            let mut b = PacketBuilder::ipv4(A.octets(), B.octets(), 64).tcp(40000, 21, 7, 64000);
            if flags & SYN != 0 {
                b = b.syn();
            }
            if flags & ACK != 0 {
                b = b.ack(9);
            }
            if flags & FIN != 0 {
                b = b.fin();
            }
            if flags & RST != 0 {
                b = b.rst();
            }
            if flags & PSH != 0 {
                b = b.psh();
            }
            let mut e = Vec::new();
            b.write(&mut e, b"PORT 1\r\n").unwrap();
            let ack = if flags & ACK != 0 { 9 } else { 0 };
            assert_eq!(ip().tcp(&Tcp::new(40000, 21, 7, ack, flags, b"PORT 1\r\n")), e, "flags {flags:#04x}");
        }
        let mut e = Vec::new();
        PacketBuilder::ipv4(A.octets(), B.octets(), 64).udp(53, 1000).write(&mut e, b"query").unwrap();
        assert_eq!(ip().udp(53, 1000, b"query", false), e);
        for request in [true, false] {
            let b = PacketBuilder::ipv4(A.octets(), B.octets(), 64);
            let b = if request { b.icmpv4_echo_request(7, 3) } else { b.icmpv4_echo_reply(7, 3) };
            let mut e = Vec::new();
            b.write(&mut e, b"ping").unwrap();
            assert_eq!(ip().icmp_echo(7, 3, request, b"ping"), e);
        }
    }
}
