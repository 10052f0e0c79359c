//! `--metrics-listen ADDR:PORT`: the counters in the Prometheus/OpenMetrics text format over HTTP.
//!
//! Owns: mapping the engine's dotted counter names to metric families with labels (drops by reason,
//! ALG rewrites by kind, refusals by reason, pinholes by outcome, packets/bytes per side and
//! direction), the gauges (table occupancy, open pinholes, mappings), and a minimal non-blocking
//! HTTP/1.x responder (`GET /metrics`, one request per connection) served by the run loop. The text
//! format itself is written by the `prometheus-client` crate. Must not: block, keep state between
//! scrapes (each scrape encodes the engine's counters as they are), or touch the engine mutably.
//!
//! A counter the engine adds to [`crate::metrics::Metrics::for_each`] appears here by itself: names in
//! a known group get the group's label, any other `a.b` becomes `ftpnat_a_b_total`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::peer::{Peer, ReadState};
use super::{pollfd, LoopState};
use crate::engine::Engine;
use crate::flow::Proto;

type Labels = Vec<(String, String)>;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const MAX_CLIENTS: usize = 16;
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The families of one scrape, encoded by `prometheus-client` in the order they were built.
#[derive(Debug)]
struct Snapshot(Vec<Fam>);

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

/// The exposition of `engine`'s counters plus `extra` (`device.lan.rx_packets`-style names) and the
/// process start time.
pub fn render(engine: &Engine, extra: &[(String, u64)], start_time_unix: f64) -> String {
    let mut snap = Snapshot(Vec::new());
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
            _ => match GROUPS.iter().find(|g| name.starts_with(g.0)) {
                Some(g) => snap.add(&format!("ftpnat_{}", g.1), g.3, true, &[(g.2, &name[g.0.len()..])], val),
                None => {
                    let n = format!("ftpnat_{}", name.replace(['.', '-'], "_"));
                    snap.add(&n, &format!("Counter {name}"), true, &[], val);
                }
            },
        }
    };
    engine.metrics().for_each(&mut visit);
    for (k, v) in extra {
        visit(k, *v);
    }
    let gauge = |snap: &mut Snapshot, name: &str, help: &str, v: usize| {
        snap.add(name, help, false, &[], V::U(v as u64));
    };
    gauge(&mut snap, "ftpnat_flows_active", "Connections in the table", engine.flow_count());
    gauge(&mut snap, "ftpnat_flows_max", "Connection table bound (--max-flows)", engine.table().capacity());
    gauge(
        &mut snap,
        "ftpnat_pinholes_open",
        "FTP data-connection pinholes waiting for their connection",
        engine.pinholes().len(),
    );
    gauge(
        &mut snap,
        "ftpnat_nat_mappings",
        "Endpoint-independent mappings held",
        engine.nat().mapping_count(),
    );
    for p in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let n = engine.nat().ports_in_use(p) as u64;
        let help = "Public ports taken (mappings and forwards), per protocol";
        snap.add("ftpnat_nat_ports_in_use", help, false, &[("proto", p.name())], V::U(n));
    }
    let help = "Events lost because the `ftpnat events` readers fell behind";
    snap.add("ftpnat_events_dropped", help, true, &[], V::U(engine.events_dropped()));
    let help = "Start time of the process since the Unix epoch";
    snap.add("ftpnat_start_time_seconds", help, false, &[], V::F(start_time_unix));
    let mut reg = Registry::default();
    reg.register_collector(Box::new(snap));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The HTTP listener and its clients.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    clients: Vec<Peer<TcpStream>>,
    done: Vec<bool>,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer { listener, addr, clients: Vec::new(), done: Vec::new() })
    }

    /// The bound address (the port is the real one when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn register(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        for (c, done) in self.clients.iter().zip(&self.done) {
            fds.push(pollfd(c.sock.as_raw_fd(), if *done { libc::POLLOUT } else { libc::POLLIN }));
        }
        1 + self.clients.len()
    }

    pub fn handle(&mut self, fds: &[libc::pollfd], st: &mut LoopState<'_>) {
        let mut gone = Vec::new();
        for i in 0..self.clients.len() {
            let revents = fds.get(i + 1).map_or(0, |f| f.revents);
            if revents != 0 && !self.serve(i, revents, st) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
            self.done.remove(i);
        }
        if fds.first().is_some_and(|f| f.revents & libc::POLLIN != 0) {
            loop {
                match self.listener.accept() {
                    Ok((sock, _)) => {
                        if self.clients.len() >= MAX_CLIENTS || sock.set_nonblocking(true).is_err() {
                            continue;
                        }
                        self.clients.push(Peer::new(sock));
                        self.done.push(false);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }

    fn serve(&mut self, i: usize, revents: libc::c_short, st: &mut LoopState<'_>) -> bool {
        if revents & libc::POLLNVAL != 0 {
            return false;
        }
        let c = &mut self.clients[i];
        if !self.done[i] {
            let state = match c.read_available(MAX_REQUEST) {
                Ok(s) => s,
                Err(_) => return false,
            };
            let Some(end) = find(&c.input, b"\r\n\r\n").or_else(|| find(&c.input, b"\n\n")) else {
                return state == ReadState::Open;
            };
            let head = String::from_utf8_lossy(&c.input[..end]).into_owned();
            c.input.clear();
            let response = respond(&head, || render(st.engine, &st.extra_counters(), st.start_unix));
            c.queue(&response);
            self.done[i] = true;
        }
        matches!(c.flush(), Ok(false))
    }

    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.clients
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| !**d)
            .map(|(c, _)| c.opened + REQUEST_TIMEOUT)
            .min()
    }

    pub fn expire(&mut self, now: std::time::Instant) {
        let mut i = 0;
        while i < self.clients.len() {
            if !self.done[i] && now >= self.clients[i].opened + REQUEST_TIMEOUT {
                self.clients.remove(i);
                self.done.remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The whole HTTP response to a request head (`GET /metrics HTTP/1.1` ...).
fn respond(head: &str, body: impl FnOnce() -> String) -> Vec<u8> {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", CONTENT_TYPE, body()),
        ("GET", "/") => ("200 OK", "text/plain; charset=utf-8", "ftpnat: metrics are at /metrics\n".into()),
        ("GET", _) => ("404 Not Found", "text/plain; charset=utf-8", "not found; try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".into()),
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
    use crate::metrics::DropReason;

    #[test]
    fn exposition_has_labelled_families_and_gauges() {
        let engine =
            Engine::new(Config::new(vec!["10.0.0.0/24".parse().unwrap()], "198.51.100.1".parse().unwrap()));
        let extra = vec![("device.lan.rx_packets".to_string(), 7), ("device.wan.tx_errors".to_string(), 2)];
        let text = render(&engine, &extra, 1.5);
        for want in [
            "ftpnat_drops_total{reason=\"no_mapping\"} 0",
            "ftpnat_alg_rewrites_total{kind=\"227\"} 0",
            "ftpnat_alg_rewrites_zero_delta_total 0",
            "ftpnat_alg_refusals_total{reason=\"third_host\"} 0",
            "ftpnat_pinholes_total{outcome=\"expired\"} 0",
            "ftpnat_packets_total{side=\"wan\",direction=\"out\"} 0",
            "ftpnat_device_packets_total{device=\"lan\",direction=\"rx\"} 7",
            "ftpnat_device_errors_total{device=\"wan\",kind=\"tx_errors\"} 2",
            "ftpnat_flows_active 0",
            "ftpnat_flows_max 262144",
            "ftpnat_icmp_errors_sent_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let drops = text.lines().filter(|l| l.starts_with("ftpnat_drops_total{")).count();
        assert_eq!(drops, DropReason::COUNT, "every drop reason is exported, zeros included");
    }

    #[test]
    fn http_answers() {
        let ok = String::from_utf8(respond("GET /metrics HTTP/1.1\r\nHost: x", || "m 1\n".into())).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        let nf = String::from_utf8(respond("GET /nope HTTP/1.1", String::new)).unwrap();
        assert!(nf.starts_with("HTTP/1.1 404"));
        let na = String::from_utf8(respond("POST /metrics HTTP/1.1", String::new)).unwrap();
        assert!(na.starts_with("HTTP/1.1 405"));
    }
}
