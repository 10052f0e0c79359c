//! The README's "Operating ftpnat" set-up, reproduced from shipped files only: `netns-scripts/up.sh` with
//! `FTPNAT_CONFIG=deploy/ftpnat.toml.example` brings the demo topology up with the example configuration
//! (the topology's flags override the file; its forward `tcp:2121=10.0.0.2:21` applies), creates the
//! control socket's directory (the issue: `/run/ftpnat` did not exist and `up.sh` failed), and the
//! control socket, the metrics endpoint and a SIGHUP reload of the file all answer. Only the socket
//! path and the metrics port are changed in a copy, so that tests can run side by side.
//!
//! Needs root: without it the test prints `SKIP (needs root + netns)` locally and fails under `CI=true`.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use netns_support::*;

const SHORT: Duration = Duration::from_secs(15);

fn example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ftpnat.toml.example")).unwrap()
}

#[test]
fn the_example_config_brings_up_socket_metrics_forward_and_reload() {
    let test = "the_example_config_brings_up_socket_metrics_forward_and_reload";
    let dir = std::env::temp_dir().join(format!("ftpnat-operating-{}", std::process::id()));
    // A directory that does not exist yet, as /run/ftpnat on a fresh machine.
    let socket = dir.join("run/ftpnat/control.sock");
    let config = dir.join("ftpnat.toml");
    let toml = example();
    assert!(toml.contains("control-socket = \"/run/ftpnat/control.sock\""), "the example changed");
    assert!(toml.contains("metrics-listen = \"127.0.0.1:9810\""), "the example changed");
    let toml = toml
        .replace("/run/ftpnat/control.sock", &socket.display().to_string())
        .replace("127.0.0.1:9810", "127.0.0.1:0");
    if netns_available(test) {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&config, &toml).unwrap();
    }
    let Some(mut t) = Topology::up_with_config(test, &config, &[]) else { return };
    assert!(socket.exists(), "no control socket at {}:\n{}", socket.display(), t.ftpnat_log());

    // The control socket answers.
    let sock = socket.display().to_string();
    let out = run_bounded(SHORT, env!("CARGO_BIN_EXE_ftpnat"), &["show", "stats", "--control-socket", &sock]);
    assert!(out.status.success(), "show stats: {}", text(&out.stderr));
    assert!(text(&out.stdout).lines().any(|l| l.starts_with("flows.max") && l.ends_with(" 262144")));

    // The metrics endpoint answers (its port was 0: the log names the one bound).
    let log = t.ftpnat_log();
    let addr = log
        .lines()
        .find(|l| l.contains("ftpnat running"))
        .and_then(|l| l.split(" metrics=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("ftpnat_flows_max 262144"), "{body}");

    // The file's forward is in force (up.sh passed no --forward of its own).
    let peer = peer_py();
    t.serve_lan("tcp", 21, &["python3", &peer, "tcp-server", "21"]);
    let out = t.wan(SHORT, &["python3", &peer, "tcp-client", PUBLIC_IP, "2121", "--timeout", "3"]);
    assert!(
        text(&out.stdout).starts_with(&format!("peer {WAN_HOST}:")),
        "forward 2121: {}",
        text(&out.stdout)
    );

    // SIGHUP re-reads the file.
    std::fs::write(&config, toml.replace("udp-timeout = \"5m\"", "udp-timeout = \"10m\"")).unwrap();
    let pid: i32 = std::fs::read_to_string(t.state_dir.join("ftpnat.pid")).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloaded = wait_until(SHORT, || t.ftpnat_log().contains("--udp-timeout: 300s -> 600s"));
    assert!(reloaded, "no reload of --udp-timeout:\n{}", t.ftpnat_log());
    t.stop_cleanly();
    let _ = std::fs::remove_dir_all(&dir);
}
