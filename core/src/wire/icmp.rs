//! ICMP message view (RFC 792), ICMP error construction, and in-place edits of the datagram an ICMP error
//! quotes.
//!
//! Owns: the ICMP header, the quoted IPv4 header + first transport bytes inside an error, and the checksums
//! of both; the ICMP view of an IPv4 datagram ([`Ipv4Packet::icmp`], defined here so that `ipv4` needs
//! nothing of this module). Must not: decide the translation (the NAT passes addresses and ports in), or touch the outer
//! IPv4 header except in [`build_error`], which creates one.
//!
//! Quoted datagrams are normally truncated (RFC 792 quotes the header + 64 bits; RFC 1812 §4.3.2.3 allows up
//! to 576 bytes), so their total length says more than is present. The `quoted_*` helpers work on whatever
//! is present: a checksum field outside the quoted bytes is simply not there to update, and the quoted
//! transport checksum stays right for the *whole original* datagram because the update is incremental.
//! Use them inside [`IcmpPacket::edit_payload`] so the outer ICMP checksum follows.

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::{self, Ipv4Packet};
use super::seq::SeqNum;
use super::udp::update_udp_checksum;
use super::{get_u16, get_u32, put_u16, put_u32, WireError, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

mod field {
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: usize = 2;
    pub(super) const REST: usize = 4;
    pub(super) const ECHO_IDENT: usize = 4;
    pub(super) const ECHO_SEQ: usize = 6;
    pub(super) const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = 8;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_SOURCE_QUENCH: u8 = 4;
pub const TYPE_REDIRECT: u8 = 5;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;

/// RFC 1812 §4.3.2.3: an ICMP error datagram should not exceed 576 bytes.
pub const MAX_ERROR_DATAGRAM: usize = 576;

/// Types 0/8 echo, 13/14 timestamp, 15/16 information, 17/18 address mask: all carry ident + sequence.
fn type_is_query(t: u8) -> bool {
    matches!(t, 0 | 8 | 13..=18)
}

/// A view over an ICMP message (the IPv4 payload, bounded by the total length).
#[derive(Debug, Clone)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_unchecked(buf: T) -> Self {
        IcmpPacket { buf }
    }
    /// Checks len >= 8. After this no accessor panics.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buf })
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref().get(field::TYPE).copied().unwrap_or(0)
    }
    pub fn code(&self) -> u8 {
        self.buf.as_ref().get(field::CODE).copied().unwrap_or(0)
    }
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM).unwrap_or(0)
    }
    /// Bytes 4..8: ident + sequence for queries, unused / pointer / gateway / next-hop MTU for errors.
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::REST).unwrap_or(0)
    }
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_IDENT).unwrap_or(0)
    }
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_SEQ).unwrap_or(0)
    }
    /// Bytes 8.. (for an error: the quoted datagram).
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref().get(field::PAYLOAD..).unwrap_or(&[])
    }
    /// Error messages (RFC 792): destination unreachable, source quench, redirect, time exceeded,
    /// parameter problem.
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), 3 | 4 | 5 | 11 | 12)
    }
    /// Query messages: echo 8/0, timestamp 13/14, information 15/16, address mask 17/18.
    pub fn is_query(&self) -> bool {
        type_is_query(self.msg_type())
    }
    /// The request half of a query pair (8, 13, 15, 17).
    pub fn is_query_request(&self) -> bool {
        matches!(self.msg_type(), 8 | 13 | 15 | 17)
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buf.as_ref()) == 0
    }
}

/// The ICMP view of an IPv4 datagram's payload, beside its TCP and UDP views (defined here so that
/// `ipv4` needs nothing of `icmp`: an ICMP error quotes IPv4, so this module builds on that one).
impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Err for a non-first fragment or a message shorter than the ICMP header.
    pub fn icmp(&self) -> Result<IcmpPacket<&[u8]>, WireError> {
        IcmpPacket::new_checked(self.transport()?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn icmp_mut(&mut self) -> Result<IcmpPacket<&mut [u8]>, WireError> {
        IcmpPacket::new_checked(self.transport_mut()?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    fn patch(&mut self, at: usize, new: &[u8]) {
        let b = self.buf.as_mut();
        if at + new.len() > b.len() || b.len() < HEADER_LEN {
            return;
        }
        let old_csum = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
        let mut old = [0u8; 4];
        let old = &mut old[..new.len()];
        old.copy_from_slice(&b[at..at + new.len()]);
        b[at..at + new.len()].copy_from_slice(new);
        let c = checksum::update_bytes(old_csum, at % 2 == 1, old, new);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    pub fn set_msg_type(&mut self, t: u8) {
        self.patch(field::TYPE, &[t]);
    }
    pub fn set_code(&mut self, c: u8) {
        self.patch(field::CODE, &[c]);
    }
    pub fn set_echo_ident(&mut self, id: u16) {
        self.patch(field::ECHO_IDENT, &id.to_be_bytes());
    }
    pub fn set_echo_seq(&mut self, s: u16) {
        self.patch(field::ECHO_SEQ, &s.to_be_bytes());
    }
    pub fn set_rest_of_header(&mut self, r: u32) {
        self.patch(field::REST, &r.to_be_bytes());
    }
    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        let b = self.buf.as_mut();
        if b.len() < HEADER_LEN {
            return;
        }
        b[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let c = checksum::checksum(b);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// Lets `f` edit the payload (e.g. a quoted datagram in an ICMP error) and updates this ICMP checksum for
    /// whatever `f` changed (before/after sum of the payload, so it stays incremental-correct).
    pub fn edit_payload<R>(&mut self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let b = self.buf.as_mut();
        if b.len() < HEADER_LEN {
            return f(&mut []);
        }
        let (head, payload) = b.split_at_mut(field::PAYLOAD);
        let before = checksum::sum(payload, 0);
        let r = f(payload);
        let after = checksum::sum(payload, 0);
        let old = u16::from_be_bytes([head[field::CHECKSUM], head[field::CHECKSUM + 1]]);
        // The payload starts at offset 8 (even), so its sums align with the message's words.
        let c = checksum::update_sum(old, before, after);
        head[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        r
    }
}

/// Builds a complete IPv4 datagram carrying an ICMP error (type, code, rest-of-header e.g. next-hop MTU for
/// 3/4) from `src` to `dst`, quoting `original` (its IP header plus as much payload as fits in 576 bytes
/// total, RFC 1812 §4.3.2.3), TTL 64, DF clear, ident 0, fresh checksums. Bytes of `original` past its
/// total length (link padding) are not quoted.
pub fn build_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    rest: u32,
    original: &[u8],
) -> Vec<u8> {
    let orig_len = match Ipv4Packet::new_checked(original) {
        Ok(p) => p.total_len(),
        Err(_) => original.len(),
    };
    let quote = orig_len.min(MAX_ERROR_DATAGRAM - ipv4::HEADER_LEN - HEADER_LEN);
    let total = ipv4::HEADER_LEN + HEADER_LEN + quote;
    let mut b = vec![0u8; total];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    b[8] = 64;
    b[9] = IPPROTO_ICMP;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    let icmp = &mut b[ipv4::HEADER_LEN..];
    icmp[field::TYPE] = icmp_type;
    icmp[field::CODE] = code;
    icmp[field::REST..field::REST + 4].copy_from_slice(&rest.to_be_bytes());
    icmp[field::PAYLOAD..].copy_from_slice(&original[..quote]);
    IcmpPacket::new_unchecked(&mut icmp[..]).fill_checksum();
    Ipv4Packet::new_unchecked(&mut b[..]).fill_header_checksum();
    b
}

/// What an ICMP error says about the datagram it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub header_len: usize,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP source port; for a quoted ICMP query, its ident (in both `src_port` and `dst_port`, since a
    /// query is matched by ident in both directions). None if not quoted or not a first fragment.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// Fragment offset in bytes of the quoted datagram; ports exist only when it is 0.
    pub frag_offset: usize,
}

/// Header length, protocol and fragment offset of a quoted IPv4 header, whose header must be complete.
fn quoted_header(payload: &[u8]) -> Result<(usize, u8, usize), WireError> {
    if payload.len() < ipv4::HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let p = Ipv4Packet::new_unchecked(payload);
    if p.version() != 4 {
        return Err(WireError::BadVersion);
    }
    let hl = p.header_len();
    if hl < ipv4::HEADER_LEN {
        return Err(WireError::BadHeaderLen);
    }
    if hl > payload.len() {
        return Err(WireError::Truncated);
    }
    Ok((hl, p.protocol(), p.frag_offset()))
}

/// Parses a quoted (possibly truncated) IPv4 header + first bytes of the transport header inside an ICMP
/// error. The IPv4 header itself must be complete; transport fields are `None` when not quoted.
pub fn parse_quoted(payload: &[u8]) -> Result<Quoted, WireError> {
    let (hl, protocol, frag_offset) = quoted_header(payload)?;
    let p = Ipv4Packet::new_unchecked(payload);
    let (mut src_port, mut dst_port) = (None, None);
    if frag_offset == 0 {
        match protocol {
            IPPROTO_TCP | IPPROTO_UDP => {
                src_port = get_u16(payload, hl);
                dst_port = get_u16(payload, hl + 2);
            }
            IPPROTO_ICMP if payload.get(hl).is_some_and(|t| type_is_query(*t)) => {
                src_port = get_u16(payload, hl + field::ECHO_IDENT);
                dst_port = src_port;
            }
            _ => {}
        }
    }
    Ok(Quoted {
        header_len: hl,
        protocol,
        src: p.src_addr(),
        dst: p.dst_addr(),
        src_port,
        dst_port,
        frag_offset,
    })
}

/// Rewrites the quoted source (`is_src`) or destination address and optionally port, fixing the quoted IPv4
/// header checksum and, where present in the quoted bytes, the quoted TCP/UDP/ICMP checksum.
fn quoted_set(payload: &mut [u8], is_src: bool, addr: Ipv4Addr, port: Option<u16>) {
    let Ok((hl, proto, frag_offset)) = quoted_header(payload) else { return };
    {
        // The Ipv4Packet setters are bounds-checked, so a truncated quote is safe here; they also apply
        // the pseudo-header change to a quoted TCP/UDP checksum when it is present.
        let mut q = Ipv4Packet::new_unchecked(&mut payload[..]);
        if is_src {
            q.set_src_addr(addr);
        } else {
            q.set_dst_addr(addr);
        }
    }
    let Some(port) = port else { return };
    if frag_offset != 0 {
        return;
    }
    let port_at = hl + if is_src { 0 } else { 2 };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let Some(old) = get_u16(payload, port_at) else { return };
            put_u16(payload, port_at, port);
            let csum_at = hl + if proto == IPPROTO_TCP { 16 } else { 6 };
            if let Some(c) = get_u16(payload, csum_at) {
                let c = if proto == IPPROTO_TCP {
                    checksum::update_u16(c, old, port)
                } else {
                    update_udp_checksum(c, |c| checksum::update_u16(c, old, port))
                };
                put_u16(payload, csum_at, c);
            }
        }
        IPPROTO_ICMP if payload.get(hl).is_some_and(|t| type_is_query(*t)) => {
            let at = hl + field::ECHO_IDENT;
            let Some(old) = get_u16(payload, at) else { return };
            put_u16(payload, at, port);
            let csum_at = hl + field::CHECKSUM;
            if let Some(c) = get_u16(payload, csum_at) {
                put_u16(payload, csum_at, checksum::update_u16(c, old, port));
            }
        }
        _ => {}
    }
}

/// Sets the quoted datagram's source address and, if `port` is given, its source port (TCP/UDP) or ident
/// (quoted ICMP query), with every checksum inside the quote kept right. Does nothing if
/// [`parse_quoted`] would fail. Call inside [`IcmpPacket::edit_payload`].
pub fn quoted_set_src(payload: &mut [u8], addr: Ipv4Addr, port: Option<u16>) {
    quoted_set(payload, true, addr, port);
}

/// As [`quoted_set_src`], for the destination address and port (for a quoted ICMP query, the ident).
pub fn quoted_set_dst(payload: &mut [u8], addr: Ipv4Addr, port: Option<u16>) {
    quoted_set(payload, false, addr, port);
}

/// The identifier of a quoted ICMP query (echo: RFC 792), read at its fixed place behind the quoted IPv4
/// header whatever the quoted type says; `None` when the quote does not reach it.
pub fn quoted_echo_ident(payload: &[u8]) -> Option<u16> {
    let (hl, _, _) = quoted_header(payload).ok()?;
    get_u16(payload, hl + field::ECHO_IDENT)
}

/// Sets the identifier of a quoted ICMP echo and keeps the quoted ICMP checksum right (RFC 5508 §4.2),
/// when both are within the quote. Call inside [`IcmpPacket::edit_payload`].
pub fn quoted_set_echo_ident(payload: &mut [u8], ident: u16) {
    let hl = payload.first().map_or(0, |b| ((b & 0x0f) as usize) * 4);
    let Some(h) = payload.get_mut(hl..hl + field::ECHO_IDENT + 2) else { return };
    let old = u16::from_be_bytes([h[field::ECHO_IDENT], h[field::ECHO_IDENT + 1]]);
    let csum = u16::from_be_bytes([h[field::CHECKSUM], h[field::CHECKSUM + 1]]);
    let new_csum = checksum::update_u16(csum, old, ident);
    h[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&new_csum.to_be_bytes());
    h[field::ECHO_IDENT..field::ECHO_IDENT + 2].copy_from_slice(&ident.to_be_bytes());
}

/// Offset of the quoted TCP sequence number, if the quote is a first-fragment TCP segment that includes it.
fn quoted_seq_at(payload: &[u8]) -> Option<usize> {
    let (hl, proto, frag_offset) = quoted_header(payload).ok()?;
    (proto == IPPROTO_TCP && frag_offset == 0 && payload.len() >= hl + 8).then_some(hl + 4)
}

/// The quoted TCP sequence number (RFC 792 quotes 64 bits of transport header, which include it).
pub fn quoted_tcp_seq(payload: &[u8]) -> Option<SeqNum> {
    quoted_seq_at(payload).and_then(|at| get_u32(payload, at)).map(SeqNum::new)
}

/// Sets the quoted TCP sequence number, updating the quoted TCP checksum if it is within the quote.
/// Returns whether a sequence number was present to set.
pub fn quoted_set_tcp_seq(payload: &mut [u8], seq: SeqNum) -> bool {
    let Some(at) = quoted_seq_at(payload) else { return false };
    let Some(old) = get_u32(payload, at) else { return false };
    put_u32(payload, at, seq.get());
    let csum_at = at - 4 + 16;
    if let Some(c) = get_u16(payload, csum_at) {
        put_u16(payload, csum_at, checksum::update_u32(c, old, seq.get()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ICMP echo request 192.168.1.10 -> 8.8.8.8, ident 0x1234, seq 1, data "abcdefgh". The checksums
    /// (IPv4 0x6916, ICMP 0x5435) were computed independently (a plain RFC 1071 script), not by this code.
    const ECHO: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x69, 0x16, 0xc0, 0xa8, 0x01,
        0x0a, //
        0x08, 0x08, 0x08, 0x08, //
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];

    /// 10.0.0.2:40000 -> 10.0.0.1:9999 UDP "hello\n", checksums filled in `udp_original`.
    fn udp_original() -> Vec<u8> {
        let mut b = vec![
            0x45, 0x00, 0x00, 0x22, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 2, 10, 0, 0,
            1, //
            0x9c, 0x40, 0x27, 0x0f, 0x00, 0x0e, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o', b'\n',
        ];
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_header_checksum();
        p.fill_transport_checksum();
        b
    }

    /// Port unreachable from 10.0.0.1 quoting the datagram above whole (as Linux does for a short datagram).
    /// IPv4 checksum 0x0be2 computed independently; the ICMP checksum and the quoted checksums are filled in
    /// the test (the quoted ones depend on `udp_original`).
    const PORT_UNREACH: [u8; 62] = [
        0x45, 0xc0, 0x00, 0x3e, 0x5a, 0x1b, 0x00, 0x00, 0x40, 0x01, 0x0b, 0xe2, 0x0a, 0x00, 0x00,
        0x01, //
        0x0a, 0x00, 0x00, 0x02, //
        0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x45, 0x00, 0x00, 0x22, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x02, //
        0x0a, 0x00, 0x00, 0x01, 0x9c, 0x40, 0x27, 0x0f, 0x00, 0x0e, 0x00, 0x00, b'h', b'e', b'l',
        b'l', //
        b'o', b'\n',
    ];

    #[test]
    fn echo_fixture() {
        let p = Ipv4Packet::new_checked(&ECHO[..]).unwrap();
        assert!(p.verify_header_checksum());
        let i = p.icmp().unwrap();
        assert_eq!((i.msg_type(), i.code(), i.echo_ident(), i.echo_seq()), (8, 0, 0x1234, 1));
        assert!(i.is_query() && i.is_query_request() && !i.is_error());
        assert_eq!(i.payload(), b"abcdefgh");
        assert!(i.verify_checksum());
        assert!(p.verify_transport_checksum());
    }

    #[test]
    fn echo_setters_match_recompute() {
        let mut b = ECHO.to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 1));
        let mut i = p.icmp_mut().unwrap();
        i.set_echo_ident(0xfedc);
        i.set_echo_seq(9);
        i.set_msg_type(0);
        i.set_code(0);
        let c = i.checksum();
        i.fill_checksum();
        assert_eq!(c, i.checksum());
        assert!(!i.is_query_request() && i.is_query());
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
    }

    #[test]
    fn port_unreachable_fixture_and_quoted_edits() {
        let mut b = PORT_UNREACH.to_vec();
        // The quoted datagram is the original byte for byte (with its real checksums).
        let orig = udp_original();
        b[28..].copy_from_slice(&orig);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_header_checksum());
        p.icmp_mut().unwrap().fill_checksum();
        let q = parse_quoted(p.icmp().unwrap().payload()).unwrap();
        assert_eq!(q.protocol, IPPROTO_UDP);
        assert_eq!((q.src, q.dst), (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!((q.src_port, q.dst_port, q.header_len, q.frag_offset), (Some(40000), Some(9999), 20, 0));
        assert!(p.icmp().unwrap().is_error());

        // Translate the quote back to the inside host as a NAT would.
        let inside = Ipv4Addr::new(192, 168, 1, 10);
        p.icmp_mut().unwrap().edit_payload(|q| quoted_set_src(q, inside, Some(5555)));
        p.set_dst_addr(inside);
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
        let quoted = p.icmp().unwrap().payload().to_vec();
        let qp = Ipv4Packet::new_checked(&quoted[..]).unwrap();
        assert!(qp.verify_header_checksum() && qp.verify_transport_checksum());
        assert_eq!(qp.src_addr(), inside);
        assert_eq!(qp.udp().unwrap().src_port(), 5555);
    }

    #[test]
    fn truncated_quotes_are_edited_consistently() {
        // Quote a TCP SYN; edit dst address/port and seq on 28 bytes (no TCP checksum quoted) and on the
        // full quote, and check the full quote stays valid and the short one agrees on the common bytes.
        let syn = super::super::ipv4::tests::syn();
        let mut full = syn.clone();
        let mut short = syn[..28].to_vec();
        for q in [&mut full[..], &mut short[..]] {
            assert_eq!(quoted_tcp_seq(q), Some(SeqNum::new(0x1234_5678)));
            quoted_set_dst(q, Ipv4Addr::new(10, 9, 8, 7), Some(2100));
            assert!(quoted_set_tcp_seq(q, SeqNum::new(42)));
            quoted_set_src(q, Ipv4Addr::new(1, 1, 1, 1), None);
        }
        let p = Ipv4Packet::new_checked(&full[..]).unwrap();
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
        assert_eq!(p.tcp().unwrap().dst_port(), 2100);
        assert_eq!(&full[..28], &short[..]);
        assert_eq!(quoted_tcp_seq(&short[..27]), None);
        assert!(!quoted_set_tcp_seq(&mut short[..27], SeqNum::new(1)));
        let q = parse_quoted(&short[..22]).unwrap();
        assert_eq!((q.src_port, q.dst_port), (Some(50000), None));
    }

    #[test]
    fn quoted_icmp_query_ident() {
        let mut q = ECHO.to_vec();
        let parsed = parse_quoted(&q).unwrap();
        assert_eq!((parsed.src_port, parsed.dst_port), (Some(0x1234), Some(0x1234)));
        quoted_set_src(&mut q, Ipv4Addr::new(10, 0, 0, 9), Some(0x4321));
        let p = Ipv4Packet::new_checked(&q[..]).unwrap();
        assert_eq!(p.icmp().unwrap().echo_ident(), 0x4321);
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
    }

    #[test]
    fn build_error_quotes_at_most_576() {
        let mut big = udp_original();
        big.resize(1500, 0x55);
        let n = big.len();
        let mut p = Ipv4Packet::new_unchecked(&mut big[..]);
        p.set_total_len(n);
        let e = build_error(
            Ipv4Addr::new(10, 0, 0, 254),
            Ipv4Addr::new(10, 0, 0, 2),
            TYPE_DEST_UNREACHABLE,
            CODE_FRAG_NEEDED,
            1400,
            &big,
        );
        assert_eq!(e.len(), 576);
        let p = Ipv4Packet::new_checked(&e[..]).unwrap();
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
        assert_eq!((p.ttl(), p.dont_frag(), p.protocol()), (64, false, IPPROTO_ICMP));
        let i = p.icmp().unwrap();
        assert_eq!((i.msg_type(), i.code(), i.rest_of_header()), (3, 4, 1400));
        assert_eq!(i.payload(), &big[..548]);
        // A small original with link padding: only total_len bytes are quoted.
        let mut small = udp_original();
        small.extend_from_slice(&[0, 0, 0]);
        let e = build_error(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(10, 0, 0, 2), 11, 0, 0, &small);
        assert_eq!(e.len(), 28 + 34);
    }

    #[test]
    fn a_quoted_echo_ident_is_read_and_set_with_its_checksum() {
        let mut q = ECHO.to_vec();
        assert_eq!(quoted_echo_ident(&q), Some(0x1234));
        quoted_set_echo_ident(&mut q, 0xbeef);
        assert_eq!(quoted_echo_ident(&q), Some(0xbeef));
        assert!(IcmpPacket::new_checked(&q[20..]).unwrap().verify_checksum());
        // A quote that stops before the ident: nothing to read, nothing written.
        let mut short = ECHO[..25].to_vec();
        assert_eq!(quoted_echo_ident(&short), None);
        quoted_set_echo_ident(&mut short, 7);
        assert_eq!(short, ECHO[..25]);
    }

    proptest! {
        #[test]
        fn no_panic(mut b in proptest::collection::vec(any::<u8>(), 0..80), a in any::<u32>(), p in any::<u16>()) {
            if let Ok(i) = IcmpPacket::new_checked(&b[..]) {
                let _ = (i.msg_type(), i.code(), i.checksum(), i.rest_of_header(), i.echo_ident(), i.echo_seq());
                let _ = (i.payload(), i.is_error(), i.is_query(), i.is_query_request(), i.verify_checksum());
            }
            let _ = parse_quoted(&b);
            let _ = quoted_tcp_seq(&b);
            quoted_set_src(&mut b, Ipv4Addr::from(a), Some(p));
            quoted_set_dst(&mut b, Ipv4Addr::from(a), Some(p));
            quoted_set_tcp_seq(&mut b, SeqNum::new(a));
            let _ = build_error(Ipv4Addr::from(a), Ipv4Addr::from(a), 3, 3, a, &b);
            if let Ok(mut i) = IcmpPacket::new_checked(&mut b[..]) {
                i.set_echo_ident(p);
                i.edit_payload(|q| q.reverse());
                i.fill_checksum();
                prop_assert!(i.verify_checksum());
            }
        }

        /// The outer checksum after edit_payload + quoted edits equals a full recompute, and the quoted
        /// UDP checksum (nonzero or zero) stays right.
        #[test]
        fn quoted_edits_match_recompute(
            data in proptest::collection::vec(any::<u8>(), 0..40),
            keep in 20usize..80,
            a in any::<u32>(), port in any::<u16>(), zero in any::<bool>(), src_side in any::<bool>(),
        ) {
            let mut orig = udp_original();
            orig.truncate(28);
            orig.extend_from_slice(&data);
            let n = orig.len();
            orig[24..26].copy_from_slice(&((n - 20) as u16).to_be_bytes());
            let mut op = Ipv4Packet::new_unchecked(&mut orig[..]);
            op.set_total_len(n);
            op.fill_header_checksum();
            op.fill_transport_checksum();
            if zero { op.udp_mut().unwrap().clear_checksum(); }
            // Full-quote reference: edit the complete original with the IPv4/UDP setters.
            let mut reference = orig.clone();
            {
                let mut rp = Ipv4Packet::new_checked(&mut reference[..]).unwrap();
                if src_side { rp.set_src_addr(Ipv4Addr::from(a)); rp.udp_mut().unwrap().set_src_port(port); }
                else { rp.set_dst_addr(Ipv4Addr::from(a)); rp.udp_mut().unwrap().set_dst_port(port); }
                prop_assert!(rp.verify_transport_checksum());
            }
            let mut e = build_error(Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(10, 0, 0, 2), 3, 3, 0, &orig[..keep.min(n)]);
            let mut p = Ipv4Packet::new_checked(&mut e[..]).unwrap();
            p.icmp_mut().unwrap().edit_payload(|q| {
                if src_side { quoted_set_src(q, Ipv4Addr::from(a), Some(port)) }
                else { quoted_set_dst(q, Ipv4Addr::from(a), Some(port)) }
            });
            prop_assert!(p.verify_transport_checksum());
            let icmp = p.icmp().unwrap();
            // A port cut in half by the quote cannot be rewritten; compare it only when whole.
            let cmp = if keep < 24 { 20 } else { keep.min(n) };
            prop_assert_eq!(&icmp.payload()[..cmp], &reference[..cmp]);
        }
    }
}
