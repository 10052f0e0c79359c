//! IPv4-embedded IPv6 addresses (RFC 6052): the NAT64 prefix, synthesis and extraction.
//!
//! Owns: which prefix lengths exist (/32 /40 /48 /56 /64 /96, RFC 6052 §2.2), where the 32 IPv4 bits go
//! around the reserved "u" octet (bits 64..71), and the Well-Known Prefix's restriction to global IPv4
//! addresses (RFC 6052 §3.1). Must not: know about flows, packets or inside hosts.
//!
//! Extraction is exact or refused: an address whose u-octet or suffix bits are not zero cannot be
//! written back from the IPv4 address alone, so a reply would come from a different address than the
//! client sent to. RFC 6052 §2.2 requires the u-octet to be zero and reserves the suffix (zero); DNS64
//! (RFC 6147) synthesises exactly this form.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The prefix lengths RFC 6052 §2.2 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrefixLen {
    L32,
    L40,
    L48,
    L56,
    L64,
    L96,
}

impl PrefixLen {
    pub const fn bits(self) -> u8 {
        match self {
            PrefixLen::L32 => 32,
            PrefixLen::L40 => 40,
            PrefixLen::L48 => 48,
            PrefixLen::L56 => 56,
            PrefixLen::L64 => 64,
            PrefixLen::L96 => 96,
        }
    }
    pub const fn from_bits(b: u8) -> Option<PrefixLen> {
        Some(match b {
            32 => PrefixLen::L32,
            40 => PrefixLen::L40,
            48 => PrefixLen::L48,
            56 => PrefixLen::L56,
            64 => PrefixLen::L64,
            96 => PrefixLen::L96,
            _ => return None,
        })
    }
    /// Byte positions (within the 16 address bytes) of the four IPv4 octets, in order (RFC 6052 §2.2,
    /// Figure 1: the octets fill the bytes after the prefix, skipping byte 8, the u-octet).
    const fn v4_bytes(self) -> [usize; 4] {
        match self {
            PrefixLen::L32 => [4, 5, 6, 7],
            PrefixLen::L40 => [5, 6, 7, 9],
            PrefixLen::L48 => [6, 7, 9, 10],
            PrefixLen::L56 => [7, 9, 10, 11],
            PrefixLen::L64 => [9, 10, 11, 12],
            PrefixLen::L96 => [12, 13, 14, 15],
        }
    }
}

/// Why an IPv6 address does not yield an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extract {
    /// Not inside the prefix.
    Outside,
    /// Bits 64..71 (the u-octet) are not zero (RFC 6052 §2.2: they MUST be).
    NonZeroU,
    /// Bits after the IPv4 address are not zero (the suffix, reserved by RFC 6052 §2.2).
    NonZeroSuffix,
    /// The Well-Known Prefix with a non-global IPv4 address (RFC 6052 §3.1: MUST NOT be translated).
    NonGlobal,
}

impl fmt::Display for Extract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Extract::Outside => "not in the NAT64 prefix",
            Extract::NonZeroU => "bits 64-71 (the u-octet) are not zero",
            Extract::NonZeroSuffix => "the suffix after the IPv4 address is not zero",
            Extract::NonGlobal => "the well-known prefix with a non-global IPv4 address",
        })
    }
}

/// The Well-Known Prefix (RFC 6052 §2.1).
pub const WELL_KNOWN: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// A NAT64 prefix: the IPv6 network IPv4 addresses are written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat64Prefix {
    net: Ipv6Addr,
    len: PrefixLen,
}

impl Nat64Prefix {
    /// A prefix from its network address and length. Errors: host bits set, or (for /64 and shorter
    /// with bits reaching the u-octet: none can) — the message names the problem.
    pub fn new(net: Ipv6Addr, len: PrefixLen) -> Result<Nat64Prefix, String> {
        let bits = u32::from(len.bits());
        let host_mask = u128::MAX.checked_shr(bits).unwrap_or(0);
        if u128::from(net) & host_mask != 0 {
            return Err(format!("{net}/{bits}: bits are set after the prefix length"));
        }
        Ok(Nat64Prefix { net, len })
    }

    /// The Well-Known Prefix 64:ff9b::/96.
    pub fn well_known() -> Nat64Prefix {
        Nat64Prefix { net: WELL_KNOWN, len: PrefixLen::L96 }
    }

    pub fn network(&self) -> Ipv6Addr {
        self.net
    }
    pub fn len(&self) -> PrefixLen {
        self.len
    }
    pub fn is_well_known(&self) -> bool {
        self.net == WELL_KNOWN && self.len == PrefixLen::L96
    }

    pub fn contains(&self, a: Ipv6Addr) -> bool {
        let bits = u32::from(self.len.bits());
        let mask = !u128::MAX.checked_shr(bits).unwrap_or(0);
        u128::from(a) & mask == u128::from(self.net)
    }

    /// The IPv4-embedded IPv6 address of `v4` (RFC 6052 §2.2): u-octet and suffix zero. Does not apply
    /// the Well-Known Prefix restriction (see [`Self::translatable`]).
    pub fn embed(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut o = self.net.octets();
        for (i, b) in self.len.v4_bytes().into_iter().zip(v4.octets()) {
            o[i] = b;
        }
        Ipv6Addr::from(o)
    }

    /// The IPv4 address embedded in `a`, refused unless `a` is exactly what [`Self::embed`] gives for
    /// it and (with the Well-Known Prefix) it is global.
    pub fn extract(&self, a: Ipv6Addr) -> Result<Ipv4Addr, Extract> {
        if !self.contains(a) {
            return Err(Extract::Outside);
        }
        let o = a.octets();
        let pos = self.len.v4_bytes();
        let v4 = Ipv4Addr::new(o[pos[0]], o[pos[1]], o[pos[2]], o[pos[3]]);
        if self.len != PrefixLen::L96 && o[8] != 0 {
            return Err(Extract::NonZeroU);
        }
        if self.embed(v4) != a {
            return Err(Extract::NonZeroSuffix);
        }
        if !self.translatable(v4) {
            return Err(Extract::NonGlobal);
        }
        Ok(v4)
    }

    /// Whether `v4` may be represented under this prefix: any address under a network-specific
    /// prefix, only global ones under the Well-Known Prefix (RFC 6052 §3.1).
    pub fn translatable(&self, v4: Ipv4Addr) -> bool {
        !self.is_well_known() || is_global(v4)
    }
}

impl fmt::Display for Nat64Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len.bits())
    }
}

impl FromStr for Nat64Prefix {
    type Err = String;
    /// `ADDR/LEN` with LEN one of 32, 40, 48, 56, 64, 96 and no bits set after it.
    fn from_str(s: &str) -> Result<Nat64Prefix, String> {
        let (addr, len) =
            s.split_once('/').ok_or_else(|| format!("{s:?}: expected ADDR/LEN, e.g. 64:ff9b::/96"))?;
        let net: Ipv6Addr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IPv6 address"))?;
        let bits: u8 = len.parse().map_err(|_| format!("{s:?}: {len:?} is not a prefix length"))?;
        let len = PrefixLen::from_bits(bits).ok_or_else(|| {
            format!("{s:?}: RFC 6052 prefix lengths are 32, 40, 48, 56, 64 and 96, not {bits}")
        })?;
        Nat64Prefix::new(net, len)
    }
}

/// Whether an IPv4 address is global: not in an RFC 6890 special-purpose block marked "Global: False"
/// (IANA IPv4 Special-Purpose Address Registry), and not multicast or broadcast.
pub fn is_global(a: Ipv4Addr) -> bool {
    let v = u32::from(a);
    let within = |net: [u8; 4], len: u32| {
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        v & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    // 192.0.0.9 (PCP anycast, RFC 7723) and 192.0.0.10 (TURN anycast, RFC 8155) are global inside the
    // otherwise non-global 192.0.0.0/24.
    if v == u32::from(Ipv4Addr::new(192, 0, 0, 9)) || v == u32::from(Ipv4Addr::new(192, 0, 0, 10)) {
        return true;
    }
    const NON_GLOBAL: [([u8; 4], u32); 15] = [
        ([0, 0, 0, 0], 8),       // "this network" (RFC 791)
        ([10, 0, 0, 0], 8),      // private (RFC 1918)
        ([100, 64, 0, 0], 10),   // shared address space (RFC 6598)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link local (RFC 3927)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments (RFC 6890)
        ([192, 0, 2, 0], 24),    // TEST-NET-1 (RFC 5737)
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast, deprecated (RFC 7526)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
        ([198, 51, 100, 0], 24), // TEST-NET-2
        ([203, 0, 113, 0], 24),  // TEST-NET-3
        ([224, 0, 0, 0], 4),     // multicast: not a unicast host to translate to
        ([240, 0, 0, 0], 4),     // reserved (RFC 1112), and 255.255.255.255
    ];
    !NON_GLOBAL.iter().any(|&(net, len)| within(net, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Nat64Prefix {
        s.parse().unwrap()
    }
    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// RFC 6052 §2.4, Table 2: 192.0.2.33 under 2001:db8:100::/40 etc.
    #[test]
    fn rfc6052_table_2() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        let rows = [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
        ];
        for (prefix, want) in rows {
            let pre = p(prefix);
            assert_eq!(pre.embed(v4), a6(want), "{prefix}");
            assert_eq!(pre.extract(a6(want)), Ok(v4), "{prefix}");
            assert_eq!(pre.to_string(), prefix);
        }
        assert_eq!(Nat64Prefix::well_known().embed(Ipv4Addr::new(192, 0, 2, 33)), a6("64:ff9b::c000:221"));
    }

    #[test]
    fn refusals() {
        let pre = p("2001:db8:122:344::/64");
        // u-octet set.
        assert_eq!(pre.extract(a6("2001:db8:122:344:ffc0:2:2100:0")), Err(Extract::NonZeroU));
        // Suffix set.
        assert_eq!(pre.extract(a6("2001:db8:122:344:c0:2:2100:1")), Err(Extract::NonZeroSuffix));
        assert_eq!(pre.extract(a6("2001:db8:122:345::")), Err(Extract::Outside));
        let pre = p("2001:db8::/32");
        assert_eq!(pre.extract(a6("2001:db8:c000:221:0:1::")), Err(Extract::NonZeroSuffix));
        // /96 has no u-octet: byte 8 is prefix.
        let wkp = Nat64Prefix::well_known();
        assert_eq!(wkp.extract(a6("64:ff9b::8.8.8.8")), Ok(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(wkp.extract(a6("64:ff9b::10.0.0.1")), Err(Extract::NonGlobal));
        assert_eq!(wkp.extract(a6("64:ff9b::198.51.100.2")), Err(Extract::NonGlobal));
        // The local-use prefix (RFC 8215) is network-specific: any IPv4 address.
        let local = p("64:ff9b:1::/96");
        assert!(!local.is_well_known());
        assert_eq!(local.extract(a6("64:ff9b:1::198.51.100.2")), Ok(Ipv4Addr::new(198, 51, 100, 2)));
        assert_eq!(local.extract(a6("64:ff9b::198.51.100.2")), Err(Extract::Outside));
        assert!(Extract::NonZeroU.to_string().contains("u-octet"));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        for (s, frag) in [
            ("64:ff9b::/95", "not 95"),
            ("64:ff9b::1/96", "bits are set"),
            ("64:ff9b::", "ADDR/LEN"),
            ("10.0.0.0/96", "not an IPv6 address"),
            ("64:ff9b::/x", "not a prefix length"),
            ("2001:db8::1:0:0/64", "bits are set"),
        ] {
            let e = s.parse::<Nat64Prefix>().unwrap_err();
            assert!(e.contains(frag), "{s}: {e}");
        }
        for len in [32, 40, 48, 56, 64, 96] {
            assert!(format!("2001:db8::/{len}").parse::<Nat64Prefix>().is_ok());
        }
    }

    #[test]
    fn global_addresses() {
        for g in ["8.8.8.8", "1.1.1.1", "192.0.0.9", "192.0.0.10", "193.0.0.1", "100.128.0.1", "172.32.0.1"] {
            assert!(is_global(g.parse().unwrap()), "{g}");
        }
        for n in [
            "0.1.2.3",
            "10.9.9.9",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global(n.parse().unwrap()), "{n}");
        }
    }

    proptest! {
        #[test]
        fn embed_extract_roundtrip(v4 in any::<u32>(), net in any::<u128>(), len in prop::sample::select(vec![32u8, 40, 48, 56, 64, 96])) {
            let len = PrefixLen::from_bits(len).unwrap();
            let mask = !u128::MAX.checked_shr(u32::from(len.bits())).unwrap_or(0);
            let pre = Nat64Prefix::new(Ipv6Addr::from(net & mask), len).unwrap();
            let v4 = Ipv4Addr::from(v4);
            let a = pre.embed(v4);
            prop_assert!(pre.contains(a));
            if len != PrefixLen::L96 {
                prop_assert_eq!(a.octets()[8], 0, "u-octet");
            }
            if pre.is_well_known() && !is_global(v4) {
                prop_assert_eq!(pre.extract(a), Err(Extract::NonGlobal));
            } else {
                prop_assert_eq!(pre.extract(a), Ok(v4));
            }
        }

        #[test]
        fn any_other_address_in_the_prefix_is_refused(v4 in any::<u32>(), noise in 1u128.., len in prop::sample::select(vec![32u8, 40, 48, 56, 64, 96])) {
            let len = PrefixLen::from_bits(len).unwrap();
            let pre = Nat64Prefix::new(a6("2001:db8::"), len).unwrap();
            let a = pre.embed(Ipv4Addr::from(v4));
            let host = u128::MAX.checked_shr(u32::from(len.bits())).unwrap_or(0);
            // Flip bits outside the prefix and outside the IPv4 octets: u-octet or suffix.
            let mut v4_mask = 0u128;
            for i in len.v4_bytes() {
                v4_mask |= 0xffu128 << (8 * (15 - i));
            }
            let flip = noise & host & !v4_mask;
            prop_assume!(flip != 0);
            let b = Ipv6Addr::from(u128::from(a) ^ flip);
            prop_assert!(matches!(pre.extract(b), Err(Extract::NonZeroU | Extract::NonZeroSuffix)));
        }
    }
}
