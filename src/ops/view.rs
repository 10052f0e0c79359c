//! What a running engine looks like from outside: flows, pinholes, counters and events as JSON values,
//! and the filters that select them. This is the control socket's data model.
//!
//! Owns: the request type of the control protocol ([`Request`], [`Filter`]), and turning engine state
//! into the JSON documents the server sends ([`flows`], [`pinholes`], [`stats`], [`event`]). Must not:
//! do I/O, change the engine, or format for people (the client does, from the same JSON).
//!
//! Every value is read through the engine's public introspection (`table()`, `pinholes()`, `metrics()`);
//! times are relative to the `now` the caller passes, in milliseconds.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::conntrack::{Conn, Origin};
use crate::engine::Engine;
use crate::events::Event;
use crate::flow::{Dir, Endpoint, FlowKey, Proto};
use crate::time::Instant;

/// What a client asks for: one JSON object on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub cmd: Cmd,
    #[serde(default)]
    pub filter: Filter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmd {
    Flows,
    Pinholes,
    Stats,
    /// A stream of event lines until the client hangs up.
    Events,
}

/// Selects flows, pinholes and events: every given criterion must hold. `addr`/`port` match any
/// endpoint involved (inside, public or remote).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<ProtoName>,
}

/// A protocol name as given to `--proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtoName {
    Tcp,
    Udp,
    Icmp,
}

impl ProtoName {
    pub fn proto(self) -> Proto {
        match self {
            ProtoName::Tcp => Proto::Tcp,
            ProtoName::Udp => Proto::Udp,
            ProtoName::Icmp => Proto::Icmp,
        }
    }
}

impl Filter {
    /// True if a thing of protocol `proto` (None: not protocol-specific) involving `endpoints` passes.
    pub fn matches(&self, proto: Option<Proto>, endpoints: &[Endpoint]) -> bool {
        if let Some(p) = self.proto {
            if proto.is_some_and(|q| q != p.proto()) {
                return false;
            }
        }
        if let Some(a) = self.addr {
            if !endpoints.iter().any(|e| e.addr == a) {
                return false;
            }
        }
        if let Some(port) = self.port {
            // An ICMP "port" is the echo identifier: never matched by --port.
            if proto == Some(Proto::Icmp) || !endpoints.iter().any(|e| e.port == port) {
                return false;
            }
        }
        true
    }

    fn matches_keys(&self, keys: &[FlowKey]) -> bool {
        let eps: Vec<Endpoint> = keys.iter().flat_map(|k| [k.src, k.dst]).collect();
        self.matches(keys.first().map(|k| k.proto), &eps)
    }
}

fn ms(d: core::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The inside endpoint, the public endpoint and the remote endpoint of a connection.
pub fn roles(c: &Conn) -> (Endpoint, Endpoint, Endpoint) {
    let [o, r] = *c.keys();
    match c.origin() {
        Origin::Outbound => (o.src, r.dst, o.dst),
        Origin::Forward | Origin::Pinhole { .. } => (r.src, o.dst, o.src),
        // Both ends are inside: the client, its public mapping, and the forward's target.
        Origin::Hairpin => (o.src, r.dst, r.src),
    }
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Outbound => "outbound",
        Origin::Forward => "forward",
        Origin::Hairpin => "hairpin",
        Origin::Pinhole { .. } => "pinhole",
    }
}

fn key_json(k: &FlowKey) -> Value {
    json!({ "src": k.src.to_string(), "dst": k.dst.to_string() })
}

/// `show flows`: one object per connection that passes `filter`, in table order.
pub fn flows(engine: &Engine, now: Instant, filter: &Filter) -> Value {
    let mut out = Vec::new();
    for (id, c) in engine.table().iter() {
        if !filter.matches_keys(c.keys()) {
            continue;
        }
        let (inside, outside, remote) = roles(c);
        let state = match c.proto() {
            Proto::Tcp => c.tcp().name(),
            _ if c.replied() => "REPLIED",
            _ => "UNREPLIED",
        };
        let alg = c.ftp.as_ref().map(|s| {
            json!({
                "proto": "ftp",
                "state": s.state_name(),
                "client": if s.client_inside() { "inside" } else { "outside" },
                // The delta in force for new bytes each way: what seq numbers are shifted by.
                "delta_orig": s.streams[0].map.current_delta(),
                "delta_reply": s.streams[1].map.current_delta(),
                "edits_in_flight": s.streams[0].map.edits_in_flight() + s.streams[1].map.edits_in_flight(),
                // The session remembers what it announced; only what is still open is of interest.
                "pinholes": s
                    .pinholes()
                    .filter(|p| engine.pinholes().get(*p).is_some_and(|ph| ph.control == id))
                    .collect::<Vec<u16>>(),
            })
        });
        let mut o = json!({
            "id": id.0,
            "proto": c.proto().name(),
            "origin": origin_name(c.origin()),
            "state": state,
            "replied": c.replied(),
            "inside": inside.to_string(),
            "outside": outside.to_string(),
            "remote": remote.to_string(),
            "orig": key_json(&c.key(Dir::Original)),
            "reply": key_json(&c.key(Dir::Reply)),
            "age_ms": ms(now.saturating_since(c.created())),
            "idle_ms": ms(now.saturating_since(c.last_seen())),
            "expires_in_ms": ms(c.expires().saturating_since(now)),
            "packets": { "orig": c.packets()[0], "reply": c.packets()[1] },
            "bytes": { "orig": c.bytes()[0], "reply": c.bytes()[1] },
            "alg": alg,
        });
        if let Origin::Pinhole { control } = c.origin() {
            o["control"] = json!(control.0);
        }
        out.push(o);
    }
    json!({ "flows": out })
}

/// `show pinholes`: expected peer, public endpoint, inside endpoint, time left, owning control connection.
pub fn pinholes(engine: &Engine, now: Instant, filter: &Filter) -> Value {
    let public = engine.config().public_ip;
    let mut list: Vec<_> = engine
        .pinholes()
        .iter()
        .filter(|p| {
            let eps = [Endpoint::new(p.peer, 0), Endpoint::new(public, p.public_port), p.inside];
            // The peer's source port is not known yet (0 here): --port matches the public or inside port.
            filter.matches(Some(Proto::Tcp), &eps)
        })
        .collect();
    list.sort_by_key(|p| p.public_port);
    let list: Vec<Value> = list
        .into_iter()
        .map(|p| {
            json!({
                "public": Endpoint::new(public, p.public_port).to_string(),
                "public_port": p.public_port,
                "peer": p.peer.to_string(),
                "inside": p.inside.to_string(),
                "kind": p.kind,
                "control": p.control.0,
                "age_ms": ms(now.saturating_since(p.created)),
                "expires_in_ms": ms(p.expires.saturating_since(now)),
            })
        })
        .collect();
    json!({ "pinholes": list })
}

/// `show stats`: every engine counter (drop reasons included, zeros too) and the gauges, as one flat
/// object of dotted names, plus whatever the caller adds (device counters, uptime).
pub fn stats(engine: &Engine, extra: &[(String, u64)]) -> Value {
    let mut m = Map::new();
    m.insert("flows.active".into(), json!(engine.flow_count()));
    m.insert("flows.max".into(), json!(engine.table().capacity()));
    m.insert("pinholes.active".into(), json!(engine.pinholes().len()));
    m.insert("nat.mappings".into(), json!(engine.nat().mapping_count()));
    for p in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        m.insert(format!("nat.ports_in_use.{}", p.name()), json!(engine.nat().ports_in_use(p)));
    }
    m.insert("events.dropped".into(), json!(engine.events_dropped()));
    engine.metrics().for_each(|k, v| {
        m.insert(k.to_string(), json!(v));
    });
    for (k, v) in extra {
        m.insert(k.clone(), json!(v));
    }
    json!({ "stats": m })
}

/// One event line for `ftpnat events`, or `None` when `filter` rejects it. `ts` is seconds since the
/// Unix epoch, stamped by the caller when it took the event.
pub fn event(e: &Event, ts: f64, filter: &Filter) -> Option<Value> {
    let (proto, eps, mut v): (Option<Proto>, Vec<Endpoint>, Value) = match e {
        Event::FlowNew { id, orig, reply, origin } => (
            Some(orig.proto),
            vec![orig.src, orig.dst, reply.src, reply.dst],
            json!({ "id": id.0, "proto": orig.proto.name(), "origin": origin,
                    "orig": key_json(orig), "reply": key_json(reply) }),
        ),
        Event::FlowDestroy { id, orig, reply, why, packets, bytes } => (
            Some(orig.proto),
            vec![orig.src, orig.dst, reply.src, reply.dst],
            json!({ "id": id.0, "proto": orig.proto.name(), "why": why,
                    "orig": key_json(orig), "reply": key_json(reply),
                    "packets": { "orig": packets[0], "reply": packets[1] },
                    "bytes": { "orig": bytes[0], "reply": bytes[1] } }),
        ),
        Event::Rewrite { control, kind, old, new, delta, inside, public_port } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": control.0, "kind": kind, "old": old, "new": new, "delta": delta,
                    "inside": inside.to_string(), "public_port": public_port }),
        ),
        Event::PinholeCreate { control, public_port, peer, inside, kind } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(*peer, 0), Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": control.0, "public_port": public_port, "peer": peer.to_string(),
                    "inside": inside.to_string(), "kind": kind }),
        ),
        Event::PinholeUse { control, public_port, from, inside } => (
            Some(Proto::Tcp),
            vec![*inside, *from, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": control.0, "public_port": public_port, "from": from.to_string(),
                    "inside": inside.to_string() }),
        ),
        Event::PinholeExpire { control, public_port, inside } => (
            Some(Proto::Tcp),
            vec![*inside, Endpoint::new(Ipv4Addr::UNSPECIFIED, *public_port)],
            json!({ "control": control.0, "public_port": public_port, "inside": inside.to_string() }),
        ),
        Event::Refusal { control, reason, line } => {
            (Some(Proto::Tcp), vec![], json!({ "control": control.0, "reason": reason.name(), "line": line }))
        }
    };
    // A refusal names no endpoint of its own: it passes an address/port filter only if unfiltered.
    if !filter.matches(proto, &eps) {
        return None;
    }
    v["event"] = json!(e.kind());
    v["ts"] = json!((ts * 1000.0).round() / 1000.0);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ConnId;

    fn ep(a: [u8; 4], p: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(a), p)
    }

    #[test]
    fn filters_need_every_criterion() {
        let eps = [ep([10, 0, 0, 2], 40000), ep([198, 51, 100, 2], 21)];
        let f = |addr: Option<[u8; 4]>, port, proto| Filter { addr: addr.map(Ipv4Addr::from), port, proto };
        assert!(f(None, None, None).matches(Some(Proto::Tcp), &eps));
        assert!(f(Some([10, 0, 0, 2]), Some(21), Some(ProtoName::Tcp)).matches(Some(Proto::Tcp), &eps));
        assert!(!f(Some([10, 0, 0, 3]), None, None).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, Some(22), None).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, None, Some(ProtoName::Udp)).matches(Some(Proto::Tcp), &eps));
        assert!(!f(None, Some(21), None).matches(Some(Proto::Icmp), &eps), "--port never matches ICMP");
    }

    #[test]
    fn requests_parse_strictly() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"flows","filter":{"addr":"10.0.0.2","proto":"tcp"}}"#).unwrap();
        assert_eq!(r.cmd, Cmd::Flows);
        assert_eq!(r.filter.proto, Some(ProtoName::Tcp));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"flows","x":1}"#).is_err());
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn events_render_and_filter() {
        let e = Event::PinholeCreate {
            control: ConnId(4),
            public_port: 40001,
            peer: Ipv4Addr::new(198, 51, 100, 2),
            inside: ep([10, 0, 0, 2], 40001),
            kind: "port",
        };
        let v = event(&e, 1.23456, &Filter::default()).unwrap();
        assert_eq!(v["event"], "pinhole_create");
        assert_eq!(v["ts"], 1.235);
        assert_eq!(v["inside"], "10.0.0.2:40001");
        let other = Filter { addr: Some(Ipv4Addr::new(10, 0, 0, 9)), ..Filter::default() };
        assert!(event(&e, 0.0, &other).is_none());
        let udp = Filter { proto: Some(ProtoName::Udp), ..Filter::default() };
        assert!(event(&e, 0.0, &udp).is_none());
    }
}
