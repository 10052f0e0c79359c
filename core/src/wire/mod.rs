//! Bytes <-> header fields for IPv4, IPv6, TCP, UDP, ICMP and ICMPv6.
//!
//! Owns: zero-copy views over `&[u8]` / `&mut [u8]` (in the style of smoltcp's `wire` module), the RFC 1071
//! checksum and the RFC 1624 incremental update, and [`SeqNum`] with wrapping comparison; in [`link`], the
//! link-layer framing around captured datagrams (Ethernet/VLAN/FCS, SLL, SLL2, NULL/LOOP). Must not: know
//! about flows, tables, sides, time or FTP.
//!
//! Two rules shape the API:
//! - Packets are edited in place, never parsed into a representation and re-emitted: a NAT must preserve
//!   every field it does not translate (IP ident, DF, options, TCP options, reserved bits).
//! - Every setter that changes a checksummed field updates that checksum in the same call, incrementally
//!   (RFC 1624 eqn. 3), so a translated packet cannot leave with a stale checksum. Only payload rewrites
//!   need an explicit `fill_*_checksum` (or [`IcmpPacket::edit_payload`], which stays incremental).
//!
//! Panic contract: every view has `new_checked`; after it succeeds no getter or setter of that view panics,
//! whatever the bytes are (setters that change lengths, such as [`Ipv4Packet::set_total_len`], are clamped
//! by readers). `new_unchecked` views are for buffers the caller built itself.

pub mod checksum;
#[cfg(test)]
pub(crate) mod etherparse_check;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod link;
pub mod seq;
pub mod tcp;
pub mod udp;

pub use icmp::IcmpPacket;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use seq::SeqNum;
pub use tcp::{TcpFlags, TcpSegment};
pub use udp::UdpDatagram;

use core::fmt;

/// Why a buffer was refused by a checked constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the fixed header or than a length field says.
    Truncated,
    /// The IP version nibble is not the view's (4 for [`Ipv4Packet`], 6 for [`Ipv6Packet`]).
    BadVersion,
    /// A header-length field is below the minimum or past the buffer.
    BadHeaderLen,
    /// The IPv4 total length is below the header length.
    BadTotalLen,
    /// A transport length field is inconsistent (UDP length, fragment size).
    BadLength,
    /// An option list cannot be walked (bad option length).
    BadOption,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated packet",
            WireError::BadVersion => "wrong IP version",
            WireError::BadHeaderLen => "bad header length",
            WireError::BadTotalLen => "bad IPv4 total length",
            WireError::BadLength => "bad length field",
            WireError::BadOption => "malformed option",
        })
    }
}

impl std::error::Error for WireError {}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Reads a big-endian u16 at `at`; `None` when the two bytes are not both in `b`.
pub(crate) fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Reads a big-endian u32 at `at`; `None` when the four bytes are not all in `b`.
pub(crate) fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Writes a big-endian u16 at `at` if it fits; returns whether it was written.
pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) -> bool {
    match at.checked_add(2).and_then(|end| b.get_mut(at..end)) {
        Some(s) => {
            s.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Writes a big-endian u32 at `at` if it fits; returns whether it was written.
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) -> bool {
    match at.checked_add(4).and_then(|end| b.get_mut(at..end)) {
        Some(s) => {
            s.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_accessors() {
        let mut b = [1u8, 2, 3, 4, 5];
        assert_eq!(get_u16(&b, 3), Some(0x0405));
        assert_eq!(get_u16(&b, 4), None);
        assert_eq!(get_u16(&b, usize::MAX), None);
        assert_eq!(get_u32(&b, 1), Some(0x0203_0405));
        assert_eq!(get_u32(&b, 2), None);
        assert!(!put_u16(&mut b, 4, 7));
        assert!(put_u32(&mut b, 0, 0xaabb_ccdd));
        assert_eq!(b, [0xaa, 0xbb, 0xcc, 0xdd, 5]);
        assert_eq!(WireError::BadOption.to_string(), "malformed option");
    }
}
