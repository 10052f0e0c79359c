//! Counting the reordering the gateway causes within a flow (`--workers N`, issue 18:
//! `workers.reordered`).
//!
//! Owns: [`FlowKey`] (a flow direction's key as read from a packet: side, protocol, addresses and,
//! where the packet carries them, ports or echo identifier), [`Tick`] (when a worker read a batch: one
//! monotonic clock shared by every worker) and [`Reorder`], a worker's detector: a small direct-mapped
//! table (flow key → the latest read tick forwarded) and the count. Must not: touch an engine, a
//! device or another worker's state, allocate after it is made, or take a lock.
//!
//! Why only handoffs can reorder: every packet of a flow (one direction) is read from one queue, and a
//! worker handles its own queue first in first out. A packet of a flow can be overtaken only when it
//! takes the detour through another worker (read on a queue that is not its owner's: a fragmented
//! datagram at the worker where its fragments meet, a packet the steering program and the rule
//! disagreed about around a reload) while a later packet of the same flow is read by the owner directly
//! and forwarded first. So the owner compares: a handed packet carries the tick its reader stamped;
//! if the owner has already forwarded a packet of the same flow read at a later tick, the handed one
//! was overtaken, and `reordered` counts it.
//!
//! Cost: the owner records directly read packets only while it is *armed*: a handed packet is waiting
//! for it (its doorbell is rung) or one reached it in the last [`HOT`]. A worker nobody hands
//! anything to pays one atomic load per batch and nothing per packet. A reorder is missed only when
//! the overtaking packet was handled before the overtaken one was even queued for the owner and no
//! handoff had reached the owner for [`HOT`], or when another flow took its table slot in the
//! microseconds between (the table has [`SLOTS`] entries): exact enough for a metric whose expected
//! value is 0.

use crate::flow::Side;

/// Slots in a worker's table (16 bytes each): flows handed off at the same moment are few.
pub const SLOTS: usize = 1024;

/// How long after the last handoff a worker still records what it reads directly (nanoseconds).
pub const HOT: u64 = 1_000_000_000;

/// When a batch was read: nanoseconds on a monotonic clock every worker shares (one origin).
pub type Tick = u64;

/// A flow direction's key, hashed (never 0, which marks an empty slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey(u64);

impl FlowKey {
    /// The key of the packet as read from `side`: protocol, source and destination address, and the
    /// ports (TCP, UDP) or the echo identifier (ICMP). `None` for what has no flow of its own to
    /// compare: a later fragment (its datagram's first fragment stands for it), a packet too short.
    pub fn of(side: Side, pkt: &[u8]) -> Option<FlowKey> {
        let v = pkt.first()? >> 4;
        let (proto, addrs, l4) = match v {
            4 => {
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
                if frag & 0x1fff != 0 {
                    return None;
                }
                (*pkt.get(9)?, pkt.get(12..20)?, pkt.get(ihl..))
            }
            // IPv6: the next header directly after the fixed header (extension headers: no ports).
            6 => (*pkt.get(6)?, pkt.get(8..40)?, pkt.get(40..)),
            _ => return None,
        };
        let ports: u32 = match (proto, l4) {
            (6 | 17, Some(l)) if l.len() >= 4 => u32::from_be_bytes([l[0], l[1], l[2], l[3]]),
            // ICMP / ICMPv6 echo: type and identifier.
            (1 | 58, Some(l)) if l.len() >= 6 => {
                u32::from(l[0]) << 16 | u32::from(u16::from_be_bytes([l[4], l[5]]))
            }
            _ => 0,
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (side.index() as u64) << 8 ^ u64::from(proto);
        let mut mix = |x: u64| h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        for c in addrs.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            mix(u64::from_le_bytes(b));
        }
        mix(u64::from(ports));
        Some(FlowKey(h | 1))
    }

    fn slot(self) -> usize {
        // The high bits of a multiplicative hash are the well-mixed ones.
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % SLOTS
    }
}

/// One worker's detector.
pub struct Reorder {
    /// (key, latest read tick forwarded); key 0: empty.
    slots: Box<[(u64, Tick)]>,
    /// Until when directly read packets are recorded (the last handoff received + [`HOT`]).
    hot_until: Tick,
}

impl Default for Reorder {
    fn default() -> Self {
        Reorder { slots: vec![(0, 0); SLOTS].into_boxed_slice(), hot_until: 0 }
    }
}

impl std::fmt::Debug for Reorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reorder").field("hot_until", &self.hot_until).finish()
    }
}

impl Reorder {
    /// Whether a batch read at `tick` must be recorded: a handoff is waiting (`pending`, the
    /// doorbell) or one came recently.
    #[inline]
    pub fn armed(&self, tick: Tick, pending: bool) -> bool {
        pending || tick < self.hot_until
    }

    /// A packet this worker read itself at `tick` is forwarded.
    pub fn direct(&mut self, side: Side, pkt: &[u8], tick: Tick) {
        if let Some(k) = FlowKey::of(side, pkt) {
            self.note(k, tick);
        }
    }

    /// A packet another worker read at `tick` and handed to this one is forwarded (at `now`, this
    /// worker's latest tick): `true` if a later packet of its flow went first (a reorder).
    pub fn handed(&mut self, side: Side, pkt: &[u8], tick: Tick, now: Tick) -> bool {
        self.hot_until = self.hot_until.max(now.saturating_add(HOT));
        let Some(k) = FlowKey::of(side, pkt) else { return false };
        let s = &self.slots[k.slot()];
        let overtaken = s.0 == k.0 && s.1 > tick;
        self.note(k, tick);
        overtaken
    }

    fn note(&mut self, k: FlowKey, tick: Tick) {
        let s = &mut self.slots[k.slot()];
        if s.0 == k.0 {
            s.1 = s.1.max(tick);
        } else {
            *s = (k.0, tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(sport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, (frag >> 8) as u8, frag as u8, 64, 17, 0, 0];
        p.extend_from_slice(&[203, 0, 113, 9, 198, 51, 100, 1]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&5000u16.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p
    }

    #[test]
    fn a_handed_packet_overtaken_by_a_later_direct_one_counts() {
        let mut r = Reorder::default();
        // Read by another worker at 10; a later packet of the flow, read at 20, went first.
        r.direct(Side::Outside, &udp(53, 0), 20);
        assert!(r.handed(Side::Outside, &udp(53, 0), 10, 21));
        // In order: handed (read at 30) before a direct one read at 40.
        assert!(!r.handed(Side::Outside, &udp(53, 0), 30, 31));
        r.direct(Side::Outside, &udp(53, 0), 40);
        assert!(!r.handed(Side::Outside, &udp(53, 0), 40, 41), "same batch tick: in order");
    }

    #[test]
    fn other_flows_and_directions_do_not_count() {
        let mut r = Reorder::default();
        r.direct(Side::Outside, &udp(53, 0), 20);
        assert!(!r.handed(Side::Outside, &udp(54, 0), 10, 21));
        assert!(!r.handed(Side::Inside, &udp(53, 0), 10, 21));
    }

    #[test]
    fn later_fragments_have_no_key_the_first_stands_for_them() {
        assert!(FlowKey::of(Side::Outside, &udp(53, 3)).is_none());
        assert_eq!(FlowKey::of(Side::Outside, &udp(53, 0x2000)), FlowKey::of(Side::Outside, &udp(53, 0)));
        assert!(FlowKey::of(Side::Outside, &[0x45, 0]).is_none(), "short: no key, no panic");
        assert!(FlowKey::of(Side::Outside, &[]).is_none());
    }

    #[test]
    fn arming_lasts_hot_after_a_handoff() {
        let mut r = Reorder::default();
        assert!(!r.armed(5, false));
        assert!(r.armed(5, true));
        r.handed(Side::Outside, &udp(53, 0), 5, 5);
        assert!(r.armed(5 + HOT - 1, false));
        assert!(!r.armed(5 + HOT, false));
    }
}
