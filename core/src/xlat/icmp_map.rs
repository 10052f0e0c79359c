//! ICMPv4 ↔ ICMPv6 type, code, pointer and MTU correspondence (RFC 7915 §4.2 and §5.2).
//!
//! Owns: the tables, as pure functions of the header fields. Must not: touch bytes (the translators
//! in `to4`/`to6` do) — `None` means "silently drop" exactly where the RFC says so.

use super::Params;
use crate::wire::{icmp, icmpv6};

/// A translated ICMP header: type, code and the four bytes after the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub ty: u8,
    pub code: u8,
    pub rest: u32,
}

impl Head {
    /// The eight header bytes with a zero checksum.
    pub fn to_bytes(self) -> [u8; 8] {
        let r = self.rest.to_be_bytes();
        [self.ty, self.code, 0, 0, r[0], r[1], r[2], r[3]]
    }
}

const fn head(ty: u8, code: u8, rest: u32) -> Option<Head> {
    Some(Head { ty, code, rest })
}

/// RFC 1191 §7 plateau table, largest first.
const PLATEAUS: [u16; 11] = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// RFC 7915 §4.2: for a Fragmentation Needed with MTU 0 (a router predating RFC 1191), "the greatest
/// plateau value that is less than the returned Total Length field" (68 when none is).
pub fn plateau_below(total_len: u16) -> u16 {
    PLATEAUS.iter().copied().find(|&p| p < total_len).unwrap_or(68)
}

/// RFC 7915 §4.2 Figure 3: an ICMPv4 Parameter Problem pointer → the ICMPv6 one; `None` for fields with
/// no IPv6 counterpart (the message is then dropped).
pub fn pointer_4to6(p: u8) -> Option<u32> {
    Some(match p {
        0 => 0,           // Version/IHL → Version/Traffic Class
        1 => 1,           // Type of Service → Traffic Class/Flow Label
        2 | 3 => 4,       // Total Length → Payload Length
        8 => 7,           // TTL → Hop Limit
        9 => 6,           // Protocol → Next Header
        12..=15 => 8,     // Source Address
        16..=19 => 24,    // Destination Address
        _ => return None, // Identification, flags/offset, header checksum, options
    })
}

/// RFC 7915 §5.2 Figure 6: an ICMPv6 Parameter Problem pointer → the ICMPv4 one.
pub fn pointer_6to4(p: u32) -> Option<u8> {
    Some(match p {
        0 => 0,           // Version/Traffic Class → Version/IHL, Type of Service
        1 => 1,           // Traffic Class/Flow Label → Type of Service
        4 | 5 => 2,       // Payload Length → Total Length
        6 => 9,           // Next Header → Protocol
        7 => 8,           // Hop Limit → TTL
        8..=23 => 12,     // Source Address
        24..=39 => 16,    // Destination Address
        _ => return None, // the Flow Label's low bytes, extension headers
    })
}

/// RFC 7915 §4.2: the ICMPv6 header for an ICMPv4 one. `quoted_total_len` is the Total Length of the
/// datagram the error quotes (for the plateau of an MTU-0 Fragmentation Needed). `None`: drop.
pub fn v4_to_v6(ty: u8, code: u8, rest: u32, quoted_total_len: u16, params: &Params) -> Option<Head> {
    use icmpv6::*;
    match ty {
        icmp::TYPE_ECHO_REQUEST => head(TYPE_ECHO_REQUEST, 0, rest),
        icmp::TYPE_ECHO_REPLY => head(TYPE_ECHO_REPLY, 0, rest),
        icmp::TYPE_DEST_UNREACHABLE => match code {
            0 | 1 | 5..=8 | 11 | 12 => head(TYPE_DEST_UNREACHABLE, CODE_NO_ROUTE, 0),
            // Protocol unreachable → Parameter Problem "unrecognised Next Header", pointing at it.
            2 => head(TYPE_PARAMETER_PROBLEM, 1, 6),
            3 => head(TYPE_DEST_UNREACHABLE, CODE_PORT_UNREACHABLE, 0),
            icmp::CODE_FRAG_NEEDED => {
                let advertised = match (rest & 0xFFFF) as u16 {
                    0 => plateau_below(quoted_total_len),
                    m => m,
                };
                // minimum(advertised MTU + 20, MTU of the IPv6 next hop, MTU of the IPv4 next hop + 20).
                let mtu =
                    (u32::from(advertised) + 20).min(u32::from(params.mtu6)).min(u32::from(params.mtu4) + 20);
                head(TYPE_PACKET_TOO_BIG, 0, mtu)
            }
            9 | 10 | 13 | 15 => head(TYPE_DEST_UNREACHABLE, CODE_ADMIN_PROHIBITED, 0),
            // 14 (host precedence violation) and unknown codes.
            _ => None,
        },
        icmp::TYPE_TIME_EXCEEDED => head(TYPE_TIME_EXCEEDED, code, 0),
        icmp::TYPE_PARAMETER_PROBLEM => match code {
            // Code 2 ("bad length") is translated as "pointer indicates the error" too.
            0 | 2 => pointer_4to6((rest >> 24) as u8).map(|p| Head {
                ty: TYPE_PARAMETER_PROBLEM,
                code: 0,
                rest: p,
            }),
            _ => None,
        },
        // Timestamp, information, address mask, router discovery, redirect, source quench, unknown.
        _ => None,
    }
}

/// RFC 7915 §5.2: the ICMPv4 header for an ICMPv6 one. `quoted_has_frag`: the datagram in error
/// carried a Fragment header, so its IPv4 original was 28 bytes smaller rather than 20. `None`: drop.
pub fn v6_to_v4(ty: u8, code: u8, rest: u32, quoted_has_frag: bool, params: &Params) -> Option<Head> {
    use icmp::*;
    match ty {
        icmpv6::TYPE_ECHO_REQUEST => head(TYPE_ECHO_REQUEST, 0, rest),
        icmpv6::TYPE_ECHO_REPLY => head(TYPE_ECHO_REPLY, 0, rest),
        icmpv6::TYPE_DEST_UNREACHABLE => match code {
            0 | 2 | 3 => head(TYPE_DEST_UNREACHABLE, 1, 0),
            1 => head(TYPE_DEST_UNREACHABLE, 10, 0),
            4 => head(TYPE_DEST_UNREACHABLE, CODE_PORT_UNREACHABLE, 0),
            _ => None,
        },
        icmpv6::TYPE_PACKET_TOO_BIG => {
            let overhead = if quoted_has_frag { 28 } else { 20 };
            // minimum(advertised MTU - 20, MTU of the IPv4 next hop, MTU of the IPv6 next hop - 20).
            let mtu = rest
                .saturating_sub(overhead)
                .min(u32::from(params.mtu4))
                .min(u32::from(params.mtu6).saturating_sub(20))
                .min(u32::from(u16::MAX));
            head(TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED, mtu)
        }
        icmpv6::TYPE_TIME_EXCEEDED => head(TYPE_TIME_EXCEEDED, code, 0),
        icmpv6::TYPE_PARAMETER_PROBLEM => match code {
            0 => pointer_6to4(rest).map(|p| Head {
                ty: TYPE_PARAMETER_PROBLEM,
                code: 0,
                rest: u32::from(p) << 24,
            }),
            // Unrecognised Next Header → Protocol Unreachable.
            1 => head(TYPE_DEST_UNREACHABLE, 2, 0),
            _ => None,
        },
        // MLD, Neighbour Discovery, unknown informational and error types.
        _ => None,
    }
}

/// Whether an ICMP type carries an RFC 4884 length attribute, and at which byte of the header:
/// ICMPv4 Destination Unreachable, Time Exceeded and Parameter Problem (byte 5, 32-bit words);
/// ICMPv6 Destination Unreachable and Time Exceeded (byte 4, 64-bit words).
pub fn ext_length_at(v6: bool, ty: u8) -> Option<(usize, usize)> {
    match (v6, ty) {
        (false, icmp::TYPE_DEST_UNREACHABLE | icmp::TYPE_TIME_EXCEEDED | icmp::TYPE_PARAMETER_PROBLEM) => {
            Some((5, 4))
        }
        (true, icmpv6::TYPE_DEST_UNREACHABLE | icmpv6::TYPE_TIME_EXCEEDED) => Some((4, 8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params { mtu4: 1500, mtu6: 1500, ident: 0 };

    #[test]
    fn rfc7915_section_4_2_destination_unreachable() {
        let t = |code| v4_to_v6(3, code, 0, 1500, &P).map(|h| (h.ty, h.code, h.rest));
        for c in [0, 1, 5, 6, 7, 8, 11, 12] {
            assert_eq!(t(c), Some((1, 0, 0)), "code {c}");
        }
        assert_eq!(t(2), Some((4, 1, 6)));
        assert_eq!(t(3), Some((1, 4, 0)));
        for c in [9, 10, 13, 15] {
            assert_eq!(t(c), Some((1, 1, 0)), "code {c}");
        }
        assert_eq!(t(14), None);
        assert_eq!(t(16), None);
    }

    #[test]
    fn fragmentation_needed_becomes_packet_too_big() {
        let ptb = |adv: u32, total, p: &Params| v4_to_v6(3, 4, adv, total, p).unwrap();
        assert_eq!(ptb(1400, 1500, &P), Head { ty: 2, code: 0, rest: 1420 });
        // Bounded by the IPv6 next hop and the IPv4 next hop + 20.
        assert_eq!(ptb(1480, 1500, &P).rest, 1500);
        assert_eq!(ptb(1400, 1500, &Params { mtu4: 1300, ..P }).rest, 1320);
        assert_eq!(ptb(1400, 1500, &Params { mtu6: 1280, ..P }).rest, 1280);
        // MTU 0: the plateau below the quoted Total Length (RFC 1191), + 20.
        let jumbo = Params { mtu4: 9000, mtu6: 9000, ident: 0 };
        assert_eq!(ptb(0, 1500, &jumbo).rest, 1492 + 20);
        assert_eq!(ptb(0, 1492, &jumbo).rest, 1006 + 20);
        assert_eq!(ptb(0, 60, &jumbo).rest, 68 + 20);
        assert_eq!(plateau_below(65535), 32000);
        // The high 16 bits of an ICMPv4 rest-of-header (unused, RFC 4884 length) do not leak in.
        assert_eq!(ptb(0x0011_0500, 1500, &jumbo).rest, 0x500 + 20);
    }

    #[test]
    fn packet_too_big_becomes_fragmentation_needed() {
        let fneeded = |adv, frag, p: &Params| v6_to_v4(2, 0, adv, frag, p).unwrap();
        assert_eq!(fneeded(1280, false, &P), Head { ty: 3, code: 4, rest: 1260 });
        assert_eq!(fneeded(1280, true, &P).rest, 1252);
        assert_eq!(fneeded(9000, false, &P).rest, 1480, "IPv6 next hop - 20 bounds it");
        assert_eq!(fneeded(9000, false, &Params { mtu6: 9000, ..P }).rest, 1500, "IPv4 next hop bounds it");
        assert_eq!(fneeded(10, false, &P).rest, 0, "no underflow");
        assert_eq!(fneeded(u32::MAX, false, &Params { mtu4: 65535, mtu6: 65535, ident: 0 }).rest, 65515);
    }

    #[test]
    fn rfc7915_section_5_2_types() {
        let t = |ty, code, rest| v6_to_v4(ty, code, rest, false, &P).map(|h| (h.ty, h.code, h.rest));
        assert_eq!(t(128, 0, 0x1234_0001), Some((8, 0, 0x1234_0001)));
        assert_eq!(t(129, 0, 7), Some((0, 0, 7)));
        assert_eq!(t(1, 0, 0), Some((3, 1, 0)));
        assert_eq!(t(1, 1, 0), Some((3, 10, 0)));
        assert_eq!(t(1, 2, 0), Some((3, 1, 0)));
        assert_eq!(t(1, 3, 0), Some((3, 1, 0)));
        assert_eq!(t(1, 4, 0), Some((3, 3, 0)));
        assert_eq!(t(1, 5, 0), None);
        assert_eq!(t(3, 0, 0), Some((11, 0, 0)));
        assert_eq!(t(3, 1, 0), Some((11, 1, 0)));
        assert_eq!(t(4, 0, 6), Some((12, 0, 9 << 24)));
        assert_eq!(t(4, 0, 40), None, "pointer into an extension header");
        assert_eq!(t(4, 0, 2), None, "flow label");
        assert_eq!(t(4, 1, 0), Some((3, 2, 0)));
        assert_eq!(t(4, 2, 0), None);
        for ty in [130, 131, 132, 133, 134, 135, 136, 137, 200, 100] {
            assert_eq!(t(ty, 0, 0), None, "type {ty}");
        }
    }

    #[test]
    fn rfc7915_section_4_2_other_types() {
        let t = |ty, code, rest| v4_to_v6(ty, code, rest, 1500, &P).map(|h| (h.ty, h.code, h.rest));
        assert_eq!(t(8, 0, 5), Some((128, 0, 5)));
        assert_eq!(t(0, 0, 5), Some((129, 0, 5)));
        assert_eq!(t(11, 0, 0), Some((3, 0, 0)));
        assert_eq!(t(11, 1, 0), Some((3, 1, 0)));
        assert_eq!(t(12, 0, 9 << 24), Some((4, 0, 6)));
        assert_eq!(t(12, 2, 2 << 24), Some((4, 0, 4)));
        assert_eq!(t(12, 0, 10 << 24), None, "header checksum has no counterpart");
        assert_eq!(t(12, 1, 0), None, "missing option");
        for ty in [4, 5, 6, 9, 10, 13, 14, 15, 16, 17, 18, 42] {
            assert_eq!(t(ty, 0, 0), None, "type {ty}");
        }
    }

    #[test]
    fn pointer_tables_agree_where_both_exist() {
        for p4 in 0..20u8 {
            if let Some(p6) = pointer_4to6(p4) {
                let back = pointer_6to4(p6).unwrap();
                // Both sides name the first byte of the same field.
                assert!(back <= p4, "{p4} → {p6} → {back}");
            }
        }
        for (p6, p4) in
            [(0, 0), (1, 1), (4, 2), (5, 2), (6, 9), (7, 8), (8, 12), (23, 12), (24, 16), (39, 16)]
        {
            assert_eq!(pointer_6to4(p6), Some(p4));
        }
        for p6 in [2, 3, 40, 1000] {
            assert_eq!(pointer_6to4(p6), None);
        }
    }
}
