//! The NAT allocation log as a collector sees it: every record kind goes through ftpnat's exporter
//! (`ops::natlog`) over loopback to `netns-scripts/natlog-collector.py`, whose IPFIX (RFC 7011/8158)
//! and syslog (RFC 5424) decoders were written from the RFCs and share nothing with the encoder, and
//! the IPFIX datagrams are decoded a second time by tshark's dissector. Both must read back exactly
//! the records that went in: addresses, ports and ranges, protocol, event, start and end times.
//!
//! With `--workers 2` (issue 18) two run loops over in-memory devices feed the one exporter: both
//! workers' records arrive in one IPFIX sequence.
//!
//! tshark is installed by `netns-scripts/deps.sh`; without it this test skips loudly, and fails under
//! `CI=true`.

mod natlog_support;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ftpnat::flow::{Endpoint, Proto};
use ftpnat::nat::{InsideEndpoint, Log, LogPolicy, PortRange, PublicEndpoint, Quota, Record};
use ftpnat::ops::natlog::{Export, IpfixTarget, SyslogTarget, Targets};
use ftpnat::time::Instant;
use natlog_support::{collector, Collector};
use serde_json::Value;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

const T0_MS: u64 = 1_800_000_000_000;

fn a(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, n)
}
fn h(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, n)
}

/// One record of every kind, at distinct times.
fn records() -> Vec<Record> {
    let at = |s| Instant::from_secs(s);
    vec![
        Record::BlockAllocated {
            at: at(10),
            inside: h(2),
            inside6: None,
            public: a(1),
            ports: PortRange::new(1024, 1535).unwrap(),
        },
        Record::BlockAllocated {
            at: at(11),
            inside: h(3),
            inside6: None,
            public: a(2),
            ports: PortRange::new(4096, 4159).unwrap(),
        },
        Record::SessionCreated {
            at: at(12),
            proto: Proto::Tcp,
            inside: InsideEndpoint::new(h(2), 40000),
            inside6: None,
            public: PublicEndpoint::new(a(1), 1030),
            remote: Endpoint::new(Ipv4Addr::new(203, 0, 113, 7), 21),
        },
        Record::SessionDeleted {
            at: at(20),
            since: at(12),
            proto: Proto::Udp,
            inside: InsideEndpoint::new(h(3), 5353),
            inside6: None,
            public: PublicEndpoint::new(a(2), 4100),
            remote: Endpoint::new(Ipv4Addr::new(203, 0, 113, 8), 53),
        },
        Record::AddressesExhausted { at: at(21), proto: Proto::Udp },
        Record::PortsExhausted { at: at(22), proto: Proto::Icmp, public: a(2) },
        Record::QuotaExceeded {
            at: at(23),
            proto: Proto::Tcp,
            host: h(9),
            quota: Quota::BlocksPerHost,
            limit: 4096,
        },
        Record::BlockReleased {
            at: at(130),
            since: at(10),
            inside: h(2),
            inside6: None,
            public: a(1),
            ports: PortRange::new(1024, 1535).unwrap(),
        },
    ]
}

fn ms(i: Instant) -> u64 {
    T0_MS + i.as_micros() / 1000
}

/// Sends `recs` through a real exporter, as the run loop would, with the engine clock at `now` and
/// the wall clock such that `Instant::ZERO` is `T0_MS`: the exporter stamps with the wall clock, so
/// the test passes the difference through `now` and reads times relative to the first record.
fn export(c: &Collector, recs: &[Record], syslog: SyslogTarget) -> Export {
    let mut t = IpfixTarget::new(format!("127.0.0.1:{}", c.ipfix).parse().unwrap());
    t.max_message = 256; // several messages, so sequence numbers are exercised
    t.domain = 77;
    let targets = Targets { ipfix: Some(t), syslog: Some(syslog), facility: 16 };
    let mut e = Export::start(&targets).unwrap();
    let mut log = Log::default();
    log.set_policy(LogPolicy { enabled: true, sessions: true });
    for r in recs {
        log.push(|| r.clone());
    }
    e.drain(&mut log, Instant::from_secs(200));
    e
}

/// What an IPFIX decoder must read for `r`, as (field, value) pairs; times relative to the first
/// record's event time (the wall clock is the exporter's, so only differences are known exactly).
fn expected_ipfix(r: &Record) -> Vec<(&'static str, Value)> {
    let s = |v: Ipv4Addr| Value::from(v.to_string());
    let t = |i: Instant| Value::from(ms(i) - T0_MS);
    match r {
        Record::BlockAllocated { at, inside, public, ports, .. } => vec![
            ("natEvent", 16.into()),
            ("observationTimeMilliseconds", t(*at)),
            ("flowStartMilliseconds", t(*at)),
            ("sourceIPv4Address", s(*inside)),
            ("postNATSourceIPv4Address", s(*public)),
            ("portRangeStart", ports.first().into()),
            ("portRangeEnd", ports.last().into()),
            ("portRangeStepSize", 1.into()),
            ("portRangeNumPorts", ports.len().into()),
        ],
        Record::BlockReleased { at, since, inside, public, ports, .. } => vec![
            ("natEvent", 17.into()),
            ("observationTimeMilliseconds", t(*at)),
            ("flowStartMilliseconds", t(*since)),
            ("sourceIPv4Address", s(*inside)),
            ("postNATSourceIPv4Address", s(*public)),
            ("portRangeStart", ports.first().into()),
            ("portRangeEnd", ports.last().into()),
            ("portRangeNumPorts", ports.len().into()),
        ],
        Record::SessionCreated { at, proto, inside, public, remote, .. }
        | Record::SessionDeleted { at, proto, inside, public, remote, .. } => {
            let (ev, since) = match r {
                Record::SessionDeleted { since, .. } => (5, *since),
                _ => (4, *at),
            };
            vec![
                ("natEvent", ev.into()),
                ("observationTimeMilliseconds", t(*at)),
                ("flowStartMilliseconds", t(since)),
                ("protocolIdentifier", proto.number().into()),
                ("sourceIPv4Address", s(inside.addr())),
                ("sourceTransportPort", inside.port().into()),
                ("postNATSourceIPv4Address", s(public.addr())),
                ("postNAPTSourceTransportPort", public.port().into()),
                ("destinationIPv4Address", s(remote.addr)),
                ("destinationTransportPort", remote.port.into()),
            ]
        }
        Record::AddressesExhausted { at, proto } => vec![
            ("natEvent", 3.into()),
            ("observationTimeMilliseconds", t(*at)),
            ("protocolIdentifier", proto.number().into()),
            ("natPoolId", 1.into()),
        ],
        Record::PortsExhausted { at, proto, public } => vec![
            ("natEvent", 12.into()),
            ("observationTimeMilliseconds", t(*at)),
            ("protocolIdentifier", proto.number().into()),
            ("postNATSourceIPv4Address", s(*public)),
        ],
        Record::QuotaExceeded { at, proto, host, limit, .. } => vec![
            ("natEvent", 13.into()),
            ("observationTimeMilliseconds", t(*at)),
            ("protocolIdentifier", proto.number().into()),
            ("sourceIPv4Address", s(*host)),
            ("natQuotaExceededEvent", 3.into()),
            ("maxEntriesPerUser", (*limit).into()),
        ],
    }
}

/// Rebases a decoded record's millisecond times onto the first record's observation time.
fn rebase(v: &mut Value, base: u64) {
    for k in ["observationTimeMilliseconds", "flowStartMilliseconds"] {
        if let Some(t) = v.get(k).and_then(Value::as_u64) {
            v[k] = Value::from(t - base);
        }
    }
}

#[test]
fn every_record_kind_decodes_independently_from_ipfix_and_syslog() {
    let c = collector("all");
    let recs = records();
    let e = export(&c, &recs, SyslogTarget::Udp(format!("127.0.0.1:{}", c.syslog).parse().unwrap()));
    let ipfix = c.wait("ipfix", recs.len());
    let syslog = c.wait("syslog", recs.len());
    drop(e);
    let all = c.lines();
    assert!(
        all.iter().all(|v| v["type"] != "ipfix_error" && v["type"] != "syslog_error"),
        "decoder errors: {all:?}"
    );
    let messages: Vec<&Value> = all.iter().filter(|v| v["type"] == "ipfix_message").collect();
    assert!(messages.iter().all(|m| m["sequence_errors"] == 0), "sequence numbers: {messages:?}");
    assert!(messages.iter().filter(|m| m["records"].as_u64() > Some(0)).count() > 1, "several data messages");
    assert!(messages.iter().all(|m| m["domain"] == 77));

    // IPFIX: in order, every field as sent.
    assert_eq!(ipfix.len(), recs.len(), "{ipfix:?}");
    // The wall-clock time of Instant::ZERO, as the exporter computed it.
    let base = ipfix[0]["observationTimeMilliseconds"].as_u64().unwrap() - (ms(recs[0].at()) - T0_MS);
    for (r, got) in recs.iter().zip(&ipfix) {
        let mut got = got.clone();
        rebase(&mut got, base);
        for (k, want) in expected_ipfix(r) {
            assert_eq!(got[k], want, "{k} of {r:?}: decoded {got}");
        }
    }
    let names: Vec<&str> = ipfix.iter().map(|v| v["natEventName"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Port block allocation",
            "Port block allocation",
            "NAT44 session create",
            "NAT44 session delete",
            "NAT Addresses exhausted",
            "NAT ports exhausted",
            "Quota Exceeded",
            "Port block de-allocation"
        ]
    );

    // syslog: the stated format, the same facts.
    assert_eq!(syslog.len(), recs.len());
    let msgids: Vec<&str> = syslog.iter().map(|v| v["msgid"].as_str().unwrap()).collect();
    assert_eq!(msgids, ["PBA", "PBA", "SADD", "SDEL", "ADDREXH", "PORTEXH", "QUOTA", "PBR"]);
    for v in &syslog {
        assert_eq!(
            (v["version"].as_u64(), v["facility"].as_u64(), v["app"].as_str()),
            (Some(1), Some(16), Some("ftpnat"))
        );
        assert_eq!(v["procid"], std::process::id().to_string());
    }
    let sd = |i: usize| syslog[i]["sd"]["nat@32473"].clone();
    assert_eq!(sd(0)["isaddr"], "100.64.0.2");
    assert_eq!(sd(0)["xsaddr"], "198.51.100.1");
    assert_eq!(sd(0)["xsport"], "1024-1535");
    assert_eq!(sd(0)["proto"], "any");
    assert_eq!(syslog[0]["severity"], 6);
    assert_eq!(sd(2)["proto"], "tcp");
    assert_eq!(
        (sd(2)["isport"].as_str(), sd(2)["xsport"].as_str(), sd(2)["xdport"].as_str()),
        (Some("40000"), Some("1030"), Some("21"))
    );
    assert_eq!(sd(6)["quota"], "blocks_per_host");
    assert_eq!(sd(6)["limit"], "4096");
    assert_eq!(syslog[6]["severity"], 4);
    // The release says when the block was allocated and when it went back: 120 s apart, and the
    // syslog and IPFIX times agree to the millisecond.
    let (start, end) =
        (sd(7)["start"].as_str().unwrap().to_string(), sd(7)["end"].as_str().unwrap().to_string());
    assert_eq!(start, syslog[0]["timestamp"].as_str().unwrap(), "release start = allocation time");
    assert_eq!(end, syslog[7]["timestamp"].as_str().unwrap());
    let ipfix_alloc_ms = ipfix[0]["observationTimeMilliseconds"].as_u64().unwrap();
    assert_eq!(start, rfc3339_via_date(ipfix_alloc_ms), "syslog and IPFIX carry the same instant");

    tshark_reads_the_same(&c, &recs);
}

/// `date -u` formats a millisecond time independently of ftpnat's formatter.
fn rfc3339_via_date(ms: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}.{:03}", ms / 1000, ms % 1000), "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tshark_reads_the_same(c: &Collector, recs: &[Record]) {
    if Command::new("tshark").arg("--version").stdout(Stdio::null()).status().is_err() {
        assert!(
            !in_ci(),
            "tshark is missing and CI=true forbids skipping (netns-scripts/deps.sh installs it)"
        );
        eprintln!("SKIP (needs tshark): the second, independent IPFIX decode");
        return;
    }
    let fields = [
        "cflow.nat_event",
        "cflow.srcaddr",
        "cflow.post_natsource_ipv4_address",
        "cflow.port_range_start",
        "cflow.port_range_end",
        "cflow.port_range_num_ports",
        "cflow.protocol",
        "cflow.srcport",
        "cflow.post_naptsource_transport_port",
        "cflow.dstaddr",
        "cflow.dstport",
        "cflow.max_entries_per_user",
        "cflow.nat_pool_id",
    ];
    let mut args =
        vec!["-r".to_string(), c.pcap.display().to_string(), "-d".into(), "udp.port==4739,cflow".into()];
    args.extend(
        ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-E", "separator=;"].map(String::from),
    );
    for f in fields {
        args.extend(["-e".to_string(), f.to_string()]);
    }
    let out = Command::new("tshark").args(&args).output().expect("tshark runs");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Per packet one line; per field the values of every record in it, in order. Concatenate packets.
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); fields.len()];
    for line in text.lines() {
        for (i, col) in line.split(';').enumerate().take(fields.len()) {
            cols[i].extend(col.split('|').filter(|s| !s.is_empty()).map(String::from));
        }
    }
    let events: Vec<u8> = recs
        .iter()
        .map(|r| match r {
            Record::BlockAllocated { .. } => 16,
            Record::BlockReleased { .. } => 17,
            Record::SessionCreated { .. } => 4,
            Record::SessionDeleted { .. } => 5,
            Record::AddressesExhausted { .. } => 3,
            Record::PortsExhausted { .. } => 12,
            Record::QuotaExceeded { .. } => 13,
        })
        .collect();
    assert_eq!(
        cols[0],
        events.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        "tshark natEvent column:\n{text}"
    );
    // Blocks (records 0, 1, 7): their ranges, in order.
    let want: Vec<[String; 3]> = recs
        .iter()
        .filter_map(|r| match r {
            Record::BlockAllocated { ports, .. } | Record::BlockReleased { ports, .. } => {
                Some([ports.first(), ports.last()].map(|p| p.to_string()))
                    .map(|[a, b]| [a, b, ports.len().to_string()])
            }
            _ => None,
        })
        .collect();
    let got: Vec<[String; 3]> =
        (0..cols[3].len()).map(|i| [cols[3][i].clone(), cols[4][i].clone(), cols[5][i].clone()]).collect();
    assert_eq!(got, want, "tshark port ranges:\n{text}");
    // Inside addresses as tshark read them: blocks, sessions and the quota record carry one.
    let want_src: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::BlockAllocated { inside, .. } | Record::BlockReleased { inside, .. } => {
                Some(inside.to_string())
            }
            Record::SessionCreated { inside, .. } | Record::SessionDeleted { inside, .. } => {
                Some(inside.addr().to_string())
            }
            Record::QuotaExceeded { host, .. } => Some(host.to_string()),
            _ => None,
        })
        .collect();
    let mut got_src = cols[1].clone();
    got_src.sort();
    let mut want_sorted = want_src.clone();
    want_sorted.sort();
    assert_eq!(got_src, want_sorted, "tshark sourceIPv4Address values:\n{text}");
    assert!(cols[11].contains(&"4096".to_string()), "maxEntriesPerUser:\n{text}");
    assert_eq!(cols[12], vec!["1".to_string()], "natPoolId:\n{text}");
}

/// The same records over a Unix datagram socket (as to a local syslog daemon's /dev/log).
#[test]
fn syslog_over_a_unix_socket() {
    let c = collector("unix");
    let recs = records();
    let e = export(&c, &recs, SyslogTarget::Unix(c.unix.clone()));
    let got = c.wait("syslog", recs.len());
    drop(e);
    assert_eq!(got.len(), recs.len());
    assert_eq!(got[7]["msgid"], "PBR");
    assert_eq!(got[7]["sd"]["nat@32473"]["xsport"], "1024-1535");
}

/// One block record per host number, all at time `at`.
fn burst(log: &mut Log, n: u32, at: u64) {
    for i in 0..n {
        log.push(|| Record::BlockAllocated {
            at: Instant::from_secs(at),
            inside: Ipv4Addr::from(0x6440_0000 + i),
            inside6: None,
            public: a(1),
            ports: PortRange::new(1024, 1535).unwrap(),
        });
    }
}

fn enabled_log() -> Log {
    let mut log = Log::default();
    log.set_policy(LogPolicy { enabled: true, sessions: false });
    log
}

/// The adversary's side: the collector is down (nothing listens on its port; the kernel refuses every
/// datagram). The run loop's drain never waits for it, every record is accounted for (handed over or
/// counted lost), and the refusals are counted, not fatal.
#[test]
fn a_collector_that_is_down_costs_counted_errors_never_a_stall() {
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let targets =
        Targets { ipfix: Some(IpfixTarget::new(addr)), syslog: Some(SyslogTarget::Udp(addr)), facility: 16 };
    let mut e = Export::start(&targets).unwrap();
    let counters = std::sync::Arc::clone(e.counters());
    let mut log = enabled_log();
    const TURNS: u64 = 200;
    for turn in 0..TURNS {
        burst(&mut log, 1000, turn);
        e.drain(&mut log, Instant::from_secs(turn));
        assert!(log.is_empty(), "a drain takes the whole turn's records");
    }
    drop(e); // joins the exporter thread once it has tried everything it was handed
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&counters.records) + get(&counters.lost), TURNS * 1000, "every record accounted for");
    assert!(get(&counters.send_errors) > 0, "the refusals are counted");
}

/// A local syslog reader that stops reading (its socket buffer full): the exporter thread waits at
/// most a moment per second on it, so it keeps taking batches, and it stops promptly when asked.
/// Records it could not hand over are counted lost; none blocks the run loop's drain.
#[test]
fn a_wedged_unix_syslog_reader_neither_stalls_the_loop_nor_the_exporter() {
    let dir = std::env::temp_dir().join(format!("ftpnat-natlog-wedged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.sock");
    let _reader = std::os::unix::net::UnixDatagram::bind(&path).unwrap(); // never read
    let targets = Targets { ipfix: None, syslog: Some(SyslogTarget::Unix(path.clone())), facility: 16 };
    let mut e = Export::start(&targets).unwrap();
    let counters = std::sync::Arc::clone(e.counters());
    let mut log = enabled_log();
    const TURNS: u64 = 3000;
    for turn in 0..TURNS {
        burst(&mut log, 20, turn);
        e.drain(&mut log, Instant::from_secs(turn));
    }
    drop(e);
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (records, lost) = (get(&counters.records), get(&counters.lost));
    assert_eq!(records + lost, TURNS * 20);
    let (sent, errors) = (get(&counters.syslog_messages), get(&counters.send_errors));
    assert_eq!(sent + errors, records, "every record handed over was sent or counted as an error");
    assert!(errors > 0, "the full socket was noticed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--workers 2` (issue 18): two engines, each with its own run loop and its end of the one exporter.
/// Hosts of both workers open UDP flows (session logging on); at stop each worker hands over its
/// session deletes. The collector gets every create and delete of both workers' hosts, each with a
/// public port of its host's worker's slice, as one IPFIX stream whose sequence numbers (RFC 7011
/// §3.1, counted by the one exporter) never skip or repeat, and as syslog; the stop summary reports
/// the exporter's counters once, not once per worker.
#[test]
fn two_workers_feed_one_exporter_with_one_sequence() {
    use ftpnat::config::Config;
    use ftpnat::io::workers::MemGateway;
    use ftpnat::steer::{host_worker, slice_range};

    let c = collector("workers");
    let mut t = IpfixTarget::new(format!("127.0.0.1:{}", c.ipfix).parse().unwrap());
    t.max_message = 256; // several messages per batch: the sequence is exercised across batches
    let targets = Targets {
        ipfix: Some(t),
        syslog: Some(SyslogTarget::Udp(format!("127.0.0.1:{}", c.syslog).parse().unwrap())),
        facility: 16,
    };
    let mut config = Config::new(vec!["100.64.0.0/24".parse().unwrap()], a(1));
    config.pool.log_sessions = true;
    let MemGateway { lans, wans, stop: handle, done } =
        MemGateway::start(&config, 2, Some(Export::start(&targets).unwrap())).unwrap();
    // Ten hosts of each worker, three flows each, read by their own worker's queue.
    const PER_WORKER: usize = 10;
    let hosts: Vec<Ipv4Addr> = (2..=254u8).map(h).collect();
    let mut sent = 0;
    for w in 0..2u16 {
        for host in hosts.iter().filter(|x| host_worker(**x, 2) == w).take(PER_WORKER) {
            for sport in [40000u16, 40001, 40002] {
                let p = ftpnat_testkit::pkt::Ip::new(*host, Ipv4Addr::new(203, 0, 113, 9))
                    .udp(sport, 53, b"q", false);
                lans[usize::from(w)].inject(&p).unwrap();
                wans[usize::from(w)]
                    .take_within(std::time::Duration::from_secs(5))
                    .unwrap()
                    .expect("translated by its worker");
                sent += 1;
            }
        }
    }
    let creates = c.wait("ipfix", sent);
    handle.stop().unwrap();
    let (result, summary) = done.join().unwrap().unwrap();
    assert!(result.is_ok());
    let all = c.wait("ipfix", 2 * sent);
    let events = |e: u64| all.iter().filter(|v| v["natEvent"] == e).cloned().collect::<Vec<_>>();
    let (created, deleted) = (events(4), events(5));
    assert!(creates.len() >= sent, "{} creates before the stop", creates.len());
    assert_eq!((created.len(), deleted.len()), (sent, sent), "every session of both workers: {all:?}");
    let range = config.port_range.clone();
    let mut by_worker = [0usize; 2];
    for v in &created {
        let inside: Ipv4Addr = v["sourceIPv4Address"].as_str().unwrap().parse().unwrap();
        let port = v["postNAPTSourceTransportPort"].as_u64().unwrap() as u16;
        let w = host_worker(inside, 2);
        assert!(slice_range(&range, 2, w).contains(&port), "{v}: a port of its worker's slice");
        by_worker[usize::from(w)] += 1;
    }
    assert_eq!(by_worker, [PER_WORKER * 3; 2], "both workers' records arrived");
    let lines = c.lines();
    let messages: Vec<_> = lines.iter().filter(|v| v["type"] == "ipfix_message").collect();
    assert!(messages.len() > 2, "several messages");
    assert!(messages.iter().all(|m| m["sequence_errors"] == 0), "one sequence: {messages:?}");
    assert!(lines.iter().all(|v| v["type"] != "ipfix_error" && v["type"] != "syslog_error"));
    let syslog = c.wait("syslog", 2 * sent);
    assert_eq!(syslog.len(), 2 * sent, "syslog has every create and delete too");
    let get = |k: &str| summary.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
    assert_eq!(get("natlog.records"), 2 * sent as u64, "counted once, not per worker: {summary:?}");
    assert_eq!(get("natlog.lost"), 0);
}
