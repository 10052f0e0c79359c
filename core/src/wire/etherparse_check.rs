//! Test support: what an independent parser (etherparse) sees in an IPv4 or IPv6 datagram, after
//! asserting every checksum it can check. Translation and view tests compare against this, never
//! against `wire` itself.

use etherparse::{
    Icmpv4Slice, Icmpv6Slice, Ipv4HeaderSlice, Ipv6ExtensionSlice, Ipv6Slice, TcpSlice, UdpSlice,
};

use super::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// What etherparse sees in a datagram, after asserting every checksum it can check.
#[derive(Debug, PartialEq)]
pub(crate) struct Seen {
    pub(crate) v6: bool,
    pub(crate) src: Vec<u8>,
    pub(crate) dst: Vec<u8>,
    pub(crate) proto: u8,
    pub(crate) ttl: u8,
    pub(crate) tos: u8,
    /// (offset in bytes, more, ident) of a fragment (or atomic Fragment header for IPv6).
    pub(crate) frag: Option<(u16, bool, u32)>,
    pub(crate) df: bool,
    pub(crate) ident: u16,
    /// The upper-layer bytes (transport header included).
    pub(crate) upper: Vec<u8>,
}

fn check_transport(proto: u8, fragmented: bool, src: &[u8], dst: &[u8], upper: &[u8]) {
    if fragmented {
        return;
    }
    let v6 = src.len() == 16;
    match proto {
        IPPROTO_TCP => {
            let t = TcpSlice::from_slice(upper).expect("etherparse parses TCP");
            let want = if v6 {
                t.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
            } else {
                t.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
            };
            assert_eq!(t.checksum(), want.unwrap(), "TCP checksum");
        }
        IPPROTO_UDP => {
            let u = UdpSlice::from_slice(upper).expect("etherparse parses UDP");
            let h = u.to_header();
            if v6 {
                assert_ne!(u.checksum(), 0, "IPv6 UDP needs a checksum");
                let want =
                    h.calc_checksum_ipv6_raw(src.try_into().unwrap(), dst.try_into().unwrap(), u.payload());
                assert_eq!(u.checksum(), want.unwrap(), "UDP/IPv6 checksum");
            } else if u.checksum() != 0 {
                let want =
                    h.calc_checksum_ipv4_raw(src.try_into().unwrap(), dst.try_into().unwrap(), u.payload());
                assert_eq!(u.checksum(), want.unwrap(), "UDP/IPv4 checksum");
            }
        }
        58 => {
            let i = Icmpv6Slice::from_slice(upper).expect("etherparse parses ICMPv6");
            assert!(i.is_checksum_valid(src.try_into().unwrap(), dst.try_into().unwrap()), "ICMPv6 checksum");
        }
        IPPROTO_ICMP => {
            let i = Icmpv4Slice::from_slice(upper).expect("etherparse parses ICMP");
            let mut h = i.header();
            h.update_checksum(i.payload());
            assert_eq!(i.checksum(), h.checksum, "ICMP checksum");
        }
        _ => {}
    }
}

pub(crate) fn seen(b: &[u8]) -> Seen {
    if b[0] >> 4 == 4 {
        let ip = Ipv4HeaderSlice::from_slice(b).expect("etherparse parses the IPv4 header");
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum(), "IPv4 header checksum");
        assert_eq!(usize::from(ip.total_len()), b.len(), "IPv4 total length = the datagram");
        let upper = &b[ip.slice().len()..];
        let frag = (ip.more_fragments() || ip.fragments_offset().value() != 0).then(|| {
            (ip.fragments_offset().value() * 8, ip.more_fragments(), u32::from(ip.identification()))
        });
        check_transport(ip.protocol().0, frag.is_some(), &ip.source(), &ip.destination(), upper);
        Seen {
            v6: false,
            src: ip.source().to_vec(),
            dst: ip.destination().to_vec(),
            proto: ip.protocol().0,
            ttl: ip.ttl(),
            tos: (ip.dcp().value() << 2) | ip.ecn().value(),
            frag,
            df: ip.dont_fragment(),
            ident: ip.identification(),
            upper: upper.to_vec(),
        }
    } else {
        let ip = Ipv6Slice::from_slice(b).expect("etherparse parses the IPv6 datagram");
        let h = ip.header();
        assert_eq!(40 + usize::from(h.payload_length()), b.len(), "IPv6 payload length = the datagram");
        let pl = ip.payload();
        let frag = ip.extensions().clone().into_iter().find_map(|e| match e {
            Ipv6ExtensionSlice::Fragment(f) => {
                let f = f.to_header();
                Some((f.fragment_offset.value() * 8, f.more_fragments, f.identification))
            }
            _ => None,
        });
        check_transport(pl.ip_number.0, pl.fragmented, &h.source(), &h.destination(), pl.payload);
        Seen {
            v6: true,
            src: h.source().to_vec(),
            dst: h.destination().to_vec(),
            proto: pl.ip_number.0,
            ttl: h.hop_limit(),
            tos: h.traffic_class(),
            frag,
            df: false,
            ident: 0,
            upper: pl.payload.to_vec(),
        }
    }
}
