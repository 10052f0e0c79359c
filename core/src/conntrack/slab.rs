//! Where connections live: numbered slots, allocated a chunk at a time.
//!
//! Owns: the storage of [`Conn`]s by slot number and its growth. Must not: decide which slot a
//! connection gets (the table's free list does) or know about keys and expiry.
//!
//! Why chunks and not one `Vec`: a doubling `Vec` holds up to twice the slots in use (5 % spare at
//! 1 M flows, nearly 100 % just past 2^20), and growing it copies every connection (or leans on the
//! allocator's `mremap`). Fixed chunks cap the spare at one chunk and never move a connection; the
//! chunk table stays small enough to sit in L1 (2 KB of pointers per million slots), so a lookup pays
//! one cached load and a few instructions for it.

use super::Conn;

const CHUNK_BITS: u32 = 12;
/// Slots per chunk: 4096 × 88 B = 352 KiB.
const CHUNK: usize = 1 << CHUNK_BITS;
const MASK: u32 = (1 << CHUNK_BITS) - 1;

type Chunk = Box<[Option<Conn>; CHUNK]>;

#[derive(Default)]
pub(super) struct Slab {
    chunks: Vec<Chunk>,
    /// Slots handed out so far (`0..len`); the rest of the last chunk is spare.
    len: u32,
}

impl Slab {
    #[inline]
    pub(super) fn get(&self, slot: u32) -> Option<&Conn> {
        self.chunks.get((slot >> CHUNK_BITS) as usize)?[(slot & MASK) as usize].as_ref()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.chunks.get_mut((slot >> CHUNK_BITS) as usize)?[(slot & MASK) as usize].as_mut()
    }

    /// Slots handed out so far.
    pub(super) fn len(&self) -> u32 {
        self.len
    }

    /// A never-used slot number, its chunk allocated.
    pub(super) fn grow(&mut self) -> u32 {
        let slot = self.len;
        if (slot as usize) == self.chunks.len() * CHUNK {
            let chunk: Box<[Option<Conn>]> = (0..CHUNK).map(|_| None).collect();
            self.chunks.push(chunk.try_into().unwrap_or_else(|_| unreachable!("CHUNK elements")));
        }
        self.len += 1;
        slot
    }

    /// Puts `conn` in `slot`, which [`Slab::grow`] handed out.
    pub(super) fn put(&mut self, slot: u32, conn: Conn) {
        *self.entry(slot).expect("a slot grow handed out") = Some(conn);
    }

    pub(super) fn take(&mut self, slot: u32) -> Option<Conn> {
        self.entry(slot).and_then(Option::take)
    }

    fn entry(&mut self, slot: u32) -> Option<&mut Option<Conn>> {
        Some(&mut self.chunks.get_mut((slot >> CHUNK_BITS) as usize)?[(slot & MASK) as usize])
    }

    /// Occupied slots in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Conn)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.as_ref()?)))
    }

    /// Every slot handed out from `start` on, occupied or not, in slot order: a listing taken in
    /// slices resumes here, and counts empty slots too (after a flood expired, most may be).
    pub(super) fn slots_from(&self, start: u32) -> impl Iterator<Item = (u32, Option<&Conn>)> {
        (start.min(self.len)..self.len).map(move |i| (i, self.get(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Origin;
    use crate::flow::{Endpoint, FlowKey, Proto};
    use crate::time::Instant;
    use std::net::Ipv4Addr;

    fn conn(port: u16) -> Conn {
        let k = FlowKey::new(
            Proto::Udp,
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), port),
            Endpoint::new(Ipv4Addr::new(203, 0, 113, 1), 53),
        );
        Conn::new(k, k.reversed(), Origin::Outbound, Instant::ZERO)
    }

    #[test]
    fn slots_across_chunks() {
        let mut s = Slab::default();
        assert!(s.get(0).is_none());
        for i in 0..CHUNK as u32 + 2 {
            assert_eq!(s.grow(), i);
            s.put(i, conn(i as u16));
        }
        assert_eq!(s.chunks.len(), 2, "one chunk at a time");
        let last = CHUNK as u32 + 1;
        assert_eq!(s.get(last).map(|c| c.key(crate::flow::Dir::Original).src.port), Some(last as u16));
        assert!(s.get(last + 1).is_none(), "spare slot");
        assert!(s.get(u32::MAX).is_none(), "beyond the chunks");
        assert!(s.take(3).is_some());
        assert!(s.take(3).is_none());
        assert!(s.get_mut(3).is_none());
        let seen: Vec<u32> = s.iter().map(|(i, _)| i).take(5).collect();
        assert_eq!(seen, [0, 1, 2, 4, 5]);
        assert_eq!(s.iter().count(), CHUNK + 1);
        let from: Vec<(u32, bool)> = s.slots_from(2).map(|(i, c)| (i, c.is_some())).take(3).collect();
        assert_eq!(from, [(2, true), (3, false), (4, true)], "resumes at a slot, empty ones included");
        let next: Vec<u32> = s.slots_from(CHUNK as u32 - 1).map(|(i, _)| i).collect();
        assert_eq!(next, [CHUNK as u32 - 1, CHUNK as u32, last], "across the chunk boundary");
        assert_eq!(s.slots_from(last + 1).count(), 0, "not the spare slots");
        assert_eq!(s.slots_from(u32::MAX).count(), 0, "beyond the chunks");
    }
}
