//! Exporting the NAT allocation records (port blocks, sessions, exhaustion, quotas) to the operator's
//! collectors: IPFIX (RFC 7011 over UDP, RFC 8158 events) and syslog (RFC 5424 over UDP or a Unix
//! socket), off the forwarding loop.
//!
//! Owns: the exporter settings and their syntax ([`Targets`]), the run loop's end ([`Export::drain`]:
//! moves a bounded batch of records from the engine's queue into a channel, never blocking; at stop
//! [`Export::finish`] hands over the rest and the engine's stop records, waiting for room), and the
//! exporter thread (converts the core's instants to wall-clock time, encodes with [`ipfix`] and
//! [`syslog`], sends, re-sends the IPFIX templates periodically) with its counters. Must not: decide
//! what is recorded (the core's `nat::log` does), or block or format on the run loop.
//!
//! With several workers (`--workers N`, issue 18) every run loop holds an end of the one exporter
//! ([`Export::another`]): each drains its own engine's queue into the one bounded channel (a
//! non-blocking `try_send` per turn, never per packet), and the one exporter thread encodes every
//! worker's batches in the order they arrive, so IPFIX sequence numbers (RFC 7011 §3.1: data records
//! sent before this message, per observation domain) and the template refreshes stay those of a
//! single exporter; what the channel cannot take is counted in `natlog.lost`, whichever worker's.
//! The thread ends once every end has been dropped; the end that started it waits for that.
//!
//! Time: records carry the core's [`Instant`]; each batch carries the wall-clock time of
//! `Instant::ZERO` as the run loop saw it when it drained the batch (its `SystemTime` less its monotonic
//! `now`), so a record's time is exact to the clock readings and unaffected by how long the batch waited.

pub mod ipfix;
pub mod syslog;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::nat::{Log, Record};
use crate::time::Instant;

/// Records moved from the engine per run-loop turn at most (the rest wait in its queue).
pub const DRAIN_PER_TURN: usize = 4096;
/// Batches waiting for the exporter thread at most; beyond it records are counted as lost.
pub const BATCHES_IN_FLIGHT: usize = 1024;
/// How often the IPFIX templates are re-sent by default (RFC 7011 §8.4 leaves the interval to the
/// exporter over UDP; collectors restarted meanwhile can decode again after at most this long).
pub const DEFAULT_TEMPLATE_REFRESH: Duration = Duration::from_secs(60);
/// IPFIX message size by default: fits a 1500-byte path with IPv4 or IPv6 and UDP headers. RFC 7011
/// §10.3.3 asks for 512 when the path MTU to the collector is unknown (`--ipfix-max-message 512`).
pub const DEFAULT_MAX_MESSAGE: usize = 1400;

/// Where syslog messages go: `udp:HOST:PORT` (RFC 5426, one message per datagram; `HOST:PORT` alone
/// means the same) or `unix:PATH` (a datagram socket such as `/dev/log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    Udp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for SyslogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("'{s}': the socket path must be absolute"));
            }
            return Ok(SyslogTarget::Unix(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("udp:").unwrap_or(s);
        addr.parse()
            .map(SyslogTarget::Udp)
            .map_err(|_| format!("'{s}': expected udp:IP:PORT ([IPv6]:PORT) or unix:/PATH"))
    }
}

/// `--ipfix-collector IP:PORT` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfixTarget {
    pub collector: SocketAddr,
    /// The Observation Domain ID (`--ipfix-domain`).
    pub domain: u32,
    pub template_refresh: Duration,
    pub max_message: usize,
}

impl IpfixTarget {
    pub fn new(collector: SocketAddr) -> IpfixTarget {
        IpfixTarget {
            collector,
            domain: 1,
            template_refresh: DEFAULT_TEMPLATE_REFRESH,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Every configured exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    pub ipfix: Option<IpfixTarget>,
    pub syslog: Option<SyslogTarget>,
    /// Syslog facility number (default local0).
    pub facility: u8,
}

impl Targets {
    pub fn any(&self) -> bool {
        self.ipfix.is_some() || self.syslog.is_some()
    }

    /// Checks the settings as a whole; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(i) = &self.ipfix {
            if i.collector.port() == 0 {
                return Err("--ipfix-collector: port 0 is not a port".into());
            }
            if i.template_refresh < Duration::from_secs(1) {
                return Err("--ipfix-template-refresh: must be at least 1s".into());
            }
            if !(256..=65_507).contains(&i.max_message) {
                return Err(format!("--ipfix-max-message: {} is outside 256-65507 bytes", i.max_message));
            }
        }
        if let Some(SyslogTarget::Udp(a)) = &self.syslog {
            if a.port() == 0 {
                return Err("--syslog: port 0 is not a port".into());
            }
        }
        if self.facility > 23 {
            return Err(format!(
                "--syslog-facility: {} is not a facility (0-23; local0 is 16)",
                self.facility
            ));
        }
        Ok(())
    }
}

/// Counters the exporter keeps, shown by `show stats` and the metrics (`natlog.*`). Each is shared
/// with the operations thread ([`Counters::shared`]).
#[derive(Debug, Default)]
pub struct Counters {
    /// Records handed to the exporter thread.
    pub records: Arc<AtomicU64>,
    /// Records that could not be handed over (the thread fell [`BATCHES_IN_FLIGHT`] behind).
    pub lost: Arc<AtomicU64>,
    pub ipfix_messages: Arc<AtomicU64>,
    pub ipfix_templates: Arc<AtomicU64>,
    pub syslog_messages: Arc<AtomicU64>,
    /// Datagrams the kernel refused (collector unreachable, socket buffer full, ...).
    pub send_errors: Arc<AtomicU64>,
}

impl Counters {
    /// Every counter under its dotted name, shared.
    pub fn shared(&self) -> Vec<(&'static str, Arc<AtomicU64>)> {
        [
            ("natlog.records", &self.records),
            ("natlog.lost", &self.lost),
            ("natlog.ipfix_messages", &self.ipfix_messages),
            ("natlog.ipfix_templates", &self.ipfix_templates),
            ("natlog.syslog_messages", &self.syslog_messages),
            ("natlog.send_errors", &self.send_errors),
        ]
        .into_iter()
        .map(|(k, v)| (k, Arc::clone(v)))
        .collect()
    }

    /// `(name, value)` pairs under dotted names.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.shared().into_iter().map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed))).collect()
    }
}

/// Records drained in one run-loop turn, with the wall-clock time of `Instant::ZERO` in µs since the
/// Unix epoch (as the loop saw it then).
struct Batch {
    zero_unix_us: u64,
    records: Vec<Record>,
}

/// A run loop's end of the exporter. Dropping the end that started the thread ([`Export::start`])
/// stops the thread once it has sent what every end handed it (after the other ends are dropped).
pub struct Export {
    tx: Option<SyncSender<Batch>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").finish_non_exhaustive()
    }
}

impl Export {
    /// Opens the sockets (errors name the flag) and starts the exporter thread.
    pub fn start(targets: &Targets) -> io::Result<Export> {
        let named = |flag: &str, e: io::Error| io::Error::new(e.kind(), format!("{flag}: {e}"));
        let ipfix = match &targets.ipfix {
            Some(t) => {
                let bind: SocketAddr =
                    if t.collector.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }
                        .expect("valid");
                let s = UdpSocket::bind(bind).map_err(|e| named("--ipfix-collector", e))?;
                s.connect(t.collector).map_err(|e| named("--ipfix-collector", e))?;
                Some((s, ipfix::Encoder::new(t.domain, t.max_message), t.template_refresh))
            }
            None => None,
        };
        let syslog = match &targets.syslog {
            Some(SyslogTarget::Udp(a)) => {
                let bind: SocketAddr =
                    if a.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("valid");
                let s = UdpSocket::bind(bind).map_err(|e| named("--syslog", e))?;
                s.connect(a).map_err(|e| named("--syslog", e))?;
                Some(Sink::Udp(s))
            }
            Some(SyslogTarget::Unix(p)) => {
                let s = UnixDatagram::unbound().map_err(|e| named("--syslog", e))?;
                s.connect(p).map_err(|e| named(&format!("--syslog unix:{}", p.display()), e))?;
                // A reader that stops reading (a wedged syslog daemon) costs one short wait, then the
                // sink is skipped for a while (see `Worker::export`): the thread keeps up and stops.
                s.set_write_timeout(Some(UNIX_WRITE_TIMEOUT))?;
                Some(Sink::Unix(s))
            }
            None => None,
        };
        let origin =
            syslog::Origin { facility: targets.facility, hostname: hostname(), pid: std::process::id() };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let worker =
            Worker { rx, ipfix, syslog, origin, counters: Arc::clone(&counters), syslog_stalled_until: None };
        let thread = std::thread::Builder::new().name("ftpnat-natlog".into()).spawn(move || worker.run())?;
        Ok(Export { tx: Some(tx), counters, thread: Some(thread) })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Another end of the same exporter, for another worker's run loop: its records go to the same
    /// thread, encoder and counters. Dropping it only closes this end.
    pub fn another(&self) -> Export {
        Export { tx: self.tx.clone(), counters: Arc::clone(&self.counters), thread: None }
    }

    /// Whether this is the end that started the thread (the one that reports the shared counters in a
    /// stop summary, so that N workers do not count them N times).
    pub fn is_first(&self) -> bool {
        self.thread.is_some()
    }

    /// Moves up to [`DRAIN_PER_TURN`] records from `log` to the exporter thread. `now` is the engine's
    /// clock this turn. Never blocks: if the thread is too far behind, the records are counted as lost.
    pub fn drain(&mut self, log: &mut Log, now: Instant) {
        if log.is_empty() {
            return;
        }
        let records: Vec<Record> = std::iter::from_fn(|| log.pop()).take(DRAIN_PER_TURN).collect();
        let wall =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let n = records.len() as u64;
        let batch = Batch { zero_unix_us: wall.saturating_sub(now.as_micros()), records };
        match self.tx.as_ref().map(|tx| tx.try_send(batch)) {
            Some(Ok(())) => {
                self.counters.records.fetch_add(n, Ordering::Relaxed);
            }
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.counters.lost.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// At the gateway's stop: hands over what `log` still holds, then `tail` (the engine's stop
    /// records), waiting for the thread to take them rather than dropping any (the loop has stopped;
    /// nothing else waits on it). Dropping the exporter afterwards waits until they are sent.
    pub fn finish(&mut self, log: &mut Log, tail: Vec<Record>, now: Instant) {
        let mut records: Vec<Record> = std::iter::from_fn(|| log.pop()).collect();
        records.extend(tail);
        let wall =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut rest = records.into_iter().peekable();
        while rest.peek().is_some() {
            let records: Vec<Record> = rest.by_ref().take(DRAIN_PER_TURN).collect();
            let n = records.len() as u64;
            let batch = Batch { zero_unix_us: wall.saturating_sub(now.as_micros()), records };
            match self.tx.as_ref().map(|tx| tx.send(batch)) {
                Some(Ok(())) => self.counters.records.fetch_add(n, Ordering::Relaxed),
                Some(Err(_)) | None => self.counters.lost.fetch_add(n, Ordering::Relaxed),
            };
        }
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Sink {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Sink {
    fn send(&self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Udp(s) => s.send(b),
            Sink::Unix(s) => s.send(b),
        }
    }
}

struct Worker {
    rx: Receiver<Batch>,
    ipfix: Option<(UdpSocket, ipfix::Encoder, Duration)>,
    syslog: Option<Sink>,
    origin: syslog::Origin,
    counters: Arc<Counters>,
    /// The syslog sink timed out: until then its messages are counted as send errors unsent.
    syslog_stalled_until: Option<std::time::Instant>,
}

/// How long one write to a full Unix syslog socket may wait.
const UNIX_WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a syslog sink that timed out is skipped before it is tried again.
const STALLED_SKIP: Duration = Duration::from_secs(1);

fn unix_secs() -> u32 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

impl Worker {
    fn send_templates(&mut self) {
        if let Some((s, enc, _)) = &self.ipfix {
            let m = enc.templates(unix_secs());
            match s.send(&m) {
                Ok(_) => self.counters.ipfix_templates.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    fn run(mut self) {
        let refresh = self.ipfix.as_ref().map_or(Duration::from_secs(3600), |(_, _, r)| *r);
        self.send_templates();
        let mut next = std::time::Instant::now() + refresh;
        loop {
            let wait = next.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(batch) => self.export(&batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if std::time::Instant::now() >= next {
                self.send_templates();
                next = std::time::Instant::now() + refresh;
            }
        }
    }

    fn export(&mut self, b: &Batch) {
        let zero = b.zero_unix_us;
        let ms = move |i: Instant| (zero + i.as_micros()) / 1000;
        if let Some((s, enc, _)) = &mut self.ipfix {
            let recs: Vec<(u16, Vec<u8>)> = b.records.iter().map(|r| ipfix::encode_record(r, &ms)).collect();
            for m in enc.data(&recs, unix_secs()) {
                match s.send(&m) {
                    Ok(_) => self.counters.ipfix_messages.fetch_add(1, Ordering::Relaxed),
                    Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        if let Some(sink) = &self.syslog {
            for r in &b.records {
                if self.syslog_stalled_until.is_some_and(|t| std::time::Instant::now() < t) {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let m = syslog::format(r, &self.origin, &ms);
                match sink.send(m.as_bytes()) {
                    Ok(_) => {
                        self.syslog_stalled_until = None;
                        self.counters.syslog_messages.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                            self.syslog_stalled_until = Some(std::time::Instant::now() + STALLED_SKIP);
                        }
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }
    }
}

/// This host's name for the syslog HOSTNAME field (`-` if it has none usable: RFC 5424 allows
/// printable ASCII only, at most 255 characters).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)) {
        name
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;
    use crate::nat::{LogPolicy, PortRange};
    use std::net::Ipv4Addr;

    #[test]
    fn target_syntax() {
        assert_eq!("udp:127.0.0.1:514".parse(), Ok(SyslogTarget::Udp("127.0.0.1:514".parse().unwrap())));
        assert_eq!("[::1]:514".parse(), Ok(SyslogTarget::Udp("[::1]:514".parse().unwrap())));
        assert_eq!("unix:/dev/log".parse(), Ok(SyslogTarget::Unix("/dev/log".into())));
        assert!("unix:dev/log".parse::<SyslogTarget>().is_err());
        assert!("localhost".parse::<SyslogTarget>().is_err());
        let mut t = Targets {
            ipfix: Some(IpfixTarget::new("127.0.0.1:4739".parse().unwrap())),
            ..Targets::default()
        };
        t.facility = 16;
        assert_eq!(t.validate(), Ok(()));
        t.facility = 24;
        assert!(t.validate().unwrap_err().starts_with("--syslog-facility"));
        t.facility = 16;
        t.ipfix.as_mut().unwrap().max_message = 100;
        assert!(t.validate().unwrap_err().starts_with("--ipfix-max-message"));
    }

    /// The whole path on loopback: records drained from a core log arrive as IPFIX messages (templates
    /// first) and syslog datagrams, with event times carried through.
    #[test]
    fn records_reach_both_collectors() {
        let ipfix_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let syslog_rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&ipfix_rx, &syslog_rx] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        let targets = Targets {
            ipfix: Some(IpfixTarget::new(ipfix_rx.local_addr().unwrap())),
            syslog: Some(SyslogTarget::Udp(syslog_rx.local_addr().unwrap())),
            facility: syslog::LOCAL0,
        };
        let mut export = Export::start(&targets).unwrap();
        let mut log = Log::default();
        log.set_policy(LogPolicy { enabled: true, sessions: false });
        log.push(|| Record::BlockAllocated {
            at: Instant::from_secs(5),
            inside: Ipv4Addr::new(100, 64, 0, 2),
            inside6: None,
            public: Ipv4Addr::new(198, 51, 100, 1),
            ports: PortRange::new(1024, 1535).unwrap(),
        });
        log.push(|| Record::PortsExhausted {
            at: Instant::from_secs(6),
            proto: Proto::Tcp,
            public: Ipv4Addr::new(198, 51, 100, 1),
        });
        export.drain(&mut log, Instant::from_secs(10));
        assert!(log.is_empty());
        let mut buf = [0u8; 2048];
        let n = ipfix_rx.recv(&mut buf).unwrap();
        assert_eq!(u16::from_be_bytes([buf[16], buf[17]]), ipfix::TEMPLATE_SET, "templates first");
        assert!(n > 16);
        let n = ipfix_rx.recv(&mut buf).unwrap();
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]) as usize, n);
        let obs = u64::from_be_bytes(buf[20..28].try_into().unwrap());
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(
            (4_900..15_000).contains(&(wall - obs)),
            "the event was 5 s before the drain: {obs} vs {wall}"
        );
        let n = syslog_rx.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(line.starts_with("<134>1 ") && line.contains(" PBA [nat@32473 "), "{line}");
        let n = syslog_rx.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("<132>1 "));
        drop(export);
    }
}
