//! `deploy/grafana/ftpnat-dashboard.json` against what the gateway exports: every metric name the
//! dashboard queries is a sample name of the `--metrics-listen` exposition (taken from the real encoder,
//! so a renamed metric fails here), every `by (...)` label is a label of a metric its query reads, and the
//! dashboard shows what an operator needs: drops by reason, ALG rewrites and refusals, flows, pinholes
//! and the devices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use ftpnat::config::Config;
use ftpnat::engine::Engine;
use ftpnat::ops::loop_stats::{DeviceStats, LoopTimes};
use ftpnat::ops::view::Counters;
use ftpnat::ops::LoopState;
use ftpnat::time::Instant;

/// Sample names (`ftpnat_drops_total`, ...) of the exposition, each with its label keys.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let mut engine =
        Engine::new(Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(198, 51, 100, 1)));
    let times = LoopTimes::default();
    let mut extra = LoopState {
        engine: &mut engine,
        now: Instant::from_secs(1),
        devices: [DeviceStats::default(); 2],
        times: &times,
    }
    .extra_counters();
    // What the run loop and the operations thread add beside the devices' counters (ops/link.rs,
    // ops/server.rs, the log's counters from main.rs).
    for k in
        ["capture.packets", "capture.dropped", "capture.rotations", "log.lines_suppressed", "log.lines_lost"]
    {
        extra.push((k.to_string(), 0));
    }
    for server in ["control", "metrics"] {
        for reason in ["request_timeout", "stalled", "evicted", "refused"] {
            extra.push((format!("ops.{server}.cut_off.{reason}"), 0));
        }
    }
    let counters = Counters::take(&engine, extra, &times);
    let text = ftpnat::ops::metrics::render(&counters, 1.0);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            for pair in rest.split('}').next().unwrap_or("").split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

/// Every string in the document, with where it is.
fn strings<'a>(v: &'a serde_json::Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((at, s)),
        serde_json::Value::Array(a) => {
            a.iter().enumerate().for_each(|(i, x)| strings(x, format!("{at}/{i}"), out))
        }
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| strings(x, format!("{at}/{k}"), out)),
        _ => {}
    }
}

/// The `ftpnat_...` identifiers in a string.
fn metric_names(s: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("ftpnat_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

/// The label lists of every `by (...)` in a query.
fn by_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let tail = &rest[i + 4..];
        let end = tail.find(')').unwrap_or(tail.len());
        out.extend(tail[..end].split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
        rest = &tail[end..];
    }
    out
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/ftpnat-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON")
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_labels() {
    let exported = exported();
    assert!(exported.contains_key("ftpnat_drops_total"), "the exposition changed shape: {exported:?}");
    let dash = dashboard();
    let mut all = Vec::new();
    strings(&dash, String::new(), &mut all);
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (at, s) in &all {
        let names = metric_names(s);
        for n in &names {
            used.insert(n.to_string());
            if !exported.contains_key(*n) {
                problems.push(format!("{at}: `{n}` is not exported"));
            }
        }
        if at.ends_with("/expr") {
            for label in by_labels(s) {
                if !names.iter().any(|n| exported.get(*n).is_some_and(|l| l.contains(&label))) {
                    problems.push(format!("{at}: `by ({label})` is a label of none of {names:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "the dashboard does not match the exposition:\n{}", problems.join("\n"));
    // What the dashboard is for.
    for need in [
        "ftpnat_drops_total",
        "ftpnat_alg_rewrites_total",
        "ftpnat_alg_refusals_total",
        "ftpnat_flows_active",
        "ftpnat_flows_total",
        "ftpnat_pinholes_total",
        "ftpnat_pinholes_open",
        "ftpnat_device_packets_total",
        "ftpnat_device_errors_total",
    ] {
        assert!(used.contains(need), "the dashboard shows nothing of {need}");
    }
}

#[test]
fn every_panel_has_a_query_and_a_unique_id() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "ftpnat-gateway");
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id {} twice", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{}: no targets", p["title"]));
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("ftpnat_")), "{}: {t}", p["title"]);
        }
    }
}

/// The checker itself: a misspelt metric or label is caught.
#[test]
fn the_checks_catch_a_wrong_name() {
    let exported = exported();
    assert_eq!(metric_names("sum(rate(ftpnat_dropz_total[5m]))"), ["ftpnat_dropz_total"]);
    assert!(!exported.contains_key("ftpnat_dropz_total"));
    assert!(!exported.contains_key("ftpnat_drops"), "counters are exported with _total");
    assert_eq!(
        by_labels("sum by (side, direction) (x) / sum by (reason) (y)"),
        ["side", "direction", "reason"]
    );
    assert!(!exported["ftpnat_drops_total"].contains("kind"));
}
