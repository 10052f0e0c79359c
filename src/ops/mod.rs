//! Operating a running gateway: the control socket, the metrics endpoint, the capture file, SIGHUP
//! reload, and the configuration file.
//!
//! Owns: [`Ops`], the bundle `main.rs` (or a test) fills and hands to the run loop, which starts it
//! ([`Ops::start`]): the servers then live on their own thread ([`server`]: control socket, metrics,
//! SIGHUP), the capture file is written by its own thread ([`capture`]), and the run loop keeps a
//! [`link::Link`], the only operations code that touches the engine, bounded per turn (with
//! `--workers N`, [`Ops::start_workers`]: one thread, a link per worker's loop, their answers summed
//! and merged on the thread). The pieces:
//! [`control`] (Unix socket server), [`client`] (`ftpnat show`/`ftpnat events`), [`view`] (the data
//! model: rows, counters, JSON), [`metrics`] (Prometheus exposition over HTTP), [`capture`] (pcapng
//! writer with rotation), [`config_file`] (TOML with key/line errors, read safely) and [`reload`]
//! (SIGHUP). Must not: decide anything about packets, or make the run loop wait: no socket, file or
//! formatting work happens on it, and what it does for operations per turn is bounded by
//! [`link::TURN_BUDGET`] whatever the table size or the clients do.

pub mod capture;
pub mod client;
pub mod config_file;
pub mod control;
pub mod link;
pub mod loop_stats;
pub mod metrics;
pub mod natlog;
pub mod peer;
pub mod reload;
pub mod server;
pub mod view;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

use crate::engine::Engine;
use crate::flow::Side;
use crate::io::handoff::HandoffStats;
use crate::time::Instant;

use capture::Capture;
use control::ControlServer;
use link::{Link, LinkParts};
use loop_stats::{DeviceStats, LoopTimes};
use metrics::MetricsServer;
pub use reload::{Loader, Reload, Reloaded};

pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// What the operations work may see of the loop during a turn.
pub struct LoopState<'a> {
    pub engine: &'a mut Engine,
    /// The engine's clock (the run loop's monotonic clock).
    pub now: Instant,
    /// Per-device counters, LAN then WAN.
    pub devices: [DeviceStats; 2],
    /// How long the loop's turns took so far.
    pub times: &'a LoopTimes,
    /// This loop's worker and its handoff counters, when there are several.
    pub worker: Option<(u16, HandoffStats)>,
}

impl LoopState<'_> {
    /// Device counters under dotted names (`device.lan.rx_packets`, ...), for `show stats` and the
    /// metrics.
    pub fn extra_counters(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (side, s) in [Side::Inside, Side::Outside].iter().zip(&self.devices) {
            for (k, v) in [
                ("rx_packets", s.rx_packets),
                ("rx_bytes", s.rx_bytes),
                ("tx_packets", s.tx_packets),
                ("tx_bytes", s.tx_bytes),
                ("tx_errors", s.tx_errors),
                ("rx_errors", s.rx_errors),
                ("rx_aggregates", s.rx_aggregates),
            ] {
                out.push((format!("device.{}.{k}", side.name()), v));
            }
        }
        if let Some((w, stats)) = self.worker {
            out.extend(stats.counters().iter().map(|(k, v)| (k.to_string(), *v)));
            // Per worker, so an operator sees how the load spreads.
            let rx = self.devices.iter().map(|d| d.rx_packets).sum::<u64>();
            out.push((format!("workers.{w}.rx_packets"), rx));
            out.push((format!("workers.{w}.flows_active"), self.engine.flow_count() as u64));
        }
        out
    }
}

/// Everything the run loop serves besides its devices. Each part is optional.
#[derive(Debug, Default)]
pub struct Ops {
    pub control: Option<ControlServer>,
    pub metrics: Option<MetricsServer>,
    pub capture: Option<Capture>,
    pub reload: Option<Reload>,
    /// Counters kept by other parts of the process (the log's rate limit and writer queue), shown by
    /// `show stats` and the metrics under these dotted names.
    pub shared: Vec<(&'static str, Arc<AtomicU64>)>,
    start_unix: f64,
}

impl Ops {
    pub fn new() -> Ops {
        let start_unix =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Ops { start_unix, ..Ops::default() }
    }

    /// Starts the operations thread (when there is a server or a reload to serve) and returns the run
    /// loop's end of it. The thread stops when the [`Link`] is dropped.
    pub fn start(self) -> io::Result<Link> {
        let mut links = self.start_workers(crate::steer::Steering::single())?;
        Ok(links.remove(0))
    }

    /// [`Ops::start`] for `workers` run loops side by side (`--workers N`): one operations thread,
    /// one [`Link`] per loop (in worker order). The thread asks every loop for counters, pinholes
    /// and events and merges their answers (sums, one listing in port order), and a flow listing
    /// goes from one worker's table to the next ([`view::WORKER_SHIFT`]). It stops when the last
    /// link is dropped. `steering` (the gateway's rule) routes `show mapping` to the worker holding
    /// an inside host or a public port.
    pub fn start_workers(self, steering: crate::steer::Steering) -> io::Result<Vec<Link>> {
        let n = steering.workers().max(1);
        let (replies, from_loop) = mpsc::channel();
        let (ops_bell, ops_door) = link::doorbell()?;
        let stop = Arc::new(AtomicBool::new(false));
        let events_in_flight = Arc::new(AtomicUsize::new(0));
        let mut loops = Vec::with_capacity(usize::from(n));
        let mut ends = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let (to_loop, jobs) = mpsc::channel();
            let (loop_bell, loop_door) = link::doorbell()?;
            loops.push((to_loop, loop_bell));
            ends.push((jobs, loop_door));
        }
        let serves = self.control.is_some() || self.metrics.is_some() || self.reload.is_some();
        let thread = if serves {
            let t = server::OpsThread {
                control: self.control,
                metrics: self.metrics,
                reload: self.reload,
                loops,
                steering,
                replies: from_loop,
                door: ops_door,
                stop: Arc::clone(&stop),
                events_in_flight: Arc::clone(&events_in_flight),
                start_unix: self.start_unix,
                events_on: false,
                events_seq: 0,
            };
            Some(std::thread::Builder::new().name("ftpnat-ops".into()).spawn(move || t.run())?)
        } else {
            None
        };
        let handles: Vec<Option<Capture>> =
            (0..n).map(|_| self.capture.as_ref().map(Capture::handle)).collect();
        let guard = Arc::new(link::Guard::new(stop, ops_bell.clone(), thread, self.capture));
        let mut shared = Some(self.shared);
        Ok(ends
            .into_iter()
            .zip(handles)
            .enumerate()
            .map(|(i, ((jobs, door), capture))| {
                Link::new(LinkParts {
                    jobs,
                    door,
                    replies: replies.clone(),
                    bell: ops_bell.clone(),
                    events_in_flight: Arc::clone(&events_in_flight),
                    capture,
                    // Process-wide counters: reported by one loop, or the sum would count them N times.
                    shared: shared.take().unwrap_or_default(),
                    shard: (n > 1).then_some((i as u16, n)),
                    guard: Arc::clone(&guard),
                })
            })
            .collect())
    }

    /// Records a TCP aggregate the loop wrote whole to the device on `side` (its checksum completed in
    /// the recorded copy: [`Capture::write_aggregate`]).
    #[inline]
    pub fn captured_aggregate(&mut self, side: Side, pkt: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.write_aggregate(side, SystemTime::now(), pkt);
        }
    }
}
