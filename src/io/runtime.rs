//! The run loop: two devices, one engine, the monotonic clock and the stop signal.
//!
//! Owns: `poll(2)` over both device descriptors and a stop pipe, batching reads and writes (each device's
//! output is queued and written as one batch, so a backend with offload can coalesce it), mapping the monotonic
//! clock into [`crate::time::Instant`], writing the engine's output to the right device, per-device I/O
//! counters and rate-limited write-error logs, the shutdown summary, and timing its own turns
//! ([`LoopTimes`]: a histogram of turn durations and of the operations work in each, exported as
//! metrics); doing the operations work it owes once per turn through [`crate::ops::link::Link`] (a
//! bounded slice of a listing, a counter snapshot, events, a reload to apply) and handing it every
//! packet written (capture). As one of several workers (`--workers N`, [`Runtime::with_worker`]) it
//! also polls its handoff doorbell, handling first what other workers handed it, and passes each
//! packet it reads through [`super::handoff::Worker::route`], keeping what its engine owns. Must not:
//! look inside packets (the engine decides everything about them; which engine, the core's steering
//! rule through `handoff`), open devices (`tun.rs`), parse flags (`main.rs`), or serve a request
//! itself (the operations thread does).
//!
//! Call order follows [`crate::engine`]: per packet `handle_packet`, queue a `Forward` for its side, then
//! drain `poll_transmit` into the queues; when `poll_timeout` passes, `handle_timeout` and drain again.
//! Queues are written when they reach [`TX_BATCH`] packets, after each device's read batch, and before
//! the loop sleeps, so no packet waits across a `poll(2)`. Packets keep their order per device. Between wakeups
//! the loop sleeps in `poll(2)` until a device is readable, the stop pipe fires or the engine's next
//! deadline, so an idle gateway uses no CPU.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::engine::{Engine, Verdict};
use crate::flow::Side;
use crate::ops::link::Link;
use crate::ops::loop_stats::{DeviceStats, LoopTimes};
use crate::ops::natlog::Export;
use crate::ops::{LoopState, Ops};
use crate::time::Instant;

use super::device::{Device, RxBatch, Sent, TxBatch};
use super::handoff::{HandoffStats, Route, Worker};

/// Reads from one device per wakeup before the other device gets its turn (one read may yield many
/// packets with segmentation offload).
pub const BATCH: usize = 64;
/// A device's output queue is written once it holds this many packets.
pub const TX_BATCH: usize = 128;
/// At most one write-error log line per device per this interval; the rest are counted.
const ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The flag that names the device on `side`, so errors point at the operator's input.
pub const fn flag_of(side: Side) -> &'static str {
    match side {
        Side::Inside => "--lan-tun",
        Side::Outside => "--wan-tun",
    }
}

/// Why the loop stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT or SIGTERM (the number).
    Signal(i32),
    /// [`StopHandle::stop`] was called.
    Requested,
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Signal(libc::SIGINT) => f.write_str("SIGINT"),
            StopCause::Signal(libc::SIGTERM) => f.write_str("SIGTERM"),
            StopCause::Signal(n) => write!(f, "signal {n}"),
            StopCause::Requested => f.write_str("stop request"),
        }
    }
}

/// The read end of a self-pipe the loop polls: a signal handler (or a [`StopHandle`]) writes to it.
#[derive(Debug)]
pub struct Stop {
    rx: UnixStream,
    signal: Arc<AtomicUsize>,
    /// The write end, for [`Stop::handle`].
    tx: UnixStream,
}

/// Stops a loop from another thread (tests, embedding).
#[derive(Debug)]
pub struct StopHandle {
    tx: UnixStream,
}

impl StopHandle {
    pub fn stop(&self) -> io::Result<()> {
        (&self.tx).write_all(&[1]).map(drop)
    }
}

impl Stop {
    /// Stops the loop on SIGINT or SIGTERM. The handlers only store the signal number and write one
    /// byte to a socket (both async-signal-safe, via `signal-hook`).
    pub fn on_signals() -> io::Result<Stop> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // Registered in this order, so the number is stored before the wakeup byte is written.
            signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
            signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
        }
        tx.set_nonblocking(true)?;
        Ok(Stop { rx, signal, tx })
    }

    /// A stop pipe driven by hand.
    pub fn manual() -> io::Result<(Stop, StopHandle)> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        let own = tx.try_clone()?;
        Ok((Stop { rx, signal: Arc::new(AtomicUsize::new(0)), tx: own }, StopHandle { tx }))
    }

    /// Another handle that stops the loop polling this (as [`StopCause::Requested`]).
    pub fn handle(&self) -> io::Result<StopHandle> {
        Ok(StopHandle { tx: self.tx.try_clone()? })
    }

    fn cause(&self) -> StopCause {
        let mut sink = [0u8; 64];
        while matches!((&self.rx).read(&mut sink), Ok(n) if n > 0) {}
        match self.signal.load(Ordering::SeqCst) {
            0 => StopCause::Requested,
            n => StopCause::Signal(i32::try_from(n).unwrap_or(0)),
        }
    }
}

/// A device failed in a way the loop cannot continue from (it was deleted, its namespace went away), or,
/// with `side: None`, `poll(2)` itself failed.
#[derive(Debug)]
pub struct RunError {
    pub side: Option<Side>,
    pub device: String,
    pub what: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.side {
            Some(side) => write!(f, "{} {}: {}", flag_of(side), self.device, self.what),
            None => write!(f, "{}: {}", self.device, self.what),
        }
    }
}

impl std::error::Error for RunError {}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is valid for writes for the duration of the call; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One device with its output queue, its counters and its write-error log limiter.
struct Port<D> {
    dev: D,
    side: Side,
    tx: TxBatch,
    stats: DeviceStats,
    last_error_log: Option<std::time::Instant>,
    errors_unlogged: u64,
}

impl<D: Device> Port<D> {
    /// Writes the queued packets.
    fn flush(&mut self) {
        if self.tx.is_empty() {
            return;
        }
        let Sent { packets, bytes, errors, error } = self.dev.send_batch(&mut self.tx);
        self.stats.tx_packets += packets;
        self.stats.tx_bytes += bytes;
        if errors > 0 {
            self.write_failed(errors, error.as_deref().unwrap_or("unknown"));
        }
    }

    fn write_failed(&mut self, errors: u64, what: &str) {
        self.stats.tx_errors += errors;
        let now = std::time::Instant::now();
        if self.last_error_log.is_some_and(|t| now.duration_since(t) < ERROR_LOG_INTERVAL) {
            self.errors_unlogged += 1;
            return;
        }
        tracing::warn!(
            device = self.dev.name(),
            flag = flag_of(self.side),
            error = what,
            packets = errors,
            suppressed_since_last = self.errors_unlogged,
            total = self.stats.tx_errors,
            "write to device failed; packets dropped"
        );
        self.last_error_log = Some(now);
        self.errors_unlogged = 0;
    }

    fn gone(&self, what: String) -> RunError {
        RunError { side: Some(self.side), device: self.dev.name().to_string(), what }
    }
}

/// The poll(2) timeout in milliseconds for the engine's next deadline: rounded up, so the loop never
/// wakes just before the deadline and spins; -1 (forever) without one.
pub fn poll_timeout_ms(deadline: Option<Instant>, now: Instant) -> i32 {
    match deadline {
        None => -1,
        Some(d) => {
            let ms = d.as_micros().saturating_sub(now.as_micros()).div_ceil(1000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

/// Queues `pkt` for the device on `side` (writing the queue when it is full) and hands it to the
/// capture. The capture sees what ftpnat sent towards the device; a write the kernel then refuses is
/// counted in `tx_errors`.
fn emit<D: Device>(ports: &mut [Port<D>; 2], ops: &mut Option<Link>, side: Side, pkt: &[u8]) {
    let port = &mut ports[side.index()];
    port.tx.push(pkt);
    if let Some(o) = ops {
        o.captured(side, pkt);
    }
    if port.tx.len() >= TX_BATCH {
        port.flush();
    }
}

/// Hands one packet to the engine and queues what comes out of it (the packet itself and whatever the
/// engine has to send on its own).
#[inline]
fn handle<D: Device>(
    engine: &mut Engine,
    ports: &mut [Port<D>; 2],
    ops: &mut Option<Link>,
    now: Instant,
    side: Side,
    pkt: &mut Vec<u8>,
) {
    match engine.handle_packet(now, side, pkt) {
        Verdict::Forward(out) => emit(ports, ops, out, pkt),
        // The engine counted the reason (and logs it at debug level).
        Verdict::Drop(_) | Verdict::Held => {}
    }
    while let Some(t) = engine.poll_transmit() {
        emit(ports, ops, t.side, &t.packet);
    }
}

/// [`emit`] for an aggregate that crossed the engine whole (both devices segment aggregates).
fn emit_aggregate<D: Device>(
    ports: &mut [Port<D>; 2],
    ops: &mut Option<Link>,
    side: Side,
    pkt: &[u8],
    seg: usize,
) {
    let port = &mut ports[side.index()];
    port.tx.push_aggregate(pkt, seg);
    if let Some(o) = ops {
        o.captured_aggregate(side, pkt);
    }
    if port.tx.len() >= TX_BATCH {
        port.flush();
    }
}

/// What becomes of the engine's state when the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It ends with the process: port blocks and sessions are logged as released.
    Final,
    /// It is saved for the next start (`--state-file`): nothing is released.
    HandedOn,
}

/// The engine between two devices.
pub struct Runtime<D: Device> {
    engine: Engine,
    ports: [Port<D>; 2],
    rx: RxBatch,
    /// Both devices read and write TCP aggregates, so one can cross the engine whole.
    whole: bool,
    origin: std::time::Instant,
    /// The engine's time when this runtime was made: a restored engine's clock goes on from where it
    /// was saved (issue 15), so every deadline keeps the time it had left.
    base: u64,
    wakeups: u64,
    ops: Option<Link>,
    times: LoopTimes,
    /// This loop's place among several (`--workers N`): every packet read is checked against the
    /// steering rule and handed on if another worker's engine owns it. `None`: the only loop.
    worker: Option<Worker>,
    /// The NAT log exporters (issue 16): drained every turn, never blocking.
    natlog: Option<Export>,
}

impl<D: Device> Runtime<D> {
    pub fn new(engine: Engine, lan: D, wan: D) -> Self {
        let base = engine.now().as_micros();
        let whole = lan.tx_aggregates() && wan.tx_aggregates();
        let port = |dev: D, side| Port {
            tx: TxBatch::new(dev.tx_headroom(), dev.tx_capacity()),
            dev,
            side,
            stats: DeviceStats::default(),
            last_error_log: None,
            errors_unlogged: 0,
        };
        Runtime {
            engine,
            ports: [port(lan, Side::Inside), port(wan, Side::Outside)],
            whole,
            rx: RxBatch::default(),
            origin: std::time::Instant::now(),
            base,
            wakeups: 0,
            ops: None,
            times: LoopTimes::default(),
            worker: None,
            natlog: None,
        }
    }

    /// Makes this loop one of several: it keeps the packets its engine owns and hands the others on
    /// (see [`super::handoff`]), and serves what other workers hand it.
    pub fn with_worker(mut self, w: Worker) -> Self {
        self.worker = Some(w);
        self
    }

    /// Serves `ops` through `link` (one of the links [`Ops::start_workers`] made).
    pub fn with_link(mut self, link: Link) -> Self {
        self.ops = Some(link);
        self
    }

    /// What the handoff between workers did (zeros for the only loop).
    pub fn handoff_stats(&self) -> HandoffStats {
        self.worker.as_ref().map(|w| w.stats).unwrap_or_default()
    }

    /// Hands the engine's NAT allocation records to `natlog`'s exporter thread every turn.
    pub fn with_natlog(mut self, natlog: Option<Export>) -> Self {
        self.natlog = natlog;
        self
    }

    /// At stop: hands every record still queued to the exporter, then, unless the state is handed on to
    /// the next start, a release for every block and (with `--nat-log-sessions`) a delete for every
    /// session still held, stamped with the stop time (the collector sees every allocation end); the
    /// exporter thread sends them before it ends.
    pub fn drain_natlog(&mut self, end: End) {
        let now = self.now();
        if let Some(x) = &mut self.natlog {
            // A state handed on keeps its blocks and sessions: their release records come when they
            // end, from the gateway that then holds them.
            let tail = match end {
                End::Final => self.engine.nat_stop_records(now),
                End::HandedOn => Vec::new(),
            };
            x.finish(self.engine.nat_log_mut(), tail, now);
        }
    }

    /// The NAT log exporter's counters, when one runs.
    pub fn natlog(&self) -> Option<&Export> {
        self.natlog.as_ref()
    }

    /// Serves `ops` (control socket, metrics, capture, reload): starts the operations thread, and does
    /// the operations work that needs the engine from this loop. Fails only when a thread or a socket
    /// pair cannot be made.
    pub fn with_ops(mut self, ops: Ops) -> io::Result<Self> {
        self.ops = Some(ops.start()?);
        Ok(self)
    }

    /// How long this loop's turns have taken.
    pub fn times(&self) -> &LoopTimes {
        &self.times
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn device_stats(&self, side: Side) -> &DeviceStats {
        &self.ports[side.index()].stats
    }

    /// How often `poll(2)` returned: a quiet gateway must not wake up.
    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    /// The monotonic clock as the engine sees it: microseconds since this runtime was made, after the
    /// engine's own time then (zero for a new engine).
    pub fn now(&self) -> Instant {
        let since = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(self.base.saturating_add(since))
    }

    /// Runs until `stop` fires (`Ok`) or a device fails (`Err`, naming it).
    pub fn run(&mut self, stop: &Stop) -> Result<StopCause, RunError> {
        let mut fds = Vec::with_capacity(4);
        // When the turn that is running began (after `poll(2)` returned).
        let mut turn: Option<std::time::Instant> = None;
        loop {
            let now = self.now();
            if self.worker.as_ref().and_then(Worker::next_deadline).is_some_and(|d| d <= now) {
                self.expire_held(now);
            }
            let mut deadline = self.engine.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.engine.handle_timeout(now);
                self.drain_transmit();
                self.flush();
                deadline = self.engine.poll_timeout();
            }
            if let Some(d) = self.worker.as_ref().and_then(Worker::next_deadline) {
                deadline = Some(deadline.map_or(d, |e| e.min(d)));
            }
            // An engine whose deadline does not move past `now` still gets 1 ms, never a spin.
            let mut timeout = match poll_timeout_ms(deadline, now) {
                0 => 1,
                t => t,
            };
            if let Some(x) = &mut self.natlog {
                // What the last turn recorded leaves before the loop sleeps; a backlog larger than
                // one drain is worked off without sleeping.
                x.drain(self.engine.nat_log_mut(), now);
                if !self.engine.nat().log().is_empty() {
                    timeout = 0;
                }
            }
            fds.clear();
            fds.extend([
                pollfd(self.ports[0].dev.raw_fd()),
                pollfd(self.ports[1].dev.raw_fd()),
                pollfd(stop.rx.as_raw_fd()),
            ]);
            // The handoff door goes before the operations door: their positions are fixed (3, then 4).
            let handoff = self.worker.as_ref().map(|w| {
                fds.push(pollfd(w.fd()));
                fds.len() - 1
            });
            let door_at = fds.len();
            if let Some(link) = &self.ops {
                fds.push(pollfd(link.fd()));
                if link.busy() {
                    // A listing slice is left over: come back at once (after the devices).
                    timeout = 0;
                }
            }
            if let Some(t) = turn.take() {
                self.times.turn.record(t.elapsed());
            }
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            turn = Some(std::time::Instant::now());
            self.wakeups += 1;
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll(2) fails only on EFAULT/EINVAL/ENOMEM: nothing a device did.
                return Err(RunError { side: None, device: "poll(2)".into(), what: e.to_string() });
            }
            // Packets handed over were read before anything this loop reads now: they go first.
            if handoff.is_some_and(|i| fds[i].revents != 0) {
                self.receive();
            }
            for side in [Side::Inside, Side::Outside] {
                let revents = fds[side.index()].revents;
                if revents != 0 {
                    self.read_batch(side, revents)?;
                }
            }
            let now = self.now();
            if let Some(link) = &mut self.ops {
                let started = std::time::Instant::now();
                let door = fds.get(door_at).is_some_and(|f| f.revents != 0);
                // A system call each way, so only for the turns with a job (not every packet batch).
                let cpu = (door || link.busy()).then(thread_cpu);
                let devices = [self.ports[0].stats, self.ports[1].stats];
                let worker = self.worker.as_ref().map(|w| (w.index(), w.stats));
                let st = LoopState { engine: &mut self.engine, now, devices, times: &self.times, worker };
                if link.handle(door, st) {
                    self.reloaded();
                }
                self.times.ops.record(started.elapsed());
                if let Some(c) = cpu {
                    self.times.ops_cpu.record(thread_cpu().saturating_sub(c));
                }
                // A reload may have changed timeouts; a request may have turned events on.
                self.drain_transmit();
                self.flush();
            }
            // Checked after the devices, so packets that arrived before the stop are still handled.
            if fds[2].revents != 0 {
                return Ok(stop.cause());
            }
        }
    }

    fn read_batch(&mut self, side: Side, revents: libc::c_short) -> Result<(), RunError> {
        let i = side.index();
        if revents & libc::POLLNVAL != 0 {
            return Err(self.ports[i].gone("the device descriptor is no longer open".into()));
        }
        let now = self.now();
        let r = self.read_some(side, revents, now);
        self.ports[i].stats.rx_errors = self.ports[i].dev.rx_errors();
        // Written before the other device is read: its packets do not wait for that device's batch.
        self.flush();
        r
    }

    fn read_some(&mut self, side: Side, revents: libc::c_short, now: Instant) -> Result<(), RunError> {
        let i = side.index();
        for n in 0..BATCH {
            match self.ports[i].dev.recv_batch(&mut self.rx) {
                Ok(mut k) => {
                    if let Some(w) = &mut self.worker {
                        w.stamp();
                    }
                    if let Some(a) = self.rx.aggregate() {
                        self.ports[i].stats.rx_aggregates += 1;
                        let pkt = self.rx.packet_mut(0);
                        let len = pkt.len() as u64;
                        // Another worker's aggregate (which the steering program does not let happen) is
                        // split and its segments handed on.
                        let mine = self.worker.as_mut().is_none_or(|w| w.owns(side, pkt));
                        let whole = if self.whole && mine {
                            self.engine.handle_aggregate(now, side, pkt, a.seg, a.segs)
                        } else {
                            None
                        };
                        if let Some(v) = whole {
                            let st = &mut self.ports[i].stats;
                            st.rx_packets += a.segs;
                            st.rx_bytes += len;
                            if let Verdict::Forward(out) = v {
                                emit_aggregate(&mut self.ports, &mut self.ops, out, pkt, a.seg);
                            }
                            self.drain_transmit();
                            continue;
                        }
                        // Something about it is per segment (the ALG, a new flow, an error to answer).
                        k = self.ports[i].dev.split_aggregate(&mut self.rx);
                    } else if k > 1 {
                        self.ports[i].stats.rx_aggregates += 1;
                    }
                    for j in 0..k {
                        let pkt = self.rx.packet_mut(j);
                        let st = &mut self.ports[i].stats;
                        st.rx_packets += 1;
                        st.rx_bytes += pkt.len() as u64;
                        let Some(w) = &mut self.worker else {
                            handle(&mut self.engine, &mut self.ports, &mut self.ops, now, side, pkt);
                            continue;
                        };
                        if w.route(now, side, pkt) == Route::Here {
                            handle(&mut self.engine, &mut self.ports, &mut self.ops, now, side, pkt);
                        }
                        // A datagram's later fragments its first fragment released.
                        while let Some((s, mut p)) = w.local.pop_front() {
                            handle(&mut self.engine, &mut self.ports, &mut self.ops, now, s, &mut p);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(self.ports[i].gone("the device closed (end of file)".into()))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // POLLERR/POLLHUP with nothing to read would wake us forever: treat it as failure.
                    if n == 0 && revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                        return Err(self.ports[i].gone("the device reports an error condition".into()));
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let hint = match e.raw_os_error() {
                        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                            " (the device was deleted, perhaps with its network namespace)"
                        }
                        _ => "",
                    };
                    return Err(self.ports[i].gone(format!("read failed: {e}{hint}")));
                }
            }
        }
        Ok(())
    }

    /// Handles what other workers handed this one, then writes the result.
    fn receive(&mut self) {
        let now = self.now();
        let Some(w) = &mut self.worker else { return };
        let (engine, ports, ops) = (&mut self.engine, &mut self.ports, &mut self.ops);
        w.receive(now, |side, pkt| handle(engine, ports, ops, now, side, pkt));
        self.flush();
    }

    /// Gives this worker's engine the held fragments whose first fragment never came in time.
    fn expire_held(&mut self, now: Instant) {
        let Some(w) = &mut self.worker else { return };
        w.expire(now);
        while let Some((s, mut p)) = w.local.pop_front() {
            handle(&mut self.engine, &mut self.ports, &mut self.ops, now, s, &mut p);
        }
        self.flush();
    }

    /// After a reload: a change of the port forwards changes the steering rule. Every worker takes
    /// the new rule; worker 0 replaces the devices' steering programs (one per device, whichever
    /// queue sets it). Until then a packet the old program steers to the wrong worker is handed on.
    fn reloaded(&mut self) {
        let Some(w) = &mut self.worker else { return };
        let s = crate::steer::Steering::new(self.engine.config(), w.workers());
        if s == *w.steering() {
            return;
        }
        if w.index() == 0 {
            for p in &self.ports {
                if let Err(e) = super::bpf::steer(p.dev.raw_fd(), &s, p.side) {
                    tracing::warn!(device = p.dev.name(), error = %e,
                        "cannot replace the steering program after a reload; packets it steers wrongly are handed between workers");
                }
            }
        }
        w.set_steering(s);
    }

    /// Queues everything the engine has to send on its own (ICMP errors, ALG probes, held bytes).
    fn drain_transmit(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            emit(&mut self.ports, &mut self.ops, t.side, &t.packet);
        }
    }

    /// Writes both devices' queues.
    fn flush(&mut self) {
        for p in &mut self.ports {
            p.flush();
        }
    }

    /// Every non-zero counter (engine, devices and handoff) plus the live flow count, in a stable order.
    pub fn summary(&self) -> Vec<(String, u64)> {
        let mut out = vec![("flows.active".to_string(), self.engine.flow_count() as u64)];
        if let Some(w) = &self.worker {
            // `workers.reordered` even when 0: the operator of several workers sees it was counted.
            out.extend(
                w.stats
                    .counters()
                    .iter()
                    .filter(|(k, v)| *v != 0 || *k == "workers.reordered")
                    .map(|(k, v)| (k.to_string(), *v)),
            );
        }
        if let Some(n) = self.engine.nat64().filter(|n| !n.hosts.is_empty()) {
            // NAT64: IPv6 hosts holding a stand-in address (absent without --nat64-prefix).
            out.push(("nat64.hosts".to_string(), n.hosts.len() as u64));
        }
        self.engine.metrics().for_each(|k, v| {
            if v != 0 {
                out.push((k.to_string(), v));
            }
        });
        for p in &self.ports {
            let s = p.stats;
            for (k, v) in [
                ("rx_packets", s.rx_packets),
                ("rx_bytes", s.rx_bytes),
                ("tx_packets", s.tx_packets),
                ("tx_bytes", s.tx_bytes),
                ("tx_errors", s.tx_errors),
                ("rx_errors", s.rx_errors),
                ("rx_aggregates", s.rx_aggregates),
            ] {
                if v != 0 {
                    out.push((format!("device.{}.{k}", p.side.name()), v));
                }
            }
        }
        // Issue 16: the pool's and blocks' counters, and what the NAT log exporter sent and lost.
        // The exporter's counters are shared by every worker's end: reported by the first end only.
        let natlog = self
            .natlog
            .as_ref()
            .filter(|x| x.is_first())
            .map(|x| x.counters().snapshot())
            .unwrap_or_default();
        out.extend(
            crate::ops::view::nat_counters(self.engine.nat()).into_iter().chain(natlog).filter(|c| c.1 != 0),
        );
        out
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::io::device::{MemDevice, MemPeer};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn config() -> Config {
        Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1))
    }

    /// A well-formed IPv4/UDP datagram 10.0.0.2:40000 -> 198.51.100.2:7 with valid checksums, so any
    /// engine (pass-through or NAT) forwards it.
    fn udp_out() -> Vec<u8> {
        ftpnat_testkit::pkt::Ip::new(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(198, 51, 100, 2))
            .udp(40000, 7, b"hello", false)
    }

    type Outcome = (Result<StopCause, RunError>, Vec<(String, u64)>, u64);

    /// Runs a loop over two in-memory devices in a thread; returns the test's peers, the stop handle
    /// and the thread (yielding the result, the summary and the wakeup count).
    fn spawn<D: Device + Send + 'static>(lan: D, wan: D) -> (StopHandle, std::thread::JoinHandle<Outcome>) {
        let (stop, handle) = Stop::manual().unwrap();
        let t = std::thread::spawn(move || {
            let mut rt = Runtime::new(Engine::new(config()), lan, wan);
            let r = rt.run(&stop);
            (r, rt.summary(), rt.wakeups())
        });
        (handle, t)
    }

    fn pairs() -> (MemDevice, MemPeer, MemDevice, MemPeer) {
        let (lan, lp) = MemDevice::pair("memlan").unwrap();
        let (wan, wp) = MemDevice::pair("memwan").unwrap();
        (lan, lp, wan, wp)
    }

    #[test]
    fn forwards_lan_to_wan_and_stops_with_a_summary() {
        let (lan, lp, wan, wp) = pairs();
        let (stop, t) = spawn(lan, wan);
        let pkt = udp_out();
        lp.inject(&pkt).unwrap();
        let out = wp.take_within(Duration::from_secs(5)).unwrap().expect("packet left on the wan device");
        assert_eq!(out.len(), pkt.len());
        assert_eq!(out[9], 17, "still UDP");
        assert_eq!(out[16..20], pkt[16..20], "destination untouched");
        assert!(lp.take().unwrap().is_none(), "nothing echoed back to the lan");
        stop.stop().unwrap();
        let (r, summary, _) = t.join().unwrap();
        assert_eq!(r.unwrap(), StopCause::Requested);
        assert!(summary.contains(&("device.lan.rx_packets".into(), 1)), "{summary:?}");
        assert!(summary.contains(&("device.wan.tx_packets".into(), 1)), "{summary:?}");
        assert_eq!(summary[0].0, "flows.active");
        assert!(summary[1..].iter().all(|(_, v)| *v != 0), "only non-zero counters: {summary:?}");
    }

    #[test]
    fn an_idle_loop_sleeps() {
        let (lan, _lp, wan, _wp) = pairs();
        let (stop, t) = spawn(lan, wan);
        std::thread::sleep(Duration::from_millis(200));
        stop.stop().unwrap();
        let (r, _, wakeups) = t.join().unwrap();
        assert_eq!(r.unwrap(), StopCause::Requested);
        // The engine may schedule a timer, but an idle loop must not spin: a spin would be thousands.
        assert!(wakeups <= 10, "{wakeups} wakeups in 200 ms of silence");
    }

    #[test]
    fn a_vanished_device_ends_the_run_naming_it() {
        let (lan, _lp, wan, wp) = pairs();
        let (_stop, t) = spawn(lan, wan);
        wp.close();
        let (r, _, _) = t.join().unwrap();
        let e = r.unwrap_err();
        assert_eq!(e.side, Some(Side::Outside));
        assert!(e.to_string().starts_with("--wan-tun memwan: "), "{e}");
    }

    /// A device whose every write fails, as a TUN device that is down does (EIO).
    struct Refusing(MemDevice);
    impl Device for Refusing {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.recv(buf)
        }
        fn send(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
        fn raw_fd(&self) -> std::os::fd::RawFd {
            self.0.raw_fd()
        }
    }

    #[test]
    fn write_errors_are_counted_and_the_loop_goes_on() {
        let (lan, lp, wan, _wp) = pairs();
        let lan: Box<dyn Device + Send> = Box::new(lan);
        let wan: Box<dyn Device + Send> = Box::new(Refusing(wan));
        let (stop, t) = spawn(lan, wan);
        for _ in 0..3 {
            lp.inject(&udp_out()).unwrap();
        }
        // Queued before the stop byte, so the loop reads them first; it must then still answer the stop.
        stop.stop().unwrap();
        let (r, summary, _) = t.join().unwrap();
        assert_eq!(r.unwrap(), StopCause::Requested);
        assert!(summary.contains(&("device.wan.tx_errors".into(), 3)), "{summary:?}");
    }

    #[test]
    fn timeouts_round_up_and_saturate() {
        let t0 = Instant::from_secs(10);
        assert_eq!(poll_timeout_ms(None, t0), -1);
        assert_eq!(poll_timeout_ms(Some(t0), t0), 0);
        assert_eq!(poll_timeout_ms(Some(Instant::from_secs(9)), t0), 0);
        assert_eq!(poll_timeout_ms(Some(Instant::from_micros(10_000_001)), t0), 1);
        assert_eq!(poll_timeout_ms(Some(Instant::from_micros(10_999_999)), t0), 1000);
        assert_eq!(poll_timeout_ms(Some(Instant::MAX), t0), i32::MAX);
    }

    #[test]
    fn stop_causes_read_well() {
        assert_eq!(StopCause::Signal(libc::SIGTERM).to_string(), "SIGTERM");
        assert_eq!(StopCause::Signal(libc::SIGINT).to_string(), "SIGINT");
    }
}
