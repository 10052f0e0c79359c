//! Operating a running gateway: the control socket, the metrics endpoint, the capture file, SIGHUP
//! reload, and the configuration file.
//!
//! Owns: [`Ops`], the bundle `main.rs` (or a test) fills and hands to the run loop, which starts it
//! ([`Ops::start`]): the servers then live on their own thread ([`server`]: control socket, metrics,
//! SIGHUP), the capture file is written by its own thread ([`capture`]), and the run loop keeps a
//! [`link::Link`], the only operations code that touches the engine, bounded per turn. The pieces:
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
        let (to_loop, jobs) = mpsc::channel();
        let (replies, from_loop) = mpsc::channel();
        let (loop_bell, loop_door) = link::doorbell()?;
        let (ops_bell, ops_door) = link::doorbell()?;
        let stop = Arc::new(AtomicBool::new(false));
        let events_in_flight = Arc::new(AtomicUsize::new(0));
        let serves = self.control.is_some() || self.metrics.is_some() || self.reload.is_some();
        let thread = if serves {
            let t = server::OpsThread {
                control: self.control,
                metrics: self.metrics,
                reload: self.reload,
                jobs: to_loop,
                loop_bell,
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
        Ok(Link::new(LinkParts {
            jobs,
            door: loop_door,
            replies,
            bell: ops_bell,
            events_in_flight,
            capture: self.capture,
            shared: self.shared,
            stop,
            thread,
        }))
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
