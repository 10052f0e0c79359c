//! The established-flow path does not allocate: a counting global allocator around packets of
//! established TCP, UDP and ICMP flows, both directions, must count zero.
//!
//! Owns: the allocation count of this test binary's thread. Must not: time anything (the benchmarks
//! do). The allocator counts only on the thread that switched counting on, so tests running in
//! parallel and the harness's own threads do not disturb one another's counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ftpnat::{Side, Verdict};

use ftpnat_testkit::scenario::*;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) made on this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(|c| c.get())
}

const PACKETS: usize = 10_000;

/// Sends `tpl` once to warm up (lazy one-time setup is not per-packet cost), then counts over many.
fn per_packet(rig: &mut Rig, from: Side, tpl: &[u8]) -> u64 {
    assert_eq!(rig.send(from, tpl), Verdict::Forward(from.other()));
    let mut forwarded = 0;
    let n = allocations(|| {
        for _ in 0..PACKETS {
            if rig.send(from, tpl) == Verdict::Forward(from.other()) {
                forwarded += 1;
            }
        }
    });
    assert_eq!(forwarded, PACKETS, "every packet of the flow is forwarded");
    n
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test itself: a counter that never counts would make every assertion below vacuous.
    let n = allocations(|| {
        std::hint::black_box(vec![0u8; 64]);
    });
    assert_eq!(n, 1);
}

#[test]
fn established_tcp_both_directions_allocate_nothing() {
    let mut rig = Rig::new(config());
    let (out, inb) = tcp_flow(&mut rig, 1460);
    assert_eq!(per_packet(&mut rig, Side::Inside, &out), 0, "TCP outbound");
    assert_eq!(per_packet(&mut rig, Side::Outside, &inb), 0, "TCP inbound");
    let mut rig2 = Rig::new(config());
    let (out2, inb2) = tcp_flow(&mut rig2, 0);
    assert_eq!(per_packet(&mut rig2, Side::Inside, &out2), 0, "TCP pure ACK outbound");
    assert_eq!(per_packet(&mut rig2, Side::Outside, &inb2), 0, "TCP pure ACK inbound");
}

#[test]
fn established_udp_both_directions_allocate_nothing() {
    let mut rig = Rig::new(config());
    let (out, inb) = udp_flow(&mut rig, 36);
    assert_eq!(per_packet(&mut rig, Side::Inside, &out), 0, "UDP outbound");
    assert_eq!(per_packet(&mut rig, Side::Outside, &inb), 0, "UDP inbound");
}

#[test]
fn established_icmp_echo_both_directions_allocate_nothing() {
    let mut rig = Rig::new(config());
    let (req, rep) = icmp_flow(&mut rig);
    assert_eq!(per_packet(&mut rig, Side::Inside, &req), 0, "ICMP echo request");
    assert_eq!(per_packet(&mut rig, Side::Outside, &rep), 0, "ICMP echo reply");
}

#[test]
fn established_flows_among_many_allocate_nothing() {
    // With 100 000 flows in the table a lookup walks a big index; it still must not allocate.
    let mut rig = Rig::new(config());
    let n = 100_000;
    assert_eq!(fill_udp_flows(&mut rig, n), n);
    let pkts: Vec<Vec<u8>> = (0..n).step_by(997).map(|i| udp_flow_packet(i, &[0; 36])).collect();
    for p in &pkts {
        assert_eq!(rig.send(Side::Inside, p), Verdict::Forward(Side::Outside));
    }
    let count = allocations(|| {
        for _ in 0..10 {
            for p in &pkts {
                rig.send(Side::Inside, p);
            }
        }
    });
    assert_eq!(count, 0);
    assert_eq!(rig.engine.flow_count(), n as usize);
}
