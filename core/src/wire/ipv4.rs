//! IPv4 datagram view (RFC 791) with checksum-maintaining setters, and fragmentation.
//!
//! Owns: the IPv4 header bytes, the pseudo-header part of the TCP/UDP checksums (an address change is the
//! IPv4 view's change, so its setter fixes both sums), and splitting a datagram into fragments. Must not:
//! pick addresses, reassemble, or know about flows.
//!
//! Panic contract: getters and setters never panic, even on a `new_unchecked` view over a short buffer
//! (fields past the end read as 0 and are not written). `new_checked` adds the guarantee that the values
//! are consistent: version 4, 20 <= header_len <= total_len <= buffer length. That makes the view usable
//! for quoted, truncated headers inside ICMP errors too.

use std::net::Ipv4Addr;

use super::checksum;
use super::tcp::TcpSegment;
use super::udp::{update_udp_checksum, UdpDatagram};
use super::{get_u16, get_u32, put_u16, WireError, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// The ICMP header's length and checksum offset (RFC 792), for the transport checksums this view keeps:
/// the ICMP view (`wire::icmp`) builds on this one, not the reverse.
const ICMP_HEADER_LEN: usize = 8;
const ICMP_CHECKSUM_AT: usize = 2;

mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const TOTAL_LEN: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLAGS_FRAG: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: usize = 12;
    pub(super) const DST: usize = 16;
    pub(super) const OPTIONS: usize = 20;
}

pub const HEADER_LEN: usize = 20;

/// Where TCP and UDP both keep their ports (RFC 9293 §3.1, RFC 768): the first four bytes.
const PORT_SRC_AT: usize = 0;
const PORT_DST_AT: usize = 2;

/// The ports of a first fragment's TCP or UDP header (`payload` is the fragment's IPv4 payload), read
/// without a transport view; `None` when the fragment is too short to hold the 8 bytes every
/// fragment but the last must carry (RFC 791).
pub fn first_fragment_ports(payload: &[u8]) -> Option<(u16, u16)> {
    if payload.len() < 8 {
        return None;
    }
    Some((get_u16(payload, PORT_SRC_AT)?, get_u16(payload, PORT_DST_AT)?))
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1FFF;

/// Offset of the transport checksum field within the transport header, for protocols with a pseudo-header.
fn pseudo_checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        _ => None,
    }
}

/// Updates a TCP/UDP checksum at `at` in `b` (if present) for a 32-bit pseudo-header word change.
/// UDP keeps RFC 768's 0 = "no checksum".
pub(crate) fn adjust_pseudo(b: &mut [u8], proto: u8, at: usize, old: u32, new: u32) {
    if let Some(c) = get_u16(b, at) {
        let c = match proto {
            IPPROTO_UDP => update_udp_checksum(c, |c| checksum::update_u32(c, old, new)),
            _ => checksum::update_u32(c, old, new),
        };
        put_u16(b, at, c);
    }
}

/// A view over an IPv4 datagram. The buffer may be longer than the total length (link-layer padding).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps without checks (see the module's panic contract: still panic-free, values may be inconsistent).
    pub fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Checks len >= 20, version 4, ihl >= 5, header_len <= total_len <= buffer length.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = ((b[field::VER_IHL] & 0x0F) as usize) * 4;
        if hl < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let total = u16::from_be_bytes([b[field::TOTAL_LEN], b[field::TOTAL_LEN + 1]]) as usize;
        if total < hl {
            return Err(WireError::BadTotalLen);
        }
        if total > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole buffer, including any bytes past the total length.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn byte(&self, at: usize) -> u8 {
        self.buf.as_ref().get(at).copied().unwrap_or(0)
    }
    fn u16_at(&self, at: usize) -> u16 {
        get_u16(self.buf.as_ref(), at).unwrap_or(0)
    }

    pub fn version(&self) -> u8 {
        self.byte(field::VER_IHL) >> 4
    }
    /// IHL * 4, as written (not clamped to the buffer).
    pub fn header_len(&self) -> usize {
        ((self.byte(field::VER_IHL) & 0x0F) as usize) * 4
    }
    /// The total-length field, as written.
    pub fn total_len(&self) -> usize {
        self.u16_at(field::TOTAL_LEN) as usize
    }
    pub fn dscp_ecn(&self) -> u8 {
        self.byte(field::DSCP_ECN)
    }
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_DF != 0
    }
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_MF != 0
    }
    /// Fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> usize {
        ((self.u16_at(field::FLAGS_FRAG) & FRAG_MASK) as usize) * 8
    }
    /// MF set or offset nonzero: this datagram is a piece of a larger one.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.byte(field::TTL)
    }
    pub fn protocol(&self) -> u8 {
        self.byte(field::PROTOCOL)
    }
    pub fn header_checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buf.as_ref(), field::SRC).unwrap_or(0))
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_u32(self.buf.as_ref(), field::DST).unwrap_or(0))
    }
    /// False when the header is truncated or its checksum does not verify.
    pub fn verify_header_checksum(&self) -> bool {
        let hl = self.header_len();
        hl >= HEADER_LEN && hl <= self.buf.as_ref().len() && checksum::checksum(self.header()) == 0
    }
    /// The header bytes (clamped to the buffer).
    pub fn header(&self) -> &[u8] {
        let b = self.buf.as_ref();
        &b[..self.header_len().min(b.len())]
    }
    /// Header options (bytes 20..header_len), clamped to the buffer.
    pub fn options(&self) -> &[u8] {
        self.header().get(field::OPTIONS..).unwrap_or(&[])
    }
    /// Bytes header_len..total_len, clamped to the buffer.
    pub fn payload(&self) -> &[u8] {
        let (s, e) = self.payload_range();
        &self.buf.as_ref()[s..e]
    }
    fn payload_range(&self) -> (usize, usize) {
        let n = self.buf.as_ref().len();
        let s = self.header_len().min(n);
        (s, self.total_len().clamp(s, n))
    }

    /// Verifies the TCP/UDP/ICMP checksum of an unfragmented datagram (UDP checksum 0 counts as valid).
    /// False if fragmented, truncated, malformed, or another protocol.
    pub fn verify_transport_checksum(&self) -> bool {
        if self.is_fragment() || self.total_len() > self.buf.as_ref().len() {
            return false;
        }
        let (src, dst) = (self.src_addr(), self.dst_addr());
        match self.protocol() {
            IPPROTO_TCP => self.tcp().is_ok_and(|t| t.verify_checksum(src, dst)),
            IPPROTO_UDP => self.udp().is_ok_and(|u| u.verify_checksum(src, dst)),
            IPPROTO_ICMP => {
                self.transport().is_ok_and(|b| b.len() >= ICMP_HEADER_LEN && checksum::checksum(b) == 0)
            }
            _ => false,
        }
    }

    /// A non-first fragment carries no transport header: those are refused with `Truncated`.
    pub(super) fn transport(&self) -> Result<&[u8], WireError> {
        if self.frag_offset() != 0 {
            return Err(WireError::Truncated);
        }
        Ok(self.payload())
    }
    /// TCP view over the payload. Err for a non-first fragment (no TCP header there) or a bad segment.
    pub fn tcp(&self) -> Result<TcpSegment<&[u8]>, WireError> {
        TcpSegment::new_checked(self.transport()?)
    }
    pub fn udp(&self) -> Result<UdpDatagram<&[u8]>, WireError> {
        UdpDatagram::new_checked(self.transport()?)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes header bytes at `at` and updates the header checksum for them. No-op past the buffer.
    #[inline]
    fn patch(&mut self, at: usize, new: &[u8]) {
        let b = self.buf.as_mut();
        if at + new.len() > b.len() || b.len() < HEADER_LEN {
            return;
        }
        let old_csum = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
        let word = |b: &[u8], w: usize| u16::from_be_bytes([b[w], b[w + 1]]);
        // The fields every forwarded packet has edited (TTL, addresses) are one byte or whole words at
        // fixed offsets: RFC 1624 eqn. 3 on each word, straight-line once the setter is inlined.
        let c = match new.len() {
            1 => {
                let w = at & !1;
                let old = word(b, w);
                b[at] = new[0];
                checksum::update_u16(old_csum, old, word(b, w))
            }
            2 | 4 if at % 2 == 0 => {
                let mut c = old_csum;
                for w in (at..at + new.len()).step_by(2) {
                    let old = word(b, w);
                    b[w..w + 2].copy_from_slice(&new[w - at..w - at + 2]);
                    c = checksum::update_u16(c, old, word(b, w));
                }
                c
            }
            _ => {
                let mut old = [0u8; 4];
                let old = &mut old[..new.len()];
                old.copy_from_slice(&b[at..at + new.len()]);
                b[at..at + new.len()].copy_from_slice(new);
                checksum::update_bytes(old_csum, at % 2 == 1, old, new)
            }
        };
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn set_addr(&mut self, at: usize, a: Ipv4Addr) {
        let Some(old) = get_u32(self.buf.as_ref(), at) else { return };
        let new = u32::from(a);
        self.patch(at, &new.to_be_bytes());
        // RFC 793 §3.1 / RFC 768: the TCP and UDP checksums cover the addresses through the pseudo-header.
        // Only a first fragment holds the transport header; its checksum covers the whole datagram.
        if self.frag_offset() != 0 {
            return;
        }
        let proto = self.protocol();
        if let Some(off) = pseudo_checksum_offset(proto) {
            let at = self.header_len() + off;
            adjust_pseudo(self.buf.as_mut(), proto, at, old, new);
        }
    }

    /// Bytes header_len..total_len for rewriting, clamped to the buffer. After editing, call
    /// [`Self::fill_transport_checksum`] (and [`Self::set_total_len`] if the length changed).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (s, e) = self.payload_range();
        &mut self.buf.as_mut()[s..e]
    }

    /// Changes the source address; updates the IPv4 header checksum AND, when this is a first fragment
    /// (offset 0) carrying TCP or UDP whose checksum field lies within the buffer, the transport checksum
    /// for the pseudo-header change (UDP checksum 0 stays 0). ICMP has no pseudo-header.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(field::SRC, a);
    }
    /// As [`Self::set_src_addr`], for the destination.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.set_addr(field::DST, a);
    }
    /// Sets the TTL. It shares one 16-bit word with the protocol: the checksum is updated for that word
    /// alone (RFC 1624 eqn. 3), small enough to inline on the per-packet path.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buf.as_mut();
        if b.len() < HEADER_LEN {
            return;
        }
        let word = |b: &[u8]| u16::from_be_bytes([b[field::TTL], b[field::TTL + 1]]);
        let old = word(b);
        b[field::TTL] = ttl;
        let csum = u16::from_be_bytes([b[field::CHECKSUM], b[field::CHECKSUM + 1]]);
        let c = checksum::update_u16(csum, old, word(b));
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.patch(field::DSCP_ECN, &[v]);
    }
    pub fn set_ident(&mut self, id: u16) {
        self.patch(field::IDENT, &id.to_be_bytes());
    }
    fn set_flags_frag(&mut self, f: impl FnOnce(u16) -> u16) {
        let v = f(self.u16_at(field::FLAGS_FRAG));
        self.patch(field::FLAGS_FRAG, &v.to_be_bytes());
    }
    pub fn set_dont_frag(&mut self, v: bool) {
        self.set_flags_frag(|w| if v { w | FLAG_DF } else { w & !FLAG_DF });
    }
    pub fn set_more_frags(&mut self, v: bool) {
        self.set_flags_frag(|w| if v { w | FLAG_MF } else { w & !FLAG_MF });
    }
    /// Sets the fragment offset in bytes (rounded down to 8-byte units; RFC 791 §3.1).
    pub fn set_frag_offset(&mut self, bytes: usize) {
        let units = ((bytes / 8) as u16) & FRAG_MASK;
        self.set_flags_frag(|w| (w & !FRAG_MASK) | units);
    }
    /// Sets total length; updates the header checksum (NOT the transport checksum: use
    /// [`Self::fill_transport_checksum`] after payload edits). Values above 65535 are clamped.
    pub fn set_total_len(&mut self, len: usize) {
        let v = len.min(u16::MAX as usize) as u16;
        self.patch(field::TOTAL_LEN, &v.to_be_bytes());
    }
    /// Recomputes the header checksum from scratch (no-op if the header is truncated).
    pub fn fill_header_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        if hl < HEADER_LEN || hl > b.len() {
            return;
        }
        b[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// Recomputes the TCP/UDP/ICMP checksum from scratch for an unfragmented datagram (for payload
    /// rewrites). UDP with checksum 0 (unused) is left at 0. No-op for fragments or unparsable payloads.
    pub fn fill_transport_checksum(&mut self) {
        if self.is_fragment() {
            return;
        }
        let (src, dst) = (self.src_addr(), self.dst_addr());
        match self.protocol() {
            IPPROTO_TCP => {
                if let Ok(mut t) = self.tcp_mut() {
                    t.fill_checksum(src, dst);
                }
            }
            IPPROTO_UDP => {
                if let Ok(mut u) = self.udp_mut() {
                    if u.checksum() != 0 {
                        u.fill_checksum(src, dst);
                    }
                }
            }
            IPPROTO_ICMP => {
                // RFC 792: the ICMP checksum covers the ICMP message alone (no pseudo-header).
                if let Ok(b) = self.transport_mut() {
                    if b.len() >= ICMP_HEADER_LEN {
                        b[ICMP_CHECKSUM_AT..ICMP_CHECKSUM_AT + 2].fill(0);
                        let c = checksum::checksum(b);
                        b[ICMP_CHECKSUM_AT..ICMP_CHECKSUM_AT + 2].copy_from_slice(&c.to_be_bytes());
                    }
                }
            }
            _ => {}
        }
    }

    /// Sets the TCP or UDP ports of a first fragment (offset 0, more fragments follow), where the
    /// transport views refuse: their length fields speak of the whole datagram. `None` leaves a port as it
    /// is. The transport checksum covers the whole datagram, so its incremental update stays right; a UDP
    /// checksum of 0 (none computed, RFC 768) stays 0 and a computed 0 is sent as 0xFFFF. Does nothing for
    /// other protocols or when the checksum field is not in the buffer.
    pub fn set_first_fragment_ports(&mut self, src: Option<u16>, dst: Option<u16>) {
        let proto = self.protocol();
        let csum_at = match proto {
            IPPROTO_TCP => super::tcp::CHECKSUM_AT,
            IPPROTO_UDP => super::udp::CHECKSUM_AT,
            _ => return,
        };
        let p = self.payload_mut();
        let Some(mut csum) = get_u16(p, csum_at) else { return };
        let zero_udp = proto == IPPROTO_UDP && csum == 0;
        for (at, new) in [(PORT_SRC_AT, src), (PORT_DST_AT, dst)] {
            let (Some(new), Some(old)) = (new, get_u16(p, at)) else { continue };
            if old != new {
                csum = checksum::update_u16(csum, old, new);
                put_u16(p, at, new);
            }
        }
        if !zero_udp {
            put_u16(p, csum_at, if proto == IPPROTO_UDP && csum == 0 { 0xffff } else { csum });
        }
    }

    pub(super) fn transport_mut(&mut self) -> Result<&mut [u8], WireError> {
        if self.frag_offset() != 0 {
            return Err(WireError::Truncated);
        }
        Ok(self.payload_mut())
    }
    /// TCP view over [`Self::payload_mut`]. Err for a non-first fragment or a bad segment. Its setters keep
    /// the TCP checksum right; address changes go through this IPv4 view.
    pub fn tcp_mut(&mut self) -> Result<TcpSegment<&mut [u8]>, WireError> {
        TcpSegment::new_checked(self.transport_mut()?)
    }
    pub fn udp_mut(&mut self) -> Result<UdpDatagram<&mut [u8]>, WireError> {
        UdpDatagram::new_checked(self.transport_mut()?)
    }
}

/// Options of a fragment after the first: only those with the copy bit set (RFC 791 §3.1, "copied flag"),
/// padded with EOL to a multiple of 4 bytes.
fn copied_options(opts: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,  // End of Option List
            1 => i += 1, // NOP: copy bit clear
            kind => {
                let len = *opts.get(i + 1).ok_or(WireError::BadOption)? as usize;
                if len < 2 || i + len > opts.len() {
                    return Err(WireError::BadOption);
                }
                if kind & 0x80 != 0 {
                    out.extend_from_slice(&opts[i..i + len]);
                }
                i += len;
            }
        }
    }
    while out.len() % 4 != 0 {
        out.push(0);
    }
    Ok(out)
}

/// Splits an IPv4 datagram into fragments no larger than `mtu` (RFC 791 §3.2 fragmentation: offsets in
/// 8-byte units, MF on all but the last, options copied only when their copy bit is set). Input may itself be
/// a fragment (offsets are relative to its own, and its MF is kept on the last piece).
///
/// DF is not consulted (the caller decides between fragmenting and ICMP "fragmentation needed") and is
/// copied as is. A datagram that already fits is returned as one piece (bytes past total_len dropped).
/// Errors: unparsable datagram, malformed options, or an MTU too small for 8 payload bytes per fragment.
pub fn fragment(datagram: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, WireError> {
    let p = Ipv4Packet::new_checked(datagram)?;
    let total = p.total_len();
    if total <= mtu {
        return Ok(vec![datagram[..total].to_vec()]);
    }
    let hl = p.header_len();
    let later_opts = copied_options(p.options())?;
    let later_hl = HEADER_LEN + later_opts.len();
    let data = p.payload();
    let base = p.frag_offset();
    let last_mf = p.more_frags();
    let room = |h: usize| mtu.saturating_sub(h) / 8 * 8;
    if room(hl) == 0 || room(later_hl) == 0 {
        return Err(WireError::BadLength);
    }
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let (hdr_len, opts) = if off == 0 { (hl, p.options()) } else { (later_hl, &later_opts[..]) };
        let n = room(hdr_len).min(data.len() - off);
        let last = off + n == data.len();
        let mut f = Vec::with_capacity(hdr_len + n);
        f.extend_from_slice(&datagram[..HEADER_LEN]);
        f.extend_from_slice(opts);
        f.extend_from_slice(&data[off..off + n]);
        f[field::VER_IHL] = 0x40 | (hdr_len / 4) as u8;
        let frag_bytes = base + off;
        if frag_bytes / 8 > FRAG_MASK as usize {
            return Err(WireError::BadLength);
        }
        let mut v = Ipv4Packet::new_unchecked(&mut f[..]);
        v.set_total_len(hdr_len + n);
        v.set_frag_offset(frag_bytes);
        v.set_more_frags(!last || last_mf);
        v.fill_header_checksum();
        out.push(f);
        off += n;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A SYN from 192.168.1.10:50000 to 93.184.216.34:21: IPv4 (id 0x1c46, DF, TTL 64) + 40-byte TCP header
    /// (MSS 1460, SACK-permitted, timestamps, NOP, wscale 7). Checksum fields are zero here and filled by
    /// [`syn`]; `tests/wire_etherparse.rs` checks the same bytes with an independent parser.
    pub(crate) const SYN: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xc0, 0xa8, 0x01,
        0x0a, //
        0x5d, 0xb8, 0xd8, 0x22, //
        0xc3, 0x50, 0x00, 0x15, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, //
        0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02,
        0x03, //
        0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    pub(crate) fn syn() -> Vec<u8> {
        let mut b = SYN.to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_header_checksum();
        p.fill_transport_checksum();
        b
    }

    fn full(b: &[u8]) -> (u16, u16) {
        let mut c = b.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut c[..]);
        p.fill_header_checksum();
        p.fill_transport_checksum();
        let t = match p.protocol() {
            IPPROTO_TCP => p.tcp().unwrap().checksum(),
            IPPROTO_UDP => p.udp().unwrap().checksum(),
            _ => p.icmp().unwrap().checksum(),
        };
        (p.header_checksum(), t)
    }

    fn current(b: &[u8]) -> (u16, u16) {
        let p = Ipv4Packet::new_checked(b).unwrap();
        let t = match p.protocol() {
            IPPROTO_TCP => p.tcp().unwrap().checksum(),
            IPPROTO_UDP => p.udp().unwrap().checksum(),
            _ => p.icmp().unwrap().checksum(),
        };
        (p.header_checksum(), t)
    }

    #[test]
    fn fixture_fields() {
        let b = syn();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!((p.header_len(), p.total_len()), (20, 60));
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!((p.ttl(), p.protocol()), (64, IPPROTO_TCP));
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(93, 184, 216, 34));
        assert!(p.verify_header_checksum());
        assert!(p.verify_transport_checksum());
        assert_eq!(p.payload().len(), 40);
        assert_eq!(p.tcp().unwrap().mss_option(), Some(1460));
    }

    #[test]
    fn every_setter_matches_recompute() {
        let mut b = syn();
        b.extend_from_slice(&[0, 0]); // link-layer padding must not matter
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(current(&b), full(&b));
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_dst_addr(Ipv4Addr::new(10, 1, 2, 3));
        p.set_ttl(63);
        p.set_ident(0xbeef);
        p.set_dont_frag(false);
        p.set_dscp_ecn(0xb8);
        assert_eq!(current(&b), full(&b));
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_header_checksum() && p.verify_transport_checksum());
        assert_eq!((p.ttl(), p.ident(), p.dont_frag(), p.dscp_ecn()), (63, 0xbeef, false, 0xb8));
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        assert!(p.more_frags() && p.frag_offset() == 1480 && p.is_fragment());
        assert!(p.verify_header_checksum());
        assert!(!p.verify_transport_checksum(), "fragments are not verifiable");
        assert!(p.tcp().is_err(), "no TCP header in a non-first fragment");
        p.set_total_len(40);
        assert_eq!(p.payload().len(), 20);
        assert!(p.verify_header_checksum());
    }

    #[test]
    fn udp_zero_checksum_survives_address_change() {
        let mut b = syn();
        b[9] = IPPROTO_UDP;
        // UDP header in place of the TCP one: length 40, checksum 0.
        b[24..26].copy_from_slice(&40u16.to_be_bytes());
        b[26..28].fill(0);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_header_checksum();
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.udp().unwrap().checksum(), 0);
        assert!(p.verify_transport_checksum() && p.verify_header_checksum());
        p.fill_transport_checksum();
        assert_eq!(p.udp().unwrap().checksum(), 0, "fill keeps 'no checksum'");
    }

    #[test]
    fn refusals() {
        let b = syn();
        assert_eq!(Ipv4Packet::new_checked(&b[..19]).err(), Some(WireError::Truncated));
        assert_eq!(Ipv4Packet::new_checked(&b[..59]).err(), Some(WireError::Truncated));
        let mut c = b.clone();
        c[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&c[..]).err(), Some(WireError::BadVersion));
        c[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&c[..]).err(), Some(WireError::BadHeaderLen));
        c[0] = 0x45;
        c[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&c[..]).err(), Some(WireError::BadTotalLen));
    }

    fn reassemble(frags: &[Vec<u8>]) -> (Vec<u8>, bool) {
        let mut pieces: Vec<(usize, Vec<u8>, bool)> = frags
            .iter()
            .map(|f| {
                let p = Ipv4Packet::new_checked(&f[..]).unwrap();
                assert!(p.verify_header_checksum());
                (p.frag_offset(), p.payload().to_vec(), p.more_frags())
            })
            .collect();
        pieces.sort_by_key(|x| x.0);
        let mut data = Vec::new();
        for (off, d, _) in &pieces {
            assert_eq!(*off, data.len() + pieces[0].0);
            data.extend_from_slice(d);
        }
        (data, pieces.last().unwrap().2)
    }

    #[test]
    fn fragment_copies_only_copied_options() {
        // Header with options: NOP, Router Alert (0x94, copied), Record Route (7, not copied, len 7), EOL.
        let mut b = vec![0x48, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        b.extend_from_slice(&[1, 0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0]);
        b.extend((0..100u8).collect::<Vec<_>>());
        let n = b.len();
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_total_len(n);
        p.fill_header_checksum();
        let frags = fragment(&b, 32 + 40).unwrap();
        assert_eq!(frags.len(), 3);
        let first = Ipv4Packet::new_checked(&frags[0][..]).unwrap();
        assert_eq!(first.header_len(), 32);
        assert_eq!(first.payload().len(), 40);
        let second = Ipv4Packet::new_checked(&frags[1][..]).unwrap();
        assert_eq!(second.options(), &[0x94, 4, 0, 0]);
        assert_eq!(second.frag_offset(), 40);
        assert!(frags.iter().all(|f| f.len() <= 72));
        let (data, mf) = reassemble(&frags);
        assert_eq!(&data[..], &b[32..]);
        assert!(!mf);
        assert_eq!(fragment(&b, 32 + 7).err(), Some(WireError::BadLength));
        assert_eq!(fragment(&b, 2000).unwrap(), vec![b.clone()]);
    }

    /// A datagram of `proto` (TCP or UDP) 192.168.1.10:50000 -> 93.184.216.34:21 with `payload`, every
    /// checksum filled; `udp_csum_zero` leaves the UDP checksum unused (RFC 768).
    fn datagram(proto: u8, payload: &[u8], udp_csum_zero: bool) -> Vec<u8> {
        let mut b = syn();
        b.truncate(20);
        b[9] = proto;
        let hdr: &[u8] = if proto == IPPROTO_TCP {
            &SYN[20..40]
        } else {
            &[0xc3, 0x50, 0x00, 0x15, 0x00, 0x00, 0x00, 0x00]
        };
        b.extend_from_slice(hdr);
        if proto == IPPROTO_TCP {
            b[20 + 12] = 0x50; // a 20-byte header
        }
        b.extend_from_slice(payload);
        let n = b.len();
        if proto == IPPROTO_UDP {
            b[24..26].copy_from_slice(&((n - 20) as u16).to_be_bytes());
            if !udp_csum_zero {
                // Any non-zero value: a checksum to fill (0 would mean "none", RFC 768).
                b[26] = 1;
            }
        }
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_total_len(n);
        p.fill_header_checksum();
        if !udp_csum_zero {
            p.fill_transport_checksum();
        }
        b
    }

    #[test]
    fn first_fragment_ports_keep_the_whole_datagrams_checksum() {
        let payload: Vec<u8> = (0..200u8).collect();
        for (proto, zero) in [(IPPROTO_TCP, false), (IPPROTO_UDP, false), (IPPROTO_UDP, true)] {
            let whole = datagram(proto, &payload, zero);
            let mut frags = fragment(&whole, 96).unwrap();
            assert!(frags.len() > 1);
            let mut first = Ipv4Packet::new_checked(&mut frags[0][..]).unwrap();
            assert!(first.more_frags());
            first.set_first_fragment_ports(Some(1234), None);
            first.set_first_fragment_ports(None, Some(4321));
            // Reassembled, the edited ports and the checksum agree (the checksum covers the whole datagram).
            let (data, _) = reassemble(&frags);
            let mut again = whole[..20].to_vec();
            again.extend_from_slice(&data);
            let ip = Ipv4Packet::new_checked(&again[..]).unwrap();
            if proto == IPPROTO_TCP {
                let t = ip.tcp().unwrap();
                assert_eq!((t.src_port(), t.dst_port()), (1234, 4321));
            } else {
                let u = ip.udp().unwrap();
                assert_eq!((u.src_port(), u.dst_port()), (1234, 4321));
                assert_eq!(u.checksum() == 0, zero, "an unused UDP checksum stays unused");
            }
            assert!(ip.verify_transport_checksum());
        }
        // Other protocols and short buffers: nothing happens.
        let mut icmp = datagram(IPPROTO_TCP, b"x", false);
        icmp[9] = IPPROTO_ICMP;
        let before = icmp.clone();
        Ipv4Packet::new_unchecked(&mut icmp[..]).set_first_fragment_ports(Some(1), Some(2));
        assert_eq!(icmp, before);
        let mut short = datagram(IPPROTO_TCP, b"", false);
        short.truncate(20 + 16);
        let before = short.clone();
        Ipv4Packet::new_unchecked(&mut short[..]).set_first_fragment_ports(Some(1), Some(2));
        assert_eq!(short, before);
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(mut b in proptest::collection::vec(any::<u8>(), 0..90), a in any::<u32>()) {
            for unchecked in [false, true] {
                let p = if unchecked { Ipv4Packet::new_unchecked(&b[..]) } else {
                    match Ipv4Packet::new_checked(&b[..]) { Ok(p) => p, Err(_) => continue }
                };
                let _ = (p.header_len(), p.total_len(), p.dscp_ecn(), p.ident(), p.dont_frag(), p.more_frags());
                let _ = (p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol(), p.header_checksum());
                let _ = (p.src_addr(), p.dst_addr(), p.verify_header_checksum(), p.header(), p.payload());
                let _ = (p.verify_transport_checksum(), p.options(), p.tcp().is_ok(), p.udp().is_ok(), p.icmp().is_ok());
            }
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_src_addr(Ipv4Addr::from(a));
            p.set_dst_addr(Ipv4Addr::from(a));
            p.set_ttl(a as u8);
            p.set_frag_offset(a as usize);
            p.set_total_len(a as usize);
            p.fill_header_checksum();
            p.fill_transport_checksum();
            let _ = p.payload_mut();
            let _ = fragment(&b, (a % 200) as usize);
        }

        #[test]
        fn incremental_equals_recompute(
            payload in proptest::collection::vec(any::<u8>(), 0..60),
            proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMP)],
            udp_zero in any::<bool>(),
            src in any::<u32>(), dst in any::<u32>(), ttl in any::<u8>(), id in any::<u16>(), df in any::<bool>(),
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(),
        ) {
            let mut b = syn();
            b.truncate(40);
            b[32] = 0x50; // TCP header without options
            b.extend_from_slice(&payload);
            b[9] = proto;
            let n = b.len();
            if proto == IPPROTO_UDP {
                b[24..26].copy_from_slice(&((n - 20) as u16).to_be_bytes());
            }
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_total_len(n);
            p.fill_header_checksum();
            p.fill_transport_checksum();
            if proto == IPPROTO_UDP && udp_zero {
                p.udp_mut().unwrap().clear_checksum();
            }
            p.set_src_addr(Ipv4Addr::from(src));
            p.set_dst_addr(Ipv4Addr::from(dst));
            p.set_ttl(ttl);
            p.set_dscp_ecn(ttl.rotate_left(3)); // a single byte at an odd offset
            p.set_ident(id);
            p.set_dont_frag(df);
            match proto {
                IPPROTO_TCP => {
                    let mut t = p.tcp_mut().unwrap();
                    t.set_src_port(sp);
                    t.set_dst_port(dp);
                    t.set_seq_number(crate::wire::SeqNum::new(seq));
                }
                IPPROTO_UDP => {
                    let mut u = p.udp_mut().unwrap();
                    u.set_src_port(sp);
                    u.set_dst_port(dp);
                }
                _ => {
                    let mut i = p.icmp_mut().unwrap();
                    i.set_echo_ident(sp);
                }
            }
            prop_assert!(p.verify_header_checksum());
            prop_assert!(p.verify_transport_checksum());
            if proto == IPPROTO_UDP && udp_zero {
                prop_assert_eq!(p.udp().unwrap().checksum(), 0);
            } else {
                prop_assert_eq!(current(&b), full(&b));
            }
        }

        #[test]
        fn fragment_reassembles(
            payload in proptest::collection::vec(any::<u8>(), 0..400),
            mtu in 28usize..600,
            base_units in 0usize..100,
            mf in any::<bool>(),
        ) {
            let mut b = syn();
            b.truncate(20);
            b.extend_from_slice(&payload);
            let n = b.len();
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_total_len(n);
            p.set_frag_offset(base_units * 8);
            p.set_more_frags(mf);
            let frags = fragment(&b, mtu).unwrap();
            prop_assert!(frags.iter().all(|f| f.len() <= mtu.max(n)));
            let (data, last_mf) = reassemble(&frags);
            prop_assert_eq!(&data[..], &payload[..]);
            prop_assert_eq!(last_mf, mf);
            let first = Ipv4Packet::new_checked(&frags[0][..]).unwrap();
            prop_assert_eq!(first.frag_offset(), base_units * 8);
            prop_assert_eq!(first.ident(), 0x1c46);
            prop_assert_eq!(first.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
            for f in &frags[..frags.len() - 1] {
                prop_assert!(Ipv4Packet::new_checked(&f[..]).unwrap().more_frags());
                prop_assert_eq!((f.len() - 20) % 8, 0);
            }
        }
    }
}
