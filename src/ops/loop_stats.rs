//! What the run loop tells the operations work about itself: per-device I/O counters and how long its
//! turns take.
//!
//! Owns: [`DeviceStats`], [`LoopTimes`] and their [`Histogram`] buckets ([`TURN_BUCKETS_NS`]): plain
//! data the loop (`io::runtime`) fills and hands over in [`super::LoopState`] each turn, and `show
//! stats` and the metrics endpoint read. Must not: measure anything itself or know about devices; the
//! loop imports this module, never the reverse, so `ops` needs nothing from `io`.

/// Per-device I/O counters, kept by the loop (the engine counts what it decided, this counts what the
/// devices did with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Writes the kernel refused (ENOBUFS, EIO on a downed device, ...) or cut short.
    pub tx_errors: u64,
    /// Reads the backend could not frame into packets (offload only), dropped.
    pub rx_errors: u64,
    /// Reads that yielded more than one packet: segmentation-offload aggregates split on arrival.
    pub rx_aggregates: u64,
}

/// Upper bounds of the turn-duration histogram buckets in nanoseconds, 10 µs to 1 s; a last bucket
/// takes everything above.
pub const TURN_BUCKETS_NS: [u64; 14] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];

/// Durations counted in [`TURN_BUCKETS_NS`] buckets (not cumulative), with their sum and maximum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; TURN_BUCKETS_NS.len() + 1],
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
}

impl Histogram {
    pub fn record(&mut self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = TURN_BUCKETS_NS.iter().position(|&b| ns <= b).unwrap_or(TURN_BUCKETS_NS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }
}

/// How long the run loop's turns take: the whole turn (from `poll(2)` returning to the next call:
/// reading, the engine, writing, timers and operations work) and the operations work within it, in
/// wall time; and, for the turns that had an operations job, the thread's CPU time for that work
/// (the wall time less any time the scheduler gave the CPU to someone else: on a busy machine the two
/// differ, and only the latter is the work's own cost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopTimes {
    pub turn: Histogram,
    pub ops: Histogram,
    pub ops_cpu: Histogram,
}
