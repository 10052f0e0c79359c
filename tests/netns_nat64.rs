//! NAT64 with real software between an IPv6-only client namespace and an IPv4-only server namespace
//! (issue 14). Run as root; SKIP locally otherwise, FAIL under `CI=true`.
//!
//! Owns: nothing but these tests. Must not: reach into ftpnat's internals (what it did shows in its stop
//! summary, its log and the programs' output).

#[path = "netns_support/mod.rs"]
mod netns_support;

#[path = "nat64_support/mod.rs"]
mod nat64_support;

use std::time::Duration;

use nat64_support::{global_addrs, wan_host6, GW_IP6, LAN_HOST6, PREFIX};
use netns_support::text;

/// The topology the other tests stand on: the client has IPv6 only and a route to the NAT64 prefix via
/// the gateway and nowhere else; the server has IPv4 only; IPv6 packets to the prefix reach ftpnat.
#[test]
fn topology_is_ipv6_only_client_to_ipv4_only_server() {
    // Until the NAT64 flags exist, ftpnat runs without them: this checks the plumbing only.
    let env = [("FTPNAT_NAT64_ARGS", String::new())];
    let Some(mut t) = nat64_support::up("topology_is_ipv6_only_client_to_ipv4_only_server", &[], &[], &env)
    else {
        return;
    };
    assert_eq!(global_addrs(&t, true, "-4"), "", "the client has no IPv4 address");
    assert!(
        global_addrs(&t, true, "-6").contains(&format!("{LAN_HOST6}/64")),
        "{}",
        global_addrs(&t, true, "-6")
    );
    assert_eq!(global_addrs(&t, false, "-6"), "", "the server has no IPv6 address");
    let routes6 = text(&t.lan(Duration::from_secs(5), &["ip", "-6", "route", "show"]).stdout);
    assert!(routes6.contains(&format!("{PREFIX} via {GW_IP6}")), "{routes6}");
    assert!(!routes6.contains("default"), "only the prefix goes to the gateway: {routes6}");
    let routes4 = text(&t.lan(Duration::from_secs(5), &["ip", "-4", "route", "show"]).stdout);
    assert_eq!(routes4, "", "no IPv4 route on the client");
    let ping4 = t.lan(Duration::from_secs(5), &["ping", "-4", "-c", "1", "-W", "1", netns_support::WAN_HOST]);
    assert!(!ping4.status.success(), "IPv4 must be unreachable from the client");
    let ping6 =
        t.lan(Duration::from_secs(5), &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", &wan_host6()]);
    let s = t.stop_cleanly();
    assert!(
        s.counter("device.lan.rx_packets") >= 2,
        "the pings reached ftpnat's LAN device: {}\n{}",
        s.summary,
        text(&ping6.stdout)
    );
}
