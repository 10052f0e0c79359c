//! UDP datagram view (RFC 768) with checksum-maintaining setters.
//!
//! Owns: the 8-byte UDP header. Must not: decide the translated ports, or touch the IPv4 header.
//!
//! RFC 768: a transmitted checksum of 0 means "no checksum", so setters leave 0 alone, and a computed
//! checksum of 0 is transmitted as 0xFFFF (its ones-complement equal).

use std::net::Ipv4Addr;

use super::checksum;
use super::{get_u16, WireError, IPPROTO_UDP};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
}

pub const HEADER_LEN: usize = 8;

/// Offset of the checksum within the UDP header (a first fragment's header cannot be viewed).
pub const CHECKSUM_AT: usize = field::CHECKSUM;

/// Incremental update that respects RFC 768's "0 = no checksum" on both ends.
pub fn update_udp_checksum(csum: u16, f: impl FnOnce(u16) -> u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    match f(csum) {
        0 => 0xFFFF,
        c => c,
    }
}

/// A view over a UDP datagram. The buffer may be longer than the length field (it is the IPv4 payload).
#[derive(Debug, Clone)]
pub struct UdpDatagram<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    pub fn new_unchecked(buf: T) -> Self {
        UdpDatagram { buf }
    }

    /// Checks len >= 8 and 8 <= length field <= buffer length. After this no accessor panics.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = u16::from_be_bytes([b[field::LENGTH], b[field::LENGTH + 1]]) as usize;
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if len > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpDatagram { buf })
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::SRC_PORT).unwrap_or(0)
    }
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::DST_PORT).unwrap_or(0)
    }
    /// The length field (header + payload).
    pub fn len(&self) -> usize {
        get_u16(self.buf.as_ref(), field::LENGTH).unwrap_or(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM).unwrap_or(0)
    }
    /// The datagram bytes covered by the length field, clamped to the buffer.
    fn datagram(&self) -> &[u8] {
        let b = self.buf.as_ref();
        &b[..self.len().clamp(HEADER_LEN.min(b.len()), b.len())]
    }
    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }
    /// True when the checksum is 0 (not used, RFC 768) or verifies over pseudo-header + datagram.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = self.datagram();
        let ph = checksum::pseudo_header(src, dst, IPPROTO_UDP, d.len() as u16);
        checksum::finish(checksum::sum(d, ph)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    fn set_port(&mut self, at: usize, p: u16) {
        let b = self.buf.as_mut();
        let (Some(old), Some(csum)) = (get_u16(b, at), get_u16(b, field::CHECKSUM)) else { return };
        b[at..at + 2].copy_from_slice(&p.to_be_bytes());
        let c = update_udp_checksum(csum, |c| checksum::update_u16(c, old, p));
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// Sets the source port; the checksum is updated unless it is 0 (not used).
    pub fn set_src_port(&mut self, p: u16) {
        self.set_port(field::SRC_PORT, p);
    }
    /// Sets the destination port; the checksum is updated unless it is 0 (not used).
    pub fn set_dst_port(&mut self, p: u16) {
        self.set_port(field::DST_PORT, p);
    }
    /// Computes the checksum over pseudo-header + datagram; a result of 0 is sent as 0xFFFF (RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let n = self.datagram().len();
        let b = self.buf.as_mut();
        if n < HEADER_LEN {
            return;
        }
        b[field::CHECKSUM..field::CHECKSUM + 2].fill(0);
        let ph = checksum::pseudo_header(src, dst, IPPROTO_UDP, n as u16);
        let c = match checksum::finish(checksum::sum(&b[..n], ph)) {
            0 => 0xFFFF,
            c => c,
        };
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
    /// Sets the checksum field to 0 ("no checksum", RFC 768).
    pub fn clear_checksum(&mut self) {
        let b = self.buf.as_mut();
        if let Some(s) = b.get_mut(field::CHECKSUM..field::CHECKSUM + 2) {
            s.fill(0);
        }
    }
    /// The payload for rewriting (bounded by the length field); call [`Self::fill_checksum`] afterwards.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = self.datagram().len();
        self.buf.as_mut().get_mut(HEADER_LEN..n).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    /// A DNS query for "a.io" A, 10.0.0.2:53000 -> 8.8.8.8:53, plus two bytes of Ethernet-style padding
    /// past the length field. The checksum is filled here and checked against `reference`.
    fn dns() -> Vec<u8> {
        let mut d = vec![
            0xcf, 0x08, 0x00, 0x35, 0x00, 0x1e, 0x00, 0x00, // 53000 -> 53, len 30, csum (filled below)
            0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DNS header
            0x01, b'a', 0x02, b'i', b'o', 0x00, 0x00, 0x01, 0x00, 0x01, // a.io A IN
            0xee, 0xee, // padding, not covered
        ];
        UdpDatagram::new_unchecked(&mut d[..]).fill_checksum(SRC, DST);
        d
    }

    fn reference(b: &[u8]) -> u16 {
        // Pseudo-header + datagram laid out in one buffer and summed naively.
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        let mut all = Vec::new();
        all.extend_from_slice(&SRC.octets());
        all.extend_from_slice(&DST.octets());
        all.extend_from_slice(&[0, 17]);
        all.extend_from_slice(&(len as u16).to_be_bytes());
        all.extend_from_slice(&b[..len]);
        all[12 + 6] = 0;
        all[12 + 7] = 0;
        match checksum::checksum(&all) {
            0 => 0xFFFF,
            c => c,
        }
    }

    #[test]
    fn fixture_fields() {
        let b = dns();
        let u = UdpDatagram::new_checked(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53000, 53, 30));
        assert_eq!(u.payload().len(), 22);
        assert_eq!(u.checksum(), reference(&b));
        assert!(u.verify_checksum(SRC, DST));
        assert!(!u.verify_checksum(SRC, Ipv4Addr::new(8, 8, 4, 4)));
    }

    #[test]
    fn setters_and_zero_checksum() {
        let mut b = dns();
        let mut u = UdpDatagram::new_checked(&mut b[..]).unwrap();
        u.set_src_port(40000);
        u.set_dst_port(5353);
        assert_eq!(u.checksum(), reference(&b));
        let mut u = UdpDatagram::new_checked(&mut b[..]).unwrap();
        u.clear_checksum();
        u.set_src_port(1);
        assert_eq!(u.checksum(), 0, "RFC 768: checksum 0 stays 0");
        assert!(u.verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Search for a source port whose datagram sums to 0xFFFF (checksum 0): both the full computation
        // and the incremental path must emit 0xFFFF for it, never 0 ("no checksum").
        let base = dns();
        let mut hit = false;
        for port in 0..=u16::MAX {
            let mut c = base.clone();
            UdpDatagram::new_checked(&mut c[..]).unwrap().set_src_port(port);
            if reference(&c) == 0xFFFF {
                let mut u = UdpDatagram::new_checked(&mut c[..]).unwrap();
                assert_eq!(u.checksum(), 0xFFFF, "incremental");
                assert!(u.verify_checksum(SRC, DST));
                u.fill_checksum(SRC, DST);
                assert_eq!(u.checksum(), 0xFFFF, "full");
                hit = true;
                break;
            }
        }
        assert!(hit);
    }

    #[test]
    fn refusals() {
        assert_eq!(UdpDatagram::new_checked(&[0u8; 7][..]).err(), Some(WireError::Truncated));
        let mut b = [0u8; 8];
        b[5] = 7;
        assert_eq!(UdpDatagram::new_checked(&b[..]).err(), Some(WireError::BadLength));
        b[5] = 9;
        assert_eq!(UdpDatagram::new_checked(&b[..]).err(), Some(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn no_panic(mut b in proptest::collection::vec(any::<u8>(), 0..40), p in any::<u16>()) {
            if let Ok(u) = UdpDatagram::new_checked(&b[..]) {
                let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum(), u.payload(), u.verify_checksum(SRC, DST));
            }
            if let Ok(mut u) = UdpDatagram::new_checked(&mut b[..]) {
                u.set_src_port(p);
                u.fill_checksum(SRC, DST);
                prop_assert!(u.verify_checksum(SRC, DST));
                let _ = u.payload_mut();
            }
        }

        #[test]
        fn incremental_equals_recompute(payload in proptest::collection::vec(any::<u8>(), 0..50), sp in any::<u16>(), dp in any::<u16>(), zero in any::<bool>()) {
            let mut b = vec![0x12, 0x34, 0x00, 0x35, 0, 0, 0, 0];
            b.extend_from_slice(&payload);
            let n = b.len() as u16;
            b[4..6].copy_from_slice(&n.to_be_bytes());
            let mut u = UdpDatagram::new_checked(&mut b[..]).unwrap();
            if !zero { u.fill_checksum(SRC, DST); }
            u.set_src_port(sp);
            u.set_dst_port(dp);
            let c = u.checksum();
            if zero { prop_assert_eq!(c, 0); } else { prop_assert_eq!(c, reference(&b)); }
        }
    }
}
