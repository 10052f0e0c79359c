//! The ALG boundary: what application-level gateways share.
//!
//! Owns: pinholes (expectations of one data connection, RFC 4787 speaks of them as ALG-created
//! mappings) — who may open them, where they lead, when they expire — and the context the generic
//! code gets to open one ([`AlgCtx`]). An ALG ([`ftp`]) is pure: it reads complete lines and returns
//! findings ([`finding`]: announcements, refusals, rewrites, state changes) through the [`finding::Alg`]
//! trait; [`apply`] decides on them (policy, pinhole, port, counters, logs, events) and asks the ALG to
//! format the replacement, the same way for every ALG; recording the splice is the stream layer's (`crate::stream`).
//! Must not: touch packet headers (the engine does) or decide filtering for established flows.

pub mod apply;
pub mod finding;
pub mod ftp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::{Config, FtpPolicy};
use crate::events::{Event, Events, RewriteKind};
use crate::flow::{ConnId, Endpoint, Proto, Side};
use crate::metrics::{DropReason, Metrics, RefusalReason};
use crate::nat::{self, Nat};
use crate::time::Instant;

/// A TCP connection being opened, as the ALGs see it when they decide whether to watch it.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    /// Where the client is (the side that opened the connection).
    pub client_side: Side,
    /// The client's and the server's own addresses (inside addresses for inside hosts).
    pub client: Ipv4Addr,
    pub server: Ipv4Addr,
    /// The port the server listens on (for a forward: the inside port).
    pub server_port: u16,
    /// Picked up mid-stream: what was said before is not known.
    pub pickup: bool,
    /// A NAT64 connection: its IPv6 end.
    pub v6: Option<V6Ends>,
}

/// The IPv6 side of a NAT64 connection (RFC 6146).
#[derive(Debug, Clone, Copy)]
pub enum V6Ends {
    /// An IPv6 inside client (IPv4 stand-in: [`Opening::client`]) reaching `server6`, the IPv4 server
    /// under the NAT64 prefix.
    Client { client6: Ipv6Addr, server6: Ipv6Addr },
    /// An IPv4 client (seen by the server as `client6`, under the prefix) reaching the IPv6 inside
    /// server `server6` through a forward.
    Server { client6: Ipv6Addr, server6: Ipv6Addr },
}

/// The state of the ALG that watches one connection. A second ALG is a second variant and a rule in
/// [`watch`]; the engine does not change (it handles every watched connection alike, through
/// `conntrack::AlgConn`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Watched {
    Ftp(ftp::FtpSession),
}

/// Which ALG, if any, watches a connection being opened: FTP on its configured ports (RFC 959's
/// control connection).
pub fn watch(config: &Config, o: &Opening) -> Option<Watched> {
    let policy = &config.ftp;
    if !policy.enabled || !policy.ports.contains(&o.server_port) {
        return None;
    }
    let s = ftp::FtpSession::new(o.client_side, o.client, o.server, policy.max_line);
    let s = match o.v6 {
        Some(V6Ends::Client { client6, server6 }) => s.nat64(client6, server6),
        Some(V6Ends::Server { client6, server6 }) => s.nat64_server(client6, server6),
        None => s,
    };
    Some(Watched::Ftp(if o.pickup { s.picked_up() } else { s }))
}

/// One expected inbound TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pinhole {
    pub public_port: u16,
    /// The pool address of the port: the control connection's public address (issue 16: servers
    /// refuse a data connection from another address than the control connection's).
    pub public_addr: Ipv4Addr,
    /// Only a SYN from this address (any source port) may use it.
    pub peer: Ipv4Addr,
    /// Where the connection is sent.
    pub inside: Endpoint,
    /// The control connection that announced it.
    pub control: ConnId,
    pub created: Instant,
    pub expires: Instant,
    /// What announced it (`port`, `eprt`, `227`, `229`), for logs and `show pinholes`.
    pub kind: RewriteKind,
}

/// All outstanding pinholes, keyed by public endpoint.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Pinholes {
    by_port: HashMap<Endpoint, Pinhole>,
    per_host: HashMap<Ipv4Addr, u32>,
    /// Expiry times of the pinholes, plus stale entries of pinholes used, removed or replaced since
    /// (skipped when they come up). Rebuilt from the live pinholes when stale entries outnumber them, so
    /// a client announcing in a loop cannot grow it past a small multiple of the live pinholes.
    timers: BinaryHeap<Reverse<(Instant, Endpoint)>>,
}

/// What an ALG may use while it handles a line.
pub struct AlgCtx<'a> {
    pub nat: &'a mut Nat,
    pub pinholes: &'a mut Pinholes,
    pub metrics: &'a mut Metrics,
    pub policy: &'a FtpPolicy,
    pub public_ip: Ipv4Addr,
    pub now: Instant,
    pub control: ConnId,
    /// For `ftpnat events` (a no-op unless the engine turned recording on).
    pub events: &'a mut Events,
}

impl Pinhole {
    /// Its public endpoint.
    pub fn public(&self) -> Endpoint {
        Endpoint::new(self.public_addr, self.public_port)
    }
}

impl Pinholes {
    pub fn len(&self) -> usize {
        self.by_port.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Pinhole> {
        self.by_port.values()
    }
    /// The pinhole on a public endpoint (pool address and port).
    pub fn get(&self, public: Endpoint) -> Option<&Pinhole> {
        self.by_port.get(&public)
    }

    /// Entries in the expiry queue, live and stale: at most `2 * len() + 64`.
    pub fn timers_queued(&self) -> usize {
        self.timers.len()
    }

    fn push_timer(&mut self, expires: Instant, public: Endpoint) {
        self.timers.push(Reverse((expires, public)));
        if self.timers.len() > 2 * self.by_port.len() + 64 {
            self.timers = self.by_port.values().map(|p| Reverse((p.expires, p.public()))).collect();
        }
    }

    /// Opens a pinhole to `inside` for a SYN from `peer`. The public port is the one the endpoint-
    /// independent mapping of `inside` already has, or a new one ranked by `prefer` (the ALG asks for
    /// ports whose decimal text keeps the line's length). The port is on the control connection's
    /// public address (`ctx.public_ip`) or the pinhole is refused: paired pooling puts every mapping
    /// of the inside host there, and this checks it.
    pub fn open(
        ctx: &mut AlgCtx<'_>,
        peer: Ipv4Addr,
        inside: Endpoint,
        kind: RewriteKind,
        prefer: &dyn Fn(u16) -> bool,
    ) -> Result<u16, RefusalReason> {
        let host_count = ctx.pinholes.per_host.get(&inside.addr).copied().unwrap_or(0);
        if host_count as usize >= ctx.policy.max_pinholes_per_host {
            return Err(RefusalReason::PinholeLimit);
        }
        let public = ctx.nat.acquire(Proto::Tcp, inside, Some(prefer), ctx.now).map_err(|e| match e {
            nat::Refused::Exhausted => RefusalReason::NoPort,
            // A pinhole's port is the announcing host's mapping: it counts against its share.
            nat::Refused::HostQuota => RefusalReason::HostPortQuota,
        })?;
        if public.addr() != ctx.public_ip {
            // The host's mappings are on another pool address than this control connection's (a
            // forward added by a reload for a host paired elsewhere): the server would refuse the
            // data connection, so none is announced.
            ctx.nat.release(Proto::Tcp, inside, ctx.now);
            return Err(RefusalReason::NoPort);
        }
        let port = public.port();
        let key = public.endpoint();
        if ctx.pinholes.by_port.contains_key(&key) {
            // The same inside endpoint announced twice: the newer announcement wins.
            ctx.pinholes.remove(ctx.nat, key, ctx.now);
            ctx.metrics.pinholes_replaced += 1;
        }
        let expires = ctx.now + ctx.policy.pinhole_timeout;
        let p = Pinhole {
            public_port: port,
            public_addr: public.addr(),
            peer,
            inside,
            control: ctx.control,
            created: ctx.now,
            expires,
            kind,
        };
        tracing::debug!(target: "ftpnat::pinhole", event = "create", control = %ctx.control, public_port = port,
            peer = %peer, inside = %inside, kind = kind.name(), "pinhole created");
        let control = ctx.control;
        ctx.events.push(|| Event::PinholeCreate { control, public_port: port, peer, inside, kind });
        ctx.pinholes.by_port.insert(key, p);
        *ctx.pinholes.per_host.entry(inside.addr).or_default() += 1;
        ctx.pinholes.push_timer(expires, key);
        ctx.metrics.pinholes_created += 1;
        Ok(port)
    }

    /// Checks an inbound TCP packet to `public_port` against the pinhole there. On success the pinhole
    /// is gone (one-shot) and its mapping reference passes to the caller's new connection.
    pub fn take(
        &mut self,
        public: Endpoint,
        src: Ipv4Addr,
        syn_only: bool,
    ) -> Option<Result<Pinhole, DropReason>> {
        let p = self.by_port.get(&public)?;
        if p.peer != src {
            return Some(Err(DropReason::Filtered));
        }
        if !syn_only {
            return Some(Err(DropReason::NotSyn));
        }
        let p = self.by_port.remove(&public)?;
        self.dec_host(p.inside.addr);
        Some(Ok(p))
    }

    /// Removes a pinhole and drops its mapping reference. Returns it if it existed.
    pub fn remove(&mut self, nat: &mut Nat, public: Endpoint, now: Instant) -> Option<Pinhole> {
        let p = self.by_port.remove(&public)?;
        self.dec_host(p.inside.addr);
        nat.release(Proto::Tcp, p.inside, now);
        Some(p)
    }

    fn dec_host(&mut self, addr: Ipv4Addr) {
        if let Some(n) = self.per_host.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&addr);
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Expires every pinhole whose time is up.
    pub fn expire(&mut self, now: Instant, nat: &mut Nat, metrics: &mut Metrics, events: &mut Events) {
        while let Some(&Reverse((t, public))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let port = public.port;
            // The timer may be stale: the pinhole was used, removed, or replaced by a later one.
            if self.by_port.get(&public).is_some_and(|p| p.expires <= now) {
                if let Some(p) = self.remove(nat, public, now) {
                    metrics.pinholes_expired += 1;
                    tracing::debug!(target: "ftpnat::pinhole", event = "expire", control = %p.control,
                        public_port = port, inside = %p.inside, "pinhole expired unused");
                    events.push(|| Event::PinholeExpire {
                        control: p.control,
                        public_port: port,
                        inside: p.inside,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use crate::stream::Edit;

    fn config() -> Config {
        Config::new(vec!["10.0.0.0/24".parse().expect("prefix")], Ipv4Addr::new(192, 0, 2, 1))
    }

    fn opening(server_port: u16) -> Opening {
        Opening {
            client_side: Side::Inside,
            client: Ipv4Addr::new(10, 0, 0, 2),
            server: Ipv4Addr::new(198, 51, 100, 7),
            server_port,
            pickup: false,
            v6: None,
        }
    }

    #[test]
    fn only_the_configured_ftp_ports_are_watched_and_only_while_the_alg_is_on() {
        let mut c = config();
        assert!(watch(&c, &opening(21)).is_some());
        assert!(watch(&c, &opening(80)).is_none(), "HTTP is nobody's to rewrite");
        c.ftp.ports = vec![2121];
        assert!(watch(&c, &opening(21)).is_none());
        assert!(watch(&c, &opening(2121)).is_some());
        c.ftp.enabled = false;
        assert!(watch(&c, &opening(2121)).is_none());
    }

    #[test]
    fn the_side_of_the_client_and_the_ipv6_end_choose_what_may_be_rewritten() {
        let c = config();
        let Some(Watched::Ftp(s)) = watch(&c, &opening(21)) else { panic!("watched") };
        // Only LAN→WAN lines: an inside client's commands.
        assert_eq!(s.edits(), [Edit::Rewrite, Edit::Observe]);
        let o = Opening { client_side: Side::Outside, ..opening(21) };
        let Some(Watched::Ftp(s)) = watch(&c, &o) else { panic!("watched") };
        assert_eq!(s.edits(), [Edit::Observe, Edit::Rewrite]);
        let v6 = V6Ends::Server {
            client6: "64:ff9b::c000:201".parse().unwrap(),
            server6: "2001:db8::10".parse().unwrap(),
        };
        let Some(Watched::Ftp(s)) = watch(&c, &Opening { v6: Some(v6), ..o }) else { panic!("watched") };
        // RFC 6384 rewrites both ways.
        assert!(s.is_nat64());
        assert_eq!(s.edits(), [Edit::Rewrite, Edit::Rewrite]);
    }
}
