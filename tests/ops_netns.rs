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
        code == Some(0) && shown.contains("seq-delta orig=+4") && shown.contains("ftp-data of #")
    });
    assert!(during, "show flows during the transfer:\n{shown}\n{}", t.ftpnat_log());
    eprintln!("ftpnat show flows during the transfer:\n{shown}");
    let (_, json, _) =
        ftpnat(&["show", "flows", "--json", "--port", "21", "--control-socket", sock.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["flows"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(v["flows"][0]["alg"]["delta_orig"], 4);
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
