//! The real `ftpnat` binary routing between two network namespaces, checked with real programs (ping,
//! curl against `python3 -m http.server`, `netns-scripts/peer.py` TCP/UDP peers), plus the command
//! line's error contract.
//!
//! Namespace tests need root: without it they print `SKIP (needs root + netns)` locally and fail under
//! `CI=true`. Every topology gets unique names, so the tests run in parallel; every wait is bounded.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::process::Stdio;
use std::time::Duration;

use netns_support::*;

const SHORT: Duration = Duration::from_secs(15);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ftpnat")
}

/// Runs `ftpnat` with `args` (bounded); exit code and stderr.
fn ftpnat(args: &[&str]) -> (Option<i32>, String) {
    let out = run_bounded(SHORT, bin(), args);
    (out.status.code(), text(&out.stderr))
}

const BASE: [&str; 9] =
    ["run", "--lan-tun", "l0", "--wan-tun", "w0", "--inside", "10.0.0.0/24", "--public-ip", "198.51.100.1"];

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let with = |extra: &[&str]| {
        let mut a = BASE.to_vec();
        a.extend_from_slice(extra);
        ftpnat(&a)
    };
    for (extra, flag) in [
        (&["--public-ip", "10.0.0.7"][..], "--public-ip"),
        (&["--forward", "tcp:2121"][..], "--forward"),
        (&["--forward", "tcp:21=192.0.2.9:21"][..], "--forward"),
        (&["--port-range", "5000-4000"][..], "--port-range"),
        (&["--inside", "10.0.0.0/40"][..], "--inside"),
        (&["--udp-timeout", "forever"][..], "--udp-timeout"),
        (&["--lan-mtu", "200"][..], "--lan-mtu"),
        (&["--log-format", "xml"][..], "--log-format"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let (code, err) = with(extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(flag), "{extra:?}: stderr does not name {flag}: {err}");
    }
    let (code, err) = ftpnat(&["run", "--lan-tun", "l0", "--wan-tun", "w0", "--inside", "10.0.0.0/24"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--public-ip"), "{err}");
    let (code, err) = ftpnat(&[
        "run",
        "--lan-tun",
        "same",
        "--wan-tun",
        "same",
        "--inside",
        "10.0.0.0/24",
        "--public-ip",
        "198.51.100.1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--wan-tun"), "{err}");
    let (code, err) = ftpnat(&[
        "run",
        "--lan-tun",
        "much-too-long-name",
        "--wan-tun",
        "w0",
        "--inside",
        "10.0.0.0/24",
        "--public-ip",
        "198.51.100.1",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--lan-tun"), "{err}");
    let help = run_bounded(SHORT, bin(), &["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for flag in ["--lan-tun", "--forward", "--ftp-pinhole-timeout", "--forward-only", "--log-format"] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn ping_reaches_the_wan_host() {
    let Some(mut t) = Topology::up("ping_reaches_the_wan_host", &[], &[]) else { return };
    let out = t.lan(SHORT, &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", WAN_HOST]);
    assert!(out.status.success(), "ping lan -> wan failed:\n{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("3 received"), "{}", text(&out.stdout));
    let s = t.stop_cleanly();
    assert!(s.counter("device.lan.rx_packets") >= 3, "{}", s.summary);
    assert!(s.counter("device.wan.tx_packets") >= 3, "{}", s.summary);
}

/// Deterministic incompressible bytes (xorshift), so no random-number crate is needed.
fn blob(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bulk TCP download through the default device I/O (segmentation offload: the server's 64 KB
/// aggregates are split on arrival and coalesced again on write) and through plain TUN I/O
/// (`--no-offload`, one packet per read and write): same bytes, same public source either way.
#[test]
fn http_download_arrives_intact_from_the_public_ip() {
    http_download("http_download_offload", &[]);
}

#[test]
fn http_download_arrives_intact_without_offload() {
    http_download("http_download_no_offload", &["--no-offload"]);
}

fn http_download(name: &str, extra: &[&str]) {
    let Some(mut t) = Topology::up(name, &[], extra) else {
        return;
    };
    let www = t.state_dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let data = blob(3 << 20);
    std::fs::write(www.join("blob.bin"), &data).unwrap();
    let dir = www.display().to_string();
    let srv = t.serve_wan(
        "tcp",
        8000,
        &["python3", "-m", "http.server", "--bind", WAN_HOST, "--directory", &dir, "8000"],
    );
    let got = t.state_dir.join("got.bin");
    let url = format!("http://{WAN_HOST}:8000/blob.bin");
    let out = t.lan(
        Duration::from_secs(60),
        &[
            "curl",
            "-sS",
            "--max-time",
            "45",
            "-o",
            &got.display().to_string(),
            "-w",
            "%{size_download}",
            &url,
        ],
    );
    assert!(out.status.success(), "curl failed: {}", text(&out.stderr));
    let received = std::fs::read(&got).unwrap();
    assert_eq!(received.len(), data.len(), "size");
    assert!(received == data, "content differs");
    // http.server logs "CLIENT - - [date] "GET /blob.bin HTTP/1.1" 200 -".
    let log = t.server_output(srv);
    let client = log.lines().find(|l| l.contains("GET /blob.bin")).and_then(|l| l.split_whitespace().next());
    assert_eq!(client, Some(PUBLIC_IP), "the wan server must see the public address; its log:\n{log}");
    let stopped = t.stop_cleanly();
    let offload = stopped.log.contains("offload=true");
    assert_eq!(offload, extra.is_empty(), "offload on exactly when not refused:\n{}", stopped.log);
    // The server's segments reach the WAN device as aggregates only with offload on.
    let aggregates = stopped.summary.contains("device.wan.rx_aggregates");
    assert_eq!(aggregates, offload, "aggregates read iff offload:\n{}", stopped.summary);
}

#[test]
fn udp_exchange_is_seen_from_the_public_ip() {
    let Some(mut t) = Topology::up("udp_exchange_is_seen_from_the_public_ip", &[], &[]) else { return };
    let peer = peer_py();
    t.serve_wan("udp", 5000, &["python3", &peer, "udp-server", "5000"]);
    let out = t.lan(SHORT, &["python3", &peer, "udp-client", WAN_HOST, "5000", "--timeout", "2"]);
    let answer = text(&out.stdout);
    assert!(out.status.success(), "no UDP answer: {answer}");
    assert!(answer.starts_with(&format!("peer {PUBLIC_IP}:")), "server saw {answer}, not the public address");
    t.stop_cleanly();
}

#[test]
fn unsolicited_inbound_tcp_is_dropped() {
    let Some(mut t) = Topology::up("unsolicited_inbound_tcp_is_dropped", &[], &[]) else { return };
    let peer = peer_py();
    t.serve_lan("tcp", 8080, &["python3", &peer, "tcp-server", "8080"]);
    let out = t.wan(SHORT, &["python3", &peer, "tcp-client", PUBLIC_IP, "8080", "--timeout", "3"]);
    assert!(!out.status.success(), "wan reached a lan server without a mapping: {}", text(&out.stdout));
    // Even with the inside prefix routed at the gateway, inside addresses are not reachable from wan.
    let inside = INSIDE;
    let r = t.wan(SHORT, &["ip", "route", "add", inside, "dev", &t.wan_tun]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let out = t.wan(SHORT, &["python3", &peer, "tcp-client", LAN_HOST, "8080", "--timeout", "3"]);
    assert!(!out.status.success(), "wan reached the inside address {LAN_HOST}: {}", text(&out.stdout));
    let s = t.stop_cleanly();
    assert!(s.counter("device.wan.rx_packets") >= 2, "the SYNs reached ftpnat: {}", s.summary);
}

#[test]
fn port_forward_reaches_the_lan_server() {
    let Some(mut t) = Topology::up("port_forward_reaches_the_lan_server", &["tcp:2080=10.0.0.2:8080"], &[])
    else {
        return;
    };
    let peer = peer_py();
    t.serve_lan("tcp", 8080, &["python3", &peer, "tcp-server", "8080"]);
    let out = t.wan(SHORT, &["python3", &peer, "tcp-client", PUBLIC_IP, "2080", "--timeout", "3"]);
    let answer = text(&out.stdout);
    assert!(out.status.success(), "no connection through --forward tcp:2080: {answer}");
    assert!(answer.starts_with(&format!("peer {WAN_HOST}:")), "lan server saw {answer}, not the wan host");
    t.stop_cleanly();
}

#[test]
fn a_deleted_device_ends_the_run_naming_it() {
    let Some(mut t) = Topology::up("a_deleted_device_ends_the_run_naming_it", &[], &[]) else { return };
    let out = run_bounded(SHORT, "ip", &["netns", "del", &t.ns_lan]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = t.wait_exit(Duration::from_secs(20)).expect("ftpnat kept running after its lan device vanished");
    assert_eq!(s.status, Some(1), "{}", s.log);
    let want = format!("--lan-tun {}:", t.lan_tun);
    assert!(s.log.contains(&want), "the error does not name the device ({want}):\n{}", s.log);
    assert!(s.summary.starts_with("ftpnat: stopped by device error"), "{}", s.summary);
    t.stop();
}

#[test]
fn persistent_devices_are_attached_and_left_alone() {
    let test = "persistent_devices_are_attached_and_left_alone";
    if !netns_available(test) {
        return;
    }
    let names = Topology::names(test);
    let ns = Netns::new(&names.ns_lan);
    let (persistent, created) = (names.lan_tun.as_str(), names.wan_tun.as_str());
    ns.ip(&["tuntap", "add", "dev", persistent, "mode", "tun"]);
    ns.ip(&["link", "set", "dev", persistent, "mtu", "1400"]);
    let args = [
        "run",
        "--lan-tun",
        persistent,
        "--wan-tun",
        created,
        "--inside",
        INSIDE,
        "--public-ip",
        PUBLIC_IP,
        "--workers",
        "1",
    ];
    let log_path = names.state_dir.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = ns
        .command(bin())
        .args(args)
        .env("RUST_LOG", "ftpnat=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let up = wait_until(SHORT, || ns.ip_try(&["link", "show", "dev", created]).status.success());
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(up, "ftpnat did not create {created}: {}", read_log());

    let show = |dev: &str| text(&ns.ip(&["link", "show", "dev", dev]).stdout);
    let p = show(persistent);
    assert!(p.contains("mtu 1400") && !p.contains(",UP"), "persistent device was reconfigured: {p}");
    let c = show(created);
    assert!(
        c.contains("mtu 1500") && c.contains(",UP"),
        "created device not up with the configured MTU: {c}"
    );

    // A second instance cannot take the same single-queue device, and says why.
    let second = ns
        .command("timeout")
        .args(["-k", "2", "10", bin()])
        .args(args.map(|a| if a == created { "x" } else { a }))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("--lan-tun {persistent}: cannot open TUN device")), "{err}");

    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_child(&mut child, SHORT).expect("ftpnat ignored SIGTERM");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut summary).unwrap();
    assert!(status.success(), "exit {status}: {}", read_log());
    assert!(summary.starts_with("ftpnat: stopped by SIGTERM"), "{summary}");
    let l = read_log();
    assert!(l.contains("attached to existing TUN device") && l.contains("created TUN device"), "{l}");
    assert!(ns.ip_try(&["link", "show", "dev", persistent]).status.success(), "persistent device removed");
    assert!(!ns.ip_try(&["link", "show", "dev", created]).status.success(), "created device outlived ftpnat");
    let _ = std::fs::remove_file(&log_path);
}

#[test]
fn a_device_that_is_not_tun_is_refused_with_its_name() {
    let test = "a_device_that_is_not_tun_is_refused_with_its_name";
    if !netns_available(test) {
        return;
    }
    let names = Topology::names(test);
    let ns = Netns::new(&names.ns_lan);
    let out = ns
        .command("timeout")
        .args(["-k", "2", "10", bin()])
        .args(["run", "--lan-tun", "lo", "--wan-tun", "w0", "--inside", INSIDE, "--public-ip", PUBLIC_IP])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--lan-tun lo: cannot open TUN device"), "{err}");
    assert!(err.contains("not a single-queue TUN device"), "{err}");
}
