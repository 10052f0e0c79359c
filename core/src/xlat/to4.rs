//! IPv6 → IPv4 (RFC 7915 §5): the datagram, its transport checksum, ICMPv6, and the datagram an
//! ICMPv6 error quotes.
//!
//! Owns: building the IPv4 header from an IPv6 header and its extension headers. Must not: choose
//! addresses (the [`AddrMap`]) or send the errors a refusal calls for.

use std::net::Ipv4Addr;

use super::{
    addr_sum, adjust_l4, assemble_error, icmp_map, retype_echo, split_extension, AddrMap, Params, XlatError,
};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, FragHeader, Ipv6Packet, NH_ICMPV6};
use crate::wire::IPPROTO_ICMP;

/// RFC 7915 §5.1: DF is set on a translated datagram larger than this (1280 - 20), so that IPv4 path
/// MTU discovery reaches the IPv6 sender as Packet Too Big; smaller ones may be fragmented on the way.
const DF_ABOVE: usize = 1260;

/// What the IPv4 header of a translated datagram says.
struct Head4 {
    tos: u8,
    total: usize,
    frag: Option<FragHeader>,
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Writes the 20-byte IPv4 header with its checksum (RFC 7915 §5.1, §5.1.1).
fn write_header(h: &Head4, ident: u16, out: &mut [u8; ipv4::HEADER_LEN]) {
    out.fill(0);
    out[0] = 0x45;
    out[8] = h.ttl;
    out[9] = h.proto;
    out[12..16].copy_from_slice(&h.src.octets());
    out[16..20].copy_from_slice(&h.dst.octets());
    let mut v = Ipv4Packet::new_unchecked(&mut out[..]);
    v.set_dscp_ecn(h.tos);
    v.set_total_len(h.total);
    match h.frag {
        // A Fragment header (atomic or not): Identification's low 16 bits, MF = M, DF clear.
        Some(f) => {
            v.set_ident(f.ident as u16);
            v.set_more_frags(f.more);
            v.set_frag_offset(f.offset);
        }
        None => {
            // Identification: 0, or generated for sizes an IPv4 router may fragment (the §5.1 MAY).
            if (89..=1280).contains(&h.total) {
                v.set_ident(ident);
            }
            v.set_dont_frag(h.total > DF_ABOVE);
        }
    }
    v.fill_header_checksum();
}

/// Translates an IPv6 datagram into IPv4 in place (RFC 7915 §5). Hop Limit is copied, not
/// decremented. Bytes past the payload length (link padding) are dropped.
pub fn v6_to_v4(pkt: &mut Vec<u8>, map: &impl AddrMap, params: &Params) -> Result<(), XlatError> {
    let mut head = [0u8; ipv4::HEADER_LEN];
    let (upper_at, total, proto, first, (src6, dst6), (src4, dst4)) = {
        let p = Ipv6Packet::new_checked(&pkt[..])?;
        let l = p.layout()?;
        if let Some(at) = l.routing_left_at {
            return Err(XlatError::RoutingHeader { pointer: at as u32 });
        }
        let (src6, dst6) = (p.src_addr(), p.dst_addr());
        let src = map.to_v4(src6).ok_or(XlatError::Unmapped)?;
        let dst = map.to_v4(dst6).ok_or(XlatError::Unmapped)?;
        if l.upper == NH_ICMPV6 {
            if l.is_fragment() {
                return Err(XlatError::FragmentedIcmp);
            }
            let icmp = p.icmpv6()?;
            if icmp.is_error() {
                *pkt = error_to_v4(&p, l.upper_at, src, dst, map, params)?;
                return Ok(());
            }
            if !icmp.is_echo() {
                return Err(XlatError::IcmpUntranslatable);
            }
        }
        let upper_len = p.total_len() - l.upper_at;
        let h = Head4 {
            tos: p.traffic_class(),
            total: ipv4::HEADER_LEN + upper_len,
            frag: l.frag,
            ttl: p.hop_limit(),
            proto: if l.upper == NH_ICMPV6 { IPPROTO_ICMP } else { l.upper },
            src,
            dst,
        };
        write_header(&h, params.ident, &mut head);
        (l.upper_at, p.total_len(), l.upper, !l.is_later_fragment(), (src6, dst6), (src, dst))
    };
    pkt.truncate(total);
    let upper = &mut pkt[upper_at..];
    if first {
        match proto {
            NH_ICMPV6 => {
                let h = icmp_map::v6_to_v4(upper[0], upper[1], 0, false, params)
                    .ok_or(XlatError::IcmpUntranslatable)?;
                let ph = ipv6::pseudo_header(src6, dst6, NH_ICMPV6, upper.len() as u32);
                retype_echo(upper, h.ty, ph, 0);
            }
            _ => adjust_l4(
                upper,
                proto,
                addr_sum(&src6.octets(), &dst6.octets()),
                addr_sum(&src4.octets(), &dst4.octets()),
            ),
        }
    }
    pkt.splice(..upper_at, head.iter().copied());
    Ok(())
}

/// Builds the ICMPv4 error for an ICMPv6 one (`p` is the whole IPv6 datagram, its ICMPv6 header at
/// `at`).
fn error_to_v4(
    p: &Ipv6Packet<&[u8]>,
    at: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    map: &impl AddrMap,
    params: &Params,
) -> Result<Vec<u8>, XlatError> {
    let icmp = Icmpv6Packet::new_checked(&p.as_bytes()[at..p.total_len()])?;
    if !icmp.verify_checksum(p.src_addr(), p.dst_addr()) {
        return Err(XlatError::BadChecksum);
    }
    let raw = icmp.as_bytes();
    let (quote, ext) =
        split_extension(&raw[..8], icmp.payload(), icmp_map::ext_length_at(true, icmp.msg_type()));
    let inner = quoted_layout(&quote)?;
    let has_frag = inner.1.is_some();
    let h = icmp_map::v6_to_v4(icmp.msg_type(), icmp.code(), icmp.rest_of_header(), has_frag, params)
        .ok_or(XlatError::IcmpUntranslatable)?;
    let quote4 = quote_to_v4(&quote, map, params)?;
    let mut head = h.to_bytes();
    let room = icmp::MAX_ERROR_DATAGRAM - ipv4::HEADER_LEN - icmp::HEADER_LEN;
    let body = assemble_error(&mut head, &quote4, ext.as_deref(), icmp_map::ext_length_at(false, h.ty), room);
    let total = ipv4::HEADER_LEN + icmp::HEADER_LEN + body.len();
    let mut h4 = [0u8; ipv4::HEADER_LEN];
    let hd = Head4 {
        tos: p.traffic_class(),
        total,
        frag: None,
        ttl: p.hop_limit(),
        proto: IPPROTO_ICMP,
        src,
        dst,
    };
    write_header(&hd, params.ident, &mut h4);
    let mut out = h4.to_vec();
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    IcmpPacket::new_unchecked(&mut out[ipv4::HEADER_LEN..]).fill_checksum();
    Ok(out)
}

/// Upper-layer offset and Fragment header of a quoted IPv6 datagram, walking only the bytes present
/// (a quote is cut, its payload length says more): the headers up to the upper layer must be there.
fn quoted_layout(q: &[u8]) -> Result<(usize, Option<FragHeader>, u8), XlatError> {
    if q.len() < ipv6::HEADER_LEN || q[0] >> 4 != 6 {
        return Err(XlatError::BadQuote);
    }
    // Walk a copy whose payload length matches what is present, so the walk's bounds are the quote's.
    let present = q.len().min(ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([q[4], q[5]])));
    let mut head = q[..present].to_vec();
    let plen = (present - ipv6::HEADER_LEN) as u16;
    head[4..6].copy_from_slice(&plen.to_be_bytes());
    let l = Ipv6Packet::new_unchecked(&head[..]).layout().map_err(|_| XlatError::BadQuote)?;
    Ok((l.upper_at, l.frag, l.upper))
}

/// Translates the (possibly truncated) IPv6 datagram an ICMPv6 error quotes; as `to6::quote_to_v6`.
fn quote_to_v4(q: &[u8], map: &impl AddrMap, params: &Params) -> Result<Vec<u8>, XlatError> {
    let (upper_at, frag, upper) = quoted_layout(q)?;
    let p = Ipv6Packet::new_unchecked(q);
    let (src6, dst6) = (p.src_addr(), p.dst_addr());
    let src = map.to_v4(src6).ok_or(XlatError::Unmapped)?;
    let dst = map.to_v4(dst6).ok_or(XlatError::Unmapped)?;
    // The original datagram's upper-layer length, from its payload length.
    let orig_upper = (ipv6::HEADER_LEN + p.payload_len()).saturating_sub(upper_at);
    let end = q.len().min(ipv6::HEADER_LEN + p.payload_len());
    let mut body = q.get(upper_at..end).unwrap_or(&[]).to_vec();
    let later = frag.is_some_and(|f| f.offset != 0);
    if !later {
        if upper == NH_ICMPV6 {
            let ty = *body.first().ok_or(XlatError::BadQuote)?;
            if !matches!(ty, icmpv6::TYPE_ECHO_REQUEST | icmpv6::TYPE_ECHO_REPLY) {
                return Err(XlatError::BadQuote);
            }
            let h = icmp_map::v6_to_v4(ty, 0, 0, false, params).ok_or(XlatError::BadQuote)?;
            let ph = ipv6::pseudo_header(src6, dst6, NH_ICMPV6, orig_upper as u32);
            retype_echo(&mut body, h.ty, ph, 0);
        } else {
            adjust_l4(
                &mut body,
                upper,
                addr_sum(&src6.octets(), &dst6.octets()),
                addr_sum(&src.octets(), &dst.octets()),
            );
        }
    }
    let h = Head4 {
        tos: p.traffic_class(),
        total: ipv4::HEADER_LEN + orig_upper,
        frag,
        ttl: p.hop_limit(),
        proto: if upper == NH_ICMPV6 { IPPROTO_ICMP } else { upper },
        src,
        dst,
    };
    let mut h4 = [0u8; ipv4::HEADER_LEN];
    // The quoted datagram's Identification is not known (IPv6 had none): 0.
    write_header(&h, 0, &mut h4);
    let mut out = h4.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}
