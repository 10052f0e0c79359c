//! Constants the tests, fuzz targets, benchmarks and examples share: protocol numbers, TCP flag bits
//! (RFC 9293 §3.1) and the addresses of the test networks (documentation ranges, RFC 5737).

use std::net::Ipv4Addr;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// The gateway's public address in the engine-level tests and scenarios.
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// An outside host.
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// An inside host (the inside network is 10.0.0.0/8).
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
