//! Our own monotonic instant, in microseconds since an arbitrary origin.
//!
//! Owns: the time type the engine sees. Must not: read any clock. Clock readings (in `io/`) and pcap
//! timestamps (in replay) are both converted into an [`Instant`] by the caller, which is what keeps the
//! engine deterministic and lets tests drive time by hand.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time, microseconds since an origin the caller chose.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);
    pub const MAX: Instant = Instant(u64::MAX);

    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms.saturating_mul(1000))
    }
    pub const fn from_secs(s: u64) -> Self {
        Instant(s.saturating_mul(1_000_000))
    }
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(us))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_secs(2).saturating_since(Instant::from_secs(3)), Duration::ZERO);
        assert_eq!(
            Instant::from_millis(1500).saturating_since(Instant::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}
