//! Validated configuration: what the engine needs to know about the network and its policy.
//!
//! Owns: [`Config`] and its validation (every error names the flag it came from), the `--forward` and
//! CIDR syntax. Must not: open devices, read files or parse command lines (that is `main.rs`); the
//! engine trusts a `Config` that passed [`Config::validate`].

use core::time::Duration;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::flow::Proto;
use crate::nat::{self, Allocation, Deterministic, PortRange};

/// A static port forward (DNAT): `proto:[PUBLICIP:]PUBLICPORT=INSIDEIP:PORT`, or with NAT64 to an
/// IPv6 inside host `proto:[PUBLICIP:]PUBLICPORT=[INSIDEIPV6]:PORT` (RFC 6146 §3.5's static BIB entry).
#[derive(Debug, Clone, Copy, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forward {
    pub proto: Proto,
    /// The pool address it listens on (issue 16); `None`: the first, `--public-ip`.
    pub public_addr: Option<Ipv4Addr>,
    pub public_port: u16,
    /// The IPv4 inside host. For a forward to an IPv6 host (`inside6`), the host's NAT64 stand-in
    /// address, which the engine assigns when it takes the forward ([`Forward::UNRESOLVED`] until then):
    /// the IPv4 path then treats the forward like any other.
    pub inside_addr: Ipv4Addr,
    pub inside_port: u16,
    /// NAT64 (issue 14): the IPv6 inside host the forward reaches.
    pub inside6: Option<Ipv6Addr>,
}

impl Forward {
    /// `inside_addr` of a forward to an IPv6 host before the engine gave the host its stand-in.
    pub const UNRESOLVED: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    /// Whether `self` and `other` forward to the same inside host.
    pub fn same_host(&self, other: &Forward) -> bool {
        match (self.inside6, other.inside6) {
            (None, None) => self.inside_addr == other.inside_addr,
            (a, b) => a == b,
        }
    }
}

/// Two forwards are the same rule when they name the same things: an IPv6 host's stand-in is the
/// engine's business, not part of the rule (a resolved forward equals the one it was parsed as).
impl PartialEq for Forward {
    fn eq(&self, o: &Forward) -> bool {
        self.proto == o.proto
            && self.public_addr == o.public_addr
            && self.public_port == o.public_port
            && self.inside_port == o.inside_port
            && self.same_host(o)
    }
}

impl FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "'{s}': expected PROTO:[PUBLICIP:]PUBLICPORT=INSIDEIP:PORT, e.g. tcp:2121=10.0.0.2:21, \
                 tcp:198.51.100.2:2121=10.0.0.2:21 or (NAT64) tcp:2121=[2001:db8::10]:21"
            )
        };
        let (proto, rest) = s.split_once(':').ok_or_else(err)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(format!("'{s}': protocol '{other}' is not tcp or udp")),
        };
        let (public, inside) = rest.split_once('=').ok_or_else(err)?;
        let (public_addr, public) = match public.rsplit_once(':') {
            Some((a, p)) => {
                let a = a.parse().map_err(|_| format!("'{s}': '{a}' is not an IPv4 address"))?;
                (Some(a), p)
            }
            None => (None, public),
        };
        let public_port = parse_port(public).map_err(|e| format!("'{s}': public port {e}"))?;
        let (addr, port) = inside.rsplit_once(':').ok_or_else(err)?;
        let (inside_addr, inside6) = if let Some(a6) = addr.strip_prefix('[') {
            // An IPv6 host is bracketed, as in a URL (RFC 3986 §3.2.2), so its port stays apart.
            let a6 = a6.strip_suffix(']').ok_or_else(|| format!("'{s}': '{addr}' lacks its closing ']'"))?;
            let a6: Ipv6Addr = a6.parse().map_err(|_| format!("'{s}': '{a6}' is not an IPv6 address"))?;
            (Forward::UNRESOLVED, Some(a6))
        } else if addr.contains(':') {
            return Err(format!("'{s}': an IPv6 inside host is written in brackets: =[2001:db8::10]:PORT"));
        } else {
            (addr.parse().map_err(|_| format!("'{s}': '{addr}' is not an IPv4 address"))?, None)
        };
        let inside_port = parse_port(port).map_err(|e| format!("'{s}': inside port {e}"))?;
        Ok(Forward { proto, public_addr, public_port, inside_addr, inside_port, inside6 })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.proto)?;
        if let Some(a) = self.public_addr {
            write!(f, "{a}:")?;
        }
        match self.inside6 {
            Some(a6) => write!(f, "{}=[{a6}]:{}", self.public_port, self.inside_port),
            None => write!(f, "{}={}:{}", self.public_port, self.inside_addr, self.inside_port),
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("0 is not a usable port".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("'{s}' is not a port number (1-65535)")),
    }
}

/// Parses `LOW-HIGH` into a port range.
/// The largest `--max-flows` accepted.
pub const MAX_FLOWS_LIMIT: usize = 1 << 24;

pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("'{s}': expected LOW-HIGH, e.g. 1024-65535"))?;
    let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
    if lo > hi {
        return Err(format!("'{s}': low end {lo} is above high end {hi}"));
    }
    Ok(lo..=hi)
}

/// Idle timeouts per protocol state.
///
/// A flow gets its protocol's long timeout only once both sides have spoken; until then the short
/// `*_unreplied` one applies (never longer than the long one), so a flood of unanswered SYNs, bare
/// ACKs picked up mid-stream or datagrams nobody answers gives its public ports back within a minute
/// instead of holding them for hours (Linux conntrack likewise: `nf_conntrack_udp_timeout` 30 s against
/// 120 s for a stream, `tcp_timeout_syn_sent` 120 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// RFC 5382 REQ-5: at least 2 h 4 min for an established TCP connection.
    pub tcp_established: Duration,
    /// RFC 5382 REQ-5: 4 min for partially open or closing connections.
    pub tcp_transitory: Duration,
    /// After both FINs or an RST the mapping goes promptly.
    pub tcp_closed: Duration,
    /// RFC 4787 REQ-5: at least 2 min.
    pub udp: Duration,
    /// ICMP query (echo) sessions.
    pub icmp: Duration,
    /// A TCP flow whose other side never answered: a SYN nobody acknowledged, a connection picked up
    /// mid-stream from one side only. 60 s outlasts every gap of a client's SYN retransmissions (1, 2,
    /// 4, ... 32 s), so an answer that comes late still finds its mapping.
    pub tcp_unreplied: Duration,
    /// A UDP flow that never saw an answer (Linux: 30 s). RFC 4787 REQ-5's two minutes protect
    /// mappings that carry a conversation; one nobody answered is not one yet.
    pub udp_unreplied: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(7440),
            tcp_transitory: Duration::from_secs(240),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
            tcp_unreplied: Duration::from_secs(60),
            udp_unreplied: Duration::from_secs(30),
        }
    }
}

/// `--max-ports-per-host`: how many public ports one inside host's mappings may hold, per protocol
/// (RFC 6888 REQ-4: a NAT must be able to limit the external ports, and ICMP identifiers, each
/// subscriber gets). Endpoint-independent mapping spends one port per inside endpoint whatever the
/// destinations, and an FTP pinhole's port is a mapping too, so this counts mappings, not flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortQuota {
    /// At most this many ports.
    Ports(u32),
    /// This share of `--port-range`, in hundredths of a percent (625 = 6.25 % = 1/16), but never
    /// fewer than [`PortQuota::FLOOR`] ports.
    Share(u16),
}

impl PortQuota {
    /// One sixteenth of the range: 4,032 of the default 64,512 ports. See the README ("Sharing the
    /// public ports") for why.
    pub const DEFAULT: PortQuota = PortQuota::Share(625);
    /// A share never comes to fewer ports than this (a narrow `--port-range` must still leave every
    /// host a few applications' worth; ports kept outside the range count too).
    pub const FLOOR: usize = 64;

    /// The number of ports this quota allows with public ports taken from `range`.
    pub fn ports(self, range: &RangeInclusive<u16>) -> usize {
        match self {
            PortQuota::Ports(n) => n as usize,
            PortQuota::Share(bp) => {
                let len = (*range.end() as usize + 1).saturating_sub(*range.start() as usize);
                (len * bp as usize / 10_000).max(Self::FLOOR)
            }
        }
    }
}

impl FromStr for PortQuota {
    type Err = String;
    /// `N` ports, or `P%` of the port range (up to two decimals: `6.25%`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let bad = || format!("'{s}': expected a share of the port range from 0.01% to 100%, e.g. 6.25%");
            let (whole, frac) = p.trim().split_once('.').unwrap_or((p.trim(), ""));
            if whole.is_empty()
                || frac.len() > 2
                || !(whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()))
            {
                return Err(bad());
            }
            let whole: u32 = whole.parse().map_err(|_| bad())?;
            let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
            let bp = whole.checked_mul(100).and_then(|w| w.checked_add(frac)).ok_or_else(bad)?;
            return match bp {
                1..=10_000 => Ok(PortQuota::Share(bp as u16)),
                _ => Err(bad()),
            };
        }
        match s.parse::<u32>() {
            Ok(0) => Err(format!("'{s}': a host needs at least 1 port")),
            Ok(n) if n <= 65_536 => Ok(PortQuota::Ports(n)),
            _ => Err(format!(
                "'{s}': expected a number of ports (1-65536) or a share of the port range, e.g. 6.25%"
            )),
        }
    }
}

impl fmt::Display for PortQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PortQuota::Ports(n) => write!(f, "{n}"),
            PortQuota::Share(bp) if bp % 100 == 0 => write!(f, "{}%", bp / 100),
            PortQuota::Share(bp) => write!(f, "{}.{:02}%", bp / 100, bp % 100),
        }
    }
}

/// FTP ALG policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpPolicy {
    pub enabled: bool,
    /// Server ports of FTP control connections (for a forwarded inside server: its inside port).
    pub ports: Vec<u16>,
    pub pinhole_timeout: Duration,
    /// Outstanding pinholes per control connection; beyond it the oldest goes.
    pub max_pinholes_per_conn: usize,
    /// Outstanding pinholes per inside host, across its control connections.
    pub max_pinholes_per_host: usize,
    /// Refuse PORT/EPRT naming a port below 1024 (RFC 2577 §3).
    pub refuse_low_ports: bool,
    /// How long a candidate line may wait for its end before it is released as sent.
    pub hold_timeout: Duration,
    /// Longest candidate line the ALG holds (bytes, line end included).
    pub max_line: usize,
}

impl Default for FtpPolicy {
    fn default() -> Self {
        FtpPolicy {
            enabled: true,
            ports: vec![21],
            pinhole_timeout: Duration::from_secs(60),
            max_pinholes_per_conn: 8,
            max_pinholes_per_host: 64,
            refuse_low_ports: true,
            hold_timeout: Duration::from_secs(2),
            max_line: 512,
        }
    }
}

/// How the public side is shared out (issue 16): the address pool, how ports are handed out, and
/// whether every connection is logged besides the blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Every public address, in order: each `--public-ip`, then each `--public-pool`'s addresses. The
    /// first is [`Config::public_ip`], the gateway's own address on the outside (the source of the
    /// ICMP errors it sends there).
    pub addresses: Vec<Ipv4Addr>,
    /// One port at a time (default), port blocks (`--port-block-size`), or RFC 7422's deterministic
    /// layout (`--deterministic`).
    pub allocation: Allocation,
    /// `--nat-log-sessions`: one record per connection as well as the block records.
    pub log_sessions: bool,
}

/// The whole engine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--inside`: source prefixes translated to the public address.
    pub inside: Vec<Ipv4Net>,
    /// `--public-ip`: the gateway's outside address.
    pub public_ip: Ipv4Addr,
    /// The gateway's own address on the LAN side, source of the ICMP errors it sends inside.
    pub lan_ip: Ipv4Addr,
    /// `--port-range`: outside ports handed out when the inside port is taken.
    pub port_range: RangeInclusive<u16>,
    pub forwards: Vec<Forward>,
    /// `--max-flows`: connection table bound.
    pub max_flows: usize,
    /// `--max-flows-per-host`: flows (table entries) one inside host may hold, whatever their ports.
    pub max_flows_per_host: usize,
    /// `--max-ports-per-host`: public ports (mappings) one inside host may hold, per protocol.
    pub max_ports_per_host: PortQuota,
    pub timeouts: Timeouts,
    /// Egress MTU per side, indexed by `Side::index()`.
    pub mtu: [u16; 2],
    /// Originate packets of our own: ICMP errors (time exceeded, fragmentation needed) and echo
    /// replies. Off in replay, where they are counted as suppressed.
    pub send_icmp_errors: bool,
    /// Verify IPv4 header checksums of arriving packets.
    pub verify_ip_checksum: bool,
    /// Translate addresses and ports. Off only for the forward-only benchmark ceiling.
    pub translate: bool,
    pub ftp: FtpPolicy,
    /// Which of `--workers` engines this is (issue 18): its NAT hands out only the public ports of its
    /// slice ([`crate::steer::slice_of`]). [`Shard::ONE`] for a gateway with one engine.
    pub shard: Shard,
    /// `--nat64-prefix` / `--inside6`: stateful NAT64 for IPv6 LAN hosts (issue 14). `None`: an IPv6
    /// packet is dropped as `not_ipv4`, as always.
    pub nat64: Option<crate::nat64::Nat64Config>,
    /// The public address pool and port allocation.
    pub pool: PoolConfig,
}

/// One engine's place among the engines of a gateway that runs several side by side (`--workers N`):
/// engine `index` of `count`. Plain data so that every engine's configuration says which it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u16,
    pub count: u16,
}

impl Shard {
    /// The only engine: every port is its own.
    pub const ONE: Shard = Shard { index: 0, count: 1 };
    /// The most engines (`--workers`) a gateway runs: a TUN device has at most 256 queues, and each
    /// engine needs a slice of the port range of some size.
    pub const MAX_COUNT: u16 = 64;

    /// Every engine of a gateway with `count` of them.
    pub fn all(count: u16) -> impl Iterator<Item = Shard> {
        (0..count).map(move |index| Shard { index, count })
    }
}

impl Config {
    /// This configuration for engine `shard` of a gateway running several: its slice of the ports, and
    /// its share of `--max-flows` (the gateway's table bound, cut evenly and rounded up, so that the
    /// engines together hold about as many flows as one engine would). Per-host limits need no share:
    /// every inside host's flows and mappings live in one engine (`steer::host_worker`).
    pub fn for_shard(&self, shard: Shard) -> Config {
        let mut c = self.clone();
        c.shard = shard;
        c.max_flows = self.max_flows.div_ceil(usize::from(shard.count.max(1)));
        c
    }
}

impl Config {
    /// A configuration with defaults for everything but the two things nobody can guess.
    pub fn new(inside: Vec<Ipv4Net>, public_ip: Ipv4Addr) -> Config {
        let lan_ip = inside.first().map(|n| first_host(*n)).unwrap_or(Ipv4Addr::UNSPECIFIED);
        Config {
            inside,
            public_ip,
            lan_ip,
            port_range: 1024..=65535,
            forwards: Vec::new(),
            max_flows: 262_144,
            // A sixteenth of the default table, above the 3 x 4,032 mappings the default port shares
            // allow (so ports are what a port-hungry flood runs into): it bounds the flows that share
            // a mapping (one socket talking to many peers) and those through a forward.
            max_flows_per_host: 16_384,
            max_ports_per_host: PortQuota::DEFAULT,
            timeouts: Timeouts::default(),
            mtu: [1500, 1500],
            send_icmp_errors: true,
            verify_ip_checksum: true,
            translate: true,
            ftp: FtpPolicy::default(),
            shard: Shard::ONE,
            nat64: None,
            pool: PoolConfig {
                addresses: vec![public_ip],
                allocation: Allocation::Dynamic,
                log_sessions: false,
            },
        }
    }

    /// What the NAT allocator is built from, for the whole `--port-range` (a worker narrows it with a
    /// slice).
    pub fn nat_setup(&self) -> nat::Setup {
        nat::Setup {
            pool: self.pool.addresses.clone(),
            range: PortRange::try_from(&self.port_range)
                .unwrap_or(PortRange::new(1024, 65535).expect("valid")),
            // One engine of several hands out only its slice's ports (issue 18, `steer::slice_range`);
            // in deterministic mode a host's whole range is its worker's (`steer::DetRule`).
            slice: (self.shard.count > 1
                && !matches!(self.pool.allocation, Allocation::Deterministic { .. }))
            .then(|| crate::steer::slice_range(&self.port_range, self.shard.count, self.shard.index))
            .and_then(|r| PortRange::try_from(&r).ok()),
            allocation: self.pool.allocation,
            inside: self.inside.clone(),
            host_quota: self.ports_per_host(),
        }
    }

    /// Public ports (mappings) one inside host may hold per protocol, `--max-ports-per-host` resolved.
    pub fn ports_per_host(&self) -> usize {
        self.max_ports_per_host.ports(&self.port_range)
    }

    /// True if `addr` is in one of the inside prefixes.
    pub fn is_inside(&self, addr: Ipv4Addr) -> bool {
        self.inside.iter().any(|n| n.contains(&addr))
    }

    /// Checks the configuration as a whole. The error names the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.inside.is_empty() {
            return Err("--inside: at least one inside prefix is required".into());
        }
        if self.public_ip.is_unspecified() || self.public_ip.is_broadcast() || self.public_ip.is_multicast() {
            return Err(format!("--public-ip: {} cannot be a host's address", self.public_ip));
        }
        if let Some(n) = self.inside.iter().find(|n| n.contains(&self.public_ip)) {
            return Err(format!("--public-ip: {} lies inside --inside {n}", self.public_ip));
        }
        for f in &self.forwards {
            match (f.inside6, &self.nat64) {
                (None, _) if !self.is_inside(f.inside_addr) => {
                    return Err(format!("--forward {f}: {} is not in any --inside prefix", f.inside_addr));
                }
                (None, _) => {}
                (Some(_), None) => {
                    return Err(format!(
                        "--forward {f}: an IPv6 inside host needs --nat64-prefix (and --inside6)"
                    ));
                }
                (Some(a6), Some(n)) if !n.is_inside6(a6) || a6 == n.lan_ip6 => {
                    return Err(format!("--forward {f}: {a6} is not a host of any --inside6 prefix"));
                }
                (Some(_), Some(_)) => {}
            }
        }
        if let Some(n) = &self.nat64 {
            // Each IPv6 forward target holds a stand-in for good: within the per-/64 share.
            let mut hosts: Vec<Ipv6Addr> = self.forwards.iter().filter_map(|f| f.inside6).collect();
            hosts.sort_unstable();
            hosts.dedup();
            for h in &hosts {
                let sub = u128::from(*h) >> 64;
                if hosts.iter().filter(|g| u128::from(**g) >> 64 == sub).count() > n.max_per_64 as usize {
                    return Err(format!(
                        "--forward: more than {} IPv6 inside hosts of one /64 are forwarded to (the NAT64 \
                         per-/64 limit)",
                        n.max_per_64
                    ));
                }
            }
        }
        for (i, a) in self.forwards.iter().enumerate() {
            if self.forwards[..i].iter().any(|b| {
                a.proto == b.proto
                    && a.public_port == b.public_port
                    && self.forward_addr(a) == self.forward_addr(b)
            }) {
                return Err(format!("--forward {a}: public port {} is forwarded twice", a.public_port));
            }
        }
        if self.port_range.start() > self.port_range.end() {
            return Err("--port-range: empty range".into());
        }
        if self.max_flows == 0 {
            return Err("--max-flows: must be at least 1".into());
        }
        if self.max_flows > MAX_FLOWS_LIMIT {
            // The table's index is allocated for the bound at start (~10 B a flow), and a flow takes
            // ~125 B when present: 16 M flows is 2 GB of state.
            return Err(format!("--max-flows: {} is above the supported {MAX_FLOWS_LIMIT}", self.max_flows));
        }
        if self.max_flows_per_host == 0 {
            return Err("--max-flows-per-host: must be at least 1".into());
        }
        for (side, mtu) in ["--lan-mtu", "--wan-mtu"].iter().zip(self.mtu) {
            if mtu < 576 {
                return Err(format!("{side}: {mtu} is below the IPv4 minimum of 576 (RFC 791)"));
            }
        }
        if self.ftp.ports.contains(&990) {
            return Err(
                "--ftp-port: 990 is implicit FTPS (TLS from the first byte); the ALG cannot read it".into()
            );
        }
        if self.ftp.ports.contains(&0) {
            return Err("--ftp-port: 0 is not a port".into());
        }
        if self.ftp.max_pinholes_per_conn == 0 {
            return Err("--ftp-max-pinholes: must be at least 1".into());
        }
        let t = &self.timeouts;
        for (flag, d) in [
            ("--tcp-established-timeout", t.tcp_established),
            ("--tcp-transitory-timeout", t.tcp_transitory),
            ("--udp-timeout", t.udp),
            ("--icmp-timeout", t.icmp),
            ("--tcp-unreplied-timeout", t.tcp_unreplied),
            ("--udp-unreplied-timeout", t.udp_unreplied),
            ("--ftp-pinhole-timeout", self.ftp.pinhole_timeout),
        ] {
            check_timeout(flag, d)?;
        }
        if self.ftp.max_line < 64 {
            return Err("--ftp-max-line: must be at least 64 bytes".into());
        }
        let Shard { index, count } = self.shard;
        if count == 0 || count > Shard::MAX_COUNT {
            return Err(format!("--workers: {count} is not between 1 and {}", Shard::MAX_COUNT));
        }
        if index >= count {
            return Err(format!("--workers: engine {index} of {count} does not exist"));
        }
        let ports = usize::from(*self.port_range.end()) + 1 - usize::from(*self.port_range.start());
        if usize::from(count) > ports {
            // Every engine needs at least one port of the range to hand out.
            return Err(format!(
                "--workers: {count} workers need at least {count} ports in --port-range, which has {ports}"
            ));
        }
        if let Some(n) = &self.nat64 {
            n.validate(&self.inside)?;
            let lan_mtu = self.mtu[crate::flow::Side::Inside.index()];
            if lan_mtu < 1280 {
                return Err(format!(
                    "--lan-mtu: {lan_mtu} is below the IPv6 minimum of 1280 (RFC 8200 §5), needed with --nat64-prefix"
                ));
            }
            if !self.translate {
                return Err(
                    "--nat64-prefix: NAT64 translates; it cannot be combined with --forward-only".into()
                );
            }
            if matches!(self.pool.allocation, Allocation::Deterministic { .. }) {
                // RFC 7422's layout is computed from the --inside prefixes; an IPv6 host's stand-in
                // address is in none of them.
                return Err("--nat64-prefix: not supported with --deterministic".into());
            }
        }
        self.validate_pool()?;
        self.validate_workers()
    }

    /// What several workers (`--workers N`, issue 18) ask of the pool and the forwards.
    fn validate_workers(&self) -> Result<(), String> {
        let count = self.shard.count;
        if count <= 1 {
            return Ok(());
        }
        if let Allocation::Blocks(b) = self.pool.allocation {
            // Each worker cuts its blocks from its own slice of the range (`steer`): a block must fit
            // the smallest slice, or that worker's hosts would get no block at all.
            let smallest = Shard::all(count)
                .map(|s| crate::steer::slice_range(&self.port_range, count, s.index).count())
                .min()
                .unwrap_or(0);
            if usize::from(b.size) > smallest {
                return Err(format!(
                    "--port-block-size: {} ports do not fit in a worker's slice of --port-range ({smallest} \
                     ports with --workers {count}); use smaller blocks, a wider --port-range or fewer --workers",
                    b.size
                ));
            }
        }
        // A forwarded port is steered by its number alone: one number forwarded on two addresses must
        // lead to hosts of one worker.
        let steering = crate::steer::Steering::new(self, count);
        for (i, f) in self.forwards.iter().enumerate() {
            let worker = steering.forward_worker(f);
            if let Some(g) = self.forwards[..i].iter().find(|g| {
                g.proto == f.proto && g.public_port == f.public_port && steering.forward_worker(g) != worker
            }) {
                return Err(format!(
                    "--forward {f}: public port {} is forwarded on another address too ({g}), to a host of \
                     another worker; with --workers {count} a forwarded port is steered by its number \
                     alone: use another port or --workers 1",
                    f.public_port
                ));
            }
        }
        Ok(())
    }

    /// The public address a forward listens on.
    pub fn forward_addr(&self, f: &Forward) -> Ipv4Addr {
        f.public_addr.unwrap_or(self.public_ip)
    }

    /// The public addresses on which a forward's port is kept from the allocator: its own address; with
    /// several workers every pool address, because the steering rule sends that port number to the
    /// forward's host's worker whatever the address (`steer`), so no other worker may hand it out.
    pub fn forward_reservations(&self, f: &Forward) -> Vec<Ipv4Addr> {
        if self.shard.count > 1 {
            self.pool.addresses.clone()
        } else {
            vec![self.forward_addr(f)]
        }
    }

    /// The pool and allocation settings (issue 16).
    fn validate_pool(&self) -> Result<(), String> {
        let p = &self.pool;
        for (i, f) in self.forwards.iter().enumerate() {
            let a = self.forward_addr(f);
            if !p.addresses.contains(&a) {
                return Err(format!("--forward {f}: {a} is not one of the pool's public addresses"));
            }
            // Paired pooling: an inside server's connections all leave from one address, the one its
            // forwards name (else its FTP data connections would come from another address than the
            // control connection its clients opened).
            if let Some(g) = self.forwards[..i].iter().find(|g| g.same_host(f) && self.forward_addr(g) != a) {
                return Err(format!(
                    "--forward {f}: inside host {} is forwarded on {} already ({g}); all forwards of one \
                     inside host must name the same public address",
                    f.inside6.map_or(f.inside_addr.to_string(), |a6| a6.to_string()),
                    self.forward_addr(g)
                ));
            }
        }
        if p.addresses.first() != Some(&self.public_ip) {
            return Err(format!("--public-ip: {} must be the first address of the pool", self.public_ip));
        }
        if p.addresses.len() > nat::pool::MAX_POOL {
            return Err(format!(
                "--public-pool: {} public addresses; at most {} are supported",
                p.addresses.len(),
                nat::pool::MAX_POOL
            ));
        }
        for (i, &a) in p.addresses.iter().enumerate() {
            nat::pool::check_public_address(a).map_err(|e| format!("--public-ip/--public-pool: {e}"))?;
            if let Some(n) = self.inside.iter().find(|n| n.contains(&a)) {
                return Err(format!("--public-ip/--public-pool: {a} lies inside --inside {n}"));
            }
            if p.addresses[..i].contains(&a) {
                return Err(format!("--public-ip/--public-pool: {a} is in the pool twice"));
            }
        }
        let range = PortRange::try_from(&self.port_range).map_err(|e| format!("--port-range: {e}"))?;
        match p.allocation {
            Allocation::Dynamic => {}
            Allocation::Blocks(b) => {
                if b.size == 0 {
                    return Err("--port-block-size: must be at least 1".into());
                }
                if u32::from(b.size) > range.len() {
                    return Err(format!(
                        "--port-block-size: {} ports do not fit in --port-range {range} ({} ports)",
                        b.size,
                        range.len()
                    ));
                }
                if b.per_host == 0 {
                    return Err("--port-blocks-per-host: must be at least 1".into());
                }
                check_timeout("--port-block-hold", b.hold)?;
            }
            Allocation::Deterministic { size } => {
                if size == Some(0) {
                    return Err("--port-block-size: must be at least 1".into());
                }
                let det = Deterministic::new(&self.inside, &p.addresses, range, size)
                    .map_err(|e| format!("--deterministic: {e}"))?;
                if let Some(f) = self
                    .forwards
                    .iter()
                    .find(|f| det.forward(f.inside_addr).is_some_and(|s| s.public != self.forward_addr(f)))
                {
                    let s = det.forward(f.inside_addr).expect("found above");
                    return Err(format!(
                        "--forward {f}: deterministic mode puts inside host {} on {}; the forward must name \
                         that address",
                        f.inside_addr, s.public
                    ));
                }
                if let Some(f) = self.forwards.iter().find(|f| range.contains(f.public_port)) {
                    return Err(format!(
                        "--forward {f}: public port {} lies in --port-range {range}, which deterministic mode \
                         shares out entirely among the inside addresses; forward a port outside it",
                        f.public_port
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The shortest timeout any `--*-timeout` flag accepts. One rule for all of them: a flow or a pinhole
/// that may vanish between two packets of a live exchange (0, a few ms) is a configuration mistake, not
/// a policy, and the run loop's clock and timers work in milliseconds anyway.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Refuses a timeout below [`MIN_TIMEOUT`], naming the flag.
pub fn check_timeout(flag: &str, d: Duration) -> Result<(), String> {
    if d < MIN_TIMEOUT {
        let shown = if d.is_zero() { "0".to_string() } else { format!("{d:?}") };
        return Err(format!("{flag}: {shown} is below the minimum of {}s", MIN_TIMEOUT.as_secs()));
    }
    Ok(())
}

/// The first host address of a prefix (the network address plus one), the usual gateway address.
pub fn first_host(net: Ipv4Net) -> Ipv4Addr {
    let base = u32::from(net.network());
    if net.prefix_len() >= 31 {
        Ipv4Addr::from(base)
    } else {
        Ipv4Addr::from(base + 1)
    }
}

/// Parses a duration given in seconds (`60`, `0.5`) or with a unit (`500ms`, `2m`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a duration (e.g. 60, 500ms, 2m)"))?;
    if v.is_sign_negative() {
        return Err(format!("'{s}' is negative: a duration is 0 or more"));
    }
    if !v.is_finite() || v * mult > 1e9 {
        return Err(format!("'{s}' is out of range (at most 1e9 seconds)"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::new(vec!["10.0.0.0/24".parse().unwrap()], Ipv4Addr::new(192, 0, 2, 1))
    }

    #[test]
    fn forward_syntax() {
        let f: Forward = "tcp:2121=10.0.0.2:21".parse().unwrap();
        assert_eq!(
            f,
            Forward {
                proto: Proto::Tcp,
                public_addr: None,
                public_port: 2121,
                inside_addr: Ipv4Addr::new(10, 0, 0, 2),
                inside_port: 21,
                inside6: None,
            }
        );
        assert_eq!(f.to_string(), "tcp:2121=10.0.0.2:21");
        assert!("udp:53=10.0.0.3:53".parse::<Forward>().is_ok());
        let named: Forward = "tcp:192.0.2.7:2121=10.0.0.2:21".parse().unwrap();
        assert_eq!(named.public_addr, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(named.to_string(), "tcp:192.0.2.7:2121=10.0.0.2:21");
        for bad in [
            "tcp:192.0.2.300:2121=10.0.0.2:21",
            "tcp:2121",
            "sctp:1=10.0.0.1:1",
            "tcp:0=10.0.0.1:1",
            "tcp:1=10.0.0.300:1",
            "tcp:1=10.0.0.1:70000",
        ] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
        // NAT64 (issue 14): an IPv6 inside host, bracketed.
        let f6: Forward = "tcp:2121=[2001:db8:64::10]:21".parse().unwrap();
        assert_eq!((f6.inside6, f6.inside_addr), ("2001:db8:64::10".parse().ok(), Forward::UNRESOLVED));
        assert_eq!(f6.to_string(), "tcp:2121=[2001:db8:64::10]:21");
        let mut resolved = f6;
        resolved.inside_addr = Ipv4Addr::new(240, 0, 0, 1);
        assert_eq!(resolved, f6, "the stand-in is not part of the rule");
        assert_ne!(f6, "tcp:2121=[2001:db8:64::11]:21".parse().unwrap());
        assert_eq!("udp:192.0.2.7:53=[::ffff:1]:53".parse::<Forward>().unwrap().public_port, 53);
        for (bad, says) in [
            ("tcp:80=2001:db8:64::2:80", "in brackets"),
            ("tcp:80=[2001:db8:64::2:80", "closing"),
            ("tcp:80=[2001:db8:64::zz]:80", "not an IPv6 address"),
            ("tcp:80=[2001:db8:64::2]:0", "inside port"),
            ("tcp:80=[10.0.0.2]:80", "not an IPv6 address"),
        ] {
            let e = bad.parse::<Forward>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_the_flag() {
        assert_eq!(base().validate(), Ok(()));
        assert_eq!(base().lan_ip, Ipv4Addr::new(10, 0, 0, 1));
        let mut c = base();
        c.public_ip = Ipv4Addr::new(10, 0, 0, 9);
        assert!(c.validate().unwrap_err().starts_with("--public-ip"));
        let mut c = base();
        c.forwards.push("tcp:21=172.16.0.1:21".parse().unwrap());
        assert!(c.validate().unwrap_err().starts_with("--forward"));
        let mut c = base();
        c.ftp.ports.push(990);
        assert!(c.validate().unwrap_err().starts_with("--ftp-port"));
        let mut c = base();
        c.inside.clear();
        assert!(c.validate().unwrap_err().starts_with("--inside"));
    }

    /// One rule for every timeout: at least [`MIN_TIMEOUT`], whichever flag set it (`--ftp-pinhole-timeout 0`
    /// was refused while `--udp-timeout 0` or `5ms` passed silently).
    #[test]
    fn every_timeout_has_the_same_minimum() {
        type Set = fn(&mut Config, Duration);
        let flags: [(&str, Set); 5] = [
            ("--tcp-established-timeout", |c, d| c.timeouts.tcp_established = d),
            ("--tcp-transitory-timeout", |c, d| c.timeouts.tcp_transitory = d),
            ("--udp-timeout", |c, d| c.timeouts.udp = d),
            ("--icmp-timeout", |c, d| c.timeouts.icmp = d),
            ("--ftp-pinhole-timeout", |c, d| c.ftp.pinhole_timeout = d),
        ];
        for (flag, set) in flags {
            for bad in [Duration::ZERO, Duration::from_millis(5), Duration::from_millis(999)] {
                let mut c = base();
                set(&mut c, bad);
                let e = c.validate().unwrap_err();
                assert!(e.starts_with(&format!("{flag}: ")) && e.contains("minimum of 1s"), "{e}");
            }
            for good in [MIN_TIMEOUT, Duration::from_millis(1500), Duration::from_secs(86400)] {
                let mut c = base();
                set(&mut c, good);
                assert_eq!(c.validate(), Ok(()), "{flag} {good:?}");
            }
        }
    }

    #[test]
    fn port_quota_is_a_count_or_a_share_of_the_range() {
        let full = 1024..=65535;
        assert_eq!(PortQuota::DEFAULT.ports(&full), 4032, "a sixteenth of 64,512");
        assert_eq!(base().ports_per_host(), 4032);
        assert_eq!("6.25%".parse::<PortQuota>(), Ok(PortQuota::Share(625)));
        assert_eq!("25%".parse::<PortQuota>().unwrap().ports(&full), 16128);
        assert_eq!("100%".parse::<PortQuota>().unwrap().ports(&full), 64512);
        assert_eq!("0.5%".parse::<PortQuota>(), Ok(PortQuota::Share(50)));
        assert_eq!("500".parse::<PortQuota>(), Ok(PortQuota::Ports(500)));
        assert_eq!(PortQuota::Ports(500).ports(&full), 500);
        // A share of a narrow range never leaves a host fewer than the floor.
        assert_eq!(PortQuota::DEFAULT.ports(&(40000..=40099)), PortQuota::FLOOR);
        for q in [PortQuota::Share(625), PortQuota::Share(2500), PortQuota::Share(1), PortQuota::Ports(9)] {
            assert_eq!(q.to_string().parse::<PortQuota>(), Ok(q), "{q}");
        }
        for bad in ["0", "0%", "100.01%", "101%", "1.234%", "%", "-5", "5 %x", "65537", "ten", "1e3", ".5%"] {
            assert!(bad.parse::<PortQuota>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pool_and_allocation_validation_names_the_flag() {
        use crate::nat::BlockPolicy;
        let a = |n| Ipv4Addr::new(192, 0, 2, n);
        let mut c = base();
        c.pool.addresses = vec![a(1), a(2), a(3)];
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.nat_setup().pool, vec![a(1), a(2), a(3)]);
        c.pool.addresses = vec![a(2), a(1)];
        assert!(c.validate().unwrap_err().starts_with("--public-ip"));
        c.pool.addresses = vec![a(1), a(2), a(2)];
        assert!(c.validate().unwrap_err().contains("twice"));
        c.pool.addresses = vec![a(1), Ipv4Addr::new(10, 0, 0, 7)];
        assert!(c.validate().unwrap_err().contains("lies inside --inside"));
        c.pool.addresses = vec![a(1), Ipv4Addr::new(224, 0, 0, 1)];
        assert!(c.validate().unwrap_err().contains("--public-pool"));
        let block = |size, per_host, hold| Allocation::Blocks(BlockPolicy { size, per_host, hold });
        let mut c = base();
        for (alloc, flag) in [
            (block(0, 8, Duration::from_secs(60)), "--port-block-size"),
            (block(65000, 8, Duration::from_secs(60)), "--port-block-size"),
            (block(512, 0, Duration::from_secs(60)), "--port-blocks-per-host"),
            (block(512, 8, Duration::ZERO), "--port-block-hold"),
        ] {
            c.pool.allocation = alloc;
            assert!(c.validate().unwrap_err().starts_with(flag), "{alloc:?}");
        }
        c.pool.allocation = block(512, 8, Duration::from_secs(60));
        assert_eq!(c.validate(), Ok(()));
        // Deterministic: the inside space must fit, and forwards must stay out of the shared range.
        let mut c = base();
        c.pool.allocation = Allocation::Deterministic { size: None };
        assert_eq!(c.validate(), Ok(()));
        c.pool.allocation = Allocation::Deterministic { size: Some(1000) };
        assert!(c.validate().unwrap_err().starts_with("--deterministic"), "256 x 1000 > 64512");
        c.pool.allocation = Allocation::Deterministic { size: Some(200) };
        c.forwards.push("tcp:2121=10.0.0.2:21".parse().unwrap());
        assert!(c.validate().unwrap_err().starts_with("--forward"));
        c.forwards = vec!["tcp:80=10.0.0.2:80".parse().unwrap()];
        assert_eq!(c.validate(), Ok(()));
        c.pool.addresses = vec![a(1), a(2)];
        let home =
            Deterministic::new(&c.inside, &c.pool.addresses, PortRange::new(1024, 65535).unwrap(), Some(200))
                .unwrap()
                .forward(Ipv4Addr::new(10, 0, 0, 2))
                .unwrap()
                .public;
        let away = if home == a(1) { a(2) } else { a(1) };
        c.forwards = vec![format!("tcp:{home}:80=10.0.0.2:80").parse().unwrap()];
        assert_eq!(c.validate(), Ok(()));
        c.forwards = vec![format!("tcp:{away}:80=10.0.0.2:80").parse().unwrap()];
        assert!(c.validate().unwrap_err().contains("deterministic mode puts inside host 10.0.0.2"));
        // Forwards name a pool address, and one inside host's forwards name one address.
        let mut c = base();
        c.pool.addresses = vec![a(1), a(2)];
        c.forwards =
            vec!["tcp:192.0.2.2:80=10.0.0.2:80".parse().unwrap(), "tcp:80=10.0.0.3:80".parse().unwrap()];
        assert_eq!(c.validate(), Ok(()), "the same port on two addresses");
        c.forwards.push("tcp:192.0.2.9:81=10.0.0.4:80".parse().unwrap());
        assert!(c.validate().unwrap_err().contains("not one of the pool's public addresses"));
        c.forwards.pop();
        c.forwards.push("tcp:82=10.0.0.2:82".parse().unwrap());
        assert!(c.validate().unwrap_err().contains("must name the same public address"));
        c.forwards.pop();
        c.forwards.push("tcp:192.0.2.1:80=10.0.0.5:80".parse().unwrap());
        assert!(c.validate().unwrap_err().contains("forwarded twice"));
        c.forwards.pop();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn durations_and_ranges() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1").unwrap_err().contains("negative"));
        assert!(parse_duration("-0").unwrap_err().contains("negative"));
        assert!(parse_duration("1e10").unwrap_err().contains("out of range"));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_port_range("1024-2047").unwrap(), 1024..=2047);
        assert!(parse_port_range("2000-1000").is_err());
    }
}
