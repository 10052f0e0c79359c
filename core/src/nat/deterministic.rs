//! Deterministic NAT (RFC 7422): every inside address owns a public address and a port range that
//! can be computed from the configuration alone, both ways, so no allocation log is needed.
//!
//! Owns: the layout (which inside address gets which public address and ports) and its inverse.
//! Must not: allocate ports within a host's range (the allocator does) or keep state: the mapping is a
//! pure function of the inside prefixes, the pool, the port range and the block size.
//!
//! Layout. The inside space is the `--inside` prefixes one after another, every address of each
//! (inside address number `i`, from 0). With `A` public addresses and `K` blocks of `size` ports per
//! address (`K = floor(range / size)`), inside address `i` gets public address number `i mod A` and
//! block `i div A` of it: ports `lo + (i div A)·size ..= lo + (i div A + 1)·size − 1`. Successive inside
//! addresses therefore land on successive public addresses (a partly used inside space still spreads
//! over the whole pool); RFC 7422 §2 leaves the order to the implementation (VPP's det44, for
//! instance, puts consecutive inside addresses on the same public address). The inverse: public
//! address number `a`, port `p` in block `b = (p − lo) div size` belongs to inside address number
//! `b·A + a`, if that is below the inside space's size. Configuration validation refuses an inside space
//! bigger than `A·K` (`Deterministic::new`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::ports::PortRange;

/// What one inside address owns in deterministic mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub public: Ipv4Addr,
    pub ports: PortRange,
}

/// The RFC 7422 layout for one configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deterministic {
    /// The inside prefixes and the inside address number each starts at.
    inside: Vec<(Ipv4Net, u64)>,
    /// Inside addresses in all.
    hosts: u64,
    pool: Vec<Ipv4Addr>,
    range: PortRange,
    size: u16,
}

impl Deterministic {
    /// The layout of `inside` over `pool` with `size` ports per inside address taken from `range`.
    /// `size: None` picks the largest size that fits every inside address. The error says why the
    /// inside space does not fit.
    pub fn new(
        inside: &[Ipv4Net],
        pool: &[Ipv4Addr],
        range: PortRange,
        size: Option<u16>,
    ) -> Result<Deterministic, String> {
        if pool.is_empty() {
            return Err("no public address".into());
        }
        for (i, a) in inside.iter().enumerate() {
            if let Some(b) = inside[..i].iter().find(|b| b.contains(a) || a.contains(*b)) {
                return Err(format!("inside prefixes {b} and {a} overlap: an address would own two ranges"));
            }
        }
        let mut at = 0u64;
        let mut list = Vec::new();
        for n in inside {
            list.push((*n, at));
            at += 1u64 << (32 - n.prefix_len());
        }
        let hosts = at;
        if hosts == 0 {
            return Err("no inside prefix".into());
        }
        let a = pool.len() as u64;
        let per_addr_needed = hosts.div_ceil(a);
        let size = match size {
            Some(s) => s,
            None => {
                let s = u64::from(range.len()) / per_addr_needed;
                u16::try_from(s.min(u64::from(u16::MAX))).unwrap_or(u16::MAX)
            }
        };
        if size == 0 {
            return Err(format!(
                "{hosts} inside addresses over {a} public addresses need {per_addr_needed} ranges of the \
                 {} ports of each: fewer than one port each",
                range.len()
            ));
        }
        let per_addr = u64::from(range.len()) / u64::from(size);
        if per_addr * a < hosts {
            return Err(format!(
                "{hosts} inside addresses need {hosts} ranges of {size} ports, but {a} public addresses \
                 with ports {range} hold only {} (at most {} ports each would fit)",
                per_addr * a,
                u64::from(range.len()) / per_addr_needed
            ));
        }
        Ok(Deterministic { inside: list, hosts, pool: pool.to_vec(), range, size })
    }

    /// Ports each inside address owns.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Inside addresses covered.
    pub fn hosts(&self) -> u64 {
        self.hosts
    }

    fn number(&self, inside: Ipv4Addr) -> Option<u64> {
        self.inside
            .iter()
            .find(|(n, _)| n.contains(&inside))
            .map(|(n, start)| start + u64::from(u32::from(inside) - u32::from(n.network())))
    }

    fn address(&self, i: u64) -> Option<Ipv4Addr> {
        if i >= self.hosts {
            return None;
        }
        let (n, start) = self.inside.iter().rev().find(|(_, start)| *start <= i)?;
        Some(Ipv4Addr::from(u32::from(n.network()) + (i - start) as u32))
    }

    /// The public address and ports of `inside`; `None` for an address outside the inside prefixes.
    pub fn forward(&self, inside: Ipv4Addr) -> Option<Share> {
        let i = self.number(inside)?;
        let a = self.pool.len() as u64;
        let block = i / a;
        let first = u64::from(self.range.first()) + block * u64::from(self.size);
        let last = first + u64::from(self.size) - 1;
        Some(Share {
            public: self.pool[(i % a) as usize],
            ports: PortRange::new(first as u16, u16::try_from(last).ok()?)?,
        })
    }

    /// The inside address that owns `port` on `public`, if any does.
    pub fn reverse(&self, public: Ipv4Addr, port: u16) -> Option<Ipv4Addr> {
        let a = self.pool.iter().position(|&p| p == public)? as u64;
        if !self.range.contains(port) {
            return None;
        }
        let block = u64::from(port - self.range.first()) / u64::from(self.size);
        self.address(block * self.pool.len() as u64 + a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect()
    }

    #[test]
    fn the_layout_spreads_then_stacks_and_inverts() {
        let inside: Vec<Ipv4Net> = vec!["100.64.0.0/28".parse().unwrap()];
        let d = Deterministic::new(&inside, &pool(4), PortRange::new(1024, 65535).unwrap(), None).unwrap();
        // 16 hosts over 4 addresses: 4 ranges per address, 64512 / 4 = 16128 ports each.
        assert_eq!(d.size(), 16128);
        let s = d.forward(Ipv4Addr::new(100, 64, 0, 0)).unwrap();
        assert_eq!(
            (s.public, s.ports),
            (Ipv4Addr::new(198, 51, 100, 1), PortRange::new(1024, 17151).unwrap())
        );
        let s = d.forward(Ipv4Addr::new(100, 64, 0, 1)).unwrap();
        assert_eq!(s.public, Ipv4Addr::new(198, 51, 100, 2), "the next host on the next address");
        let s = d.forward(Ipv4Addr::new(100, 64, 0, 5)).unwrap();
        assert_eq!(
            (s.public, s.ports),
            (Ipv4Addr::new(198, 51, 100, 2), PortRange::new(17152, 33279).unwrap())
        );
        assert_eq!(d.reverse(Ipv4Addr::new(198, 51, 100, 2), 20000), Some(Ipv4Addr::new(100, 64, 0, 5)));
        assert_eq!(d.reverse(Ipv4Addr::new(198, 51, 100, 2), 1000), None, "below the range");
        assert_eq!(d.reverse(Ipv4Addr::new(198, 51, 100, 9), 20000), None, "not ours");
        assert_eq!(d.forward(Ipv4Addr::new(100, 64, 0, 16)), None, "not inside");
    }

    #[test]
    fn a_space_that_does_not_fit_is_refused_with_the_numbers() {
        let inside: Vec<Ipv4Net> = vec!["100.64.0.0/16".parse().unwrap()];
        let range = PortRange::new(1024, 65535).unwrap();
        let e = Deterministic::new(&inside, &pool(2), range, Some(2048)).unwrap_err();
        assert!(e.contains("65536 inside addresses") && e.contains("at most 1 ports each"), "{e}");
        assert_eq!(Deterministic::new(&inside, &pool(2), range, None).map(|d| d.size()), Ok(1));
        let e = Deterministic::new(&inside, &pool(1), range, None).unwrap_err();
        assert!(e.contains("fewer than one port each"), "{e}");
        let overlapping: Vec<Ipv4Net> =
            vec!["10.0.0.0/24".parse().unwrap(), "10.0.0.128/25".parse().unwrap()];
        assert!(Deterministic::new(&overlapping, &pool(2), range, None).unwrap_err().contains("overlap"));
    }

    proptest! {
        /// RFC 7422's promise: the mapping computes both ways. Every inside address gets a share inside
        /// the range, on a pool address, and the reverse of every port of that share is the address;
        /// two inside addresses never share a (public address, port).
        #[test]
        fn the_layout_is_a_bijection(
            prefixes in proptest::collection::vec((0u32..64, 24u8..=30), 1..4),
            addrs in 1u8..6, lo in 1024u16..2048, span in 4000u16..30000, size in proptest::option::of(1u16..600),
        ) {
            let mut inside: Vec<Ipv4Net> = prefixes.iter()
                .map(|&(k, len)| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (k << 10)), len).unwrap().trunc())
                .collect();
            inside.dedup();
            let range = PortRange::new(lo, lo + span).unwrap();
            let Ok(d) = Deterministic::new(&inside, &pool(addrs), range, size) else { return Ok(()) };
            let mut seen = std::collections::HashSet::new();
            for n in &inside {
                for host in n.hosts().chain([n.network(), n.broadcast()]) {
                    if !seen.insert(host) { continue; }
                    let s = d.forward(host).unwrap();
                    prop_assert!(range.contains(s.ports.first()) && range.contains(s.ports.last()));
                    prop_assert_eq!(s.ports.len(), u32::from(d.size()));
                    for p in [s.ports.first(), s.ports.last(), s.ports.first() + (s.ports.len() / 2) as u16] {
                        prop_assert_eq!(d.reverse(s.public, p), Some(host));
                    }
                }
            }
            // Every (address, port) of the range reverses to at most one inside address, whose share holds it.
            for &a in &pool(addrs) {
                for p in range.iter().step_by(97) {
                    if let Some(h) = d.reverse(a, p) {
                        let s = d.forward(h).unwrap();
                        prop_assert!(s.public == a && s.ports.contains(p));
                    }
                }
            }
        }
    }
}
