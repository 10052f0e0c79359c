//! The run loop's side of the operations thread: the only place operations work touches the engine.
//!
//! Owns: the job and reply vocabulary between the two threads ([`Job`], [`Reply`]), the doorbells that
//! wake each thread when the other left it something ([`doorbell`]), the servers' end ([`Backend`]:
//! jobs in, one ring per batch), and [`Link`]: what the run loop
//! calls once per turn to do the operations work it owes, within [`TURN_BUDGET`]: listing slices
//! (copying rows of flows or pinholes), counter snapshots, switching event recording, handing events
//! over, applying a reloaded configuration, and handing captured packets to the capture writer. Must
//! not: do socket or file I/O of its own (the operations thread and the capture writer do), format
//! anything, or keep more than one turn's budget of work going: a listing that does not fit is
//! resumed in the next turn.
//!
//! Why the budget holds whatever the table size or the clients do: a listing is taken as bounded
//! slices asked for one at a time, and the next slice is only asked for once the client has read the
//! previous one (see `control.rs`); counters are a copy of a few hundred integers; events cross in
//! batches of at most [`EVENT_BATCH`] and only while fewer than [`EVENTS_IN_FLIGHT`] wait on the other
//! side. A client that reads nothing therefore costs the loop nothing more.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::capture::Capture;
use super::reload::{self, Reloaded};
use super::view::{self, Counters, Filter, FlowRow, PinholeRow};
use super::LoopState;
use crate::events::Event;
use crate::flow::Side;

/// The most operations work one run-loop turn does before it returns to its packets. Work left over
/// (a listing slice) continues in the next turn, which then does not sleep in `poll(2)`.
pub const TURN_BUDGET: Duration = Duration::from_micros(250);
/// Events handed over per turn at most.
pub const EVENT_BATCH: usize = 512;
/// Events handed over and not yet taken by the operations thread, at most; beyond it they wait in the
/// engine's own bounded queue (which drops the oldest, counted in `events.dropped`).
pub const EVENTS_IN_FLIGHT: usize = 8192;

/// Which server a reply goes back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Control,
    Metrics,
}

/// A client of one of the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub server: Server,
    pub client: u64,
}

/// What the operations thread asks of the run loop.
#[derive(Debug)]
pub enum Job {
    /// Up to `max_rows` rows of flows passing `filter`, from cursor `from` on.
    Flows { tag: Tag, filter: Filter, from: u32, max_rows: usize },
    /// The same for pinholes (the cursor is a public port).
    Pinholes { tag: Tag, filter: Filter, from: u32, max_rows: usize },
    /// A [`Counters`] snapshot.
    Counters { tag: Tag },
    /// `show mapping` (issue 16).
    Mapping { tag: Tag, target: view::MappingTarget },
    /// Turns event recording on (someone follows `ftpnat events`) or off; acknowledged with
    /// [`Reply::Recording`] carrying the same `seq`.
    Events { on: bool, seq: u64 },
    /// Applies a configuration the operations thread read (SIGHUP).
    Reload(Box<Reloaded>),
}

/// What the run loop sends back.
#[derive(Debug)]
pub enum Reply {
    /// Rows and where to resume (`None`: the listing is complete).
    Flows {
        tag: Tag,
        rows: Vec<FlowRow>,
        next: Option<u32>,
    },
    Pinholes {
        tag: Tag,
        rows: Vec<PinholeRow>,
        next: Option<u32>,
    },
    Counters {
        tag: Tag,
        counters: Box<Counters>,
    },
    /// The answer to [`Job::Mapping`], ready to send.
    Mapping {
        tag: Tag,
        value: serde_json::Value,
    },
    /// Events in the order the engine recorded them.
    Events(Vec<Event>),
    /// Recording is now as [`Job::Events`] `seq` asked: every packet the loop handles from here on
    /// records its events.
    Recording {
        on: bool,
        seq: u64,
    },
    /// What a reload changed and what it could not (for the log).
    Reloaded {
        applied: Vec<String>,
        not_applied: Vec<String>,
    },
}

/// Rings a [`Door`] from any thread. Ringing a door already rung writes nothing.
#[derive(Debug, Clone)]
pub struct Bell {
    tx: Arc<UnixStream>,
    rung: Arc<AtomicBool>,
}

/// The descriptor a thread polls to learn that its [`Bell`] was rung.
#[derive(Debug)]
pub struct Door {
    rx: UnixStream,
    rung: Arc<AtomicBool>,
}

/// A bell and its door (a non-blocking socket pair and a flag, so a busy sender makes one write per
/// wakeup of the receiver, not one per message).
pub fn doorbell() -> io::Result<(Bell, Door)> {
    let (rx, tx) = UnixStream::pair()?;
    rx.set_nonblocking(true)?;
    tx.set_nonblocking(true)?;
    let rung = Arc::new(AtomicBool::new(false));
    Ok((Bell { tx: Arc::new(tx), rung: Arc::clone(&rung) }, Door { rx, rung }))
}

impl Bell {
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // A full socket means the door has wakeups pending already.
            let _ = (&*self.tx).write(&[1]);
        }
    }
}

impl Door {
    pub fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }

    /// Empties the door, then lowers the flag: a message sent after this rings again, and one sent just
    /// before is found by the receive that follows (the receiver reads its channel after this).
    pub fn clear(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.rx).read(&mut sink), Ok(n) if n > 0) {}
        self.rung.store(false, Ordering::Release);
    }
}

/// The run loop as the servers see it: jobs go in, replies come back later (routed by their tag).
#[derive(Debug)]
pub struct Backend {
    jobs: Sender<Job>,
    bell: Bell,
    rung: bool,
}

impl Backend {
    pub fn new(jobs: Sender<Job>, bell: Bell) -> Backend {
        Backend { jobs, bell, rung: false }
    }

    pub fn submit(&mut self, job: Job) {
        // A closed channel means the run loop is gone; the thread is about to be stopped.
        if self.jobs.send(job).is_ok() {
            self.rung = true;
        }
    }

    /// Wakes the run loop once for everything submitted since the last call.
    pub fn ring(&mut self) {
        if std::mem::take(&mut self.rung) {
            self.bell.ring();
        }
    }
}

/// A job the loop has accepted and not finished.
enum Work {
    Flows { tag: Tag, filter: Filter, at: u32, max_rows: usize, rows: Vec<FlowRow> },
    Pinholes { tag: Tag, filter: Filter, at: u32, max_rows: usize, rows: Vec<PinholeRow> },
    Other(Job),
}

/// The run loop's end of the operations thread (plus the capture), made by [`super::Ops::start`].
/// Dropping it stops the operations thread (the control socket file goes with it) and the capture
/// writer, and waits for both.
pub struct Link {
    jobs: Receiver<Job>,
    door: Door,
    replies: Sender<Reply>,
    bell: Bell,
    work: VecDeque<Work>,
    events_on: bool,
    events_in_flight: Arc<AtomicUsize>,
    capture: Option<Capture>,
    shared: Vec<(&'static str, Arc<AtomicU64>)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("work", &self.work.len()).field("events_on", &self.events_on).finish()
    }
}

/// The parts [`Link::new`] is made of (the other ends belong to the operations thread).
pub struct LinkParts {
    pub jobs: Receiver<Job>,
    pub door: Door,
    pub replies: Sender<Reply>,
    pub bell: Bell,
    pub events_in_flight: Arc<AtomicUsize>,
    pub capture: Option<Capture>,
    pub shared: Vec<(&'static str, Arc<AtomicU64>)>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<()>>,
}

impl Link {
    pub fn new(p: LinkParts) -> Link {
        Link {
            jobs: p.jobs,
            door: p.door,
            replies: p.replies,
            bell: p.bell,
            work: VecDeque::new(),
            events_on: false,
            events_in_flight: p.events_in_flight,
            capture: p.capture,
            shared: p.shared,
            stop: p.stop,
            thread: p.thread,
        }
    }

    /// The descriptor the run loop polls (readable when the operations thread sent a job).
    pub fn fd(&self) -> RawFd {
        self.door.fd()
    }

    /// True while a job is unfinished: the loop must come back at once rather than sleep.
    pub fn busy(&self) -> bool {
        !self.work.is_empty()
    }

    /// Records a packet the loop wrote to the device on `side` (a copy into the capture's queue).
    #[inline]
    pub fn captured(&mut self, side: Side, pkt: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.write(side, std::time::SystemTime::now(), pkt);
        }
    }

    /// Like [`Link::captured`], for an offload aggregate written whole (its recorded copy gets its
    /// full TCP checksum, see [`Capture::write_aggregate`]).
    pub fn captured_aggregate(&mut self, side: Side, pkt: &[u8]) {
        if let Some(c) = &mut self.capture {
            c.write_aggregate(side, std::time::SystemTime::now(), pkt);
        }
    }

    /// The capture's counters, for the snapshot.
    fn capture_counters(capture: &Option<Capture>, out: &mut Vec<(String, u64)>) {
        if let Some(c) = capture {
            out.push(("capture.packets".into(), c.packets()));
            out.push(("capture.dropped".into(), c.dropped()));
            out.push(("capture.rotations".into(), c.rotations()));
        }
    }

    /// Does this turn's operations work (see the module header). `door_ready`: the descriptor from
    /// [`Link::fd`] polled readable.
    pub fn handle(&mut self, door_ready: bool, st: LoopState<'_>) {
        if door_ready {
            self.door.clear();
        }
        while let Ok(job) = self.jobs.try_recv() {
            self.work.push_back(match job {
                Job::Flows { tag, filter, from, max_rows } => {
                    Work::Flows { tag, filter, at: from, max_rows, rows: Vec::new() }
                }
                Job::Pinholes { tag, filter, from, max_rows } => {
                    Work::Pinholes { tag, filter, at: from, max_rows, rows: Vec::new() }
                }
                other => Work::Other(other),
            });
        }
        let mut sent = false;
        // The clock is read only in a turn with a job: most turns are packets only.
        let deadline = (!self.work.is_empty()).then(|| std::time::Instant::now() + TURN_BUDGET);
        let over = || deadline.is_none_or(|d| std::time::Instant::now() >= d);
        while let Some(w) = self.work.front_mut() {
            let reply = match w {
                Work::Flows { tag, filter, at, max_rows, rows } => {
                    match view::flows_slice(st.engine, st.now, filter, *at, *max_rows, rows, over) {
                        Some(next) if rows.len() < *max_rows => {
                            *at = next;
                            break;
                        }
                        next => Reply::Flows { tag: *tag, rows: std::mem::take(rows), next },
                    }
                }
                Work::Pinholes { tag, filter, at, max_rows, rows } => {
                    match view::pinholes_slice(st.engine, st.now, filter, *at, *max_rows, rows, over) {
                        Some(next) if rows.len() < *max_rows => {
                            *at = next;
                            break;
                        }
                        next => Reply::Pinholes { tag: *tag, rows: std::mem::take(rows), next },
                    }
                }
                Work::Other(Job::Counters { tag }) => {
                    let mut extra = st.extra_counters();
                    Self::capture_counters(&self.capture, &mut extra);
                    extra.extend(self.shared.iter().map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed))));
                    let counters = Counters::take(st.engine, extra, st.times);
                    Reply::Counters { tag: *tag, counters: Box::new(counters) }
                }
                Work::Other(Job::Mapping { tag, target }) => {
                    Reply::Mapping { tag: *tag, value: view::mapping(st.engine, st.now, *target) }
                }
                Work::Other(Job::Events { on, seq }) => {
                    self.events_on = *on;
                    st.engine.set_events(*on);
                    Reply::Recording { on: *on, seq: *seq }
                }
                Work::Other(Job::Reload(r)) => {
                    let (applied, not_applied) = reload::apply(st.engine, r);
                    Reply::Reloaded { applied, not_applied }
                }
                // Listings are turned into `Work::Flows`/`Work::Pinholes` on arrival.
                Work::Other(Job::Flows { .. } | Job::Pinholes { .. }) => {
                    self.work.pop_front();
                    continue;
                }
            };
            self.work.pop_front();
            sent |= self.replies.send(reply).is_ok();
            if over() {
                break;
            }
        }
        if self.events_on && self.events_in_flight.load(Ordering::Acquire) < EVENTS_IN_FLIGHT {
            let mut batch = Vec::new();
            while batch.len() < EVENT_BATCH {
                match st.engine.poll_event() {
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
            if !batch.is_empty() {
                self.events_in_flight.fetch_add(batch.len(), Ordering::AcqRel);
                sent |= self.replies.send(Reply::Events(batch)).is_ok();
            }
        }
        if let Some(c) = &mut self.capture {
            c.flush();
        }
        if sent {
            self.bell.ring();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the operations thread, which then sees the stop flag.
        self.bell.ring();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The capture writer finishes what it was handed when its handle goes.
        self.capture = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bell_wakes_its_door_once_per_clear() {
        let (bell, door) = doorbell().unwrap();
        let readable = |d: &Door| {
            let mut p = libc::pollfd { fd: d.fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(&door));
        bell.ring();
        bell.ring();
        assert!(readable(&door));
        door.clear();
        assert!(!readable(&door), "two rings, one wakeup");
        bell.clone().ring();
        assert!(readable(&door), "rings again after a clear");
    }
}
