//! Port arithmetic: a contiguous range of ports, and a set of the 65,536 ports with word-wide search.
//!
//! Owns: [`PortRange`] (what a block, a deterministic share or a worker's slice of the port space is)
//! and [`PortSet`], which ports of one protocol on one public address are taken. Must not: know who
//! holds a port or why (the allocator above it does).

use core::fmt;
use core::ops::RangeInclusive;
use std::str::FromStr;

/// An inclusive, non-empty range of ports: `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `None` when `first > last` (an empty range is never a useful share of ports).
    pub const fn new(first: u16, last: u16) -> Option<PortRange> {
        if first > last {
            None
        } else {
            Some(PortRange { first, last })
        }
    }

    pub const fn first(self) -> u16 {
        self.first
    }

    pub const fn last(self) -> u16 {
        self.last
    }

    /// Ports in the range (1 to 65,536).
    pub const fn len(self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }

    /// Never true: kept for clippy's `len_without_is_empty` and for readers who look for it.
    pub const fn is_empty(self) -> bool {
        false
    }

    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// The ports both ranges hold, if any.
    pub fn intersect(self, other: PortRange) -> Option<PortRange> {
        PortRange::new(self.first.max(other.first), self.last.min(other.last))
    }

    /// The port an allocation cursor moves to after handing out `port`: the next one, wrapping from
    /// the last to the first (the cursor never steps outside the range, even at port 65,535).
    pub const fn after(self, port: u16) -> u16 {
        if port >= self.last {
            self.first
        } else {
            port + 1
        }
    }

    pub fn iter(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl From<PortRange> for RangeInclusive<u16> {
    fn from(r: PortRange) -> Self {
        r.first..=r.last
    }
}

impl TryFrom<&RangeInclusive<u16>> for PortRange {
    type Error = String;
    fn try_from(r: &RangeInclusive<u16>) -> Result<Self, String> {
        PortRange::new(*r.start(), *r.end()).ok_or_else(|| format!("{}-{} is empty", r.start(), r.end()))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;
    /// `FIRST-LAST` or a single port.
    fn from_str(s: &str) -> Result<Self, String> {
        let num =
            |t: &str| t.trim().parse::<u16>().map_err(|_| format!("'{s}': '{t}' is not a port (0-65535)"));
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let p = num(s)?;
                (p, p)
            }
        };
        PortRange::new(a, b).ok_or_else(|| format!("'{s}': first port {a} is above last port {b}"))
    }
}

/// A set of 65,536 bits: which ports are taken.
#[derive(Clone)]
pub(crate) struct PortSet(Box<[u64; 1024]>);

/// In the state file as its 1,024 words.
impl serde::Serialize for PortSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for PortSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words: Vec<u64> = serde::Deserialize::deserialize(d)?;
        let n = words.len();
        let words: Box<[u64; 1024]> = words
            .into_boxed_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(n, &"1024 words of port bits"))?;
        Ok(PortSet(words))
    }
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet(Box::new([0; 1024]))
    }
}

impl PortSet {
    pub(crate) fn contains(&self, p: u16) -> bool {
        self.0[p as usize / 64] & (1 << (p % 64)) != 0
    }
    pub(crate) fn insert(&mut self, p: u16) {
        self.0[p as usize / 64] |= 1 << (p % 64);
    }
    pub(crate) fn remove(&mut self, p: u16) {
        self.0[p as usize / 64] &= !(1 << (p % 64));
    }

    /// The lowest free port in `lo..=hi`, a word (64 ports) at a time.
    fn first_free(&self, lo: u16, hi: u16) -> Option<u16> {
        if lo > hi {
            return None;
        }
        let (lo, hi) = (lo as usize, hi as usize);
        let mut w = lo / 64;
        while w <= hi / 64 {
            let mut free = !self.0[w];
            if w == lo / 64 {
                free &= u64::MAX << (lo % 64);
            }
            if w == hi / 64 && hi % 64 != 63 {
                free &= (1u64 << (hi % 64 + 1)) - 1;
            }
            if free != 0 {
                return Some((w * 64 + free.trailing_zeros() as usize) as u16);
            }
            w += 1;
        }
        None
    }

    /// The first free port of `range` at or after `from`, wrapping around to the range's start: a
    /// cursor that moves on keeps a port just freed from being handed out again at once.
    pub(crate) fn next_free(&self, range: PortRange, from: u16) -> Option<u16> {
        let from = from.clamp(range.first, range.last);
        self.first_free(from, range.last)
            .or_else(|| from.checked_sub(1).and_then(|end| self.first_free(range.first, end)))
    }

    /// Like [`PortSet::next_free`], for the first free port `pred` accepts, looking at no more than
    /// `limit` ports.
    pub(crate) fn next_free_where(
        &self,
        range: PortRange,
        from: u16,
        limit: u32,
        pred: &dyn Fn(u16) -> bool,
    ) -> Option<u16> {
        let from = u32::from(from.clamp(range.first, range.last));
        let (lo, n) = (u32::from(range.first), range.len());
        (0..n.min(limit)).map(|k| (lo + (from - lo + k) % n) as u16).find(|&p| !self.contains(p) && pred(p))
    }

    /// Taken ports in all.
    pub(crate) fn count_all(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cursor_wraps_from_the_last_port_to_the_first() {
        let r = PortRange::new(1024, 65535).unwrap();
        assert_eq!((r.after(1024), r.after(65534), r.after(65535)), (1025, 65535, 1024));
    }

    use super::*;
    use proptest::prelude::*;

    fn r(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn ranges_parse_print_and_intersect() {
        assert_eq!("1024-2047".parse::<PortRange>(), Ok(r(1024, 2047)));
        assert_eq!("80".parse::<PortRange>(), Ok(r(80, 80)));
        assert_eq!(r(1024, 2047).to_string(), "1024-2047");
        assert_eq!(r(1024, 2047).len(), 1024);
        assert_eq!(r(0, 65535).len(), 65536);
        assert!("2047-1024".parse::<PortRange>().unwrap_err().contains("above"));
        assert!("1-70000".parse::<PortRange>().is_err());
        assert_eq!(r(10, 20).intersect(r(15, 30)), Some(r(15, 20)));
        assert_eq!(r(10, 20).intersect(r(21, 30)), None);
        assert_eq!(PortRange::new(5, 4), None);
    }

    #[test]
    fn next_free_wraps_and_skips_taken_words() {
        let mut s = PortSet::default();
        for p in 1000..=1199 {
            s.insert(p);
        }
        assert_eq!(s.next_free(r(1000, 1300), 1000), Some(1200));
        assert_eq!(s.next_free(r(1000, 1199), 1100), None, "every port taken");
        s.remove(1010);
        assert_eq!(s.next_free(r(1000, 1199), 1100), Some(1010), "wraps to the start");
        assert_eq!(s.next_free(r(65535, 65535), 0), Some(65535));
        s.insert(65535);
        assert_eq!(s.next_free(r(65535, 65535), 0), None);
        assert_eq!(s.count_all(), 200);
        assert_eq!(s.next_free_where(r(1000, 1300), 1000, 4096, &|p| p % 100 == 0), Some(1200));
        assert_eq!(s.next_free_where(r(1000, 1300), 1000, 50, &|p| p % 100 == 0), None, "bounded");
    }

    proptest! {
        /// The word-wide search finds exactly what a port-by-port walk finds.
        #[test]
        fn next_free_equals_a_linear_walk(
            taken in proptest::collection::vec(0u16..2048, 0..1500),
            a in 0u16..2048, len in 0u16..600, from in 0u16..2100,
        ) {
            let mut s = PortSet::default();
            for &p in &taken { s.insert(p); }
            let range = r(a, a.saturating_add(len));
            let start = from.clamp(range.first(), range.last());
            let walk = (0..range.len())
                .map(|k| (u32::from(range.first()) + (u32::from(start - range.first()) + k) % range.len()) as u16)
                .find(|&p| !s.contains(p));
            prop_assert_eq!(s.next_free(range, from), walk);
        }
    }
}
