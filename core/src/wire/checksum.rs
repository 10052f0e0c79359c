//! The Internet checksum: full computation (RFC 1071) and incremental update (RFC 1624).
//!
//! Owns: ones-complement arithmetic only. Must not: know where a checksum field sits in any header (the
//! packet views call these functions from their setters).
//!
//! Sums are carried as `u32` values already folded to 16 bits, so they can be chained (`sum(b, sum(a, 0))`
//! when `a` has even length) and added to a pseudo-header sum without overflow.

use std::net::Ipv4Addr;

// The small helpers are `#[inline]`: without it whether they are inlined into the engine depends on how
// the crate happens to be cut into codegen units (a new module once moved them out of line).

/// Folds end-around carries until the value fits in 16 bits.
#[inline]
fn fold(mut s: u64) -> u32 {
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u32
}

/// Ones-complement running sum of `data` (big-endian 16-bit words; an odd trailing byte is padded with a
/// zero byte, RFC 1071 §4.1), added to `initial`. The result is folded to 16 bits.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // 32-bit words are congruent to the sum of their two 16-bit halves modulo 0xFFFF (2^16 = 1 there).
    // They are added as the machine loads them: the sum is byte-order independent (RFC 1071 §2(B)), so
    // one byte swap of the folded total replaces a swap per word, and the loop vectorises. The result is
    // the same value the big-endian sum gives, 0 included (only all-zero words sum to 0 either way).
    let mut words: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        words += u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let words = fold(words) as u16;
    let mut acc = initial as u64 + u16::from_be(words) as u64;
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = pairs.remainder() {
        acc += (*b as u64) << 8;
    }
    fold(acc)
}

/// Folds carries and complements: the checksum field value for a running sum.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !(fold(sum as u64) as u16)
}

/// The checksum of `data` alone.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Running sum of the TCP/UDP pseudo-header (RFC 793 §3.1, RFC 768): addresses, protocol, transport length.
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    fold(
        (s >> 16) as u64
            + (s & 0xFFFF) as u64
            + (d >> 16) as u64
            + (d & 0xFFFF) as u64
            + proto as u64
            + len as u64,
    )
}

/// RFC 1624 eqn. 3 on sums: HC' = ~(~HC + ~m + m') where `old_sum`/`new_sum` are the running sums of the
/// replaced and the replacing data (same alignment).
#[inline]
pub fn update_sum(csum: u16, old_sum: u32, new_sum: u32) -> u16 {
    let not_old = !(fold(old_sum as u64) as u16);
    finish((!csum) as u32 + not_old as u32 + fold(new_sum as u64))
}

/// Incremental update for one 16-bit word at an even offset (RFC 1624 eqn. 3).
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    finish((!csum) as u32 + (!old) as u32 + new as u32)
}

/// Incremental update for a 32-bit value at an even offset (two words).
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    update_sum(csum, sum(&old.to_be_bytes(), 0), sum(&new.to_be_bytes(), 0))
}

/// Replace bytes `old` by `new` (same length) that sit at a position of parity `odd_offset` inside the
/// checksummed data; returns the updated checksum.
///
/// Bytes at an odd offset are the low halves of their words: shifting by one byte is a byte swap of the
/// ones-complement sum (RFC 1071 §2(B), byte-order independence).
#[inline]
pub fn update_bytes(csum: u16, odd_offset: bool, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let align = |s: u32| if odd_offset { (s as u16).swap_bytes() as u32 } else { s };
    update_sum(csum, align(sum(old, 0)), align(sum(new, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: RFC 1071 §4.1 word by word, no tricks.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            s += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
            i += 2;
        }
        if i < data.len() {
            s += (data[i] as u32) << 8;
        }
        while s >> 16 != 0 {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: the sum of these words is ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d, 0), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // Classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000 (eqn. 3), not 0xFFFF.
        assert_eq!(update_u16(0xDD2F, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn odd_length_and_pseudo_header() {
        assert_eq!(checksum(&[0xab]), !0xab00);
        let p = pseudo_header(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 20);
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        assert_eq!(p, sum(&bytes, 0));
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn sum_is_the_big_endian_sum(
            data in proptest::collection::vec(any::<u8>(), 0..1600),
            zeros in any::<bool>(),
            initial in 0u32..=0xFFFF,
        ) {
            // The word-by-word sum, folded: the exact value (0 and 0xFFFF kept apart) callers chain.
            let data = if zeros { vec![0; data.len()] } else { data };
            let mut s = initial as u64;
            for c in data.chunks(2) {
                s += (u16::from(c[0]) << 8 | c.get(1).copied().map_or(0, u16::from)) as u64;
            }
            prop_assert_eq!(sum(&data, initial), fold(s));
        }

        #[test]
        fn chained_sum(a in proptest::collection::vec(any::<u8>(), 0..50), b in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut a = a;
            if a.len() % 2 == 1 { a.push(0x5a); }
            let mut ab = a.clone();
            ab.extend_from_slice(&b);
            prop_assert_eq!(finish(sum(&b, sum(&a, 0))), reference(&ab));
        }

        #[test]
        fn update_bytes_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..120),
            at in any::<proptest::sample::Index>(),
            repl in proptest::collection::vec(any::<u8>(), 1..9),
        ) {
            // Keep the data nonzero: an all-zero buffer is the one case where ~0 vs 0 representations differ.
            data[0] |= 0x40;
            let at = 1 + at.index(data.len() - 1);
            let n = repl.len().min(data.len() - at);
            let before = checksum(&data);
            let old = data[at..at + n].to_vec();
            data[at..at + n].copy_from_slice(&repl[..n]);
            prop_assert_eq!(update_bytes(before, at % 2 == 1, &old, &repl[..n]), checksum(&data));
        }

        #[test]
        fn update_words_match_recompute(mut data in proptest::collection::vec(any::<u8>(), 8..64), w in any::<u16>(), d in any::<u32>()) {
            data[0] |= 0x40;
            let c0 = checksum(&data);
            let old16 = u16::from_be_bytes([data[2], data[3]]);
            data[2..4].copy_from_slice(&w.to_be_bytes());
            let c1 = update_u16(c0, old16, w);
            prop_assert_eq!(c1, checksum(&data));
            let old32 = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            data[4..8].copy_from_slice(&d.to_be_bytes());
            prop_assert_eq!(update_u32(c1, old32, d), checksum(&data));
        }
    }
}
