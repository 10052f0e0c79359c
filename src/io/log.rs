//! Logging that can neither stall forwarding nor be used to flood the log.
//!
//! Owns: the two pieces `ftpnat run` logs through, and their counters.
//! - [`RateLimit`], a tracing layer that lets through, per reason, a burst of [`BURST`] lines every
//!   [`INTERVAL`] (the kernel's `net_ratelimit` defaults: `message_burst` 10, `message_cost` 5 s) and
//!   counts the rest. A reason is the event's call site together with its `reason` field, so a flood of
//!   one kind of refusal cannot hide another kind. What was suppressed is logged afterwards, once per
//!   reason and window (`N log line(s) suppressed`, target `ftpnat::log`), as the kernel's
//!   "callbacks suppressed" line. Only INFO and above are limited: DEBUG and TRACE are asked for by the
//!   operator, line by line. The decision is taken before the event is formatted, so a suppressed line
//!   costs a hash lookup on the forwarding thread, not a formatted string.
//! - [`LogPipe`], a writer that hands each formatted line to a thread of its own through a bounded queue
//!   ([`QUEUE_LINES`]): a slow or blocked stderr (a pipe nobody reads, a stopped terminal) stalls that
//!   thread only; when the queue is full the line is dropped and counted, never waited for.
//!
//! Engine counters are not affected by any of this: they stay exact whatever the log shows.
//! Must not: decide what is logged (call sites and `RUST_LOG` do) or touch packets.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Lines let through per reason and window.
pub const BURST: u32 = 10;
/// The window.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Lines queued for the writer thread; beyond it new lines are dropped (and counted).
pub const QUEUE_LINES: usize = 4096;
/// Reasons tracked at once; past it every new reason shares one window (call sites are few, so this
/// only bounds memory against a bug that logs ever-new reason values).
const MAX_REASONS: usize = 1024;
/// The target of the rate limiter's own lines (never limited: at most one per reason and window).
pub const TARGET: &str = "ftpnat::log";

/// A source of the current time, injectable for tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Reason(Identifier, u64),
    Overflow,
}

struct Window {
    meta: &'static Metadata<'static>,
    reason: Option<String>,
    start: Instant,
    printed: u32,
    missed: u64,
}

/// What one window of one reason suppressed, to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub target: &'static str,
    /// The event's `reason` field, if it had one.
    pub reason: Option<String>,
    /// Where the event is logged from (`file:line`).
    pub at: String,
    pub lines: u64,
}

#[derive(Default)]
struct State {
    windows: HashMap<Key, Window>,
    /// Windows closed by a new event of their reason while lines were missed: logged at the next tick.
    pending: Vec<Suppressed>,
}

/// The rate-limiting layer (see the module header). Clones share their state.
#[derive(Clone)]
pub struct RateLimit {
    state: Arc<Mutex<State>>,
    clock: Clock,
    suppressed: Arc<AtomicU64>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::with_clock(Arc::new(Instant::now))
    }
}

/// Reads an event's `reason` field into a hash (and its text, kept once per window).
#[derive(Default)]
struct ReasonVisitor {
    hash: Option<u64>,
    text: Option<String>,
}

impl ReasonVisitor {
    fn take(&mut self, value: &str) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        self.hash = Some(h.finish());
        self.text = Some(value.to_string());
    }
}

impl Visit for ReasonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "reason" {
            self.take(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "reason" {
            self.take(&format!("{value:?}"));
        }
    }
}

impl RateLimit {
    pub fn with_clock(clock: Clock) -> RateLimit {
        RateLimit { state: Arc::default(), clock, suppressed: Arc::default() }
    }

    /// Lines suppressed so far (all reasons).
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// The counter behind [`RateLimit::suppressed`], for live views.
    pub fn suppressed_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.suppressed)
    }

    /// Whether an event may be logged; counts it when not.
    fn admit(&self, event: &Event<'_>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == TARGET {
            return true;
        }
        let mut v = ReasonVisitor::default();
        event.record(&mut v);
        let now = (self.clock)();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { windows, pending } = &mut *state;
        let mut key = Key::Reason(meta.callsite(), v.hash.unwrap_or(0));
        if !windows.contains_key(&key) && windows.len() >= MAX_REASONS {
            key = Key::Overflow;
        }
        let overflow = key == Key::Overflow;
        let w = windows.entry(key).or_insert_with(|| Window {
            meta,
            reason: if overflow { Some("(many)".into()) } else { v.text.take() },
            start: now,
            printed: 0,
            missed: 0,
        });
        if now.saturating_duration_since(w.start) >= INTERVAL {
            if w.missed > 0 {
                pending.push(summary(w));
            }
            (w.start, w.printed, w.missed) = (now, 0, 0);
        }
        if w.printed < BURST {
            w.printed += 1;
            return true;
        }
        w.missed += 1;
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Closes every window that has run its time (or all of them, with `all`), and returns what each
    /// suppressed. Windows with nothing suppressed and nothing printed for a whole window are
    /// forgotten, so the state holds only reasons seen lately.
    pub fn take_suppressed(&self, all: bool) -> Vec<Suppressed> {
        let now = (self.clock)();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { windows, pending } = &mut *state;
        let mut out = std::mem::take(pending);
        windows.retain(|_, w| {
            let over = now.saturating_duration_since(w.start) >= INTERVAL;
            if (over || all) && w.missed > 0 {
                out.push(summary(w));
                (w.start, w.printed, w.missed) = (now, 0, 0);
                return true;
            }
            !over
        });
        out
    }

    /// Logs what [`RateLimit::take_suppressed`] returns, one line per reason. Must not be called from
    /// inside a tracing event (the line would go nowhere): the ticker thread and the end of `run` call it.
    pub fn log_suppressed(&self, all: bool) {
        for s in self.take_suppressed(all) {
            let reason = s.reason.as_deref().unwrap_or("-");
            tracing::warn!(target: TARGET, suppressed = s.lines, of = s.target, reason, at = %s.at,
                "{} log line(s) suppressed by the rate limit", s.lines);
        }
    }

    /// Starts a thread that logs suppressed counts every second, for as long as the process runs.
    pub fn spawn_ticker(&self) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new().name("ftpnat-log-tick".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            me.log_suppressed(false);
        })?;
        Ok(())
    }
}

fn summary(w: &Window) -> Suppressed {
    Suppressed {
        target: w.meta.target(),
        reason: w.reason.clone(),
        at: format!("{}:{}", w.meta.file().unwrap_or("?"), w.meta.line().unwrap_or(0)),
        lines: w.missed,
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.admit(event)
    }
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// A `MakeWriter` whose lines are written by a thread of its own (see the module header). Clones
/// share the queue and the counter.
#[derive(Clone)]
pub struct LogPipe {
    tx: SyncSender<Msg>,
    lost: Arc<AtomicU64>,
}

impl LogPipe {
    /// Starts the writer thread on `out` (stderr for `ftpnat run`).
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<LogPipe> {
        LogPipe::spawn_with(out, QUEUE_LINES)
    }

    /// As [`LogPipe::spawn`], with a queue of `lines`.
    pub fn spawn_with(out: impl Write + Send + 'static, lines: usize) -> std::io::Result<LogPipe> {
        let (tx, rx) = mpsc::sync_channel(lines);
        std::thread::Builder::new().name("ftpnat-log".into()).spawn(move || write_lines(rx, out))?;
        Ok(LogPipe { tx, lost: Arc::default() })
    }

    /// Lines dropped because the queue was full (the output did not keep up or is blocked).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The counter behind [`LogPipe::lost`], for live views.
    pub fn lost_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.lost)
    }

    /// Waits, at most `limit`, until every line queued so far is written (at exit). False when the
    /// output did not take them in time (it is blocked): the process may exit without them.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (ack, done) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    fn send(&self, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        if self.tx.try_send(Msg::Line(line.to_vec())).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread: writes what is queued, several lines per `write` when they pile up.
fn write_lines(rx: Receiver<Msg>, mut out: impl Write) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Msg::Line(l) => buf.extend_from_slice(&l),
                Msg::Flush(a) => acks.push(a),
            }
            next = if buf.len() < 64 * 1024 { rx.try_recv().ok() } else { None };
        }
        // An error (stderr closed) loses these lines; there is nowhere to report it.
        let _ = out.write_all(&buf).and_then(|_| out.flush());
        buf.clear();
        for a in acks {
            let _ = a.try_send(());
        }
    }
}

/// What the fmt layer writes one event into: the whole line goes to the queue in one piece.
pub struct PipeWriter {
    pipe: LogPipe,
    line: Vec<u8>,
}

impl Write for PipeWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.pipe.send(&self.line);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogPipe {
    type Writer = PipeWriter;
    fn make_writer(&'a self) -> PipeWriter {
        PipeWriter { pipe: self.clone(), line: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A clock moved by hand.
    fn clock() -> (Clock, Arc<Mutex<Instant>>) {
        let t = Arc::new(Mutex::new(Instant::now()));
        let c = t.clone();
        (Arc::new(move || *c.lock().unwrap()), t)
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_reason_gets_its_burst_per_window_and_the_rest_is_counted() {
        let (c, t) = clock();
        let limit = RateLimit::with_clock(c);
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry()
            .with(limit.clone())
            .with(tracing_subscriber::fmt::layer().with_writer(move || w.clone()).with_ansi(false));
        tracing::subscriber::with_default(sub, || {
            for i in 0..1000 {
                tracing::warn!(reason = "malformed", i, "refused");
                tracing::warn!(reason = "third_host", i, "refused");
                tracing::debug!(i, "debug is not limited");
            }
            *t.lock().unwrap() += INTERVAL;
            tracing::warn!(reason = "malformed", "refused again");
            limit.log_suppressed(false);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let count = |s: &str| text.lines().filter(|l| l.contains(s)).count();
        assert_eq!(count("refused reason=\"malformed\""), 10, "{text}");
        assert_eq!(count("refused again"), 1, "a new window");
        assert_eq!(count("refused reason=\"third_host\""), 10);
        assert_eq!(count("debug is not limited"), 1000, "debug lines are asked for one by one");
        assert_eq!(limit.suppressed(), 2 * 990);
        assert!(text.contains("990 log line(s) suppressed by the rate limit"), "{text}");
        assert_eq!(count("suppressed by the rate limit"), 2, "one line per reason: {text}");
        // Nothing more to say, and quiet reasons are forgotten after a window.
        *t.lock().unwrap() += INTERVAL;
        assert!(limit.take_suppressed(true).is_empty());
        assert!(limit.state.lock().unwrap().windows.is_empty());
    }

    #[test]
    fn a_blocked_output_loses_lines_instead_of_blocking_the_caller() {
        use std::sync::atomic::AtomicBool;
        use tracing_subscriber::fmt::MakeWriter;
        /// An output that blocks until the gate opens, like a pipe nobody reads.
        struct Stuck {
            gate: Arc<Mutex<()>>,
            entered: Arc<AtomicBool>,
            out: Buf,
        }
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.entered.store(true, Ordering::SeqCst);
                drop(self.gate.lock().unwrap());
                self.out.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (gate, entered, out) =
            (Arc::new(Mutex::new(())), Arc::new(AtomicBool::new(false)), Buf::default());
        let held = gate.lock().unwrap();
        let stuck = Stuck { gate: gate.clone(), entered: entered.clone(), out: out.clone() };
        let pipe = LogPipe::spawn_with(stuck, 16).unwrap();
        writeln!(pipe.make_writer(), "line 0").unwrap();
        // Wait (bounded) until the writer thread sits in the blocked write.
        for _ in 0..10_000 {
            if entered.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(entered.load(Ordering::SeqCst), "the writer thread never wrote");
        for i in 1..1000 {
            writeln!(pipe.make_writer(), "line {i}").unwrap();
        }
        assert_eq!(pipe.lost(), 999 - 16, "the queue took 16 lines, the rest were dropped, none waited for");
        assert!(!pipe.flush(Duration::from_millis(50)), "a blocked output cannot be flushed");
        drop(held);
        assert!(pipe.flush(Duration::from_secs(10)), "once it drains, it can");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 17);
        assert!(text.starts_with("line 0\nline 1\n") && text.ends_with("line 16\n"), "{text}");
    }

    #[test]
    fn queued_lines_arrive_whole_and_in_order() {
        let buf = Buf::default();
        let pipe = LogPipe::spawn(buf.clone()).unwrap();
        use tracing_subscriber::fmt::MakeWriter;
        for i in 0..500 {
            let mut w = pipe.make_writer();
            write!(w, "line ").unwrap();
            writeln!(w, "{i}").unwrap();
        }
        assert!(pipe.flush(Duration::from_secs(10)));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, want);
        assert_eq!(pipe.lost(), 0);
    }
}
