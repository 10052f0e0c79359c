//! IPv4 → IPv6 (RFC 7915 §4): the datagram, its transport checksum, ICMP, and the datagram an ICMP
//! error quotes.
//!
//! Owns: building the IPv6 header (and a Fragment header for IPv4 fragments) from an IPv4 one, and
//! splitting a DF-clear datagram that would not fit the IPv6 side. Must not: choose addresses (the
//! [`AddrMap`]) or send the errors a refusal calls for.

use std::net::Ipv6Addr;

use super::{
    addr_sum, adjust_l4, assemble_error, icmp_map, retype_echo, split_extension, AddrMap, Params, XlatError,
};
use crate::wire::icmp::IcmpPacket;
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet, FRAG_HEADER_LEN, NH_FRAGMENT, NH_ICMPV6};
use crate::wire::{get_u16, WireError, IPPROTO_ICMP, IPPROTO_UDP};

/// IPv4 option types of the source routes (RFC 791 §3.1): loose (LSRR) and strict (SSRR).
const OPT_LSRR: u8 = 131;
const OPT_SSRR: u8 = 137;

/// RFC 7915 §4.1: "if an unexpired source route option is present then the packet MUST instead be
/// discarded". A route is unexpired while its pointer (1-based, RFC 791) still points inside it.
fn has_unexpired_source_route(opts: &[u8]) -> Result<bool, XlatError> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1).ok_or(WireError::BadOption)?);
                if len < 2 || i + len > opts.len() {
                    return Err(WireError::BadOption.into());
                }
                if matches!(kind, OPT_LSRR | OPT_SSRR) && len >= 3 && usize::from(opts[i + 2]) <= len {
                    return Ok(true);
                }
                i += len;
            }
        }
    }
    Ok(false)
}

/// The IPv6 header (and Fragment header) for an IPv4 header: `upper_len` is the IPv4 payload length
/// as the original datagram had it (not what a quote holds).
fn header_for(
    p: &Ipv4Packet<&[u8]>,
    upper_len: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    out: &mut [u8; ipv6::HEADER_LEN + FRAG_HEADER_LEN],
) -> usize {
    let proto = match p.protocol() {
        IPPROTO_ICMP => NH_ICMPV6,
        n => n,
    };
    // RFC 7915 §4.1: a Fragment header only when the IPv4 datagram is a fragment (atomic fragments are
    // no longer generated, RFC 8021).
    let frag = p.is_fragment();
    let extra = if frag { FRAG_HEADER_LEN } else { 0 };
    let plen = (upper_len + extra).min(usize::from(u16::MAX)) as u16;
    ipv6::write_header(
        &mut out[..],
        p.dscp_ecn(),
        plen,
        if frag { NH_FRAGMENT } else { proto },
        p.ttl(),
        src,
        dst,
    );
    if frag {
        // Identification: the low-order 16 bits from IPv4, the high-order 16 bits zero.
        ipv6::write_frag_header(
            &mut out[ipv6::HEADER_LEN..],
            proto,
            p.frag_offset(),
            p.more_frags(),
            u32::from(p.ident()),
        );
    }
    ipv6::HEADER_LEN + extra
}

/// Translates an IPv4 datagram into IPv6 in place (RFC 7915 §4). TTL is copied, not decremented.
/// Bytes past the Total Length (link padding) are dropped. On error `pkt` is unspecified only in
/// that it may have been truncated to its Total Length.
pub fn v4_to_v6(pkt: &mut Vec<u8>, map: &impl AddrMap, params: &Params) -> Result<(), XlatError> {
    let mut head = [0u8; ipv6::HEADER_LEN + FRAG_HEADER_LEN];
    let (hl, total, n, proto, is_frag, first, old, src, dst) = {
        let p = Ipv4Packet::new_checked(&pkt[..])?;
        if has_unexpired_source_route(p.options())? {
            return Err(XlatError::SourceRoute);
        }
        let (src4, dst4) = (p.src_addr(), p.dst_addr());
        if p.protocol() == IPPROTO_ICMP {
            if p.is_fragment() {
                return Err(XlatError::FragmentedIcmp);
            }
            let icmp = IcmpPacket::new_checked(p.payload())?;
            if icmp.is_error() {
                let src = map.error_source_to_v6(src4).ok_or(XlatError::Unmapped)?;
                let dst = map.to_v6(dst4).ok_or(XlatError::Unmapped)?;
                *pkt = error_to_v6(&p, src, dst, map, params)?;
                return Ok(());
            }
            if !matches!(icmp.msg_type(), 0 | 8) {
                return Err(XlatError::IcmpUntranslatable);
            }
        }
        let src = map.to_v6(src4).ok_or(XlatError::Unmapped)?;
        let dst = map.to_v6(dst4).ok_or(XlatError::Unmapped)?;
        let (hl, total) = (p.header_len(), p.total_len());
        let n = header_for(&p, total - hl, src, dst, &mut head);
        let old = addr_sum(&src4.octets(), &dst4.octets());
        (hl, total, n, p.protocol(), p.is_fragment(), p.frag_offset() == 0, old, src, dst)
    };
    pkt.truncate(total);
    let upper = &mut pkt[hl..];
    let mut fill_udp = false;
    if first {
        match proto {
            IPPROTO_ICMP => {
                let h = icmp_map::v4_to_v6(upper[0], upper[1], 0, 0, params)
                    .ok_or(XlatError::IcmpUntranslatable)?;
                let ph = ipv6::pseudo_header(src, dst, NH_ICMPV6, upper.len() as u32);
                retype_echo(upper, h.ty, 0, ph);
            }
            IPPROTO_UDP if get_u16(upper, 6) == Some(0) => {
                // RFC 7915 §4.5: IPv6 requires a UDP checksum. Computed for a whole datagram; a first
                // fragment does not hold the data it would cover.
                if is_frag {
                    return Err(XlatError::UdpZeroChecksumFragment);
                }
                fill_udp = true;
            }
            _ => adjust_l4(upper, proto, old, addr_sum(&src.octets(), &dst.octets())),
        }
    }
    pkt.splice(..hl, head[..n].iter().copied());
    if fill_udp {
        Ipv6Packet::new_unchecked(&mut pkt[..]).fill_transport_checksum();
    }
    Ok(())
}

/// Builds the ICMPv6 error for an ICMPv4 one (`p` is the whole IPv4 datagram).
fn error_to_v6(
    p: &Ipv4Packet<&[u8]>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    map: &impl AddrMap,
    params: &Params,
) -> Result<Vec<u8>, XlatError> {
    let icmp = IcmpPacket::new_checked(p.payload())?;
    if !icmp.verify_checksum() {
        return Err(XlatError::BadChecksum);
    }
    let raw = icmp.as_bytes();
    let (quote, ext) =
        split_extension(&raw[..8], icmp.payload(), icmp_map::ext_length_at(false, icmp.msg_type()));
    let inner = Ipv4Packet::new_unchecked(&quote[..]);
    if quote.len() < ipv4::HEADER_LEN || inner.version() != 4 || inner.header_len() < ipv4::HEADER_LEN {
        return Err(XlatError::BadQuote);
    }
    let h = icmp_map::v4_to_v6(
        icmp.msg_type(),
        icmp.code(),
        icmp.rest_of_header(),
        inner.total_len() as u16,
        params,
    )
    .ok_or(XlatError::IcmpUntranslatable)?;
    let quote6 = quote_to_v6(&quote, map)?;
    let mut head = h.to_bytes();
    let room = icmpv6::MAX_ERROR_DATAGRAM - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
    let body = assemble_error(&mut head, &quote6, ext.as_deref(), icmp_map::ext_length_at(true, h.ty), room);
    let plen = icmpv6::HEADER_LEN + body.len();
    let mut out = vec![0u8; ipv6::HEADER_LEN];
    ipv6::write_header(&mut out, p.dscp_ecn(), plen as u16, NH_ICMPV6, p.ttl(), src, dst);
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    Icmpv6Packet::new_unchecked(&mut out[ipv6::HEADER_LEN..]).fill_checksum(src, dst);
    Ok(out)
}

/// Translates the (possibly truncated) IPv4 datagram an ICMPv4 error quotes: its header completely,
/// its transport checksum where present, an ICMP echo's type and checksum. Another ICMP error inside
/// is refused (RFC 7915 §4.3: the translation stops at the first embedded header).
fn quote_to_v6(q: &[u8], map: &impl AddrMap) -> Result<Vec<u8>, XlatError> {
    let p = Ipv4Packet::new_unchecked(q);
    let hl = p.header_len();
    if hl < ipv4::HEADER_LEN || hl > q.len() || p.total_len() < hl {
        return Err(XlatError::BadQuote);
    }
    let src = map.to_v6(p.src_addr()).ok_or(XlatError::Unmapped)?;
    let dst = map.to_v6(p.dst_addr()).ok_or(XlatError::Unmapped)?;
    let upper_len = p.total_len() - hl;
    let mut head = [0u8; ipv6::HEADER_LEN + FRAG_HEADER_LEN];
    let n = header_for(&p, upper_len, src, dst, &mut head);
    // Only the bytes of the datagram: padding after a short quote is not part of it.
    let mut upper = q[hl..q.len().min(p.total_len())].to_vec();
    if p.frag_offset() == 0 {
        match p.protocol() {
            IPPROTO_ICMP => {
                let ty = *upper.first().ok_or(XlatError::BadQuote)?;
                let code = upper.get(1).copied().unwrap_or(0);
                if !matches!(ty, 0 | 8) {
                    return Err(XlatError::BadQuote);
                }
                let h = icmp_map::v4_to_v6(ty, code, 0, 0, &Params { mtu4: 0, mtu6: 0, ident: 0 })
                    .ok_or(XlatError::BadQuote)?;
                let ph = ipv6::pseudo_header(src, dst, NH_ICMPV6, upper_len as u32);
                retype_echo(&mut upper, h.ty, 0, ph);
            }
            proto => adjust_l4(
                &mut upper,
                proto,
                addr_sum(&p.src_addr().octets(), &p.dst_addr().octets()),
                addr_sum(&src.octets(), &dst.octets()),
            ),
        }
    }
    let mut out = head[..n].to_vec();
    out.extend_from_slice(&upper);
    Ok(out)
}

/// RFC 7915 §4.1: a datagram with DF clear whose translation would exceed `mtu6` (the lowest IPv6 MTU
/// towards its destination) is fragmented first, so each translated piece fits with its Fragment
/// header: IPv4 fragments of at most `mtu6 - 48` payload bytes (options dropped: translation ignores
/// them). `None`: translate it whole (it fits, or DF is set and an oversized one is the caller's
/// Fragmentation Needed).
pub fn split_for_v6(pkt: &[u8], mtu6: usize) -> Result<Option<Vec<Vec<u8>>>, XlatError> {
    let p = Ipv4Packet::new_checked(pkt)?;
    let extra = if p.is_fragment() { FRAG_HEADER_LEN } else { 0 };
    let size6 = p.total_len() - p.header_len() + ipv6::HEADER_LEN + extra;
    if p.dont_frag() || size6 <= mtu6 {
        return Ok(None);
    }
    let room = mtu6.saturating_sub(ipv6::HEADER_LEN + FRAG_HEADER_LEN) / 8 * 8;
    if room == 0 {
        return Err(WireError::BadLength.into());
    }
    // The same datagram without options (RFC 7915 §4.1 ignores them): a fixed 20-byte header per piece.
    let mut plain = Vec::with_capacity(ipv4::HEADER_LEN + p.payload().len());
    plain.extend_from_slice(&pkt[..ipv4::HEADER_LEN]);
    plain.extend_from_slice(p.payload());
    plain[0] = 0x45;
    let len = plain.len();
    let mut v = Ipv4Packet::new_unchecked(&mut plain[..]);
    v.set_total_len(len);
    v.fill_header_checksum();
    Ok(Some(ipv4::fragment(&plain, ipv4::HEADER_LEN + room)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_route_options() {
        // LSRR with pointer 4 (first address) in a length-7 option: unexpired.
        assert_eq!(has_unexpired_source_route(&[1, OPT_LSRR, 7, 4, 1, 2, 3, 4, 0]), Ok(true));
        // Pointer 8 > length 7: expired.
        assert_eq!(has_unexpired_source_route(&[OPT_SSRR, 7, 8, 1, 2, 3, 4, 0]), Ok(false));
        // Record route (7) is no source route.
        assert_eq!(has_unexpired_source_route(&[7, 7, 4, 0, 0, 0, 0, 0]), Ok(false));
        assert_eq!(
            has_unexpired_source_route(&[OPT_LSRR, 9, 4]),
            Err(XlatError::Malformed(WireError::BadOption))
        );
        assert_eq!(has_unexpired_source_route(&[]), Ok(false));
    }
}
