//! Property 1: checksums (part of the replay checker, see `mod.rs`).

use etherparse::TransportSlice;

use super::*;

/// Checks the IPv4 header checksum and the TCP/UDP/ICMP checksum with etherparse's calculators.
pub fn checksum_errors(p: &Pkt) -> Vec<String> {
    let mut errs = Vec::new();
    let sliced = match etherparse::SlicedPacket::from_ip(&p.bytes) {
        Ok(s) => s,
        Err(e) => return vec![format!("{}: etherparse cannot parse it: {e:?}", p.describe())],
    };
    let (src4, dst4, src6, dst6) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(s)) => {
            let h = s.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                errs.push(format!("{}: bad IPv4 header checksum", p.describe()));
            }
            if s.is_payload_fragmented() {
                return errs;
            }
            (Some(h.source), Some(h.destination), None, None)
        }
        Some(etherparse::NetSlice::Ipv6(s)) => {
            if s.is_payload_fragmented() {
                return errs;
            }
            let h = s.header();
            (None, None, Some(h.source()), Some(h.destination()))
        }
        _ => return errs,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (src4, dst4, src6, dst6) {
                (Some(s), Some(d), _, _) => t.calc_checksum_ipv4(s, d).ok(),
                (_, _, Some(s), Some(d)) => t.calc_checksum_ipv6(s, d).ok(),
                _ => None,
            };
            if want != Some(t.checksum()) {
                errs.push(format!("{}: bad TCP checksum", p.describe()));
            }
        }
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let want = match (src4, dst4, src6, dst6) {
                (Some(s), Some(d), _, _) if h.checksum != 0 => {
                    h.calc_checksum_ipv4_raw(s, d, u.payload()).ok()
                }
                (Some(_), _, _, _) => Some(0),
                (_, _, Some(s), Some(d)) => h.calc_checksum_ipv6_raw(s, d, u.payload()).ok(),
                _ => None,
            };
            if want != Some(h.checksum) {
                errs.push(format!("{}: bad UDP checksum", p.describe()));
            }
        }
        Some(TransportSlice::Icmpv4(i)) if rfc1071(i.slice()) != 0 => {
            errs.push(format!("{}: bad ICMP checksum", p.describe()));
        }
        _ => {}
    }
    errs
}
