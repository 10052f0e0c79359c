//! Real FTP software through the real `ftpnat` binary, in network namespaces: the client × server ×
//! mode × topology matrix, the `--no-ftp-alg` counter-proof, and the ALG policy seen from real servers.
//!
//! Owns: the FTP matrix (curl, Python ftplib, wget, lftp against vsftpd and pyftpdlib in `wan`; vsftpd and
//! pyftpdlib in `lan` behind `--forward` with clients in `wan`), each row moving 50 MiB each way (RETR and
//! STOR; wget cannot upload, so its rows are RETR only) compared by sha256; the pass table it prints in
//! any case (stderr, uncaptured, and `$CARGO_TARGET_TMPDIR/ftp_real_matrix.txt`); ftpnat's ALG counters.
//! Must not: know engine internals. What the gateway did is read from its stop summary and its log lines
//! (`ftpnat::alg` "rewrite", `ftpnat::pinhole` "pinhole used"); what the servers saw from their own logs.
//!
//! Both servers refuse a PORT/EPRT naming an address other than the control connection's peer and a
//! passive data connection from another address (vsftpd `port_promiscuous=NO`/`pasv_promiscuous=NO`,
//! pyftpdlib `permit_foreign_addresses = False`): an active-mode row passes only if the ALG rewrote the
//! announcement, and every row checks that the server saw the mode's command and that ftpnat made
//! exactly the rewrites the mode needs (none for passive to an outside server, whose address is public).
//!
//! Needs root: without it the tests print `SKIP (needs root + netns)`, and fail under `CI=true`. Each
//! topology has unique names; groups run on two threads; every wait is bounded; teardown on drop.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_support::*;

/// The issue asks for at least 50 MB each way per row.
const BLOB_BYTES: usize = 50 << 20;
/// One transfer of 50 MiB, however slow the CI machine: a hung transfer is killed after this.
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);
/// A transfer that must fail (no ALG) fails within seconds; this bounds it.
const FAIL_LIMIT: Duration = Duration::from_secs(40);
const SHORT: Duration = Duration::from_secs(15);
/// ftpnat's log filter for the matrix: pinhole and flow events are at debug.
const LOG: &str = "ftpnat=debug";

/// pyftpdlib's user. Distinctive, so the log check can prove it never reaches ftpnat's log.
const PY_USER: &str = "ftpnat";
const PY_PASS: &str = "pw-Zq7v-never-logged";
/// The password anonymous clients give vsftpd (which asks for one): also never logged.
const ANON_PASS: &str = "anon-Xk4w-never-logged";

const VSFTPD_PASV: (u16, u16) = (30000, 30099);
const PYFTPD_PASV: (u16, u16) = (30100, 30199);
const VSFTPD_TLS_PASV: (u16, u16) = (30200, 30299);
const PYFTPD_PORT: u16 = 2121;

// ---- the matrix vocabulary -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Curl,
    Ftplib,
    Wget,
    Lftp,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Curl => "curl",
            Client::Ftplib => "ftplib",
            Client::Wget => "wget",
            Client::Lftp => "lftp",
        }
    }

    fn can_upload(self) -> bool {
        self != Client::Wget
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pasv,
    Epsv,
    Port,
    Eprt,
}

const ALL_MODES: [Mode; 4] = [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt];

impl Mode {
    /// The command the client sends for each data connection (and the mode's name in the table).
    fn command(self) -> &'static str {
        match self {
            Mode::Pasv => "PASV",
            Mode::Epsv => "EPSV",
            Mode::Port => "PORT",
            Mode::Eprt => "EPRT",
        }
    }
}

/// Where the FTP server is: `Outside` in `wan` with the client in `lan` (SNAT); `Inside` in `lan` behind
/// a `--forward` with the client in `wan` (DNAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Outside,
    Inside,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Outside => "lan->wan",
            Place::Inside => "wan->lan(fwd)",
        }
    }

    /// The rewrite ftpnat must make for each data connection of `mode`, as its log names the kind; `None`
    /// when the announcement already names a public address (PASV/EPSV from an outside server, PORT/EPRT
    /// from an outside client).
    fn rewrite(self, mode: Mode) -> Option<&'static str> {
        match (self, mode) {
            (Place::Outside, Mode::Port) => Some("port"),
            (Place::Outside, Mode::Eprt) => Some("eprt"),
            (Place::Inside, Mode::Pasv) => Some("227"),
            (Place::Inside, Mode::Epsv) => Some("229"),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerKind {
    Vsftpd,
    Pyftpdlib,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd",
            ServerKind::Pyftpdlib => "pyftpdlib",
        }
    }
}

/// A running FTP server as a client reaches it.
struct Server {
    kind: ServerKind,
    place: Place,
    /// Address and port the client dials (the public address for an inside server).
    host: String,
    port: u16,
    user: &'static str,
    pass: &'static str,
    /// Directory holding `blob.bin`; uploads land in `upload/` below it.
    root: PathBuf,
    /// The server's protocol log: every command as the server received it.
    log: PathBuf,
}

impl Server {
    /// How often the server's log shows `cmd` (a command name such as "PORT") received.
    fn commands_seen(&self, cmd: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // vsftpd: `FTP command: Client "1.2.3.4", "PORT 1,2,3,4,5,6"`; ftp-pyftpd.py: `ip:port received PORT 1,2,..`.
        let (vs, py) = (format!("\", \"{cmd}"), format!(" received {cmd} "));
        log.lines()
            .filter(|l| match self.kind {
                ServerKind::Vsftpd => l.contains("FTP command: Client") && l.contains(&vs),
                ServerKind::Pyftpdlib => l.contains(&py),
            })
            .count()
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://{}:{}/{path}", self.host, self.port)
    }
}

/// One row of the matrix: a client transfers the blob down and up in one mode.
#[derive(Clone, Copy)]
struct Row {
    client: Client,
    mode: Mode,
    /// Index into the group's servers.
    server: usize,
    /// The row passes when the transfers fail (the `--no-ftp-alg` counter-proof).
    expect_fail: bool,
}

/// What one row did, for the table.
struct Outcome {
    client: &'static str,
    server: &'static str,
    mode: &'static str,
    place: &'static str,
    alg: bool,
    expect_fail: bool,
    pass: bool,
    bytes: u64,
    secs: f64,
    rewrites: String,
    /// Packets ftpnat dropped during the row (debug log), and the first of them.
    drops: usize,
    note_drops: String,
    note: String,
}

/// The command that moves one file in `mode`; `None` when the client cannot do it (wget uploads).
/// `quick`: a transfer expected to fail gives up on a data connection after 5 s instead of 10.
fn transfer_cmd(
    client: Client,
    mode: Mode,
    srv: &Server,
    up: bool,
    local: &str,
    remote: &str,
    quick: bool,
) -> Option<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (u, p) = (srv.user, srv.pass);
    Some(match client {
        Client::Curl => {
            // -v: the control dialogue on stderr names the reply that made a transfer fail.
            let connect = if quick { "5" } else { "10" };
            let mut c = s(&["curl", "-sS", "-v", "--max-time", "170", "--connect-timeout", connect]);
            c.extend(s(&["-u", &format!("{u}:{p}")]));
            c.extend(s(match mode {
                Mode::Epsv => &["--ftp-pasv"],
                // curl ignores the 227 address unless told to use it: make it use the rewritten one.
                Mode::Pasv => &["--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip"],
                Mode::Eprt => &["-P", "-"],
                Mode::Port => &["-P", "-", "--disable-eprt"],
            }));
            c.extend(s(&[if up { "-T" } else { "-o" }, local, &srv.url(remote)]));
            c
        }
        Client::Ftplib => {
            let m = match mode {
                Mode::Pasv => "pasv",
                Mode::Port => "port",
                _ => panic!("ftplib speaks only PASV and PORT over IPv4"),
            };
            let port = srv.port.to_string();
            let script = script("ftp-client.py").display().to_string();
            let mut c = s(&["python3", &script, &srv.host, &port, u, p]);
            c.extend(s(&if up { ["put", local, remote] } else { ["get", remote, local] }));
            c.extend(s(&["--mode", m, "--timeout", "60"]));
            c
        }
        Client::Wget => {
            if up {
                return None;
            }
            let mut c = s(&["wget", "-q", "--tries=1", "--timeout=30"]);
            match mode {
                Mode::Pasv => {}
                Mode::Port => c.push("--no-passive-ftp".into()),
                _ => panic!("wget speaks only PASV and PORT over IPv4"),
            }
            c.extend(s(&[&format!("--ftp-user={u}"), &format!("--ftp-password={p}"), "-O", local]));
            c.push(srv.url(remote));
            c
        }
        Client::Lftp => {
            let passive = match mode {
                Mode::Pasv => "on",
                Mode::Port => "off",
                _ => panic!("lftp speaks only PASV and PORT over IPv4"),
            };
            let op = if up { format!("put {local} -o {remote}") } else { format!("get {remote} -o {local}") };
            // fix-pasv-address no: use the 227 address as sent (the rewritten one), not the control peer.
            let script = format!(
                "set cmd:fail-exit yes; set ftp:ssl-allow no; set ftp:fix-pasv-address no; \
                 set ftp:prefer-epsv no; set ftp:passive-mode {passive}; set net:max-retries 1; \
                 set net:timeout 30; set net:persist-retries 0; set xfer:clobber on; \
                 open -u {u},{p} -p {} {}; {op}",
                srv.port, srv.host
            );
            s(&["lftp", "-c", &script])
        }
    })
}

/// The most telling line of a failed client's output: a 4xx/5xx reply or a connect failure in curl's
/// `-v` dialogue, else the last line.
fn why_failed(out: &std::process::Output) -> String {
    let all = format!("{}\n{}", text(&out.stderr), text(&out.stdout));
    let telling = |l: &&str| {
        l.starts_with("< 4")
            || l.starts_with("< 5")
            || l.contains("connect fail")
            || l.contains("time-out")
            || l.contains("timed out")
            || l.starts_with("failed:")
    };
    let lines: Vec<&str> = all.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.iter().copied().rev().find(telling).or(lines.last().copied()).unwrap_or("").to_string()
}

fn sha256(path: &Path) -> Option<String> {
    let out = run_bounded(Duration::from_secs(60), "sha256sum", &[&path.display().to_string()]);
    let t = text(&out.stdout);
    (out.status.success() && t.len() >= 64).then(|| t[..64].to_string())
}

/// Counts of ftpnat's "rewrite" log lines by kind, and of pinholes used.
#[derive(Clone, Default, PartialEq, Debug)]
struct AlgLog {
    rewrites: Vec<(String, usize)>,
    /// Lines of target `ftpnat::alg` the log's rate limit suppressed and reported (`N log line(s)
    /// suppressed by the rate limit`, `of=ftpnat::alg`): a burst of more than 10 rewrites within 5 s
    /// loses lines by design (`io::log::RateLimit`), and every one lost is reported.
    alg_suppressed: usize,
    /// The same for target `ftpnat::pinhole` ("pinhole used" lines).
    pinhole_suppressed: usize,
    pinholes_used: usize,
    /// "drop" lines (debug level) other than `not_ipv4` (the kernel's IPv6 chatter).
    drops: Vec<String>,
}

impl AlgLog {
    fn read(log: &str) -> AlgLog {
        let mut a = AlgLog::default();
        for l in log.lines() {
            if l.contains("ftpnat::alg") && l.contains(" rewrite ") {
                let kind = field(l, "kind").unwrap_or_else(|| "?".into());
                match a.rewrites.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => a.rewrites.push((kind, 1)),
                }
            } else if l.contains("ftpnat::log") && l.contains(" suppressed=") {
                let n = field(l, "suppressed").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
                match field(l, "of").as_deref() {
                    Some("ftpnat::alg") => a.alg_suppressed += n,
                    Some("ftpnat::pinhole") => a.pinhole_suppressed += n,
                    _ => {}
                }
            } else if l.contains("ftpnat::pinhole") && l.contains("pinhole used") {
                a.pinholes_used += 1;
            } else if l.contains("ftpnat::drop") {
                let reason = field(l, "reason").unwrap_or_else(|| "?".into());
                if reason != "not_ipv4" {
                    // `packet=` is the last field and has spaces: take the rest of the line.
                    let packet = l.split_once(" packet=").map_or("", |(_, p)| p.trim());
                    a.drops.push(format!("{reason} {packet}"));
                }
            }
        }
        a
    }

    fn count(&self, kind: &str) -> usize {
        self.rewrites.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n)
    }

    fn total(&self) -> usize {
        self.rewrites.iter().map(|(_, n)| n).sum()
    }

    /// What happened between `before` and `self`.
    fn since(&self, before: &AlgLog) -> AlgLog {
        let rewrites = self
            .rewrites
            .iter()
            .map(|(k, n)| (k.clone(), n - before.count(k)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let drops = self.drops.get(before.drops.len()..).unwrap_or_default().to_vec();
        AlgLog {
            rewrites,
            alg_suppressed: self.alg_suppressed - before.alg_suppressed,
            pinholes_used: self.pinholes_used - before.pinholes_used,
            pinhole_suppressed: self.pinhole_suppressed - before.pinhole_suppressed,
            drops,
        }
    }

    fn describe(&self) -> String {
        if self.rewrites.is_empty() {
            return "none".into();
        }
        self.rewrites.iter().map(|(k, n)| format!("{k}x{n}")).collect::<Vec<_>>().join(",")
    }
}

/// The value of `name=...` in a tracing text log line, quotes removed.
fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    if let Some(q) = rest.strip_prefix('"') {
        q.find('"').map(|e| q[..e].to_string())
    } else {
        Some(rest.split_whitespace().next().unwrap_or("").to_string())
    }
}

// ---- a group: one topology, its servers, its rows ----------------------------------------------------

/// Files shared by every group of a test: the blob (tmpfs when there is one), its length and digest.
struct Shared {
    dir: PathBuf,
    blob: PathBuf,
    blob_len: u64,
    blob_sha: String,
}

impl Shared {
    /// `tag` keeps two tests of this process apart.
    fn new(tag: &str, bytes: usize) -> Shared {
        let base =
            if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("ftpnat-ftpreal-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("work dir");
        let blob = dir.join("blob.bin");
        let out = run_bounded(
            Duration::from_secs(60),
            "sh",
            &["-c", &format!("head -c {bytes} /dev/urandom >'{}'", blob.display())],
        );
        assert!(out.status.success(), "cannot make the blob: {}", text(&out.stderr));
        set_mode(&blob, 0o644); // vsftpd serves anonymous users only world-readable files
        let blob_sha = sha256(&blob).expect("sha256 of the blob");
        Shared { dir, blob, blob_len: bytes as u64, blob_sha }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

struct Group<'a> {
    name: &'static str,
    t: Topology,
    alg: bool,
    shared: &'a Shared,
    dir: PathBuf,
    servers: Vec<Server>,
}

impl<'a> Group<'a> {
    /// `log`: ftpnat's RUST_LOG filter.
    fn up(name: &'static str, shared: &'a Shared, forwards: &[&str], extra: &[&str], log: &str) -> Group<'a> {
        let t = Topology::up_with_log(&format!("ftp_real/{name}"), forwards, extra, log)
            .expect("namespaces checked before");
        let dir = shared.dir.join(name);
        std::fs::create_dir_all(&dir).expect("group dir");
        Group { name, t, alg: !extra.contains(&"--no-ftp-alg"), shared, dir, servers: Vec::new() }
    }

    /// Starts `kind` in `place` (wan for Outside, lan for Inside) listening on `port`; returns its index.
    fn server(&mut self, kind: ServerKind, place: Place, port: u16) -> usize {
        self.server_tls(kind, place, port, false)
    }

    /// `tls`: vsftpd offers AUTH TLS (own passive range, so two vsftpd can share a namespace).
    fn server_tls(&mut self, kind: ServerKind, place: Place, port: u16, tls: bool) -> usize {
        let sdir =
            self.dir.join(format!("{}-{}-{port}", kind.name(), place.name().replace(['>', '(', ')'], "")));
        let root = sdir.join("root");
        std::fs::create_dir_all(root.join("upload")).expect("server root");
        std::fs::hard_link(&self.shared.blob, root.join("blob.bin"))
            .or_else(|_| std::fs::copy(&self.shared.blob, root.join("blob.bin")).map(|_| ()))
            .expect("blob into the server root");
        let listen = if place == Place::Outside { WAN_HOST } else { LAN_HOST };
        let (port_s, sdir_s, root_s) =
            (port.to_string(), sdir.display().to_string(), root.display().to_string());
        let (log, user, pass) = match kind {
            ServerKind::Vsftpd => {
                let range = if tls { VSFTPD_TLS_PASV } else { VSFTPD_PASV };
                let (lo, hi) = (range.0.to_string(), range.1.to_string());
                let sh = script("ftp-vsftpd.sh").display().to_string();
                let mut args = vec!["bash", &sh, &sdir_s, listen, &port_s, &lo, &hi];
                if tls {
                    args.push("tls");
                }
                match place {
                    Place::Outside => self.t.serve_wan("tcp", port, &args),
                    Place::Inside => self.t.serve_lan("tcp", port, &args),
                };
                (sdir.join("vsftpd.log"), "anonymous", ANON_PASS)
            }
            ServerKind::Pyftpdlib => {
                let log = sdir.join("pyftpdlib.log");
                let range = format!("{}-{}", PYFTPD_PASV.0, PYFTPD_PASV.1);
                let py = script("ftp-pyftpd.py").display().to_string();
                let log_s = log.display().to_string();
                let args = [
                    "python3",
                    &py,
                    &root_s,
                    "--bind",
                    listen,
                    "--port",
                    &port_s,
                    "--user",
                    PY_USER,
                    "--password",
                    PY_PASS,
                    "--pasv",
                    &range,
                    "--log",
                    &log_s,
                ];
                match place {
                    Place::Outside => self.t.serve_wan("tcp", port, &args),
                    Place::Inside => self.t.serve_lan("tcp", port, &args),
                };
                (log, PY_USER, PY_PASS)
            }
        };
        let host = if place == Place::Outside { WAN_HOST } else { PUBLIC_IP };
        self.servers.push(Server { kind, place, host: host.into(), port, user, pass, root, log });
        self.servers.len() - 1
    }

    /// Runs a client command on the client's side of `place`, bounded by `limit`.
    fn client(&self, place: Place, limit: Duration, args: &[String]) -> std::process::Output {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match place {
            Place::Outside => self.t.lan(limit, &a),
            Place::Inside => self.t.wan(limit, &a),
        }
    }

    fn run(&self, id: usize, row: &Row) -> Outcome {
        let srv = &self.servers[row.server];
        let mut o = Outcome {
            client: row.client.name(),
            server: srv.kind.name(),
            mode: row.mode.command(),
            place: srv.place.name(),
            alg: self.alg,
            expect_fail: row.expect_fail,
            pass: false,
            bytes: 0,
            secs: 0.0,
            rewrites: String::new(),
            drops: 0,
            note_drops: String::new(),
            note: String::new(),
        };
        let got = self.dir.join(format!("got-{id}.bin"));
        let remote_up = format!("upload/up-{}-{id}.bin", self.name);
        let stored = srv.root.join(&remote_up);
        let blob = self.shared.blob.display().to_string();
        let got_s = got.display().to_string();
        let limit = if row.expect_fail { FAIL_LIMIT } else { TRANSFER_LIMIT };
        let cmds_before: Vec<usize> = ALL_MODES.iter().map(|m| srv.commands_seen(m.command())).collect();
        let alg_before = AlgLog::read(&self.t.ftpnat_log());

        let mut problems = Vec::new();
        let mut transfers = 0;
        let mut failed = Vec::new();
        let start = Instant::now();
        for up in [false, true] {
            let what = if up { "STOR" } else { "RETR" };
            let (local, remote) =
                if up { (blob.as_str(), remote_up.as_str()) } else { (got_s.as_str(), "blob.bin") };
            let Some(cmd) = transfer_cmd(row.client, row.mode, srv, up, local, remote, row.expect_fail)
            else {
                continue;
            };
            transfers += 1;
            let out = self.client(srv.place, limit, &cmd);
            let (file, want) =
                if up { (&stored, &self.shared.blob_sha) } else { (&got, &self.shared.blob_sha) };
            if !out.status.success() {
                failed.push(format!("{what}: {} {}", describe(&out.status), why_failed(&out)));
                continue;
            }
            let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            o.bytes += len;
            if len != self.shared.blob_len {
                problems.push(format!("{what}: {len} bytes, want {}", self.shared.blob_len));
            } else if sha256(file).as_ref() != Some(want) {
                problems.push(format!("{what}: sha256 differs"));
            }
        }
        o.secs = start.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&got);
        let _ = std::fs::remove_file(&stored);

        let mut seen = AlgLog::read(&self.t.ftpnat_log()).since(&alg_before);
        // The log's rate limit (`io::log`: 10 lines of a call site per 5 s) may have held back a
        // rewrite or pinhole line of this row; what it suppressed is logged once its window ends (a
        // ticker, every second). Short of lines, wait for that report before judging.
        if let (Some(kind), false) = (srv.place.rewrite(row.mode), row.expect_fail) {
            let short = |a: &AlgLog| {
                a.count(kind) + a.alg_suppressed < transfers
                    || a.pinholes_used + a.pinhole_suppressed < transfers
            };
            if short(&seen) {
                wait_until(Duration::from_secs(8), || {
                    seen = AlgLog::read(&self.t.ftpnat_log()).since(&alg_before);
                    !short(&seen)
                });
            }
        }
        o.rewrites = format!("{} ph={}", seen.describe(), seen.pinholes_used);
        o.drops = seen.drops.len();
        if let Some(d) = seen.drops.first() {
            // Not a failure by itself (late segments after a close are dropped by design); shown for the report.
            let _ = write!(o.note_drops, "first drop: {d}");
        }
        let cmds: Vec<usize> =
            ALL_MODES.iter().zip(&cmds_before).map(|(m, b)| srv.commands_seen(m.command()) - b).collect();
        let cmds_desc = ALL_MODES
            .iter()
            .zip(&cmds)
            .filter(|(_, n)| **n > 0)
            .map(|(m, n)| format!("{}x{n}", m.command()))
            .collect::<Vec<_>>()
            .join(",");

        if row.expect_fail {
            o.pass = failed.len() == transfers && seen.total() == 0;
            o.note = if o.pass {
                format!("failed as it must: {}", failed.first().map_or("", String::as_str))
            } else {
                format!(
                    "{}/{transfers} transfers WORKED without the ALG; rewrites {}",
                    transfers - failed.len(),
                    seen.describe()
                )
            };
            return o;
        }
        problems.extend(failed);
        // The server saw the mode's command for each transfer, and no other data-connection command.
        for (m, n) in ALL_MODES.iter().zip(&cmds) {
            if *m == row.mode && *n < transfers {
                problems.push(format!("server saw {} {n} times, want {transfers}", m.command()));
            } else if *m != row.mode && *n > 0 {
                problems.push(format!("server saw {} {n} times (fallback?)", m.command()));
            }
        }
        match srv.place.rewrite(row.mode) {
            Some(kind) => {
                // Lines the rate limit suppressed count, as reported (the test's end checks them
                // against the counters).
                if seen.count(kind) + seen.alg_suppressed < transfers || seen.total() != seen.count(kind) {
                    problems.push(format!(
                        "rewrites {} (+{} suppressed), want {kind}x{transfers}",
                        seen.describe(),
                        seen.alg_suppressed
                    ));
                }
                if seen.pinholes_used + seen.pinhole_suppressed < transfers {
                    problems.push(format!(
                        "{} pinholes used (+{} suppressed), want {transfers}",
                        seen.pinholes_used, seen.pinhole_suppressed
                    ));
                }
            }
            None if seen.total() > 0 || seen.pinholes_used > 0 => problems.push(format!(
                "unexpected rewrites {} / pinholes {}",
                seen.describe(),
                seen.pinholes_used
            )),
            None => {}
        }
        o.pass = problems.is_empty();
        o.note = if o.pass {
            let dirs = if row.client.can_upload() { "RETR+STOR" } else { "RETR only (wget cannot upload)" };
            format!("{dirs}, sha256 equal, server saw {cmds_desc}")
        } else {
            problems.join("; ")
        };
        o
    }

    /// Stops ftpnat; checks its counters against what the log showed and that no password reached the
    /// log; returns the counter lines for the report.
    fn finish(mut self) -> (String, Vec<String>) {
        let s = self.t.stop_cleanly();
        let mut problems = Vec::new();
        let log = AlgLog::read(&s.log);
        // Every rewrite counted has its log line, except lines the rate limit suppressed and said so:
        // never more lines than rewrites, never a line missing that no suppression report accounts for.
        let mut unlogged = 0u64;
        for kind in ["port", "eprt", "227", "229"] {
            let c = s.counter(&format!("alg.rewrites.{kind}"));
            let logged = log.count(kind) as u64;
            if c < logged {
                problems
                    .push(format!("{}: alg.rewrites.{kind} = {c} but {logged} rewrite log lines", self.name));
            }
            unlogged += c.saturating_sub(logged);
        }
        if unlogged > log.alg_suppressed as u64 {
            problems.push(format!(
                "{}: {unlogged} rewrites without a log line, but only {} ftpnat::alg lines reported suppressed",
                self.name, log.alg_suppressed
            ));
        }
        let used = s.counter("pinholes.used");
        if used < log.pinholes_used as u64 || used > (log.pinholes_used + log.pinhole_suppressed) as u64 {
            problems.push(format!(
                "{}: pinholes.used = {} but {} 'pinhole used' log lines",
                self.name,
                s.counter("pinholes.used"),
                log.pinholes_used
            ));
        }
        if s.counter("pinholes.created") < s.counter("pinholes.used") {
            problems.push(format!("{}: more pinholes used than created", self.name));
        }
        for secret in [PY_PASS, ANON_PASS] {
            if s.log.contains(secret) || s.summary.contains(secret) {
                problems
                    .push(format!("{}: a PASS argument ({secret}) appears in ftpnat's output", self.name));
            }
        }
        let total = s.counter("alg.rewrites.total");
        let zero = s.counter("alg.rewrites.zero_delta");
        let mut c = format!("{} (ALG {}):", self.name, if self.alg { "on" } else { "off" });
        for line in s.summary.lines() {
            let key = line.split_whitespace().next().unwrap_or("");
            let device_errors = key.starts_with("device.") && key.contains("error");
            if key.starts_with("alg.")
                || key.starts_with("pinholes.")
                || key.starts_with("drops.")
                || device_errors
            {
                let _ = write!(c, "\n    {}", line.trim());
            }
        }
        let rate = if total == 0 {
            "n/a".to_string()
        } else {
            format!("{:.0}%", 100.0 * zero as f64 / total as f64)
        };
        let _ = write!(c, "\n    zero-delta rewrites: {zero} of {total} ({rate})");
        (c, problems)
    }
}

// ---- the groups ----------------------------------------------------------------------------------------

struct GroupResult {
    rows: Vec<Outcome>,
    counters: Vec<String>,
    problems: Vec<String>,
}

fn run_rows(g: &Group<'_>, rows: &[Row], out: &mut Vec<Outcome>) {
    for r in rows {
        let o = g.run(out.len(), r);
        // Progress for whoever watches with --nocapture.
        println!(
            "ftp_real: {} {} {} {} -> {}",
            o.client,
            o.server,
            o.mode,
            o.place,
            if o.pass { "PASS" } else { "FAIL" }
        );
        out.push(o);
    }
}

/// Clients in `lan`, vsftpd and pyftpdlib in `wan`.
fn outside_group(shared: &Shared) -> GroupResult {
    let mut g = Group::up("outside", shared, &[], &["--ftp-port", "21", "--ftp-port", "2121"], LOG);
    let v = g.server(ServerKind::Vsftpd, Place::Outside, 21);
    let p = g.server(ServerKind::Pyftpdlib, Place::Outside, PYFTPD_PORT);
    let mut rows = Vec::new();
    for server in [v, p] {
        for mode in ALL_MODES {
            rows.push(Row { client: Client::Curl, mode, server, expect_fail: false });
        }
        for client in [Client::Ftplib, Client::Wget, Client::Lftp] {
            for mode in [Mode::Pasv, Mode::Port] {
                rows.push(Row { client, mode, server, expect_fail: false });
            }
        }
    }
    let mut out = Vec::new();
    run_rows(&g, &rows, &mut out);
    let (c, problems) = g.finish();
    GroupResult { rows: out, counters: vec![c], problems }
}

/// vsftpd and pyftpdlib in `lan` behind port forwards; clients in `wan` dial the public address. Only
/// the control ports are forwarded: passive data connections get in through the ALG's pinholes.
fn inside_group(shared: &Shared) -> GroupResult {
    let fwd_v = format!("tcp:21={LAN_HOST}:21");
    let fwd_p = format!("tcp:{PYFTPD_PORT}={LAN_HOST}:{PYFTPD_PORT}");
    let mut g =
        Group::up("inside", shared, &[&fwd_v, &fwd_p], &["--ftp-port", "21", "--ftp-port", "2121"], LOG);
    let v = g.server(ServerKind::Vsftpd, Place::Inside, 21);
    let p = g.server(ServerKind::Pyftpdlib, Place::Inside, PYFTPD_PORT);
    let mut rows = Vec::new();
    for mode in ALL_MODES {
        rows.push(Row { client: Client::Curl, mode, server: v, expect_fail: false });
    }
    for client in [Client::Ftplib, Client::Lftp] {
        for mode in [Mode::Pasv, Mode::Port] {
            rows.push(Row { client, mode, server: v, expect_fail: false });
        }
    }
    for mode in ALL_MODES {
        rows.push(Row { client: Client::Curl, mode, server: p, expect_fail: false });
    }
    let mut out = Vec::new();
    run_rows(&g, &rows, &mut out);
    let (c, problems) = g.finish();
    GroupResult { rows: out, counters: vec![c], problems }
}

/// The same transfers with `--no-ftp-alg`: active mode to an outside server and passive mode to an
/// inside server must fail (the servers refuse the untranslated address, or nothing admits the data
/// connection), while passive mode to an outside server, which needs no rewrite, still works.
fn no_alg_group(shared: &Shared) -> GroupResult {
    let fwd = format!("tcp:21={LAN_HOST}:21");
    let mut g = Group::up("no-alg", shared, &[&fwd], &["--no-ftp-alg"], LOG);
    let out_v = g.server(ServerKind::Vsftpd, Place::Outside, 21);
    let out_p = g.server(ServerKind::Pyftpdlib, Place::Outside, PYFTPD_PORT);
    let in_v = g.server(ServerKind::Vsftpd, Place::Inside, 21);
    let fail = |client, mode, server| Row { client, mode, server, expect_fail: true };
    let rows = [
        Row { client: Client::Curl, mode: Mode::Pasv, server: out_v, expect_fail: false },
        fail(Client::Curl, Mode::Port, out_v),
        fail(Client::Curl, Mode::Eprt, out_v),
        fail(Client::Ftplib, Mode::Port, out_p),
        fail(Client::Curl, Mode::Pasv, in_v),
        fail(Client::Curl, Mode::Epsv, in_v),
    ];
    let mut out = Vec::new();
    run_rows(&g, &rows, &mut out);
    let (c, problems) = g.finish();
    GroupResult { rows: out, counters: vec![c], problems }
}

fn table(rows: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>2}  {:<7} {:<9} {:<5} {:<13} {:<3} {:<6} {:<6} {:>10} {:>7} {:>8}  {:<16} {:>5}  note",
        "#",
        "client",
        "server",
        "mode",
        "topology",
        "alg",
        "expect",
        "result",
        "bytes",
        "seconds",
        "Mbit/s",
        "rewrites",
        "drops"
    );
    for (i, o) in rows.iter().enumerate() {
        let rate = if o.secs > 0.0 && o.bytes > 0 { o.bytes as f64 * 8.0 / o.secs / 1e6 } else { 0.0 };
        let _ = writeln!(
            s,
            "{:>2}  {:<7} {:<9} {:<5} {:<13} {:<3} {:<6} {:<6} {:>10} {:>7.2} {:>8.0}  {:<16} {:>5}  {}{}",
            i + 1,
            o.client,
            o.server,
            o.mode,
            o.place,
            if o.alg { "on" } else { "off" },
            if o.expect_fail { "fail" } else { "ok" },
            if o.pass { "PASS" } else { "FAIL" },
            o.bytes,
            o.secs,
            rate,
            o.rewrites,
            o.drops,
            o.note,
            if o.note_drops.is_empty() { String::new() } else { format!("; {}", o.note_drops) }
        );
    }
    s
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The programs these tests run; missing ones fail the test with the fix (deps.sh) named.
fn require_tools(test: &str) {
    for tool in ["curl", "wget", "lftp", "vsftpd", "python3", "sha256sum", "openssl", "ss"] {
        let out = run_bounded(SHORT, "sh", &["-c", &format!("command -v {tool}")]);
        assert!(out.status.success(), "{test}: {tool} missing: run netns-scripts/deps.sh");
    }
    let ok = run_bounded(SHORT, "python3", &["-c", "import pyftpdlib"]);
    assert!(ok.status.success(), "{test}: pyftpdlib missing: run netns-scripts/deps.sh");
}

/// Prints past the test harness's capture (the lead needs the table from passing runs too) and keeps a
/// copy next to the build.
fn report(name: &str, body: &str) {
    let _ = std::io::stderr().lock().write_all(body.as_bytes());
    let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join(name), body);
}

#[test]
fn real_ftp_clients_and_servers_through_ftpnat() {
    let test = "real_ftp_clients_and_servers_through_ftpnat";
    if !netns_available(test) {
        return;
    }
    require_tools(test);
    let shared = Shared::new("matrix", BLOB_BYTES);
    let started = Instant::now();
    // Two topologies at a time: each moves one transfer at a time, and the machine may have two cores.
    let results: Vec<Result<GroupResult, String>> = std::thread::scope(|s| {
        let a = s.spawn(|| outside_group(&shared));
        let b = s.spawn(|| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inside_group(&shared)));
            let n = no_alg_group(&shared);
            match r {
                Ok(mut i) => {
                    i.rows.extend(n.rows);
                    i.counters.extend(n.counters);
                    i.problems.extend(n.problems);
                    i
                }
                Err(e) => {
                    let mut n = n;
                    n.problems.push(format!("inside group: {}", panic_text(e)));
                    n
                }
            }
        });
        [a.join().map_err(panic_text), b.join().map_err(panic_text)].into_iter().collect()
    });

    let mut rows = Vec::new();
    let mut counters = Vec::new();
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(g) => {
                rows.extend(g.rows);
                counters.extend(g.counters);
                problems.extend(g.problems);
            }
            Err(e) => problems.push(format!("a group did not finish: {e}")),
        }
    }
    let failed = rows.iter().filter(|o| !o.pass).count();
    let mut body = format!(
        "\n==== ftp_real: real FTP software through ftpnat ({} rows, {failed} failed, {:.0} s) ====\n",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    body.push_str(&table(&rows));
    body.push_str("\nftpnat counters (stop summary) per topology:\n");
    for c in &counters {
        let _ = writeln!(body, "  {c}");
    }
    for p in &problems {
        let _ = writeln!(body, "PROBLEM: {p}");
    }
    report("ftp_real_matrix.txt", &body);
    assert!(
        failed == 0 && problems.is_empty(),
        "{failed} matrix rows failed; problems: {problems:?} (table above)"
    );
}

// ---- the ALG's policy, as real servers see it ---------------------------------------------------------

/// One policy check for the table.
struct Check {
    what: String,
    pass: bool,
    detail: String,
}

/// Lines of ftpnat's log written since `mark` (a byte offset from an earlier read).
fn log_since(t: &Topology, mark: usize) -> String {
    t.ftpnat_log().get(mark..).unwrap_or_default().to_string()
}

/// `(reason, line)` of each "ALG refused line" / unsolicited warning in `log`.
fn refusals(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("ftpnat::alg") && l.contains(" reason="))
        .map(|l| field(l, "reason").unwrap_or_default())
        .collect()
}

/// Bounce, low port, `0,0,0,0`, AUTH TLS opacity and PASS redaction through the real binary, judged by
/// what vsftpd and pyftpdlib received and by ftpnat's log (at trace level for the ALG) and counters.
#[test]
fn alg_policy_seen_by_real_servers() {
    let test = "alg_policy_seen_by_real_servers";
    if !netns_available(test) {
        return;
    }
    require_tools(test);
    let shared = Shared::new("policy", 1 << 20);
    let ports = ["--ftp-port", "21", "--ftp-port", "2121", "--ftp-port", "2990"];
    let mut g = Group::up("policy", &shared, &[], &ports, "ftpnat=debug,ftpnat::alg=trace");
    let v = g.server(ServerKind::Vsftpd, Place::Outside, 21);
    let p = g.server(ServerKind::Pyftpdlib, Place::Outside, PYFTPD_PORT);
    let tls = g.server_tls(ServerKind::Vsftpd, Place::Outside, 2990, true);
    let g = g;
    let ftplib = |srv: &Server, args: &[&str]| {
        let port = srv.port.to_string();
        let py = script("ftp-client.py").display().to_string();
        let mut a: Vec<String> =
            ["python3", &py, &srv.host, &port, srv.user, srv.pass].iter().map(|s| s.to_string()).collect();
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(["--timeout".to_string(), "10".to_string()]);
        g.client(Place::Outside, Duration::from_secs(30), &a)
    };
    let mut checks = Vec::new();

    // "0,0,0,0" means "the control connection's address": the ALG rewrites it to the public address and
    // opens the pinhole; both servers refuse 0.0.0.0 itself, so the transfer works only if it did.
    for srv in [&g.servers[v], &g.servers[p]] {
        let mark = g.t.ftpnat_log().len();
        let out = ftplib(srv, &["port-zero", "blob.bin"]);
        let new = log_since(&g.t, mark);
        let olds: Vec<String> = new
            .lines()
            .filter(|l| l.contains("ftpnat::alg") && l.contains(" rewrite "))
            .map(|l| {
                format!("{} -> {}", field(l, "old").unwrap_or_default(), field(l, "new").unwrap_or_default())
            })
            .collect();
        let got = text(&out.stdout);
        let pass = out.status.success()
            && got.starts_with(&format!("bytes {} ", shared.blob_len))
            && olds.len() == 1
            && olds[0].starts_with("0,0,0,0,")
            && olds[0].contains(&format!("-> {},", PUBLIC_IP.replace('.', ",")));
        checks.push(Check {
            what: format!("PORT 0,0,0,0,p1,p2 RETR (ftplib -> {})", srv.kind.name()),
            pass,
            detail: format!("client: {got}; ftpnat rewrote: {}", olds.join(" | ")),
        });
    }

    // A refused announcement passes byte-identical, opens no pinhole, and is counted with its reason; the
    // strict server then refuses it (the address is not the control connection's peer).
    let refused = [
        (v, "PORT 10,0,0,3,117,48", "third_host", "bounce to another inside host"),
        (p, "PORT 198,51,100,2,117,48", "third_host", "bounce to the server's own host"),
        (v, "EPRT |1|10.0.0.3|30000|", "third_host", "EPRT bounce"),
        (v, "PORT 10,0,0,2,0,80", "low_port", "port 80 (below 1024)"),
        (p, "EPRT |1|10.0.0.2|21|", "low_port", "EPRT port 21 (below 1024)"),
    ];
    for (i, line, reason, why) in refused {
        let srv = &g.servers[i];
        let mark = g.t.ftpnat_log().len();
        let out = ftplib(srv, &["raw", line]);
        let new = log_since(&g.t, mark);
        let reply = text(&out.stdout);
        let seen = std::fs::read_to_string(&srv.log).unwrap_or_default();
        let verbatim = match srv.kind {
            ServerKind::Vsftpd => seen.contains(&format!("\"{line}\"")),
            ServerKind::Pyftpdlib => seen.contains(&format!("received {line}")),
        };
        let r = refusals(&new);
        let created = new.lines().filter(|l| l.contains("pinhole created")).count();
        let rewrites = AlgLog::read(&new).total();
        let pass = reply.starts_with('5') && verbatim && r == [reason] && created == 0 && rewrites == 0;
        checks.push(Check {
            what: format!("{why}: {line} ({})", srv.kind.name()),
            pass,
            detail: format!(
                "server replied {reply:?}; server saw it verbatim: {verbatim}; ftpnat refusals {r:?}, \
                 rewrites {rewrites}, pinholes created {created}"
            ),
        });
    }

    // After AUTH TLS (curl sends AUTH SSL first) the control connection is opaque: nothing is parsed,
    // nothing rewritten, nothing dropped. Passive mode to an outside server needs no rewrite and works;
    // PORT inside TLS cannot be rewritten, so the strict server refuses it.
    let srv = &g.servers[tls];
    let curl_tls = |extra: &[&str], tail: &[&str]| {
        let auth = format!("{}:{}", srv.user, srv.pass);
        let mut a: Vec<String> = [
            "curl",
            "-sS",
            "-v",
            "--ssl-reqd",
            "-k",
            "--max-time",
            "30",
            "--connect-timeout",
            "5",
            "-u",
            &auth,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().chain(tail).map(|s| s.to_string()));
        g.client(Place::Outside, Duration::from_secs(40), &a)
    };
    let opaque = |new: &str| -> Result<(), String> {
        let at = new.find("control connection is opaque").ok_or("no 'AUTH TLS accepted' log line")?;
        let parsed_after = new[at..].lines().skip(1).filter(|l| l.contains("ftpnat::alg: command")).count();
        let (rw, r) = (AlgLog::read(new).total(), refusals(new));
        if parsed_after > 0 || rw > 0 || !r.is_empty() {
            return Err(format!("after AUTH: {parsed_after} lines parsed, {rw} rewrites, refusals {r:?}"));
        }
        Ok(())
    };
    let got = g.dir.join("tls-got.bin");
    let got_s = got.display().to_string();
    let up_name = "upload/tls-up.bin";
    let stored = srv.root.join(up_name);
    let blob_s = shared.blob.display().to_string();
    for (what, tail, file) in
        [("RETR", vec!["-o", &got_s, "URL"], &got), ("STOR", vec!["-T", &blob_s, "URL"], &stored)]
    {
        let url = srv.url(if what == "RETR" { "blob.bin" } else { up_name });
        let tail: Vec<&str> = tail.iter().map(|a| if *a == "URL" { url.as_str() } else { a }).collect();
        let mark = g.t.ftpnat_log().len();
        let out = curl_tls(&[], &tail);
        let new = log_since(&g.t, mark);
        let sum = sha256(file);
        let verdict = opaque(&new);
        let pass = out.status.success() && sum.as_ref() == Some(&shared.blob_sha) && verdict.is_ok();
        checks.push(Check {
            what: format!("AUTH TLS, EPSV {what} (curl --ssl-reqd -> vsftpd)"),
            pass,
            detail: format!(
                "{}; sha256 {}; {}",
                if out.status.success() { "transfer ok".to_string() } else { why_failed(&out) },
                if sum.as_ref() == Some(&shared.blob_sha) { "equal" } else { "DIFFERS/missing" },
                verdict.err().unwrap_or_else(|| "ALG opaque after AUTH (nothing parsed or rewritten)".into())
            ),
        });
    }
    let mark = g.t.ftpnat_log().len();
    let out = curl_tls(&["-P", "-", "--disable-eprt", "-o", &got_s], &[&srv.url("blob.bin")]);
    let new = log_since(&g.t, mark);
    let verdict = opaque(&new);
    checks.push(Check {
        what: "AUTH TLS, PORT inside TLS is left alone (curl -> vsftpd)".into(),
        pass: !out.status.success() && verdict.is_ok(),
        detail: format!(
            "client: {}; {}",
            why_failed(&out),
            verdict.err().unwrap_or_else(|| "nothing parsed or rewritten after AUTH".into())
        ),
    });

    let mut g = g;
    let mut problems = Vec::new();
    let s = g.t.stop_cleanly();
    // PASS redaction: at trace level the ALG logs every command line; the passwords must not be there,
    // and the redacted PASS lines must be (or the check proves nothing).
    let leaked: Vec<&str> = [PY_PASS, ANON_PASS].into_iter().filter(|pw| s.log.contains(pw)).collect();
    let redacted =
        s.log.lines().filter(|l| l.contains("ftpnat::alg: command") && l.contains("PASS ****")).count();
    checks.push(Check {
        what: "PASS argument never logged (ALG at trace level)".into(),
        pass: leaked.is_empty() && redacted >= 2,
        detail: format!("{redacted} 'PASS ****' trace lines; passwords found in the log: {leaked:?}"),
    });
    let want = [
        ("alg.refused.third_host", 3),
        ("alg.refused.low_port", 2),
        ("alg.rewrites.port", 2),
        ("pinholes.created", 2),
        ("pinholes.used", 2),
    ];
    for (name, n) in want {
        if s.counter(name) != n {
            problems.push(format!("{name} = {}, want {n}", s.counter(name)));
        }
    }
    if s.counter("alg.tls_opaque") < 3 {
        problems.push(format!("alg.tls_opaque = {}, want >= 3", s.counter("alg.tls_opaque")));
    }

    let mut body = String::from("\n==== ftp_real: ALG policy seen by real servers ====\n");
    for (i, c) in checks.iter().enumerate() {
        let _ = writeln!(
            body,
            "{:>2}  {:<4}  {}\n        {}",
            i + 1,
            if c.pass { "PASS" } else { "FAIL" },
            c.what,
            c.detail
        );
    }
    body.push_str("ftpnat counters:\n");
    for line in
        s.summary.lines().map(str::trim).filter(|l| l.starts_with("alg.") || l.starts_with("pinholes."))
    {
        let _ = writeln!(body, "    {line}");
    }
    for p in &problems {
        let _ = writeln!(body, "PROBLEM: {p}");
    }
    report("ftp_real_policy.txt", &body);
    let failed = checks.iter().filter(|c| !c.pass).count();
    assert!(
        failed == 0 && problems.is_empty(),
        "{failed} policy checks failed; problems: {problems:?} (table above)"
    );
}

// ---- closing the control connection ---------------------------------------------------------------------

/// Sockets in LAST-ACK (a side that sent its FIN and never had it acknowledged), in either namespace,
/// with `port` at either end.
fn last_ack(g: &Group<'_>, port: &str) -> String {
    let args = ["ss", "-Htan", "state", "last-ack"];
    let (lan, wan) = (g.t.lan(SHORT, &args), g.t.wan(SHORT, &args));
    let end = format!(":{port}");
    format!("{}\n{}", text(&lan.stdout), text(&wan.stdout))
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.ends_with(&end)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Both ways a control connection closes must complete: every FIN acknowledged, so no socket on either
/// side is left in LAST-ACK retransmitting its FIN. The segment that acknowledges the peer's FIN after
/// one's own FIN carries the sequence number one past that FIN (RFC 793 §3.3); the ALG's stream must
/// map it so. An inside client that closes at once after QUIT (its FIN crosses the server's) and an
/// inside server that closes after its 221 reply (vsftpd always does) are the two cases.
#[test]
fn control_connection_close_completes_both_ways() {
    let test = "control_connection_close_completes_both_ways";
    if !netns_available(test) {
        return;
    }
    require_tools(test);
    let shared = Shared::new("close", 1024);
    let fwd = format!("tcp:21={LAN_HOST}:21");
    let mut g = Group::up("close", &shared, &[&fwd], &[], LOG);
    let out_v = g.server(ServerKind::Vsftpd, Place::Outside, 21);
    let in_v = g.server(ServerKind::Vsftpd, Place::Inside, 21);
    let py = script("ftp-client.py").display().to_string();
    let mut problems = Vec::new();
    // quit-close: the client's FIN crosses the server's; quit-eof: the server closes first.
    for i in [out_v, in_v] {
        for how in ["quit-close", "quit-eof"] {
            let srv = &g.servers[i];
            let port = srv.port.to_string();
            let a = ["python3", &py, &srv.host, &port, srv.user, srv.pass, how, "--timeout", "10"];
            let args: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            let out = g.client(srv.place, Duration::from_secs(20), &args);
            let said = text(&out.stdout);
            assert!(
                out.status.success() && said.contains("221"),
                "{test}: {how}: {said} {}",
                why_failed(&out)
            );
            // The client's port is kept through the translation (it is free), so it names both sockets.
            let client_port = said.split_whitespace().nth(1).unwrap_or("?").to_string();
            // An acknowledged FIN leaves LAST-ACK within a round trip; one whose ACK the peer refused as
            // out of window is retransmitted for many seconds.
            let mut left = String::new();
            let gone = wait_until(Duration::from_secs(3), || {
                left = last_ack(&g, &client_port);
                left.is_empty()
            });
            if !gone {
                problems.push(format!("{} {how}: still in LAST-ACK after 3 s: {left}", srv.place.name()));
            }
        }
    }
    g.t.stop_cleanly();
    assert!(problems.is_empty(), "{test}: {problems:?}");
}
