//! The engine's two NAT64 steps (issue 14): IPv6 from the LAN in, IPv6 towards the LAN out.
//!
//! Owns: the checks an IPv6 LAN packet meets before translation (source in `--inside6`, destination
//! under the prefix, hop limit, the per-/64 share of stand-in addresses), the gateway's own ICMPv6
//! (time exceeded, parameter problem, echo replies from its IPv6 address), translating to the IPv4
//! stand-in form that the IPv4 path handles like any inside packet, translating packets for a
//! stand-in back to IPv6, the stand-ins' references held by connections and by forwards to IPv6
//! hosts (RFC 6146 §3.5), and which FTP control connections are NAT64 ones (an IPv6 client, or an
//! IPv6 server behind a forward). Must not: translate headers itself (`xlat`), decide mappings,
//! filtering, timeouts or the ALG (the IPv4 path does, unchanged: "same behaviour as IPv4 NAT" holds
//! by construction, see `nat64`'s header).
//!
//! A child module of `engine` so that the engine keeps one place per decision; the engine calls
//! [`Engine::nat64_in`] from `handle_packet` for an IPv6 LAN packet, [`Engine::nat64_out`] on every
//! packet leaving towards the LAN, [`Engine::nat64_hold`] when a connection comes and goes, and
//! [`Engine::nat64_resolve`] / [`Engine::nat64_unresolve`] when a forward comes and goes.

use std::net::Ipv4Addr;

use super::{Engine, Verdict};
use crate::alg::V6Ends;
use crate::conntrack::Conn;
use crate::flow::{Dir, Side};
use crate::metrics::DropReason;
use crate::nat64::{is_alias, NoAlias};
use crate::wire::{icmpv6, ipv6, Ipv4Packet, Ipv6Packet};
use crate::xlat::{self, Params, XlatError};

/// RFC 4443 §2.4(f): an ICMPv6 error is never sent for a packet to a multicast address (except
/// Packet Too Big and Parameter Problem code 2, which the gateway does not originate here).
fn may_answer(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> bool {
    !dst.is_multicast() && !src.is_multicast() && !src.is_unspecified()
}

impl Engine {
    /// An IPv6 datagram from the LAN with NAT64 configured.
    pub(super) fn nat64_in(&mut self, pkt: &mut Vec<u8>) -> Verdict {
        let Some(n) = self.nat64.as_ref() else { return Verdict::Drop(DropReason::NotIpv4) };
        let (src, dst, hop, total) = match Ipv6Packet::new_checked(&pkt[..]) {
            Ok(p) => (p.src_addr(), p.dst_addr(), p.hop_limit(), p.total_len()),
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        pkt.truncate(total);
        // RFC 6146 §3.5: only the configured IPv6 networks may use the NAT64.
        if !n.cfg.is_inside6(src) {
            return Verdict::Drop(DropReason::SpoofedSource);
        }
        if dst == n.cfg.lan_ip6 {
            return self.nat64_local(pkt);
        }
        if !n.cfg.prefix.contains(dst) {
            return Verdict::Drop(DropReason::Nat64Unroutable);
        }
        // RFC 7915 §5.1 (and RFC 8200 §3): a router that would forward with Hop Limit 0 discards and
        // says so, from its own IPv6 address, before any translation.
        if hop <= 1 {
            self.icmpv6_error(pkt, icmpv6::TYPE_TIME_EXCEEDED, icmpv6::CODE_HOP_LIMIT_EXCEEDED, 0);
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        // The destination must extract exactly (RFC 6052 §2.2 u-octet and suffix zero; §3.1 the
        // well-known prefix carries global IPv4 only): the reply is addressed from the same bytes.
        if n.cfg.prefix.extract(dst).is_err() {
            return Verdict::Drop(DropReason::Nat64Unroutable);
        }
        let n = self.nat64.as_mut().expect("checked");
        let known = n.hosts.len();
        let alias = match n.hosts.alias_or_assign(src) {
            Ok(a) => {
                if n.hosts.len() != known {
                    // The NAT log names the subscriber, not its stand-in (RFC 8158 sourceIPv6Address).
                    self.nat.log_mut().name_host6(a, src);
                }
                a
            }
            Err(NoAlias::PerPrefixLimit | NoAlias::Exhausted) => {
                tracing::debug!(target: "ftpnat::nat64", %src, "no stand-in address for this IPv6 host");
                return Verdict::Drop(DropReason::Nat64HostLimit);
            }
        };
        let params = Params {
            mtu4: self.config.mtu[Side::Outside.index()],
            mtu6: self.config.mtu[Side::Inside.index()],
            ident: n.next_ident(),
        };
        let translated = xlat::v6_to_v4(pkt, &n.map(self.config.lan_ip), &params);
        if let Err(e) = translated {
            self.nat64_forget_unused(alias);
            return self.nat64_refused_in(pkt, e);
        }
        self.metrics.nat64_to_v4 += 1;
        self.xlat_in = true;
        let v = self.process(Side::Inside, pkt);
        self.xlat_in = false;
        // A stand-in assigned for a packet that created no connection is not kept.
        self.nat64_forget_unused(alias);
        v
    }

    fn nat64_forget_unused(&mut self, alias: Ipv4Addr) {
        if self.nat64.as_mut().is_some_and(|n| n.hosts.forget_unused(alias)) {
            self.nat.log_mut().unname_host6(alias);
        }
    }

    /// Why RFC 7915 would not translate an IPv6 packet; the ICMPv6 error it asks for, if any.
    fn nat64_refused_in(&mut self, pkt: &[u8], e: XlatError) -> Verdict {
        tracing::debug!(target: "ftpnat::nat64", reason = e.name(), "IPv6 packet not translated");
        match e {
            XlatError::RoutingHeader { pointer } => {
                // RFC 7915 §5.1: Parameter Problem, code 0, pointing at Segments Left.
                self.icmpv6_error(
                    pkt,
                    icmpv6::TYPE_PARAMETER_PROBLEM,
                    icmpv6::CODE_ERRONEOUS_HEADER,
                    pointer,
                );
                Verdict::Drop(DropReason::Nat64Untranslatable)
            }
            XlatError::Malformed(_) => Verdict::Drop(DropReason::Malformed),
            XlatError::Unmapped => Verdict::Drop(DropReason::Nat64Unroutable),
            _ => Verdict::Drop(DropReason::Nat64Untranslatable),
        }
    }

    /// An IPv6 packet for the gateway's own address: echo requests are answered, nothing else.
    fn nat64_local(&mut self, pkt: &[u8]) -> Verdict {
        let p = Ipv6Packet::new_unchecked(pkt);
        let echo = p.layout().is_ok_and(|l| l.upper == ipv6::NH_ICMPV6 && !l.is_fragment())
            && p.icmpv6().is_ok_and(|i| {
                i.msg_type() == icmpv6::TYPE_ECHO_REQUEST
                    && i.code() == 0
                    && i.verify_checksum(p.src_addr(), p.dst_addr())
            });
        if echo && !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
        } else if echo {
            let (src, dst) = (p.src_addr(), p.dst_addr());
            let mut reply = pkt.to_vec();
            let mut r = Ipv6Packet::new_unchecked(&mut reply[..]);
            r.set_src_addr(dst);
            r.set_dst_addr(src);
            r.set_hop_limit(64);
            if let Ok(mut i) = r.icmpv6_mut() {
                i.set_msg_type(icmpv6::TYPE_ECHO_REPLY);
                i.fill_checksum(dst, src);
            }
            self.out.push_back(super::Transmit { side: Side::Inside, packet: reply });
        }
        Verdict::Drop(DropReason::LocalDelivery)
    }

    /// Sends the LAN sender of `pkt` an ICMPv6 error from the gateway's own IPv6 address (RFC 4443),
    /// within the same rate limit as its ICMPv4 errors.
    fn icmpv6_error(&mut self, pkt: &[u8], ty: u8, code: u8, rest: u32) {
        if !self.config.send_icmp_errors {
            self.metrics.generated_suppressed += 1;
            return;
        }
        let Some(me) = self.nat64.as_ref().map(|n| n.cfg.lan_ip6) else { return };
        let p = Ipv6Packet::new_unchecked(pkt);
        let (src, dst) = (p.src_addr(), p.dst_addr());
        if !may_answer(src, dst) {
            return;
        }
        // RFC 4443 §2.4(e): never an error about an ICMPv6 error (nor about a later fragment).
        let about_error = p.layout().is_ok_and(|l| {
            l.is_later_fragment() || (l.upper == ipv6::NH_ICMPV6 && p.icmpv6().is_ok_and(|i| i.is_error()))
        });
        if about_error || !self.take_icmp_token() {
            return;
        }
        let err = icmpv6::build_error(me, src, ty, code, rest, pkt);
        self.metrics.icmp_errors_sent += 1;
        self.out.push_back(super::Transmit { side: Side::Inside, packet: err });
    }

    /// A packet about to leave towards the LAN: one for an IPv6 host's stand-in becomes IPv6 (RFC 7915
    /// §4), split first when DF is clear and it would not fit the LAN MTU as IPv6. Returns the further
    /// pieces (already IPv6) to send after `pkt`, or the drop reason.
    pub(super) fn nat64_out(&mut self, pkt: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, DropReason> {
        let Some(n) = self.nat64.as_ref() else { return Ok(Vec::new()) };
        let dst = match Ipv4Packet::new_checked(&pkt[..]) {
            Ok(p) => p.dst_addr(),
            Err(_) => return Ok(Vec::new()),
        };
        if !is_alias(dst) {
            return Ok(Vec::new());
        }
        let params = Params {
            mtu4: self.config.mtu[Side::Outside.index()],
            mtu6: self.config.mtu[Side::Inside.index()],
            ident: 0,
        };
        let map = n.map(self.config.lan_ip);
        let mut pieces = match xlat::split_for_v6(pkt, usize::from(params.mtu6)) {
            Ok(Some(p)) => p,
            Ok(None) => Vec::new(),
            Err(_) => return Err(DropReason::Malformed),
        };
        if !pieces.is_empty() {
            self.metrics.fragments_created += pieces.len() as u64 - 1;
            *pkt = pieces.remove(0);
        }
        let fail = |e: XlatError| {
            tracing::debug!(target: "ftpnat::nat64", reason = e.name(), %dst, "packet for an IPv6 host not translated");
            match e {
                XlatError::Malformed(_) => DropReason::Malformed,
                _ => DropReason::Nat64Untranslatable,
            }
        };
        xlat::v4_to_v6(pkt, &map, &params).map_err(fail)?;
        for p in &mut pieces {
            xlat::v4_to_v6(p, &map, &params).map_err(fail)?;
        }
        self.metrics.nat64_to_v6 += 1 + pieces.len() as u64;
        Ok(pieces)
    }

    /// A forward to an IPv6 host (RFC 6146 §3.5, a static BIB entry): the host gets its stand-in and
    /// keeps it while the forward lasts (one reference per forward), so the forward is an IPv4 forward
    /// to the stand-in from then on. Called before the engine exists (hence no `self`). Refused (the
    /// line says why, naming the forward) when NAT64 is not running (a reload cannot start it) or the
    /// host's /64 has no stand-in left; `Config::validate` rules both out at start.
    pub(super) fn nat64_resolve(
        n: Option<&mut crate::nat64::Nat64State>,
        nat: &mut crate::nat::Nat,
        f: &mut crate::config::Forward,
    ) -> Result<(), String> {
        let Some(host) = f.inside6 else { return Ok(()) };
        let Some(n) = n else {
            return Err(format!("--forward {f}: an IPv6 inside host needs NAT64 running (a restart with --nat64-prefix); not added"));
        };
        match n.hosts.alias_or_assign(host) {
            Ok(alias) => {
                n.hosts.retain(alias);
                nat.log_mut().name_host6(alias, host);
                f.inside_addr = alias;
                Ok(())
            }
            Err(e) => Err(format!("--forward {f}: no NAT64 stand-in address for {host} ({e:?}); not added")),
        }
    }

    /// A forward to an IPv6 host went: its reference on the stand-in goes with it.
    pub(super) fn nat64_unresolve(&mut self, f: &crate::config::Forward) {
        let Some(n) = self.nat64.as_mut() else { return };
        if f.inside6.is_some() && is_alias(f.inside_addr) && n.hosts.release(f.inside_addr) {
            self.nat.log_mut().unname_host6(f.inside_addr);
        }
    }

    /// The LAN MTU as the IPv4 path must see it for a packet to an IPv6 host: its IPv6 header is 20
    /// bytes longer (RFC 7915 §4: the Fragmentation Needed the IPv4 sender gets says so).
    pub(super) fn nat64_mtu(&self, egress: Side, dst: Ipv4Addr) -> usize {
        let mtu = self.config.mtu[egress.index()] as usize;
        if self.nat64.is_some() && egress == Side::Inside && is_alias(dst) {
            mtu - (ipv6::HEADER_LEN - crate::wire::ipv4::HEADER_LEN)
        } else {
            mtu
        }
    }

    /// The IPv6 end of a connection from `client` to `server`, when the client is an IPv6 host's
    /// stand-in (RFC 6146).
    pub(super) fn v6_client_end(&self, client: Ipv4Addr, server: Ipv4Addr) -> Option<V6Ends> {
        let n = self.nat64.as_ref()?;
        Some(V6Ends::Client { client6: n.hosts.host(client)?, server6: n.cfg.prefix.embed(server) })
    }

    /// The IPv6 end of a connection from the IPv4 `client` through `fwd`, when the forward reaches an
    /// IPv6 host (RFC 6146 §3.5).
    pub(super) fn v6_server_end(&self, fwd: &crate::config::Forward, client: Ipv4Addr) -> Option<V6Ends> {
        let n = self.nat64.as_ref()?;
        Some(V6Ends::Server { client6: n.cfg.prefix.embed(client), server6: fwd.inside6? })
    }

    /// The `nat64_flow` event of a new connection whose inside host is an IPv6 host.
    pub(super) fn nat64_event(&mut self, id: crate::flow::ConnId) {
        let (Some(n), Some(c)) = (self.nat64.as_ref(), self.table.get(id)) else { return };
        let [o, r] = *c.keys();
        // The inside endpoint: the sender of the original direction, or (a pinhole's data connection)
        // of the reply direction; the remote is the other end of that direction.
        let (inside, remote) = if is_alias(o.src.addr) { (o.src, o.dst) } else { (r.src, r.dst) };
        let Some(host) = n.hosts.host(inside.addr) else { return };
        let inside6 = std::net::SocketAddrV6::new(host, inside.port, 0, 0);
        let remote6 = std::net::SocketAddrV6::new(n.cfg.prefix.embed(remote.addr), remote.port, 0, 0);
        self.events.push(|| crate::events::Event::Nat64Flow { id, orig: o, inside6, remote6 });
    }

    /// A connection was created (`on`) or destroyed: the stand-ins it names are held or given back.
    pub(super) fn nat64_hold(&mut self, conn: &Conn, on: bool) {
        let Some(n) = self.nat64.as_mut() else { return };
        let a = conn.key(Dir::Original).src.addr;
        let b = conn.key(Dir::Reply).src.addr;
        for (i, x) in [a, b].into_iter().enumerate() {
            if is_alias(x) && !(i == 1 && x == a) {
                if on {
                    n.hosts.retain(x);
                } else if n.hosts.release(x) {
                    self.nat.log_mut().unname_host6(x);
                }
            }
        }
    }
}
