//! Stateful NAT64 (RFC 6146) on the IPv4 machinery: which IPv6 sources may use the NAT64 prefix, and
//! the IPv4 stand-in ("alias") each IPv6 inside host gets so that its flows live in the one IPv4
//! connection table with the mapping, filtering, timeouts, limits and ALG of IPv4 NAT.
//!
//! Owns: [`Nat64Config`] and its validation, the [`Hosts`] table (IPv6 host ↔ alias, reference
//! counted), and [`Nat64Map`], the [`AddrMap`] the translator uses. Must not: translate packets
//! (`xlat`), track flows (`conntrack`) or allocate public ports (`nat`).
//!
//! Why aliases: an IPv6 packet from an inside host to `prefix ⊕ v4` is translated (RFC 7915) into an
//! IPv4 packet `alias → v4`, and from there it *is* an IPv4 packet from an inside host — this is the
//! SIIT + NAT44 decomposition of a stateful NAT64 (RFC 6146 §1.2.2 describes the same split into a
//! translator and a NAT; TAYGA deployments build it from two programs). `Conn` keeps its IPv4 keys and
//! its 112 bytes: no byte is added to any flow, IPv4 or NAT64. The IPv6 destination is never stored
//! either — one prefix, and extraction is exact ([`crate::xlat::prefix`]).
//!
//! Aliases come from 240.0.0.0/4 (RFC 1112 "reserved", never routed, never on either wire; an
//! `--inside` overlapping it is refused), handed out by a cursor that walks the whole block before it
//! comes back, so a freed alias is the last to be reused. An entry lives while something holds it
//! (its connections, pinholes, a `--forward` naming the host: RFC 6146 §3.5's static BIB entry):
//! [`Hosts::retain`] / [`Hosts::release`].
//!
//! A LAN host controls a whole /64: one alias per address would let it spray source addresses past
//! every per-host limit. At most `max_per_64` addresses of one /64 hold aliases at a time (RFC 6888
//! REQ-4's per-subscriber limit, a /64 being the subscriber); a further address is refused, counted.

use std::net::{Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use ipnet::{Ipv4Net, Ipv6Net};

use crate::xlat::{AddrMap, Nat64Prefix};

/// The block aliases come from: 240.0.0.0/4.
pub const ALIAS_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(240, 0, 0, 0), 4) {
    Ok(n) => n,
    Err(_) => panic!("a /4 is a valid prefix length"),
};
const FIRST: u32 = 0xF000_0001;
const LAST: u32 = 0xFFFF_FFFE;

/// Default of [`Hosts`]'s per-/64 limit.
pub const DEFAULT_MAX_PER_64: u32 = 16;

/// Whether `a` is an alias (of some IPv6 host, or of none yet).
pub fn is_alias(a: Ipv4Addr) -> bool {
    ALIAS_NET.contains(&a)
}

/// `--nat64-prefix` and `--inside6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat64Config {
    pub prefix: Nat64Prefix,
    /// IPv6 sources allowed to use the prefix.
    pub inside6: Vec<Ipv6Net>,
    /// Addresses of one /64 that may hold aliases at a time.
    pub max_per_64: u32,
    /// The gateway's own IPv6 address on the LAN: source of the ICMPv6 errors it sends (hop limit
    /// exceeded, packet too big) and the address IPv6 hosts ping it at. The first host of the first
    /// `--inside6` prefix, as `--lan-ip` defaults to the first host of the first `--inside`.
    pub lan_ip6: Ipv6Addr,
}

impl Nat64Config {
    pub fn new(prefix: Nat64Prefix, inside6: Vec<Ipv6Net>) -> Nat64Config {
        let lan_ip6 = inside6
            .first()
            .map_or(Ipv6Addr::UNSPECIFIED, |n| Ipv6Addr::from(u128::from(n.network()).wrapping_add(1)));
        Nat64Config { prefix, inside6, max_per_64: DEFAULT_MAX_PER_64, lan_ip6 }
    }

    /// Errors name the flag: no `--inside6`, an `--inside6` overlapping the prefix (a source inside
    /// the prefix would be an IPv4 host), an `--inside` overlapping the alias block.
    pub fn validate(&self, inside4: &[Ipv4Net]) -> Result<(), String> {
        if self.inside6.is_empty() {
            return Err(
                "--nat64-prefix needs at least one --inside6 (the IPv6 sources allowed to use it)".into()
            );
        }
        let p = self.prefix.network();
        for net in &self.inside6 {
            let bits = u32::from(self.prefix.len().bits().min(net.prefix_len()));
            let mask = !u128::MAX.checked_shr(bits).unwrap_or(0);
            if u128::from(net.network()) & mask == u128::from(p) & mask {
                return Err(format!("--inside6 {net} overlaps --nat64-prefix {}", self.prefix));
            }
        }
        for net in inside4 {
            if net.contains(&ALIAS_NET.network()) || ALIAS_NET.contains(&net.network()) {
                return Err(format!(
                    "--inside {net} overlaps {ALIAS_NET}, the block NAT64 uses for IPv6 hosts' stand-in addresses"
                ));
            }
        }
        for net in &self.inside6 {
            if net.prefix_len() > 127 {
                return Err(format!("--inside6 {net}: a /128 leaves no address for the gateway and a host"));
            }
        }
        if self.max_per_64 == 0 {
            return Err("the per-/64 address limit of NAT64 must be at least 1".into());
        }
        Ok(())
    }

    /// Whether an IPv6 source may use NAT64.
    pub fn is_inside6(&self, a: Ipv6Addr) -> bool {
        self.inside6.iter().any(|n| n.contains(&a))
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Entry {
    alias: u32,
    refs: u32,
}

/// Why an IPv6 host got no alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAlias {
    /// Its /64 already has `max_per_64` addresses holding aliases.
    PerPrefixLimit,
    /// Every alias of the block is in use.
    Exhausted,
}

/// IPv6 inside hosts ↔ their IPv4 aliases.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hosts {
    by_v6: HashMap<Ipv6Addr, Entry, foldhash::fast::RandomState>,
    by_alias: HashMap<u32, Ipv6Addr, foldhash::fast::RandomState>,
    /// Addresses holding aliases, per /64 (the upper 64 bits).
    per_64: HashMap<u64, u32, foldhash::fast::RandomState>,
    max_per_64: u32,
    next: u32,
}

impl Hosts {
    pub fn new(max_per_64: u32) -> Hosts {
        Hosts {
            by_v6: HashMap::default(),
            by_alias: HashMap::default(),
            per_64: HashMap::default(),
            max_per_64: max_per_64.max(1),
            next: FIRST,
        }
    }

    /// IPv6 hosts holding an alias.
    pub fn len(&self) -> usize {
        self.by_v6.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_v6.is_empty()
    }

    /// The alias of `v6`, if it has one.
    pub fn alias(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        self.by_v6.get(&v6).map(|e| Ipv4Addr::from(e.alias))
    }

    /// The IPv6 host an alias stands for.
    pub fn host(&self, alias: Ipv4Addr) -> Option<Ipv6Addr> {
        self.by_alias.get(&u32::from(alias)).copied()
    }

    /// The alias of `v6`, given one if it has none (with no references: [`Self::retain`] it, or
    /// [`Self::forget_unused`] it once the packet that asked is handled).
    pub fn alias_or_assign(&mut self, v6: Ipv6Addr) -> Result<Ipv4Addr, NoAlias> {
        if let Some(a) = self.alias(v6) {
            return Ok(a);
        }
        let sub = (u128::from(v6) >> 64) as u64;
        let n = self.per_64.get(&sub).copied().unwrap_or(0);
        if n >= self.max_per_64 {
            return Err(NoAlias::PerPrefixLimit);
        }
        if self.by_alias.len() as u64 >= u64::from(LAST - FIRST + 1) {
            return Err(NoAlias::Exhausted);
        }
        let mut a = self.next;
        while self.by_alias.contains_key(&a) {
            a = if a == LAST { FIRST } else { a + 1 };
        }
        self.next = if a == LAST { FIRST } else { a + 1 };
        self.by_v6.insert(v6, Entry { alias: a, refs: 0 });
        self.by_alias.insert(a, v6);
        *self.per_64.entry(sub).or_insert(0) += 1;
        Ok(Ipv4Addr::from(a))
    }

    /// One more holder of `alias` (a connection, a pinhole). No-op for an unknown alias.
    pub fn retain(&mut self, alias: Ipv4Addr) {
        if let Some(v6) = self.host(alias) {
            if let Some(e) = self.by_v6.get_mut(&v6) {
                e.refs = e.refs.saturating_add(1);
            }
        }
    }

    /// One holder fewer; the alias goes when none is left (then `true`).
    pub fn release(&mut self, alias: Ipv4Addr) -> bool {
        let Some(v6) = self.host(alias) else { return false };
        let Some(e) = self.by_v6.get_mut(&v6) else { return false };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            self.remove(v6);
            return true;
        }
        false
    }

    /// Removes `alias` if nothing holds it (an alias assigned for a packet that created nothing);
    /// `true` when it went.
    pub fn forget_unused(&mut self, alias: Ipv4Addr) -> bool {
        if let Some(v6) = self.host(alias) {
            if self.by_v6.get(&v6).is_some_and(|e| e.refs == 0) {
                self.remove(v6);
                return true;
            }
        }
        false
    }

    /// References held on `alias` (0 for an unknown one).
    pub fn refs(&self, alias: Ipv4Addr) -> u32 {
        self.host(alias).and_then(|v6| self.by_v6.get(&v6)).map_or(0, |e| e.refs)
    }

    fn remove(&mut self, v6: Ipv6Addr) {
        if let Some(e) = self.by_v6.remove(&v6) {
            self.by_alias.remove(&e.alias);
            let sub = (u128::from(v6) >> 64) as u64;
            if let Some(n) = self.per_64.get_mut(&sub) {
                *n -= 1;
                if *n == 0 {
                    self.per_64.remove(&sub);
                }
            }
        }
    }

    /// (IPv6 host, alias, references) for views, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Addr, Ipv4Addr, u32)> + '_ {
        self.by_v6.iter().map(|(v6, e)| (*v6, Ipv4Addr::from(e.alias), e.refs))
    }
}

/// What the engine keeps for NAT64: the configuration, the host table, and the Identification counter
/// of translated IPv4 datagrams (RFC 7915 §5.1).
#[derive(Debug, Clone)]
pub struct Nat64State {
    pub cfg: Nat64Config,
    pub hosts: Hosts,
    ident: u16,
}

impl Nat64State {
    pub fn new(cfg: Nat64Config) -> Nat64State {
        Nat64State { hosts: Hosts::new(cfg.max_per_64), cfg, ident: 0 }
    }

    /// The last Identification handed out (for the state file).
    pub fn ident(&self) -> u16 {
        self.ident
    }

    /// The host table and Identification counter of a saved state (issue 15).
    pub fn restore(&mut self, hosts: Hosts, ident: u16) {
        self.hosts = hosts;
        self.ident = ident;
    }

    /// The next Identification for an unfragmented IPv6 → IPv4 datagram.
    pub fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }

    /// The translator's address map; the gateway's LAN address (`lan_ip`) stands for its own IPv6
    /// address, so the ICMP errors it sends an IPv6 host come from that address.
    pub fn map(&self, lan_ip: Ipv4Addr) -> Nat64Map<'_> {
        Nat64Map { prefix: &self.cfg.prefix, hosts: &self.hosts, gateway: Some((lan_ip, self.cfg.lan_ip6)) }
    }
}

/// The address correspondence of a NAT64: inside IPv6 hosts ↔ their aliases, every other IPv4
/// address ↔ its IPv4-embedded form under the prefix. Aliases are assigned elsewhere (this map only
/// reads them), so translating never changes the table.
pub struct Nat64Map<'a> {
    pub prefix: &'a Nat64Prefix,
    pub hosts: &'a Hosts,
    /// (IPv4, IPv6) address of the gateway itself on the LAN.
    pub gateway: Option<(Ipv4Addr, Ipv6Addr)>,
}

impl AddrMap for Nat64Map<'_> {
    fn to_v4(&self, a: Ipv6Addr) -> Option<Ipv4Addr> {
        match self.prefix.extract(a) {
            Ok(v4) => Some(v4),
            Err(_) => self.hosts.alias(a),
        }
    }
    fn to_v6(&self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if let Some((v4, v6)) = self.gateway.filter(|g| g.0 == a) {
            debug_assert_eq!(v4, a);
            Some(v6)
        } else if is_alias(a) {
            self.hosts.host(a)
        } else if self.prefix.translatable(a) {
            Some(self.prefix.embed(a))
        } else {
            None
        }
    }
    /// The case RFC 6791 addresses: an ICMPv4 error from a router whose address the well-known prefix
    /// may not carry (a private hop of a traceroute). ftpnat sends it from the router's embedded
    /// address rather than from a pool of its own: an error's source is informative only, and
    /// dropping the error would hide every such hop.
    fn error_source_to_v6(&self, a: Ipv4Addr) -> Option<Ipv6Addr> {
        if let Some((_, v6)) = self.gateway.filter(|g| g.0 == a) {
            Some(v6)
        } else if is_alias(a) {
            self.hosts.host(a)
        } else {
            Some(self.prefix.embed(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn config_validation_names_the_flag() {
        let pre: Nat64Prefix = "64:ff9b:1::/96".parse().unwrap();
        let ok = Nat64Config::new(pre, vec!["2001:db8:64::/64".parse().unwrap()]);
        assert_eq!(ok.validate(&["10.0.0.0/24".parse().unwrap()]), Ok(()));
        assert!(ok.is_inside6(a6("2001:db8:64::2")) && !ok.is_inside6(a6("2001:db8:65::2")));
        let none = Nat64Config::new(pre, vec![]);
        assert!(none.validate(&[]).unwrap_err().contains("--inside6"));
        let overlap = Nat64Config::new(pre, vec!["64:ff9b::/32".parse().unwrap()]);
        assert!(overlap.validate(&[]).unwrap_err().contains("overlaps --nat64-prefix"));
        let inner = Nat64Config::new(pre, vec!["64:ff9b:1::1:0/112".parse().unwrap()]);
        assert!(inner.validate(&[]).is_err(), "a source inside the prefix");
        let e = ok.validate(&["240.1.0.0/16".parse().unwrap()]).unwrap_err();
        assert!(e.contains("--inside 240.1.0.0/16") && e.contains("240.0.0.0/4"), "{e}");
        assert!(ok.validate(&["0.0.0.0/0".parse().unwrap()]).is_err(), "an --inside covering everything");
    }

    #[test]
    fn aliases_are_assigned_retained_released() {
        let mut h = Hosts::new(4);
        let c1 = a6("2001:db8::1");
        let a = h.alias_or_assign(c1).unwrap();
        assert!(is_alias(a));
        assert_eq!((h.host(a), h.alias(c1), h.refs(a)), (Some(c1), Some(a), 0));
        assert_eq!(h.alias_or_assign(c1), Ok(a), "same host, same alias");
        h.retain(a);
        h.retain(a);
        h.forget_unused(a);
        assert_eq!(h.alias(c1), Some(a), "held: not forgotten");
        h.release(a);
        assert_eq!(h.refs(a), 1);
        h.release(a);
        assert_eq!((h.alias(c1), h.host(a), h.len()), (None, None, 0), "last holder gone");
        // An alias assigned for a packet that created nothing.
        let b = h.alias_or_assign(c1).unwrap();
        assert_ne!(a, b, "a freed alias is not reused at once");
        h.forget_unused(b);
        assert!(h.is_empty());
        // Unknown aliases are ignored.
        h.retain(Ipv4Addr::new(240, 9, 9, 9));
        h.release(Ipv4Addr::new(240, 9, 9, 9));
        assert!(h.is_empty());
    }

    #[test]
    fn address_spraying_within_a_64_is_bounded() {
        let mut h = Hosts::new(3);
        for i in 1..=3u16 {
            let a = h.alias_or_assign(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i)).unwrap();
            h.retain(a);
        }
        assert_eq!(h.alias_or_assign(a6("2001:db8:0:1::99")), Err(NoAlias::PerPrefixLimit));
        // Another /64 is another subscriber.
        assert!(h.alias_or_assign(a6("2001:db8:0:2::99")).is_ok());
        // When one of the three goes, a new address of that /64 may come.
        let gone = h.alias(a6("2001:db8:0:1::2")).unwrap();
        h.release(gone);
        assert!(h.alias_or_assign(a6("2001:db8:0:1::99")).is_ok());
        assert_eq!(h.iter().count(), 4);
    }

    #[test]
    fn cursor_wraps_and_skips_aliases_in_use() {
        let mut h = Hosts::new(100);
        h.next = LAST;
        let a = h.alias_or_assign(a6("2001:db8::1")).unwrap();
        assert_eq!(u32::from(a), LAST);
        let b = h.alias_or_assign(a6("2001:db8::2")).unwrap();
        assert_eq!(u32::from(b), FIRST, "wraps, skipping 255.255.255.255 and 240.0.0.0");
        h.next = LAST;
        let c = h.alias_or_assign(a6("2001:db8::3")).unwrap();
        assert_eq!(u32::from(c), FIRST + 1, "skips the two in use");
    }

    #[test]
    fn the_map_is_the_translators() {
        let pre: Nat64Prefix = "64:ff9b::/96".parse().unwrap();
        let mut h = Hosts::new(4);
        let client = a6("2001:db8::2");
        let alias = h.alias_or_assign(client).unwrap();
        let m = Nat64Map { prefix: &pre, hosts: &h, gateway: None };
        assert_eq!(m.to_v4(client), Some(alias));
        assert_eq!(m.to_v4(a6("64:ff9b::8.8.8.8")), Some(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(m.to_v4(a6("64:ff9b::10.0.0.1")), None, "well-known prefix, non-global: RFC 6052 §3.1");
        assert_eq!(m.to_v4(a6("2001:db8::3")), None, "no alias");
        assert_eq!(m.to_v6(alias), Some(client));
        assert_eq!(m.to_v6(Ipv4Addr::new(8, 8, 8, 8)), Some(a6("64:ff9b::8.8.8.8")));
        assert_eq!(m.to_v6(Ipv4Addr::new(10, 0, 0, 1)), None);
        assert_eq!(m.to_v6(Ipv4Addr::new(240, 7, 7, 7)), None, "an alias of nobody");
        assert_eq!(
            m.error_source_to_v6(Ipv4Addr::new(10, 0, 0, 1)),
            Some(a6("64:ff9b::10.0.0.1")),
            "RFC 6791"
        );
    }
}
