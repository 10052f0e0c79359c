//! Memory per tracked flow: creates N UDP flows through the engine and reports the heap bytes the
//! engine holds (a counting global allocator) and the process RSS growth (/proc/self/statm), per flow.
//!
//! Owns: nothing the crate uses. Must not: send traffic (packets only go through the in-memory engine).
//!
//! Run: `cargo run --release --example flow_memory -- [FLOWS]` (default 1 000 000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

use ftpnat_testkit::scenario::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now.max(0) as usize, Relaxed);
}

// SAFETY: forwards every call unchanged to the system allocator; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        grew(n as isize - l.size() as isize);
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        grew(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn main() {
    let n: u32 = std::env::args().nth(1).map_or(1_000_000, |s| s.parse().expect("FLOWS is a number"));
    // Measured from before the engine exists: the table's index is allocated for `--max-flows` at
    // start, so it belongs to the cost of the flows the table is sized for.
    let (heap0, rss0) = (LIVE.load(Relaxed), rss_bytes());
    PEAK.store(heap0.max(0) as usize, Relaxed);
    let mut config = config();
    config.max_flows = (n as usize).max(1);
    let mut rig = Rig::new(config);
    let made = fill_udp_flows(&mut rig, n);
    assert_eq!(made, n, "every flow was created");
    assert_eq!(rig.engine.flow_count(), n as usize);
    let (heap1, rss1, peak) = (LIVE.load(Relaxed), rss_bytes(), PEAK.load(Relaxed));
    let per = |b: f64| b / n as f64;
    println!("flows: {n}");
    println!("heap held by the engine: {:.1} B/flow ({} bytes)", per((heap1 - heap0) as f64), heap1 - heap0);
    println!("heap peak while growing: {:.1} B/flow", per(peak as f64 - heap0 as f64));
    println!("RSS growth:              {:.1} B/flow ({} bytes)", per(rss1 as f64 - rss0 as f64), rss1 - rss0);
    println!("nat mappings: {}", rig.engine.nat().mapping_count());
    println!(
        "size_of: Conn {} B, Option<Conn> {} B, FlowKey {} B",
        std::mem::size_of::<ftpnat::conntrack::Conn>(),
        std::mem::size_of::<Option<ftpnat::conntrack::Conn>>(),
        std::mem::size_of::<ftpnat::flow::FlowKey>()
    );
}
