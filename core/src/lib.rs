//! ftpnat's sans-IO core: one packet in, translated packets out, time as a parameter.
//!
//! Everything here is pure computation over bytes and state the caller owns: no clock reads, no
//! system calls, no threads, no files or sockets. The compiler keeps it so: `unsafe` is forbidden
//! (`core/Cargo.toml`), and `core/clippy.toml` disallows the standard library's clocks, threads, files,
//! sockets, processes and locks (`cargo clippy -- -D warnings` in CI). The shell crate (`ftpnat`: TUN
//! devices, the run loop, operations, replay, the CLI) drives it.
//!
//! Crate map (dependencies point downwards):
//!
//! | module | owns |
//! |---|---|
//! | [`time`], [`flow`], [`metrics`], [`wire`] | leaves: our clock type, flow vocabulary, counters, packet views and checksums |
//! | [`config`] | validated configuration |
//! | [`conntrack`] | which connections exist, their TCP window and state, and their timeouts |
//! | [`frag`] | fragment state: first fragments remembered, later ones waiting, per-source shares |
//! | [`nat`] | outside port allocation and endpoint-independent mappings |
//! | [`steer`] | which of several engines (`--workers`) owns a packet: the rule the shell's steering obeys |
//! | [`stream`] | generic TCP stream editing: held bytes, splices, per-direction sequence maps with full history, the seq/ack/SACK numbers and resegmentation of edited segments; knows no application protocol |
//! | [`alg`] | the ALG boundary; [`alg::ftp`] understands FTP |
//! | [`xlat`] | RFC 7915 IPv6 ↔ IPv4 translation and RFC 6052 prefixes, pure |
//! | [`nat64`] | NAT64's inside IPv6 hosts and their IPv4 stand-ins, the address map the translator uses |
//! | [`engine`] | `handle_packet` / `poll_transmit` / `poll_timeout` / `handle_timeout` |
//! | [`events`] | what the engine did, as values, for `ftpnat events` (off unless asked for) |

pub mod alg;
pub mod config;
pub mod conntrack;
pub mod engine;
pub mod events;
pub mod flow;
pub mod frag;
pub mod metrics;
pub mod nat;
pub mod nat64;
pub mod steer;
pub mod stream;
pub mod time;
pub mod wire;
pub mod xlat;

pub use config::Config;
pub use engine::{Engine, Transmit, Verdict};
pub use flow::{Dir, Side};
pub use metrics::{DropReason, Metrics, RefusalReason};
pub use time::Instant;
