//! The Internet checksum (RFC 1071), written from the RFC and nothing else: the independent side of
//! every checksum check in tests, fuzz and benches (the product's own is `ftpnat_core::wire::checksum`).

use std::net::Ipv4Addr;

/// The one's-complement sum of `data` as 16-bit big-endian words (an odd last byte padded with zero),
/// added to `initial`; not folded or complemented, so sums of pieces can be added.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut s = u64::from(initial);
    for c in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff_ffff {
        s = (s & 0xffff_ffff) + (s >> 32);
    }
    s as u32
}

/// Folds a [`sum`] to 16 bits and complements it: the checksum field's value.
pub fn finish(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// RFC 1071 over `data`: what a zeroed checksum field must hold, or 0 when `data` already includes a
/// correct checksum.
pub fn rfc1071(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// The TCP/UDP pseudo-header's sum (RFC 9293 §3.1, RFC 768): addresses, protocol, transport length.
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    sum(&dst.octets(), sum(&src.octets(), 0)) + u32::from(proto) + len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071 §3's worked example: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (folded).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(rfc1071(&d), !0xddf2);
        // An odd byte counts as the high half of a word.
        assert_eq!(rfc1071(&[0x01]), !0x0100);
        // A buffer holding its own checksum sums to zero.
        let mut h = [0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 198, 51, 100, 2];
        let c = rfc1071(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(rfc1071(&h), 0);
    }
}
