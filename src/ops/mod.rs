//! Operating a running gateway: the control socket, the metrics endpoint, the capture file, SIGHUP
//! reload, and the configuration file.
//!
//! Owns: [`Ops`], the bundle the run loop polls next to its devices (every server here is non-blocking
//! and served from the loop thread, so nothing else ever touches the engine), and the pieces it is
//! made of: [`control`] (Unix socket server), [`client`] (`ftpnat show`/`ftpnat events`), [`view`] (the
//! JSON data model), [`metrics`] (Prometheus exposition over HTTP), [`capture`] (pcapng writer with
//! rotation), [`config_file`] (TOML with key/line errors) and [`reload`] (SIGHUP). Must not: decide
//! anything about packets, or block the loop: each request is answered from what the engine holds at
//! that moment, and output that a client does not read at once is queued and written as it drains.

pub mod capture;
pub mod client;
pub mod config_file;
pub mod control;
pub mod metrics;
pub mod peer;
pub mod reload;
pub mod view;

use std::os::fd::RawFd;
use std::time::SystemTime;

use crate::engine::Engine;
use crate::flow::Side;
use crate::io::runtime::DeviceStats;
use crate::time::Instant;

use capture::Capture;
use control::ControlServer;
use metrics::MetricsServer;
pub use reload::{Loader, Reload, Reloaded};

pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// What the servers may see of the loop while they handle a wakeup.
pub struct LoopState<'a> {
    pub engine: &'a mut Engine,
    /// The engine's clock (the run loop's monotonic clock).
    pub now: Instant,
    /// Per-device counters, LAN then WAN.
    pub devices: [DeviceStats; 2],
    /// Process start, seconds since the Unix epoch.
    pub start_unix: f64,
}

impl LoopState<'_> {
    /// Device counters and uptime under dotted names (`device.lan.rx_packets`, ...), for `show stats`
    /// and the metrics.
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
    /// How many descriptors each part appended at the last [`Ops::register`].
    counts: [usize; 3],
    start_unix: f64,
    events_on: bool,
}

impl Ops {
    pub fn new() -> Ops {
        let start_unix =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Ops { start_unix, ..Ops::default() }
    }

    /// Appends the descriptors to poll; [`Ops::handle`] takes the same slice back after `poll(2)`.
    pub fn register(&mut self, fds: &mut Vec<libc::pollfd>) {
        let mut n = [0usize; 3];
        if let Some(r) = &self.reload {
            fds.push(pollfd(r.fd(), libc::POLLIN));
            n[0] = 1;
        }
        if let Some(c) = &self.control {
            n[1] = c.register(fds);
        }
        if let Some(m) = &self.metrics {
            n[2] = m.register(fds);
        }
        self.counts = n;
    }

    /// The earliest time a client must be dropped for not sending its request (for the poll timeout).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        let c = self.control.as_ref().and_then(|c| c.deadline());
        let m = self.metrics.as_ref().and_then(|m| m.deadline());
        c.into_iter().chain(m).min()
    }

    /// Serves what `fds` reports ready, then passes the engine's new events to subscribers and pushes
    /// captured packets to the file. Called once per wakeup, after the devices were served.
    pub fn handle(&mut self, fds: &[libc::pollfd], mut st: LoopState<'_>) {
        st.start_unix = self.start_unix;
        let (a, rest) = fds.split_at(self.counts[0].min(fds.len()));
        let (b, c) = rest.split_at(self.counts[1].min(rest.len()));
        if let Some(r) = &mut self.reload {
            if a.first().is_some_and(|f| f.revents != 0) {
                r.fire(st.engine);
            }
        }
        let wall = std::time::Instant::now();
        if let Some(s) = &mut self.control {
            s.expire(wall);
            s.handle(b, &mut st);
        }
        if let Some(m) = &mut self.metrics {
            m.expire(wall);
            m.handle(c, &mut st);
        }
        self.pump_events(st.engine);
        if let Some(cap) = &mut self.capture {
            cap.flush();
        }
    }

    /// Hands the engine's queued events to subscribers, and turns recording on or off as subscribers
    /// come and go (off costs the engine nothing).
    fn pump_events(&mut self, engine: &mut Engine) {
        let Some(ctl) = &mut self.control else { return };
        let want = ctl.subscribers() > 0;
        if want != self.events_on {
            engine.set_events(want);
            self.events_on = want;
        }
        if !want {
            return;
        }
        let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        while let Some(e) = engine.poll_event() {
            ctl.publish(&e, ts);
        }
    }

    /// Records a packet the loop wrote to the device on `side`.
    #[inline]
    pub fn captured(&mut self, side: Side, pkt: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.write(side, SystemTime::now(), pkt);
        }
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
