//! Workers handing packets to each other: the rare packet a worker reads that another worker's engine
//! owns (`--workers N`, issue 18).
//!
//! Owns: [`Worker`], one run loop's place among several: its index, the steering rule
//! ([`Steering`]), a bounded queue from every other worker ([`HANDOFF_QUEUE`] packets each way,
//! `std::sync::mpsc::sync_channel`) and a doorbell (an `eventfd` the loop polls) that wakes it when one
//! was filled; [`Worker::route`], which applies the rule to a packet just read and either keeps it or
//! hands it on; the fragment side of the rule ([`FragSteer`]: a datagram's fragments meet at one
//! worker, which learns the owner from the first fragment); and the counters of all this
//! ([`HandoffStats`]). Must not: touch an engine or a device (the run loop does), or block: a full
//! queue drops the packet, counted.
//!
//! When packets are handed off at all: with the eBPF steering program attached ([`super::bpf`]) every
//! packet is read by the worker that owns it, except the fragments of inbound datagrams (they carry no
//! ports after the first; the program sends them, as a datagram, to one worker, which routes them by
//! their first fragment) and packets the program and the engines' rule disagree about for a moment (a
//! reload that adds or removes a port forward changes the rule before the program is replaced).
//!
//! Order: a flow's packets are read from one queue (the program's choice is a function of fields every
//! packet of the flow carries), so a flow that goes through a handoff goes through it whole, in order
//! (one queue per pair of workers, first in first out, drained before the receiving loop reads its
//! devices). The one exception is a flow whose datagrams are sometimes fragmented and sometimes not:
//! its fragmented datagrams take the handoff and may be overtaken by a later whole datagram read
//! directly by the owner; that is not prevented, but counted: every handed packet carries the tick
//! its reader stamped on its batch, and the owner's [`Reorder`] counts a handed packet forwarded
//! after a later one of its flow (`workers.reordered`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::flow::Side;
use crate::steer::{FragRoute, FragSteer, Owner, Steering};
use crate::time::Instant;

use super::reorder::{Reorder, Tick};

/// Packets that may wait from one worker to another; beyond it they are dropped (counted in
/// `workers.handoff.dropped`).
pub const HANDOFF_QUEUE: usize = 4096;

/// A packet handed to another worker.
#[derive(Debug)]
pub struct Handed {
    pub side: Side,
    pub packet: Vec<u8>,
    /// Its owner is known (the receiver hands it to its engine); otherwise the receiver is where the
    /// fragments of its datagram meet and routes it.
    pub routed: bool,
    /// When the worker that read it read its batch.
    pub tick: Tick,
}

/// What the handoff did, per worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Packets this worker read and handed to another.
    pub sent: u64,
    /// Packets other workers handed to this one.
    pub received: u64,
    /// Packets dropped because the receiver's queue was full.
    pub dropped: u64,
    /// Fragments routed through the worker their datagram meets at (handed on or kept).
    pub fragments: u64,
    /// Later fragments held until their first fragment named the owner.
    pub fragments_held: u64,
    /// Held fragments whose first fragment never came in time (or that found the hold full): given to
    /// this worker's engine, which holds and counts them as any engine does.
    pub fragments_unrouted: u64,
    /// Handed packets forwarded after a later packet of their flow (see [`super::reorder`]).
    pub reordered: u64,
}

impl HandoffStats {
    /// The counters under dotted names, for `show stats`, the metrics and the stop summary.
    pub fn counters(&self) -> [(&'static str, u64); 7] {
        [
            ("workers.handoff.sent", self.sent),
            ("workers.handoff.received", self.received),
            ("workers.handoff.dropped", self.dropped),
            ("workers.handoff.fragments", self.fragments),
            ("workers.handoff.fragments_held", self.fragments_held),
            ("workers.handoff.fragments_unrouted", self.fragments_unrouted),
            ("workers.reordered", self.reordered),
        ]
    }
}

/// Wakes a worker's loop from another thread. A bell already rung (and not yet answered) writes
/// nothing, so a busy sender costs one system call per wakeup of the receiver, not one per packet.
#[derive(Debug, Clone)]
struct Bell {
    fd: Arc<OwnedFd>,
    rung: Arc<AtomicBool>,
}

impl Bell {
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own; a full counter (EAGAIN) means
            // the receiver has a wakeup pending anyway.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) with constant arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd(2) returned a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What [`Worker::route`] did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// This worker's engine owns it: handle it.
    Here,
    /// Taken (handed to another worker, or held): the buffer left behind is empty.
    Taken,
}

/// One run loop's place among `N`.
pub struct Worker {
    index: u16,
    steering: Steering,
    frags: FragSteer,
    /// Per worker (this one's slot unused): the queue to it and its bell.
    peers: Vec<Option<(SyncSender<Handed>, Bell)>>,
    inbox: Receiver<Handed>,
    door: Bell,
    /// Packets this worker must handle itself after the one at hand (a datagram's later fragments
    /// released by its first one), in order.
    pub local: std::collections::VecDeque<(Side, Vec<u8>)>,
    pub stats: HandoffStats,
    /// The clock every worker stamps its batches with (one origin for all).
    origin: std::time::Instant,
    /// The batch at hand: when it was read, and whether its packets are recorded for [`Reorder`].
    tick: Tick,
    armed: bool,
    reorder: Reorder,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("index", &self.index).field("stats", &self.stats).finish()
    }
}

/// Builds `steering.workers()` connected workers (index order).
pub fn mesh(steering: &Steering) -> io::Result<Vec<Worker>> {
    let n = usize::from(steering.workers());
    let origin = std::time::Instant::now();
    let mut inboxes = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = sync_channel(HANDOFF_QUEUE);
        let bell = Bell { fd: Arc::new(eventfd()?), rung: Arc::new(AtomicBool::new(false)) };
        inboxes.push((rx, bell.clone()));
        senders.push((tx, bell));
    }
    Ok(inboxes
        .into_iter()
        .enumerate()
        .map(|(i, (inbox, door))| Worker {
            index: i as u16,
            steering: steering.clone(),
            frags: FragSteer::default(),
            peers: senders.iter().enumerate().map(|(j, s)| (j != i).then(|| s.clone())).collect(),
            inbox,
            door,
            local: Default::default(),
            stats: HandoffStats::default(),
            origin,
            tick: 0,
            armed: false,
            reorder: Reorder::default(),
        })
        .collect())
}

impl Worker {
    pub fn index(&self) -> u16 {
        self.index
    }

    pub fn workers(&self) -> u16 {
        self.steering.workers()
    }

    pub fn steering(&self) -> &Steering {
        &self.steering
    }

    /// Replaces the rule (a reload changed the forwards).
    pub fn set_steering(&mut self, s: Steering) {
        self.steering = s;
    }

    /// The descriptor the loop polls: readable when another worker handed this one packets.
    pub fn fd(&self) -> RawFd {
        self.door.fd.as_raw_fd()
    }

    /// Stamps the batch just read from a device (before [`Worker::route`] sees its packets): its tick
    /// on the shared clock, and whether this worker records it for the reorder count (a handoff is
    /// waiting or came recently: one atomic load, nothing per packet otherwise).
    #[inline]
    pub fn stamp(&mut self) {
        let t = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stamp_at(t);
    }

    fn stamp_at(&mut self, tick: Tick) {
        self.tick = tick;
        self.armed = self.reorder.armed(tick, self.door.rung.load(Ordering::Acquire));
    }

    /// Whether the aggregate (a segmentation-offload read, one flow) at hand is this worker's whole.
    pub fn owns(&mut self, side: Side, pkt: &[u8]) -> bool {
        let mine = self.steering.owner(side, pkt) == Owner::Worker(self.index);
        if mine && self.armed {
            self.reorder.direct(side, pkt, self.tick);
        }
        mine
    }

    /// Hands `packet` to worker `to`, stamped with the batch tick at hand.
    fn hand(&mut self, to: u16, side: Side, packet: Vec<u8>, routed: bool) {
        let tick = self.tick;
        let Some(Some((tx, bell))) = self.peers.get(usize::from(to)) else {
            // No such worker (the rule names only existing ones): keep it rather than lose it.
            self.local.push_back((side, packet));
            return;
        };
        match tx.try_send(Handed { side, packet, routed, tick }) {
            Ok(()) => {
                self.stats.sent += 1;
                bell.ring();
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.stats.dropped += 1,
        }
    }

    /// Applies the rule to `pkt`, just read from `side`: [`Route::Here`] if this worker's engine owns
    /// it, else it is taken from `pkt` and handed on (or held, for a later fragment whose first
    /// fragment has not come).
    #[inline]
    pub fn route(&mut self, now: Instant, side: Side, pkt: &mut Vec<u8>) -> Route {
        match self.steering.owner(side, pkt) {
            Owner::Worker(w) if w == self.index => {
                if self.armed {
                    self.reorder.direct(side, pkt, self.tick);
                }
                Route::Here
            }
            Owner::Worker(w) => {
                self.hand(w, side, std::mem::take(pkt), true);
                Route::Taken
            }
            Owner::Fragment { frag_worker, .. } if frag_worker != self.index => {
                self.hand(frag_worker, side, std::mem::take(pkt), false);
                Route::Taken
            }
            Owner::Fragment { key, first, .. } => self.route_fragment(now, side, pkt, key, first),
        }
    }

    #[inline(never)]
    fn route_fragment(
        &mut self,
        now: Instant,
        side: Side,
        pkt: &mut Vec<u8>,
        key: crate::frag::FragKey,
        first: bool,
    ) -> Route {
        self.stats.fragments += 1;
        let owner = first.then(|| self.steering.first_fragment_owner(side, pkt));
        match self.frags.route(now, key, owner) {
            FragRoute::To(w) => {
                let held = if first { self.frags.release(&key) } else { Vec::new() };
                if w == self.index {
                    self.local.extend(held.into_iter().map(|h| (h.side, h.packet)));
                    Route::Here
                } else {
                    self.hand(w, side, std::mem::take(pkt), true);
                    for h in held {
                        self.hand(w, h.side, h.packet, true);
                    }
                    Route::Taken
                }
            }
            FragRoute::Unknown => match self.frags.hold(now, key, side, std::mem::take(pkt)) {
                Ok(()) => {
                    self.stats.fragments_held += 1;
                    Route::Taken
                }
                Err(back) => {
                    self.stats.fragments_unrouted += 1;
                    *pkt = back;
                    Route::Here
                }
            },
        }
    }

    /// Takes what other workers handed this one (after [`Worker::fd`] polled readable, or any time):
    /// the packets this worker's engine owns go to `here`, in the order they were handed; packets it
    /// routes as the meeting point of their datagram's fragments are routed on.
    pub fn receive(&mut self, now: Instant, mut here: impl FnMut(Side, &mut Vec<u8>)) {
        // Lowered before the queues are read: a packet handed after this rings again.
        let mut sink = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.door.fd.as_raw_fd(), (&mut sink as *mut u64).cast(), 8) };
        self.door.rung.store(false, Ordering::Release);
        let latest = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        while let Ok(mut h) = self.inbox.try_recv() {
            self.stats.received += 1;
            // A first fragment meeting here is routed on with the tick its reader gave it.
            let (tick, armed) = (self.tick, self.armed);
            (self.tick, self.armed) = (h.tick, false);
            let here_too = h.routed || self.route(now, h.side, &mut h.packet) == Route::Here;
            (self.tick, self.armed) = (tick, armed);
            if here_too {
                if self.reorder.handed(h.side, &h.packet, h.tick, latest) {
                    self.stats.reordered += 1;
                }
                here(h.side, &mut h.packet);
            }
            while let Some((side, mut p)) = self.local.pop_front() {
                here(side, &mut p);
            }
        }
    }

    /// Held fragments whose wait is over: they go to this worker's engine (which holds them again,
    /// and drops and counts them if their first fragment never comes, as any engine does).
    pub fn expire(&mut self, now: Instant) {
        for h in self.frags.expired(now) {
            self.stats.fragments_unrouted += 1;
            self.local.push_back((h.side, h.packet));
        }
    }

    /// When [`Worker::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.frags.next_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::net::Ipv4Addr;

    fn steering() -> Steering {
        Steering::new(&Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1)), 2)
    }

    fn udp_in(dport: u16, frag: u16, ident: u16) -> Vec<u8> {
        let mut p = vec![
            0x45,
            0,
            0,
            36,
            (ident >> 8) as u8,
            ident as u8,
            (frag >> 8) as u8,
            frag as u8,
            64,
            17,
            0,
            0,
        ];
        p.extend_from_slice(&[203, 0, 113, 9, 198, 51, 100, 1]);
        p.extend_from_slice(&53u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
        p
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_packet_for_another_worker_is_handed_over_in_order_and_rings_once() {
        let s = steering();
        let mut ws = mesh(&s).unwrap();
        let t = Instant::from_secs(1);
        // Ports of worker 1's slice.
        let port = *crate::steer::slice_range(s.range(), 2, 1).start();
        let (mut a, mut b) = (ws.remove(0), ws.remove(0));
        for i in 0..3u16 {
            let mut p = udp_in(port + i, 0, i);
            assert_eq!(a.route(t, Side::Outside, &mut p), Route::Taken);
            assert!(p.is_empty(), "the buffer went with the packet");
        }
        assert!(readable(b.fd()));
        assert_eq!(a.stats.sent, 3);
        let mut got = Vec::new();
        b.receive(t, |side, p| got.push((side, u16::from_be_bytes([p[22], p[23]]))));
        assert_eq!(got, [(Side::Outside, port), (Side::Outside, port + 1), (Side::Outside, port + 2)]);
        assert!(!readable(b.fd()), "one wakeup for the three");
        let mut own = udp_in(port, 0, 9);
        assert_eq!(b.route(t, Side::Outside, &mut own), Route::Here);
    }

    /// A datagram's fragments meet at one worker whichever order they come in, and reach the owner
    /// its first fragment names, later ones after the first.
    #[test]
    fn fragments_reach_their_first_fragments_owner_in_order() {
        let s = steering();
        let t = Instant::from_secs(1);
        for owner in 0..2u16 {
            let port = *crate::steer::slice_range(s.range(), 2, owner).start();
            let mut ws = mesh(&s).unwrap();
            // The worker the datagram's fragments meet at, and the other one.
            let meet = usize::from(match s.owner(Side::Outside, &udp_in(port, 0x2000, 77)) {
                Owner::Fragment { frag_worker, .. } => frag_worker,
                o => panic!("{o:?}"),
            });
            let later = udp_in(0, 3, 77);
            let first = udp_in(port, 0x2000, 77);
            let m = &mut ws[meet];
            let mut p = later.clone();
            assert_eq!(m.route(t, Side::Outside, &mut p), Route::Taken, "held until the first comes");
            assert_eq!(m.stats.fragments_held, 1);
            let mut p = first.clone();
            let r = m.route(t, Side::Outside, &mut p);
            let mut order = Vec::new();
            if usize::from(owner) == meet {
                assert_eq!(r, Route::Here);
                order.push(p);
                order.extend(m.local.drain(..).map(|(_, p)| p));
            } else {
                assert_eq!(r, Route::Taken);
                ws[usize::from(owner)].receive(t, |_, p| order.push(std::mem::take(p)));
            }
            assert_eq!(order, [first, later], "owner {owner}, meeting at {meet}");
        }
    }

    /// The detour a handed packet takes lets a later packet of its flow, read by the owner itself,
    /// go first: `workers.reordered` counts it; the same packets in order count nothing.
    #[test]
    fn a_handed_packet_overtaken_by_its_flows_next_packet_is_counted() {
        let s = steering();
        let port = *crate::steer::slice_range(s.range(), 2, 1).start();
        let t = Instant::from_secs(1);
        for overtaken in [true, false] {
            let mut ws = mesh(&s).unwrap();
            let (mut a, mut b) = (ws.remove(0), ws.remove(0));
            // Worker 0 reads the flow's first packet (the steering program disagreed) and hands it on.
            a.stamp_at(10);
            let mut first = udp_in(port, 0, 1);
            assert_eq!(a.route(t, Side::Outside, &mut first), Route::Taken);
            let mut order = Vec::new();
            if !overtaken {
                b.receive(t, |_, p| order.push(u16::from_be_bytes([p[4], p[5]])));
            }
            // The owner reads the flow's next packet at a later tick: a handoff is waiting (or came
            // just now), so it is recorded.
            b.stamp_at(20);
            let mut next = udp_in(port, 0, 2);
            assert_eq!(b.route(t, Side::Outside, &mut next), Route::Here);
            order.push(2);
            // Another flow of worker 1, read later still, does not make the first packet late.
            let mut other = udp_in(port + 1, 0, 3);
            assert_eq!(b.route(t, Side::Outside, &mut other), Route::Here);
            b.receive(t, |_, p| order.push(u16::from_be_bytes([p[4], p[5]])));
            let want = if overtaken { [2, 1] } else { [1, 2] };
            assert_eq!(order, want);
            assert_eq!(b.stats.reordered, u64::from(overtaken), "overtaken: {overtaken}");
            assert_eq!(a.stats.reordered, 0);
        }
    }

    /// A worker nobody hands anything to records nothing (no cost per packet).
    #[test]
    fn an_unarmed_worker_records_nothing() {
        let s = steering();
        let port = *crate::steer::slice_range(s.range(), 2, 1).start();
        let mut ws = mesh(&s).unwrap();
        let b = &mut ws[1];
        b.stamp_at(20);
        assert!(!b.armed);
        let mut p = udp_in(port, 0, 2);
        assert_eq!(b.route(Instant::from_secs(1), Side::Outside, &mut p), Route::Here);
        assert!(!b.reorder.armed(20, false));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let s = steering();
        let mut ws = mesh(&s).unwrap();
        let port = *crate::steer::slice_range(s.range(), 2, 1).start();
        let t = Instant::from_secs(1);
        for _ in 0..HANDOFF_QUEUE + 5 {
            let mut p = udp_in(port, 0, 1);
            ws[0].route(t, Side::Outside, &mut p);
        }
        assert_eq!((ws[0].stats.sent, ws[0].stats.dropped), (HANDOFF_QUEUE as u64, 5));
    }

    #[test]
    fn a_held_fragment_whose_first_never_comes_goes_to_the_local_engine() {
        let s = steering();
        let mut ws = mesh(&s).unwrap();
        let t = Instant::from_secs(1);
        let later = udp_in(0, 3, 5);
        let meet = match s.owner(Side::Outside, &later) {
            Owner::Fragment { frag_worker, .. } => usize::from(frag_worker),
            o => panic!("{o:?}"),
        };
        let mut p = later.clone();
        assert_eq!(ws[meet].route(t, Side::Outside, &mut p), Route::Taken);
        let due = ws[meet].next_deadline().unwrap();
        ws[meet].expire(due);
        assert_eq!(ws[meet].local.pop_front(), Some((Side::Outside, later)));
        assert_eq!(ws[meet].stats.fragments_unrouted, 1);
    }
}
