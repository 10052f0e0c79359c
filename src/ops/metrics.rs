//! `--metrics-listen ADDR:PORT`: the counters in the Prometheus/OpenMetrics text format over HTTP.
//!
//! Owns: mapping the engine's dotted counter names to metric families with labels (drops by reason,
//! ALG rewrites by kind, refusals by reason, pinholes by outcome, packets/bytes per side and
//! direction), the gauges (table occupancy, open pinholes, mappings), the run loop's turn-duration
//! histograms, and a minimal non-blocking HTTP/1.x responder (`GET /metrics`, one request per
//! connection, [`route`] reads the request head) served by the operations thread. The text format
//! itself is written by the `prometheus-client` crate. Must not: block, keep state between scrapes
//! (each scrape encodes a [`Counters`] snapshot the run loop took for it), or touch the engine.
//!
//! A counter the engine adds to [`crate::metrics::Metrics::for_each`] appears here by itself: names in
//! a known group get the group's label, any other `a.b` becomes `ftpnat_a_b_total`.
//!
//! Slots: at most 64 connections; one that has not sent its request head within 5 s, or stops reading
//! its response for 10 s, is cut off, and when every slot is taken the oldest connection still owing
//! its request makes room (so idle connections cannot keep a scrape out: slowloris).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::link::{Backend, Job, Server, Tag};
use super::loop_stats::{Histogram, TURN_BUCKETS_NS};
use super::peer::{Conn, Conns, Cut, Limits, ReadState};
use super::pollfd;
use super::view::Counters;
use crate::flow::Proto;

type Labels = Vec<(String, String)>;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request head longer than this is refused (431).
pub const MAX_REQUEST: usize = 8192;

/// Counter families with one label, keyed by the dotted prefix of the engine's counter names.
const GROUPS: &[(&str, &str, &str, &str)] = &[
    ("drops.", "drops", "reason", "Packets dropped, by reason"),
    (
        "alg.refused.",
        "alg_refusals",
        "reason",
        "FTP lines the ALG left as sent and opened nothing for, by reason",
    ),
    ("pinholes.", "pinholes", "outcome", "FTP data-connection pinholes, by outcome"),
    ("flows.", "flows", "event", "Connections created, expired or closed"),
    ("fragments.", "fragments", "what", "IPv4 fragments translated or created"),
];

/// A sample value.
#[derive(Debug, Clone, Copy)]
enum V {
    U(u64),
    F(f64),
}

/// One metric family, its series in a fixed order (the engine's counter order), so scrapes read alike.
#[derive(Debug)]
struct Fam {
    name: String,
    help: String,
    counter: bool,
    series: Vec<(Labels, V)>,
}

/// The families of one scrape, encoded by `prometheus-client` in the order they were built, then the
/// histograms (name, help, values).
#[derive(Debug)]
struct Snapshot(Vec<Fam>, Vec<(&'static str, &'static str, Histogram)>);

fn encode_value(e: MetricEncoder<'_>, counter: bool, v: V) -> std::fmt::Result {
    match (counter, v) {
        (true, V::U(u)) => ConstCounter::new(u).encode(e),
        (true, V::F(f)) => ConstCounter::new(f).encode(e),
        (false, V::U(u)) => ConstGauge::new(i64::try_from(u).unwrap_or(i64::MAX)).encode(e),
        (false, V::F(f)) => ConstGauge::new(f).encode(e),
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        for f in &self.0 {
            let kind = if f.counter { MetricType::Counter } else { MetricType::Gauge };
            let mut me = enc.encode_descriptor(&f.name, &f.help, None, kind)?;
            for (labels, v) in &f.series {
                if labels.is_empty() {
                    encode_value(me, f.counter, *v)?;
                    break;
                }
                encode_value(me.encode_family(labels)?, f.counter, *v)?;
            }
        }
        for (name, help, h) in &self.1 {
            let mut me = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            let secs = |ns: u64| ns as f64 / 1e9;
            let buckets: Vec<(f64, u64)> = TURN_BUCKETS_NS
                .iter()
                .map(|&b| secs(b))
                .chain([f64::INFINITY])
                .zip(h.buckets.iter().copied())
                .collect();
            me.encode_histogram::<NoLabelSet>(secs(h.sum_ns), h.count, &buckets, None)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// The family `name`, created (empty) on first use.
    fn fam(&mut self, name: &str, help: &str, counter: bool) -> &mut Fam {
        let i = match self.0.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.0.push(Fam { name: name.into(), help: help.into(), counter, series: Vec::new() });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    fn add(&mut self, name: &str, help: &str, counter: bool, labels: &[(&str, &str)], v: V) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.fam(name, help, counter).series.push((labels, v));
    }
}

/// The pool and block names of `view::nat_counters` that are gauges (the rest count up).
const GAUGES: [&str; 6] = ["addresses", "addresses_in_use", "hosts", "in_use", "idle", "total"];

/// The exposition of a counter snapshot (engine counters, gauges, `extra` names such as
/// `device.lan.rx_packets`, the loop's turn durations) and the process start time.
pub fn render(c: &Counters, start_time_unix: f64) -> String {
    let mut snap = Snapshot(Vec::new(), Vec::new());
    let mut visit = |name: &str, v: u64| {
        let parts: Vec<&str> = name.split('.').collect();
        let val = V::U(v);
        match parts.as_slice() {
            [what @ ("packets" | "bytes"), dir @ ("in" | "out"), side] => {
                let (n, h) = if *what == "packets" {
                    ("ftpnat_packets", "IPv4 packets the engine took in and sent out, per side")
                } else {
                    ("ftpnat_bytes", "IPv4 bytes the engine took in and sent out, per side")
                };
                snap.add(n, h, true, &[("side", side), ("direction", dir)], val);
            }
            ["alg", "rewrites", "total"] => {}
            ["alg", "rewrites", "zero_delta"] => snap.add(
                "ftpnat_alg_rewrites_zero_delta",
                "FTP rewrites whose replacement kept the line's length (no sequence delta)",
                true,
                &[],
                val,
            ),
            ["alg", "rewrites", kind] => snap.add(
                "ftpnat_alg_rewrites",
                "FTP announcements rewritten, by kind (port, eprt, 227, 229)",
                true,
                &[("kind", kind)],
                val,
            ),
            ["device", dev, what] => {
                let (n, h, label, l) = match *what {
                    "rx_packets" | "tx_packets" => (
                        "ftpnat_device_packets",
                        "Packets read from (rx) and written to (tx) each device",
                        "direction",
                        &what[..2],
                    ),
                    "rx_aggregates" => (
                        "ftpnat_device_aggregates",
                        "Segmentation-offload aggregates read from each device (each split into packets)",
                        "direction",
                        "rx",
                    ),
                    "rx_bytes" | "tx_bytes" => (
                        "ftpnat_device_bytes",
                        "Bytes read from (rx) and written to (tx) each device",
                        "direction",
                        &what[..2],
                    ),
                    _ => (
                        "ftpnat_device_errors",
                        "Device errors: tx_errors are writes the kernel refused, rx_errors reads that could not be framed",
                        "kind",
                        *what,
                    ),
                };
                snap.add(n, h, true, &[("device", dev), (label, l)], val);
            }
            ["ops", server, "cut_off", reason] => snap.add(
                "ftpnat_ops_clients_cut_off",
                "Control-socket and metrics clients cut off (request_timeout, stalled: not reading, evicted: \
                 oldest idle client when every slot was taken) or turned away (refused)",
                true,
                &[("server", server), ("reason", reason)],
                val,
            ),
            ["nat", "pool" | "blocks", what] if GAUGES.contains(what) => {
                let (n, h) = match (parts[1], *what) {
                    ("pool", "addresses") => ("ftpnat_nat_pool_addresses", "Public addresses in the pool"),
                    ("pool", "addresses_in_use") => {
                        ("ftpnat_nat_pool_addresses_in_use", "Pool addresses with at least one inside host paired")
                    }
                    ("pool", _) => ("ftpnat_nat_pool_hosts", "Inside hosts holding mappings or port blocks"),
                    (_, "in_use") => ("ftpnat_nat_blocks_in_use", "Port blocks held by inside hosts"),
                    (_, "idle") => ("ftpnat_nat_blocks_idle", "Port blocks with no mapping, waiting out their hold-down"),
                    _ => ("ftpnat_nat_blocks_total", "Port blocks in the pool"),
                };
                snap.add(n, h, false, &[], val);
            }
            ["nat", "blocks", what] => snap.add(
                &format!("ftpnat_nat_blocks_{what}"),
                "Port blocks allocated to and released by inside hosts",
                true,
                &[],
                val,
            ),
            ["nat", "exhausted", what] => snap.add(
                "ftpnat_nat_exhausted",
                "New mappings refused: no address with room (addresses), no port or block left (ports), the host's share (host_quota)",
                true,
                &[("what", what)],
                val,
            ),
            ["workers", "handoff", what] => snap.add(
                "ftpnat_handoff",
                "Packets workers handed each other (--workers N): sent, received, dropped (a full queue), \
                 fragments routed by their datagram, held for their first fragment, unrouted",
                true,
                &[("what", what)],
                val,
            ),
            ["workers", "reordered"] => snap.add(
                "ftpnat_workers_reordered",
                "Packets handed between workers (--workers N) that a later packet of their flow overtook",
                true,
                &[],
                val,
            ),
            ["workers", w, "rx_packets"] => snap.add(
                "ftpnat_worker_rx_packets",
                "Packets each worker read from its queues of both devices (--workers N)",
                true,
                &[("worker", w)],
                val,
            ),
            ["workers", w, "flows_active"] => snap.add(
                "ftpnat_worker_flows_active",
                "Connections in each worker's table (--workers N)",
                false,
                &[("worker", w)],
                val,
            ),
            ["capture", what] => {
                let h = match *what {
                    "packets" => "Packets written to the --capture file",
                    "dropped" => "Packets not captured because the capture writer fell behind (its queue is bounded)",
                    _ => "Capture file rotations",
                };
                snap.add(&format!("ftpnat_capture_{what}"), h, true, &[], val);
            }
            _ => match GROUPS.iter().find(|g| name.starts_with(g.0)) {
                Some(g) => snap.add(&format!("ftpnat_{}", g.1), g.3, true, &[(g.2, &name[g.0.len()..])], val),
                None => {
                    let n = format!("ftpnat_{}", name.replace(['.', '-'], "_"));
                    snap.add(&n, &format!("Counter {name}"), true, &[], val);
                }
            },
        }
    };
    c.for_each_metric(&mut visit);
    for (k, v) in &c.extra {
        visit(k, *v);
    }
    let gauge = |snap: &mut Snapshot, name: &str, help: &str, v: u64| {
        snap.add(name, help, false, &[], V::U(v));
    };
    gauge(&mut snap, "ftpnat_flows_active", "Connections in the table", c.flows_active);
    gauge(&mut snap, "ftpnat_flows_max", "Connection table bound (--max-flows)", c.flows_max);
    gauge(
        &mut snap,
        "ftpnat_pinholes_open",
        "FTP data-connection pinholes waiting for their connection",
        c.pinholes_active,
    );
    gauge(&mut snap, "ftpnat_nat_mappings", "Endpoint-independent mappings held", c.nat_mappings);
    for (p, n) in [Proto::Tcp, Proto::Udp, Proto::Icmp].iter().zip(c.ports_in_use) {
        let help = "Public ports taken (mappings and forwards), per protocol";
        snap.add("ftpnat_nat_ports_in_use", help, false, &[("proto", p.name())], V::U(n));
    }
    let help = "Events lost because the `ftpnat events` readers fell behind";
    snap.add("ftpnat_events_dropped", help, true, &[], V::U(c.events_dropped));
    let help = "Start time of the process since the Unix epoch";
    snap.add("ftpnat_start_time_seconds", help, false, &[], V::F(start_time_unix));
    let max = |h: &Histogram| V::F(h.max_ns as f64 / 1e9);
    let help = "Longest run-loop turn since the start (poll(2) returning to the next poll(2))";
    snap.add("ftpnat_loop_turn_max_seconds", help, false, &[], max(&c.times.turn));
    let help = "Longest time one run-loop turn spent on operations work since the start";
    snap.add("ftpnat_loop_ops_max_seconds", help, false, &[], max(&c.times.ops));
    let help = "Most CPU time one run-loop turn spent on operations work since the start";
    snap.add("ftpnat_loop_ops_cpu_max_seconds", help, false, &[], max(&c.times.ops_cpu));
    snap.1.push((
        "ftpnat_loop_turn_seconds",
        "Run-loop turns by duration: from poll(2) returning to the next poll(2), packets and operations work together",
        c.times.turn.clone(),
    ));
    snap.1.push((
        "ftpnat_loop_ops_seconds",
        "Run-loop turns by the time spent on operations work (listing slices, counter snapshots, events, \
         reload, capture hand-off; bounded per turn)",
        c.times.ops.clone(),
    ));
    snap.1.push((
        "ftpnat_loop_ops_cpu_seconds",
        "Run-loop turns that had an operations job, by the CPU time the loop thread spent on it (wall time \
         less time the scheduler ran something else)",
        c.times.ops_cpu.clone(),
    ));
    let mut reg = Registry::default();
    reg.register_collector(Box::new(snap));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Where a connection is in its one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    /// `GET /metrics`: waiting for the counters.
    Waiting,
    /// The response is queued; close once it is written.
    Reply,
}

impl super::peer::Phase for Phase {
    fn owes_request(&self) -> bool {
        *self == Phase::Request
    }
}

/// The HTTP listener and its clients.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    conns: Conns<TcpStream, Phase>,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer { listener, addr, conns: Conns::new(Limits::default()) })
    }

    /// Applies other limits than the defaults (tests use short timeouts).
    pub fn with_limits(mut self, limits: Limits) -> MetricsServer {
        self.conns.limits = limits;
        self
    }

    /// The bound address (the port is the real one when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Clients cut off or turned away so far, as `ops.metrics.cut_off.*` counters.
    pub fn counters(&self, out: &mut Vec<(String, u64)>) {
        self.conns.counts.counters("metrics", out);
    }

    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        for c in &self.conns.list {
            let ev = match c.phase {
                Phase::Request => libc::POLLIN,
                Phase::Waiting => 0,
                Phase::Reply => libc::POLLOUT,
            };
            fds.push(pollfd(c.peer.sock.as_raw_fd(), ev));
        }
        1 + self.conns.list.len()
    }

    pub fn handle(&mut self, fds: &[libc::pollfd], backend: &mut Backend) {
        for (c, f) in self.conns.list.iter_mut().zip(fds.iter().skip(1)) {
            if f.revents != 0 && c.cut.is_none() {
                serve(c, f.revents, backend);
            }
        }
        if fds.first().is_some_and(|f| f.revents & libc::POLLIN != 0) {
            loop {
                match self.listener.accept() {
                    Ok((sock, _)) => {
                        if sock.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let busy = respond(Route::Busy, String::new);
                        self.conns.admit(sock, Phase::Request, &busy);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The counters a scrape waits for came back.
    pub fn on_counters(&mut self, id: u64, counters: &Counters, start_unix: f64) {
        let Some(c) = self.conns.get_mut(id) else { return };
        if c.phase != Phase::Waiting {
            return;
        }
        c.peer.queue(&respond(Route::Metrics, || render(counters, start_unix)));
        c.phase = Phase::Reply;
        finish_write(c);
    }

    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.conns.deadline()
    }

    /// Cuts off clients past their deadlines, then closes every client that is done.
    pub fn expire(&mut self, now: std::time::Instant) {
        self.conns.expire(now);
        self.conns.sweep();
    }
}

type Client = Conn<TcpStream, Phase>;

fn finish_write(c: &mut Client) {
    let last = c.phase == Phase::Reply;
    c.write_out(last);
}

fn serve(c: &mut Client, revents: libc::c_short, backend: &mut Backend) {
    if revents & libc::POLLNVAL != 0 {
        c.cut = Some(Cut::Done);
        return;
    }
    if c.phase == Phase::Request {
        let state = c.peer.read_available(MAX_REQUEST);
        let route = match state {
            // Over the limit: answered, not just dropped.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Some(Route::TooLarge),
            Err(_) => {
                c.cut = Some(Cut::Done);
                return;
            }
            Ok(s) => match route(&c.peer.input, MAX_REQUEST) {
                None if s == ReadState::Eof => {
                    c.cut = Some(Cut::Done);
                    return;
                }
                r => r,
            },
        };
        let Some(route) = route else { return };
        c.peer.input = Vec::new();
        if route == Route::Metrics {
            backend.submit(Job::Counters { tag: Tag { server: Server::Metrics, client: c.id } });
            c.phase = Phase::Waiting;
            return;
        }
        c.peer.queue(&respond(route, String::new));
        c.phase = Phase::Reply;
    } else if revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        c.cut = Some(Cut::Done);
        return;
    }
    finish_write(c);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    /// `GET /`: a pointer to /metrics.
    Index,
    /// `GET` of anything else.
    NotFound,
    /// Another method.
    NotAllowed,
    /// Not `METHOD TARGET HTTP/x.y`.
    BadRequest,
    /// The head exceeds the limit.
    TooLarge,
    /// Every connection slot is busy (sent to a connection turned away).
    Busy,
}

/// Reads an HTTP/1.x request head from the start of `input`: `None` while it is incomplete (no empty
/// line yet, and at most `max` bytes); what it asks for once it is complete (RFC 9112 §2.2: lines end
/// in CRLF, a bare LF is accepted too). Bytes after the head are never looked at.
pub fn route(input: &[u8], max: usize) -> Option<Route> {
    let end = match (find(input, b"\r\n\r\n"), find(input, b"\n\n")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => match a.or(b) {
            Some(e) => e,
            None if input.len() > max => return Some(Route::TooLarge),
            None => return None,
        },
    };
    if end > max {
        return Some(Route::TooLarge);
    }
    let head = &input[..end];
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Some(Route::BadRequest);
    };
    if !version.starts_with(b"HTTP/1.") || !target.starts_with(b"/") {
        return Some(Route::BadRequest);
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    Some(match (method, path) {
        (b"GET", b"/metrics") => Route::Metrics,
        (b"GET", b"/") => Route::Index,
        (b"GET", _) => Route::NotFound,
        _ => Route::NotAllowed,
    })
}

/// The whole HTTP response for `route`; `body` is called for [`Route::Metrics`] only.
pub fn respond(route: Route, body: impl FnOnce() -> String) -> Vec<u8> {
    let text = "text/plain; charset=utf-8";
    let (status, ctype, body) = match route {
        Route::Metrics => ("200 OK", CONTENT_TYPE, body()),
        Route::Index => ("200 OK", text, "ftpnat: metrics are at /metrics\n".into()),
        Route::NotFound => ("404 Not Found", text, "not found; try /metrics\n".into()),
        Route::NotAllowed => ("405 Method Not Allowed", text, "only GET\n".into()),
        Route::BadRequest => ("400 Bad Request", text, "not an HTTP/1.x request\n".into()),
        Route::TooLarge => ("431 Request Header Fields Too Large", text, "request head too large\n".into()),
        Route::Busy => ("503 Service Unavailable", text, "too many connections; try again\n".into()),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::metrics::DropReason;
    use crate::ops::loop_stats::LoopTimes;

    #[test]
    fn exposition_has_labelled_families_and_gauges() {
        let engine =
            Engine::new(Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.1".parse().unwrap()));
        let mut extra =
            vec![("device.lan.rx_packets".to_string(), 7), ("device.wan.tx_errors".to_string(), 2)];
        extra.push(("ops.metrics.cut_off.evicted".into(), 3));
        extra.push(("capture.dropped".into(), 4));
        extra.push(("workers.reordered".into(), 0));
        let mut times = LoopTimes::default();
        times.turn.record(std::time::Duration::from_micros(30));
        times.turn.record(std::time::Duration::from_millis(2));
        let text = render(&Counters::take(&engine, extra, &times), 1.5);
        for want in [
            "ftpnat_drops_total{reason=\"no_mapping\"} 0",
            "ftpnat_alg_rewrites_total{kind=\"227\"} 0",
            "ftpnat_alg_rewrites_zero_delta_total 0",
            "ftpnat_alg_refusals_total{reason=\"third_host\"} 0",
            "ftpnat_pinholes_total{outcome=\"expired\"} 0",
            "ftpnat_packets_total{side=\"wan\",direction=\"out\"} 0",
            "ftpnat_device_packets_total{device=\"lan\",direction=\"rx\"} 7",
            "ftpnat_device_errors_total{device=\"wan\",kind=\"tx_errors\"} 2",
            "ftpnat_ops_clients_cut_off_total{server=\"metrics\",reason=\"evicted\"} 3",
            "ftpnat_capture_dropped_total 4",
            "ftpnat_workers_reordered_total 0",
            "ftpnat_flows_active 0",
            "ftpnat_flows_max 262144",
            "ftpnat_icmp_errors_sent_total 0",
            "ftpnat_loop_turn_max_seconds 0.002",
            "# TYPE ftpnat_loop_turn_seconds histogram",
            "ftpnat_loop_turn_seconds_count 2",
            "ftpnat_loop_turn_seconds_bucket{le=\"0.00005\"} 1",
            "ftpnat_loop_turn_seconds_bucket{le=\"0.001\"} 1",
            "ftpnat_loop_turn_seconds_bucket{le=\"0.0025\"} 2",
            "ftpnat_loop_turn_seconds_bucket{le=\"+Inf\"} 2",
            "ftpnat_loop_ops_seconds_count 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let drops = text.lines().filter(|l| l.starts_with("ftpnat_drops_total{")).count();
        assert_eq!(drops, DropReason::COUNT, "every drop reason is exported, zeros included");
    }

    #[test]
    fn request_heads_route() {
        let r = |s: &str| route(s.as_bytes(), MAX_REQUEST);
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(Route::Metrics));
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\n\n"), Some(Route::Metrics));
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n"), None, "incomplete");
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Some(Route::Index));
        assert_eq!(r("GET /nope HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Some(Route::NotAllowed));
        assert_eq!(r("GET /metrics\r\n\r\n"), Some(Route::BadRequest), "HTTP/0.9 style");
        assert_eq!(r("GET metrics HTTP/1.1\r\n\r\n"), Some(Route::BadRequest));
        assert_eq!(r("GET /metrics SPDY/3\r\n\r\n"), Some(Route::BadRequest));
        assert_eq!(r("\r\n\r\n"), Some(Route::BadRequest));
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST));
        assert_eq!(r(&long), Some(Route::TooLarge));
        assert_eq!(r(&format!("{long}\r\n")), Some(Route::TooLarge));
    }

    #[test]
    fn http_answers() {
        let ok = String::from_utf8(respond(Route::Metrics, || "m 1\n".into())).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        for (route, status) in [
            (Route::NotFound, "404"),
            (Route::NotAllowed, "405"),
            (Route::BadRequest, "400"),
            (Route::TooLarge, "431"),
            (Route::Busy, "503"),
        ] {
            let text = String::from_utf8(respond(route, || unreachable!("no body for {route:?}"))).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        }
    }
}
