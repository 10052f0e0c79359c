//! Operating the real binary in network namespaces: `ftpnat show flows` during a real FTP transfer
//! (curl against pyftpdlib), `ftpnat events`, the metrics endpoint, SIGHUP reload of a `--config`
//! file, JSON logs, the capture file; and `netns-scripts/host-setup.sh up|down`.
//!
//! Needs root: without it the tests print `SKIP (needs root + netns)` locally and fail under `CI=true`.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns_support::*;

const SHORT: Duration = Duration::from_secs(15);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ftpnat")
}

fn ftpnat(args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_bounded(SHORT, bin(), args);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn config_file_errors_name_key_and_line() {
    // No root needed: the file is checked before any device is opened.
    let dir = std::env::temp_dir().join(format!("ftpnat-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    let fs = f.to_str().unwrap();
    let base =
        "lan-tun = \"l0\"\nwan-tun = \"w0\"\ninside = [\"10.0.0.0/24\"]\npublic-ip = \"198.51.100.1\"\n";
    for (extra, want) in [
        ("udp-timout = 5\n", "line 5: unknown key `udp-timout`"),
        ("udp-timeout = \"soon\"\n", "line 5: udp-timeout: 'soon' is not a duration"),
        ("max-flows = -3\n", "line 5: max-flows: "),
        ("forward = [\n  \"tcp:21=10.0.0.2:21\",\n  \"tcp:22\",\n]\n", "forward: 'tcp:22': expected"),
        ("metrics-listen = \"localhost\"\n", "line 5: metrics-listen: "),
        ("[ftp]\nport = 21\n", "line 5: unknown key `ftp`"),
        ("forward = [\"tcp:21=172.16.0.1:21\"]\n", "is not in any --inside prefix (set by `forward` at"),
    ] {
        std::fs::write(&f, format!("{base}{extra}")).unwrap();
        let (code, _, err) = ftpnat(&["run", "--config", fs]);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: want {want:?} in: {err}");
        assert!(err.contains(fs), "{extra:?}: the file is named: {err}");
    }
    let (code, _, err) = ftpnat(&["run", "--config", "/nonexistent/ftpnat.toml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/ftpnat.toml: cannot read"), "{err}");
    std::fs::write(&f, "wan-tun = \"w0\"\n").unwrap();
    let (code, _, err) = ftpnat(&["run", "--config", fs, "--inside", "10.0.0.0/24"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--lan-tun: required"), "{err}");
    let (code, _, err) = ftpnat(&["show", "flows", "--control-socket", "/nonexistent/s.sock"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect to /nonexistent/s.sock"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The address the metrics listener reports in the "ftpnat running" log line.
fn metrics_addr(log: &str) -> Option<String> {
    let l = log.lines().find(|l| l.contains("ftpnat running"))?;
    let v: serde_json::Value = serde_json::from_str(l).ok()?;
    v["fields"]["metrics"].as_str().map(str::to_string)
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

#[test]
fn show_flows_during_an_ftp_transfer_and_sighup_reload() {
    let dir = std::env::temp_dir().join(format!("ftpnat-opsnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let cap = dir.join("cap.pcapng");
    let conf = dir.join("ftpnat.toml");
    std::fs::write(
        &conf,
        "udp-timeout = \"5m\"\nforward = [\"tcp:2080=10.0.0.2:8080\"]\nlog-format = \"json\"\n",
    )
    .unwrap();
    let extra = [
        "--config",
        conf.to_str().unwrap(),
        "--control-socket",
        sock.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--capture",
        cap.to_str().unwrap(),
    ];
    let Some(mut t) = Topology::up("ops_show_flows", &[], &extra) else { return };
    assert!(wait_until(SHORT, || sock.exists()), "control socket: {}", t.ftpnat_log());

    // An FTP server on the wan with a file big enough to take a while at a limited rate.
    let root = dir.join("ftproot");
    std::fs::create_dir_all(&root).unwrap();
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(root.join("big.bin"), &data).unwrap();
    t.serve_wan(
        "tcp",
        21,
        &[
            "python3",
            "-m",
            "pyftpdlib",
            "-p",
            "21",
            "-d",
            root.to_str().unwrap(),
            "-u",
            "alice",
            "-P",
            "pw-secret",
        ],
    );

    let mut events = Command::new(bin())
        .args(["events", "--control-socket", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let got = dir.join("got.bin");
    let mut curl = Command::new("ip")
        .args(["netns", "exec", &t.ns_lan, "timeout", "60", "curl", "-s", "-P", "-", "--limit-rate", "300k"])
        .args(["-u", "alice:pw-secret", "ftp://198.51.100.2/big.bin", "-o", got.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // During the transfer: the control connection with its ALG state, and the data connection.
    let mut shown = String::new();
    let during = wait_until(Duration::from_secs(20), || {
        let (code, out, _) = ftpnat(&["show", "flows", "--control-socket", sock.to_str().unwrap()]);
        shown = out;
        // EPRT grows by 4 with the client's port kept, by 3 with a 4-digit one of another worker's
        // slice (the suite's `FTPNAT_WORKERS=2` run).
        let delta = shown.contains("seq-delta orig=+4") || shown.contains("seq-delta orig=+3");
        code == Some(0) && delta && shown.contains("ftp-data of #")
    });
    assert!(during, "show flows during the transfer:\n{shown}\n{}", t.ftpnat_log());
    eprintln!("ftpnat show flows during the transfer:\n{shown}");
    let (_, json, _) =
        ftpnat(&["show", "flows", "--json", "--port", "21", "--control-socket", sock.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["flows"].as_array().unwrap().len(), 1, "{json}");
    assert!([3, 4].contains(&v["flows"][0]["alg"]["delta_orig"].as_i64().unwrap_or(0)), "{json}");
    assert!(wait_child(&mut curl, Duration::from_secs(60)).is_some_and(|s| s.success()), "curl failed");
    assert_eq!(std::fs::read(&got).unwrap(), data, "the file arrived intact");
    assert!(wait_line(&mut events, SHORT, |l| l.contains("[PINHOLE-USED]")), "events stream");
    let _ = events.kill();
    let _ = events.wait();

    // Metrics from the live process.
    let addr = metrics_addr(&t.ftpnat_log()).expect("metrics address in the log");
    let m = http_get(&addr, "/metrics");
    assert!(m.contains("ftpnat_alg_rewrites_total{kind=\"eprt\"} 1"), "{m}");
    assert!(m.contains("ftpnat_pinholes_total{outcome=\"used\"} 1"), "{m}");

    // SIGHUP: a forward removed and one added, a timeout changed, the port range (restart only).
    std::fs::write(
        &conf,
        "udp-timeout = \"7m\"\nforward = [\"tcp:2121=10.0.0.2:21\"]\nport-range = \"20000-29999\"\nlog-format = \"json\"\n",
    )
    .unwrap();
    let pid: i32 = std::fs::read_to_string(t.state_dir.join("ftpnat.pid")).unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(wait_until(SHORT, || t.ftpnat_log().contains("configuration reloaded")), "{}", t.ftpnat_log());
    let log = t.ftpnat_log();
    for want in [
        "tcp:2080=10.0.0.2:8080 removed",
        "tcp:2121=10.0.0.2:21 added",
        "--udp-timeout: 300s -> 420s",
        "--port-range: needs a restart",
    ] {
        assert!(log.contains(want), "reload log lacks {want:?}:\n{log}");
    }
    assert!(t.ftpnat_running(), "still running after SIGHUP");
    assert!(!log.contains("pw-secret"), "the password reached the log");
    for l in log.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
    }
    let (_, after, _) = ftpnat(&["show", "stats", "--control-socket", sock.to_str().unwrap()]);
    assert!(
        after.lines().any(|l| l.starts_with("flows.active ") && !l.ends_with(" 0")),
        "flows kept: {after}"
    );

    let s = t.stop();
    assert_eq!(s.status, Some(0), "{}", s.log);
    assert!(s.summary.starts_with("{\"summary\""), "log-format json from the file: {}", s.summary);
    assert!(!sock.exists(), "socket removed on exit");
    // The capture: both sides, readable.
    let mut r = ftpnat::io::pcap::CaptureReader::open(&cap).unwrap();
    // With segmentation offload a bulk transfer is written (and captured) as 64 KB aggregates, as
    // tcpdump shows it on a TSO interface: count bytes, not frames.
    let (mut n, mut bytes) = (0, 0);
    while let Some(f) = r.next_frame().unwrap() {
        n += 1;
        bytes += f.data.len();
    }
    assert!(
        n > 10 && bytes > data.len(),
        "{n} frames, {bytes} bytes captured for a {}-byte file",
        data.len()
    );
    if let Ok(out) = Command::new("tshark").args(["-n", "-r"]).arg(&cap).arg("-c").arg("5").output() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.lines().any(|l| !l.contains("Running as user")),
            "tshark: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn host_setup_up_and_down() {
    if !netns_available("host_setup_up_and_down") {
        return;
    }
    let ns = Netns::new(&format!("ftpnat-hs-{}", std::process::id()));
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    ns.ip(&["link", "add", "eth1", "mtu", "1400", "type", "veth", "peer", "name", "eth1p"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth1", "up"]);
    let script = script("host-setup.sh");
    let run = |action: &str| {
        let out = ns
            .command("env")
            .args(["LAN_IF=eth0", "UPLINK_IF=eth1", "PUBLIC_IP=198.51.100.1", "PROXY_ARP=1"])
            .arg(format!("STATE_DIR=/tmp/ftpnat-hs-state-{}", std::process::id()))
            .arg("FTPNAT_HOST_ENV=/nonexistent")
            .arg(&script)
            .arg(action)
            .output()
            .unwrap();
        assert!(out.status.success(), "{action}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let sh = |cmd: &str| text(&ns.command("sh").args(["-c", cmd]).output().unwrap().stdout);
    let forward_before = sh("sysctl -n net.ipv4.ip_forward");
    let out = run("up");
    assert!(out.contains("--wan-mtu 1400"), "{out}");
    run("up"); // idempotent
    assert_eq!(sh("ip rule show priority 1000 | wc -l"), "1", "one rule after two ups");
    assert!(sh("ip rule show").contains("iif eth0 lookup 100"));
    assert!(sh("ip route show table 100").contains("default dev ftpnat-lan"));
    assert!(sh("ip route show 198.51.100.1/32").contains("dev ftpnat-wan"));
    assert!(sh("ip -d link show ftpnat-wan").contains("mtu 1400"));
    assert!(sh("ip -d link show ftpnat-lan").contains("tun"));
    assert!(sh("ip neigh show proxy").contains("198.51.100.1"));
    assert_eq!(sh("sysctl -n net.ipv4.ip_forward"), "1");

    // ftpnat attaches to the persistent devices as they are.
    let mut child = ns
        .command(bin())
        .args(["run", "--lan-tun", "ftpnat-lan", "--wan-tun", "ftpnat-wan", "--inside", "10.0.0.0/24"])
        .args(["--public-ip", "198.51.100.1", "--lan-ip", "10.0.0.254", "--wan-mtu", "1400"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = {
        let mut err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut all = String::new();
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                if all.contains("ftpnat running") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(SHORT).is_ok()
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, SHORT).is_some_and(|s| s.success()));
    assert!(started, "ftpnat did not start on the host-setup devices");

    run("down");
    run("down"); // idempotent
    assert_eq!(sh("ip rule show priority 1000"), "");
    assert_eq!(sh("ip route show table 100"), "");
    assert_eq!(sh("ip route show 198.51.100.1/32"), "");
    assert!(!sh("ip link show").contains("ftpnat-"), "devices removed");
    assert_eq!(sh("ip neigh show proxy"), "");
    assert_eq!(sh("sysctl -n net.ipv4.ip_forward"), forward_before, "forwarding restored");
    assert!(Path::new(&script).exists());
}

/// A FIFO given as `--config`, or a symbolic link as `--capture`: refused at once with a message naming
/// the file (no root needed: both are checked before any device is opened).
#[test]
fn a_fifo_config_and_a_symlinked_capture_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("ftpnat-refuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("ftpnat.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (code, _, err) = ftpnat(&["run", "--config", fifo.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("{}: is a FIFO, not a regular file", fifo.display())), "{err}");
    let target = dir.join("elsewhere");
    std::fs::write(&target, "keep").unwrap();
    let cap = dir.join("cap.pcapng");
    std::os::unix::fs::symlink(&target, &cap).unwrap();
    let args = [
        "run",
        "--lan-tun",
        "l0",
        "--wan-tun",
        "w0",
        "--inside",
        "10.0.0.0/24",
        "--public-ip",
        "198.51.100.1",
        "--capture",
        cap.to_str().unwrap(),
    ];
    let (code, _, err) = ftpnat(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("--capture {}: is a symbolic link", cap.display())), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    let _ = std::fs::remove_dir_all(dir);
}

/// `VmRSS` of a process in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn ftpnat_pid(t: &Topology) -> i32 {
    std::fs::read_to_string(t.state_dir.join("ftpnat.pid")).unwrap().trim().parse().unwrap()
}

fn stat_of(sock: &Path, name: &str) -> u64 {
    let (_, out, err) = ftpnat(&["show", "stats", "--json", "--control-socket", sock.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    v["stats"][name].as_u64().unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// Adds inside addresses 10.0.0.10.. to the lan device and lengthens both devices' queues (a fill
/// comes in bursts), then fills the table with `flows` answered UDP flows (netns-scripts/udp-flows.py).
fn fill_table(t: &mut Topology, flows: u32) -> (String, String) {
    let (hosts, sockets) = (16u32, 50u32);
    let ports = flows.div_ceil(hosts * sockets);
    for i in 0..hosts {
        let a = format!("10.0.0.{}/24", 10 + i);
        let o = run_bounded(SHORT, "ip", &["-n", &t.ns_lan, "addr", "add", &a, "dev", &t.lan_tun]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    for (ns, dev) in [(t.ns_lan.clone(), t.lan_tun.clone()), (t.ns_wan.clone(), t.wan_tun.clone())] {
        run_bounded(SHORT, "ip", &["-n", &ns, "link", "set", "dev", &dev, "txqueuelen", "20000"]);
    }
    let script = script("udp-flows.py").display().to_string();
    let range = format!("30000-{}", 30000 + ports - 1);
    t.serve_wan("udp", 30000, &["python3", &script, "echo", "--ports", &range, "--seconds", "900"]);
    let hosts_arg = format!("10.0.0.10-10.0.0.{}", 10 + hosts - 1);
    let out = t.lan(
        Duration::from_secs(300),
        &[
            "python3",
            &script,
            "fill",
            "--hosts",
            &hosts_arg,
            "--sockets",
            "50",
            "--to",
            WAN_HOST,
            "--ports",
            &range,
        ],
    );
    assert!(out.status.success(), "fill: {}", text(&out.stderr));
    (text(&out.stdout), range)
}

/// Counts the flows in `ftpnat show flows --json` output as it streams by (the test never holds the
/// whole 150 MB document), and checks that it is one complete document.
fn count_json_flows(sock: &Path) -> (usize, bool) {
    use std::io::Read;
    let mut child = Command::new(bin())
        .args(["show", "flows", "--json", "--control-socket", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut n, mut carry, mut tail) = (0usize, Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    let needle = b"\n      \"id\": ";
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..k]);
        n += carry.windows(needle.len()).filter(|w| w == needle).count();
        let keep = carry.len().saturating_sub(needle.len() - 1);
        tail = carry[carry.len().saturating_sub(16)..].to_vec();
        carry.drain(..keep);
    }
    let ok = wait_child(&mut child, SHORT).is_some_and(|s| s.success());
    (n, ok && tail.ends_with(b"\n  ]\n}\n"))
}

/// The operations side under a full table (issue 12): 250k flows, `show flows --json` and metrics
/// scrapes in loops and a ping through the gateway at the same time. Checked for correctness only (every
/// listing complete with every flow, every scrape answered, every ping answered, RSS bounded); the
/// latency figures are measured by netns-scripts/ops-load.sh. About 60 s.
#[test]
fn a_full_table_is_listed_and_scraped_while_forwarding_goes_on() {
    let flows: u32 = std::env::var("FTPNAT_LOAD_FLOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(250_000);
    let dir = std::env::temp_dir().join(format!("ftpnat-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let max = format!("{}", flows + 50_000);
    let extra = [
        "--max-flows",
        &max,
        "--udp-timeout",
        "1h",
        "--control-socket",
        sock.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let Some(mut t) = Topology::up_with_log("ops_full_table", &[], &extra, "ftpnat=info") else { return };
    assert!(wait_until(SHORT, || sock.exists()), "control socket: {}", t.ftpnat_log());
    let addr = t
        .ftpnat_log()
        .lines()
        .find(|l| l.contains("ftpnat running"))
        .and_then(|l| l.split("metrics=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .expect("metrics address in the log");
    let pid = ftpnat_pid(&t);
    let (filled, _) = fill_table(&mut t, flows);
    let active = stat_of(&sock, "flows.active");
    let want = u64::from(flows.div_ceil(800) * 800);
    assert!(wait_until(SHORT, || stat_of(&sock, "flows.active") >= want), "{filled}; {active} flows");
    let rss_full = rss_kib(pid);

    // RSS sampled all along; pings through the gateway all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let ping = Command::new("ip")
        .args(["netns", "exec", &t.ns_lan, "timeout", "120", "ping", "-n", "-q", "-i", "0.02", "-W", "10"])
        .args(["-c", "500", WAN_HOST])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scraper = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let (mut n, mut bad) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let m = http_get(&addr, "/metrics");
                if !(m.starts_with("HTTP/1.1 200 OK") && m.ends_with("# EOF\n")) {
                    bad.push(m.chars().take(200).collect::<String>());
                }
                n += 1;
            }
            (n, bad)
        })
    };
    // The ping's own flow joins the table.
    assert!(wait_until(SHORT, || stat_of(&sock, "flows.active") == want + 1), "the ping's flow");
    for round in 0..2 {
        let (n, complete) = count_json_flows(&sock);
        assert!(complete, "listing {round} is one complete JSON document");
        // Flows do not come and go here (1 h timeout, nothing closes): each listed once.
        assert_eq!(n as u64, want + 1, "listing {round}");
    }
    let out = ping.wait_with_output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let (scrapes, bad) = scraper.join().unwrap();
    let summary = text(&out.stdout);
    assert!(summary.contains("500 packets transmitted, 500 received"), "ping through the gateway: {summary}");
    assert!(scrapes > 0 && bad.is_empty(), "{scrapes} scrapes, bad: {bad:?}");
    let m = http_get(&addr, "/metrics");
    assert!(m.contains(&format!("ftpnat_flows_active {}", want + 1)), "metrics agree on the table");
    assert!(m.contains("# TYPE ftpnat_loop_ops_seconds histogram"));
    eprintln!(
        "{flows} flows: RSS {} MiB with the table full, peak {} MiB while listing; {scrapes} scrapes",
        rss_full / 1024,
        peak / 1024
    );
    // Generous: a listing is produced a slice at a time, so listing costs megabytes, not the hundreds
    // of megabytes a whole 150 MB reply (and its JSON tree) once took.
    assert!(peak < rss_full + 128 * 1024, "RSS grew from {rss_full} KiB to {peak} KiB while listing");
    assert!(t.ftpnat_running());
    t.stop_cleanly();
    let _ = std::fs::remove_dir_all(dir);
}

/// Slowloris against both management ports of the real binary: idle TCP connections to the metrics
/// port, idle connections and idle event subscribers on the control socket, more than either server has
/// slots for. A normal scrape and a normal `show` still get through, a subscriber beyond the limit is told
/// why; and SIGHUP with a FIFO where the config file was is refused at once, naming it.
#[test]
fn slowloris_on_the_management_ports_does_not_stop_a_scrape() {
    let dir = std::env::temp_dir().join(format!("ftpnat-slowloris-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let conf = dir.join("ftpnat.toml");
    std::fs::write(&conf, "log-format = \"json\"\n").unwrap();
    let extra = [
        "--config",
        conf.to_str().unwrap(),
        "--control-socket",
        sock.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let Some(mut t) = Topology::up("ops_slowloris", &[], &extra) else { return };
    assert!(wait_until(SHORT, || sock.exists()), "control socket: {}", t.ftpnat_log());
    let addr = metrics_addr(&t.ftpnat_log()).expect("metrics address in the log");
    let idle_http: Vec<std::net::TcpStream> =
        (0..100).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    let idle_ctl: Vec<std::os::unix::net::UnixStream> =
        (0..100).map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap()).collect();
    // 32 `ftpnat events` that follow quietly: 16 are served, the others told why they are not.
    let mut followers: Vec<std::process::Child> = (0..32)
        .map(|_| {
            Command::new(bin())
                .args(["events", "--json", "--control-socket", sock.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut refusals = 0;
    for c in followers.iter_mut() {
        if wait_child_quietly(c, Duration::from_millis(500)).is_some() {
            use std::io::Read;
            let mut err = String::new();
            let _ = c.stderr.take().unwrap().read_to_string(&mut err);
            assert!(err.contains("too many event subscribers (16 at most)"), "{err}");
            refusals += 1;
        }
    }
    assert_eq!(refusals, 16, "16 followers served, 16 told why not");
    let m = http_get(&addr, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK") && m.ends_with("# EOF\n"), "{m}");
    let (code, out, err) = ftpnat(&["show", "stats", "--control-socket", sock.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().any(|l| l.starts_with("ops.metrics.cut_off.evicted") && !l.ends_with(" 0")), "{out}");
    let ping = t.lan(SHORT, &["ping", "-c", "3", "-i", "0.2", "-W", "2", WAN_HOST]);
    assert!(ping.status.success(), "forwarding goes on: {}", text(&ping.stdout));
    drop((idle_http, idle_ctl));
    for mut c in followers {
        let _ = c.kill();
        let _ = c.wait();
    }

    // SIGHUP with a FIFO where the file was: refused at once, the gateway goes on.
    std::fs::remove_file(&conf).unwrap();
    let c = std::ffi::CString::new(conf.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_eq!(unsafe { libc::kill(ftpnat_pid(&t), libc::SIGHUP) }, 0);
    let want = format!("{}: is a FIFO, not a regular file", conf.display());
    assert!(wait_until(SHORT, || t.ftpnat_log().contains(&want)), "{}", t.ftpnat_log());
    assert!(t.ftpnat_log().contains("reload failed; the running configuration is unchanged"));
    let ping = t.lan(SHORT, &["ping", "-c", "3", "-i", "0.2", "-W", "2", WAN_HOST]);
    assert!(ping.status.success(), "forwarding goes on: {}", text(&ping.stdout));
    let s = t.stop();
    assert_eq!(s.status, Some(0), "{}", s.log);
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits (bounded) for a child to exit; `None` (the child left running) when it does not.
fn wait_child_quietly(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}
