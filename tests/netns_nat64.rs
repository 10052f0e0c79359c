//! NAT64 with real software between an IPv6-only client namespace and an IPv4-only server namespace
//! (issue 14). Run as root; SKIP locally otherwise, FAIL under `CI=true`.
//!
//! Owns: nothing but these tests. Must not: reach into ftpnat's internals (what it did shows in its stop
//! summary, its log and the programs' output).

#[path = "netns_support/mod.rs"]
mod netns_support;

#[path = "nat64_support/mod.rs"]
mod nat64_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nat64_support::{bracketed, global_addrs, wan_host6, GW_IP6, LAN_HOST6, PREFIX};
use netns_support::{peer_py, script, text, Topology, PUBLIC_IP, WAN_HOST};

/// The topology the other tests stand on: the client has IPv6 only and a route to the NAT64 prefix via
/// the gateway and nowhere else; the server has IPv4 only; IPv6 packets to the prefix reach ftpnat.
#[test]
fn topology_is_ipv6_only_client_to_ipv4_only_server() {
    let Some(mut t) = nat64_support::up("topology_is_ipv6_only_client_to_ipv4_only_server", &[], &[], &[])
    else {
        return;
    };
    assert_eq!(global_addrs(&t, true, "-4"), "", "the client has no IPv4 address");
    assert!(
        global_addrs(&t, true, "-6").contains(&format!("{LAN_HOST6}/64")),
        "{}",
        global_addrs(&t, true, "-6")
    );
    assert_eq!(global_addrs(&t, false, "-6"), "", "the server has no IPv6 address");
    let routes6 = text(&t.lan(Duration::from_secs(5), &["ip", "-6", "route", "show"]).stdout);
    assert!(routes6.contains(&format!("{PREFIX} via {GW_IP6}")), "{routes6}");
    assert!(!routes6.contains("default"), "only the prefix goes to the gateway: {routes6}");
    let routes4 = text(&t.lan(Duration::from_secs(5), &["ip", "-4", "route", "show"]).stdout);
    assert_eq!(routes4, "", "no IPv4 route on the client");
    let ping4 = t.lan(Duration::from_secs(5), &["ping", "-4", "-c", "1", "-W", "1", netns_support::WAN_HOST]);
    assert!(!ping4.status.success(), "IPv4 must be unreachable from the client");
    let ping6 =
        t.lan(Duration::from_secs(5), &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", &wan_host6()]);
    let s = t.stop_cleanly();
    assert!(
        s.counter("device.lan.rx_packets") >= 2,
        "the pings reached ftpnat's LAN device: {}\n{}",
        s.summary,
        text(&ping6.stdout)
    );
}

/// Ping through NAT64 (echo both ways, the gateway's own IPv6 address answering too) and a UDP
/// exchange the IPv4 server sees from the public address.
#[test]
fn ping_and_udp_through_nat64() {
    let Some(mut t) = nat64_support::up("ping_and_udp_through_nat64", &[], &[], &[]) else { return };
    let ping =
        t.lan(Duration::from_secs(10), &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &wan_host6()]);
    assert!(ping.status.success(), "ping through NAT64: {}", text(&ping.stdout));
    let gw = t.lan(Duration::from_secs(10), &["ping", "-6", "-c", "1", "-W", "2", GW_IP6]);
    assert!(gw.status.success(), "the gateway answers at its IPv6 address: {}", text(&gw.stdout));
    let peer = peer_py();
    t.serve_wan("udp", 5000, &["python3", &peer, "udp-server", "5000"]);
    let out = t.lan(
        Duration::from_secs(15),
        &["python3", &peer, "udp-client", &wan_host6(), "5000", "--timeout", "2"],
    );
    let answer = text(&out.stdout);
    assert!(out.status.success(), "no UDP answer: {answer}");
    assert!(
        answer.starts_with(&format!("peer {PUBLIC_IP}:")),
        "the server saw {answer}, not the public address"
    );
    let s = t.stop_cleanly();
    assert!(s.counter("nat64.to_v4") >= 4 && s.counter("nat64.to_v6") >= 4, "{}", s.summary);
}

/// Traceroute and path-MTU discovery through NAT64 with a 1400-byte WAN: hop limit 1 is answered by
/// the gateway (time exceeded from its IPv6 address), hop limit 2 reaches the server; a 1500-byte
/// IPv6 datagram is answered Packet Too Big with MTU 1420 (the WAN's 1400 + 20, RFC 7915), and one that
/// fits goes through.
#[test]
fn traceroute_and_path_mtu_through_nat64() {
    let Some(mut t) =
        nat64_support::up("traceroute_and_path_mtu_through_nat64", &[], &["--wan-mtu", "1400"], &[])
    else {
        return;
    };
    let dst = wan_host6();
    let lim = Duration::from_secs(10);
    let hop1 = t.lan(lim, &["ping", "-6", "-n", "-c", "1", "-W", "2", "-t", "1", &dst]);
    let out = text(&hop1.stdout);
    assert!(out.contains(&format!("From {GW_IP6}")) && out.to_lowercase().contains("time exceeded"), "{out}");
    let hop2 = t.lan(lim, &["ping", "-6", "-n", "-c", "1", "-W", "2", "-t", "2", &dst]);
    assert!(hop2.status.success(), "hop limit 2 reaches the server: {}", text(&hop2.stdout));
    // 1452 bytes of ICMPv6 payload: a 1500-byte IPv6 datagram, 1480 as IPv4 with DF, over a 1400 WAN.
    let big =
        t.lan(lim, &["ping", "-6", "-n", "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", "1452", &dst]);
    let both = format!("{}{}", text(&big.stdout), text(&big.stderr));
    assert!(both.contains("mtu=1420"), "Packet Too Big naming 1420: {both}");
    let fits = t.lan(lim, &["ping", "-6", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", &dst]);
    assert!(fits.status.success(), "1420 bytes fit: {}", text(&fits.stdout));
    let s = t.stop_cleanly();
    assert!(s.counter("drops.frag_needed") >= 1 && s.counter("drops.ttl_exceeded") >= 1, "{}", s.summary);
}

/// A file of `len` bytes of a fixed pseudo-random pattern.
fn blob(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(p: &Path) -> String {
    let o = netns_support::run_bounded(Duration::from_secs(30), "sha256sum", &[&p.display().to_string()]);
    text(&o.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A vsftpd on the IPv4-only server side that knows neither EPSV nor EPRT (they are answered 550):
/// every IPv6 client transfer through it proves the ALG's translation.
struct Ftp {
    dir: PathBuf,
    blob: PathBuf,
}

/// Issue 14: 50 MiB RETR and STOR each.
const SIZE: usize = 50 << 20;

impl Ftp {
    fn start(t: &mut Topology, tag: &str) -> Ftp {
        let dir = std::env::temp_dir().join(format!("ftpnat-nat64-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root")).expect("server dir");
        let blob = dir.join("root").join("blob.bin");
        std::fs::write(&blob, blob_bytes()).expect("blob");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).expect("mode");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let sh = script("ftp-vsftpd.sh").display().to_string();
        let d = dir.display().to_string();
        t.serve_wan(
            "tcp",
            21,
            &["env", "VSFTPD_CMDS_DENIED=EPSV,EPRT", "bash", &sh, &d, WAN_HOST, "21", "30000", "30019"],
        );
        Ftp { dir, blob }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://{}/{path}", bracketed(&wan_host6()))
    }

    /// The commands vsftpd saw, as it logged them.
    fn seen(&self, cmd: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("vsftpd.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains(&format!("\"{cmd}")) && l.contains("FTP command")).count()
    }
}

impl Drop for Ftp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn blob_bytes() -> Vec<u8> {
    blob(SIZE)
}

/// curl (EPSV and EPRT, RETR and STOR) and Python ftplib (its IPv6 path: EPSV, and EPRT in active
/// mode) from the IPv6-only client to the IPv4-only vsftpd, sha256 compared.
#[test]
fn ftp_clients_on_ipv6_reach_an_ipv4_server_in_every_mode() {
    let started = Instant::now();
    let Some(mut t) =
        nat64_support::up("ftp_clients_on_ipv6_reach_an_ipv4_server_in_every_mode", &[], &[], &[])
    else {
        return;
    };
    let ftp = Ftp::start(&mut t, "modes");
    let want = sha256(&ftp.blob);
    let out = ftp.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let lim = Duration::from_secs(180);
    let mut failures = Vec::new();
    for (name, mode) in [("curl-epsv", "--ftp-pasv"), ("curl-eprt", "-P")] {
        let file = out.join(format!("{name}.bin"));
        let f = file.display().to_string();
        let mut args = vec!["curl", "-sS", "--max-time", "150", "-o", &f, mode];
        if mode == "-P" {
            args.push("-");
        }
        let url = ftp.url("blob.bin");
        args.push(&url);
        let o = t.lan(lim, &args);
        if !o.status.success() || sha256(&file) != want {
            failures.push(format!("{name} RETR: {} {}", o.status, text(&o.stderr)));
        }
        // STOR the same bytes back and compare what the server wrote.
        let up_url = ftp.url(&format!("upload/{name}.bin"));
        let src = ftp.blob.display().to_string();
        let mut up = vec!["curl", "-sS", "--max-time", "150", "-T", &src, mode];
        if mode == "-P" {
            up.push("-");
        }
        up.push(&up_url);
        let o = t.lan(lim, &up);
        let stored = ftp.dir.join("root").join("upload").join(format!("{name}.bin"));
        if !o.status.success() || sha256(&stored) != want {
            failures.push(format!("{name} STOR: {} {}", o.status, text(&o.stderr)));
        }
    }
    // Python ftplib: EPSV for an IPv6 connection, EPRT when passive is off.
    let py_out = out.join("ftplib.bin").display().to_string();
    let py = format!(
        "import ftplib,sys\n\
         for pasv in (True, False):\n\
         \x20   f = ftplib.FTP(timeout=60)\n\
         \x20   f.connect('{h}', 21)\n\
         \x20   f.login('anonymous', 'nat64@example.net')\n\
         \x20   f.set_pasv(pasv)\n\
         \x20   with open('{o}' + str(pasv), 'wb') as out:\n\
         \x20       f.retrbinary('RETR blob.bin', out.write)\n\
         \x20   print(f.sendcmd('ALGS STATUS64'))\n\
         \x20   f.quit()\n",
        h = wan_host6(),
        o = py_out
    );
    let o = t.lan(lim, &["python3", "-c", &py]);
    let algs = text(&o.stdout);
    for pasv in ["True", "False"] {
        let got = PathBuf::from(format!("{py_out}{pasv}"));
        if !o.status.success() || sha256(&got) != want {
            failures.push(format!("ftplib pasv={pasv}: {} {}", text(&o.stderr), algs));
        }
    }
    assert!(algs.contains("216 EPSVEPRT"), "ALGS STATUS64 answered by the gateway: {algs}");
    let s = t.stop_cleanly();
    assert!(failures.is_empty(), "{failures:#?}\n{}\n{}", s.summary, t.ftpnat_log());
    // The server never saw EPSV, EPRT or ALGS: only PASV and PORT.
    assert_eq!((ftp.seen("EPSV"), ftp.seen("EPRT"), ftp.seen("ALGS")), (0, 0, 0));
    assert!(
        ftp.seen("PASV") >= 3 && ftp.seen("PORT") >= 3,
        "PASV {} PORT {}",
        ftp.seen("PASV"),
        ftp.seen("PORT")
    );
    assert!(s.counter("alg.nat64.epsv") >= 3 && s.counter("alg.nat64.eprt") >= 3, "{}", s.summary);
    eprintln!("ftp_clients_on_ipv6_reach_an_ipv4_server_in_every_mode: {:?}", started.elapsed());
}

/// Without the ALG the IPv4 server gets EPRT |2| and cannot use it: the EPRT rows fail, showing the
/// test above can fail.
#[test]
fn without_the_alg_eprt_fails() {
    let Some(mut t) = nat64_support::up("without_the_alg_eprt_fails", &[], &["--no-ftp-alg"], &[]) else {
        return;
    };
    let ftp = Ftp::start(&mut t, "noalg");
    let f = ftp.dir.join("x.bin").display().to_string();
    let url = ftp.url("blob.bin");
    let o = t.lan(Duration::from_secs(60), &["curl", "-sS", "--max-time", "20", "-o", &f, "-P", "-", &url]);
    assert!(!o.status.success(), "EPRT must fail without the ALG: {}", text(&o.stderr));
    t.stop_cleanly();
    assert!(ftp.seen("EPRT") >= 1, "the server got the EPRT as sent");
}

/// The command line of `netns-scripts/ftp-pyftpd.py` serving `root` on `bind`:21 to one user, the
/// commands `deny` answered 502.
fn pyftpd(
    root: &str,
    bind: &str,
    (user, password): (&str, &str),
    pasv: &str,
    log: &str,
    deny: &str,
) -> Vec<String> {
    let py = script("ftp-pyftpd.py").display().to_string();
    [
        "python3",
        &py,
        root,
        "--bind",
        bind,
        "--port",
        "21",
        "--user",
        user,
        "--password",
        password,
        "--pasv",
        pasv,
        "--log",
        log,
        "--deny",
        deny,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// pyftpdlib answering EPSV and EPRT `502` (a server that only knows PASV and PORT), with curl, lftp
/// and wget on the IPv6-only client: RETR (and STOR for curl) sha256 compared.
#[test]
fn pyftpdlib_lftp_and_wget_through_nat64() {
    let started = Instant::now();
    let Some(mut t) = nat64_support::up("pyftpdlib_lftp_and_wget_through_nat64", &[], &[], &[]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ftpnat-nat64-{}-pyftpd", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).expect("server dir");
    let blob_path = dir.join("root").join("blob.bin");
    std::fs::write(&blob_path, blob_bytes()).expect("blob");
    let want = sha256(&blob_path);
    let (root, log) = (dir.join("root").display().to_string(), dir.join("py.log").display().to_string());
    let args = pyftpd(&root, WAN_HOST, ("u6", "p6"), "31000-31019", &log, "EPSV,EPRT");
    t.serve_wan("tcp", 21, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let host = bracketed(&wan_host6());
    let url = |p: &str| format!("ftp://u6:p6@{host}/{p}");
    let out = |n: &str| dir.join(n).display().to_string();
    let lim = Duration::from_secs(180);
    let mut failures = Vec::new();
    let mut check = |name: &str, o: std::process::Output, file: &str| {
        if !o.status.success() || sha256(Path::new(file)) != want {
            failures.push(format!("{name}: {} {} {}", o.status, text(&o.stdout), text(&o.stderr)));
        }
    };
    let f = out("curl-epsv.bin");
    check(
        "curl EPSV",
        t.lan(lim, &["curl", "-sS", "--max-time", "150", "--ftp-pasv", "-o", &f, &url("blob.bin")]),
        &f,
    );
    let f = out("curl-eprt.bin");
    check(
        "curl EPRT",
        t.lan(lim, &["curl", "-sS", "--max-time", "150", "-P", "-", "-o", &f, &url("blob.bin")]),
        &f,
    );
    let src = blob_path.display().to_string();
    let o = t.lan(lim, &["curl", "-sS", "--max-time", "150", "-P", "-", "-T", &src, &url("up-eprt.bin")]);
    check("curl EPRT STOR", o, &dir.join("root").join("up-eprt.bin").display().to_string());
    let f = out("wget.bin");
    check("wget", t.lan(lim, &["wget", "-q", "-T", "60", "-t", "1", "-O", &f, &url("blob.bin")]), &f);
    let f = out("lftp.bin");
    let script_l = format!("set net:max-retries 1; set net:timeout 60; get blob.bin -o {f}; bye");
    check("lftp", t.lan(lim, &["lftp", "-u", "u6,p6", "-e", &script_l, &format!("ftp://{host}")]), &f);
    let s = t.stop_cleanly();
    let plog = std::fs::read_to_string(dir.join("py.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}\n{}\n{plog}", s.summary);
    assert!(!plog.contains("received EPSV") && !plog.contains("received EPRT"), "{plog}");
    assert!(plog.contains("received PASV") && plog.contains("received PORT"), "{plog}");
    eprintln!("pyftpdlib_lftp_and_wget_through_nat64: {:?}", started.elapsed());
}

/// The IPv6-only FTP servers behind a forward.
#[derive(Clone, Copy, Debug)]
enum Server6 {
    Pyftpd,
    Vsftpd,
}

/// A port forward to an IPv6-only FTP server (issue 14, RFC 6146 §3.5): pyftpdlib or vsftpd listens on
/// the IPv6-only lan host and knows neither PASV nor PORT (denied, as an IPv6 server may: RFC 2428 §1;
/// pyftpdlib refuses them on IPv6 anyway); the IPv4 client on the wan reaches it at the public address
/// through `tcp:21=[LAN_HOST6]:21`. Both refuse data connections from, or PORTs naming, an address other
/// than the control connection's peer.
struct Ftp6 {
    dir: PathBuf,
    blob: PathBuf,
    want: String,
    kind: Server6,
}

impl Ftp6 {
    fn start(t: &mut Topology, tag: &str, kind: Server6) -> Ftp6 {
        let dir = std::env::temp_dir().join(format!("ftpnat-nat64-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root").join("upload")).expect("server dir");
        let blob = dir.join("root").join("blob.bin");
        std::fs::write(&blob, blob_bytes()).expect("blob");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).expect("mode");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let want = sha256(&blob);
        let d = dir.display().to_string();
        match kind {
            Server6::Pyftpd => {
                let (root, log) =
                    (dir.join("root").display().to_string(), dir.join("py.log").display().to_string());
                let args = pyftpd(&root, LAN_HOST6, ("u4", "p4"), "31000-31019", &log, "PASV,PORT");
                t.serve_lan("tcp", 21, &args.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Server6::Vsftpd => {
                let sh = script("ftp-vsftpd.sh").display().to_string();
                t.serve_lan(
                    "tcp",
                    21,
                    &[
                        "env",
                        "VSFTPD_CMDS_DENIED=PASV,PORT",
                        "bash",
                        &sh,
                        &d,
                        LAN_HOST6,
                        "21",
                        "31000",
                        "31019",
                    ],
                )
            }
        };
        Ftp6 { dir, blob, want, kind }
    }

    fn url(&self, path: &str) -> String {
        match self.kind {
            Server6::Pyftpd => format!("ftp://u4:p4@{PUBLIC_IP}/{path}"),
            Server6::Vsftpd => format!("ftp://{PUBLIC_IP}/{path}"),
        }
    }

    /// The server's protocol log.
    fn log(&self) -> String {
        let name = match self.kind {
            Server6::Pyftpd => "py.log",
            Server6::Vsftpd => "vsftpd.log",
        };
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Whether the server logged receiving a command starting with `cmd`.
    fn saw(&self, cmd: &str) -> bool {
        let log = self.log();
        match self.kind {
            Server6::Pyftpd => log.contains(&format!("received {cmd}")),
            Server6::Vsftpd => {
                log.lines().any(|l| l.contains(&format!("\"{cmd}")) && l.contains("FTP command"))
            }
        }
    }
}

impl Drop for Ftp6 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl on the IPv4 wan host in every mode against `kind` behind the forward: PASV (sent as EPSV, its
/// 229 answered as a 227), EPSV, PORT and EPRT |1| (sent as EPRT |2| naming the client's RFC 6052
/// address); RETR and STOR, sha256 compared. The server saw no PASV or PORT.
fn ipv4_client_through_a_forward(test: &str, kind: Server6) {
    let started = Instant::now();
    let fwd = format!("tcp:21=[{LAN_HOST6}]:21");
    let Some(mut t) = nat64_support::up(test, &[&fwd], &[], &[]) else {
        return;
    };
    let ftp = Ftp6::start(&mut t, test, kind);
    let lim = Duration::from_secs(180);
    let mut failures = Vec::new();
    for (name, flags) in [
        ("pasv", &["--ftp-pasv", "--disable-epsv"][..]),
        ("epsv", &["--ftp-pasv"][..]),
        ("port", &["-P", "-", "--disable-eprt"][..]),
        ("eprt", &["-P", "-"][..]),
    ] {
        let file = ftp.dir.join(format!("{name}.bin")).display().to_string();
        let url = ftp.url("blob.bin");
        let mut args = vec!["curl", "-sS", "--max-time", "150", "-o", &file];
        args.extend_from_slice(flags);
        args.push(&url);
        let o = t.wan(lim, &args);
        if !o.status.success() || sha256(Path::new(&file)) != ftp.want {
            failures.push(format!("{name} RETR: {} {}", o.status, text(&o.stderr)));
        }
        if name == "pasv" || name == "port" {
            let src = ftp.blob.display().to_string();
            let up_url = ftp.url(&format!("upload/up-{name}.bin"));
            let mut up = vec!["curl", "-sS", "--max-time", "150", "-T", &src];
            up.extend_from_slice(flags);
            up.push(&up_url);
            let o = t.wan(lim, &up);
            let stored = ftp.dir.join("root").join("upload").join(format!("up-{name}.bin"));
            if !o.status.success() || sha256(&stored) != ftp.want {
                failures.push(format!("{name} STOR: {} {}", o.status, text(&o.stderr)));
            }
        }
    }
    let s = t.stop_cleanly();
    let log = ftp.log();
    assert!(failures.is_empty(), "{kind:?}: {failures:#?}\n{}\n{log}\n{}", s.summary, t.ftpnat_log());
    assert!(!ftp.saw("PASV") && !ftp.saw("PORT"), "{log}");
    assert!(ftp.saw("EPSV") && ftp.saw("EPRT |2|64:ff9b:1::"), "{log}");
    assert!(s.counter("alg.nat64.epsv") >= 2 && s.counter("alg.nat64.eprt") >= 2, "{}", s.summary);
    eprintln!("{test}: {:?}", started.elapsed());
}

#[test]
fn an_ipv4_client_reaches_an_ipv6_pyftpdlib_through_a_forward() {
    ipv4_client_through_a_forward(
        "an_ipv4_client_reaches_an_ipv6_pyftpdlib_through_a_forward",
        Server6::Pyftpd,
    );
}

#[test]
fn an_ipv4_client_reaches_an_ipv6_vsftpd_through_a_forward() {
    ipv4_client_through_a_forward("an_ipv4_client_reaches_an_ipv6_vsftpd_through_a_forward", Server6::Vsftpd);
}

/// Without the ALG the IPv6 server gets PASV and PORT as sent and refuses them: the rows above
/// fail, showing the test can fail.
#[test]
fn without_the_alg_pasv_to_an_ipv6_server_fails() {
    let fwd = format!("tcp:21=[{LAN_HOST6}]:21");
    let Some(mut t) =
        nat64_support::up("without_the_alg_pasv_to_an_ipv6_server_fails", &[&fwd], &["--no-ftp-alg"], &[])
    else {
        return;
    };
    let ftp = Ftp6::start(&mut t, "fwd6-noalg", Server6::Pyftpd);
    let f = ftp.dir.join("x.bin").display().to_string();
    let url = ftp.url("blob.bin");
    let lim = Duration::from_secs(60);
    for flags in [&["--ftp-pasv", "--disable-epsv"][..], &["-P", "-", "--disable-eprt"][..]] {
        let mut args = vec!["curl", "-sS", "--max-time", "20", "-o", &f];
        args.extend_from_slice(flags);
        args.push(&url);
        let o = t.wan(lim, &args);
        assert!(!o.status.success(), "{flags:?} must fail without the ALG: {}", text(&o.stderr));
    }
    // The plain TCP forward itself works: the server got the commands as sent.
    t.stop_cleanly();
    assert!(ftp.saw("PASV") && ftp.saw("PORT"), "{}", ftp.log());
}

/// A UDP forward to the IPv6-only lan host: the IPv4 wan host's datagram reaches it from the wan
/// host's RFC 6052 address, and the answer comes back from the public address.
#[test]
fn a_udp_forward_reaches_an_ipv6_only_host() {
    let fwd = format!("udp:5353=[{LAN_HOST6}]:5000");
    let Some(mut t) = nat64_support::up("a_udp_forward_reaches_an_ipv6_only_host", &[&fwd], &[], &[]) else {
        return;
    };
    let peer = peer_py();
    t.serve_lan("udp", 5000, &["python3", &peer, "udp-server", "5000", "--bind", LAN_HOST6]);
    let out = t
        .wan(Duration::from_secs(15), &["python3", &peer, "udp-client", PUBLIC_IP, "5353", "--timeout", "2"]);
    let answer = text(&out.stdout);
    assert!(out.status.success(), "no UDP answer through the forward: {answer}");
    // Python writes the address in RFC 5952's form.
    let synth: std::net::Ipv6Addr = wan_host6().parse().unwrap();
    assert!(answer.starts_with(&format!("peer {synth}:")), "the IPv6 server saw {answer}, not {synth}");
    let s = t.stop_cleanly();
    assert!(s.counter("nat64.to_v4") >= 1 && s.counter("nat64.to_v6") >= 1, "{}", s.summary);
}
