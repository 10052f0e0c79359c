//! Live attacks on the real `ftpnat` binary between namespaces (issue 11): an off-path attacker in the
//! server's namespace forges RSTs, RST|ACKs, ACKs of bytes never sent, FINs, data and SYNs into a
//! running curl FTP download (control and data connections), which must complete byte for byte; and
//! the NAT Slipstreaming HTTP POST to port 21 must open no pinhole.
//!
//! Owns: these two scenarios. The forger is `netns-scripts/tcp-forge.py` (raw sockets, no scapy), run in
//! the `wan` namespace the test made, sending only to ftpnat's public address. Must not: know engine
//! internals: what the gateway did is read from its stop summary.
//!
//! Needs root: without it the tests print `SKIP (needs root + netns)`, and fail under `CI=true`. Unique
//! names per test; every wait bounded; teardown on drop. About 20 s.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use netns_support::*;

const SHORT: Duration = Duration::from_secs(20);
const USER: &str = "ftpnat";
const PASS: &str = "attack-pw";
/// 24 MiB at 4 MiB/s: about six seconds of transfer to attack.
const BLOB_MIB: usize = 24;

fn sha256(path: &std::path::Path) -> String {
    let o = run_bounded(SHORT, "sha256sum", &[&path.display().to_string()]);
    text(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

#[test]
fn forged_rst_ack_fin_and_data_do_not_break_a_running_ftp_transfer() {
    let test = "netns_attacks/forged_segments";
    let Some(mut t) = Topology::up(test, &[], &[]) else { return };
    let dir = t.state_dir.join("attack");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let blob = root.join("blob.bin");
    let data: Vec<u8> = (0..BLOB_MIB << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    std::fs::write(&blob, &data).unwrap();
    let py = script("ftp-pyftpd.py").display().to_string();
    let root_s = root.display().to_string();
    t.serve_wan(
        "tcp",
        21,
        &[
            "python3",
            &py,
            &root_s,
            "--bind",
            WAN_HOST,
            "--port",
            "21",
            "--user",
            USER,
            "--password",
            PASS,
            "--pasv",
            "30000-30010",
        ],
    );
    // The download: passive mode, rate-limited so the attack lands in the middle of it.
    let got = dir.join("got.bin");
    let mut curl = Command::new("ip")
        .args(["netns", "exec", &t.ns_lan, "timeout", "-k", "2", "60", "curl", "-sS", "--ftp-pasv"])
        .args(["--limit-rate", "4M", "-u", &format!("{USER}:{PASS}"), "-o"])
        .arg(&got)
        .arg(format!("ftp://{WAN_HOST}:21/blob.bin"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl starts");
    // The attack: once the forger has seen both connections (control and data; bounded wait), 3 s of
    // forged segments into every connection it sees.
    let forge = script("tcp-forge.py").display().to_string();
    let report = dir.join("forged.json");
    let o = t.wan(
        SHORT,
        &[
            "python3",
            &forge,
            "--iface",
            &t.wan_tun,
            "--gateway",
            PUBLIC_IP,
            "--secs",
            "3",
            "--every",
            "50",
            "--wait-conns",
            "2",
            "--wait-max",
            "15",
            "--out",
            &report.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{test}: forger failed: {}\n{}", text(&o.stdout), text(&o.stderr));
    let forged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let status = wait_child(&mut curl, Duration::from_secs(60)).expect("curl finished within its bound");
    let out = curl.wait_with_output().expect("curl output");
    assert!(status.success(), "{test}: curl failed ({}): {}", describe(&status), text(&out.stderr));
    assert_eq!(sha256(&got), sha256(&blob), "{test}: the file arrived intact");
    let stopped = t.stop_cleanly();
    let sent = |k: &str| forged["sent"][k].as_u64().unwrap_or(0);
    let conns = forged["connections"].as_u64().unwrap_or(0);
    assert!(conns >= 2, "{test}: the forger attacked control and data connection: {forged}");
    // Every RST, RST|ACK and ACK of unsent bytes is outside the window and dropped; FINs, data and
    // SYNs are dropped or passed on unchanged (then the client's TCP discards them).
    let beyond = sent("rst") + sent("rstack") + sent("ackbeyond");
    let dropped = stopped.counter("drops.tcp_out_of_window");
    assert!(dropped >= beyond, "{test}: {beyond} forged RSTs/ACKs, {dropped} dropped:\n{}", stopped.summary);
    eprintln!("{test}: forged {forged}; drops.tcp_out_of_window {dropped}; transfer intact");
}

#[test]
fn http_body_slipstream_to_port_21_opens_no_pinhole() {
    let test = "netns_attacks/slipstream";
    let Some(mut t) = Topology::up(test, &[], &[]) else { return };
    let dir = t.state_dir.join("slip");
    std::fs::create_dir_all(&dir).unwrap();
    let seen = dir.join("server-saw.bin");
    // The attacker's server on port 21: greets like FTP, keeps what it receives, answers like HTTP.
    let server = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 21))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(10)
c.sendall(b"220 totally ftp\r\n")
buf = b""
try:
    while b"PORT" not in buf or not buf.endswith(b"\r\n"):
        d = c.recv(65536)
        if not d:
            break
        buf += d
except OSError as e:
    print("server:", e, file=sys.stderr)
finally:
    # What arrived is kept whatever the client did (a reset, a timeout).
    open(sys.argv[2], "wb").write(buf)
c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
c.close()
"#;
    let seen_s = seen.display().to_string();
    let srv = t.serve_wan("tcp", 21, &["python3", "-c", server, WAN_HOST, &seen_s]);
    // A listener on the inside port the body names (10,0,0,2,39,36 = 10.0.0.2:10020): nothing may reach it.
    t.serve_lan("tcp", 10020, &["python3", &peer_py(), "tcp-server", "10020", "--bind", LAN_HOST]);
    let body = dir.join("body.txt");
    std::fs::write(&body, b"xxxx\r\nPORT 10,0,0,2,39,36\r\n").unwrap();
    let o = t.lan(
        SHORT,
        &[
            "curl",
            "-sS",
            // The greeting is not HTTP: without --http0.9 curl gives up on reading it and may reset
            // the connection before the server has read the body the test is about.
            "--http0.9",
            "--max-time",
            "10",
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("http://{WAN_HOST}:21/"),
        ],
    );
    // The answer does not matter: what crossed the gateway does (curl's stderr is shown on failure).
    let saw = std::fs::read(&seen).unwrap_or_default();
    assert!(
        saw.windows(21).any(|w| w == b"PORT 10,0,0,2,39,36\r\n"),
        "{test}: the server got the body unchanged: {:?}\nserver: {}\ncurl: {}",
        String::from_utf8_lossy(&saw),
        t.server_output(srv),
        text(&o.stderr)
    );
    // The data connection the attacker wanted: from outside to the public address, port 10020.
    let o = t.wan(SHORT, &["python3", &peer_py(), "tcp-client", PUBLIC_IP, "10020", "--timeout", "3"]);
    assert!(!o.status.success(), "{test}: a connection to 10020 crossed: {}", text(&o.stdout));
    let stopped = t.stop_cleanly();
    assert_eq!(stopped.counter("pinholes.created"), 0, "{}", stopped.summary);
    assert_eq!(stopped.counter("alg.rewrites.total"), 0, "{}", stopped.summary);
    assert_eq!(stopped.counter("alg.refused.not_ftp"), 1, "{}", stopped.summary);
}
