//! Everything with syscalls, clocks and files: packet devices, the run loop, pcap files.
//!
//! Owns: [`device`] (the device trait and an in-memory pair), [`tun`] (Linux TUN devices), [`offload`] (their segmentation-offload I/O),
//! [`bpf`] (the eBPF program that steers each packet to the queue of the worker that owns it), [`handoff`]
//! (workers handing each other the rare packet the program could not steer), [`workers`] (N run loops
//! side by side, `--workers N`), [`reorder`] (counting the reordering a handoff causes),
//! [`runtime`] (the poll loop driving the engine), [`state_file`] (the state a restart keeps, `--state-file`), [`pcap`] (capture files) and [`log`] (rate-limited,
//! non-blocking log output). Must not: decide
//! anything about packets; only `main.rs`, `replay` and tests import this module.

pub mod bpf;
pub mod device;
pub mod handoff;
pub mod log;
pub mod offload;
pub mod pcap;
pub mod reorder;
pub mod runtime;
pub mod state_file;
pub mod tun;
pub mod workers;
