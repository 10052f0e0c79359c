//! The operations thread: the control socket, the metrics endpoint and SIGHUP, served next to (not on)
//! the run loop.
//!
//! Owns: the thread's `poll(2)` loop over its door (the run loop rang), the SIGHUP pipe and both
//! servers' descriptors; reading the configuration on SIGHUP (the loader runs here, so a slow or
//! odd file never holds packets up) and logging what the run loop applied; routing the run loop's
//! replies to the client that asked; turning event recording on and off as subscribers come and go;
//! and [`Backend`], through which the servers ask the run loop for rows and counters (with several
//! workers' loops: every loop, the answers merged here into one, or for a flow listing the loop the
//! cursor names). Must not: touch
//! the engine (only the run loop does, through [`super::link::Link`]) or block anywhere but in `poll`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::SystemTime;

use super::control::ControlServer;
use super::link::{Bell, Door, Job, Reply, Server, Tag};
use super::metrics::MetricsServer;
use super::pollfd;
use super::reload::Reload;
use super::view::{self, Counters, PinholeRow};

/// The run loops as the servers see them: jobs go in, replies come back later (routed by their tag).
/// With several workers, a job goes to every loop (or, for a flow listing, to the one its cursor
/// names) and their replies are merged here before a server sees them.
#[derive(Debug)]
pub struct Backend {
    loops: Vec<(Sender<Job>, Bell, bool)>,
    /// The steering rule, to route `show mapping` to the worker holding the host or the port.
    steering: crate::steer::Steering,
    /// Replies still being gathered from the workers.
    merging: Vec<Merge>,
}

/// A job sent to every worker whose answers are being gathered.
#[derive(Debug)]
enum Merge {
    Counters {
        tag: Tag,
        left: usize,
        acc: Option<Box<Counters>>,
    },
    Pinholes {
        tag: Tag,
        left: usize,
        max_rows: usize,
        rows: Vec<PinholeRow>,
        next: Option<u32>,
    },
    /// Acknowledgements and reload reports: the last to come (they say the same) stands for all.
    Recording {
        seq: u64,
        left: usize,
        last: Option<Reply>,
    },
    Reloaded {
        left: usize,
        last: Option<Reply>,
    },
}

impl Backend {
    pub fn new(loops: Vec<(Sender<Job>, Bell)>, steering: crate::steer::Steering) -> Backend {
        Backend {
            loops: loops.into_iter().map(|(j, b)| (j, b, false)).collect(),
            steering,
            merging: Vec::new(),
        }
    }

    fn workers(&self) -> u16 {
        self.loops.len() as u16
    }

    fn send(&mut self, to: usize, job: Job) {
        // A closed channel means the run loop is gone; the thread is about to be stopped.
        if let Some((jobs, _, rung)) = self.loops.get_mut(to) {
            if jobs.send(job).is_ok() {
                *rung = true;
            }
        }
    }

    pub fn submit(&mut self, job: Job) {
        let n = self.loops.len();
        if n <= 1 {
            return self.send(0, job);
        }
        match job {
            Job::Flows { tag, filter, from, max_rows } => {
                // A cursor past the last worker's tables: the last one answers with nothing.
                let (w, from) = view::split_cursor(from, self.workers())
                    .unwrap_or((self.workers() - 1, (1 << view::WORKER_SHIFT) - 1));
                self.send(usize::from(w), Job::Flows { tag, filter, from, max_rows });
            }
            // `show mapping`: one worker holds an inside host's state (its address's worker) and a
            // public port's (its slice's worker).
            Job::Mapping { tag, target } => {
                let w = match target {
                    view::MappingTarget::Inside(a) => self.steering.host_worker(a),
                    view::MappingTarget::Public(ep) => self.steering.slice_worker(ep.port()),
                };
                self.send(usize::from(w), Job::Mapping { tag, target });
            }
            job => {
                self.merging.push(match &job {
                    Job::Counters { tag } => Merge::Counters { tag: *tag, left: n, acc: None },
                    Job::Pinholes { tag, max_rows, .. } => Merge::Pinholes {
                        tag: *tag,
                        left: n,
                        max_rows: *max_rows,
                        rows: Vec::new(),
                        next: None,
                    },
                    Job::Events { seq, .. } => Merge::Recording { seq: *seq, left: n, last: None },
                    Job::Reload(_) => Merge::Reloaded { left: n, last: None },
                    Job::Flows { .. } | Job::Mapping { .. } => unreachable!("routed above"),
                });
                for i in 0..n {
                    self.send(i, job.clone());
                }
            }
        }
    }

    /// Takes one worker's reply: `Some` when it (or the merge it completes) goes to a server now.
    pub fn merge(&mut self, reply: Reply) -> Option<Reply> {
        if self.loops.len() <= 1 {
            return Some(reply);
        }
        let pos = self.merging.iter().position(|m| match (m, &reply) {
            (Merge::Counters { tag, .. }, Reply::Counters { tag: t, .. }) => tag == t,
            (Merge::Pinholes { tag, .. }, Reply::Pinholes { tag: t, .. }) => tag == t,
            (Merge::Recording { seq, .. }, Reply::Recording { seq: s, .. }) => seq == s,
            (Merge::Reloaded { .. }, Reply::Reloaded { .. }) => true,
            _ => false,
        });
        let Some(pos) = pos else { return Some(reply) };
        let done = match (&mut self.merging[pos], reply) {
            (Merge::Counters { left, acc, .. }, Reply::Counters { counters, .. }) => {
                match acc {
                    Some(a) => a.merge(*counters),
                    None => *acc = Some(counters),
                }
                *left -= 1;
                *left == 0
            }
            (Merge::Pinholes { left, rows: all, next: at, .. }, Reply::Pinholes { rows, next, .. }) => {
                all.extend(rows);
                // A worker that stopped early (its budget) stops the merged slice there too.
                if let Some(n) = next {
                    *at = Some(at.map_or(n, |a: u32| a.min(n)));
                }
                *left -= 1;
                *left == 0
            }
            (Merge::Recording { left, last, .. } | Merge::Reloaded { left, last }, reply) => {
                *last = Some(reply);
                *left -= 1;
                *left == 0
            }
            _ => false,
        };
        if !done {
            return None;
        }
        match self.merging.remove(pos) {
            Merge::Counters { tag, acc, .. } => acc.map(|counters| Reply::Counters { tag, counters }),
            Merge::Pinholes { tag, max_rows, mut rows, next, .. } => {
                rows.sort_by_key(|r| r.public_port);
                if let Some(n) = next {
                    rows.retain(|r| u32::from(r.public_port) < n);
                }
                let next = if rows.len() > max_rows {
                    let cut = u32::from(rows[max_rows].public_port);
                    rows.truncate(max_rows);
                    Some(cut)
                } else {
                    next
                };
                Some(Reply::Pinholes { tag, rows, next })
            }
            Merge::Recording { last, .. } | Merge::Reloaded { last, .. } => last,
        }
    }

    /// Wakes the run loops once for everything submitted since the last call.
    pub fn ring(&mut self) {
        for (_, bell, rung) in &mut self.loops {
            if std::mem::take(rung) {
                bell.ring();
            }
        }
    }
}

/// The thread's state, built by [`super::Ops::start`].
pub struct OpsThread {
    pub control: Option<ControlServer>,
    pub metrics: Option<MetricsServer>,
    pub reload: Option<Reload>,
    /// Per run loop (worker), the channel its jobs go down and the bell that wakes it.
    pub loops: Vec<(Sender<Job>, Bell)>,
    /// The steering rule (routing `show mapping` among workers).
    pub steering: crate::steer::Steering,
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
        let mut backend = Backend::new(self.loops.clone(), self.steering.clone());
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
                if let Some(reply) = backend.merge(reply) {
                    self.dispatch(reply);
                }
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
            Reply::Counters { tag, mut counters } => {
                self.ops_counters(&mut counters);
                match (tag.server, &mut self.control, &mut self.metrics) {
                    (Server::Control, Some(c), _) => c.on_counters(tag.client, &counters),
                    (Server::Metrics, _, Some(m)) => m.on_counters(tag.client, &counters, self.start_unix),
                    _ => {}
                }
            }
            Reply::Mapping { tag, value } => {
                if let (Server::Control, Some(c)) = (tag.server, &mut self.control) {
                    c.on_value(tag.client, &value);
                }
            }
            Reply::Events { worker, events } => {
                self.events_in_flight.fetch_sub(events.len(), Ordering::AcqRel);
                let ts =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                if let Some(c) = &mut self.control {
                    c.publish(&events, ts, worker);
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
