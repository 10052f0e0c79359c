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
use std::net::Ipv4Addr;

use crate::config::FtpPolicy;
use crate::events::{Event, Events, RewriteKind};
use crate::flow::{ConnId, Endpoint, Proto};
use crate::metrics::{DropReason, Metrics, RefusalReason};
use crate::nat::{self, Nat};
use crate::time::Instant;

/// One expected inbound TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Default)]
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
