//! Normalised comparison (property 3 and packet-level property 4) (part of the replay checker, see `mod.rs`).

use super::*;

/// The datagram with TTL/hop limit and every checksum zeroed (and, for `strip_src`, the source address
/// and port too: what NAT may change on a LAN→WAN packet).
pub fn normalise(p: &Pkt, strip_src: bool) -> Vec<u8> {
    let mut b = p.bytes.clone();
    if !p.v6 {
        b[8] = 0;
        b[10] = 0;
        b[11] = 0;
        if strip_src {
            b[12..16].fill(0);
        }
    } else {
        b[7] = 0;
        if strip_src {
            b[8..24].fill(0);
        }
    }
    if let (Some(l4), false) = (p.l4, p.fragment) {
        let csum_at = match p.proto {
            6 => Some(l4 + 16),
            17 => Some(l4 + 6),
            1 | 58 => Some(l4 + 2),
            _ => None,
        };
        if let Some(c) = csum_at.filter(|c| c + 2 <= b.len()) {
            b[c] = 0;
            b[c + 1] = 0;
        }
        if strip_src && l4 + 2 <= b.len() && matches!(p.proto, 6 | 17) {
            b[l4] = 0;
            b[l4 + 1] = 0;
        }
        if strip_src && p.proto == 1 && matches!(p.icmp_type, Some(0 | 8)) && l4 + 6 <= b.len() {
            b[l4 + 4] = 0;
            b[l4 + 5] = 0;
        }
    }
    b
}
