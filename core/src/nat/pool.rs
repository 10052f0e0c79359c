//! The public address pool: which addresses the gateway translates to, and which one an inside host
//! is paired with.
//!
//! Owns: the ordered list of public addresses (`--public-ip` repeated, `--public-pool CIDR|A-B`), the
//! syntax of a pool argument, and the hash that spreads inside hosts over the pool (paired pooling,
//! RFC 4787 REQ-2 and RFC 6888 REQ-2: every mapping of one inside host on the same public address).
//! Must not: track which ports or hosts use an address (the allocator does) or look at packets.
//!
//! The hash is fixed, not seeded: a host lands on the same address after a restart, as with the
//! kernel's `persistent` source NAT (which hashes the source address alone, with no per-boot key)
//! and VPP's address choice by a hash of the inside address. A host cannot choose its address
//! except by its own inside address, which the operator assigned.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

/// The most addresses one pool may hold. Each address in use costs three 8 KB port sets (one per
/// protocol) plus its blocks, so a /22 is at most ~25 MB; a provider with more public space runs
/// several gateways (or workers with pools of their own).
pub const MAX_POOL: usize = 1024;

/// One `--public-pool` argument: `CIDR` (its host addresses: the network and broadcast addresses of a
/// prefix shorter than /31 are left out, as a router on that prefix would) or `FIRST-LAST` (every
/// address from FIRST to LAST, both included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec(Vec<Ipv4Addr>);

impl PoolSpec {
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.0
    }
}

impl FromStr for PoolSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let addr = |t: &str| {
            t.trim().parse::<Ipv4Addr>().map_err(|_| format!("'{s}': '{t}' is not an IPv4 address"))
        };
        let (first, last) = if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (addr(a)?, addr(b)?);
            if a > b {
                return Err(format!("'{s}': {a} is above {b}"));
            }
            (u32::from(a), u32::from(b))
        } else if s.contains('/') {
            let net: Ipv4Net =
                s.parse().map_err(|_| format!("'{s}': expected CIDR (203.0.113.0/28) or FIRST-LAST"))?;
            if net.network() != net.addr() {
                return Err(format!("'{s}': host bits set; the prefix is {}", net.trunc()));
            }
            let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
            if net.prefix_len() >= 31 {
                (lo, hi)
            } else {
                (lo + 1, hi - 1)
            }
        } else {
            let a = u32::from(addr(s)?);
            (a, a)
        };
        let n = (last - first) as usize + 1;
        if n > MAX_POOL {
            return Err(format!("'{s}': {n} addresses; a pool holds at most {MAX_POOL}"));
        }
        Ok(PoolSpec((first..=last).map(Ipv4Addr::from).collect()))
    }
}

/// Why an address cannot be in the pool (the caller names the flag).
pub fn check_public_address(a: Ipv4Addr) -> Result<(), String> {
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
        return Err(format!("{a} cannot be a host's address"));
    }
    if a.octets()[0] == 0 || a.octets()[0] >= 240 {
        return Err(format!("{a} is in a reserved block (0/8 or 240/4)"));
    }
    Ok(())
}

/// The public addresses, in the order configured; an address's position is its index everywhere
/// (ports sets, blocks, the deterministic layout).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    addrs: Vec<Ipv4Addr>,
    index: HashMap<Ipv4Addr, u16>,
}

impl Pool {
    /// `addrs` must be non-empty, duplicate-free and at most [`MAX_POOL`] long (configuration
    /// validation guarantees it); duplicates are dropped and the list cut at the limit otherwise.
    pub fn new(addrs: &[Ipv4Addr]) -> Pool {
        let mut index = HashMap::new();
        let mut list = Vec::new();
        for &a in addrs {
            if list.len() < MAX_POOL && !index.contains_key(&a) {
                index.insert(a, list.len() as u16);
                list.push(a);
            }
        }
        if list.is_empty() {
            list.push(Ipv4Addr::UNSPECIFIED);
            index.insert(Ipv4Addr::UNSPECIFIED, 0);
        }
        Pool { addrs: list, index }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Never true: a pool has at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    pub fn get(&self, i: usize) -> Ipv4Addr {
        self.addrs[i]
    }

    /// The position of `a` in the pool, if it is one of ours.
    pub fn index_of(&self, a: Ipv4Addr) -> Option<usize> {
        self.index.get(&a).map(|&i| usize::from(i))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.index.contains_key(&a)
    }

    /// The address an inside host is paired with when every address has room: a hash of the inside
    /// address alone, so all of a host's flows agree on it and hosts spread evenly over the pool.
    pub fn preferred(&self, host: Ipv4Addr) -> usize {
        spread(host, self.addrs.len())
    }
}

/// `host` hashed onto `0..n`: a 32-bit finaliser (every input bit moves every output bit, so
/// consecutive inside addresses scatter) and a multiply-shift onto the range (no modulo bias worth
/// the name for n ≤ 1024).
pub fn spread(host: Ipv4Addr, n: usize) -> usize {
    let mut h = u32::from(host);
    // MurmurHash3's fmix32.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    ((u64::from(h) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_syntax() {
        let p: PoolSpec = "203.0.113.0/30".parse().unwrap();
        assert_eq!(p.addresses(), &[Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)]);
        let p: PoolSpec = "203.0.113.8/31".parse().unwrap();
        assert_eq!(p.addresses().len(), 2, "a /31 has no network or broadcast address (RFC 3021)");
        let p: PoolSpec = "203.0.113.7/32".parse().unwrap();
        assert_eq!(p.addresses(), &[Ipv4Addr::new(203, 0, 113, 7)]);
        let p: PoolSpec = "198.51.100.250-198.51.101.2".parse().unwrap();
        assert_eq!(p.addresses().len(), 9);
        assert_eq!(p.addresses()[8], Ipv4Addr::new(198, 51, 101, 2));
        let p: PoolSpec = "192.0.2.9".parse().unwrap();
        assert_eq!(p.addresses(), &[Ipv4Addr::new(192, 0, 2, 9)]);
        for bad in
            ["203.0.113.1/24", "10.0.0.9-10.0.0.1", "10.0.0.0/8", "nonsense", "1.2.3.4/33", "1.2.3-1.2.3.4"]
        {
            assert!(bad.parse::<PoolSpec>().is_err(), "{bad}");
        }
        assert!("10.0.0.0/8".parse::<PoolSpec>().unwrap_err().contains("at most 1024"));
    }

    #[test]
    fn reserved_addresses_are_refused() {
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "0.1.2.3", "240.0.0.1"] {
            assert!(check_public_address(bad.parse().unwrap()).is_err(), "{bad}");
        }
        assert!(check_public_address(Ipv4Addr::new(198, 51, 100, 1)).is_ok());
    }

    #[test]
    fn pool_indexes_and_dedups() {
        let a = |n| Ipv4Addr::new(198, 51, 100, n);
        let p = Pool::new(&[a(1), a(2), a(1), a(3)]);
        assert_eq!(p.addresses(), &[a(1), a(2), a(3)]);
        assert_eq!(p.index_of(a(3)), Some(2));
        assert!(!p.contains(a(9)));
    }

    /// Paired pooling spreads hosts, it does not fill one address after another: 4,096 consecutive
    /// inside addresses over 4 public ones land within 10 % of an even share each, and a host always
    /// lands on the same one.
    #[test]
    fn hosts_spread_evenly_and_stably() {
        let p = Pool::new(&(1..=4).map(|n| Ipv4Addr::new(198, 51, 100, n)).collect::<Vec<_>>());
        let mut count = [0usize; 4];
        for i in 0..4096u32 {
            let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i);
            let at = p.preferred(host);
            assert_eq!(at, p.preferred(host));
            count[at] += 1;
        }
        for c in count {
            assert!((922..=1126).contains(&c), "{count:?}");
        }
        // One address: everybody on it.
        assert_eq!(spread(Ipv4Addr::new(10, 1, 2, 3), 1), 0);
    }
}
