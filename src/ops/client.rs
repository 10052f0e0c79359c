//! The client side of the control socket: `ftpnat show flows|pinholes|stats` and `ftpnat events`.
//!
//! Owns: connecting, sending one [`Request`], reading the JSON reply or event stream, paging through a
//! listing ([`pages`]: [`PAGE`] entries per request, resuming at each reply's `next_cursor`, so neither
//! side ever holds a whole 250k-flow table), and rendering it for people (aligned tables like
//! `conntrack -L`, printed as the pages come; one line per event like `conntrack -E`) or passing the
//! JSON through (`--json`, one document, printed as the pages come). Must not: know the engine;
//! everything it shows comes from the reply.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::Value;

use super::view::{Cmd, Request};

/// Entries per request when the client pages through a listing by itself.
pub const PAGE: usize = 1000;

/// Where `ftpnat show`/`events` look when `--control-socket` is not given (systemd's RuntimeDirectory).
pub const DEFAULT_SOCKET: &str = "/run/ftpnat/control.sock";

/// A failed client call, with a message for the operator.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

fn connect(path: &Path, req: &Request) -> Result<BufReader<UnixStream>, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        ClientError(format!(
            "cannot connect to {}: {e} (is `ftpnat run --control-socket {}` running, and may you open it?)",
            path.display(),
            path.display()
        ))
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError(e.to_string()))?;
    line.push(b'\n');
    if let Err(e) = s.write_all(&line) {
        // The server may have refused us before reading (permission, too many clients): say why.
        let mut why = String::new();
        let _ = BufReader::new(&s).read_line(&mut why);
        let refusal = serde_json::from_str::<Value>(&why).ok().and_then(|v| server_error(&v));
        return Err(refusal.unwrap_or_else(|| ClientError(format!("{}: {e}", path.display()))));
    }
    Ok(BufReader::new(s))
}

fn server_error(v: &Value) -> Option<ClientError> {
    v.get("error").and_then(Value::as_str).map(|e| ClientError(format!("ftpnat answered: {e}")))
}

/// The key a listing's entries are under in its reply (`flows`, `pinholes`).
fn list_key(cmd: Cmd) -> &'static str {
    match cmd {
        Cmd::Pinholes => "pinholes",
        _ => "flows",
    }
}

/// Sends a `flows`/`pinholes`/`stats` request and returns the JSON reply. A listing without a limit is
/// fetched page by page ([`pages`]) and returned as one document, as the server would send it.
pub fn query(path: &Path, req: &Request) -> Result<Value, ClientError> {
    if !req.is_listing() || req.limit.is_some() {
        return request(path, req);
    }
    let mut all = Vec::new();
    pages(path, req, |rows| {
        all.extend_from_slice(rows);
        true
    })?;
    let mut doc = serde_json::Map::new();
    doc.insert(list_key(req.cmd).into(), Value::Array(all));
    Ok(Value::Object(doc))
}

/// Calls `each` with every page of a listing, [`PAGE`] entries at a time from `req.cursor` on, until
/// the listing ends or `each` returns false. A listing taken in pages shows every entry that lived
/// through it once; one created or removed meanwhile may or may not appear.
pub fn pages(path: &Path, req: &Request, mut each: impl FnMut(&[Value]) -> bool) -> Result<(), ClientError> {
    let mut r = req.clone();
    r.limit = Some(PAGE);
    loop {
        let v = request(path, &r)?;
        let rows = v[list_key(r.cmd)].as_array().ok_or_else(|| ClientError(format!("bad reply: {v}")))?;
        if !each(rows) {
            return Ok(());
        }
        match v.get("next_cursor").and_then(Value::as_u64).and_then(|c| u32::try_from(c).ok()) {
            Some(c) => r.cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Sends one request and returns the one JSON line it is answered with.
fn request(path: &Path, req: &Request) -> Result<Value, ClientError> {
    let mut r = connect(path, req)?;
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
    if line.is_empty() {
        return Err(ClientError(format!("{}: closed without a reply", path.display())));
    }
    let v: Value = serde_json::from_str(&line).map_err(|e| ClientError(format!("bad reply: {e}")))?;
    match server_error(&v) {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

/// Subscribes to events and calls `each` with every event (and `{"lost":N}` notices) until the server
/// goes away or `each` returns false. `on_subscribed` runs once the server confirmed.
pub fn follow(
    path: &Path,
    req: &Request,
    mut on_subscribed: impl FnMut(),
    mut each: impl FnMut(&Value) -> bool,
) -> Result<(), ClientError> {
    let r = connect(path, req)?;
    for line in r.lines() {
        let line = line.map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| ClientError(format!("bad event line: {e}")))?;
        if let Some(e) = server_error(&v) {
            return Err(e);
        }
        if v.get("subscribed").is_some() {
            on_subscribed();
            continue;
        }
        if !each(&v) {
            break;
        }
    }
    Ok(())
}

/// The text a person sees for a reply to `cmd`.
pub fn render(cmd: Cmd, v: &Value) -> String {
    match cmd {
        Cmd::Flows => render_flows(v),
        Cmd::Pinholes => render_pinholes(v),
        Cmd::Stats => render_stats(v),
        Cmd::Events => render_event(v),
        Cmd::Mapping => render_mapping(v),
    }
}

/// `show mapping`: one fact a line, then the blocks.
fn render_mapping(v: &Value) -> String {
    let mut out = String::new();
    for k in ["allocation", "inside", "public", "in_pool", "deterministic", "reserved"] {
        if let Some(x) = v.get(k) {
            let x = match x {
                Value::Object(o) => {
                    o.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(" ")
                }
                Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
                x => s(x),
            };
            out.push_str(&format!("{k:<14}{x}\n"));
        }
    }
    match v.get("mappings") {
        Some(Value::Object(o)) => {
            let m = o.iter().map(|(k, v)| format!("{k}={}", s(v))).collect::<Vec<_>>().join(" ");
            out.push_str(&format!("{:<14}{m}\n", "mappings"));
        }
        Some(Value::Array(a)) => {
            for m in a {
                out.push_str(&format!("{:<14}{} {}\n", "mapping", s(&m["proto"]), s(&m["inside"])));
            }
        }
        _ => {}
    }
    let blocks: Vec<&Value> = match (v.get("blocks"), v.get("block")) {
        (Some(Value::Array(a)), _) => a.iter().collect(),
        (_, Some(b)) if !b.is_null() => vec![b],
        _ => Vec::new(),
    };
    for b in blocks {
        out.push_str(&format!(
            "{:<14}{}:{} owner={} mappings={} age_ms={} idle_ms={}\n",
            "block",
            s(&b["public"]),
            s(&b["ports"]),
            s(&b["owner"]),
            s(&b["mappings"]),
            s(&b["age_ms"]),
            s(&b["idle_ms"])
        ));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn secs(v: &Value) -> String {
    let ms = v.as_u64().unwrap_or(0);
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn signed(v: &Value) -> String {
    let n = v.as_i64().unwrap_or(0);
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

/// An aligned table printed in parts: columns are as wide as their widest cell so far (a later, wider
/// cell widens its column from there on), the last column is not padded.
struct Table {
    widths: Vec<usize>,
    header: &'static [&'static str],
    started: bool,
}

impl Table {
    fn new(header: &'static [&'static str]) -> Table {
        Table { widths: header.iter().map(|h| h.len()).collect(), header, started: false }
    }

    /// The lines of `rows` (after the header, the first time).
    fn lines(&mut self, rows: &[Vec<String>]) -> String {
        for r in rows {
            for (w, c) in self.widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = String>, w: &[usize]| {
            let cells: Vec<String> = cells.collect();
            let n = cells.len();
            for (i, c) in cells.into_iter().enumerate() {
                if i + 1 == n {
                    out.push_str(&c);
                } else {
                    let _ = write!(out, "{c:<width$}  ", width = w[i]);
                }
            }
            out.push('\n');
        };
        if !std::mem::replace(&mut self.started, true) {
            line(&mut out, &mut self.header.iter().map(|h| h.to_string()), &self.widths);
        }
        for r in rows {
            line(&mut out, &mut r.iter().cloned(), &self.widths);
        }
        out
    }
}

const FLOW_HEADER: &[&str] = &[
    "ID",
    "PROTO",
    "STATE",
    "ORIGIN",
    "INSIDE",
    "OUTSIDE",
    "REMOTE",
    "IDLE",
    "TTL",
    "PKTS o/r",
    "BYTES o/r",
    "ALG",
];

/// One `show flows` line's cells: like `conntrack -L`; an FTP control connection adds its ALG state and
/// the sequence deltas in force each way.
fn flow_cells(f: &Value) -> Vec<String> {
    let alg = match &f["alg"] {
        Value::Null => match f.get("control") {
            Some(c) => format!("ftp-data of #{c}"),
            None => String::new(),
        },
        a => {
            let ph: Vec<String> = a["pinholes"]
                .as_array()
                .map(|p| p.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default();
            format!(
                "ftp {} client={} seq-delta orig={} reply={} pinholes=[{}]",
                s(&a["state"]),
                s(&a["client"]),
                signed(&a["delta_orig"]),
                signed(&a["delta_reply"]),
                ph.join(",")
            )
        }
    };
    // With several workers (`--workers N`) every row names the one whose engine holds it.
    let alg = match f.get("worker") {
        Some(w) if alg.is_empty() => format!("worker={w}"),
        Some(w) => format!("{alg} worker={w}"),
        None => alg,
    };
    vec![
        format!("#{}", s(&f["id"])),
        s(&f["proto"]),
        s(&f["state"]),
        s(&f["origin"]),
        // A NAT64 flow shows its IPv6 endpoints (the stand-in and the IPv4 server are in the JSON).
        f["nat64"]["inside6"].as_str().map_or_else(|| s(&f["inside"]), str::to_string),
        s(&f["outside"]),
        f["nat64"]["remote6"].as_str().map_or_else(|| s(&f["remote"]), str::to_string),
        secs(&f["idle_ms"]),
        secs(&f["expires_in_ms"]),
        format!("{}/{}", s(&f["packets"]["orig"]), s(&f["packets"]["reply"])),
        format!("{}/{}", s(&f["bytes"]["orig"]), s(&f["bytes"]["reply"])),
        alg,
    ]
}

const PINHOLE_HEADER: &[&str] = &["EXPECTED PEER", "PUBLIC", "INSIDE", "FROM", "TIME LEFT", "CONTROL"];

/// One `show pinholes` line's cells: who may connect where, until when, on whose behalf.
fn pinhole_cells(p: &Value) -> Vec<String> {
    vec![
        s(&p["peer"]),
        s(&p["public"]),
        s(&p["inside"]),
        s(&p["kind"]),
        secs(&p["expires_in_ms"]),
        format!("#{}", s(&p["control"])),
    ]
}

/// A listing's table, how one entry becomes its cells, and what the entries are called.
type Listing = (Table, fn(&Value) -> Vec<String>, &'static str);

fn listing_table(cmd: Cmd) -> Listing {
    match cmd {
        Cmd::Pinholes => (Table::new(PINHOLE_HEADER), pinhole_cells, "pinhole(s)"),
        _ => (Table::new(FLOW_HEADER), flow_cells, "flow(s)"),
    }
}

/// `show flows` of a whole reply: the table and its count.
pub fn render_flows(v: &Value) -> String {
    render_listing(Cmd::Flows, v)
}

/// `show pinholes` of a whole reply.
pub fn render_pinholes(v: &Value) -> String {
    render_listing(Cmd::Pinholes, v)
}

fn render_listing(cmd: Cmd, v: &Value) -> String {
    let (mut t, cells, what) = listing_table(cmd);
    let empty = Vec::new();
    let list = v[list_key(cmd)].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = list.iter().map(cells).collect();
    let mut out = t.lines(&rows);
    let _ = writeln!(out, "{} {what}", rows.len());
    if let Some(c) = v.get("next_cursor") {
        let _ = writeln!(out, "more: --cursor {c}");
    }
    out
}

/// Prints a listing (flows or pinholes) to `out` as its pages arrive: one pretty JSON document
/// (`json`), the same bytes `serde_json` would print for the whole reply, or the table and its count.
/// With `req.limit`, one request: at most that many entries, and where to go on (`next_cursor`, or a
/// `more: --cursor N` line) when more may follow. A closed `out` (`| head`) ends it quietly.
pub fn show_listing(path: &Path, req: &Request, json: bool, out: &mut dyn Write) -> Result<(), ClientError> {
    if req.limit.is_some() {
        let v = request(path, req)?;
        let text = if json {
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        } else {
            render_listing(req.cmd, &v)
        };
        let _ = out.write_all(text.as_bytes());
        return Ok(());
    }
    let key = list_key(req.cmd);
    let (mut t, cells, what) = listing_table(req.cmd);
    let mut n = 0usize;
    let put = |out: &mut dyn Write, text: &str| out.write_all(text.as_bytes()).is_ok();
    if json && !put(out, &format!("{{\n  \"{key}\": [")) {
        return Ok(());
    }
    let mut open = true;
    pages(path, req, |rows| {
        let mut text = String::new();
        if json {
            for r in rows {
                text.push_str(if n == 0 { "\n" } else { ",\n" });
                n += 1;
                // Nested one level deeper than serde_json's own indentation of an element.
                for (i, l) in serde_json::to_string_pretty(r).unwrap_or_default().lines().enumerate() {
                    text.push_str(if i == 0 { "    " } else { "\n    " });
                    text.push_str(l);
                }
            }
        } else {
            n += rows.len();
            text = t.lines(&rows.iter().map(cells).collect::<Vec<_>>());
        }
        open = put(out, &text);
        open
    })?;
    if !open {
        return Ok(());
    }
    if json {
        put(out, if n == 0 { "]\n}\n" } else { "\n  ]\n}\n" });
    } else {
        if n == 0 {
            put(out, &t.lines(&[]));
        }
        put(out, &format!("{n} {what}\n"));
    }
    Ok(())
}

/// `show stats`: every counter, one per line, in name order.
pub fn render_stats(v: &Value) -> String {
    let Some(m) = v["stats"].as_object() else { return String::new() };
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for k in keys {
        let _ = writeln!(out, "{k:<width$}  {}", s(&m[k]));
    }
    out
}

fn hms(ts: &Value) -> String {
    let t = ts.as_f64().unwrap_or(0.0);
    let whole = t as u64;
    let ms = ((t - whole as f64) * 1000.0) as u64;
    format!("{:02}:{:02}:{:02}.{ms:03}", (whole / 3600) % 24, (whole / 60) % 60, whole % 60)
}

fn tuple(k: &Value) -> String {
    format!("{} -> {}", s(&k["src"]), s(&k["dst"]))
}

/// One event line, like `conntrack -E` (times are UTC).
pub fn render_event(v: &Value) -> String {
    if let Some(n) = v.get("lost") {
        return format!("[LOST] {n} event(s) not shown: this reader fell behind");
    }
    let body = match v["event"].as_str().unwrap_or("") {
        "flow_new" => format!(
            "[NEW] #{} {} {} | reply {} ({})",
            s(&v["id"]),
            s(&v["proto"]),
            tuple(&v["orig"]),
            tuple(&v["reply"]),
            s(&v["origin"])
        ),
        "flow_destroy" => format!(
            "[DESTROY] #{} {} {} | reply {} ({}) packets {}/{} bytes {}/{}",
            s(&v["id"]),
            s(&v["proto"]),
            tuple(&v["orig"]),
            tuple(&v["reply"]),
            s(&v["why"]),
            s(&v["packets"]["orig"]),
            s(&v["packets"]["reply"]),
            s(&v["bytes"]["orig"]),
            s(&v["bytes"]["reply"])
        ),
        "rewrite" => format!(
            "[REWRITE] #{} {} {} -> {} (delta {}) inside {} public port {}",
            s(&v["control"]),
            s(&v["kind"]),
            s(&v["old"]),
            s(&v["new"]),
            signed(&v["delta"]),
            s(&v["inside"]),
            s(&v["public_port"])
        ),
        "pinhole_create" => format!(
            "[PINHOLE] #{} public port {} -> {} for {} ({})",
            s(&v["control"]),
            s(&v["public_port"]),
            s(&v["inside"]),
            s(&v["peer"]),
            s(&v["kind"])
        ),
        "pinhole_use" => format!(
            "[PINHOLE-USED] #{} public port {} <- {} -> {}",
            s(&v["control"]),
            s(&v["public_port"]),
            s(&v["from"]),
            s(&v["inside"])
        ),
        "pinhole_expire" => format!(
            "[PINHOLE-EXPIRED] #{} public port {} -> {} unused",
            s(&v["control"]),
            s(&v["public_port"]),
            s(&v["inside"])
        ),
        "refusal" => format!("[REFUSED] #{} {}: {}", s(&v["control"]), s(&v["reason"]), s(&v["line"])),
        "nat64_flow" => format!(
            "[NAT64] #{} {} {} -> {} (stand-in {})",
            s(&v["id"]),
            s(&v["proto"]),
            s(&v["inside6"]),
            s(&v["remote6"]),
            s(&v["orig"]["src"])
        ),
        "nat" => {
            // The pool's and blocks' events: every field the record has, by name.
            let fields = ["proto", "inside", "public", "ports", "remote", "quota", "limit"];
            let said: Vec<String> = fields
                .iter()
                .filter(|k| v.get(**k).is_some())
                .map(|k| format!("{k} {}", s(&v[*k])))
                .collect();
            format!("[NAT] {} {}", s(&v["kind"]), said.join(" "))
        }
        other => format!("[{other}] {v}"),
    };
    format!("{} {body}", hms(&v["ts"]))
}

/// Prints a reply: pretty JSON (`--json`) or the table.
pub fn print(cmd: Cmd, v: &Value, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap_or_default())
    } else {
        out.write_all(render(cmd, v).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flows_table_shows_alg_and_deltas() {
        let v = json!({"flows": [{
            "id": 3, "proto": "tcp", "state": "ESTABLISHED", "origin": "outbound",
            "inside": "10.0.0.2:40000", "outside": "198.51.100.1:40000", "remote": "198.51.100.2:21",
            "idle_ms": 1200, "expires_in_ms": 7438800,
            "packets": {"orig": 12, "reply": 10}, "bytes": {"orig": 800, "reply": 1200},
            "alg": {"state": "clear", "client": "inside", "delta_orig": 2, "delta_reply": 0, "pinholes": [40001]}
        }, {
            "id": 4, "proto": "tcp", "state": "SYN_SENT", "origin": "pinhole", "control": 3,
            "inside": "10.0.0.2:40001", "outside": "198.51.100.1:40001", "remote": "198.51.100.2:20",
            "idle_ms": 0, "expires_in_ms": 240000, "packets": {"orig": 1, "reply": 0},
            "bytes": {"orig": 60, "reply": 0}, "alg": null
        }]});
        let t = render_flows(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  PROTO  STATE"), "{t}");
        assert!(
            lines[1].contains("10.0.0.2:40000") && lines[1].contains("1.2s") && lines[1].contains("12/10")
        );
        assert!(
            lines[1].ends_with("ftp clear client=inside seq-delta orig=+2 reply=0 pinholes=[40001]"),
            "{t}"
        );
        assert!(lines[2].ends_with("ftp-data of #3"), "{t}");
        assert_eq!(lines[3], "2 flow(s)");
        // Columns line up: every row's INSIDE starts where the header's does.
        let col = lines[0].find("INSIDE").unwrap();
        assert_eq!(&lines[1][col..col + 8], "10.0.0.2");
        // With several workers, each row names its worker.
        let mut v = v;
        v["flows"][1]["worker"] = json!(1);
        v["flows"][1]["control"] = json!((1 << 24) + 3);
        let t = render_flows(&v);
        assert!(t.lines().nth(2).unwrap().ends_with("ftp-data of #16777219 worker=1"), "{t}");
    }

    /// A NAT64 flow is listed with its IPv6 endpoints (its IPv4 forms stay in the JSON).
    #[test]
    fn nat64_flows_show_their_ipv6_endpoints() {
        let v = json!({"flows": [{
            "id": 5, "proto": "udp", "state": "REPLIED", "origin": "outbound",
            "inside": "240.0.0.1:40000", "outside": "198.51.100.1:40000", "remote": "198.51.100.2:53",
            "nat64": {"inside6": "[2001:db8:64::2]:40000", "remote6": "[64:ff9b:1::c633:6402]:53"},
            "idle_ms": 0, "expires_in_ms": 1000, "packets": {"orig": 1, "reply": 1},
            "bytes": {"orig": 60, "reply": 60}, "alg": null
        }]});
        let t = render_flows(&v);
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("[2001:db8:64::2]:40000") && row.contains("[64:ff9b:1::c633:6402]:53"), "{t}");
        assert!(!row.contains("240.0.0.1"), "{t}");
    }

    #[test]
    fn events_read_like_conntrack_e() {
        let v = json!({"event": "rewrite", "ts": 3723.5, "control": 3, "kind": "port",
            "old": "10,0,0,2,156,65", "new": "198,51,100,1,156,65", "delta": 4,
            "inside": "10.0.0.2:40001", "public_port": 40001});
        assert_eq!(
            render_event(&v),
            "01:02:03.500 [REWRITE] #3 port 10,0,0,2,156,65 -> 198,51,100,1,156,65 (delta +4) inside 10.0.0.2:40001 public port 40001"
        );
        assert!(render_event(&json!({"lost": 7})).starts_with("[LOST] 7"));
        let v = json!({"event": "nat64_flow", "ts": 3723.5, "id": 5, "proto": "udp",
            "orig": {"src": "240.0.0.1:40000", "dst": "198.51.100.2:53"},
            "inside6": "[2001:db8:64::2]:40000", "remote6": "[64:ff9b:1::c633:6402]:53"});
        assert_eq!(
            render_event(&v),
            "01:02:03.500 [NAT64] #5 udp [2001:db8:64::2]:40000 -> [64:ff9b:1::c633:6402]:53 (stand-in 240.0.0.1:40000)"
        );
    }

    #[test]
    fn stats_are_sorted_lines() {
        let t = render_stats(&json!({"stats": {"drops.no_mapping": 3, "flows.active": 1}}));
        assert_eq!(t, "drops.no_mapping  3\nflows.active      1\n");
    }
}
