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
use ftpnat::ops::peer::Limits;
use ftpnat::ops::view::{Cmd, Filter, ProtoName, Request};
use ftpnat::ops::{Ops, Reload};
use ftpnat::{Config, Engine, Instant, Side, Verdict};
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

/// How a test gateway is set up beyond the defaults.
struct Setup {
    capture_max: u64,
    capture_files: usize,
    /// UDP flows put in the table before the loop starts (the engine is sans-IO: fed directly).
    flows: u32,
    control: Option<(Limits, usize)>,
    metrics: Option<Limits>,
    /// Called by the reload loader before it returns (a test can hold a reload up with it).
    on_reload: Option<Box<dyn FnMut() + Send>>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            capture_max: 1 << 20,
            capture_files: 2,
            flows: 0,
            control: None,
            metrics: None,
            on_reload: None,
        }
    }
}

/// UDP flow `i` of a filled table: inside 10.0.0.(2..) ports from 1024, to 198.51.100.2:(7000..7064).
const FILL_PER_HOST: u32 = 8192;

fn fill_packet(i: u32) -> Vec<u8> {
    // 8192 flows a host: half its default flow limit, so the test's own packets from LAN_HOST still pass.
    let host = std::net::Ipv4Addr::new(10, 0, 0, 2 + (i / FILL_PER_HOST) as u8);
    let sport = 1024 + ((i / 64) % 256) as u16;
    udp(host, sport, REMOTE, 7000 + (i % 64) as u16, b"x")
}

impl Gateway {
    fn start(name: &str, capture_max: u64, capture_files: usize) -> Gateway {
        Gateway::start_with(name, Setup { capture_max, capture_files, ..Setup::default() })
    }

    fn start_with(name: &str, mut setup: Setup) -> Gateway {
        let dir = std::env::temp_dir().join(format!("ftpnat-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        let capture = dir.join("cap.pcapng");
        let (lan_dev, lan) = MemDevice::pair("memlan").unwrap();
        let (wan_dev, wan) = MemDevice::pair("memwan").unwrap();
        let next_config = Arc::new(Mutex::new(config()));
        let shared = Arc::clone(&next_config);
        let mut on_reload = setup.on_reload.take();
        let (reload, trigger) = Reload::manual(Box::new(move || {
            if let Some(f) = &mut on_reload {
                f();
            }
            Ok((shared.lock().unwrap().clone(), Vec::new()))
        }))
        .unwrap();
        let mut ops = Ops::new();
        let mut control = ControlServer::bind(&socket).unwrap();
        if let Some((limits, subscribers)) = setup.control {
            control = control.with_limits(limits, subscribers);
        }
        ops.control = Some(control);
        let mut m = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        if let Some(limits) = setup.metrics {
            m = m.with_limits(limits);
        }
        let metrics = m.local_addr();
        ops.metrics = Some(m);
        let opts = CaptureOptions {
            path: capture.clone(),
            max_bytes: setup.capture_max,
            files: setup.capture_files,
        };
        ops.capture = Some(Capture::create(opts, ["memlan", "memwan"]).unwrap());
        ops.reload = Some(reload);
        let mut engine = Engine::new(config());
        for i in 0..setup.flows {
            let v = engine.handle_packet(Instant::ZERO, Side::Inside, &mut fill_packet(i));
            assert!(matches!(v, Verdict::Forward(_)), "fill packet {i}: {v:?}");
        }
        assert_eq!(engine.flow_count(), setup.flows as usize);
        let (stop_rx, stop) = Stop::manual().unwrap();
        let thread = std::thread::spawn(move || {
            let mut rt = Runtime::new(engine, lan_dev, wan_dev).with_ops(ops).unwrap();
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
        client::query(&self.socket, &Request::new(cmd, filter)).unwrap()
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
        let req = Request::new(Cmd::Events, Filter::default());
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
    // The dropped packet may still be in flight when the scrape is answered: scrape until it shows.
    let ok = (0..50).any(|_| {
        let (_, b) = scrape(g.metrics, "/metrics");
        let (m, _) = parse_exposition(&b);
        if m["ftpnat_drops_total{reason=\"no_mapping\"}"] == 1.0 {
            assert_eq!(m["ftpnat_device_packets_total{device=\"wan\",direction=\"rx\"}"], 3.0);
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
    // Answered, so the UDP timeout (not the shorter unreplied one) is what applies.
    g.inb(udp(REMOTE, 53, PUBLIC, 5353, b"a"));
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

/// Sends one raw request line and reads the reply to its end (the server closes after it).
fn raw(socket: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

fn stat(g: &Gateway, name: &str) -> u64 {
    g.query(Cmd::Stats, Filter::default())["stats"][name].as_u64().unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_listing_slice_stops_at_its_budget_and_resumes_where_it_stopped() {
    use ftpnat::ops::view::{flows_slice, FlowRow};
    let mut engine = Engine::new(config());
    for i in 0..5000 {
        engine.handle_packet(Instant::ZERO, Side::Inside, &mut fill_packet(i));
    }
    // A budget that is always exhausted: every call still makes progress, and they add up to all.
    let (mut rows, mut from, mut slices): (Vec<FlowRow>, u32, usize) = (Vec::new(), 0, 0);
    loop {
        let mut asked = 0;
        let next =
            flows_slice(&engine, Instant::ZERO, &Filter::default(), from, usize::MAX, &mut rows, || {
                asked += 1;
                true
            });
        slices += 1;
        assert!(asked <= 1, "stops at the first check once over budget");
        match next {
            Some(n) => {
                assert!(n > from, "progress");
                from = n;
            }
            None => break,
        }
        // A flow created between two slices is listed at most once (here: after the cursor, so once).
        if slices == 3 {
            engine.handle_packet(Instant::ZERO, Side::Inside, &mut udp(LAN_HOST2, 40000, REMOTE, 53, b"new"));
        }
    }
    assert!(slices > 100, "{slices} slices: the budget cut it up");
    assert_eq!(rows.len(), 5001);
    let ids: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len(), "each flow once");
    // A row limit ends a slice with the cursor of the first row not taken.
    let mut page = Vec::new();
    let next = flows_slice(&engine, Instant::ZERO, &Filter::default(), 0, 10, &mut page, || false);
    assert_eq!(page.len(), 10);
    assert_eq!(next, Some(page[9].id + 1));
    // After the flows expired, their slots stay (the table never shrinks): a listing still visits
    // them in bounded steps, however few flows are left.
    engine.handle_timeout(Instant::from_secs(3600));
    assert_eq!(engine.flow_count(), 0);
    for p in 0..3 {
        engine.handle_packet(
            Instant::from_secs(3600),
            Side::Inside,
            &mut udp(LAN_HOST, 50000 + p, REMOTE, 53, b"x"),
        );
    }
    let (mut sparse, mut from, mut steps) = (Vec::new(), 0, 0);
    while let Some(n) = flows_slice(
        &engine,
        Instant::from_secs(3600),
        &Filter::default(),
        from,
        usize::MAX,
        &mut sparse,
        || true,
    ) {
        assert!(n > from && n - from <= 16, "at most 16 slots per step: {from} -> {n}");
        (from, steps) = (n, steps + 1);
    }
    assert_eq!(sparse.len(), 3);
    assert!(steps >= 5000 / 16, "{steps} steps over 5001 slots");
}

#[test]
fn a_large_table_is_listed_whole_in_slices_while_packets_flow() {
    const N: u32 = 20_000;
    let g = Gateway::start_with("large", Setup { flows: N, ..Setup::default() });
    // The client pages through it (1000 at a time): every flow, once.
    let flows = g.flows(Filter::default());
    assert_eq!(flows.len(), N as usize);
    let ids: std::collections::HashSet<u64> = flows.iter().map(|f| f["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), N as usize, "each flow exactly once");
    // A client of the first protocol version (no limit) gets everything in one line, as before.
    let whole = raw(&g.socket, r#"{"cmd":"flows"}"#);
    assert_eq!(whole.lines().count(), 1);
    assert!(whole.starts_with("{\"flows\":[{") && whole.ends_with("}]}\n"));
    let v: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(v["flows"].as_array().unwrap().len(), N as usize);
    for k in ["id", "inside", "remote", "orig", "reply", "state"] {
        assert_eq!(v["flows"][0][k], flows[0][k], "the same rows either way");
    }
    // `ftpnat show flows --json` prints the pages as they come, as one document in serde_json's own
    // pretty format; the table prints a header, a line a flow and the count.
    let mut out = Vec::new();
    client::show_listing(&g.socket, &Request::new(Cmd::Flows, Filter::default()), true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["flows"].as_array().unwrap().len(), N as usize);
    assert_eq!(text, serde_json::to_string_pretty(&doc).unwrap() + "\n", "byte for byte");
    let mut out = Vec::new();
    client::show_listing(&g.socket, &Request::new(Cmd::Flows, Filter::default()), false, &mut out).unwrap();
    let table = String::from_utf8(out).unwrap();
    assert_eq!(table.lines().count(), N as usize + 2);
    assert!(table.starts_with("ID ") && table.ends_with(&format!("\n{N} flow(s)\n")));
    let mut out = Vec::new();
    let none = Filter { addr: Some("10.9.9.9".parse().unwrap()), ..Filter::default() };
    client::show_listing(&g.socket, &Request::new(Cmd::Flows, none.clone()), true, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\n  \"flows\": []\n}\n",
        "an empty listing, as serde_json prints it"
    );
    let mut out = Vec::new();
    let page = Request { limit: Some(5), ..Request::new(Cmd::Flows, Filter::default()) };
    client::show_listing(&g.socket, &page, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("5 flow(s)\nmore: --cursor 5\n"), "{text}");
    // Filtered: the second inside host holds the second FILL_PER_HOST flows.
    let host = g.flows(Filter { addr: Some("10.0.0.3".parse().unwrap()), ..Filter::default() });
    assert_eq!(host.len(), FILL_PER_HOST.min(N - FILL_PER_HOST) as usize);
    // Pages by hand: a cursor in every reply but the last.
    let (mut cursor, mut seen, mut pages) = (None::<u64>, 0, 0);
    loop {
        let req = match cursor {
            None => r#"{"cmd":"flows","limit":7000}"#.to_string(),
            Some(c) => format!(r#"{{"cmd":"flows","limit":7000,"cursor":{c}}}"#),
        };
        let page: Value = serde_json::from_str(&raw(&g.socket, &req)).unwrap();
        seen += page["flows"].as_array().unwrap().len();
        pages += 1;
        match page.get("next_cursor") {
            Some(c) => cursor = c.as_u64(),
            None => break,
        }
    }
    assert_eq!((seen, pages), (N as usize, 3));
    // A client that asks for everything and reads nothing: packets keep flowing, others are served.
    let mut stuck = UnixStream::connect(&g.socket).unwrap();
    stuck.write_all(b"{\"cmd\":\"flows\"}\n").unwrap();
    for i in 0..20 {
        g.out(udp(LAN_HOST, 9000 + i, REMOTE, 53, b"q"));
    }
    assert_eq!(stat(&g, "flows.active"), u64::from(N) + 20);
    assert!(stat(&g, "loop.turns") > 0, "the loop times its turns");
    let (_, body) = scrape(g.metrics, "/metrics");
    let (m, _) = parse_exposition(&body);
    assert_eq!(m["ftpnat_flows_active"], f64::from(N + 20));
    assert!(m["ftpnat_loop_turn_seconds_count"] > 0.0);
    assert!(m["ftpnat_loop_ops_seconds_count"] > 0.0);
    drop(stuck);
    g.finish();
}

#[test]
fn clients_that_stop_reading_or_never_ask_are_cut_off() {
    let short = Duration::from_millis(300);
    let limits = Limits { max_clients: 8, request_timeout: short, stall_timeout: short };
    let g = Gateway::start_with(
        "cutoff",
        Setup { flows: 20_000, control: Some((limits, 2)), metrics: Some(limits), ..Setup::default() },
    );
    // A listing far larger than the socket buffers, never read; a connection that never asks.
    let mut stuck = UnixStream::connect(&g.socket).unwrap();
    stuck.write_all(b"{\"cmd\":\"flows\"}\n").unwrap();
    let _idle = UnixStream::connect(&g.socket).unwrap();
    let mut idle_http = TcpStream::connect(g.metrics).unwrap();
    idle_http.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let counted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        stat(&g, "ops.control.cut_off.stalled") == 1
            && stat(&g, "ops.control.cut_off.request_timeout") == 1
            && stat(&g, "ops.metrics.cut_off.request_timeout") == 1
    });
    assert!(counted, "{}", g.query(Cmd::Stats, Filter::default()));
    // The stuck client's connection was closed: what it gets is a cut-off prefix of the listing.
    stuck.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    stuck.read_to_end(&mut got).unwrap();
    assert!(got.starts_with(b"{\"flows\":[") && !got.ends_with(b"]}\n"), "{} bytes", got.len());
    // Cut off while it held nothing back: at most what the socket holds plus one slice beyond the
    // low-water mark (a few hundred KB), not the 13 MB listing.
    assert!(got.len() < 4 << 20, "{} bytes were produced for a client that read nothing", got.len());
    let mut rest = String::new();
    idle_http.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(idle_http.read_to_string(&mut rest).unwrap(), 0, "closed without an answer");
    g.finish();
}

#[test]
fn idle_connections_do_not_keep_a_scrape_or_a_show_out() {
    let limits = Limits { max_clients: 8, ..Limits::default() };
    let g = Gateway::start_with(
        "slowloris",
        Setup { control: Some((limits, 3)), metrics: Some(limits), ..Setup::default() },
    );
    // Three times the slots of connections that never send a request, on both servers.
    let idle_http: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(g.metrics).unwrap()).collect();
    let idle_ctl: Vec<UnixStream> = (0..24).map(|_| UnixStream::connect(&g.socket).unwrap()).collect();
    // The subscribers' share of the slots, taken by followers that never see an event.
    let subs: Vec<UnixStream> = (0..3)
        .map(|_| {
            let mut s = UnixStream::connect(&g.socket).unwrap();
            s.write_all(b"{\"cmd\":\"events\"}\n").unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut line = [0u8; 18];
            s.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"{\"subscribed\":true");
            s
        })
        .collect();
    let refused = raw(&g.socket, r#"{"cmd":"events"}"#);
    assert!(refused.contains("too many event subscribers (3 at most)"), "{refused}");
    // A normal scrape and a normal `show` get through.
    let (head, body) = scrape(g.metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let (m, _) = parse_exposition(&body);
    assert!(m["ftpnat_ops_clients_cut_off_total{server=\"metrics\",reason=\"evicted\"}"] >= 16.0);
    assert_eq!(g.flows(Filter::default()).len(), 0);
    assert!(stat(&g, "ops.control.cut_off.evicted") >= 16);
    // Events still reach the subscribers that hold their slots.
    g.out(udp(LAN_HOST, 5353, REMOTE, 53, b"q"));
    let mut r = std::io::BufReader::new(&subs[0]);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    assert!(line.contains("\"flow_new\""), "{line}");
    drop((idle_http, idle_ctl));
    g.finish();
}

#[test]
fn a_slow_reload_does_not_hold_packets_up() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let on_reload = Box::new(move || {
        let _ = entered_tx.send(());
        // A loader stuck as on a FIFO or a hung mount, until the test lets it go.
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
    });
    let g = Gateway::start_with("slowreload", Setup { on_reload: Some(on_reload), ..Setup::default() });
    {
        // A new flow is unanswered, so it lives by the unreplied timeout: raise both.
        let mut next = g.next_config.lock().unwrap();
        next.timeouts.udp = Duration::from_secs(600);
        next.timeouts.udp_unreplied = Duration::from_secs(600);
    }
    (&g.reload).write_all(&[1]).unwrap();
    entered_rx.recv_timeout(WAIT).expect("the loader runs");
    for i in 0..10 {
        let out = g.out(udp(LAN_HOST, 5000 + i, REMOTE, 53, b"q"));
        assert_eq!(check(&out).src, PUBLIC);
    }
    release_tx.send(()).unwrap();
    // Then it applies: a new flow gets the new timeout.
    let applied = (0..100).any(|i| {
        g.out(udp(LAN_HOST, 6000 + i, REMOTE, 53, b"q"));
        let f = g.flows(Filter { port: Some(6000 + i), ..Filter::default() });
        f[0]["expires_in_ms"].as_u64().unwrap() > 300_000 || {
            std::thread::sleep(Duration::from_millis(20));
            false
        }
    });
    assert!(applied, "the reload was applied once the loader returned");
    g.finish();
}

#[test]
fn capture_files_are_created_safely() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("ftpnat-capsafe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("cap.pcapng");
    let opts = |max_bytes, files| CaptureOptions { path: cap.clone(), max_bytes, files };
    let precious = dir.join("precious");
    std::fs::write(&precious, "not a capture").unwrap();

    // A symbolic link in its place (planted to make ftpnat write FTP passwords elsewhere): refused.
    std::os::unix::fs::symlink(&precious, &cap).unwrap();
    let e = Capture::create(opts(1 << 20, 2), ["l", "w"]).unwrap_err();
    assert!(e.contains("cap.pcapng: is a symbolic link"), "{e}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a capture");
    std::fs::remove_file(&cap).unwrap();

    // A FIFO in its place: refused at once, not waited on.
    let c = std::ffi::CString::new(cap.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let e = Capture::create(opts(1 << 20, 2), ["l", "w"]).unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::remove_file(&cap).unwrap();

    // An existing world-readable file with another name linked to it: replaced by a new owner-only
    // file; the old one (and whoever holds it) sees nothing of the capture.
    std::fs::write(&cap, "old").unwrap();
    std::fs::set_permissions(&cap, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::hard_link(&cap, dir.join("other")).unwrap();
    let old_ino = std::fs::metadata(&cap).unwrap().ino();
    let mut c = Capture::create(opts(4096, 3), ["l", "w"]).unwrap();
    let meta = std::fs::metadata(&cap).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(meta.ino(), old_ino, "a new file");
    assert_eq!(std::fs::read_to_string(dir.join("other")).unwrap(), "old");

    // Rotation moves links planted at the numbered names away instead of writing through them.
    let numbered = |i: usize| PathBuf::from(format!("{}.{i}", cap.display()));
    std::os::unix::fs::symlink(&precious, numbered(1)).unwrap();
    std::os::unix::fs::symlink(&precious, numbered(2)).unwrap();
    for i in 0..40u16 {
        c.write(
            ftpnat::Side::Outside,
            std::time::SystemTime::now(),
            &udp(PUBLIC, 6000 + i, REMOTE, 53, &[0; 400]),
        );
    }
    drop(c);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a capture");
    for p in [cap.clone(), numbered(1), numbered(2)] {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "{} is a regular file", p.display());
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        assert!(!frames(&p).is_empty());
    }
    let _ = std::fs::remove_dir_all(dir);
}
