//! Vocabulary shared by every layer: protocols, endpoints, flow keys, sides and directions.
//!
//! Owns: the small value types that keep "which device" ([`Side`]) apart from "which way relative to the
//! connection's originator" ([`Dir`]). Must not: know about packets' bytes, tables or FTP.
//!
//! An active-mode FTP data connection is *originated outside* (the server connects to the client), so a
//! connection's [`Dir::Original`] may arrive on either [`Side`]; code that confuses the two gets a type
//! error rather than a wrong translation.

use core::fmt;
use std::net::Ipv4Addr;

/// Transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
}

impl Proto {
    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Icmp => 1,
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The device a packet arrived on or leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// The LAN device: inside hosts live here.
    Inside,
    /// The WAN device: the public address faces this way.
    Outside,
}

impl Side {
    pub const fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Side::Inside => "lan",
            Side::Outside => "wan",
        }
    }
    pub const fn index(self) -> usize {
        match self {
            Side::Inside => 0,
            Side::Outside => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Direction relative to a connection: the way its first packet went, or the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Dir {
    Original,
    Reply,
}

impl Dir {
    pub const fn reverse(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }
    pub const fn index(self) -> usize {
        match self {
            Dir::Original => 0,
            Dir::Reply => 1,
        }
    }
}

/// An address and a port. For ICMP query messages the "port" is the echo identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Endpoint {
    pub const fn new(addr: Ipv4Addr, port: u16) -> Self {
        Endpoint { addr, port }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A flow's identity as one packet carries it: protocol, source and destination.
///
/// For ICMP echo both ports hold the identifier, so a request and its reply have reversed keys like
/// TCP and UDP do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlowKey {
    pub proto: Proto,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl core::hash::Hash for FlowKey {
    /// Two integer writes instead of the seven small ones the derive makes (each address hashes as
    /// a length-prefixed byte slice): the connection table hashes a key for every packet. The packing
    /// is injective, so equal keys hash equally and distinct keys stay distinct to the hasher.
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        let addrs = (u64::from(self.src.addr.to_bits()) << 32) | u64::from(self.dst.addr.to_bits());
        let rest = (u64::from(self.src.port) << 24)
            | (u64::from(self.dst.port) << 8)
            | u64::from(self.proto.number());
        h.write_u64(addrs);
        h.write_u64(rest);
    }
}

impl FlowKey {
    pub const fn new(proto: Proto, src: Endpoint, dst: Endpoint) -> Self {
        FlowKey { proto, src, dst }
    }
    /// The key of a packet travelling the other way.
    pub const fn reversed(self) -> Self {
        FlowKey { proto: self.proto, src: self.dst, dst: self.src }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

/// Handle of a tracked connection: the table slot it lives in and the generation of the connection
/// that took the slot. A handle kept after its connection ended (a data connection naming its
/// control connection, a pinhole naming its owner) finds nothing once the slot is reused: the table
/// compares the generation, so it never hands out the slot's next occupant for it.
///
/// Minted by `conntrack::Table`; [`ConnId::new`] is for tests and for rebuilding a handle from its
/// parts. Shown (logs, events, `show flows`) as `#<slot>`: the slot identifies a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ConnId {
    slot: u32,
    generation: u32,
}

impl ConnId {
    pub const fn new(slot: u32, generation: u32) -> ConnId {
        ConnId { slot, generation }
    }
    /// The table slot: unique among live connections, reused after one ends.
    pub const fn slot(self) -> u32 {
        self.slot
    }
    /// Which of the slot's successive occupants this handle names.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_dirs_are_involutions() {
        assert_eq!(Side::Inside.other().other(), Side::Inside);
        assert_eq!(Dir::Reply.reverse(), Dir::Original);
        let k = FlowKey::new(
            Proto::Tcp,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 1000),
            Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 21),
        );
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(Proto::from_number(Proto::Udp.number()), Some(Proto::Udp));
    }

    #[test]
    fn flow_key_hash_sees_every_field() {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = |k: FlowKey| BuildHasherDefault::<DefaultHasher>::default().hash_one(k);
        let a = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 1000);
        let b = Endpoint::new(Ipv4Addr::new(192, 0, 2, 1), 21);
        let k = FlowKey::new(Proto::Tcp, a, b);
        let variants = [
            k,
            FlowKey::new(Proto::Udp, a, b),
            k.reversed(),
            FlowKey::new(Proto::Tcp, Endpoint::new(a.addr, 1001), b),
            FlowKey::new(Proto::Tcp, Endpoint::new(Ipv4Addr::new(10, 0, 0, 3), 1000), b),
            FlowKey::new(Proto::Tcp, a, Endpoint::new(b.addr, 20)),
            FlowKey::new(Proto::Tcp, a, Endpoint::new(Ipv4Addr::new(192, 0, 2, 9), 21)),
        ];
        let mut hashes: Vec<u64> = variants.iter().map(|&v| h(v)).collect();
        assert_eq!(h(k), h(FlowKey::new(Proto::Tcp, a, b)));
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), variants.len());
    }
}
