//! Inbound TCP openings the gateway refused, remembered briefly: "refused means refused".
//!
//! Owns: a small, bounded, expiring set of `(remote endpoint, public port)` pairs whose SYN was dropped
//! (no mapping, filtered, table or port limits). Must not: decide what is refused (the engine does) or
//! hold anything per packet beyond that pair and a deadline.
//!
//! Why: a gateway that refused an inbound SYN can still see the inside host answer it (a recording of
//! a flat network, a second path). Without this memory the first non-SYN the inside host sends would be
//! picked up mid-stream as a new outbound connection, and the rest of the refused connection (a whole
//! data connection nobody announced) would cross the gateway. With it, every answer of the inside host
//! to that remote from that port (SYN-ACK, ACK, data, FIN, RST) is dropped as `refused_flow`, and each
//! one keeps the memory alive; a fresh SYN from the inside host is a new opening and clears it.
//!
//! Bounds: [`CAPACITY`] pairs, the oldest forgotten first (a SYN flood with spoofed sources can push a
//! real refusal out early; that refusal then falls back to ordinary mid-stream pickup); a pair is
//! forgotten [`HOLD`] after its last refused SYN or answer.

use std::collections::{HashMap, VecDeque};

use crate::flow::Endpoint;
use crate::time::Instant;

/// How many refused openings are remembered.
pub const CAPACITY: usize = 4096;
/// How long after its last packet: a refused SYN is retransmitted for about two minutes (RFC 6298
/// backoff, Linux's six SYN retries take 127 s).
pub const HOLD: core::time::Duration = core::time::Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct Key {
    remote: Endpoint,
    port: u16,
}

/// See the module header.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// foldhash, randomly seeded, as the connection index: every new inside flow asks here.
    until: HashMap<Key, Instant, foldhash::fast::RandomState>,
    /// Pairs in the order their deadlines were set (a refreshed pair appears again later; an entry is
    /// live only while its deadline is the pair's current one).
    order: VecDeque<(Key, Instant)>,
}

impl Refused {
    pub fn len(&self) -> usize {
        self.until.len()
    }
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// An inbound SYN from `remote` to public port `port` was refused at `now`.
    pub fn refuse(&mut self, remote: Endpoint, port: u16, now: Instant) {
        self.set(Key { remote, port }, now);
    }

    /// Whether a packet an inside host sends from `port` to `remote` answers a refused opening; if so,
    /// the memory is kept alive.
    pub fn answered(&mut self, remote: Endpoint, port: u16, now: Instant) -> bool {
        if self.until.is_empty() {
            return false;
        }
        let key = Key { remote, port };
        match self.until.get(&key) {
            Some(&t) if t > now => {
                // Refreshed only when half spent, so a long refused flow does not churn the order queue.
                if t.saturating_since(now) < HOLD / 2 {
                    self.set(key, now);
                }
                true
            }
            Some(_) => {
                self.until.remove(&key);
                false
            }
            None => false,
        }
    }

    /// The inside host opens a connection of its own on the same ports: not an answer any more.
    pub fn forget(&mut self, remote: Endpoint, port: u16) {
        if !self.until.is_empty() {
            self.until.remove(&Key { remote, port });
        }
    }

    fn set(&mut self, key: Key, now: Instant) {
        let t = now + HOLD;
        self.until.insert(key, t);
        self.order.push_back((key, t));
        // Expired pairs and stale order entries go from the front; beyond the capacity, the oldest
        // live pairs too.
        while let Some(&(k, at)) = self.order.front() {
            let live = self.until.get(&k) == Some(&at);
            if live && at > now && self.until.len() <= CAPACITY && self.order.len() <= 2 * CAPACITY {
                break;
            }
            self.order.pop_front();
            if live && (at <= now || self.until.len() > CAPACITY) {
                self.until.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(i: u32) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(0xc633_6400 + (i >> 16)), i as u16)
    }

    #[test]
    fn remembered_refreshed_and_forgotten() {
        let t0 = Instant::from_secs(1000);
        let mut r = Refused::default();
        r.refuse(ep(1), 8080, t0);
        assert!(r.answered(ep(1), 8080, t0 + core::time::Duration::from_secs(100)));
        // The answer at 100 s (more than half the hold spent) kept it alive past the first deadline.
        assert!(r.answered(ep(1), 8080, t0 + core::time::Duration::from_secs(200)));
        assert!(!r.answered(ep(1), 8081, t0), "another port");
        assert!(!r.answered(ep(2), 8080, t0), "another remote");
        assert!(!r.answered(ep(1), 8080, t0 + core::time::Duration::from_secs(1000)), "expired");
        r.refuse(ep(1), 8080, t0);
        r.forget(ep(1), 8080);
        assert!(!r.answered(ep(1), 8080, t0));
    }

    #[test]
    fn bounded_with_the_oldest_forgotten_first() {
        let t0 = Instant::from_secs(1000);
        let mut r = Refused::default();
        for i in 0..(CAPACITY as u32 * 3) {
            r.refuse(ep(i), 80, t0 + core::time::Duration::from_millis(u64::from(i)));
        }
        assert_eq!(r.len(), CAPACITY);
        assert!(r.order.len() <= 2 * CAPACITY);
        let last = CAPACITY as u32 * 3 - 1;
        let now = t0 + core::time::Duration::from_millis(u64::from(last));
        assert!(r.answered(ep(last), 80, now));
        assert!(!r.answered(ep(0), 80, now));
    }
}
