//! The NAT64 namespace topology: an IPv6-only client namespace and an IPv4-only server namespace with
//! ftpnat between them (`netns-scripts/up.sh` with `FTPNAT_NAT64_PREFIX`, see `netns-scripts/env.sh`).
//!
//! Owns: the NAT64 addresses every NAT64 namespace test uses, and bringing that topology up through
//! [`Topology::up_env`]. Must not: know what a test checks, or duplicate the plumbing of
//! `netns_support` (unique names, teardown, bounded commands are its).
//!
//! Use from a test file next to `netns_support`:
//! `#[path = "netns_support/mod.rs"] mod netns_support;` and `#[path = "nat64_support/mod.rs"] mod nat64_support;`.

#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use crate::netns_support::{text, Topology, WAN_HOST};

/// The NAT64 prefix of the tests: the local-use prefix of RFC 8215, so that the TEST-NET addresses of
/// the wan side may be embedded (the well-known prefix 64:ff9b::/96 may carry global IPv4 addresses
/// only, RFC 6052 §3.1).
pub const PREFIX: &str = "64:ff9b:1::/96";
/// `--inside6` (RFC 3849 documentation space).
pub const INSIDE6: &str = "2001:db8:64::/64";
/// The lan host's IPv6 next hop towards the prefix.
pub const GW_IP6: &str = "2001:db8:64::1";
/// The IPv6-only client.
pub const LAN_HOST6: &str = "2001:db8:64::2";

/// The wan host (198.51.100.2) as the IPv6 client reaches it: what DNS64 would answer.
pub fn wan_host6() -> String {
    format!("64:ff9b:1::{WAN_HOST}")
}

/// `[addr]` for URLs.
pub fn bracketed(addr: &str) -> String {
    format!("[{addr}]")
}

/// Brings up the NAT64 topology: the lan host IPv6-only (`FTPNAT_LAN_IPV4=no`), a route to [`PREFIX`]
/// via [`GW_IP6`], ftpnat given `--nat64-prefix` and `--inside6` plus `extra`. `env` replaces more of
/// `netns-scripts/env.sh`'s settings. `None` when namespaces are unavailable here (and not in CI).
pub fn up(test: &str, forwards: &[&str], extra: &[&str], env: &[(&'static str, String)]) -> Option<Topology> {
    let mut all = vec![
        ("FTPNAT_NAT64_PREFIX", PREFIX.to_string()),
        ("FTPNAT_INSIDE6", INSIDE6.to_string()),
        ("FTPNAT_GW_IP6", GW_IP6.to_string()),
        ("FTPNAT_LAN_HOST6", LAN_HOST6.to_string()),
        ("FTPNAT_LAN_IPV4", "no".to_string()),
    ];
    all.extend_from_slice(env);
    Topology::up_env(test, forwards, extra, &all)
}

/// The addresses of `family` (`-4`/`-6`) with global scope in namespace `ns`, as `ip -brief` lists them.
pub fn global_addrs(t: &Topology, lan: bool, family: &str) -> String {
    let args = ["ip", "-brief", family, "addr", "show", "scope", "global"];
    let o = if lan { t.lan(Duration::from_secs(5), &args) } else { t.wan(Duration::from_secs(5), &args) };
    text(&o.stdout)
}
