//! The same NAT records as RFC 5424 syslog messages: pure formatting, no I/O.
//!
//! Owns: the message format below (a stable interface: collectors parse it) and RFC 3339 time
//! stamps. Must not: open sockets or read clocks (event times come in as milliseconds since the Unix
//! epoch).
//!
//! One message per record:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME ftpnat PROCID MSGID [nat@32473 event="KIND" PARAM="VALUE" ...] TEXT
//! ```
//!
//! - PRI: facility (default local0) × 8 + severity: informational (6) for allocation records,
//!   warning (4) for exhaustion and quota records.
//! - TIMESTAMP: when the event happened (not when it was sent), UTC with milliseconds.
//! - MSGID: `PBA` port block allocated, `PBR` port block released, `SADD` session created, `SDEL`
//!   session deleted, `ADDREXH` addresses exhausted, `PORTEXH` ports exhausted, `QUOTA` quota exceeded.
//! - Structured data `nat@32473` (32473 is the private enterprise number RFC 5612 reserves for
//!   documentation; SD-IDs without one are reserved to IANA): `event` (the record kind), `proto`
//!   (`tcp`, `udp`, `icmp`, or `any` for a block, which serves every protocol), `isaddr`/`isport`
//!   (inside source), `xsaddr`/`xsport` (public source; `xsport` is `FIRST-LAST` for a block),
//!   `xdaddr`/`xdport` (remote end of a session), `start`/`end` (allocation or session lifetime,
//!   RFC 3339), `quota` and `limit` (which limit, how much). Parameter names follow
//!   draft-ietf-behave-syslog-nat-logging (as VPP's NAT syslog does) in lower case.
//! - NAT64 hosts (block and session records): `isaddr` is the IPv6 source (the draft's `isaddr` is
//!   an IPv4 or IPv6 address), never the 240.0.0.0/4 stand-in ftpnat knows the host by inside, and
//!   `nat64="1"` is added, so a public port traces back to the IPv6 subscriber (RFC 8158's
//!   sourceIPv6Address in the IPFIX records).
//! - TEXT: the same in words, for a person reading the log.

use std::fmt::Write;

use crate::nat::Record;
use crate::time::Instant;

/// `nat@32473`: see the module header.
pub const SD_ID: &str = "nat@32473";
/// The syslog facility local0.
pub const LOCAL0: u8 = 16;
const INFO: u8 = 6;
const WARNING: u8 = 4;

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_ms: u64) -> String {
    let (days, ms_of_day) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    let (y, m, d) = civil_from_days(days as i64);
    let s = ms_of_day / 1000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, ms_of_day % 1000)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): eras of 400 years (146,097 days)
/// starting on 1 March, so the leap day falls at the end of each counted year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What is fixed for every message of one process.
#[derive(Debug, Clone)]
pub struct Origin {
    pub facility: u8,
    /// RFC 5424 HOSTNAME (`-` when unknown).
    pub hostname: String,
    pub pid: u32,
}

/// One RFC 5424 message for `r`; `ms` converts the core's instants to milliseconds since the epoch.
pub fn format(r: &Record, o: &Origin, ms: &dyn Fn(Instant) -> u64) -> String {
    let (msgid, severity) = match r {
        Record::BlockAllocated { .. } => ("PBA", INFO),
        Record::BlockReleased { .. } => ("PBR", INFO),
        Record::SessionCreated { .. } => ("SADD", INFO),
        Record::SessionDeleted { .. } => ("SDEL", INFO),
        Record::AddressesExhausted { .. } => ("ADDREXH", WARNING),
        Record::PortsExhausted { .. } => ("PORTEXH", WARNING),
        Record::QuotaExceeded { .. } => ("QUOTA", WARNING),
    };
    let pri = u16::from(o.facility) * 8 + u16::from(severity);
    let host = if o.hostname.is_empty() { "-" } else { o.hostname.as_str() };
    let mut m = format!(
        "<{pri}>1 {} {host} ftpnat {} {msgid} [{SD_ID} event=\"{}\"",
        rfc3339(ms(r.at())),
        o.pid,
        r.kind()
    );
    // Values are addresses, numbers and fixed words: nothing needs RFC 5424 §6.3.3 escaping.
    let mut p = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(m, " {k}=\"{v}\"");
    };
    let text = match r {
        Record::BlockAllocated { at, inside, inside6, public, ports } => {
            let inside = &source(*inside, *inside6, &mut p);
            p("xsaddr", public);
            p("xsport", ports);
            p("start", &rfc3339(ms(*at)));
            format!("port block {public}:{ports} allocated to {inside}")
        }
        Record::BlockReleased { at, since, inside, inside6, public, ports } => {
            let inside = &source(*inside, *inside6, &mut p);
            p("xsaddr", public);
            p("xsport", ports);
            p("start", &rfc3339(ms(*since)));
            p("end", &rfc3339(ms(*at)));
            format!("port block {public}:{ports} of {inside} released")
        }
        Record::SessionCreated { at, proto, inside, inside6, public, remote }
        | Record::SessionDeleted { at, proto, inside, inside6, public, remote, .. } => {
            p("proto", proto);
            let port = inside.port();
            let addr = match inside6 {
                Some(v6) => {
                    p("nat64", &1);
                    p("isaddr", v6);
                    format!("[{v6}]:{}", inside.port())
                }
                None => {
                    p("isaddr", &inside.addr());
                    inside.to_string()
                }
            };
            let inside = &addr;
            p("isport", &port);
            p("xsaddr", &public.addr());
            p("xsport", &public.port());
            p("xdaddr", &remote.addr);
            p("xdport", &remote.port);
            let text = format!("{proto} {inside} as {public} to {remote}");
            match r {
                Record::SessionDeleted { since, .. } => {
                    p("start", &rfc3339(ms(*since)));
                    p("end", &rfc3339(ms(*at)));
                    format!("{text} ended")
                }
                _ => {
                    p("start", &rfc3339(ms(*at)));
                    text
                }
            }
        }
        Record::AddressesExhausted { proto, .. } => {
            p("proto", proto);
            format!("no public address has room for a new {proto} host")
        }
        Record::PortsExhausted { proto, public, .. } => {
            p("proto", proto);
            p("xsaddr", public);
            format!("{proto} ports exhausted on {public}")
        }
        Record::QuotaExceeded { proto, host, quota, limit, .. } => {
            p("proto", proto);
            p("isaddr", host);
            p("quota", &quota.name());
            p("limit", limit);
            format!("{host} holds its {} of {limit}", quota.name())
        }
    };
    m.push_str("] ");
    m.push_str(&text);
    m
}

/// A block record's inside host: `proto`, `nat64` and `isaddr` written; its name for the text.
fn source(
    inside: std::net::Ipv4Addr,
    inside6: Option<std::net::Ipv6Addr>,
    p: &mut impl FnMut(&str, &dyn std::fmt::Display),
) -> String {
    p("proto", &"any");
    match inside6 {
        Some(v6) => {
            p("nat64", &1);
            p("isaddr", &v6);
            v6.to_string()
        }
        None => {
            p("isaddr", &inside);
            inside.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::PortRange;
    use std::net::Ipv4Addr;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z", "a leap day of a century year");
        assert_eq!(rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        // Every day from 1970 to 2200 follows its predecessor.
        let mut prev = civil_from_days(0);
        for d in 1..84_000 {
            let c = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(c == next_day || c == next_month || c == next_year, "{prev:?} -> {c:?}");
            prev = c;
        }
        assert_eq!(prev, (2199, 12, 25), "day 83,999 (checked with Python's datetime)");
    }

    #[test]
    fn a_block_message_in_the_stated_format() {
        let o = Origin { facility: LOCAL0, hostname: "gw1".into(), pid: 42 };
        let r = Record::BlockReleased {
            at: Instant::from_secs(90),
            since: Instant::from_secs(30),
            inside: Ipv4Addr::new(100, 64, 0, 2),
            inside6: None,
            public: Ipv4Addr::new(198, 51, 100, 1),
            ports: PortRange::new(1024, 1535).unwrap(),
        };
        let ms = |i: Instant| 1_700_000_000_000 + i.as_micros() / 1000;
        assert_eq!(
            format(&r, &o, &ms),
            "<134>1 2023-11-14T22:14:50.000Z gw1 ftpnat 42 PBR [nat@32473 event=\"block_released\" proto=\"any\" \
             isaddr=\"100.64.0.2\" xsaddr=\"198.51.100.1\" xsport=\"1024-1535\" start=\"2023-11-14T22:13:50.000Z\" \
             end=\"2023-11-14T22:14:50.000Z\"] port block 198.51.100.1:1024-1535 of 100.64.0.2 released"
        );
        let q = Record::QuotaExceeded {
            at: Instant::ZERO,
            proto: crate::flow::Proto::Udp,
            host: Ipv4Addr::new(100, 64, 0, 2),
            quota: crate::nat::Quota::BlocksPerHost,
            limit: 4096,
        };
        let o = Origin { hostname: String::new(), ..o };
        assert!(
            format(&q, &o, &ms).starts_with("<132>1 2023-11-14T22:13:20.000Z - ftpnat 42 QUOTA [nat@32473")
        );
    }

    #[test]
    fn nat64_records_name_the_ipv6_subscriber() {
        let o = Origin { facility: LOCAL0, hostname: "gw1".into(), pid: 42 };
        let ms = |i: Instant| 1_700_000_000_000 + i.as_micros() / 1000;
        let v6: std::net::Ipv6Addr = "2001:db8:64::2".parse().unwrap();
        let r = Record::SessionCreated {
            at: Instant::ZERO,
            proto: crate::flow::Proto::Tcp,
            inside: crate::nat::InsideEndpoint::new(Ipv4Addr::new(240, 0, 0, 1), 40000),
            inside6: Some(v6),
            public: crate::nat::PublicEndpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1030),
            remote: crate::flow::Endpoint::new(Ipv4Addr::new(203, 0, 113, 9), 21),
        };
        assert_eq!(
            format(&r, &o, &ms),
            "<134>1 2023-11-14T22:13:20.000Z gw1 ftpnat 42 SADD [nat@32473 event=\"session_created\" proto=\"tcp\" \
             nat64=\"1\" isaddr=\"2001:db8:64::2\" isport=\"40000\" xsaddr=\"198.51.100.1\" xsport=\"1030\" \
             xdaddr=\"203.0.113.9\" xdport=\"21\" start=\"2023-11-14T22:13:20.000Z\"] \
             tcp [2001:db8:64::2]:40000 as 198.51.100.1:1030 to 203.0.113.9:21"
        );
        let b = Record::BlockAllocated {
            at: Instant::ZERO,
            inside: Ipv4Addr::new(240, 0, 0, 1),
            inside6: Some(v6),
            public: Ipv4Addr::new(198, 51, 100, 1),
            ports: PortRange::new(1024, 1535).unwrap(),
        };
        let m = format(&b, &o, &ms);
        assert!(m.contains(" nat64=\"1\" isaddr=\"2001:db8:64::2\" ") && !m.contains("240.0.0.1"), "{m}");
        assert!(m.ends_with("port block 198.51.100.1:1024-1535 allocated to 2001:db8:64::2"), "{m}");
    }
}
