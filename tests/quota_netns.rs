//! Nobody starves anybody, live (issue 12): the real binary between two namespaces, attacked from
//! inside.
//!
//! - One inside host floods SYNs at a remote that never answers and another sends bare ACKs (picked up
//!   mid-stream), each from every source port, while a third host opens 100 connections: all 100
//!   succeed, the floods are refused as `host_port_quota` (never `ports_exhausted`), and after the
//!   short unreplied timeout the flooders' ports are free again.
//! - 100,000 refused FTP lines make a bounded log, with the suppressed lines accounted for and the
//!   refusal counter exact.
//! - A log consumer that stops reading (stderr a pipe nobody drains) does not stall forwarding.
//!
//! Namespace tests need root: without it they print `SKIP (needs root + netns)` locally and fail under
//! `CI=true`. Every wait and every flood is bounded. About 40 s in all.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns_support::*;
use serde_json::Value;

const SHORT: Duration = Duration::from_secs(15);
const FLOODER: &str = "10.0.0.3";
const ACKER: &str = "10.0.0.4";
/// An address in the wan namespace's prefix that nobody has: what is sent there is never answered.
const BLACKHOLE: &str = "198.51.100.77";

fn flood_py() -> String {
    script("flood.py").display().to_string()
}

/// A process in a namespace, killed (by its own pid) and reaped when dropped.
struct Running(Option<Child>);

impl Running {
    fn start(ns: &str, args: &[&str]) -> Running {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "-k", "2", "60"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a flood");
        Running(Some(child))
    }

    /// Stops it (SIGTERM, which `timeout` passes on to the flood) and returns what it printed.
    fn finish(mut self) -> String {
        let Some(mut child) = self.0.take() else { return String::new() };
        stop(&mut child);
        let out = child.wait_with_output().expect("reap");
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

/// SIGTERM, then SIGKILL if it is still there 5 s later. (`ip netns exec` became `timeout`, which
/// forwards SIGTERM to its command; SIGKILL would orphan the flood instead.)
fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if wait_child_quietly(child, Duration::from_secs(5)).is_none() {
        let _ = child.kill();
    }
}

fn wait_child_quietly(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            stop(c);
            let _ = c.wait();
        }
    }
}

/// `ftpnat show stats --json` through the test's control socket.
fn stats(sock: &str) -> Value {
    let out = run_bounded(
        SHORT,
        env!("CARGO_BIN_EXE_ftpnat"),
        &["show", "stats", "--json", "--control-socket", sock],
    );
    assert!(out.status.success(), "show stats: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("show stats --json is JSON");
    v["stats"].clone()
}

fn stat(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no counter {k} in {v}"))
}

#[test]
fn syn_and_ack_floods_from_two_hosts_leave_the_port_pool_to_a_third() {
    let name = "syn_and_ack_floods_from_two_hosts_leave_the_port_pool_to_a_third";
    let sock = std::env::temp_dir().join(format!("ftpnat-quota-{}.sock", std::process::id()));
    let sock = sock.display().to_string();
    // Short unreplied timeouts so the test need not wait a minute; the share is the default 1/16.
    let extra = ["--tcp-unreplied-timeout", "3s", "--control-socket", &sock];
    let Some(mut t) = Topology::up(name, &[], &extra) else { return };
    for a in [FLOODER, ACKER] {
        let out = t.lan(SHORT, &["ip", "addr", "add", &format!("{a}/24"), "dev", &t.lan_tun]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let peer = peer_py();
    t.serve_wan("tcp", 8080, &["python3", &peer, "tcp-server", "8080"]);
    let flood = flood_py();
    // Every source port, pass after pass (bounded: 25 s), at a remote that never answers.
    let start = |src: &str, dport: &str, flags: &str| {
        let args = ["python3", &flood, "tcp", src, BLACKHOLE, dport, "--flags", flags];
        let bounds = ["--ports", "1024-65535", "--passes", "50", "--seconds", "25"];
        Running::start(&t.ns_lan, &[&args[..], &bounds[..]].concat())
    };
    let syn = start(FLOODER, "80", "syn");
    let ack = start(ACKER, "443", "ack");
    // Both flooders reach their share (4,032 ports each).
    let share: u64 = 4032;
    let mut last = Value::Null;
    let full = wait_until(Duration::from_secs(20), || {
        last = stats(&sock);
        stat(&last, "drops.host_port_quota") > 20_000
            && stat(&last, "nat.ports_in_use.tcp") >= 2 * share - 200
    });
    assert!(full, "the floods did not reach their shares: {last}");
    // Meanwhile a third host opens 100 connections. The floods fill the LAN device's queue in the
    // kernel too, which drops what does not fit before ftpnat sees it: a SYN lost there is sent again
    // by TCP (after 1, 3, 7, 15 s), so each connection gets 20 s, as an application would wait.
    let out = t.lan(
        Duration::from_secs(150),
        &[
            "python3",
            &flood,
            "connect",
            WAN_HOST,
            "8080",
            "--count",
            "100",
            "--bind",
            LAN_HOST,
            "--timeout",
            "20",
        ],
    );
    let during = stats(&sock);
    let syn_out = syn.finish();
    let ack_out = ack.finish();
    assert!(
        out.status.success(),
        "the third host's connections: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("ok 100 of 100"), "{}", text(&out.stdout));
    assert!(
        stat(&during, "nat.ports_in_use.tcp") <= 2 * share + 100 + 16,
        "the flooders held no more than their shares: {during}"
    );
    assert_eq!(stat(&during, "drops.ports_exhausted"), 0, "nobody else was refused: {during}");
    // After the short timeout the flooders' ports are free: the pool holds what the third host's
    // closing connections still hold, at most.
    let freed = wait_until(Duration::from_secs(15), || {
        last = stats(&sock);
        stat(&last, "nat.ports_in_use.tcp") <= 100
    });
    assert!(freed, "the flooders' ports did not come back: {last}");
    // And a flooder host may connect again.
    let out =
        t.lan(SHORT, &["python3", &flood, "connect", WAN_HOST, "8080", "--count", "5", "--bind", FLOODER]);
    assert!(text(&out.stdout).starts_with("ok 5 of 5"), "{}", text(&out.stdout));
    let s = t.stop_cleanly();
    let refused = s.counter("drops.host_port_quota");
    println!(
        "QUOTA_LIVE syn_flood=({syn_out}) ack_flood=({ack_out}) refused_host_port_quota={refused} \
         ports_in_use_during={} flows_during={} connects=100/100",
        stat(&during, "nat.ports_in_use.tcp"),
        stat(&during, "flows.active")
    );
    assert!(refused > 0 && s.counter("drops.ports_exhausted") == 0, "{}", s.summary);
    let _ = std::fs::remove_file(&sock);
}

/// The JSON stop summary's counters (`--log-format json` makes it one JSON object).
fn summary_counters(s: &Stopped) -> Value {
    let v: Value = serde_json::from_str(s.summary.trim()).unwrap_or_else(|e| panic!("{e}: {}", s.summary));
    v["summary"]["counters"].clone()
}

#[test]
fn a_hundred_thousand_refused_ftp_lines_make_a_bounded_log() {
    let name = "a_hundred_thousand_refused_ftp_lines_make_a_bounded_log";
    let sock = std::env::temp_dir().join(format!("ftpnat-logflood-{}.sock", std::process::id()));
    let sock = sock.display().to_string();
    let extra = ["--log-format", "json", "--control-socket", &sock];
    let Some(mut t) = Topology::up_with_log(name, &[], &extra, "ftpnat=info") else {
        return;
    };
    let peer = peer_py();
    t.serve_wan("tcp", 21, &["python3", &peer, "tcp-sink", "21", "--greeting", "220 sink ready"]);
    let started = Instant::now();
    let out = t.lan(
        Duration::from_secs(60),
        &[
            "python3",
            &flood_py(),
            "lines",
            WAN_HOST,
            "21",
            "--line",
            "PORT 1",
            "--count",
            "100000",
            "--wait-greeting",
        ],
    );
    let elapsed = started.elapsed();
    assert!(text(&out.stdout).starts_with("got 800000 bytes"), "{} {}", text(&out.stdout), text(&out.stderr));
    // Let the log ticker report the suppressed lines of the last window.
    std::thread::sleep(Duration::from_millis(1500));
    // The running gateway shows what its log held back.
    let live = stat(&stats(&sock), "log.lines_suppressed");
    assert!(live > 90_000, "show stats: log.lines_suppressed {live}");
    let s = t.stop();
    assert_eq!(s.status, Some(0), "{}", s.log);
    let c = summary_counters(&s);
    assert_eq!(c["alg.refused.malformed"], 100_000, "every refusal counted: {c}");
    let lines: Vec<Value> =
        s.log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let refusals =
        lines.iter().filter(|v| v["target"] == "ftpnat::alg" && v["fields"]["reason"] == "malformed").count();
    let suppressed: u64 = lines
        .iter()
        .filter(|v| v["target"] == "ftpnat::log" && v["fields"]["reason"] == "malformed")
        .map(|v| v["fields"]["suppressed"].as_u64().unwrap_or(0))
        .sum();
    // The rate limit: 10 lines per reason per 5 s window while the flood lasted.
    let windows = elapsed.as_secs() / 5 + 2;
    assert!(refusals as u64 <= 10 * windows, "{refusals} refusal lines in {elapsed:?}");
    assert!(lines.len() < 60 + 11 * windows as usize, "{} log lines:\n{}", lines.len(), s.log);
    assert_eq!(refusals as u64 + suppressed, 100_000, "logged + suppressed = refused");
    assert_eq!(c["log.lines_suppressed"], suppressed, "{c}");
    println!(
        "LOGFLOOD_LIVE lines=100000 refused.malformed={} log_lines={} log_bytes={} refusal_lines={refusals} \
         suppressed={suppressed} flood_time={elapsed:.2?}",
        c["alg.refused.malformed"],
        lines.len(),
        s.log.len()
    );
}

#[test]
fn a_log_reader_that_stops_reading_does_not_stall_forwarding() {
    let name = "a_log_reader_that_stops_reading_does_not_stall_forwarding";
    if !netns_available(name) {
        return;
    }
    // ftpnat through a wrapper whose stderr is a pipe nobody reads: the reader only sleeps, so after
    // 64 KiB every write to it blocks (a stalled journald, a stopped `| less`).
    let dir = std::env::temp_dir().join(format!("ftpnat-stuck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("ftpnat-stuck-stderr.sh");
    let reader_pid = dir.join("reader.pid");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nexec '{}' \"$@\" 2> >(echo $BASHPID > '{}'; exec sleep 120)\n",
            env!("CARGO_BIN_EXE_ftpnat"),
            reader_pid.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700)).unwrap();
    let env = [("FTPNAT_BIN", wrapper.display().to_string()), ("FTPNAT_LOG", "ftpnat=debug".to_string())];
    let Some(mut t) = Topology::up_env(name, &[], &[], &env) else { return };
    // Debug logging is not rate-limited: 8,000 new UDP flows make 8,000 lines (~2 MB): more than the
    // pipe (64 KiB) and the queue (4,096 lines) hold.
    let out = t.lan(
        SHORT,
        &[
            "python3",
            "-c",
            // Paced (the TUN queue holds 500 packets): 8,000 datagrams in about 0.8 s.
            &format!(
                "import socket, time\ns=socket.socket(2,2)\nfor p in range(20000,28000):\n    s.sendto(b'x',('{WAN_HOST}',p))\n    if p % 100 == 0: time.sleep(0.01)"
            ),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ping = t.lan(SHORT, &["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", WAN_HOST]);
    let s = t.stop();
    if let Some(pid) = std::fs::read_to_string(&reader_pid).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text(&ping.stdout).contains("5 received"),
        "forwarding stalled behind the log:\n{}",
        text(&ping.stdout)
    );
    assert_eq!(s.status, Some(0), "ftpnat did not stop cleanly: {}", s.summary);
    assert!(s.counter("flows.created") >= 6000, "{}", s.summary);
    assert!(
        s.counter("log.lines_lost") > 0,
        "the lines that did not fit were dropped and counted: {}",
        s.summary
    );
    println!("STUCKLOG lines_lost={} flows={}", s.counter("log.lines_lost"), s.counter("flows.created"));
}
