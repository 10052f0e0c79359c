//! IPv6 datagram view (RFC 8200) with checksum-maintaining setters, and the extension-header walk.
//!
//! Owns: the fixed 40-byte header, walking the extension headers to the upper layer ([`Layout`]),
//! the Fragment header's fields, and the IPv6 pseudo-header part of the TCP/UDP/ICMPv6 checksums (an
//! address change is this view's change, so its setters fix the upper-layer checksum). Must not: pick
//! addresses, translate to IPv4 (`crate::xlat` does), reassemble, or know about flows.
//!
//! IPv6 has no header checksum; unlike IPv4, the ICMPv6 checksum covers the pseudo-header too
//! (RFC 4443 §2.3), and a UDP checksum of 0 is not allowed (RFC 8200 §8.1).
//!
//! Panic contract: as for the IPv4 view — getters and setters never panic, even on a `new_unchecked`
//! view over a short buffer (fields past the end read as 0 and are not written); `new_checked`
//! guarantees version 6 and 40 + payload length <= buffer length.

use std::net::Ipv6Addr;

use super::checksum;
use super::icmpv6::Icmpv6Packet;
use super::tcp::TcpSegment;
use super::udp::{update_udp_checksum, UdpDatagram};
use super::{get_u16, get_u32, put_u16, WireError, IPPROTO_TCP, IPPROTO_UDP};

mod field {
    pub(super) const VER_TC_FLOW: usize = 0;
    pub(super) const PAYLOAD_LEN: usize = 4;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: usize = 8;
    pub(super) const DST: usize = 24;
}

pub const HEADER_LEN: usize = 40;

/// Extension headers and upper-layer protocols (IANA "Assigned Internet Protocol Numbers").
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_ESP: u8 = 50;
pub const NH_AUTH: u8 = 51;
pub const NH_ICMPV6: u8 = 58;
pub const NH_NONE: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;

/// Size of the Fragment header (RFC 8200 §4.5).
pub const FRAG_HEADER_LEN: usize = 8;

/// A chain longer than this is refused: RFC 8200 §4.1 recommends at most one of each kind (twice for
/// Destination Options), so eight covers every legitimate order and bounds the walk.
const MAX_EXT_HEADERS: usize = 8;

/// The Fragment header's fields (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Offset of the Fragment header from the start of the datagram.
    pub at: usize,
    /// The Next Header field: the protocol of the fragmentable part.
    pub next_header: u8,
    /// Fragment offset in bytes (the field counts 8-byte units).
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
}

impl FragHeader {
    /// MF set or offset nonzero. A Fragment header with neither is an "atomic fragment" (RFC 6946):
    /// a whole datagram, processed as such.
    pub fn is_fragment(&self) -> bool {
        self.more || self.offset != 0
    }
}

/// Where the upper layer starts, found by walking the extension headers RFC 7915 §5.1 skips (Hop-by-Hop,
/// Routing, Destination Options) and the Fragment header. Authentication (51) and ESP (50) end the walk
/// like a transport protocol: what follows them is theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The first Next Header value that is not an extension header walked here (TCP, UDP, ICMPv6,
    /// AH, ESP, No Next Header...). For a non-first fragment, the Fragment header's Next Header.
    pub upper: u8,
    /// Offset of the upper-layer header from the start of the datagram; for a non-first fragment, of
    /// the fragment's data (it carries no upper-layer header).
    pub upper_at: usize,
    pub frag: Option<FragHeader>,
    /// Offset of the Segments Left byte of a Routing header whose Segments Left is nonzero: a
    /// translator must not forward such a packet (RFC 7915 §5.1), the pointer of its ICMPv6 error.
    pub routing_left_at: Option<usize>,
}

impl Layout {
    /// This datagram is a piece of a larger one (and not an atomic fragment).
    pub fn is_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.is_fragment())
    }
    /// A fragment whose offset is not 0: it holds no upper-layer header.
    pub fn is_later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.offset != 0)
    }
}

/// Offset of the checksum field within the upper-layer header, for the protocols that have one covering
/// the pseudo-header.
fn pseudo_checksum_offset(nh: u8) -> Option<usize> {
    match nh {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        NH_ICMPV6 => Some(2),
        _ => None,
    }
}

/// Running sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length (32 bits),
/// three zero bytes and the upper-layer protocol.
pub fn pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let s = checksum::sum(&src.octets(), 0);
    let s = checksum::sum(&dst.octets(), s);
    checksum::sum(&len.to_be_bytes(), checksum::sum(&[0, 0, 0, next_header], s))
}

/// Walks the extension headers of the datagram in `b` (IPv6 header first). `payload_end` bounds the
/// walk: a header running past it is `Truncated`.
fn walk(b: &[u8], payload_end: usize) -> Result<Layout, WireError> {
    if payload_end < HEADER_LEN || b.len() < payload_end {
        return Err(WireError::Truncated);
    }
    let mut nh = *b.get(field::NEXT_HEADER).ok_or(WireError::Truncated)?;
    let mut at = HEADER_LEN;
    let mut frag = None;
    let mut routing_left_at = None;
    for i in 0..=MAX_EXT_HEADERS {
        let len = match nh {
            // RFC 8200 §4.3: the Hop-by-Hop Options header may only follow the IPv6 header.
            NH_HOP_BY_HOP if i > 0 => return Err(WireError::BadOption),
            NH_HOP_BY_HOP | NH_DEST_OPTS | NH_ROUTING => {
                let l = *b.get(at + 1).filter(|_| at + 2 <= payload_end).ok_or(WireError::Truncated)?;
                (usize::from(l) + 1) * 8
            }
            NH_FRAGMENT => FRAG_HEADER_LEN,
            _ => return Ok(Layout { upper: nh, upper_at: at, frag, routing_left_at }),
        };
        if i == MAX_EXT_HEADERS {
            break;
        }
        if at + len > payload_end {
            return Err(WireError::Truncated);
        }
        let next = b[at];
        match nh {
            NH_ROUTING if b[at + 3] != 0 => routing_left_at = routing_left_at.or(Some(at + 3)),
            NH_FRAGMENT => {
                if frag.is_some() {
                    // One fragmentation per datagram (RFC 8200 §4.5).
                    return Err(WireError::BadOption);
                }
                let w = get_u16(b, at + 2).unwrap_or(0);
                let f = FragHeader {
                    at,
                    next_header: next,
                    offset: usize::from(w & !7),
                    more: w & 1 != 0,
                    ident: get_u32(b, at + 4).unwrap_or(0),
                };
                frag = Some(f);
                if f.offset != 0 {
                    // A later fragment: what follows is data, not headers.
                    return Ok(Layout { upper: next, upper_at: at + len, frag, routing_left_at });
                }
            }
            _ => {}
        }
        nh = next;
        at += len;
    }
    Err(WireError::BadOption)
}

/// A view over an IPv6 datagram. The buffer may be longer than 40 + payload length (link padding).
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps without checks (see the module's panic contract).
    pub fn new_unchecked(buf: T) -> Self {
        Ipv6Packet { buf }
    }

    /// Checks len >= 40, version 6, 40 + payload length <= buffer length. A payload length of 0 with
    /// a Jumbo Payload option (RFC 2675) is not supported: such a datagram reads as having no payload.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        let plen = usize::from(u16::from_be_bytes([b[field::PAYLOAD_LEN], b[field::PAYLOAD_LEN + 1]]));
        if HEADER_LEN + plen > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv6Packet { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole buffer, including any bytes past the payload length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.buf.as_ref().get(at).copied().unwrap_or(0)
    }
    fn addr(&self, at: usize) -> Ipv6Addr {
        let mut o = [0u8; 16];
        if let Some(s) = self.buf.as_ref().get(at..at + 16) {
            o.copy_from_slice(s);
        }
        Ipv6Addr::from(o)
    }

    pub fn version(&self) -> u8 {
        self.byte(field::VER_TC_FLOW) >> 4
    }
    /// The 8-bit Traffic Class (DSCP + ECN, RFC 2474 / RFC 3168).
    pub fn traffic_class(&self) -> u8 {
        let w = get_u16(self.buf.as_ref(), field::VER_TC_FLOW).unwrap_or(0);
        (w >> 4) as u8
    }
    /// The 20-bit Flow Label (RFC 6437).
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::VER_TC_FLOW).unwrap_or(0) & 0x000F_FFFF
    }
    /// The Payload Length field, as written.
    pub fn payload_len(&self) -> usize {
        usize::from(get_u16(self.buf.as_ref(), field::PAYLOAD_LEN).unwrap_or(0))
    }
    /// 40 + payload length: the datagram's size on the wire.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    pub fn next_header(&self) -> u8 {
        self.byte(field::NEXT_HEADER)
    }
    pub fn hop_limit(&self) -> u8 {
        self.byte(field::HOP_LIMIT)
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        self.addr(field::SRC)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.addr(field::DST)
    }
    /// End of the datagram within the buffer (40 + payload length, clamped).
    fn end(&self) -> usize {
        self.total_len().min(self.buf.as_ref().len())
    }
    /// Bytes 40..40+payload length (extension headers included), clamped to the buffer.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        b.get(HEADER_LEN..self.end()).unwrap_or(&[])
    }
    /// The extension-header walk (see [`Layout`]). Errors: a header runs past the payload, a
    /// Hop-by-Hop header that is not first, two Fragment headers, or a chain too long.
    pub fn layout(&self) -> Result<Layout, WireError> {
        walk(self.buf.as_ref(), self.end())
    }
    /// The upper-layer bytes (from [`Layout::upper_at`] to the end of the payload).
    pub fn upper(&self) -> Result<&[u8], WireError> {
        let l = self.layout()?;
        Ok(&self.buf.as_ref()[l.upper_at..self.end()])
    }

    /// Verifies the TCP/UDP/ICMPv6 checksum of a datagram that is not a fragment. A UDP checksum of 0
    /// is invalid in IPv6 (RFC 8200 §8.1). False if fragmented, malformed, or another protocol.
    pub fn verify_transport_checksum(&self) -> bool {
        let Ok(l) = self.layout() else { return false };
        if l.is_fragment() || pseudo_checksum_offset(l.upper).is_none() {
            return false;
        }
        let up = &self.buf.as_ref()[l.upper_at..self.end()];
        if (l.upper == IPPROTO_UDP && get_u16(up, 6) == Some(0)) || up.len() < 8 {
            return false;
        }
        let ph = pseudo_header(self.src_addr(), self.dst_addr(), l.upper, up.len() as u32);
        checksum::finish(checksum::sum(up, ph)) == 0
    }

    /// The upper layer for a protocol, refused for a later fragment (no header there) or another
    /// protocol.
    fn upper_of(&self, proto: u8) -> Result<&[u8], WireError> {
        let l = self.layout()?;
        if l.upper != proto || l.is_later_fragment() {
            return Err(WireError::Truncated);
        }
        Ok(&self.buf.as_ref()[l.upper_at..self.end()])
    }
    /// TCP view over the upper layer. Its own `verify_checksum` is IPv4's: use
    /// [`Self::verify_transport_checksum`].
    pub fn tcp(&self) -> Result<TcpSegment<&[u8]>, WireError> {
        TcpSegment::new_checked(self.upper_of(IPPROTO_TCP)?)
    }
    pub fn udp(&self) -> Result<UdpDatagram<&[u8]>, WireError> {
        UdpDatagram::new_checked(self.upper_of(IPPROTO_UDP)?)
    }
    pub fn icmpv6(&self) -> Result<Icmpv6Packet<&[u8]>, WireError> {
        Icmpv6Packet::new_checked(self.upper_of(NH_ICMPV6)?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_addr(&mut self, at: usize, a: Ipv6Addr) {
        let b = self.buf.as_mut();
        let Some(slot) = b.get_mut(at..at + 16) else { return };
        let old = checksum::sum(slot, 0);
        slot.copy_from_slice(&a.octets());
        let new = checksum::sum(&a.octets(), 0);
        // The upper-layer checksum covers the addresses through the pseudo-header (RFC 8200 §8.1);
        // only a datagram whose upper-layer header is here (not a later fragment) has it to update.
        let Ok(l) = self.layout() else { return };
        if l.is_later_fragment() {
            return;
        }
        let Some(off) = pseudo_checksum_offset(l.upper) else { return };
        let at = l.upper_at + off;
        let b = self.buf.as_mut();
        if let Some(c) = get_u16(b, at) {
            let c = match l.upper {
                IPPROTO_UDP => update_udp_checksum(c, |c| checksum::update_sum(c, old, new)),
                _ => checksum::update_sum(c, old, new),
            };
            put_u16(b, at, c);
        }
    }

    /// Changes the source address and, when the upper-layer header is in this datagram, its TCP, UDP
    /// (a 0 stays 0) or ICMPv6 checksum for the pseudo-header change.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.set_addr(field::SRC, a);
    }
    /// As [`Self::set_src_addr`], for the destination.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.set_addr(field::DST, a);
    }
    /// Hop Limit is not covered by any checksum.
    pub fn set_hop_limit(&mut self, h: u8) {
        if let Some(s) = self.buf.as_mut().get_mut(field::HOP_LIMIT) {
            *s = h;
        }
    }
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buf.as_mut();
        if b.len() >= 2 {
            b[0] = (b[0] & 0xF0) | (tc >> 4);
            b[1] = (b[1] & 0x0F) | (tc << 4);
        }
    }
    /// Sets the 20-bit Flow Label (higher bits ignored).
    pub fn set_flow_label(&mut self, fl: u32) {
        let b = self.buf.as_mut();
        if b.len() >= 4 {
            b[1] = (b[1] & 0xF0) | ((fl >> 16) & 0x0F) as u8;
            b[2] = (fl >> 8) as u8;
            b[3] = fl as u8;
        }
    }
    /// Sets the Payload Length field (clamped to 65535); no checksum covers it directly — the
    /// upper-layer length in the pseudo-header is the caller's (use [`Self::fill_transport_checksum`]).
    pub fn set_payload_len(&mut self, len: usize) {
        put_u16(self.buf.as_mut(), field::PAYLOAD_LEN, len.min(usize::from(u16::MAX)) as u16);
    }
    pub fn set_next_header(&mut self, nh: u8) {
        if let Some(s) = self.buf.as_mut().get_mut(field::NEXT_HEADER) {
            *s = nh;
        }
    }

    /// Recomputes the TCP/UDP/ICMPv6 checksum from scratch for a datagram that is not a fragment.
    /// No-op for fragments, other protocols, or an upper layer too short for its checksum field.
    pub fn fill_transport_checksum(&mut self) {
        let Ok(l) = self.layout() else { return };
        let Some(off) = pseudo_checksum_offset(l.upper) else { return };
        if l.is_fragment() {
            return;
        }
        let (src, dst, end) = (self.src_addr(), self.dst_addr(), self.end());
        let up = &mut self.buf.as_mut()[l.upper_at..end];
        if up.len() < off + 2 {
            return;
        }
        up[off..off + 2].fill(0);
        let ph = pseudo_header(src, dst, l.upper, up.len() as u32);
        let c = match checksum::finish(checksum::sum(up, ph)) {
            // RFC 8200 §8.1: a computed UDP checksum of 0 is sent as 0xFFFF.
            0 if l.upper == IPPROTO_UDP => 0xFFFF,
            c => c,
        };
        up[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn upper_mut_of(&mut self, proto: u8) -> Result<&mut [u8], WireError> {
        let l = self.layout()?;
        if l.upper != proto || l.is_later_fragment() {
            return Err(WireError::Truncated);
        }
        let end = self.end();
        Ok(&mut self.buf.as_mut()[l.upper_at..end])
    }
    /// TCP view for editing: its setters keep the checksum right (the pseudo-header part is this
    /// view's, through the address setters).
    pub fn tcp_mut(&mut self) -> Result<TcpSegment<&mut [u8]>, WireError> {
        TcpSegment::new_checked(self.upper_mut_of(IPPROTO_TCP)?)
    }
    pub fn udp_mut(&mut self) -> Result<UdpDatagram<&mut [u8]>, WireError> {
        UdpDatagram::new_checked(self.upper_mut_of(IPPROTO_UDP)?)
    }
    pub fn icmpv6_mut(&mut self) -> Result<Icmpv6Packet<&mut [u8]>, WireError> {
        Icmpv6Packet::new_checked(self.upper_mut_of(NH_ICMPV6)?)
    }
}

/// Writes a 40-byte IPv6 header into `h` (which must be at least 40 bytes long).
pub fn write_header(
    h: &mut [u8],
    traffic_class: u8,
    payload_len: u16,
    next_header: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    h[0] = 0x60 | (traffic_class >> 4);
    h[1] = traffic_class << 4;
    h[2] = 0;
    h[3] = 0;
    h[field::PAYLOAD_LEN..field::PAYLOAD_LEN + 2].copy_from_slice(&payload_len.to_be_bytes());
    h[field::NEXT_HEADER] = next_header;
    h[field::HOP_LIMIT] = hop_limit;
    h[field::SRC..field::SRC + 16].copy_from_slice(&src.octets());
    h[field::DST..field::DST + 16].copy_from_slice(&dst.octets());
}

/// Writes an 8-byte Fragment header into `h` (RFC 8200 §4.5); `offset` in bytes (rounded down to 8).
pub fn write_frag_header(h: &mut [u8], next_header: u8, offset: usize, more: bool, ident: u32) {
    h[0] = next_header;
    h[1] = 0;
    let w = ((offset & 0xFFF8) as u16) | u16::from(more);
    h[2..4].copy_from_slice(&w.to_be_bytes());
    h[4..8].copy_from_slice(&ident.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// An IPv6 datagram from 2001:db8::2 to 64:ff9b::c633:6402 carrying `upper` as protocol `nh`,
    /// behind the extension headers `ext` (each given as its full bytes; the Next Header bytes are
    /// chained here), with the upper-layer checksum filled.
    pub(crate) fn datagram(nh: u8, ext: &[(u8, Vec<u8>)], upper: &[u8]) -> Vec<u8> {
        let plen = ext.iter().map(|e| e.1.len()).sum::<usize>() + upper.len();
        let mut b = vec![0u8; HEADER_LEN];
        let first = ext.first().map_or(nh, |e| e.0);
        write_header(&mut b, 0xb8, plen as u16, first, 64, a6("2001:db8::2"), a6("64:ff9b::c633:6402"));
        for (i, (_, bytes)) in ext.iter().enumerate() {
            let mut e = bytes.clone();
            e[0] = ext.get(i + 1).map_or(nh, |n| n.0);
            b.extend_from_slice(&e);
        }
        b.extend_from_slice(upper);
        Ipv6Packet::new_unchecked(&mut b[..]).fill_transport_checksum();
        b
    }

    /// A 20-byte TCP header (SYN, ports 50000 → 21) and `data`.
    pub(crate) fn tcp(data: &[u8]) -> Vec<u8> {
        let mut t = vec![0xc3, 0x50, 0x00, 0x15, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0];
        t.extend_from_slice(data);
        t
    }

    pub(crate) fn udp(data: &[u8]) -> Vec<u8> {
        let len = (8 + data.len()) as u16;
        let mut u = vec![0xcf, 0x08, 0x00, 0x35];
        u.extend_from_slice(&len.to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }

    fn opts(len8: u8) -> Vec<u8> {
        let mut v = vec![0u8; (usize::from(len8) + 1) * 8];
        v[1] = len8;
        // PadN over the rest (RFC 8200 §4.2).
        v[2] = 1;
        v[3] = (v.len() - 4) as u8;
        v
    }

    #[test]
    fn fields_and_layout() {
        let b = datagram(IPPROTO_TCP, &[], &tcp(b"hello"));
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xb8, 0));
        assert_eq!((p.payload_len(), p.total_len(), p.next_header(), p.hop_limit()), (25, 65, 6, 64));
        assert_eq!(p.src_addr(), a6("2001:db8::2"));
        assert_eq!(p.dst_addr(), a6("64:ff9b::198.51.100.2"));
        let l = p.layout().unwrap();
        assert_eq!((l.upper, l.upper_at, l.frag, l.routing_left_at), (IPPROTO_TCP, 40, None, None));
        assert!(p.verify_transport_checksum());
        assert_eq!(p.tcp().unwrap().payload(), b"hello");
        assert!(p.udp().is_err() && p.icmpv6().is_err());
    }

    #[test]
    fn extension_chain() {
        let mut rt = vec![0u8; 8]; // Routing type 4-ish, Segments Left 0
        rt[2] = 4;
        let frag = {
            let mut f = vec![0u8; 8];
            write_frag_header(&mut f, 0, 0, true, 0xdead_beef);
            f
        };
        let ext = [(NH_HOP_BY_HOP, opts(0)), (NH_DEST_OPTS, opts(1)), (NH_ROUTING, rt), (NH_FRAGMENT, frag)];
        let b = datagram(IPPROTO_UDP, &ext, &udp(b"x"));
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let l = p.layout().unwrap();
        assert_eq!((l.upper, l.upper_at), (IPPROTO_UDP, 40 + 8 + 16 + 8 + 8));
        let f = l.frag.unwrap();
        assert_eq!((f.at, f.next_header, f.offset, f.more, f.ident), (72, 17, 0, true, 0xdead_beef));
        assert!(l.is_fragment() && !l.is_later_fragment());
        assert!(!p.verify_transport_checksum(), "fragments are not verifiable");
        assert_eq!(p.udp().unwrap().payload(), b"x");
    }

    #[test]
    fn routing_segments_left_and_refusals() {
        let mut rt = vec![0u8; 8];
        rt[3] = 2; // Segments Left
        let b = datagram(IPPROTO_TCP, &[(NH_ROUTING, rt)], &tcp(b""));
        let l = Ipv6Packet::new_checked(&b[..]).unwrap().layout().unwrap();
        assert_eq!(l.routing_left_at, Some(43));

        // Hop-by-Hop not first.
        let b = datagram(IPPROTO_TCP, &[(NH_DEST_OPTS, opts(0)), (NH_HOP_BY_HOP, opts(0))], &tcp(b""));
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().layout(), Err(WireError::BadOption));
        // Two Fragment headers.
        let f = vec![0u8; 8];
        let b = datagram(IPPROTO_TCP, &[(NH_FRAGMENT, f.clone()), (NH_FRAGMENT, f)], &tcp(b""));
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().layout(), Err(WireError::BadOption));
        // Too long a chain.
        let ext: Vec<_> = (0..9).map(|_| (NH_DEST_OPTS, opts(0))).collect();
        let b = datagram(IPPROTO_TCP, &ext, &tcp(b""));
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().layout(), Err(WireError::BadOption));
        // A header running past the payload.
        let mut b = datagram(IPPROTO_TCP, &[(NH_DEST_OPTS, opts(0))], &[]);
        b[41] = 3;
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().layout(), Err(WireError::Truncated));
        // Checked constructor.
        let b = datagram(IPPROTO_TCP, &[], &tcp(b"abc"));
        assert_eq!(Ipv6Packet::new_checked(&b[..39]).err(), Some(WireError::Truncated));
        assert_eq!(Ipv6Packet::new_checked(&b[..b.len() - 1]).err(), Some(WireError::Truncated));
        let mut c = b.clone();
        c[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&c[..]).err(), Some(WireError::BadVersion));
    }

    #[test]
    fn later_fragment_has_no_upper_header() {
        let mut f = vec![0u8; 8];
        write_frag_header(&mut f, 0, 1232, false, 7);
        let b = datagram(IPPROTO_TCP, &[(NH_FRAGMENT, f)], b"0123456789abcdefghij");
        let mut b2 = b.clone();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let l = p.layout().unwrap();
        assert!(l.is_later_fragment() && l.is_fragment());
        assert_eq!((l.upper, l.upper_at), (IPPROTO_TCP, 48));
        assert!(p.tcp().is_err());
        // Address changes touch no bytes of the fragment's data.
        let mut q = Ipv6Packet::new_checked(&mut b2[..]).unwrap();
        q.set_src_addr(a6("2001:db8::99"));
        assert_eq!(&b2[48..], &b[48..]);
    }

    #[test]
    fn atomic_fragment_is_whole() {
        let f = vec![0u8; 8];
        let b = datagram(IPPROTO_UDP, &[(NH_FRAGMENT, f)], &udp(b"atomic"));
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let l = p.layout().unwrap();
        assert!(l.frag.is_some() && !l.is_fragment());
        assert!(p.verify_transport_checksum());
    }

    #[test]
    fn setters_keep_checksums() {
        for nh in [IPPROTO_TCP, IPPROTO_UDP, NH_ICMPV6] {
            let upper = match nh {
                IPPROTO_TCP => tcp(b"payload!"),
                IPPROTO_UDP => udp(b"payload!"),
                _ => vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, 9, 9, 9],
            };
            let mut b = datagram(nh, &[(NH_DEST_OPTS, opts(0))], &upper);
            b.extend_from_slice(&[0xee; 3]); // link padding must not matter
            let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
            p.set_src_addr(a6("2001:db8:1::77"));
            p.set_dst_addr(a6("64:ff9b:1::10.0.0.9"));
            p.set_hop_limit(3);
            p.set_traffic_class(0x2a);
            p.set_flow_label(0xabcde);
            assert!(p.verify_transport_checksum(), "proto {nh}");
            assert_eq!((p.hop_limit(), p.traffic_class(), p.flow_label()), (3, 0x2a, 0xabcde));
            assert_eq!(p.version(), 6);
        }
    }

    #[test]
    fn udp_zero_checksum_is_invalid_in_ipv6() {
        let mut b = datagram(IPPROTO_UDP, &[], &udp(b"z"));
        b[46..48].fill(0);
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_transport_checksum());
        p.set_src_addr(a6("2001:db8::5"));
        assert_eq!(p.udp().unwrap().checksum(), 0, "0 stays 0 through a setter");
        p.fill_transport_checksum();
        assert!(p.verify_transport_checksum());
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(mut b in proptest::collection::vec(any::<u8>(), 0..120), x in any::<u128>()) {
            for unchecked in [false, true] {
                let p = if unchecked { Ipv6Packet::new_unchecked(&b[..]) } else {
                    match Ipv6Packet::new_checked(&b[..]) { Ok(p) => p, Err(_) => continue }
                };
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.total_len());
                let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload(), p.layout());
                let _ = (p.upper().is_ok(), p.verify_transport_checksum(), p.tcp().is_ok(), p.udp().is_ok());
                let _ = p.icmpv6().is_ok();
            }
            let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
            p.set_src_addr(Ipv6Addr::from(x));
            p.set_dst_addr(Ipv6Addr::from(x.rotate_left(7)));
            p.set_hop_limit(x as u8);
            p.set_traffic_class((x >> 8) as u8);
            p.set_flow_label(x as u32);
            p.set_payload_len(x as usize);
            p.set_next_header((x >> 3) as u8);
            p.fill_transport_checksum();
            let _ = p.tcp_mut().is_ok();
        }

        #[test]
        fn incremental_equals_recompute(
            data in proptest::collection::vec(any::<u8>(), 0..80),
            nh in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(NH_ICMPV6)],
            with_opts in any::<bool>(),
            src in any::<u128>(), dst in any::<u128>(), port in any::<u16>(),
        ) {
            let upper = match nh {
                IPPROTO_TCP => tcp(&data),
                IPPROTO_UDP => udp(&data),
                _ => { let mut v = vec![129, 0, 0, 0, 1, 2, 3, 4]; v.extend_from_slice(&data); v }
            };
            let ext = if with_opts { vec![(NH_HOP_BY_HOP, opts(1))] } else { vec![] };
            let mut b = datagram(nh, &ext, &upper);
            let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
            p.set_src_addr(Ipv6Addr::from(src));
            p.set_dst_addr(Ipv6Addr::from(dst));
            match nh {
                IPPROTO_TCP => p.tcp_mut().unwrap().set_dst_port(port),
                IPPROTO_UDP => p.udp_mut().unwrap().set_src_port(port),
                _ => p.icmpv6_mut().unwrap().set_echo_ident(port),
            }
            prop_assert!(p.verify_transport_checksum());
            let edited = b.clone();
            Ipv6Packet::new_unchecked(&mut b[..]).fill_transport_checksum();
            // Ones-complement has two zeros: compare by verification when the recomputed value differs.
            prop_assert!(b == edited || Ipv6Packet::new_unchecked(&edited[..]).verify_transport_checksum());
        }
    }
}
