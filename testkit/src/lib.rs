//! The one test kit of ftpnat, shared by `tests/`, `fuzz/`, `benches/` and `examples/` (as a
//! dev-dependency or dependency, never by `#[path]` includes).
//!
//! | module | owns |
//! |---|---|
//! | [`csum`] | the one RFC 1071 Internet checksum (and the TCP/UDP pseudo-header sum) |
//! | [`pkt`] | the one packet builder: IPv4 datagrams with TCP, UDP or ICMP, checksums filled by [`csum`] |
//! | [`check`] | the one independent validity check of an emitted IPv4 or IPv6 datagram (etherparse) |
//! | [`consts`] | shared constants: protocol numbers, TCP flag bits, the addresses of the test networks |
//! | [`fuzz`] | the fuzz harness bodies and their invariants (the cargo-fuzz targets in `fuzz/` and `tests/fuzz_corpus.rs` call them) |
//! | [`scenario`] | engines with flows already set up and a reused-buffer packet driver (benchmarks, the no-allocation test, the memory example) |
//!
//! Must not: use the code under test to build or check what the code under test is judged by: the
//! builder and the checksum are written from the RFCs, not from `ftpnat_core::wire`. (The scenarios
//! drive the engine, and read its outputs through its own views where they only need to follow
//! sequence numbers: they measure, they do not judge.)

pub mod check;
pub mod consts;
pub mod csum;
pub mod fuzz;
pub mod harness;
pub mod pkt;
pub mod scenario;
