//! Which connections exist, their protocol state and when they expire.
//!
//! Owns: the connection table (a chunked slab of [`Conn`] plus an index from each direction's
//! [`FlowKey`]), the table bound and per-inside-host counts, TCP state tracking and idle timeouts
//! (RFC 5382 §5, RFC 4787 REQ-5), and the expiry queue driven by the caller's time. Must not: edit
//! packets, allocate ports (it only remembers which mapping a connection holds), or know about FTP
//! beyond storing the ALG state the engine attaches.
//!
//! Memory per flow (issue 7 budget 128 B, `examples/flow_memory.rs`): the 120-byte [`Conn`] (88 B
//! before issue 11 added the 24-byte [`TcpWindow`], 112 B before issue 13's generational handles) in
//! chunks (spare: one chunk), two 4-byte index entries at hashbrown's load (11-23 B, 21 at 1 M flows),
//! one 12-byte expiry entry in a queue grown by eighths: 154.0 B at 1 M flows (145.4 B before the
//! generations, 121.4 B before the window state), over the budget.
//!
//! Handles are generational ([`ConnId`]: slot + generation): a handle kept past its connection's end
//! never finds the slot's next occupant.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use hashbrown::HashTable;

use crate::flow::{ConnId, Dir, FlowKey};
use crate::time::Instant;

mod alg_conn;
pub mod closing;
mod conn;
pub mod refused;
mod slab;
pub mod window;
pub use alg_conn::AlgConn;
pub use conn::{Conn, Origin, TcpState};
use slab::Slab;
pub use window::{Plain, TcpSeg, TcpWindow, Window};

/// Why a connection could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Table,
    Host,
}

/// The connection table.
pub struct Table {
    slots: Slab,
    free: Vec<u32>,
    /// Each direction's key to its connection, stored as [`slot_ref`] (4 bytes: the key itself is read
    /// from the slot when comparing), so the index costs ~5 bytes per entry instead of the 25 a
    /// `HashMap<FlowKey, (ConnId, Dir)>` takes; the slot is read right after a lookup anyway. Hashed with
    /// foldhash (randomly seeded per table, "minimally DoS-resistant") rather than SipHash: the lookup
    /// runs for every packet and SipHash was a fifth of its cost.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// One live entry per connection (the one its `queued` marks) plus stale ones dropped as they
    /// come up: see [`Due`].
    timers: BinaryHeap<Reverse<Due>>,
    per_host: HashMap<Ipv4Addr, u32>,
    max: usize,
    max_per_host: usize,
    len: usize,
    /// The generation the next inserted connection gets: one counter for the whole table (a slot's
    /// generation cannot live in the slot while it is empty), so a slot's next occupant always differs
    /// from its last unless 2^32 connections were inserted in between.
    next_generation: u32,
}

impl Table {
    pub fn new(max: usize, max_per_host: usize) -> Table {
        Table {
            slots: Slab::default(),
            free: Vec::new(),
            // Sized for the bound up front, like the kernel's conntrack buckets: growing a hash index
            // rehashes it whole, one packet's insert stalling forwarding for tens of ms at 200k flows.
            // Two entries a connection at 4 bytes (plus hashbrown's control byte): ~10 B per allowed flow.
            index: HashTable::with_capacity(Self::index_capacity(max)),
            hasher: foldhash::fast::RandomState::default(),
            timers: BinaryHeap::new(),
            per_host: HashMap::new(),
            max,
            max_per_host,
            len: 0,
            next_generation: 0,
        }
    }

    /// Index entries the table needs at its bound: one per direction of each connection.
    fn index_capacity(max: usize) -> usize {
        max.min(MAX_SLOTS).saturating_mul(2)
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.max
    }
    pub fn set_limits(&mut self, max: usize, max_per_host: usize) {
        let want = Self::index_capacity(max).saturating_sub(self.index.len());
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.reserve(want, |&r| key_of(slots, r).map_or(0, |k| hasher.hash_one(k)));
        self.max = max;
        self.max_per_host = max_per_host;
    }

    /// Finds the connection a packet with `key` belongs to, and the direction it travels.
    pub fn lookup(&self, key: &FlowKey) -> Option<(ConnId, Dir)> {
        let slots = &self.slots;
        let r = *self.index.find(self.hasher.hash_one(key), |&r| key_of(slots, r) == Some(key))?;
        let (slot, d) = unref(r);
        Some((ConnId::new(slot, slots.get(slot)?.generation), d))
    }

    /// The connection `id` names; `None` once it was removed, even if its slot holds another.
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slots.get(id.slot()).filter(|c| c.generation == id.generation())
    }
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.slots.get_mut(id.slot()).filter(|c| c.generation == id.generation())
    }

    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slots.iter().map(|(i, c)| (ConnId::new(i, c.generation), c))
    }

    /// Every slot from `start` on in table order with its connection, if the slot holds one: a
    /// connection keeps its slot while it lives, so a listing taken in slices (`ftpnat show flows`)
    /// resumes at the slot after the last one it saw, and can bound its work by slots visited.
    pub fn slots_from(&self, start: u32) -> impl Iterator<Item = (u32, Option<(ConnId, &Conn)>)> {
        self.slots.slots_from(start).map(|(i, c)| (i, c.map(|c| (ConnId::new(i, c.generation), c))))
    }

    /// True if both keys are unused (a new connection would not shadow an existing one).
    pub fn keys_free(&self, a: &FlowKey, b: &FlowKey) -> bool {
        self.lookup(a).is_none() && self.lookup(b).is_none()
    }

    /// Checks the bounds for a new connection counted against `host`.
    pub fn admit(&self, host: Option<Ipv4Addr>) -> Result<(), Full> {
        // Index entries number slots in 31 bits (`slot_ref`); a new slot is only made when none is free.
        if self.len >= self.max || self.len >= MAX_SLOTS {
            return Err(Full::Table);
        }
        if let Some(h) = host {
            if self.per_host.get(&h).copied().unwrap_or(0) as usize >= self.max_per_host {
                return Err(Full::Host);
            }
        }
        Ok(())
    }

    /// Inserts a connection (call [`Table::admit`] first). Its expiry is [`Conn::expires`].
    pub fn insert(&mut self, mut conn: Conn) -> ConnId {
        let id = match self.free.pop() {
            Some(i) => i,
            None => self.slots.grow(),
        };
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        conn.generation = generation;
        self.occupy(id, conn);
        ConnId::new(id, generation)
    }

    /// Puts `conn` in the empty slot `id`: its expiry entry, its host's count, both index entries.
    fn occupy(&mut self, id: u32, mut conn: Conn) {
        let keys = *conn.keys();
        *self.per_host.entry(conn.host()).or_default() += 1;
        conn.queued = Due::marker(conn.expires());
        queue(&mut self.timers, Due::new(conn.expires(), id));
        self.slots.put(id, conn);
        // In order, and replacing an entry with an equal key: what `HashMap::insert` of each key did.
        self.index_insert(&keys[0], slot_ref(id, Dir::Original));
        self.index_insert(&keys[1], slot_ref(id, Dir::Reply));
        self.len += 1;
    }

    /// Sets a connection's expiry. A later time is picked up lazily when the old deadline comes up; an
    /// earlier one (an RST, the last FIN) gets its own queue entry at once. (The live entry is never
    /// later than the old expiry, so an expiry that does not move earlier needs no new one.)
    pub fn set_expiry(&mut self, id: ConnId, at: Instant) {
        self.update(id, |_| at);
    }

    /// Runs `f` on a connection and sets its expiry to the time `f` returns, as
    /// [`Table::set_expiry`] does: the per-packet refresh, in one slot access. False if `id` is not
    /// a connection (then `f` does not run).
    #[inline]
    pub fn update(&mut self, id: ConnId, f: impl FnOnce(&mut Conn) -> Instant) -> bool {
        let Some(conn) = self.slots.get_mut(id.slot()).filter(|c| c.generation == id.generation()) else {
            return false;
        };
        let at = f(conn);
        if at < conn.expires() {
            conn.queued = Due::marker(at);
            queue(&mut self.timers, Due::new(at, id.slot()));
        }
        conn.set_expires(at);
        true
    }

    /// Removes a connection and returns it (its mapping reference and ALG state are the caller's to
    /// release).
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let keys = *self.get(id)?.keys();
        // Index entries go while the slot still holds the keys they are compared by.
        for d in [Dir::Original, Dir::Reply] {
            let key = keys[d.index()];
            if let Ok(e) = self.index.find_entry(self.hasher.hash_one(key), |&r| r == slot_ref(id.slot(), d))
            {
                e.remove();
            }
        }
        let conn = self.slots.take(id.slot())?;
        let h = conn.host();
        if let Some(n) = self.per_host.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&h);
            }
        }
        self.free.push(id.slot());
        self.len -= 1;
        Some(conn)
    }

    /// The earliest time something may expire (possibly early: a refreshed connection is re-queued
    /// when its old deadline comes up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(due)| due.at())
    }

    /// Pops the next connection whose idle timeout has passed at `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<ConnId> {
        while let Some(&Reverse(due)) = self.timers.peek() {
            let (t, id) = (due.at(), due.slot);
            if t > now {
                return None;
            }
            self.timers.pop();
            let Some(conn) = self.slots.get_mut(id) else { continue };
            if conn.queued != Due::marker(t) {
                continue;
            }
            if conn.expires() > now {
                // Refreshed since this timer was queued: one live timer per connection, moved lazily.
                conn.queued = Due::marker(conn.expires());
                queue(&mut self.timers, Due::new(conn.expires(), id));
                continue;
            }
            return Some(ConnId::new(id, conn.generation));
        }
        None
    }

    /// Points `key` at `r`, replacing the entry of an equal key if there is one.
    fn index_insert(&mut self, key: &FlowKey, r: u32) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let hash = hasher.hash_one(key);
        if let Some(old) = self.index.find_mut(hash, |&o| key_of(slots, o) == Some(key)) {
            *old = r;
            return;
        }
        self.index.insert_unique(hash, r, |&o| key_of(slots, o).map_or(0, |k| hasher.hash_one(k)));
    }

    /// The table as the state file carries it ([`TableState`]): every connection with its slot (its
    /// handle stays valid across a restart: pinholes, held bytes and data connections name it) and the
    /// generation counter. The index, the expiry queue, the free list and the per-host counts are
    /// derived, and rebuilt by [`Table::restore`].
    pub fn state(&self) -> TableStateRef<'_> {
        TableStateRef { next_generation: self.next_generation, conns: SlabConns(&self.slots, self.len) }
    }

    /// A table bounded by `max`/`max_per_host` holding `state`'s connections in their slots, with the
    /// derived parts rebuilt. Refuses a state no table could have had: slots out of order or beyond
    /// the index's reach, a key two connections claim.
    pub fn restore(max: usize, max_per_host: usize, state: TableState) -> Result<Table, String> {
        let mut t = Table::new(max, max_per_host);
        t.next_generation = state.next_generation;
        let mut last: Option<u32> = None;
        for (slot, conn) in state.conns {
            if last.is_some_and(|l| slot <= l) || slot as usize >= MAX_SLOTS {
                return Err(format!("connection slot {slot} out of order or out of range"));
            }
            last = Some(slot);
            while t.slots.len() <= slot {
                let s = t.slots.grow();
                if s != slot {
                    t.free.push(s);
                }
            }
            let keys = *conn.keys();
            if keys.iter().any(|k| t.lookup(k).is_some()) || keys[0] == keys[1] {
                return Err(format!("connection slot {slot}: its flow key is another connection's"));
            }
            t.occupy(slot, conn);
        }
        // Lowest slot first, as a fresh table hands them out.
        t.free.reverse();
        Ok(t)
    }

    /// Connections per inside host (for exhaustion reporting).
    pub fn host_count(&self, h: Ipv4Addr) -> usize {
        self.per_host.get(&h).copied().unwrap_or(0) as usize
    }
}

/// The connections of a table for the state file, borrowed: (slot, connection) in slot order.
#[derive(serde::Serialize)]
pub struct TableStateRef<'a> {
    next_generation: u32,
    conns: SlabConns<'a>,
}

/// What [`TableStateRef`] encodes, read back; [`Table::restore`] makes a table of it.
#[derive(serde::Deserialize)]
pub struct TableState {
    next_generation: u32,
    conns: Vec<(u32, Conn)>,
}

struct SlabConns<'a>(&'a Slab, usize);

impl serde::Serialize for SlabConns<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The count goes first (postcard writes it ahead of the elements): the table's own.
        let mut out = s.serialize_seq(Some(self.1))?;
        for (slot, conn) in self.0.iter() {
            serde::ser::SerializeSeq::serialize_element(&mut out, &(slot, conn))?;
        }
        serde::ser::SerializeSeq::end(out)
    }
}

/// An expiry-queue entry: a deadline (µs, exact) and a slot, in 12 bytes ordered by deadline.
///
/// An entry is live when the slot's connection carries its marker ([`Due::marker`], the deadline's low
/// 32 bits). The marker may match an entry that is not the live one (a stale entry of a refreshed
/// connection, or of an earlier occupant of the slot, whose deadline agrees in its low 32 bits): that
/// is harmless, because [`Table::pop_expired`] only ever returns a connection whose own expiry has
/// passed, and a mistaken entry for a connection not yet due just re-queues it (a duplicate that
/// stops matching the next time the connection moves). So no generation number is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    // Field order is the ordering: deadline (high word, low word), then slot.
    hi: u32,
    lo: u32,
    slot: u32,
}

impl Due {
    fn new(at: Instant, slot: u32) -> Due {
        let us = at.as_micros();
        Due { hi: (us >> 32) as u32, lo: us as u32, slot }
    }
    fn at(self) -> Instant {
        Instant::from_micros(u64::from(self.hi) << 32 | u64::from(self.lo))
    }
    fn marker(at: Instant) -> u32 {
        at.as_micros() as u32
    }
}

/// Adds an expiry-queue entry. The queue grows by an eighth at a time rather than doubling: one entry
/// per connection is 12 B/flow, and a doubled queue just past a power of two would cost 24 (issue 7
/// budget). Amortized, an entry is copied ~9 times over the queue's growth instead of ~2.
fn queue(timers: &mut BinaryHeap<Reverse<Due>>, due: Due) {
    if timers.len() == timers.capacity() {
        timers.reserve_exact((timers.len() / 8).max(1024));
    }
    timers.push(Reverse(due));
}

/// Slots an index entry can name: [`Table::admit`] refuses connections beyond it.
const MAX_SLOTS: usize = 1 << 31;

/// An index entry: slot number (31 bits, see [`MAX_SLOTS`]) and direction in one `u32`.
fn slot_ref(id: u32, d: Dir) -> u32 {
    (id << 1) | d.index() as u32
}

/// The slot and direction of an index entry.
fn unref(r: u32) -> (u32, Dir) {
    (r >> 1, if r & 1 == 0 { Dir::Original } else { Dir::Reply })
}

/// The key an index entry stands for (`None` only for an entry whose slot is empty, which the table
/// never leaves behind).
fn key_of(slots: &Slab, r: u32) -> Option<&FlowKey> {
    let (slot, d) = unref(r);
    slots.get(slot).map(|c| &c.keys()[d.index()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use crate::flow::{Endpoint, Proto, Side};
    use crate::wire::SeqNum;
    use core::time::Duration;

    fn key(sp: u16) -> FlowKey {
        FlowKey::new(
            Proto::Udp,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), sp),
            Endpoint::new(Ipv4Addr::new(198, 51, 100, 2), 53),
        )
    }

    fn conn(sp: u16, now: Instant, ttl: u64) -> Conn {
        let orig = key(sp);
        let reply = FlowKey::new(Proto::Udp, orig.dst, Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), sp));
        let mut c = Conn::new(orig, reply, Origin::Outbound, now);
        c.set_expires(now + Duration::from_secs(ttl));
        c
    }

    #[test]
    fn lookup_both_directions_and_translation() {
        let mut t = Table::new(10, 10);
        let id = t.insert(conn(1000, Instant::ZERO, 60));
        let c = t.get(id).unwrap();
        assert_eq!(t.lookup(&c.key(Dir::Original)), Some((id, Dir::Original)));
        assert_eq!(t.lookup(&c.key(Dir::Reply)), Some((id, Dir::Reply)));
        // Outbound leaves from the public address; the reply reaches the inside host.
        assert_eq!(c.translated(Dir::Original).src, Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1000));
        assert_eq!(c.translated(Dir::Reply).dst, Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 1000));
        assert_eq!(c.egress(Dir::Original), Side::Outside);
        assert_eq!(c.egress(Dir::Reply), Side::Inside);
    }

    #[test]
    fn expiry_follows_virtual_time_and_refresh() {
        let mut t = Table::new(10, 10);
        let a = t.insert(conn(1, Instant::ZERO, 60));
        let b = t.insert(conn(2, Instant::ZERO, 120));
        assert_eq!(t.pop_expired(Instant::from_secs(59)), None);
        // Refresh a before it expires.
        t.set_expiry(a, Instant::from_secs(200));
        assert_eq!(t.pop_expired(Instant::from_secs(60)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(120)), Some(b));
        t.remove(b);
        assert_eq!(t.pop_expired(Instant::from_secs(199)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(200)), Some(a));
        // Shortening (an RST) takes effect before the old deadline.
        let c = t.insert(conn(3, Instant::ZERO, 7440));
        t.set_expiry(c, Instant::from_secs(210));
        assert_eq!(t.pop_expired(Instant::from_secs(210)), Some(c));
    }

    #[test]
    fn a_stale_timer_whose_marker_matches_never_expires_a_live_connection_early() {
        let mut t = Table::new(10, 10);
        let old = t.insert(conn(1, Instant::ZERO, 10));
        t.remove(old);
        // The next connection reuses the slot, due exactly 2^32 µs later: the old entry's marker
        // (the deadline's low 32 bits) is its marker too.
        let mut c = conn(2, Instant::ZERO, 10);
        c.set_expires(Instant::from_secs(10) + Duration::from_micros(1 << 32));
        let new = t.insert(c);
        assert_eq!(new.slot(), old.slot(), "slot reused");
        assert_eq!(t.pop_expired(Instant::from_secs(10)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(4304)), None);
        assert_eq!(t.pop_expired(Instant::from_secs(4305)), Some(new));
    }

    /// A data connection names its control connection; the control connection ends and a new
    /// connection takes its slot (the free list hands the last freed slot out first). The data
    /// connection's handle must find nothing, not the newcomer: its views, events and the ALG would
    /// otherwise speak of an unrelated connection.
    #[test]
    fn a_handle_to_a_removed_connection_never_finds_the_slots_next_occupant() {
        let mut t = Table::new(10, 10);
        let control = t.insert(conn(21, Instant::ZERO, 60));
        let k = key(40000);
        let mut d = Conn::new(k, k.reversed(), Origin::Pinhole { control }, Instant::ZERO);
        d.set_expires(Instant::from_secs(60));
        let data = t.insert(d);
        assert!(t.remove(control).is_some());
        let stranger = t.insert(conn(53, Instant::ZERO, 60));
        assert_eq!(stranger.slot(), control.slot(), "the slot is reused");
        assert_ne!(stranger, control);
        let Origin::Pinhole { control: named } = t.get(data).unwrap().origin() else { panic!("a pinhole") };
        assert_eq!(named, control);
        assert!(t.get(named).is_none(), "the data connection's control is gone, not the stranger");
        assert!(t.get_mut(named).is_none());
        assert!(!t.update(named, |c| c.expires()), "no refresh reaches the stranger");
        assert!(t.remove(named).is_none(), "nor a removal");
        assert_eq!(t.get(stranger).map(|c| c.key(Dir::Original).src.port), Some(53));
        // Every other way of naming the stranger agrees on its generation.
        let k53 = t.get(stranger).unwrap().key(Dir::Original);
        assert_eq!(t.lookup(&k53), Some((stranger, Dir::Original)));
        assert!(t.iter().any(|(id, _)| id == stranger));
        let listed: Vec<ConnId> = t.slots_from(0).filter_map(|(_, c)| Some(c?.0)).collect();
        assert!(listed.contains(&stranger) && listed.contains(&data) && !listed.contains(&control));
        t.set_expiry(stranger, Instant::from_secs(1));
        assert_eq!(t.pop_expired(Instant::from_secs(1)), Some(stranger));
    }

    #[test]
    fn far_future_expiry_saturates_instead_of_wrapping() {
        let mut t = Table::new(10, 10);
        let a = t.insert(conn(1, Instant::ZERO, 60));
        // A timeout as long as the configuration allows (1e9 s) or longer: the deadline saturates at
        // the end of time, it never wraps around to "now".
        t.set_expiry(a, Instant::from_secs(60) + Duration::from_secs(u64::MAX));
        assert_eq!(t.next_deadline(), Some(Instant::from_secs(60)), "the old entry, re-queued lazily");
        assert_eq!(t.pop_expired(Instant::from_secs(60)), None);
        assert_eq!(t.next_deadline(), Some(Instant::MAX));
        assert_eq!(t.pop_expired(Instant::from_secs(1 << 40)), None);
        assert_eq!(t.get(a).map(Conn::expires), Some(Instant::MAX));
        // Brought back by an RST, it goes on time.
        t.set_expiry(a, Instant::from_secs((1 << 40) + 10));
        assert_eq!(t.pop_expired(Instant::from_secs((1 << 40) + 10)), Some(a));
    }

    #[test]
    fn bounds_are_enforced() {
        let mut t = Table::new(2, 1);
        t.insert(conn(1, Instant::ZERO, 60));
        assert_eq!(t.admit(Some(Ipv4Addr::new(10, 0, 0, 2))), Err(Full::Host));
        assert_eq!(t.admit(Some(Ipv4Addr::new(10, 0, 0, 3))), Ok(()));
        t.insert(conn(2, Instant::ZERO, 60));
        assert_eq!(t.admit(None), Err(Full::Table));
        let id = t.lookup(&key(1)).unwrap().0;
        t.remove(id);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(&key(1)), None);
    }

    #[test]
    fn a_key_taken_over_by_a_newer_connection_stays_with_it() {
        // Without `keys_free` checks, a newer connection's equal key wins (as `HashMap::insert` did),
        // and removing the older connection leaves the newer one's entries alone.
        let mut t = Table::new(10, 10);
        let old = t.insert(conn(1, Instant::ZERO, 60));
        let new = t.insert(conn(1, Instant::ZERO, 60));
        assert_eq!(t.lookup(&key(1)), Some((new, Dir::Original)));
        t.remove(old);
        assert_eq!(t.lookup(&key(1)), Some((new, Dir::Original)));
        let reply = t.get(new).unwrap().key(Dir::Reply);
        assert_eq!(t.lookup(&reply), Some((new, Dir::Reply)));
        t.remove(new);
        assert_eq!((t.lookup(&key(1)), t.lookup(&reply)), (None, None));
        // Many inserts and removals through index growth: every live key found, every removed one gone.
        for sp in 100..5100u16 {
            t.set_limits(10_000, 10_000);
            t.insert(conn(sp, Instant::ZERO, 60));
        }
        for sp in (100..5100u16).step_by(2) {
            let id = t.lookup(&key(sp)).unwrap().0;
            t.remove(id);
        }
        for sp in 100..5100u16 {
            assert_eq!(t.lookup(&key(sp)).is_some(), sp % 2 == 1, "port {sp}");
        }
        assert_eq!(t.len(), 2500);
    }

    #[test]
    fn tcp_states() {
        let k = key(1);
        let mut c = Conn::new(
            FlowKey::new(Proto::Tcp, k.src, k.dst),
            FlowKey::new(Proto::Tcp, k.dst, Endpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1)),
            Origin::Outbound,
            Instant::ZERO,
        );
        let seg = |seq: u32, ack: Option<u32>, syn: bool, fin: bool, rst: bool| TcpSeg {
            seq: SeqNum::new(seq),
            ack: ack.map(SeqNum::new),
            len: u32::from(syn) + u32::from(fin),
            win: 1000,
            syn,
            fin,
            rst,
            wscale: None,
        };
        let t = Timeouts::default();
        c.track_tcp(Dir::Original, &seg(100, None, true, false, false));
        assert_eq!(c.tcp(), TcpState::SynSent);
        // A SYN-ACK acknowledging something else opens nothing.
        assert_eq!(
            c.track_tcp(Dir::Reply, &seg(500, Some(7), true, false, false)),
            Window::Beyond(window::Why::Handshake)
        );
        assert_eq!(c.tcp(), TcpState::SynSent);
        c.track_tcp(Dir::Reply, &seg(500, Some(101), true, false, false));
        assert_eq!(c.tcp(), TcpState::SynReceived);
        c.track_tcp(Dir::Original, &seg(101, Some(501), false, false, false));
        assert_eq!(c.tcp(), TcpState::Established);
        assert_eq!(c.timeout(&t), t.tcp_unreplied, "until both sides have spoken");
        c.seen(Dir::Original, 40, Instant::ZERO);
        c.seen(Dir::Reply, 40, Instant::ZERO);
        assert_eq!(c.timeout(&t), t.tcp_established);
        // A FIN or RST outside the window changes nothing.
        assert!(matches!(
            c.track_tcp(Dir::Reply, &seg(501 + 100_000, Some(101), false, true, false)),
            Window::Beyond(_)
        ));
        assert_eq!(c.track_tcp(Dir::Reply, &seg(502, Some(101), false, false, true)), Window::RstNotExact);
        assert_eq!(c.tcp(), TcpState::Established);
        c.track_tcp(Dir::Original, &seg(101, Some(501), false, true, false));
        assert_eq!(c.tcp(), TcpState::FinWait);
        c.track_tcp(Dir::Reply, &seg(501, Some(102), false, true, false));
        assert_eq!(c.tcp(), TcpState::Closed);
        assert_eq!(c.timeout(&t), t.tcp_closed);
        // RFC 7857 §2.2: after an exact RST, the transitory timeout.
        let mut c = Conn::new(c.key(Dir::Original), c.key(Dir::Reply), Origin::Outbound, Instant::ZERO);
        c.track_tcp(Dir::Original, &seg(100, None, true, false, false));
        c.track_tcp(Dir::Reply, &seg(500, Some(101), true, false, false));
        c.track_tcp(Dir::Original, &seg(101, Some(501), false, false, false));
        c.seen(Dir::Original, 40, Instant::ZERO);
        c.seen(Dir::Reply, 40, Instant::ZERO);
        assert_eq!(c.track_tcp(Dir::Reply, &seg(501, None, false, false, true)), Window::Accept);
        assert_eq!((c.tcp(), c.timeout(&t)), (TcpState::Reset, t.tcp_transitory));
    }
}
