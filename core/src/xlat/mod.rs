//! IP/ICMP translation between IPv6 and IPv4 (RFC 7915) and IPv4-embedded IPv6 addresses (RFC 6052):
//! the stateless half of a stateful NAT64 (RFC 6146).
//!
//! Owns: turning one datagram of one family into the other in place — header fields, extension
//! headers, fragments, the TCP/UDP checksum's pseudo-header change, ICMP ↔ ICMPv6 (types, codes,
//! pointers, MTUs, and errors rebuilt around the translated datagram they quote) — and the prefix
//! arithmetic ([`prefix`]). Must not: decide which addresses stand for which (the caller's
//! [`AddrMap`]: the NAT64 prefix for IPv4 hosts, the engine's inside-host table for IPv6 ones), keep
//! any state, decrement TTL / Hop Limit (the caller forwards, RFC 7915 §4.1 lets it do that on either
//! side), or send the ICMP errors a refusal calls for (the caller, from an [`XlatError`]).
//!
//! Decisions a caller should know:
//! - Translation is in place on a `Vec<u8>`: the header is spliced, the payload moves once. Only ICMP
//!   errors are rebuilt into a new buffer.
//! - TCP and UDP checksums are updated incrementally (RFC 1624) for the address change, so a segment
//!   that arrived corrupt still fails at the receiver; an ICMP error is verified first and rebuilt.
//! - IPv6 → IPv4 (RFC 7915 §5.1): DF is set when the IPv4 datagram exceeds 1260 bytes; Identification
//!   is `params.ident` for 88 < size <= 1280 (the §5.1 MAY, so that an IPv4 router fragmenting it
//!   does not mix it up with other datagrams), else 0. A Fragment header (atomic or not) becomes the
//!   IPv4 fragment fields with DF clear (§5.1.1). HBH, Destination Options and Routing headers with
//!   Segments Left 0 are dropped; Segments Left > 0 is refused with the pointer for the ICMPv6 error.
//! - IPv4 → IPv6 (RFC 7915 §4.1): no atomic fragments (RFC 8021); a Fragment header only for an IPv4
//!   fragment; options ignored, an unexpired source route refused; a zero UDP checksum computed
//!   (unfragmented) or refused (fragment, §4.5). [`split_for_v6`] fragments a DF-clear datagram that
//!   would not fit the IPv6 MTU before translation.
//! - Fragmented ICMP is refused: its checksum's pseudo-header (ICMPv6) covers the whole datagram's
//!   length, which a first fragment does not know.
//! - An ICMP error quoting an ICMP error, or quoting too little to translate, is refused (§4.3: the
//!   translation stops at the first embedded header). Quotes are cut to fit 1280 bytes (ICMPv6, RFC 4443
//!   §2.4(c)) or 576 (ICMPv4, RFC 1812 §4.3.2.3); RFC 4884 extensions are carried with their length
//!   attribute redone when the new type has one and they fit, dropped otherwise.

pub mod icmp_map;
pub mod prefix;
mod to4;
mod to6;

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use prefix::{Extract, Nat64Prefix, PrefixLen};
pub use to4::v6_to_v4;
pub use to6::{split_for_v6, v4_to_v6};

use crate::wire::udp::update_udp_checksum;
use crate::wire::{checksum, get_u16, put_u16, WireError, IPPROTO_TCP, IPPROTO_UDP};

/// Which address of the other family stands for an address. Implemented by the caller: IPv4 hosts
/// appear under the NAT64 prefix, IPv6 inside hosts under whatever the NAT gives them.
pub trait AddrMap {
    /// The IPv4 address for an IPv6 one, or `None` when it has none.
    fn to_v4(&self, a: Ipv6Addr) -> Option<Ipv4Addr>;
    /// The IPv6 address for an IPv4 one, or `None` when it has none.
    fn to_v6(&self, a: Ipv4Addr) -> Option<Ipv6Addr>;
    /// The IPv6 source of a translated ICMPv4 error sent by `a`, a router on the IPv4 path. By
    /// default as [`Self::to_v6`]; an implementation may follow RFC 6791 for routers whose address
    /// the prefix may not carry.
    fn error_source_to_v6(&self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        self.to_v6(a)
    }
}

/// What a translation needs besides the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// MTU of the IPv4 next hop (the WAN) and of the IPv6 next hop (the LAN): they bound the MTU of a
    /// translated Packet Too Big / Fragmentation Needed (RFC 7915 §4.2, §5.2).
    pub mtu4: u16,
    pub mtu6: u16,
    /// Identification for an unfragmented IPv6 → IPv4 datagram of 89..=1280 bytes (RFC 7915 §5.1).
    pub ident: u16,
}

/// Why a datagram was not translated. The caller counts it and, where the RFC asks, answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XlatError {
    /// The datagram does not parse.
    Malformed(WireError),
    /// An address (outer or quoted) has no counterpart in the other family.
    Unmapped,
    /// RFC 7915 §5.1: a Routing header with Segments Left > 0. The caller should answer ICMPv6
    /// Parameter Problem, code 0, with this pointer (offset of the Segments Left byte).
    RoutingHeader { pointer: u32 },
    /// RFC 7915 §4.1: an unexpired IPv4 source route option. The caller should answer ICMPv4
    /// Destination Unreachable, code 5 (source route failed).
    SourceRoute,
    /// An ICMP type or code RFC 7915 translates to nothing (dropped silently).
    IcmpUntranslatable,
    /// A fragment of an ICMP message (see the module header).
    FragmentedIcmp,
    /// An IPv4 UDP fragment with checksum 0 (RFC 7915 §4.5).
    UdpZeroChecksumFragment,
    /// An ICMP error whose checksum does not verify (not rebuilt over corruption).
    BadChecksum,
    /// An ICMP error whose quoted datagram cannot be translated: an error inside an error, a quote too
    /// short for its IP header.
    BadQuote,
}

impl XlatError {
    /// A short stable name (for counters and logs).
    pub const fn name(self) -> &'static str {
        match self {
            XlatError::Malformed(_) => "malformed",
            XlatError::Unmapped => "unmapped",
            XlatError::RoutingHeader { .. } => "routing_header",
            XlatError::SourceRoute => "source_route",
            XlatError::IcmpUntranslatable => "icmp_untranslatable",
            XlatError::FragmentedIcmp => "fragmented_icmp",
            XlatError::UdpZeroChecksumFragment => "udp_zero_checksum_fragment",
            XlatError::BadChecksum => "bad_checksum",
            XlatError::BadQuote => "bad_quote",
        }
    }
}

impl fmt::Display for XlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XlatError::Malformed(e) => write!(f, "malformed datagram: {e}"),
            XlatError::Unmapped => f.write_str("an address has no counterpart in the other family"),
            XlatError::RoutingHeader { pointer } => {
                write!(f, "routing header with segments left (byte {pointer})")
            }
            XlatError::SourceRoute => f.write_str("unexpired IPv4 source route"),
            XlatError::IcmpUntranslatable => f.write_str("ICMP type/code with no counterpart"),
            XlatError::FragmentedIcmp => f.write_str("fragmented ICMP"),
            XlatError::UdpZeroChecksumFragment => f.write_str("UDP fragment without checksum"),
            XlatError::BadChecksum => f.write_str("ICMP error with a bad checksum"),
            XlatError::BadQuote => f.write_str("ICMP error quoting an untranslatable datagram"),
        }
    }
}

impl From<WireError> for XlatError {
    fn from(e: WireError) -> XlatError {
        XlatError::Malformed(e)
    }
}

/// Running sum of a pair of addresses (the part of a pseudo-header that changes in translation; the
/// protocol and the upper-layer length sum to the same value in both families).
fn addr_sum(src: &[u8], dst: &[u8]) -> u32 {
    checksum::sum(dst, checksum::sum(src, 0))
}

/// Updates the TCP or UDP checksum in `upper` (possibly a truncated quote: a field not present is not
/// there to update) for a pseudo-header address change from `old` to `new` (running sums).
fn adjust_l4(upper: &mut [u8], proto: u8, old: u32, new: u32) {
    let at = match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => return,
    };
    if let Some(c) = get_u16(upper, at) {
        let c = match proto {
            IPPROTO_UDP => update_udp_checksum(c, |c| checksum::update_sum(c, old, new)),
            _ => checksum::update_sum(c, old, new),
        };
        put_u16(upper, at, c);
    }
}

/// Changes an ICMP echo header's type and moves its checksum between families: `add` (running sum of
/// the IPv6 pseudo-header) is folded in when going to ICMPv6, `remove` taken out when going to ICMPv4.
/// Works on a truncated quote as long as the checksum field is present.
fn retype_echo(upper: &mut [u8], ty: u8, remove: u32, add: u32) {
    let (Some(&old_ty), Some(c)) = (upper.first(), get_u16(upper, 2)) else { return };
    // Type and code form the first 16-bit word; the code of an echo is 0 in both families.
    let old_word = u16::from_be_bytes([old_ty, upper[1]]);
    upper[0] = ty;
    upper[1] = 0;
    let c = checksum::update_u16(c, old_word, u16::from(ty) << 8);
    put_u16(upper, 2, checksum::update_sum(c, remove, add));
}

/// Splits an ICMP error's body into the quoted datagram and an RFC 4884 extension, from the length
/// attribute at `len_at` counted in `unit`-byte words. Without a valid attribute everything is quote.
fn split_extension(header: &[u8], body: &[u8], ext: Option<(usize, usize)>) -> (Vec<u8>, Option<Vec<u8>>) {
    if let Some((len_at, unit)) = ext {
        let n = usize::from(header.get(len_at).copied().unwrap_or(0)) * unit;
        // RFC 4884 §4: with an extension the original datagram field is at least 128 bytes.
        if n >= 128 && n < body.len() {
            return (body[..n].to_vec(), Some(body[n..].to_vec()));
        }
    }
    (body.to_vec(), None)
}

/// Appends a translated quote and (if it fits) the extension to an ICMP error body, setting the
/// RFC 4884 length attribute of the new header (`ext_at` = byte and word size) when there is one.
/// `room` is how many body bytes the error may carry.
fn assemble_error(
    head: &mut [u8; 8],
    quote: &[u8],
    ext: Option<&[u8]>,
    ext_at: Option<(usize, usize)>,
    room: usize,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(room.min(quote.len() + ext.map_or(0, <[u8]>::len) + 8));
    match (ext, ext_at) {
        (Some(ext), Some((len_at, unit))) if ext.len() + 128 <= room => {
            // The quote padded to a whole number of words and to at least 128 bytes (RFC 4884 §4),
            // cut so that quote + extension fit.
            let max_quote = (room - ext.len()) / unit * unit;
            let q = quote.len().min(max_quote);
            let padded = q.div_ceil(unit).max(128 / unit) * unit;
            if padded <= max_quote && padded / unit <= 255 {
                body.extend_from_slice(&quote[..q]);
                body.resize(padded, 0);
                body.extend_from_slice(ext);
                head[len_at] = (padded / unit) as u8;
                return body;
            }
            body.extend_from_slice(&quote[..quote.len().min(room)]);
        }
        _ => body.extend_from_slice(&quote[..quote.len().min(room)]),
    }
    if let Some((len_at, _)) = ext_at {
        head[len_at] = 0;
    }
    body
}

#[cfg(test)]
pub(crate) mod tests;
