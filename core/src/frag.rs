//! Fragment state: what a translated first fragment left for the later fragments of its datagram, and
//! the later fragments that arrived before their first one.
//!
//! Owns: both tables, their bounds and their per-source shares, and when their entries go. The engine
//! translates a datagram's first fragment with the flow's ports and remembers the addresses it wrote
//! ([`Fragments::remember`]); later fragments (no ports in them) are translated by that memory or wait
//! here, briefly, for their first fragment. Must not: parse or edit packets beyond the IPv4 header of a
//! waiting fragment it hands back, nor know about flows.
//!
//! Shares (issue 12): one source (a peer sending fragments into a mapping, an inside host sending them
//! out) may hold at most [`STATES_PER_SOURCE`] remembered first fragments and [`WAITING_PER_SOURCE`]
//! waiting later fragments. At its share a source's new first fragment replaces its own oldest state
//! (the datagram it belongs to was most likely complete long ago); a later fragment beyond its share is
//! refused. So a peer flooding first fragments only ever evicts its own, and another host's datagram on
//! another flow keeps its state. The table bounds ([`MAX_STATES`], [`MAX_WAITING`]) hold whatever the
//! number of sources: a full state table forgets its oldest entry, a full waiting queue refuses.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use crate::flow::Side;
use crate::time::Instant;

/// How long a first fragment's state is kept (Linux `ipfrag_time`: 30 s).
pub const STATE_TIMEOUT: core::time::Duration = core::time::Duration::from_secs(30);
/// How long a later fragment waits for its first fragment.
pub const WAIT: core::time::Duration = core::time::Duration::from_secs(2);
/// Remembered first fragments, all sources together.
pub const MAX_STATES: usize = 16_384;
/// Remembered first fragments per source: a sixteenth of the table.
pub const STATES_PER_SOURCE: usize = MAX_STATES / 16;
/// Later fragments waiting for their first, all sources together (each holds its packet).
pub const MAX_WAITING: usize = 256;
/// Waiting later fragments per source.
pub const WAITING_PER_SOURCE: usize = MAX_WAITING / 8;

/// A datagram: RFC 791 §3.2 identifies the fragments of one by source, destination, protocol and
/// identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FragKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ident: u16,
}

/// What the translated first fragment of a datagram looked like: its later fragments get the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FragState {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub egress: Side,
    expires: Instant,
    /// Which remembering this is: queue entries naming another one are stale.
    seq: u64,
}

/// A later fragment held until its first fragment comes (or its wait ends).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Waiting {
    pub key: FragKey,
    pub from: Side,
    pub packet: Vec<u8>,
    until: Instant,
}

/// Why a later fragment cannot wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The waiting queue is full.
    QueueFull,
    /// Its source holds its share of the waiting queue.
    SourceQuota,
}

/// Both fragment tables.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Fragments {
    states: HashMap<FragKey, FragState>,
    /// Every remembered state in the order it was remembered (which, with one fixed timeout and no
    /// refresh, is also the order states expire), plus entries of states already gone: an entry is live
    /// while `states` has its key with the same `seq`. Compacted when stale entries outnumber live ones.
    order: VecDeque<(u64, FragKey)>,
    /// Per source, its states oldest first (same liveness rule), for evicting its own oldest. Every
    /// removal of a state is of its source's oldest (expiry, eviction of its own, eviction of the oldest
    /// of all), so stale entries only ever sit at the front of these queues.
    by_source: HashMap<Ipv4Addr, VecDeque<(u64, FragKey)>>,
    next_seq: u64,
    waiting: VecDeque<Waiting>,
    waiting_per_source: HashMap<Ipv4Addr, usize>,
}

impl Fragments {
    /// The state a first fragment of `k` left, if it is still remembered.
    #[inline]
    pub fn get(&self, k: &FragKey) -> Option<FragState> {
        self.states.get(k).copied()
    }

    /// Remembered first fragments.
    pub fn states(&self) -> usize {
        self.states.len()
    }

    /// Remembered first fragments of one source.
    pub fn states_of(&self, src: Ipv4Addr) -> usize {
        self.by_source.get(&src).map_or(0, |q| q.iter().filter(|e| self.live(e)).count())
    }

    /// Later fragments waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Entries kept to find states by age, live and stale: bounded by a small multiple of `states()`.
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    fn live(&self, &(seq, k): &(u64, FragKey)) -> bool {
        self.states.get(&k).is_some_and(|s| s.seq == seq)
    }

    // Kept out of line (and `hold` too): fragments are rare, and inlined into the engine's packet path
    // they pushed its checksum helpers out of line, costing every packet (cachegrind).
    /// Remembers how the first fragment of `k` was translated; returns the number of states forgotten
    /// to make room (its source's oldest when at its share, else the oldest of all when the table is
    /// full), and the waiting later fragments of `k`, to be translated and sent now.
    #[inline(never)]
    pub fn remember(
        &mut self,
        now: Instant,
        k: FragKey,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        egress: Side,
    ) -> (u64, Vec<Waiting>) {
        let mut evicted = 0;
        if let Some(s) = self.states.get_mut(&k) {
            // A repeated first fragment (a retransmission, a duplicate): same datagram, same expiry.
            (s.src, s.dst, s.egress) = (src, dst, egress);
        } else {
            if self.count_of(k.src) >= STATES_PER_SOURCE {
                evicted += u64::from(self.evict_oldest_of(k.src));
            } else if self.states.len() >= MAX_STATES {
                self.expire_states(now);
                if self.states.len() >= MAX_STATES {
                    evicted += u64::from(self.evict_oldest());
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.states.insert(k, FragState { src, dst, egress, expires: now + STATE_TIMEOUT, seq });
            self.order.push_back((seq, k));
            self.by_source.entry(k.src).or_default().push_back((seq, k));
            self.compact();
        }
        (evicted, self.take_waiting(&k))
    }

    /// Live states of `src`, dropping the stale entries at the front of its queue on the way.
    fn count_of(&mut self, src: Ipv4Addr) -> usize {
        let Some(q) = self.by_source.get(&src) else { return 0 };
        let stale = q.iter().take_while(|e| !self.live(e)).count();
        let q = self.by_source.get_mut(&src).expect("present");
        q.drain(..stale);
        if q.is_empty() {
            self.by_source.remove(&src);
            return 0;
        }
        q.len()
    }

    fn evict_oldest_of(&mut self, src: Ipv4Addr) -> bool {
        let Some(q) = self.by_source.get_mut(&src) else { return false };
        let mut evicted = false;
        while let Some((seq, k)) = q.pop_front() {
            if self.states.get(&k).is_some_and(|s| s.seq == seq) {
                self.states.remove(&k);
                evicted = true;
                break;
            }
        }
        if q.is_empty() {
            self.by_source.remove(&src);
        }
        evicted
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((seq, k)) = self.order.pop_front() {
            if self.states.get(&k).is_some_and(|s| s.seq == seq) {
                self.states.remove(&k);
                self.count_of(k.src);
                return true;
            }
        }
        false
    }

    /// Keeps the age queue within about twice the live states (evicting a source's own oldest leaves a
    /// stale entry in its middle).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.states.len() + 64 {
            let states = &self.states;
            self.order.retain(|&(seq, k)| states.get(&k).is_some_and(|s| s.seq == seq));
        }
    }

    /// Forgets the states whose time is up.
    pub fn expire_states(&mut self, now: Instant) {
        while let Some(&(seq, k)) = self.order.front() {
            match self.states.get(&k) {
                Some(s) if s.seq == seq && s.expires > now => break,
                Some(s) if s.seq == seq => {
                    self.states.remove(&k);
                    self.order.pop_front();
                    self.count_of(k.src);
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Holds a later fragment (taking `packet`) until its first fragment is remembered or `now + WAIT`.
    /// On refusal `packet` is left as it was.
    #[inline(never)]
    pub fn hold(
        &mut self,
        now: Instant,
        key: FragKey,
        from: Side,
        packet: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(Refused::QueueFull);
        }
        let n = self.waiting_per_source.entry(key.src).or_default();
        if *n >= WAITING_PER_SOURCE {
            return Err(Refused::SourceQuota);
        }
        *n += 1;
        self.waiting.push_back(Waiting { key, from, packet: std::mem::take(packet), until: now + WAIT });
        Ok(())
    }

    fn take_waiting(&mut self, k: &FragKey) -> Vec<Waiting> {
        if !self.waiting_per_source.contains_key(&k.src) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].key == *k {
                let w = self.waiting.remove(i).expect("index checked");
                self.unwait(w.key.src);
                out.push(w);
            } else {
                i += 1;
            }
        }
        out
    }

    fn unwait(&mut self, src: Ipv4Addr) {
        if let Some(n) = self.waiting_per_source.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.waiting_per_source.remove(&src);
            }
        }
    }

    /// The next later fragment whose wait is over at `now` (it is dropped: its first never came).
    pub fn pop_expired_waiting(&mut self, now: Instant) -> Option<Waiting> {
        if self.waiting.front().is_some_and(|w| w.until <= now) {
            let w = self.waiting.pop_front().expect("checked");
            self.unwait(w.key.src);
            return Some(w);
        }
        None
    }

    /// When the oldest waiting fragment's wait ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|w| w.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u8, ident: u16) -> FragKey {
        FragKey {
            src: Ipv4Addr::new(203, 0, 113, src),
            dst: Ipv4Addr::new(198, 51, 100, 1),
            proto: 17,
            ident,
        }
    }

    fn remember(f: &mut Fragments, now: Instant, k: FragKey) -> u64 {
        f.remember(now, k, k.src, Ipv4Addr::new(10, 0, 0, 2), Side::Inside).0
    }

    #[test]
    fn a_source_at_its_share_evicts_only_its_own_oldest() {
        let mut f = Fragments::default();
        let t0 = Instant::from_secs(100);
        remember(&mut f, t0, key(9, 1));
        let mut evicted = 0;
        for i in 0..(STATES_PER_SOURCE as u16 + 500) {
            evicted += remember(&mut f, t0, key(1, i));
        }
        assert_eq!(evicted, 500);
        assert_eq!(f.states_of(key(1, 0).src), STATES_PER_SOURCE);
        assert!(f.get(&key(9, 1)).is_some(), "another source's state stays");
        assert!(f.get(&key(1, 0)).is_none() && f.get(&key(1, 499)).is_none(), "the flooder's oldest went");
        assert!(f.get(&key(1, 500)).is_some());
        assert!(f.order_len() <= 2 * f.states() + 64, "age queue bounded: {}", f.order_len());
    }

    #[test]
    fn a_full_table_forgets_its_oldest_and_states_expire_in_order() {
        let mut f = Fragments::default();
        let t0 = Instant::from_secs(100);
        // Many sources, each under its share, fill the table.
        let mut n = 0u32;
        'fill: for src in 1..=255u8 {
            for i in 0..(STATES_PER_SOURCE as u16 / 2) {
                if f.states() == MAX_STATES {
                    break 'fill;
                }
                remember(&mut f, t0 + core::time::Duration::from_micros(n as u64), key(src, i));
                n += 1;
            }
        }
        assert_eq!(f.states(), MAX_STATES);
        let first = key(1, 0);
        assert!(f.get(&first).is_some());
        assert_eq!(remember(&mut f, t0 + core::time::Duration::from_secs(1), key(254, 7)), 1);
        assert!(f.get(&first).is_none(), "the oldest of all went");
        assert_eq!(f.states_of(first.src), STATES_PER_SOURCE / 2 - 1);
        f.expire_states(t0 + STATE_TIMEOUT + core::time::Duration::from_millis(500));
        assert_eq!(f.states(), 1, "only the state remembered a second later is left");
        f.expire_states(t0 + STATE_TIMEOUT + core::time::Duration::from_secs(1));
        assert_eq!((f.states(), f.order_len()), (0, 0));
        assert_eq!(f.states_of(key(254, 7).src), 0);
    }

    #[test]
    fn waiting_fragments_are_shared_per_source_and_released_by_their_first() {
        let mut f = Fragments::default();
        let t0 = Instant::from_secs(100);
        for i in 0..WAITING_PER_SOURCE as u16 {
            assert_eq!(f.hold(t0, key(1, i), Side::Outside, &mut vec![i as u8]), Ok(()));
        }
        let mut refused = vec![7u8];
        assert_eq!(f.hold(t0, key(1, 999), Side::Outside, &mut refused), Err(Refused::SourceQuota));
        assert_eq!(refused, [7], "a refused packet stays with the caller");
        assert_eq!(f.hold(t0, key(2, 5), Side::Outside, &mut vec![5]), Ok(()));
        let (_, out) = f.remember(t0, key(2, 5), key(2, 5).src, Ipv4Addr::new(10, 0, 0, 3), Side::Inside);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].packet, [5]);
        assert_eq!(f.waiting(), WAITING_PER_SOURCE);
        assert_eq!(f.next_deadline(), Some(t0 + WAIT));
        let mut gone = 0;
        while f.pop_expired_waiting(t0 + WAIT).is_some() {
            gone += 1;
        }
        assert_eq!((gone, f.waiting()), (WAITING_PER_SOURCE, 0));
        assert!(f.waiting_per_source.is_empty());
        assert_eq!(f.hold(t0 + WAIT, key(1, 999), Side::Outside, &mut vec![1]), Ok(()), "its share is back");
    }
}
