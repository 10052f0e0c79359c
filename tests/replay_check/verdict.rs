//! The verdict (part of the replay checker, see `mod.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::*;

/// Outcome of checking one replay.
#[derive(Debug, Default)]
pub struct Report {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub data_conns_checked: usize,
    pub rewrites_seen: usize,
}

impl Report {
    fn fail(&mut self, s: String) {
        if self.failures.len() < 40 {
            self.failures.push(s);
        } else if self.failures.len() == 40 {
            self.failures.push("... (more failures)".into());
        }
    }
}

/// Flattens the summary JSON into dotted keys.
pub fn flatten(v: &serde_json::Value) -> HashMap<String, u64> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut HashMap<String, u64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::Number(n) => {
                out.insert(prefix.to_string(), n.as_u64().expect("summary values are non-negative integers"));
            }
            other => panic!("summary key {prefix}: not an integer or object: {other}"),
        }
    }
    let mut out = HashMap::new();
    walk("", v, &mut out);
    out
}

/// Checks properties 1–6 for one replay: `input` replayed with `setup` gave `lan_out`/`wan_out` and
/// `summary` (flattened).
pub fn check(
    setup: &Setup,
    input: &Capture,
    lan_out: &[Pkt],
    wan_out: &[Pkt],
    summary: &HashMap<String, u64>,
) -> Report {
    let mut r = Report::default();
    let model = Model::build(setup, &input.pkts);
    r.notes.extend(model.notes.iter().cloned());
    let public = IpAddr::V4(setup.public_ip);
    let drops_total: u64 = summary.iter().filter(|(k, _)| k.starts_with("drops.")).map(|(_, v)| v).sum();

    // Property 1: every output packet's checksums.
    for p in lan_out.iter().chain(wan_out) {
        for e in checksum_errors(p) {
            r.fail(format!("P1 {e}"));
        }
    }

    // Property 2 (headers): no inside address on the WAN side.
    for p in wan_out {
        if (setup.is_inside(p.src) || setup.is_inside(p.dst)) && !p.v6 {
            r.fail(format!("P2 WAN packet carries an inside address: {}", p.describe()));
        }
        if !p.v6 && p.src != public {
            r.fail(format!("P2 WAN packet not from the public address: {}", p.describe()));
        }
    }

    // IPv6: routed with hop limit - 1, nothing else changed (and the input checksums repaired).
    let v6_in: Vec<&Pkt> = input.pkts.iter().filter(|p| p.v6).collect();
    for (side_out, from_lan) in [(lan_out, false), (wan_out, true)] {
        let want: Vec<&Pkt> =
            v6_in.iter().copied().filter(|p| setup.is_inside(p.src) == from_lan && p.ttl > 1).collect();
        let got: Vec<&Pkt> = side_out.iter().filter(|p| p.v6).collect();
        if want.len() != got.len() {
            r.fail(format!(
                "IPv6: {} packets expected on the {} output, {} found",
                want.len(),
                if from_lan { "WAN" } else { "LAN" },
                got.len()
            ));
        }
        for (w, g) in want.iter().zip(&got) {
            if normalise(w, false) != normalise(g, false) || g.ttl + 1 != w.ttl {
                r.fail(format!("IPv6 packet changed beyond the hop limit: {}", w.describe()));
            }
        }
    }

    // Property 3 and 6: LAN output = recorded WAN-originated IPv4 packets minus drops, in order.
    let wan_in: Vec<(usize, &Pkt)> =
        input.pkts.iter().enumerate().filter(|(_, p)| !p.v6 && !setup.is_inside(p.src)).collect();
    let lan_v4: Vec<&Pkt> = lan_out.iter().filter(|p| !p.v6).collect();
    let mut j = 0;
    let mut missing = 0u64;
    for (i, p) in &wan_in {
        let n = normalise(p, false);
        let matched = j < lan_v4.len() && normalise(lan_v4[j], false) == n;
        if matched {
            if lan_v4[j].ttl + 1 != p.ttl {
                r.fail(format!("P3 TTL not decremented by one: {}", p.describe()));
            }
            j += 1;
        } else {
            missing += 1;
        }
        match (&model.expect[*i], matched) {
            (Expect::Pass, false) => {
                r.fail(format!("P3 recorded WAN packet missing from the LAN output: {}", p.describe()))
            }
            (Expect::Drop(why), true) => {
                r.fail(format!("P6 WAN packet reached the LAN ({why}): {}", p.describe()))
            }
            _ => {}
        }
    }
    if j < lan_v4.len() {
        r.fail(format!(
            "P3 LAN output has {} packet(s) the recording's WAN side does not, first: {}",
            lan_v4.len() - j,
            lan_v4[j].describe()
        ));
    }
    if missing > drops_total {
        r.fail(format!(
            "P3 {missing} WAN packets missing from the LAN output but only {drops_total} drops counted"
        ));
    }

    // LAN-originated IPv4 packets outside control connections, packet by packet (NAT changes only the
    // source address and port).
    let is_control = |p: &Pkt| {
        let f = p.key();
        model.controls.contains(&f) || model.controls.contains(&f.rev())
    };
    let lan_in: Vec<(usize, &Pkt)> = input
        .pkts
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.v6 && setup.is_inside(p.src) && !is_control(p))
        .collect();
    let wan_v4: Vec<&Pkt> = wan_out.iter().filter(|p| !p.v6 && !is_control_out(p, &model, setup)).collect();
    let mut j = 0;
    for (i, p) in &lan_in {
        let n = normalise(p, true);
        let matched = j < wan_v4.len() && normalise(wan_v4[j], true) == n;
        if matched {
            j += 1;
        }
        match (&model.expect[*i], matched) {
            (Expect::Pass, false) => {
                r.fail(format!("P4 recorded LAN packet missing from the WAN output: {}", p.describe()))
            }
            (Expect::Drop(why), true) => {
                r.fail(format!("P6 LAN packet left for the WAN ({why}): {}", p.describe()))
            }
            _ => {}
        }
    }
    if j < wan_v4.len() {
        r.fail(format!(
            "P4 WAN output has {} packet(s) outside control connections the recording's LAN side does not, first: {}",
            wan_v4.len() - j,
            wan_v4[j].describe()
        ));
    }

    // Property 4 (and 2 for lines): each control connection's LAN→WAN stream.
    check_control_streams(setup, input, wan_out, &model, summary, &mut r);

    // Property 5: data connections of rewritten announcements cross the gateway.
    for a in &model.announcements {
        let Judgement::Rewrite { inside, peer } = a.judgement else { continue };
        if a.refused_by_server {
            continue;
        }
        // The data connection: the first SYN from the peer to the announced endpoint after the line.
        let syn = input.pkts.iter().find(|p| {
            p.ts >= a.ts
                && p.ts <= a.ts + PINHOLE_TIMEOUT_US
                && p.src4() == Some(peer)
                && p.dst4() == Some(inside.0)
                && p.dport == inside.1
                && p.tcp.as_ref().is_some_and(|t| t.syn && !t.ackf)
        });
        let Some(syn) = syn else { continue };
        r.data_conns_checked += 1;
        let f = syn.key();
        let syn_seq = syn.tcp.as_ref().unwrap().seq;
        let syn_out =
            lan_out.iter().any(|p| p.key() == f && p.tcp.as_ref().is_some_and(|t| t.syn && t.seq == syn_seq));
        let back =
            wan_out.iter().any(|p| p.dst == f.src.0 && p.dport == f.src.1 && p.src == public && p.proto == 6);
        if !syn_out || !back {
            r.fail(format!(
                "P5 data connection {} -> {}:{} (announced at {}s) did not cross: SYN on LAN {syn_out}, answer on WAN {back}",
                f.src.0,
                inside.0,
                inside.1,
                a.ts / 1_000_000
            ));
        }
    }
    r
}

/// Whether a WAN output packet belongs to a control connection (its destination is a control
/// connection's outside end with the same port).
pub(super) fn is_control_out(p: &Pkt, model: &Model, setup: &Setup) -> bool {
    model.controls.iter().any(|c| {
        let lan = if setup.is_inside(c.src.0) { *c } else { c.rev() };
        p.proto == 6 && p.dst == lan.dst.0 && p.dport == lan.dst.1
    })
}

pub(super) fn check_control_streams(
    setup: &Setup,
    input: &Capture,
    wan_out: &[Pkt],
    model: &Model,
    summary: &HashMap<String, u64>,
    r: &mut Report,
) {
    let alg_drops = summary.get("drops.alg_out_of_order").copied().unwrap_or(0)
        + summary.get("drops.alg_stale").copied().unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    for c in &model.controls {
        let lan = if setup.is_inside(c.src.0) { *c } else { c.rev() };
        if !seen.insert(lan) {
            continue;
        }
        let all: Vec<&Pkt> = input.pkts.iter().filter(|p| p.key() == lan).collect();
        for rec in instances(&all) {
            check_control_instance(setup, input, wan_out, model, alg_drops, lan, &rec, r);
        }
    }
}

/// Splits one direction's packets into connections: a SYN with a new sequence number starts one.
pub(super) fn instances<'a>(pkts: &[&'a Pkt]) -> Vec<Vec<&'a Pkt>> {
    let mut out: Vec<Vec<&Pkt>> = Vec::new();
    let mut syn: Option<u32> = None;
    for p in pkts {
        let t = p.tcp.as_ref();
        let is_syn = t.is_some_and(|t| t.syn);
        let seq = t.map_or(0, |t| t.seq);
        if out.is_empty()
            || (is_syn && syn.is_some_and(|s| s != seq))
            || (is_syn && syn.is_none() && out.last().is_some_and(|v| !v.is_empty()))
        {
            out.push(Vec::new());
        }
        if is_syn {
            syn = Some(seq);
        }
        out.last_mut().expect("pushed").push(*p);
    }
    out
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_control_instance(
    setup: &Setup,
    input: &Capture,
    wan_out: &[Pkt],
    model: &Model,
    alg_drops: u64,
    lan: Flow,
    rec: &[&Pkt],
    r: &mut Report,
) {
    let Some(isn) = isn_of(rec) else { return };
    let recorded = reassemble(rec, isn);
    let (t0, t1) = (rec.first().unwrap().ts, rec.last().unwrap().ts + 10_000_000);
    // The gateway's side of this connection: to the same outside endpoint, in the same time span,
    // from the public port whose packets carry the most of this connection's input timestamps.
    let times: std::collections::HashSet<u64> = rec.iter().map(|p| p.ts).collect();
    let cands: Vec<&Pkt> = wan_out
        .iter()
        .filter(|p| p.proto == 6 && p.dst == lan.dst.0 && p.dport == lan.dst.1 && p.ts >= t0 && p.ts <= t1)
        .collect();
    let mut score: HashMap<u16, usize> = HashMap::new();
    for p in &cands {
        *score.entry(p.sport).or_default() += usize::from(times.contains(&p.ts));
    }
    let best = score.iter().max_by_key(|(port, n)| (**n, u16::MAX - **port)).map(|(p, _)| *p);
    let out: Vec<&Pkt> = cands.into_iter().filter(|p| Some(p.sport) == best).collect();
    if out.is_empty() {
        let pass = rec.iter().any(|p| {
            let i = input.pkts.iter().position(|q| std::ptr::eq(q, *p)).unwrap();
            model.expect[i] == Expect::Pass
        });
        if pass {
            r.fail(format!("P4 control connection {:?} has no WAN output", lan));
        }
        return;
    }
    let emitted = reassemble(&out, isn);
    let framed = model.framed.get(&(lan, isn)).cloned().unwrap_or_default();
    let must = |k: usize| framed.iter().any(|f| f.contains(&k));
    let mut anns: Vec<&Announcement> =
        model.announcements.iter().filter(|a| a.flow == lan && a.isn == isn).collect();
    anns.sort_by_key(|a| a.at);
    // Walk the recorded stream and the emitted one together. Bytes outside announcement lines keep
    // their value; an announcement line may change its length, which shifts everything after it
    // (`delta`). `literal` maps output offsets of unchanged stretches back to recorded offsets (for P2).
    // A recorded byte the model framed in order must be emitted (a gap does not stall the stream); a
    // byte the recording lacks can never be emitted.
    let mut literal: Vec<(usize, usize, usize)> = Vec::new();
    let mut delta: i64 = 0;
    let mut pos = 0usize;
    let mut stalled = 0usize;
    let mut failed = false;
    let rec_len = recorded.data.len();
    let plain = |from: usize,
                 to: usize,
                 delta: i64,
                 r: &mut Report,
                 stalled: &mut usize,
                 failed: &mut bool| {
        for k in from..to {
            let Some(e) = usize::try_from(k as i64 + delta).ok() else { continue };
            let have_rec = recorded.have.get(k).copied().unwrap_or(false);
            let have_out = emitted.have.get(e).copied().unwrap_or(false);
            if have_out && !have_rec {
                if !*failed {
                    r.fail(format!("P4 control stream {lan:?}: byte {e} emitted where the recording has none (offset {k})"));
                }
                *failed = true;
            } else if have_out && emitted.data[e] != recorded.data[k] {
                if !*failed {
                    r.fail(format!("P4 control stream {lan:?} differs at recorded offset {k}"));
                }
                *failed = true;
            } else if !have_out && have_rec && must(k) {
                *stalled += 1;
            }
        }
    };
    for a in &anns {
        if a.at < pos || a.at > rec_len {
            continue;
        }
        plain(pos, a.at, delta, r, &mut stalled, &mut failed);
        literal.push(((pos as i64 + delta) as usize, pos, a.at - pos));
        let o = (a.at as i64 + delta) as usize;
        let rec_line = &a.line;
        pos = a.at + rec_line.len();
        // The line as it left: contiguous emitted bytes from its start to its line end.
        let mut end = o;
        while emitted.have.get(end).copied().unwrap_or(false) && emitted.data[end] != b'\n' {
            end += 1;
        }
        if !emitted.have.get(end).copied().unwrap_or(false) {
            if (a.at..pos).any(&must) {
                stalled += 1;
            }
            // Not emitted (whole): its length in the output is unknown; assume unchanged.
            continue;
        }
        let out_line = &emitted.data[o..=end];
        let identical = out_line == rec_line.as_slice();
        // A 229 keeps its text when the gateway kept the port: a rewrite may be byte-identical.
        let rewritten = {
            let pre = &rec_line[..a.span.start];
            let post = &rec_line[a.span.end..];
            out_line.len() >= pre.len() + post.len()
                && out_line.starts_with(pre)
                && out_line.ends_with(post)
                && read_rewritten(a.kind, &out_line[pre.len()..out_line.len() - post.len()])
                    .is_some_and(|(addr, port)| addr.is_none_or(|x| x == setup.public_ip) && port != 0)
        };
        let shown = String::from_utf8_lossy(body(rec_line)).to_string();
        let got_shown = String::from_utf8_lossy(body(out_line)).to_string();
        match &a.judgement {
            Judgement::Rewrite { .. } if !rewritten => r.fail(format!(
                "P4 line '{shown}' must be rewritten to the public address; WAN shows '{got_shown}'"
            )),
            Judgement::Refuse(why) if !identical => r.fail(format!(
                "P4 line '{shown}' must be left byte-identical ({why}); WAN shows '{got_shown}'"
            )),
            Judgement::Either(_) if !identical && !rewritten => {
                r.fail(format!("P4 line '{shown}' changed into something that is no rewrite: '{got_shown}'"))
            }
            _ => {}
        }
        if rewritten {
            r.rewrites_seen += 1;
        }
        delta += out_line.len() as i64 - rec_line.len() as i64;
    }
    plain(pos, rec_len, delta, r, &mut stalled, &mut failed);
    literal.push(((pos as i64 + delta).max(0) as usize, pos, rec_len.saturating_sub(pos)));
    let beyond = (rec_len as i64 + delta).max(0) as usize;
    if emitted.have.iter().skip(beyond).any(|&h| h) {
        r.fail(format!("P4 control stream {lan:?}: bytes emitted past the recorded stream's end"));
    }
    if stalled > 0 {
        if alg_drops == 0 {
            r.fail(format!(
                "P4 control stream {lan:?}: {stalled} recorded bytes framed in order never reached the WAN side"
            ));
        } else {
            r.notes
                .push(format!("control stream {lan:?}: {stalled} framed bytes missing (ALG drops counted)"));
        }
    }
    let gaps = recorded.runs().len().saturating_sub(1);
    if gaps > 0 {
        r.notes.push(format!(
            "control stream {lan:?}: {gaps} gap(s) in the recording, emission resumed after each"
        ));
    }
    // Property 2 for lines of this stream: any announcement with an inside address must be a line the
    // model judged refusable, or bytes it found opaque (TLS records, a stream that is not FTP).
    let opaque = model.opaque.get(&(lan, isn)).cloned().unwrap_or_default();
    for run in emitted.runs() {
        let mut at = run.start;
        for line in emitted.data[run.clone()].split(|&b| b == b'\n') {
            let start = at;
            at += line.len() + 1;
            let rec_at = literal
                .iter()
                .find(|(o, _, n)| start >= *o && start < o + n)
                .map(|(o, i, _)| i + (start - o));
            if rec_at.is_some_and(|x| opaque.iter().any(|r| r.contains(&x))) {
                continue;
            }
            if let Some(a) = inside_announcement(setup, line) {
                let ok = anns.iter().any(|x| {
                    body(&x.line) == body(line)
                        && matches!(x.judgement, Judgement::Refuse(_) | Judgement::Either(_))
                });
                if !ok {
                    r.fail(format!(
                        "P2 WAN control stream carries inside address {a} in '{}'",
                        String::from_utf8_lossy(body(line))
                    ));
                }
            }
        }
    }
}

pub(super) fn same(a: &[u8], b: Option<&[u8]>) -> bool {
    b == Some(a)
}

/// An inside address named by a PORT/EPRT/227 line, if any.
pub(super) fn inside_announcement(setup: &Setup, line: &[u8]) -> Option<Ipv4Addr> {
    let b = body(line);
    let verb = verb_of(b);
    let addr = if verb == "PORT" {
        let (nums, _) = numbers(b, 5.min(b.len()));
        six(&nums).map(|x| x.0)
    } else if verb == "EPRT" {
        let s = String::from_utf8_lossy(b.get(5..)?).to_string();
        let d = s.chars().next()?;
        let f: Vec<&str> = s.split(d).collect();
        f.get(2).and_then(|a| a.parse().ok())
    } else if b.starts_with(b"227 ") {
        let p = b[4..].iter().position(u8::is_ascii_digit)? + 4;
        six(&numbers(b, p).0).map(|x| x.0)
    } else {
        None
    }?;
    setup.is_inside(IpAddr::V4(addr)).then_some(addr)
}

/// tshark's expert analysis of a capture with checksum validation on: the lines that report a
/// malformed packet or a bad checksum. `None` when tshark is not installed.
pub fn tshark_problems(path: &Path) -> Option<Vec<String>> {
    std::process::Command::new("tshark").arg("--version").output().ok()?;
    let o = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .args(["-z", "expert,warn", "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let mut bad: Vec<String> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("malformed")
                || l.contains("bad checksum")
                || l.contains("checksum_bad")
                || l.contains("incorrect")
        })
        .map(String::from)
        .collect();
    if !o.status.success() {
        bad.push(format!("tshark failed: {text}"));
    }
    Some(bad)
}
