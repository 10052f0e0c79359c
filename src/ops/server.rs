//! The operations thread: the control socket, the metrics endpoint and SIGHUP, served next to (not on)
//! the run loop.
//!
//! Owns: the thread's `poll(2)` loop over its door (the run loop rang), the SIGHUP pipe and both
//! servers' descriptors; reading the configuration on SIGHUP (the loader runs here, so a slow or
//! odd file never holds packets up) and logging what the run loop applied; routing the run loop's
//! replies to the client that asked; turning event recording on and off as subscribers come and go.
//! The servers ask the run loop for rows and counters through [`Backend`] (in `link.rs`). Must not: touch
//! the engine (only the run loop does, through [`super::link::Link`]) or block anywhere but in `poll`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::SystemTime;

use super::control::ControlServer;
use super::link::{Backend, Bell, Door, Job, Reply, Server};
use super::metrics::MetricsServer;
use super::pollfd;
use super::reload::Reload;
use super::view::Counters;

/// The thread's state, built by [`super::Ops::start`].
pub struct OpsThread {
    pub control: Option<ControlServer>,
    pub metrics: Option<MetricsServer>,
    pub reload: Option<Reload>,
    pub jobs: Sender<Job>,
    pub loop_bell: Bell,
    pub replies: Receiver<Reply>,
    pub door: Door,
    pub stop: Arc<AtomicBool>,
    pub events_in_flight: Arc<AtomicUsize>,
    pub start_unix: f64,
    /// Recording as last asked of the run loop, and that request's number.
    pub events_on: bool,
    pub events_seq: u64,
}

impl OpsThread {
    /// Serves until the run loop's [`super::link::Link`] is dropped; the servers (and the control
    /// socket file) go with the thread.
    pub fn run(mut self) {
        let mut backend = Backend::new(self.jobs.clone(), self.loop_bell.clone());
        let mut fds = Vec::with_capacity(16);
        loop {
            fds.clear();
            fds.push(pollfd(self.door.fd(), libc::POLLIN));
            let nr = match &self.reload {
                Some(r) => {
                    fds.push(pollfd(r.fd(), libc::POLLIN));
                    1
                }
                None => 0,
            };
            let nc = self.control.as_ref().map_or(0, |c| c.register(&mut fds));
            self.metrics.as_ref().map(|m| m.register(&mut fds));
            let deadline = [
                self.control.as_ref().and_then(ControlServer::deadline),
                self.metrics.as_ref().and_then(MetricsServer::deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = deadline.map_or(-1, |d| {
                let ms = d.saturating_duration_since(std::time::Instant::now()).as_millis() + 1;
                i32::try_from(ms).unwrap_or(i32::MAX)
            });
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(target: "ftpnat::ops", error = %std::io::Error::last_os_error(),
                    "operations thread: poll failed; control socket and metrics stop");
                return;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if fds[0].revents != 0 {
                self.door.clear();
            }
            let (rfds, rest) = fds[1..].split_at(nr);
            let (cfds, mfds) = rest.split_at(nc.min(rest.len()));
            if rc > 0 {
                if let Some(c) = &mut self.control {
                    c.handle(cfds, &mut backend);
                }
                if let Some(m) = &mut self.metrics {
                    m.handle(mfds, &mut backend);
                }
                if let Some(r) = &mut self.reload {
                    if rfds.first().is_some_and(|f| f.revents != 0) {
                        if let Some(new) = r.load() {
                            backend.submit(Job::Reload(Box::new(new)));
                        }
                    }
                }
            }
            while let Ok(reply) = self.replies.try_recv() {
                self.dispatch(reply);
            }
            let now = std::time::Instant::now();
            if let Some(c) = &mut self.control {
                c.pump(&mut backend);
                c.expire(now);
                let want = c.subscribers() > 0;
                if want != self.events_on {
                    self.events_seq += 1;
                    backend.submit(Job::Events { on: want, seq: self.events_seq });
                    self.events_on = want;
                    if !want {
                        c.set_recording(false);
                    }
                }
            }
            if let Some(m) = &mut self.metrics {
                m.expire(now);
            }
            backend.ring();
        }
    }

    fn dispatch(&mut self, reply: Reply) {
        match reply {
            Reply::Flows { tag, rows, next } => {
                if let Some(c) = &mut self.control {
                    c.on_rows(tag.client, &rows, next);
                }
            }
            Reply::Pinholes { tag, rows, next } => {
                if let Some(c) = &mut self.control {
                    c.on_rows(tag.client, &rows, next);
                }
            }
            Reply::Mapping { tag, value } => {
                if let (Server::Control, Some(c)) = (tag.server, &mut self.control) {
                    c.on_value(tag.client, &value);
                }
            }
            Reply::Counters { tag, mut counters } => {
                self.ops_counters(&mut counters);
                match (tag.server, &mut self.control, &mut self.metrics) {
                    (Server::Control, Some(c), _) => c.on_counters(tag.client, &counters),
                    (Server::Metrics, _, Some(m)) => m.on_counters(tag.client, &counters, self.start_unix),
                    _ => {}
                }
            }
            Reply::Events(events) => {
                self.events_in_flight.fetch_sub(events.len(), Ordering::AcqRel);
                let ts =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                if let Some(c) = &mut self.control {
                    c.publish(&events, ts);
                }
            }
            Reply::Recording { on, seq } => {
                // Only the answer to the latest switch counts: an older one may be undone already.
                if on && seq == self.events_seq {
                    if let Some(c) = &mut self.control {
                        c.set_recording(true);
                    }
                }
            }
            Reply::Reloaded { applied, not_applied } => {
                for what in &applied {
                    tracing::info!(target: "ftpnat::ops", change = %what, "reload: applied");
                }
                for what in &not_applied {
                    tracing::warn!(target: "ftpnat::ops", change = %what, "reload: not applied");
                }
                tracing::info!(target: "ftpnat::ops", applied = applied.len(), not_applied = not_applied.len(),
                    "configuration reloaded");
            }
        }
    }

    /// Adds this thread's own counters (clients cut off) to a snapshot.
    fn ops_counters(&self, c: &mut Counters) {
        if let Some(s) = &self.control {
            s.counters(&mut c.extra);
        }
        if let Some(m) = &self.metrics {
            m.counters(&mut c.extra);
        }
    }
}
