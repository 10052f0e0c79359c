//! Namespace plumbing for integration tests that run the real `ftpnat` binary between a `lan` and a `wan`
//! network namespace, with real programs on either side.
//!
//! Owns: the root/namespace requirement (SKIP locally, FAIL under `CI=true`), unique pid-based names so
//! tests run in parallel, bringing a topology up and down through `netns-scripts/up.sh`/`down.sh` (the
//! same code the demo uses), bounded command execution inside a namespace, background servers, and
//! teardown on drop even when the test panics. Must not: know what a test checks.
//!
//! Use from a test file with `#[path = "netns_support/mod.rs"] mod netns_support;`.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const INSIDE: &str = "10.0.0.0/24";
pub const GW_IP: &str = "10.0.0.1";
pub const LAN_HOST: &str = "10.0.0.2";
pub const PUBLIC_IP: &str = "198.51.100.1";
pub const WAN_HOST: &str = "198.51.100.2";

/// The repository root (scripts live under it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn script(name: &str) -> PathBuf {
    repo().join("netns-scripts").join(name)
}

/// `netns-scripts/peer.py`: servers that answer with the peer address they see, and their clients.
pub fn peer_py() -> String {
    script("peer.py").display().to_string()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether namespace tests can run here. Locally a missing requirement prints a loud SKIP line and
/// returns false; under `CI=true` it fails the test instead, so CI can never pass by skipping.
pub fn netns_available(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root".to_string())
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun missing".to_string())
    } else {
        match Command::new("ip").arg("netns").arg("list").stdout(Stdio::null()).stderr(Stdio::null()).status()
        {
            Ok(s) if s.success() => None,
            Ok(s) => Some(format!("`ip netns list` failed ({s})")),
            Err(e) => Some(format!("cannot run `ip`: {e}")),
        }
    };
    match why {
        None => true,
        Some(why) if in_ci() => panic!("{test}: needs root + netns, and CI=true forbids skipping: {why}"),
        Some(why) => {
            eprintln!("SKIP (needs root + netns): {test}: {why}");
            false
        }
    }
}

/// Runs `cmd` with a hard time limit (coreutils `timeout`, then SIGKILL 2 s later).
pub fn run_bounded(limit: Duration, program: &str, args: &[&str]) -> Output {
    let secs = format!("{}", limit.as_secs().max(1));
    Command::new("timeout")
        .args(["-k", "2", &secs, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// A background process killed (and reaped) when dropped.
pub struct Bg {
    pub what: String,
    child: Child,
    log: PathBuf,
}

impl Bg {
    /// Everything the process wrote so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How ftpnat ended, read from the files up.sh's wrapper leaves in the state directory.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<i32>,
    /// stdout: the stop summary.
    pub summary: String,
    /// stderr: the log.
    pub log: String,
}

impl Stopped {
    /// The value of a counter in the stop summary (absent counters are zero).
    pub fn counter(&self, name: &str) -> u64 {
        self.summary
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .get(..2)
                    .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            })
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One lan/wan topology with ftpnat running between them. Torn down on drop.
pub struct Topology {
    pub test: String,
    pub ns_lan: String,
    pub ns_wan: String,
    pub lan_tun: String,
    pub wan_tun: String,
    pub state_dir: PathBuf,
    env: Vec<(&'static str, String)>,
    servers: Vec<Bg>,
    down: bool,
}

impl Topology {
    /// Unique names for this process and call; device names stay within the kernel's 15 bytes.
    pub fn names(test: &str) -> Topology {
        let (pid, n) = (std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let ns_lan = format!("ftpnat-t{pid}-{n}-lan");
        let ns_wan = format!("ftpnat-t{pid}-{n}-wan");
        let lan_tun = format!("ft{pid}x{n}l");
        let wan_tun = format!("ft{pid}x{n}w");
        let state_dir = std::env::temp_dir().join(format!("ftpnat-test-{pid}-{n}"));
        Topology {
            test: test.to_string(),
            env: vec![
                ("FTPNAT_NS_LAN", ns_lan.clone()),
                ("FTPNAT_NS_WAN", ns_wan.clone()),
                ("FTPNAT_LAN_TUN", lan_tun.clone()),
                ("FTPNAT_WAN_TUN", wan_tun.clone()),
                ("FTPNAT_INSIDE", INSIDE.into()),
                ("FTPNAT_GW_IP", GW_IP.into()),
                ("FTPNAT_LAN_HOST", LAN_HOST.into()),
                ("FTPNAT_PUBLIC_IP", PUBLIC_IP.into()),
                ("FTPNAT_WAN_HOST", WAN_HOST.into()),
                ("FTPNAT_BIN", env!("CARGO_BIN_EXE_ftpnat").into()),
                ("FTPNAT_STATE_DIR", state_dir.display().to_string()),
                ("FTPNAT_LOG", "ftpnat=debug".into()),
                ("FTPNAT_FORWARDS", String::new()),
                ("FTPNAT_EXTRA_ARGS", String::new()),
                // Never the caller's: a test states its configuration file (`up_with_config`).
                ("FTPNAT_CONFIG", String::new()),
                // The namespace suites' second run sets it for every topology (up.sh adds `--workers`
                // unless the test's flags have it); unset, one worker, whatever the CPU count (ftpnat's
                // default), so that a run is the same on every machine.
                ("FTPNAT_WORKERS", std::env::var("FTPNAT_WORKERS").unwrap_or_else(|_| "1".into())),
                // IPv4 only unless a test asks for NAT64 (`tests/nat64_support`).
                ("FTPNAT_NAT64_PREFIX", String::new()),
                ("FTPNAT_LAN_IPV4", "yes".into()),
            ],
            ns_lan,
            ns_wan,
            lan_tun,
            wan_tun,
            state_dir,
            servers: Vec::new(),
            down: true,
        }
    }

    /// Brings up a topology with ftpnat run with `--forward` for each of `forwards` and `extra` flags.
    /// `None` when namespaces are unavailable here (and not in CI): the test returns early.
    pub fn up(test: &str, forwards: &[&str], extra: &[&str]) -> Option<Topology> {
        if !netns_available(test) {
            return None;
        }
        let mut t = Topology::names(test);
        t.set_env("FTPNAT_FORWARDS", forwards.join(" "));
        t.set_env("FTPNAT_EXTRA_ARGS", extra.join(" "));
        Some(t.launch())
    }

    /// [`Topology::up`] with ftpnat's `RUST_LOG` set to `filter` (default `ftpnat=debug`), e.g. to
    /// check that something never reaches the log even at trace level.
    pub fn up_with_log(test: &str, forwards: &[&str], extra: &[&str], filter: &str) -> Option<Topology> {
        Topology::up_env(test, forwards, extra, &[("FTPNAT_LOG", filter.to_string())])
    }

    /// [`Topology::up`] with some of the `netns-scripts/env.sh` settings replaced (`FTPNAT_LOG`,
    /// `FTPNAT_BIN`, ...), e.g. to run ftpnat through a wrapper.
    pub fn up_env(
        test: &str,
        forwards: &[&str],
        extra: &[&str],
        env: &[(&'static str, String)],
    ) -> Option<Topology> {
        if !netns_available(test) {
            return None;
        }
        let mut t = Topology::names(test);
        t.set_env("FTPNAT_FORWARDS", forwards.join(" "));
        t.set_env("FTPNAT_EXTRA_ARGS", extra.join(" "));
        for (k, v) in env {
            t.set_env(k, v.clone());
        }
        Some(t.launch())
    }

    /// [`Topology::up`] the way the README's "Operating ftpnat" section does it: `up.sh` with
    /// `FTPNAT_CONFIG=config` (the topology's flags override the file; forwards come from it) and
    /// `extra` flags.
    pub fn up_with_config(test: &str, config: &Path, extra: &[&str]) -> Option<Topology> {
        if !netns_available(test) {
            return None;
        }
        let mut t = Topology::names(test);
        t.set_env("FTPNAT_CONFIG", config.display().to_string());
        t.set_env("FTPNAT_EXTRA_ARGS", extra.join(" "));
        Some(t.launch())
    }

    /// Runs up.sh with this topology's settings; asserts it succeeded.
    fn launch(mut self) -> Topology {
        self.down = false; // from here on, drop tears down whatever up.sh managed to build
        let out = self.script("up.sh", Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{}: up.sh failed:\n{}\n{}\n{}",
            self.test,
            text(&out.stdout),
            text(&out.stderr),
            self.ftpnat_log()
        );
        self
    }

    fn set_env(&mut self, key: &'static str, value: String) {
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
    }

    fn script(&self, name: &str, limit: Duration) -> Output {
        let secs = format!("{}", limit.as_secs());
        Command::new("timeout")
            .args(["-k", "2", &secs])
            .arg(script(name))
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
    }

    fn exec(&self, ns: &str, limit: Duration, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", ns, "timeout", "-k", "2"];
        let secs = format!("{}", limit.as_secs().max(1));
        full.push(&secs);
        full.extend_from_slice(args);
        run_bounded(limit + Duration::from_secs(5), "ip", &full)
    }

    /// Runs a command in the lan namespace, killed after `limit`.
    pub fn lan(&self, limit: Duration, args: &[&str]) -> Output {
        self.exec(&self.ns_lan, limit, args)
    }

    /// Runs a command in the wan namespace, killed after `limit`.
    pub fn wan(&self, limit: Duration, args: &[&str]) -> Output {
        self.exec(&self.ns_wan, limit, args)
    }

    fn spawn(&mut self, ns: &str, what: &str, args: &[&str]) -> &Bg {
        let log = self.state_dir.join(format!("bg-{}.log", self.servers.len()));
        let file = std::fs::File::create(&log).expect("server log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        self.servers.push(Bg { what: what.to_string(), child, log });
        self.servers.last().expect("just pushed")
    }

    /// Starts a server in the lan namespace and waits (bounded) until it listens on `proto`/`port`.
    pub fn serve_lan(&mut self, proto: &str, port: u16, args: &[&str]) -> usize {
        let ns = self.ns_lan.clone();
        self.serve(&ns, proto, port, args)
    }

    /// Starts a server in the wan namespace and waits (bounded) until it listens on `proto`/`port`.
    pub fn serve_wan(&mut self, proto: &str, port: u16, args: &[&str]) -> usize {
        let ns = self.ns_wan.clone();
        self.serve(&ns, proto, port, args)
    }

    fn serve(&mut self, ns: &str, proto: &str, port: u16, args: &[&str]) -> usize {
        let what = format!("{} ({proto}/{port} in {ns})", args.join(" "));
        self.spawn(ns, &what, args);
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        let filter = format!("sport = :{port}");
        let ok = wait_until(Duration::from_secs(15), || {
            let o = run_bounded(Duration::from_secs(5), "ip", &["netns", "exec", ns, "ss", flag, &filter]);
            o.status.success() && !o.stdout.is_empty()
        });
        let i = self.servers.len() - 1;
        assert!(ok, "{}: {what} did not start listening: {}", self.test, self.servers[i].output());
        i
    }

    /// Output so far of the server returned by `serve_*`.
    pub fn server_output(&self, i: usize) -> String {
        self.servers[i].output()
    }

    pub fn ftpnat_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("ftpnat.log")).unwrap_or_default()
    }

    /// Whether the ftpnat process is still running.
    pub fn ftpnat_running(&self) -> bool {
        std::fs::read_to_string(self.state_dir.join("ftpnat.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
            && !self.state_dir.join("ftpnat.status").exists()
    }

    /// Waits (bounded) for ftpnat to exit on its own; its status, summary and log.
    pub fn wait_exit(&self, limit: Duration) -> Option<Stopped> {
        let status = self.state_dir.join("ftpnat.status");
        wait_until(limit, || std::fs::read_to_string(&status).is_ok_and(|s| s.ends_with('\n')))
            .then(|| self.stopped())
    }

    fn stopped(&self) -> Stopped {
        let read = |f: &str| std::fs::read_to_string(self.state_dir.join(f)).unwrap_or_default();
        Stopped {
            status: read("ftpnat.status").trim().parse().ok(),
            summary: read("ftpnat.out"),
            log: read("ftpnat.log"),
        }
    }

    /// Stops ftpnat with SIGTERM and removes the namespaces (down.sh); how ftpnat ended.
    pub fn stop(&mut self) -> Stopped {
        self.servers.clear();
        let out = self.script("down.sh", Duration::from_secs(30));
        self.down = true;
        assert!(out.status.success(), "{}: down.sh failed: {}", self.test, text(&out.stderr));
        self.stopped()
    }

    /// Stops ftpnat and asserts it exited 0 with a stop summary, as on any SIGTERM.
    pub fn stop_cleanly(&mut self) -> Stopped {
        let s = self.stop();
        assert_eq!(s.status, Some(0), "{}: ftpnat did not exit 0 on SIGTERM:\n{}", self.test, s.log);
        assert!(s.summary.starts_with("ftpnat: stopped by SIGTERM"), "{}: summary: {}", self.test, s.summary);
        s
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.servers.clear();
        if !self.down {
            if std::thread::panicking() {
                eprintln!(
                    "--- {}: ftpnat log ({}) ---\n{}",
                    self.test,
                    self.state_dir.display(),
                    self.ftpnat_log()
                );
            }
            let _ = self.script("down.sh", Duration::from_secs(30));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads lines from a child's stdout until one satisfies `pred` or `limit` passes.
pub fn wait_line(child: &mut Child, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let Some(out) = child.stdout.take() else { return false };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Exit status helper for messages.
pub fn describe(s: &ExitStatus) -> String {
    s.code().map_or_else(|| format!("{s}"), |c| format!("exit {c}"))
}

/// A bare network namespace for tests that drive ftpnat by hand; deleted (with its processes) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let out = run_bounded(Duration::from_secs(10), "ip", &["netns", "add", name]);
        assert!(out.status.success(), "ip netns add {name}: {}", text(&out.stderr));
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`, asserted to succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = run_bounded(Duration::from_secs(10), "ip", &full);
        assert!(out.status.success(), "ip {}: {}", full.join(" "), text(&out.stderr));
        out
    }

    /// `ip -n NAME ARGS...` without asserting.
    pub fn ip_try(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_bounded(Duration::from_secs(10), "ip", &full)
    }

    /// A command to run inside the namespace (the caller adds args, stdio and bounds the wait).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = run_bounded(Duration::from_secs(10), "ip", &["netns", "pids", &self.name]);
        for pid in text(&pids.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = run_bounded(Duration::from_secs(10), "ip", &["netns", "del", &self.name]);
    }
}

/// Waits (bounded) for a child to exit; kills it and returns `None` on timeout.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
