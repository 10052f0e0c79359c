//! Admission of new flows: which first packet may open a connection, and with which mapping.
//!
//! Owns: creating a connection for a packet no connection claims ([`Engine::create`]): outbound
//! flows, port forwards, pinholes opened by the ALG, hairpinning, TCP pickup of established flows,
//! the refused-flow memory, per-host and table limits ([`Engine::admit`]), acquiring the public
//! endpoint from the NAT ([`Engine::acquire`]). Must not: translate or forward the packet (dispatch in
//! `mod.rs` does) or decide anything about FTP (the ALG hook does).

use std::net::Ipv4Addr;

use super::{Engine, Head, Verdict};

use crate::alg::{self, Opening};
use crate::conntrack::AlgConn;
use crate::conntrack::{Conn, Full, Origin};
use crate::events::{DestroyReason, Event};
use crate::flow::{ConnId, Dir, Endpoint, FlowKey, Proto, Side};
use crate::metrics::DropReason;
use crate::nat::{self};

/// Closed connections a new one may give up before it is refused (each frees a port unless it shared
/// its mapping with another connection): a bound on one packet's work.
const RECLAIM_TRIES: usize = 8;

impl Engine {
    /// A packet with no connection: a new outbound flow, a forward, a pinhole, or a drop.
    pub(super) fn create(&mut self, from: Side, head: &Head) -> Result<(ConnId, Dir), Verdict> {
        let key = head.key;
        let proto = key.proto;
        let f = head.flags();
        let now = self.now;
        if !head.first_fragment {
            return Err(Verdict::Drop(DropReason::FragmentNoState));
        }
        let mut pickup = false;
        if proto == Proto::Tcp {
            let opening = f.syn && !f.ack;
            if from == Side::Inside {
                if opening {
                    // The inside host opens a connection of its own: not an answer to a refused one.
                    self.refused.forget(key.dst, key.src.port);
                } else if self.refused.answered(key.dst, key.src.port, now) {
                    // Refused means refused: the inside host answering an inbound opening the gateway
                    // dropped (a recording, a second path) opens nothing, not even by mid-stream pickup.
                    return Err(Verdict::Drop(DropReason::RefusedFlow));
                }
            }
            if f.rst {
                return Err(Verdict::Drop(DropReason::NoMapping));
            }
            if !opening {
                if from == Side::Outside {
                    if !f.syn && self.forward(proto, key.dst).is_some() {
                        // Like Linux conntrack, pick up from either side: a forwarded connection in
                        // progress when the gateway (re)started survives, whichever end speaks first.
                        pickup = true;
                    } else {
                        // An inbound non-SYN may be a late packet of a closed flow, or a scan.
                        return Err(Verdict::Drop(
                            if self.pinholes.get(key.dst).is_some() || self.forward(proto, key.dst).is_some()
                            {
                                DropReason::NotSyn
                            } else {
                                DropReason::NoMapping
                            },
                        ));
                    }
                } else if f.syn {
                    // A SYN-ACK answers a SYN this gateway never passed (or refused): picking it up would
                    // open a mapping for a connection nobody asked for through us. Linux conntrack also
                    // treats a SYN-ACK without a connection as invalid.
                    return Err(Verdict::Drop(DropReason::NotSyn));
                } else {
                    // RFC 5382 leaves this open; like Linux conntrack, accept TCP picked up mid-stream
                    // from the inside so connections survive a gateway restart.
                    pickup = true;
                }
            }
        }
        if proto == Proto::Icmp && !head.icmp_request {
            return Err(Verdict::Drop(DropReason::NoMapping));
        }
        let conn = match from {
            Side::Inside if self.nat.is_public(key.dst.addr) => {
                // RFC 4787 REQ-9 / RFC 5382 REQ-8: hairpinning to a port forward.
                let fwd = self.forward(proto, key.dst).ok_or(Verdict::Drop(DropReason::NoMapping))?;
                self.admit(Some(key.src.addr))?;
                let mapped = self.acquire(proto, key.src)?;
                let target = Endpoint::new(fwd.inside_addr, fwd.inside_port);
                let reply = FlowKey::new(proto, target, mapped);
                Conn::new(key, reply, Origin::Hairpin, now)
            }
            Side::Inside if pickup && self.forward_target(proto, key.src).is_some() => {
                // A forwarded inside server's connection picked up mid-stream from the server's side:
                // it was opened from outside through the forward, so it keeps the forward's public port
                // and (for an FTP server) its ALG.
                let fwd = self.forward_target(proto, key.src).expect("checked");
                self.admit(Some(fwd.inside_addr))?;
                let at = self.config.forward_addr(&fwd);
                let orig = FlowKey::new(proto, key.dst, Endpoint::new(at, fwd.public_port));
                let mut c = Conn::new(orig, key, Origin::Forward, now);
                c.alg = self.watch(
                    proto,
                    &Opening {
                        client_side: Side::Outside,
                        client: key.dst.addr,
                        server: fwd.inside_addr,
                        server_port: fwd.inside_port,
                        pickup: true,
                        v6: self.v6_server_end(&fwd, key.dst.addr),
                    },
                );
                return self.insert(c, pickup).map(|(id, _)| (id, Dir::Reply));
            }
            Side::Inside => {
                self.admit(Some(key.src.addr))?;
                let mapped = self.acquire(proto, key.src)?;
                // ICMP echo: the reply carries the mapped identifier in both "ports" of its key.
                let remote =
                    if proto == Proto::Icmp { Endpoint::new(key.dst.addr, mapped.port) } else { key.dst };
                let reply = FlowKey::new(proto, remote, mapped);
                let mut c = Conn::new(key, reply, Origin::Outbound, now);
                c.alg = self.watch(
                    proto,
                    &Opening {
                        client_side: Side::Inside,
                        client: key.src.addr,
                        server: key.dst.addr,
                        server_port: key.dst.port,
                        pickup,
                        v6: self.v6_client_end(key.src.addr, key.dst.addr),
                    },
                );
                c
            }
            Side::Outside => {
                let syn = f.syn && !f.ack;
                if proto == Proto::Tcp {
                    if let Some(taken) = self.pinholes.take(key.dst, key.src.addr, syn) {
                        let ph = taken.map_err(Verdict::Drop)?;
                        if let Err(v) = self.admit(Some(ph.inside.addr)) {
                            self.nat.release(Proto::Tcp, ph.inside, now);
                            return Err(v);
                        }
                        self.metrics.pinholes_used += 1;
                        tracing::debug!(target: "ftpnat::pinhole", event = "use", control = %ph.control,
                            public_port = ph.public_port, from = %key.src, inside = %ph.inside, "pinhole used");
                        self.events.push(|| Event::PinholeUse {
                            control: ph.control,
                            public_port: ph.public_port,
                            from: key.src,
                            inside: ph.inside,
                        });
                        let reply = FlowKey::new(proto, ph.inside, key.src);
                        let c = Conn::new(key, reply, Origin::Pinhole { control: ph.control }, now);
                        return self.insert(c, pickup);
                    }
                }
                let Some(fwd) = self.forward(proto, key.dst) else {
                    let mapped = self.nat.lookup_public(proto, key.dst).is_some();
                    // RFC 4787 REQ-8: address-and-port-dependent filtering by default.
                    return Err(Verdict::Drop(if mapped {
                        DropReason::Filtered
                    } else {
                        DropReason::NoMapping
                    }));
                };
                self.admit(Some(fwd.inside_addr))?;
                let target = Endpoint::new(fwd.inside_addr, fwd.inside_port);
                let reply = FlowKey::new(proto, target, key.src);
                let mut c = Conn::new(key, reply, Origin::Forward, now);
                c.alg = self.watch(
                    proto,
                    &Opening {
                        client_side: Side::Outside,
                        client: key.src.addr,
                        server: fwd.inside_addr,
                        server_port: fwd.inside_port,
                        pickup,
                        v6: self.v6_server_end(&fwd, key.src.addr),
                    },
                );
                c
            }
        };
        self.insert(conn, pickup)
    }

    pub(super) fn insert(&mut self, mut conn: Conn, pickup: bool) -> Result<(ConnId, Dir), Verdict> {
        if !self.table.keys_free(&conn.key(Dir::Original), &conn.key(Dir::Reply)) {
            if let Some(ep) = conn.mapping() {
                self.nat.release(conn.proto(), ep, self.now);
            }
            return Err(Verdict::Drop(DropReason::NoMapping));
        }
        if let Some(ep) = conn.mapping() {
            let now = self.now;
            self.nat.log_mut().push_session(|| nat::Record::SessionCreated {
                at: now,
                proto: conn.proto(),
                inside: nat::InsideEndpoint::from_endpoint(ep),
                inside6: None,
                public: nat::PublicEndpoint::from_endpoint(public_endpoint(&conn)),
                remote: remote_endpoint(&conn),
            });
        }
        if pickup {
            conn.mark_established();
        }
        conn.set_expires(self.now + conn.timeout(&self.config.timeouts));
        let (key, origin) = (conn.key(Dir::Original), conn.origin());
        if self.nat64.is_some() {
            self.nat64_hold(&conn, true);
        }
        let id = self.table.insert(conn);
        self.metrics.flows_created += 1;
        tracing::debug!(target: "ftpnat::flow", event = "new", id = %id, flow = %key, ?origin, pickup, "flow created");
        let reply = self.table.get(id).map_or(key, |c| c.key(Dir::Reply));
        self.events.push(|| Event::FlowNew { id, orig: key, reply, origin });
        self.nat64_event(id);
        Ok((id, Dir::Original))
    }

    pub(super) fn admit(&mut self, host: Option<Ipv4Addr>) -> Result<(), Verdict> {
        self.table.admit(host).map_err(|full| {
            Verdict::Drop(match full {
                Full::Table => DropReason::TableFull,
                Full::Host => DropReason::HostFlowLimit,
            })
        })
    }

    pub(super) fn acquire(&mut self, proto: Proto, inside: Endpoint) -> Result<Endpoint, Verdict> {
        let mut mapped = self.nat.acquire(proto, inside, None, self.now);
        // At its share, a host gives up its own oldest closed TCP connections first (a closed
        // connection sharing its mapping with a live one frees no port: then the next oldest).
        let mut tries = 0;
        while proto == Proto::Tcp && matches!(mapped, Err(nat::Refused::HostQuota)) && tries < RECLAIM_TRIES {
            let Some(old) = self.closing.oldest(inside.addr, &self.table) else { break };
            self.destroy(old, DestroyReason::Reclaimed);
            self.metrics.flows_reclaimed += 1;
            mapped = self.nat.acquire(proto, inside, None, self.now);
            tries += 1;
        }
        mapped.map(|p| p.endpoint()).map_err(|e| match e {
            nat::Refused::Exhausted => {
                tracing::warn!(target: "ftpnat::nat", reason = "ports_exhausted", %proto, inside = %inside,
                    "outside ports exhausted; new flow refused");
                Verdict::Drop(DropReason::PortsExhausted)
            }
            // RFC 6888 REQ-4: this host has its share of the ports; only its own new mappings wait.
            nat::Refused::HostQuota => {
                tracing::warn!(target: "ftpnat::nat", reason = "host_port_quota", %proto, host = %inside.addr,
                    quota = self.config.ports_per_host(),
                    "inside host holds its share of public ports; its new flow refused");
                Verdict::Drop(DropReason::HostPortQuota)
            }
        })
    }

    pub(super) fn forward_target(&self, proto: Proto, inside: Endpoint) -> Option<crate::config::Forward> {
        self.config
            .forwards
            .iter()
            .find(|f| f.proto == proto && f.inside_addr == inside.addr && f.inside_port == inside.port)
            .copied()
    }

    /// The forward listening on the public endpoint `public` (a pool address and port).
    pub(super) fn forward(&self, proto: Proto, public: Endpoint) -> Option<crate::config::Forward> {
        self.config
            .forwards
            .iter()
            .find(|f| {
                f.proto == proto && f.public_port == public.port && self.config.forward_addr(f) == public.addr
            })
            .copied()
    }
}

impl Engine {
    /// The ALG state of a TCP connection being opened, if an ALG watches it (`alg::watch`).
    fn watch(&self, proto: Proto, o: &Opening) -> Option<Box<AlgConn>> {
        if proto != Proto::Tcp {
            return None;
        }
        alg::watch(&self.config, o).map(|w| Box::new(AlgConn::new(w)))
    }
}

/// The gateway's own (pool address, port) of a connection: the translated source of an outbound or
/// hairpinned flow, the destination an outside host used for a forward or a pinhole.
pub(super) fn public_endpoint(conn: &Conn) -> Endpoint {
    match conn.origin() {
        Origin::Outbound | Origin::Hairpin => conn.key(Dir::Reply).dst,
        Origin::Forward | Origin::Pinhole { .. } => conn.key(Dir::Original).dst,
    }
}

/// The other end of a connection, as the inside host addresses it (for the session log).
pub(super) fn remote_endpoint(conn: &Conn) -> Endpoint {
    match conn.origin() {
        Origin::Outbound | Origin::Hairpin => conn.key(Dir::Original).dst,
        Origin::Forward | Origin::Pinhole { .. } => conn.key(Dir::Original).src,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, open_tcp, run, tcp, udp, HOST, PUBLIC, REMOTE};
    use super::*;
    use crate::config::Forward;
    use crate::wire::tcp::flags;

    #[test]
    fn an_outbound_flow_gets_a_public_endpoint() {
        let mut e = Engine::new(config());
        let port = open_tcp(&mut e, 40000, 80);
        let key = FlowKey::new(Proto::Tcp, Endpoint::new(HOST, 40000), Endpoint::new(REMOTE, 80));
        let (id, dir) = e.table().lookup(&key).unwrap();
        assert_eq!(dir, Dir::Original);
        let conn = e.table().get(id).unwrap();
        assert_eq!(conn.origin(), Origin::Outbound);
        assert_eq!(public_endpoint(conn), Endpoint::new(PUBLIC, port));
        assert_eq!(remote_endpoint(conn), Endpoint::new(REMOTE, 80));
    }

    #[test]
    fn an_unsolicited_inbound_opening_is_refused_and_the_answer_to_it_opens_nothing() {
        let mut e = Engine::new(config());
        let (v, _, _) = run(&mut e, Side::Outside, &tcp(REMOTE, 5555, PUBLIC, 8080, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Drop(DropReason::NoMapping));
        // A hostile or confused inside host answers as if it had been reached: no mapping comes of it.
        let answer = tcp(HOST, 8080, REMOTE, 5555, 900, 2, flags::SYN | flags::ACK, b"");
        let (v, _, _) = run(&mut e, Side::Inside, &answer);
        assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
        assert_eq!(e.flow_count(), 0);
    }

    #[test]
    fn a_forward_admits_the_outside_opening_towards_its_inside_host() {
        let mut c = config();
        c.forwards.push(Forward {
            proto: Proto::Tcp,
            public_addr: None,
            public_port: 2121,
            inside_addr: HOST,
            inside_port: 21,
            inside6: None,
        });
        let mut e = Engine::new(c);
        let (v, out, _) = run(&mut e, Side::Outside, &tcp(REMOTE, 5555, PUBLIC, 2121, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Forward(Side::Inside));
        assert_eq!(&out[16..20], &HOST.octets());
        assert_eq!(&out[22..24], &21u16.to_be_bytes());
        let key = FlowKey::new(Proto::Tcp, Endpoint::new(REMOTE, 5555), Endpoint::new(PUBLIC, 2121));
        let conn = e.table().get(e.table().lookup(&key).unwrap().0).unwrap();
        assert_eq!(conn.origin(), Origin::Forward);
        assert_eq!(public_endpoint(conn), Endpoint::new(PUBLIC, 2121));
        assert_eq!(remote_endpoint(conn), Endpoint::new(REMOTE, 5555));
    }

    /// Closes HOST:sp's connection to REMOTE:80 (public port `public`) with a FIN each way and the last ACK.
    fn close_tcp(e: &mut Engine, sp: u16, public: u16) {
        let fin = tcp(HOST, sp, REMOTE, 80, 101, 501, flags::FIN | flags::ACK, b"");
        assert_eq!(run(e, Side::Inside, &fin).0, Verdict::Forward(Side::Outside));
        let fin = tcp(REMOTE, 80, PUBLIC, public, 501, 102, flags::FIN | flags::ACK, b"");
        assert_eq!(run(e, Side::Outside, &fin).0, Verdict::Forward(Side::Inside));
        let ack = tcp(HOST, sp, REMOTE, 80, 102, 502, flags::ACK, b"");
        assert_eq!(run(e, Side::Inside, &ack).0, Verdict::Forward(Side::Outside));
    }

    /// At its port share, a host's new TCP connection takes the port of the host's own oldest closed
    /// one (which goes early, counted, its reason `reclaimed`), never one that is open and never
    /// another host's; with nothing of its own closed, the new connection is refused as before.
    #[test]
    fn at_its_share_a_host_gives_up_its_own_oldest_closed_connection() {
        let mut c = config();
        c.max_ports_per_host = crate::config::PortQuota::Ports(3);
        let mut e = Engine::new(c);
        // Another host's connection, refused by its server (closed): never this host's to take.
        let other = std::net::Ipv4Addr::new(10, 0, 0, 3);
        let (v, syn, _) = run(&mut e, Side::Inside, &tcp(other, 7000, REMOTE, 80, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Forward(Side::Outside));
        let other_public = u16::from_be_bytes([syn[20], syn[21]]);
        let rst = tcp(REMOTE, 80, PUBLIC, other_public, 0, 2, flags::RST | flags::ACK, b"");
        assert_eq!(run(&mut e, Side::Outside, &rst).0, Verdict::Forward(Side::Inside));
        let other_key = FlowKey::new(Proto::Tcp, Endpoint::new(other, 7000), Endpoint::new(REMOTE, 80));
        let publics: Vec<u16> = (0..3).map(|i| open_tcp(&mut e, 40000 + i, 80)).collect();
        close_tcp(&mut e, 40000, publics[0]);
        close_tcp(&mut e, 40001, publics[1]);
        let key = |sp| FlowKey::new(Proto::Tcp, Endpoint::new(HOST, sp), Endpoint::new(REMOTE, 80));
        // The fourth: the oldest closed (40000) gives way.
        let (v, _, _) = run(&mut e, Side::Inside, &tcp(HOST, 40003, REMOTE, 80, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Forward(Side::Outside));
        assert!(e.table().lookup(&key(40000)).is_none(), "the oldest closed connection went");
        assert!(e.table().lookup(&key(40001)).is_some(), "the next closed one stays until needed");
        assert_eq!(e.metrics().flows_reclaimed, 1);
        // The fifth takes 40001's; the sixth finds only open connections of its own: refused.
        let (v, _, _) = run(&mut e, Side::Inside, &tcp(HOST, 40004, REMOTE, 80, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Forward(Side::Outside));
        let (v, _, _) = run(&mut e, Side::Inside, &tcp(HOST, 40005, REMOTE, 80, 1, 0, flags::SYN, b""));
        assert_eq!(v, Verdict::Drop(DropReason::HostPortQuota));
        assert!(e.table().lookup(&key(40002)).is_some(), "an open connection is never given up");
        assert_eq!(e.metrics().flows_reclaimed, 2);
        let other_conn = e.table().get(e.table().lookup(&other_key).expect("untouched").0).unwrap();
        assert_eq!(other_conn.tcp(), crate::conntrack::TcpState::Reset);
        assert_eq!(e.closing.len(), 1, "the other host's closed connection, nothing of HOST's");
    }

    #[test]
    fn one_host_cannot_take_more_than_its_share_of_flows() {
        let mut c = config();
        c.max_flows_per_host = 2;
        let mut e = Engine::new(c);
        for sp in [1000, 1001] {
            assert_eq!(
                run(&mut e, Side::Inside, &udp(HOST, sp, REMOTE, 53, b"q")).0,
                Verdict::Forward(Side::Outside)
            );
        }
        let (v, _, _) = run(&mut e, Side::Inside, &udp(HOST, 1002, REMOTE, 53, b"q"));
        assert_eq!(v, Verdict::Drop(DropReason::HostFlowLimit));
        // Another host is not starved by the first.
        let other = std::net::Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(
            run(&mut e, Side::Inside, &udp(other, 1000, REMOTE, 53, b"q")).0,
            Verdict::Forward(Side::Outside)
        );
    }
}
