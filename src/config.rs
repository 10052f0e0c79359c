//! Validated configuration: what the engine needs to know about the network and its policy.
//!
//! Owns: [`Config`] and its validation (every error names the flag it came from), the `--forward` and
//! CIDR syntax. Must not: open devices, read files or parse command lines (that is `main.rs`); the
//! engine trusts a `Config` that passed [`Config::validate`].

use core::time::Duration;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::flow::Proto;

/// A static port forward (DNAT): `proto:PUBLICPORT=INSIDEIP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub public_port: u16,
    pub inside_addr: Ipv4Addr,
    pub inside_port: u16,
}

impl FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("'{s}': expected PROTO:PUBLICPORT=INSIDEIP:PORT, e.g. tcp:2121=10.0.0.2:21");
        let (proto, rest) = s.split_once(':').ok_or_else(err)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(format!("'{s}': protocol '{other}' is not tcp or udp")),
        };
        let (public, inside) = rest.split_once('=').ok_or_else(err)?;
        let public_port = parse_port(public).map_err(|e| format!("'{s}': public port {e}"))?;
        let (addr, port) = inside.rsplit_once(':').ok_or_else(err)?;
        let inside_addr = addr.parse().map_err(|_| format!("'{s}': '{addr}' is not an IPv4 address"))?;
        let inside_port = parse_port(port).map_err(|e| format!("'{s}': inside port {e}"))?;
        Ok(Forward { proto, public_port, inside_addr, inside_port })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}:{}", self.proto, self.public_port, self.inside_addr, self.inside_port)
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
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("'{s}': expected LOW-HIGH, e.g. 1024-65535"))?;
    let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
    if lo > hi {
        return Err(format!("'{s}': low end {lo} is above high end {hi}"));
    }
    Ok(lo..=hi)
}

/// Idle timeouts per protocol state.
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(7440),
            tcp_transitory: Duration::from_secs(240),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(300),
            icmp: Duration::from_secs(60),
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
    /// `--max-flows-per-host`: flows one inside host may hold.
    pub max_flows_per_host: usize,
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
            max_flows_per_host: 65_536,
            timeouts: Timeouts::default(),
            mtu: [1500, 1500],
            send_icmp_errors: true,
            verify_ip_checksum: true,
            translate: true,
            ftp: FtpPolicy::default(),
        }
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
            if !self.is_inside(f.inside_addr) {
                return Err(format!("--forward {f}: {} is not in any --inside prefix", f.inside_addr));
            }
        }
        for (i, a) in self.forwards.iter().enumerate() {
            if self.forwards[..i].iter().any(|b| a.proto == b.proto && a.public_port == b.public_port) {
                return Err(format!("--forward {a}: public port {} is forwarded twice", a.public_port));
            }
        }
        if self.port_range.start() > self.port_range.end() {
            return Err("--port-range: empty range".into());
        }
        if self.max_flows == 0 {
            return Err("--max-flows: must be at least 1".into());
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
            ("--ftp-pinhole-timeout", self.ftp.pinhole_timeout),
        ] {
            check_timeout(flag, d)?;
        }
        if self.ftp.max_line < 64 {
            return Err("--ftp-max-line: must be at least 64 bytes".into());
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
                public_port: 2121,
                inside_addr: Ipv4Addr::new(10, 0, 0, 2),
                inside_port: 21
            }
        );
        assert_eq!(f.to_string(), "tcp:2121=10.0.0.2:21");
        assert!("udp:53=10.0.0.3:53".parse::<Forward>().is_ok());
        for bad in [
            "tcp:2121",
            "sctp:1=10.0.0.1:1",
            "tcp:0=10.0.0.1:1",
            "tcp:1=10.0.0.300:1",
            "tcp:1=10.0.0.1:70000",
        ] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
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
