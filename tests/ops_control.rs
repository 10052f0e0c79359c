//! The operations servers against a running loop, without root: the real run loop in a thread between
//! two in-memory devices (`MemDevice::pair`), with the control socket, the metrics endpoint, a capture
//! file and a hand-triggered reload. Packets are built with etherparse (tests/engine_support).

#[path = "engine_support/mod.rs"]
mod engine_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use engine_support::*;
use ftpnat::io::device::{MemDevice, MemPeer};
use ftpnat::io::pcap::CaptureReader;
use ftpnat::io::runtime::{Runtime, Stop, StopHandle};
use ftpnat::ops::capture::{Capture, CaptureOptions};
use ftpnat::ops::client;
use ftpnat::ops::control::ControlServer;
use ftpnat::ops::metrics::MetricsServer;
use ftpnat::ops::view::{Cmd, Filter, ProtoName, Request};
use ftpnat::ops::{Ops, Reload};
use ftpnat::{Config, Engine};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

struct Gateway {
    dir: PathBuf,
    lan: MemPeer,
    wan: MemPeer,
    stop: StopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
    metrics: SocketAddr,
    capture: PathBuf,
    reload: UnixStream,
    next_config: Arc<Mutex<Config>>,
}

impl Gateway {
    fn start(name: &str, capture_max: u64, capture_files: usize) -> Gateway {
        let dir = std::env::temp_dir().join(format!("ftpnat-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        let capture = dir.join("cap.pcapng");
        let (lan_dev, lan) = MemDevice::pair("memlan").unwrap();
        let (wan_dev, wan) = MemDevice::pair("memwan").unwrap();
        let next_config = Arc::new(Mutex::new(config()));
        let shared = Arc::clone(&next_config);
        let (reload, trigger) =
            Reload::manual(Box::new(move || Ok((shared.lock().unwrap().clone(), Vec::new())))).unwrap();
        let mut ops = Ops::new();
        ops.control = Some(ControlServer::bind(&socket).unwrap());
        let m = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let metrics = m.local_addr();
        ops.metrics = Some(m);
        let opts = CaptureOptions { path: capture.clone(), max_bytes: capture_max, files: capture_files };
        ops.capture = Some(Capture::create(opts, ["memlan", "memwan"]).unwrap());
        ops.reload = Some(reload);
        let (stop_rx, stop) = Stop::manual().unwrap();
        let thread = std::thread::spawn(move || {
            let mut rt = Runtime::new(Engine::new(config()), lan_dev, wan_dev).with_ops(ops);
            rt.run(&stop_rx).expect("the loop ends on request");
        });
        Gateway {
            dir,
            lan,
            wan,
            stop,
            thread: Some(thread),
            socket,
            metrics,
            capture,
            reload: trigger,
            next_config,
        }
    }

    /// Injects `pkt` on the LAN and returns what leaves on the WAN.
    fn out(&self, pkt: Vec<u8>) -> Vec<u8> {
        self.lan.inject(&pkt).unwrap();
        self.wan.take_within(WAIT).unwrap().expect("a packet on the wan")
    }

    /// Injects `pkt` on the WAN and returns what leaves on the LAN.
    fn inb(&self, pkt: Vec<u8>) -> Vec<u8> {
        self.wan.inject(&pkt).unwrap();
        self.lan.take_within(WAIT).unwrap().expect("a packet on the lan")
    }

    fn query(&self, cmd: Cmd, filter: Filter) -> Value {
        client::query(&self.socket, &Request { cmd, filter }).unwrap()
    }

    fn flows(&self, filter: Filter) -> Vec<Value> {
        self.query(Cmd::Flows, filter)["flows"].as_array().unwrap().clone()
    }

    fn finish(mut self) -> PathBuf {
        self.stop.stop().unwrap();
        self.thread.take().unwrap().join().unwrap();
        self.dir.clone()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.stop.stop();
            let _ = t.join();
        }
    }
}

/// An FTP control connection 10.0.0.2:40000 -> 198.51.100.2:21 through its handshake and the server's
/// greeting, then a PORT naming 10.0.0.2:40001. Returns the PORT segment as it left.
fn ftp_with_port(g: &Gateway) -> Vec<u8> {
    g.out(tcp(LAN_HOST, 40000, REMOTE, 21, 1000, 0, SYN, &[]));
    g.inb(tcp(REMOTE, 21, PUBLIC, 40000, 5000, 1001, SYNACK, &[]));
    g.out(tcp(LAN_HOST, 40000, REMOTE, 21, 1001, 5001, ACK, &[]));
    g.inb(tcp(REMOTE, 21, PUBLIC, 40000, 5001, 1001, PSHACK, b"220 ready\r\n"));
    g.out(tcp(LAN_HOST, 40000, REMOTE, 21, 1001, 5012, PSHACK, b"PORT 10,0,0,2,156,65\r\n"))
}

fn tcp_payload(pkt: &[u8]) -> Vec<u8> {
    let s = etherparse::SlicedPacket::from_ip(pkt).unwrap();
    match s.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => t.payload().to_vec(),
        _ => panic!("not tcp"),
    }
}

#[test]
fn show_and_events_against_a_running_loop() {
    let g = Gateway::start("show", 1 << 20, 2);
    let meta = std::fs::metadata(&g.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner-only socket");

    let (tx, rx) = mpsc::channel::<Value>();
    let socket = g.socket.clone();
    let (sub_tx, sub_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let req = Request { cmd: Cmd::Events, filter: Filter::default() };
        let _ = client::follow(&socket, &req, || sub_tx.send(()).unwrap(), |v| tx.send(v.clone()).is_ok());
    });
    sub_rx.recv_timeout(WAIT).expect("subscribed");

    let port = ftp_with_port(&g);
    assert_eq!(tcp_payload(&port), b"PORT 198,51,100,1,156,65\r\n");
    g.out(udp(LAN_HOST, 5353, REMOTE, 53, b"q"));

    let flows = g.flows(Filter::default());
    assert_eq!(flows.len(), 2, "{flows:?}");
    let ctl = flows.iter().find(|f| f["proto"] == "tcp").unwrap();
    assert_eq!(ctl["state"], "ESTABLISHED");
    assert_eq!(ctl["inside"], "10.0.0.2:40000");
    assert_eq!(ctl["outside"], "198.51.100.1:40000");
    assert_eq!(ctl["remote"], "198.51.100.2:21");
    assert_eq!(ctl["packets"]["orig"], 3);
    assert_eq!(ctl["packets"]["reply"], 2);
    assert_eq!(ctl["alg"]["delta_orig"], 4, "10,0,0,2 -> 198,51,100,1 adds 4 bytes");
    assert_eq!(ctl["alg"]["delta_reply"], 0);
    assert_eq!(ctl["alg"]["pinholes"], serde_json::json!([40001]));
    let text = client::render_flows(&serde_json::json!({ "flows": flows }));
    assert!(text.contains("ftp clear client=inside seq-delta orig=+4 reply=0 pinholes=[40001]"), "{text}");

    let only = |addr: Option<&str>, port: Option<u16>, proto: Option<ProtoName>| {
        g.flows(Filter { addr: addr.map(|a| a.parse().unwrap()), port, proto }).len()
    };
    assert_eq!(only(Some("10.0.0.2"), None, None), 2);
    assert_eq!(only(Some("10.0.0.9"), None, None), 0);
    assert_eq!(only(None, Some(21), None), 1);
    assert_eq!(only(None, None, Some(ProtoName::Udp)), 1);
    assert_eq!(only(Some("198.51.100.2"), Some(53), Some(ProtoName::Tcp)), 0);

    let ph = g.query(Cmd::Pinholes, Filter::default());
    let ph = ph["pinholes"].as_array().unwrap();
    assert_eq!(ph.len(), 1);
    assert_eq!(ph[0]["peer"], "198.51.100.2");
    assert_eq!(ph[0]["public"], "198.51.100.1:40001");
    assert_eq!(ph[0]["inside"], "10.0.0.2:40001");
    assert_eq!(ph[0]["control"], ctl["id"]);
    assert!(ph[0]["expires_in_ms"].as_u64().unwrap() <= 60_000);

    let st = g.query(Cmd::Stats, Filter::default());
    assert_eq!(st["stats"]["alg.rewrites.port"], 1);
    assert_eq!(st["stats"]["flows.active"], 2);
    assert_eq!(st["stats"]["device.lan.rx_packets"], 4);
    assert_eq!(st["stats"]["drops.no_mapping"], 0, "every drop reason is listed, zeros too");

    // The stream shows what happened, in order.
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let v = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("events so far: {kinds:?}"));
        kinds.push(v["event"].as_str().unwrap().to_string());
        if v["event"] == "rewrite" {
            assert_eq!(v["old"], "10,0,0,2,156,65");
            assert_eq!(v["new"], "198,51,100,1,156,65");
            assert_eq!(v["delta"], 4);
        }
    }
    assert_eq!(kinds, ["flow_new", "pinhole_create", "rewrite", "flow_new"]);

    // The data connection through the pinhole: pinhole_use, then its flow.
    g.inb(tcp(REMOTE, 20, PUBLIC, 40001, 9000, 0, SYN, &[]));
    let mut seen = Vec::new();
    while !seen.iter().any(|k| k == "pinhole_use") {
        let v = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no pinhole_use in {seen:?}"));
        seen.push(v["event"].as_str().unwrap().to_string());
    }
    let data = g.flows(Filter { port: Some(40001), ..Filter::default() });
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["origin"], "pinhole");
    assert_eq!(data[0]["remote"], "198.51.100.2:20");

    // Bad requests get an error line, not a hang.
    let mut raw = UnixStream::connect(&g.socket).unwrap();
    raw.write_all(b"{\"cmd\":\"reboot\"}\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("{\"error\":\"bad request"), "{reply}");
    // Another user is refused even when the file mode would let it in (SO_PEERCRED at accept).
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(&g.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftpnat"))
            .args(["show", "stats", "--control-socket"])
            .arg(&g.socket)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("permission denied"), "{err}");
    }
    let socket = g.socket.clone();
    g.finish();
    assert!(!socket.exists(), "the socket file goes with the server");
}

/// Parses an OpenMetrics text exposition: samples by `name{labels}`, and the declared families.
fn parse_exposition(text: &str) -> (std::collections::HashMap<String, f64>, Vec<String>) {
    let mut samples = std::collections::HashMap::new();
    let mut families = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split_whitespace().next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad metric name in {line:?}");
        assert!(families.iter().any(|f| name.starts_with(f.as_str())), "sample {name} before its # TYPE");
        assert!(samples.insert(series.to_string(), v).is_none(), "duplicate series {series}");
    }
    (samples, families)
}

fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_endpoint_is_scraped_and_parsed() {
    let g = Gateway::start("metrics", 1 << 20, 2);
    ftp_with_port(&g);
    // An unsolicited inbound packet: dropped with a reason.
    g.wan.inject(&udp(REMOTE, 9, PUBLIC, 7777, b"x")).unwrap();
    let (head, body) = scrape(g.metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: application/openmetrics-text"), "{head}");
    let (m, families) = parse_exposition(&body);
    assert!(body.ends_with("# EOF\n"));
    for f in
        ["ftpnat_drops", "ftpnat_alg_rewrites", "ftpnat_pinholes", "ftpnat_flows_active", "ftpnat_packets"]
    {
        assert!(families.iter().any(|x| x == f), "family {f} missing: {families:?}");
    }
    assert_eq!(m["ftpnat_alg_rewrites_total{kind=\"port\"}"], 1.0);
    assert_eq!(m["ftpnat_alg_rewrites_zero_delta_total"], 0.0);
    assert_eq!(m["ftpnat_pinholes_total{outcome=\"created\"}"], 1.0);
    assert_eq!(m["ftpnat_flows_active"], 1.0);
    assert_eq!(m["ftpnat_pinholes_open"], 1.0);
    assert_eq!(m["ftpnat_packets_total{side=\"lan\",direction=\"in\"}"], 3.0);
    assert_eq!(m["ftpnat_device_packets_total{device=\"wan\",direction=\"rx\"}"], 3.0);
    // The drop may still be in flight when the scrape is answered: scrape until it shows.
    let ok = (0..50).any(|_| {
        let (_, b) = scrape(g.metrics, "/metrics");
        let (m, _) = parse_exposition(&b);
        if m["ftpnat_drops_total{reason=\"no_mapping\"}"] == 1.0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(ok, "the no_mapping drop never showed");
    let (head, _) = scrape(g.metrics, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A client that connects and says nothing does not hold the loop up.
    let idle = TcpStream::connect(g.metrics).unwrap();
    g.out(udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    drop(idle);
    g.finish();
}

#[test]
fn reload_applies_forwards_and_timeouts_without_dropping_flows() {
    let g = Gateway::start("reload", 1 << 20, 2);
    g.out(udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    // Before: nothing is forwarded on 2121.
    g.wan.inject(&tcp(REMOTE, 50000, PUBLIC, 2121, 1, 0, SYN, &[])).unwrap();
    assert!(g.lan.take_within(Duration::from_millis(300)).unwrap().is_none());
    {
        let mut c = g.next_config.lock().unwrap();
        c.forwards.push("tcp:2121=10.0.0.3:21".parse().unwrap());
        c.timeouts.udp = Duration::from_secs(600);
        // Needs a restart: must be reported and not applied.
        c.public_ip = "198.51.100.77".parse().unwrap();
    }
    (&g.reload).write_all(&[1]).unwrap();
    // The forward works once the reload is through; the UDP flow is still there.
    let mut got = None;
    for _ in 0..50 {
        g.wan.inject(&tcp(REMOTE, 50001, PUBLIC, 2121, 1, 0, SYN, &[])).unwrap();
        if let Some(p) = g.lan.take_within(Duration::from_millis(100)).unwrap() {
            got = Some(p);
            break;
        }
    }
    let p = got.expect("the added forward works");
    let seen = check(&p);
    assert_eq!(seen.dst, LAN_HOST2);
    let udp_flows = g.flows(Filter { proto: Some(ProtoName::Udp), ..Filter::default() });
    assert_eq!(udp_flows.len(), 1, "the flow survived the reload");
    assert!(udp_flows[0]["expires_in_ms"].as_u64().unwrap() <= 300_000, "old timeout until its next packet");
    // The public address was not changed under the flows.
    let out = g.out(udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    assert_eq!(check(&out).src, PUBLIC);
    let udp_flows = g.flows(Filter { proto: Some(ProtoName::Udp), ..Filter::default() });
    assert!(udp_flows[0]["expires_in_ms"].as_u64().unwrap() > 300_000, "new timeout after a packet");
    g.finish();
}

fn frames(path: &Path) -> Vec<ftpnat::io::pcap::Frame> {
    let mut r = CaptureReader::open(path).unwrap();
    let mut v = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        v.push(f);
    }
    v
}

/// (interface names, interface id of every packet) read with pcap-file directly.
fn interfaces(path: &Path) -> (Vec<String>, Vec<u32>) {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut r = PcapNgReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let (mut names, mut ids) = (Vec::new(), Vec::new());
    while let Some(b) = r.next_block() {
        match b.unwrap() {
            Block::InterfaceDescription(idb) => {
                for o in &idb.options {
                    if let InterfaceDescriptionOption::IfName(n) = o {
                        names.push(n.to_string());
                    }
                }
            }
            Block::EnhancedPacket(p) => ids.push(p.interface_id),
            _ => {}
        }
    }
    (names, ids)
}

/// Runs tshark on `path` when it is installed: it must read every packet without a warning.
fn tshark_reads(path: &Path, packets: usize) {
    let Ok(out) = std::process::Command::new("tshark").args(["-n", "-r"]).arg(path).output() else {
        eprintln!("tshark not installed: capture checked with the project's reader only");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    // tshark may complain about running as root; nothing else is acceptable.
    let warnings: Vec<&str> = stderr.lines().filter(|l| !l.contains("Running as user \"root\"")).collect();
    assert!(out.status.success() && warnings.is_empty(), "tshark on {}: {stderr}", path.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), packets, "tshark saw: {stdout}");
}

#[test]
fn capture_holds_both_sides_and_rotates() {
    let g = Gateway::start("capture", 1 << 20, 2);
    ftp_with_port(&g);
    let cap = g.capture.clone();
    let dir = g.finish();
    let mode = std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "captures hold payload: owner-only");
    let f = frames(&cap);
    // Out on the wan: SYN, ACK, PORT; out on the lan: the SYN-ACK and the greeting.
    assert_eq!(f.len(), 5);
    assert!(f.iter().all(|fr| fr.linktype.0 == 228), "LINKTYPE_IPV4");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    assert!(f.iter().all(|fr| fr.ts_micros <= now && now - fr.ts_micros < 60_000_000), "real timestamps");
    assert_eq!(tcp_payload(&f[4].data), b"PORT 198,51,100,1,156,65\r\n", "what was emitted, rewritten");
    let (names, ids) = interfaces(&cap);
    assert_eq!(names, ["memlan", "memwan"]);
    assert_eq!(ids, [1, 0, 1, 0, 1], "SYN out wan, SYN-ACK out lan, ACK out wan, 220 out lan, PORT out wan");
    tshark_reads(&cap, 5);
    let _ = std::fs::remove_dir_all(dir);

    // Rotation: 4 KiB files, 3 kept.
    let g = Gateway::start("rotate", 4096, 3);
    for i in 0..40u16 {
        g.out(udp(LAN_HOST, 6000 + i, REMOTE, 53, &[0u8; 400]));
    }
    let cap = g.capture.clone();
    let dir = g.finish();
    let rotated = |i: usize| PathBuf::from(format!("{}.{i}", cap.display()));
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists(), "FILE, FILE.1, FILE.2");
    let mut total = 0;
    for p in [cap.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 4096, "{} is {size} bytes", p.display());
        let n = frames(&p).len();
        assert!(n > 0, "{} has packets", p.display());
        tshark_reads(&p, n);
        total += n;
    }
    assert!(total < 40, "the oldest packets were rotated away");
    let _ = std::fs::remove_dir_all(dir);
}
