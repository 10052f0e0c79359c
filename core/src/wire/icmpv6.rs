//! ICMPv6 message view (RFC 4443) and the gateway's own ICMPv6 errors.
//!
//! Owns: the ICMPv6 header and its checksum, which — unlike ICMPv4's — covers the IPv6 pseudo-header
//! (RFC 4443 §2.3), and building an error datagram. Must not: decide when an error is due or translate
//! to ICMPv4 (`crate::xlat` does).
//!
//! The header layout is ICMPv4's (type, code, checksum, four bytes), so the field access and the
//! incremental checksum updates are [`IcmpPacket`]'s: a type change or an ident change is the same
//! ones-complement edit whatever the pseudo-header holds. Only what depends on the family is here.

use std::net::Ipv6Addr;

use super::checksum;
use super::icmp::IcmpPacket;
use super::ipv6::{self, NH_ICMPV6};
use super::WireError;

pub const HEADER_LEN: usize = 8;

pub const TYPE_DEST_UNREACHABLE: u8 = 1;
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
pub const TYPE_TIME_EXCEEDED: u8 = 3;
pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
pub const TYPE_ECHO_REQUEST: u8 = 128;
pub const TYPE_ECHO_REPLY: u8 = 129;

pub const CODE_NO_ROUTE: u8 = 0;
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
pub const CODE_ADDR_UNREACHABLE: u8 = 3;
pub const CODE_PORT_UNREACHABLE: u8 = 4;
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
pub const CODE_ERRONEOUS_HEADER: u8 = 0;

/// RFC 4443 §2.4(c): an ICMPv6 error must not make a datagram larger than the IPv6 minimum MTU.
pub const MAX_ERROR_DATAGRAM: usize = 1280;

/// A view over an ICMPv6 message (the upper layer of an IPv6 datagram).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub fn new_unchecked(buf: T) -> Self {
        Icmpv6Packet { buf }
    }
    /// Checks len >= 8. After this no accessor panics.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Icmpv6Packet { buf })
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// The same bytes through the ICMPv4 view, whose field layout this shares.
    fn common(&self) -> IcmpPacket<&[u8]> {
        IcmpPacket::new_unchecked(self.buf.as_ref())
    }
    pub fn msg_type(&self) -> u8 {
        self.common().msg_type()
    }
    pub fn code(&self) -> u8 {
        self.common().code()
    }
    pub fn checksum(&self) -> u16 {
        self.common().checksum()
    }
    /// Bytes 4..8: ident + sequence for echo, MTU for Packet Too Big, pointer for Parameter Problem.
    pub fn rest_of_header(&self) -> u32 {
        self.common().rest_of_header()
    }
    pub fn echo_ident(&self) -> u16 {
        self.common().echo_ident()
    }
    pub fn echo_seq(&self) -> u16 {
        self.common().echo_seq()
    }
    /// Bytes 8.. (for an error: the quoted datagram).
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref().get(HEADER_LEN..).unwrap_or(&[])
    }
    /// RFC 4443 §2.1: types 0..=127 are errors, 128..=255 informational.
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY)
    }
    /// Verifies the checksum over the pseudo-header and the message (RFC 4443 §2.3).
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.as_bytes();
        let ph = ipv6::pseudo_header(src, dst, NH_ICMPV6, b.len() as u32);
        checksum::finish(checksum::sum(b, ph)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    fn common_mut(&mut self) -> IcmpPacket<&mut [u8]> {
        IcmpPacket::new_unchecked(self.buf.as_mut())
    }
    pub fn set_msg_type(&mut self, t: u8) {
        self.common_mut().set_msg_type(t);
    }
    pub fn set_code(&mut self, c: u8) {
        self.common_mut().set_code(c);
    }
    pub fn set_echo_ident(&mut self, id: u16) {
        self.common_mut().set_echo_ident(id);
    }
    pub fn set_echo_seq(&mut self, s: u16) {
        self.common_mut().set_echo_seq(s);
    }
    pub fn set_rest_of_header(&mut self, r: u32) {
        self.common_mut().set_rest_of_header(r);
    }
    /// Recomputes the checksum over the pseudo-header and the message.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let b = self.buf.as_mut();
        if b.len() < HEADER_LEN {
            return;
        }
        b[2..4].fill(0);
        let ph = ipv6::pseudo_header(src, dst, NH_ICMPV6, b.len() as u32);
        let c = checksum::finish(checksum::sum(b, ph));
        b[2..4].copy_from_slice(&c.to_be_bytes());
    }
    /// Lets `f` edit the payload and updates the checksum for what it changed (see
    /// [`IcmpPacket::edit_payload`]); the pseudo-header is unaffected as long as the length is.
    pub fn edit_payload<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.common_mut().edit_payload(f)
    }
}

/// Builds a complete IPv6 datagram carrying an ICMPv6 error (type, code, rest-of-header e.g. the MTU of a
/// Packet Too Big or the pointer of a Parameter Problem) from `src` to `dst`, quoting as much of
/// `original` as fits in 1280 bytes (RFC 4443 §2.4(c)), Hop Limit 64, a fresh checksum. Bytes of
/// `original` past its payload length (link padding) are not quoted.
pub fn build_error(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    rest: u32,
    original: &[u8],
) -> Vec<u8> {
    let orig_len = match ipv6::Ipv6Packet::new_checked(original) {
        Ok(p) => p.total_len(),
        Err(_) => original.len(),
    };
    let quote = orig_len.min(MAX_ERROR_DATAGRAM - ipv6::HEADER_LEN - HEADER_LEN);
    let plen = HEADER_LEN + quote;
    let mut b = vec![0u8; ipv6::HEADER_LEN + plen];
    ipv6::write_header(&mut b, 0, plen as u16, NH_ICMPV6, 64, src, dst);
    let icmp = &mut b[ipv6::HEADER_LEN..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&rest.to_be_bytes());
    icmp[HEADER_LEN..].copy_from_slice(&original[..quote]);
    Icmpv6Packet::new_unchecked(icmp).fill_checksum(src, dst);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::tests::{a6, datagram, udp};
    use crate::wire::ipv6::Ipv6Packet;
    use proptest::prelude::*;

    #[test]
    fn echo_fields_and_checksum() {
        let b = datagram(NH_ICMPV6, &[], &[128, 0, 0, 0, 0x12, 0x34, 0x00, 0x07, b'p', b'i', b'n', b'g']);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let i = p.icmpv6().unwrap();
        assert_eq!((i.msg_type(), i.code(), i.echo_ident(), i.echo_seq()), (128, 0, 0x1234, 7));
        assert!(i.is_echo() && !i.is_error());
        assert!(i.verify_checksum(p.src_addr(), p.dst_addr()));
        assert!(!i.verify_checksum(p.src_addr(), a6("2001:db8::3")), "the pseudo-header is covered");
        assert_eq!(i.payload(), b"ping");
    }

    #[test]
    fn setters_keep_checksum() {
        let mut b = datagram(NH_ICMPV6, &[], &[128, 0, 0, 0, 0x12, 0x34, 0x00, 0x07, 1, 2, 3]);
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        let (s, d) = (p.src_addr(), p.dst_addr());
        let mut i = p.icmpv6_mut().unwrap();
        i.set_msg_type(TYPE_ECHO_REPLY);
        i.set_echo_ident(0xbeef);
        i.set_echo_seq(9);
        i.edit_payload(|pl| pl[1] = 0x77);
        assert!(i.verify_checksum(s, d));
        i.set_rest_of_header(0x0102_0304);
        assert!(i.verify_checksum(s, d));
    }

    #[test]
    fn error_quotes_at_most_1280() {
        let big = datagram(17, &[], &udp(&[0x5a; 1400]));
        let e = build_error(a6("2001:db8::1"), a6("2001:db8::2"), TYPE_PACKET_TOO_BIG, 0, 1280, &big);
        assert_eq!(e.len(), MAX_ERROR_DATAGRAM);
        let p = Ipv6Packet::new_checked(&e[..]).unwrap();
        assert_eq!((p.next_header(), p.hop_limit(), p.total_len()), (NH_ICMPV6, 64, 1280));
        let i = p.icmpv6().unwrap();
        assert!(i.is_error() && i.verify_checksum(p.src_addr(), p.dst_addr()));
        assert_eq!((i.msg_type(), i.rest_of_header()), (TYPE_PACKET_TOO_BIG, 1280));
        assert_eq!(i.payload(), &big[..1280 - 48]);
        // A small original is quoted whole, without its link padding.
        let mut small = datagram(17, &[], &udp(b"abc"));
        let n = small.len();
        small.extend_from_slice(&[0; 4]);
        let e = build_error(a6("::1"), a6("::2"), TYPE_DEST_UNREACHABLE, CODE_PORT_UNREACHABLE, 0, &small);
        assert_eq!(&e[48..], &small[..n]);
    }

    proptest! {
        #[test]
        fn fill_matches_reference(body in proptest::collection::vec(any::<u8>(), 8..200), s in any::<u128>(), d in any::<u128>()) {
            let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            let mut b = body.clone();
            Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(s, d);
            // Reference: the plain RFC 1071 sum over pseudo-header bytes then the message.
            let mut all = Vec::new();
            all.extend_from_slice(&s.octets());
            all.extend_from_slice(&d.octets());
            all.extend_from_slice(&(b.len() as u32).to_be_bytes());
            all.extend_from_slice(&[0, 0, 0, 58]);
            all.extend_from_slice(&b);
            prop_assert_eq!(checksum::checksum(&all), 0);
            prop_assert!(Icmpv6Packet::new_unchecked(&b[..]).verify_checksum(s, d));
        }
    }
}
