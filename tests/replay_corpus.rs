//! Replays every capture of the shared FTP corpus (`../shared/corpus/CATALOG.md`, or `$FTPNAT_CORPUS`)
//! in the client-inside and, where a server speaks, the server-inside configuration, and checks
//! properties 1–6 of issue 5 with the independent checker in `replay_check`.
//!
//! When the corpus folder is absent the test says so loudly and passes — unless `CI=true`, where the
//! corpus must be there. The per-capture table is printed and written to
//! `target/tmp/replay-corpus-table.md`. When tshark is installed, it checks every output too.

mod replay_check;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ftpnat::replay::{self, MemoryOutput, ReplayFiles, ReplayOptions, Replayer};
use ipnet::IpNet;
use replay_check::{check, flatten, read_capture, Capture, Setup};

fn corpus_dir() -> PathBuf {
    match std::env::var_os("FTPNAT_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("corpus"),
    }
}

/// The capture paths listed in the catalogue's tables (first backticked `ftp…/` path of each row).
fn catalogue(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("CATALOG.md")).expect("CATALOG.md readable");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cols: Vec<&str> = line.split('|').collect();
        let Some(col) = cols.get(2) else { continue };
        let mut parts = col.split('`');
        parts.next();
        if let Some(p) = parts.next() {
            if p.starts_with("ftp/") || p.starts_with("ftp-synthetic/") {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// Clients (addresses opening connections to port 21) and servers that speak (send payload from 21).
fn roles(c: &Capture) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
    let (mut clients, mut servers) = (BTreeSet::new(), BTreeSet::new());
    for p in &c.pkts {
        let Some(t) = &p.tcp else { continue };
        if p.dport == 21 && p.sport != 21 && (!t.syn || !t.ackf) {
            clients.insert(p.src);
        }
        if p.sport == 21 && p.dport != 21 && !t.payload.is_empty() {
            servers.insert(p.src);
        }
    }
    (clients, servers)
}

fn public_ip_for(c: &Capture) -> Ipv4Addr {
    let used: BTreeSet<IpAddr> = c.pkts.iter().flat_map(|p| [p.src, p.dst]).collect();
    [Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(198, 51, 100, 254), Ipv4Addr::new(192, 0, 2, 77)]
        .into_iter()
        .find(|a| !used.contains(&IpAddr::V4(*a)))
        .expect("a free documentation address")
}

fn host_net(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

struct Row {
    file: String,
    config: &'static str,
    summary: HashMap<String, u64>,
    result: String,
}

fn run_one(
    name: &str,
    input: &Path,
    cap: &Capture,
    setup: &Setup,
    config: &'static str,
    rows: &mut Vec<Row>,
) -> Vec<String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("replay-corpus")
        .join(name.replace('/', "_"))
        .join(config);
    std::fs::create_dir_all(&dir).unwrap();
    let files = ReplayFiles {
        input: input.to_path_buf(),
        lan_out: dir.join("lan.pcap"),
        wan_out: dir.join("wan.pcap"),
        summary: Some(dir.join("summary.json")),
    };
    let mut opts = ReplayOptions::new(setup.inside.clone(), setup.public_ip);
    opts.forwards =
        setup.forwards.iter().map(|(pp, a, p)| format!("tcp:{pp}={a}:{p}").parse().unwrap()).collect();
    opts.ftp_ports = setup.ftp_ports.clone();
    let mut failures = Vec::new();
    if let Err(e) = replay::run(&opts, &files) {
        failures.push(format!("{name} [{config}]: replay failed: {e}"));
        rows.push(Row { file: name.into(), config, summary: HashMap::new(), result: "ERROR".into() });
        return failures;
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let summary = flatten(&json);
    for key in CONTRACT_KEYS {
        if !summary.contains_key(*key) {
            failures.push(format!("{name} [{config}]: summary lacks {key}"));
        }
    }
    // Every input IP packet either produced output, or is counted in exactly one drop.
    let mut r = Replayer::new(&opts).unwrap();
    let mut sink = MemoryOutput { discard: true, ..Default::default() };
    let mut reader = ftpnat::io::pcap::CaptureReader::open(input).unwrap();
    let mut frame = 0;
    while let Some(f) = reader.next_frame().unwrap() {
        frame += 1;
        r.frame(f.ts_micros, f.linktype, &f.data, &mut sink).unwrap();
        let o = r.last_frame();
        let fine = !o.ip
            || (o.outputs > 0 && o.drops == 0)
            || (o.outputs == 0 && o.drops == 1)
            || (o.held && o.drops == 0);
        if !fine {
            failures
                .push(format!("{name} [{config}]: frame {frame}: {o:?} (output and drop counts disagree)"));
        }
    }
    let s2 = r.finish(&mut sink).unwrap();
    if s2.to_json() != json {
        failures.push(format!("{name} [{config}]: in-memory replay summary differs from the file replay's"));
    }
    let lan = read_capture(&files.lan_out);
    let wan = read_capture(&files.wan_out);
    let report = check(setup, cap, &lan.pkts, &wan.pkts, &summary);
    for f in &report.failures {
        failures.push(format!("{name} [{config}]: {f}"));
    }
    // When tshark is installed: no malformed packet, no checksum error in either output.
    for p in [&files.lan_out, &files.wan_out] {
        for b in replay_check::tshark_problems(p).unwrap_or_default() {
            failures.push(format!("{name} [{config}]: tshark on {}: {b}", p.display()));
        }
    }
    let result = if report.failures.is_empty() {
        format!(
            "ok ({} rewrites checked, {} data conns crossed)",
            report.rewrites_seen, report.data_conns_checked
        )
    } else {
        format!("FAIL ({} problems)", report.failures.len())
    };
    for n in report.notes.iter().take(5) {
        println!("  note {name} [{config}]: {n}");
    }
    rows.push(Row { file: name.into(), config, summary, result });
    failures
}

const CONTRACT_KEYS: &[&str] = &[
    "packets.in.lan",
    "packets.in.wan",
    "packets.out.lan",
    "packets.out.wan",
    "alg.rewrites.port",
    "alg.rewrites.eprt",
    "alg.rewrites.227",
    "alg.rewrites.229",
    "pinholes.created",
    "pinholes.used",
    "pinholes.expired",
    "generated.suppressed",
    "input.checksums_repaired",
    "input.ipv6_passed",
    "input.non_ip",
];

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| capture | config | in lan/wan | out lan/wan | rewrites port/eprt/227/229 | refused | pinholes c/u/e | drops | repaired | v6 | result |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let g = |k: &str| r.summary.get(k).copied().unwrap_or(0);
        let by_prefix = |p: &str| {
            let mut v: Vec<String> = r
                .summary
                .iter()
                .filter(|(k, v)| k.starts_with(p) && **v > 0)
                .map(|(k, v)| format!("{}={v}", &k[p.len()..]))
                .collect();
            v.sort();
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(" ")
            }
        };
        t.push_str(&format!(
            "| {} | {} | {}/{} | {}/{} | {}/{}/{}/{} | {} | {}/{}/{} | {} | {} | {} | {} |\n",
            r.file,
            r.config,
            g("packets.in.lan"),
            g("packets.in.wan"),
            g("packets.out.lan"),
            g("packets.out.wan"),
            g("alg.rewrites.port"),
            g("alg.rewrites.eprt"),
            g("alg.rewrites.227"),
            g("alg.rewrites.229"),
            by_prefix("alg.refused."),
            g("pinholes.created"),
            g("pinholes.used"),
            g("pinholes.expired"),
            by_prefix("drops."),
            g("input.checksums_repaired"),
            g("input.ipv6_passed"),
            r.result
        ));
    }
    t
}

#[test]
fn corpus_replays_keep_properties_1_to_6() {
    let dir = corpus_dir();
    if !dir.join("CATALOG.md").exists() {
        let msg = format!("SKIP: corpus absent at {}", dir.display());
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg} (CI=true: the corpus must be present)");
        }
        eprintln!("\n==================== {msg} ====================\n");
        println!("{msg}");
        return;
    }
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let listed = catalogue(&dir);
    assert!(!listed.is_empty(), "CATALOG.md lists no capture");
    for name in &listed {
        let input = dir.join(name);
        if !input.exists() {
            println!("  missing (listed, not present): {name}");
            continue;
        }
        let cap = read_capture(&input);
        let (clients, servers) = roles(&cap);
        let public_ip = public_ip_for(&cap);
        if clients.is_empty() {
            failures.push(format!("{name}: no FTP client found"));
            continue;
        }
        if let Some(shared) = clients.iter().find(|c| servers.contains(*c)) {
            // Sides are picked by source address (the contract), so a capture whose client and server
            // share one (a loopback recording) has no inside/outside split to replay.
            println!("  n/a {name}: client and server share address {shared} (loopback recording)");
            rows.push(Row {
                file: name.clone(),
                config: "n/a",
                summary: HashMap::new(),
                result: format!("n/a: client and server are both {shared}; sides are told apart by address"),
            });
            continue;
        }
        let client_inside = Setup {
            inside: clients.iter().copied().map(host_net).collect(),
            public_ip,
            forwards: vec![],
            ftp_ports: vec![21],
        };
        failures.extend(run_one(name, &input, &cap, &client_inside, "client-inside", &mut rows));
        let servers: Vec<IpAddr> = servers.into_iter().filter(|s| !clients.contains(s)).collect();
        if !servers.is_empty() {
            let forwards = servers
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    IpAddr::V4(a) => Some((if i == 0 { 21 } else { 2120 + i as u16 }, *a, 21)),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let server_inside = Setup {
                inside: servers.iter().copied().map(host_net).collect(),
                public_ip,
                forwards,
                ftp_ports: vec![21],
            };
            failures.extend(run_one(name, &input, &cap, &server_inside, "server-inside", &mut rows));
        }
    }
    let t = table(&rows);
    println!("\n{t}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-corpus-table.md");
    std::fs::write(&out, &t).unwrap();
    println!("(table written to {})", out.display());
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
}
