//! ftpnat: a userspace IPv4 NAT gateway with a stream-correct FTP application-level gateway.
//!
//! Crate map (dependencies point downwards; nothing but `main.rs`, [`ops`] and tests import [`io`]):
//!
//! | module | owns |
//! |---|---|
//! | [`time`], [`flow`], [`metrics`], [`wire`] | leaves: our clock type, flow vocabulary, counters, packet views and checksums |
//! | [`config`] | validated configuration |
//! | [`conntrack`] | which connections exist, their state and timeouts |
//! | [`frag`] | fragment state: first fragments remembered, later ones waiting, per-source shares |
//! | [`nat`] | outside port allocation and endpoint-independent mappings |
//! | [`seqadj`] | per-direction sequence maps: the only code that edits seq/ack/SACK numbers |
//! | [`alg`] | the ALG boundary; [`alg::ftp`] understands FTP |
//! | [`engine`] | the sans-IO core: `handle_packet` / `poll_transmit` / `poll_timeout` / `handle_timeout` |
//! | [`events`] | what the engine did, as values, for `ftpnat events` (off unless asked for) |
//! | [`replay`] | `ftpnat replay`: pcap frames through the engine with peer emulation |
//! | [`io`] | the only code with syscalls, clocks and files: TUN devices, the run loop, pcap files |
//! | [`ops`] | operating a running gateway: control socket, metrics endpoint, config file, capture, reload |

pub mod alg;
pub mod config;
pub mod conntrack;
pub mod engine;
pub mod events;
pub mod flow;
pub mod frag;
pub mod io;
pub mod metrics;
pub mod nat;
pub mod ops;
pub mod replay;
pub mod seqadj;
pub mod time;
pub mod wire;

pub use config::Config;
pub use engine::{Engine, Transmit, Verdict};
pub use flow::{Dir, Side};
pub use metrics::{DropReason, Metrics, RefusalReason};
pub use time::Instant;
