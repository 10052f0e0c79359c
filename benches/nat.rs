//! The allocator's costs (issue 16): new-mapping cost with port blocks and without, memory per inside
//! host at 100,000 hosts, and log records per second with block logging against per-session logging
//! for the same simulated traffic, plus what the exporters' encoders sustain.
//!
//! Owns: timing and counting only. Must not: send traffic (the encoder figures encode into memory).
//!
//! Run: `cargo bench --bench nat` prints the memory and log-volume figures first (measured with a
//! counting allocator and simulated time, so they are exact, not timed), then divan's timing rows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use divan::{black_box, Bencher};
use ftpnat::flow::{Endpoint, Proto};
use ftpnat::nat::{
    Allocation, BlockPolicy, InsideEndpoint, LogPolicy, MappingRef, Nat, PortRange, Record, Setup,
};
use ftpnat::ops::natlog::{ipfix, syslog};
use ftpnat::time::Instant;

/// The system allocator, counting bytes live.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const HOSTS: u32 = 100_000;

fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 + i) // 100.64.0.0/10
}

fn setup(allocation: Allocation, addrs: u32) -> Setup {
    Setup {
        pool: (0..addrs).map(|i| Ipv4Addr::from(0xc633_0000 + i)).collect(), // 198.51.0.0/16
        range: PortRange::new(1024, 65535).unwrap(),
        slice: None,
        allocation,
        inside: vec!["100.64.0.0/15".parse().unwrap()],
        host_quota: usize::MAX,
    }
}

fn blocks(size: u16) -> Allocation {
    Allocation::Blocks(BlockPolicy { size, per_host: 8, hold: Duration::from_secs(120) })
}

/// The modes compared: name, allocation, pool size (enough for 100 k hosts in block mode: 252 blocks
/// of 256 ports per address, so 400 addresses).
fn modes() -> [(&'static str, Allocation, u32); 3] {
    [
        ("dynamic", Allocation::Dynamic, 400),
        ("blocks of 256", blocks(256), 400),
        ("deterministic", Allocation::Deterministic { size: None }, 400),
    ]
}

/// A Nat with `HOSTS` hosts holding one TCP mapping each.
fn populated(allocation: Allocation, addrs: u32) -> (Nat, Vec<MappingRef>) {
    let mut nat = Nat::with_setup(&setup(allocation, addrs));
    let tokens = (0..HOSTS)
        .map(|i| nat.map(Proto::Tcp, InsideEndpoint::new(host(i), 40000), None, Instant::ZERO).unwrap().token)
        .collect();
    (nat, tokens)
}

fn memory_figures() {
    println!("memory for {HOSTS} inside hosts, one TCP mapping each (counting allocator, live bytes):");
    let mut totals = Vec::new();
    for (name, alloc, addrs) in modes() {
        let before = LIVE.load(Ordering::Relaxed);
        let (mut nat, tokens) = populated(alloc, addrs);
        let tokens_bytes = (tokens.capacity() * std::mem::size_of::<MappingRef>()) as isize;
        let total = (LIVE.load(Ordering::Relaxed) - before - tokens_bytes) as f64;
        let g = nat.gauges();
        let sets = g.addresses_in_use as f64 * 3.0 * 8192.0;
        println!(
            "  {name:<14} {:>6.1} MB: {:>4.0} B per host ({:>3.0} B/host of it the port sets of the {} addresses \
             in use, 3 x 8 KB each); blocks in use {}",
            total / 1e6,
            total / f64::from(HOSTS),
            sets / f64::from(HOSTS),
            g.addresses_in_use,
            g.blocks_in_use
        );
        totals.push(total);
        for t in tokens {
            nat.unmap(t, Instant::ZERO);
        }
    }
    println!(
        "  block bookkeeping (blocks minus dynamic, same hosts and mappings): {:.0} B per host",
        (totals[1] - totals[0]) / f64::from(HOSTS)
    );
}

/// Simulated subscribers: `hosts` hosts, each opening a connection every `every` seconds (staggered)
/// that lasts `lasts` seconds, for `secs` seconds. Returns (records, block records, session records).
fn simulate(
    alloc: Allocation,
    sessions: bool,
    hosts: u32,
    every: u64,
    lasts: u64,
    secs: u64,
) -> (u64, u64, u64) {
    let mut nat = Nat::with_setup(&setup(alloc, 64));
    nat.log_mut().set_policy(LogPolicy { enabled: true, sessions });
    let mut live: std::collections::VecDeque<(u64, MappingRef)> = Default::default();
    let (mut blocks, mut sess) = (0u64, 0u64);
    let mut port = 0u16;
    for t in 0..secs {
        let now = Instant::from_secs(t);
        while live.front().is_some_and(|(end, _)| *end <= t) {
            let (_, tok) = live.pop_front().unwrap();
            let (inside, public) = (tok.inside(), nat.public_of(Proto::Tcp, tok.inside()).unwrap());
            nat.unmap(tok, now);
            let remote = Endpoint::new(Ipv4Addr::new(203, 0, 113, 1), 443);
            nat.log_mut().push_session(|| Record::SessionDeleted {
                at: now,
                since: now,
                proto: Proto::Tcp,
                inside,
                inside6: None,
                public,
                remote,
            });
        }
        for h in (0..hosts).filter(|h| (t + u64::from(*h)) % every == 0) {
            port = port.wrapping_add(1).max(1024);
            let inside = InsideEndpoint::new(host(h), port);
            if let Ok(m) = nat.map(Proto::Tcp, inside, None, now) {
                let remote = Endpoint::new(Ipv4Addr::new(203, 0, 113, 1), 443);
                let public = m.public;
                nat.log_mut().push_session(|| Record::SessionCreated {
                    at: now,
                    proto: Proto::Tcp,
                    inside,
                    inside6: None,
                    public,
                    remote,
                });
                live.push_back((t + lasts, m.token));
            }
        }
        nat.handle_timeout(now);
        while let Some(r) = nat.log_mut().pop() {
            match r {
                Record::BlockAllocated { .. } | Record::BlockReleased { .. } => blocks += 1,
                Record::SessionCreated { .. } | Record::SessionDeleted { .. } => sess += 1,
                _ => {}
            }
        }
    }
    for (_, t) in live {
        nat.unmap(t, Instant::from_secs(secs));
    }
    (blocks + sess, blocks, sess)
}

fn log_volume_figures() {
    let (hosts, every, lasts, secs) = (10_000u32, 10u64, 30u64, 1800u64);
    println!(
        "log records for the same traffic: {hosts} hosts, a new 30-s connection every {every} s each \
         ({} connections/s), {} simulated minutes:",
        hosts as u64 / every,
        secs / 60
    );
    for (name, alloc, sessions) in [
        ("per-session logging (dynamic)", Allocation::Dynamic, true),
        ("block logging (256-port blocks)", blocks(256), false),
        ("blocks + per-session", blocks(256), true),
    ] {
        let (all, b, s) = simulate(alloc, sessions, hosts, every, lasts, secs);
        println!(
            "  {name:<32} {:>9.1} records/s ({b} block, {s} session records in {secs} s)",
            all as f64 / secs as f64
        );
    }
}

fn encoder_figures() {
    let recs: Vec<Record> = (0..100_000u32)
        .map(|i| Record::BlockAllocated {
            at: Instant::from_millis(u64::from(i)),
            inside: host(i),
            inside6: None,
            public: Ipv4Addr::new(198, 51, 100, 1),
            ports: PortRange::new(1024, 1279).unwrap(),
        })
        .collect();
    let ms = |i: Instant| 1_800_000_000_000 + i.as_micros() / 1000;
    let t = std::time::Instant::now();
    let mut enc = ipfix::Encoder::new(1, 1400);
    let encoded: Vec<(u16, Vec<u8>)> = recs.iter().map(|r| ipfix::encode_record(r, &ms)).collect();
    let msgs = enc.data(&encoded, 0);
    let ipfix_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let origin = syslog::Origin { facility: syslog::LOCAL0, hostname: "gw".into(), pid: 1 };
    let bytes: usize = recs.iter().map(|r| syslog::format(r, &origin, &ms).len()).sum();
    let syslog_s = t.elapsed().as_secs_f64();
    println!(
        "encoders (one core, into memory): IPFIX {:.2} M records/s ({} messages of <= 1400 B), syslog {:.2} M \
         messages/s ({} B each on average)",
        recs.len() as f64 / ipfix_s / 1e6,
        black_box(msgs).len(),
        recs.len() as f64 / syslog_s / 1e6,
        bytes / recs.len()
    );
}

fn main() {
    memory_figures();
    log_volume_figures();
    encoder_figures();
    divan::main();
}

/// A new mapping for a new inside endpoint of one of 100 k hosts that already hold one (the usual new
/// flow), then its release: what a new flow costs the allocator in each mode.
#[divan::bench(args = ["dynamic", "blocks of 256", "deterministic"])]
fn new_mapping(b: Bencher, mode: &str) {
    let (_, alloc, addrs) = modes().into_iter().find(|m| m.0 == mode).unwrap();
    let (mut nat, tokens) = populated(alloc, addrs);
    let mut i = 0u32;
    b.bench_local(|| {
        i = (i + 7919) % HOSTS;
        let m = nat.map(Proto::Tcp, InsideEndpoint::new(host(i), 50000), None, Instant::ZERO).unwrap();
        nat.unmap(black_box(m.token), Instant::ZERO);
    });
    for t in tokens {
        nat.unmap(t, Instant::ZERO);
    }
}

/// The first mapping of a host that holds nothing: in block mode this allocates (and logs) a block.
#[divan::bench(args = ["dynamic", "blocks of 256", "deterministic"])]
fn first_mapping_of_a_host(b: Bencher, mode: &str) {
    let (_, alloc, addrs) = modes().into_iter().find(|m| m.0 == mode).unwrap();
    let mut nat = Nat::with_setup(&setup(alloc, addrs));
    nat.log_mut().set_policy(LogPolicy { enabled: true, sessions: false });
    let mut i = 0u32;
    let mut t = 0u64;
    b.bench_local(|| {
        i = (i + 7919) % HOSTS;
        t += 1;
        let now = Instant::from_millis(t);
        let m = nat.map(Proto::Tcp, InsideEndpoint::new(host(i), 50000), None, now).unwrap();
        nat.unmap(black_box(m.token), now);
        // Let the block go at once (as after its hold-down) so the next host finds one free.
        nat.handle_timeout(now + Duration::from_secs(121));
        while nat.log_mut().pop().is_some() {}
    });
}
