//! TCP sequence numbers with wrapping arithmetic and comparison.
//!
//! Owns: the 32-bit sequence space (RFC 9293 §3.4: comparisons are modulo 2^32; RFC 1982 serial number
//! arithmetic). Must not: know about connections or adjustment maps (that is `stream::seqmap`).
//!
//! `SeqNum` deliberately has no `Ord`/`PartialOrd`: "a < b" in a circular space is not transitive, so it
//! must not be used for sorting or in ordered collections.

/// A TCP sequence (or acknowledgment) number. The field is private: arithmetic goes through the
/// wrapping methods, never through the bare integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct SeqNum(u32);

impl SeqNum {
    pub const fn new(n: u32) -> SeqNum {
        SeqNum(n)
    }
    /// The number as it appears on the wire.
    pub const fn get(self) -> u32 {
        self.0
    }
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(n))
    }
    /// Adds a signed delta modulo 2^32 (sequence-adjustment deltas may be negative).
    pub fn add_signed(self, d: i64) -> SeqNum {
        SeqNum(self.0.wrapping_add(d as u32))
    }
    /// `self - earlier` as a signed distance, wrapping (meaningful when the two are within 2^31).
    pub fn diff(self, earlier: SeqNum) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }
    pub fn lt(self, o: SeqNum) -> bool {
        self.diff(o) < 0
    }
    pub fn le(self, o: SeqNum) -> bool {
        self.diff(o) <= 0
    }
    pub fn gt(self, o: SeqNum) -> bool {
        self.diff(o) > 0
    }
    pub fn ge(self, o: SeqNum) -> bool {
        self.diff(o) >= 0
    }
    pub fn max(self, o: SeqNum) -> SeqNum {
        if self.ge(o) {
            self
        } else {
            o
        }
    }
    pub fn min(self, o: SeqNum) -> SeqNum {
        if self.le(o) {
            self
        } else {
            o
        }
    }
}

impl core::fmt::Display for SeqNum {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_around_zero() {
        let a = SeqNum::new(u32::MAX - 10);
        let b = a.add(20); // wrapped to 9
        assert_eq!(b, SeqNum::new(9));
        assert!(a.lt(b) && a.le(b) && b.gt(a) && b.ge(a));
        assert!(!b.lt(a));
        assert_eq!(b.diff(a), 20);
        assert_eq!(a.diff(b), -20);
        assert_eq!(b.sub(20), a);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert_eq!(SeqNum::new(5).add_signed(-10), SeqNum::new(u32::MAX - 4));
        assert_eq!(SeqNum::new(u32::MAX).add_signed(1), SeqNum::new(0));
        assert_eq!(SeqNum::new(1).add_signed(i64::from(u32::MAX)), SeqNum::new(0));
        assert!(
            SeqNum::new(7).le(SeqNum::new(7))
                && SeqNum::new(7).ge(SeqNum::new(7))
                && !SeqNum::new(7).lt(SeqNum::new(7))
        );
    }

    #[test]
    fn half_space_boundary() {
        // 2^31 apart: diff is i32::MIN, so "a < b" and "b < a" both hold: the ambiguity RFC 1982 leaves
        // undefined. Callers must keep windows under 2^31.
        let a = SeqNum::new(0);
        let b = SeqNum::new(1 << 31);
        assert_eq!(b.diff(a), i32::MIN);
        assert!(a.gt(b) == b.gt(a));
    }

    proptest! {
        #[test]
        fn order_is_translation_invariant(x in any::<u32>(), d in 1u32..(1 << 31), shift in any::<u32>()) {
            let a = SeqNum::new(x).add(shift);
            let b = SeqNum::new(x).add(shift).add(d);
            prop_assert!(a.lt(b));
            prop_assert!(b.gt(a));
            prop_assert!(!b.le(a));
            prop_assert_eq!(b.diff(a), d as i32);
            prop_assert_eq!(a.add_signed(d as i64), b);
            prop_assert_eq!(b.add_signed(-(d as i64)), a);
        }
    }
}
