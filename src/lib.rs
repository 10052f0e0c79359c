//! ftpnat: a userspace IPv4 NAT gateway with a stream-correct FTP application-level gateway.
//!
//! This crate is the shell around the sans-IO core ([`ftpnat_core`], re-exported here module by module
//! so `ftpnat::engine::Engine` and the like keep their paths): the code with system calls, clocks,
//! threads and files.
//!
//! | module | owns |
//! |---|---|
//! | [`replay`] | `ftpnat replay`: pcap frames through the engine with peer emulation |
//! | [`io`] | TUN devices, the run loop, pcap files, logging |
//! | [`ops`] | operating a running gateway: control socket, metrics endpoint, config file, capture, reload |
//!
//! Dependencies point from here into the core, never back. Within the shell: `main.rs` → [`io`]'s run
//! loop → [`ops`] (the loop serves the operations link each turn and hands it [`ops::loop_stats`]);
//! [`replay`] → [`io`]`::pcap`; [`ops`] imports nothing of [`io`] or [`replay`], and [`io`] nothing of
//! [`replay`].

pub use ftpnat_core::{
    alg, config, conntrack, engine, events, flow, frag, metrics, nat, nat64, steer, stream, time, wire, xlat,
};

pub mod io;
pub mod ops;
pub mod replay;

pub use ftpnat_core::{Config, DropReason, Engine, Instant, Metrics, RefusalReason, Transmit, Verdict};
pub use ftpnat_core::{Dir, Side};
