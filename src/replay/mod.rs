//! `ftpnat replay`: captured frames through the same engine the TUN loop drives, with the outside peers
//! emulated, and what the gateway emits on each side written out.
//!
//! Owns: the replay loop ([`Replayer`]: link decoding, input normalisation, sides, peer emulation, capture
//! time as the engine's clock, timers), the replay's own counters and the summary ([`Summary`], whose
//! keys are a stable contract). Submodules: [`peer`] (peer emulation), `fixup`
//! (input checksums, TSO lengths, IPv6 routing), `files` (the file driver [`run`]: reading, replaying
//! and writing on three threads), `shard` ([`run_sharded`]: `--workers N`, N engines on N threads, as
//! the gateway's workers), [`cli`] (the `ftpnat replay` arguments). Must not: translate packets itself (the engine does), change engine
//! state other than through its public calls, or read a clock.
//!
//! Per frame: decode the link layer ([`crate::wire::link`]); skip non-IP (counted); route IPv6 (hop limit − 1) to the other
//! side; for IPv4 repair the input (unless trusted), pick the side by source address, emulate the peer
//! for WAN-side packets, hand it to [`Engine::handle_packet`] with the frame's timestamp, write what it
//! forwards and what [`Engine::poll_transmit`] releases. Before each frame, timers that came due in
//! capture time run first, so a pinhole or a mapping expires where the capture's clock says it does.

pub mod cli;
mod files;
mod fixup;
pub mod peer;
mod shard;

pub use files::{run, write_summary, ReplayFiles};
pub use shard::{run_sharded, Schedule};

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{Config, Forward, Shard};
use crate::engine::{Engine, Verdict};
use crate::flow::Side;
use crate::io::pcap::CaptureError;
use crate::metrics::{DropReason, Metrics, RefusalReason};
use crate::time::Instant;
use crate::wire::link::{self, Decoded, LinkError, LinkType, L3};

/// How long the capture's clock runs on after its last frame, so held fragments and held ALG bytes are
/// settled (released or counted) before the summary is taken: above the engine's fragment wait (2 s)
/// and the ALG hold limit.
const DRAIN_EXTRA: core::time::Duration = core::time::Duration::from_secs(3);

/// What a replay needs besides files: the gateway's configuration as `ftpnat replay` states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// IPv4 prefixes are translated; IPv6 prefixes only pick the side of IPv6 packets.
    pub inside: Vec<IpNet>,
    pub public_ip: Ipv4Addr,
    pub forwards: Vec<Forward>,
    /// FTP control ports (for a forwarded inside server, its inside port). Empty means 21.
    pub ftp_ports: Vec<u16>,
    pub keep_link_layer: bool,
    pub trust_input_checksums: bool,
    /// `--nat64-prefix`: IPv6 packets from an IPv6 `--inside` prefix go through the gateway's NAT64
    /// (README "NAT64"), and the IPv6 peers' recorded answers are emulated as the IPv4 server's.
    pub nat64_prefix: Option<crate::xlat::Nat64Prefix>,
    /// Issue 15's proof that a restart changes nothing: every this many frames the engine's state is
    /// saved and a new engine restored from it ([`Engine::save_state`], [`Engine::restore`]). `None`:
    /// one engine throughout.
    pub restart_every: Option<u32>,
}

impl ReplayOptions {
    pub fn new(inside: Vec<IpNet>, public_ip: Ipv4Addr) -> ReplayOptions {
        ReplayOptions {
            inside,
            public_ip,
            forwards: Vec::new(),
            ftp_ports: vec![21],
            keep_link_layer: false,
            trust_input_checksums: false,
            restart_every: None,
            nat64_prefix: None,
        }
    }

    fn inside_v4(&self) -> Vec<Ipv4Net> {
        self.inside.iter().filter_map(|n| if let IpNet::V4(n) = n { Some(*n) } else { None }).collect()
    }

    fn inside_v6(&self) -> Vec<Ipv6Net> {
        self.inside.iter().filter_map(|n| if let IpNet::V6(n) = n { Some(*n) } else { None }).collect()
    }

    /// The engine configuration for a replay: ICMP errors suppressed (counted), an MTU no captured
    /// datagram exceeds (TSO/GRO captures carry datagrams far above 1500 bytes), IP header checksums
    /// verified (the input was repaired unless the user said to trust it). The error names the flag.
    pub fn config(&self) -> Result<Config, String> {
        if self.inside.is_empty() {
            return Err("--inside: at least one inside prefix is required".into());
        }
        let mut v4 = self.inside_v4();
        if v4.is_empty() {
            // IPv6-only inside: the engine still wants a prefix; 0.0.0.0/32 is no host's source address.
            v4.push(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).expect("valid prefix length"));
        }
        let mut c = Config::new(v4, self.public_ip);
        c.forwards = self.forwards.clone();
        if !self.ftp_ports.is_empty() {
            c.ftp.ports = self.ftp_ports.clone();
        }
        if let Some(p) = self.nat64_prefix {
            if self.inside_v6().is_empty() {
                return Err(
                    "--nat64-prefix: needs an IPv6 --inside prefix (the IPv6 hosts that use it)".into()
                );
            }
            c.nat64 = Some(crate::nat64::Nat64Config::new(p, self.inside_v6()));
        }
        c.mtu = [u16::MAX, u16::MAX];
        c.send_icmp_errors = false;
        c.verify_ip_checksum = true;
        c.validate()?;
        Ok(c)
    }
}

/// Counters the replay keeps itself (the engine keeps its own [`Metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Input IP packets (IPv4 and IPv6) by the side they entered, indexed by [`Side::index`].
    pub packets_in: [u64; 2],
    /// Packets written to each side's output.
    pub packets_out: [u64; 2],
    pub checksums_repaired: u64,
    pub ipv6_passed: u64,
    pub non_ip: u64,
    /// Drops decided outside the engine (IPv6 hop limit, undecodable frames).
    pub drops: [u64; DropReason::COUNT],
    /// Packets the replay would have had the gateway originate (ICMPv6 time exceeded).
    pub generated_suppressed: u64,
    pub frames: u64,
    /// The input could not be read to its end (cut short, or a damaged record): everything here covers
    /// only the frames before that point.
    pub incomplete: bool,
}

impl Counters {
    /// Adds `o`'s counts to these (several engines' replays as one, `--workers N`). Destructured whole,
    /// so a counter added here cannot be left out of the sum.
    pub fn add(&mut self, o: &Counters) {
        let Counters {
            packets_in,
            packets_out,
            checksums_repaired,
            ipv6_passed,
            non_ip,
            drops,
            generated_suppressed,
            frames,
            incomplete,
        } = o;
        for (a, b) in self.packets_in.iter_mut().zip(packets_in) {
            *a += b;
        }
        for (a, b) in self.packets_out.iter_mut().zip(packets_out) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        self.checksums_repaired += checksums_repaired;
        self.ipv6_passed += ipv6_passed;
        self.non_ip += non_ip;
        self.generated_suppressed += generated_suppressed;
        self.frames += frames;
        self.incomplete |= incomplete;
    }
}

/// A frame whose link type nothing decodes (`n`: its number in the capture, from 1).
fn unsupported_link(n: u64, t: u32) -> ReplayError {
    ReplayError::Input(format!(
        "frame {n}: link type {t} is not supported (Ethernet, raw IP, Linux SLL/SLL2, NULL/LOOP are)"
    ))
}

/// The result of a replay: every counter of the summary contract.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counters: Counters,
    pub metrics: Metrics,
}

impl Summary {
    /// The summary's keys (dotted) and values, in a stable order. These keys are the `ftpnat replay`
    /// contract: add, never rename.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let (c, m) = (&self.counters, &self.metrics);
        let mut v: Vec<(String, u64)> = Vec::new();
        for side in [Side::Inside, Side::Outside] {
            v.push((format!("packets.in.{}", side.name()), c.packets_in[side.index()]));
        }
        for side in [Side::Inside, Side::Outside] {
            v.push((format!("packets.out.{}", side.name()), c.packets_out[side.index()]));
        }
        v.push(("alg.rewrites.port".into(), m.alg_rewrites_port));
        v.push(("alg.rewrites.eprt".into(), m.alg_rewrites_eprt));
        v.push(("alg.rewrites.227".into(), m.alg_rewrites_227));
        v.push(("alg.rewrites.229".into(), m.alg_rewrites_229));
        for r in RefusalReason::ALL {
            v.push((format!("alg.refused.{}", r.name()), m.refused_of(*r)));
        }
        v.push(("pinholes.created".into(), m.pinholes_created));
        v.push(("pinholes.used".into(), m.pinholes_used));
        v.push(("pinholes.expired".into(), m.pinholes_expired));
        for r in DropReason::ALL {
            v.push((format!("drops.{}", r.name()), m.drops_of(*r) + c.drops[r.index()]));
        }
        v.push(("generated.suppressed".into(), m.generated_suppressed + c.generated_suppressed));
        v.push(("input.checksums_repaired".into(), c.checksums_repaired));
        v.push(("input.ipv6_passed".into(), c.ipv6_passed));
        v.push(("input.non_ip".into(), c.non_ip));
        v.push(("tcp.window_ignored".into(), m.tcp_window_ignored));
        v.push(("tcp.rst_ignored".into(), m.tcp_rst_ignored));
        v.push(("alg.gaps".into(), m.alg_gaps));
        v.push(("alg.gap_lines".into(), m.alg_gap_lines));
        // Only present, as 1, when the input could not be read to its end: a complete replay's summary
        // keeps exactly the keys it always had.
        if c.incomplete {
            v.push(("input.incomplete".into(), 1));
        }
        v
    }

    /// One value by its dotted key.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.entries().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sum of every `drops.*` counter.
    pub fn total_drops(&self) -> u64 {
        self.metrics.total_drops() + self.counters.drops.iter().sum::<u64>()
    }

    /// The summary as nested JSON objects of integers (`{"packets":{"in":{"lan":12}}}`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (key, value) in self.entries() {
            let mut parts: Vec<&str> = key.split('.').collect();
            let leaf = parts.pop().expect("keys have a dot");
            let mut obj = &mut root;
            for p in parts {
                obj = obj
                    .entry(p)
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
                    .as_object_mut()
                    .expect("key prefixes are objects");
            }
            obj.insert(leaf.to_string(), serde_json::Value::from(value));
        }
        serde_json::Value::Object(root)
    }
}

/// The link framing of the frame that caused an output, for `--keep-link-layer`.
#[derive(Debug, Clone, Copy)]
pub struct FrameLink<'a> {
    pub linktype: LinkType,
    pub frame: &'a [u8],
    pub decoded: &'a Decoded,
}

/// Where the replay's output packets go.
pub trait Output {
    /// One IP datagram leaving towards `side`, stamped with the capture time of what caused it. `link` is
    /// the causing frame (`None` for packets a timer released).
    fn packet(
        &mut self,
        side: Side,
        ts_micros: u64,
        packet: &[u8],
        link: Option<FrameLink<'_>>,
    ) -> Result<(), CaptureError>;
}

/// Collects output in memory (tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryOutput {
    /// (side, timestamp, datagram)
    pub packets: Vec<(Side, u64, Vec<u8>)>,
    /// Count only, keep nothing (benchmarks).
    pub discard: bool,
    pub count: [u64; 2],
}

impl Output for MemoryOutput {
    fn packet(
        &mut self,
        side: Side,
        ts: u64,
        packet: &[u8],
        _: Option<FrameLink<'_>>,
    ) -> Result<(), CaptureError> {
        self.count[side.index()] += 1;
        if !self.discard {
            self.packets.push((side, ts, packet.to_vec()));
        }
        Ok(())
    }
}

/// Why a replay failed. The message names the file or flag at fault.
#[derive(Debug)]
pub enum ReplayError {
    /// A bad argument or configuration.
    Args(String),
    /// The input cannot be read (entirely).
    Input(String),
    /// An output cannot be written.
    Output(String),
    /// The input ends in a truncated or damaged record: the frames before it were replayed, the outputs
    /// renamed `FILE.incomplete` and the summary marked (`input.incomplete` = 1). `summary` is that
    /// summary, for a caller that prints it.
    Incomplete { error: String, summary: Box<Summary>, outputs: Vec<std::path::PathBuf> },
}

impl ReplayError {
    /// The process exit status for this error (2 for usage errors, like clap's).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Args(_) => 2,
            ReplayError::Input(_) | ReplayError::Output(_) | ReplayError::Incomplete { .. } => 1,
        }
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Args(m) => write!(f, "bad argument: {m}"),
            ReplayError::Input(m) => write!(f, "cannot read input: {m}"),
            ReplayError::Output(m) => write!(f, "cannot write output: {m}"),
            ReplayError::Incomplete { error, outputs, .. } => {
                write!(
                    f,
                    "cannot read input to its end: {error}; replayed up to there, the summary is marked "
                )?;
                write!(f, "input.incomplete = 1")?;
                if !outputs.is_empty() {
                    let names: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
                    write!(f, ", the outputs are {}", names.join(" and "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// What the last frame handed to [`Replayer::frame`] led to (timers that ran before it excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    /// The frame carried an IP packet.
    pub ip: bool,
    /// Packets written because of it.
    pub outputs: u32,
    /// Drops counted because of it.
    pub drops: u64,
    /// The engine kept it (a fragment waiting for its first fragment).
    pub held: bool,
}

/// The replay loop over frames, independent of files.
pub struct Replayer {
    engine: Engine,
    inside_v6: Vec<Ipv6Net>,
    repair: bool,
    counters: Counters,
    buf: Vec<u8>,
    last_ts: u64,
    drain: core::time::Duration,
    last: FrameOutcome,
    /// The sum of `counters.drops`, so that counting a frame's drops costs no sum over every reason.
    own_drops: u64,
    /// `--restart-every`: the configuration to restore into, and the period.
    restart: Option<(Config, u32)>,
}

impl Replayer {
    pub fn new(opts: &ReplayOptions) -> Result<Replayer, ReplayError> {
        Replayer::for_shard(opts, Shard::ONE)
    }

    /// Engine `shard` of several (`ftpnat replay --workers N`): its slice of the port range, its share
    /// of the table ([`Config::for_shard`]).
    pub fn for_shard(opts: &ReplayOptions, shard: Shard) -> Result<Replayer, ReplayError> {
        let config = opts.config().map_err(ReplayError::Args)?.for_shard(shard);
        let drain = DRAIN_EXTRA.max(config.ftp.hold_timeout + core::time::Duration::from_secs(1));
        Ok(Replayer {
            engine: Engine::new(config.clone()),
            inside_v6: opts.inside_v6(),
            repair: !opts.trust_input_checksums,
            counters: Counters::default(),
            buf: Vec::with_capacity(65536),
            last_ts: 0,
            drain,
            last: FrameOutcome::default(),
            own_drops: 0,
            restart: opts.restart_every.map(|n| (config.clone(), n.max(1))),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What the last frame led to: every IP frame either produced output, or was counted in exactly
    /// one drop, or is held (tests check this for every frame).
    pub fn last_frame(&self) -> FrameOutcome {
        self.last
    }

    /// A drop decided here rather than by the engine.
    fn count_drop(&mut self, r: DropReason) {
        self.counters.drops[r.index()] += 1;
        self.own_drops += 1;
    }

    fn total_drops(&self) -> u64 {
        self.engine.metrics().total_drops() + self.own_drops
    }

    pub fn summary(&self) -> Summary {
        Summary { counters: self.counters.clone(), metrics: self.engine.metrics().clone() }
    }

    /// Runs the timers that came due up to `ts` (capture time, µs). Packets they release are stamped
    /// with the deadline that released them.
    fn advance(&mut self, ts: u64, out: &mut dyn Output) -> Result<(), CaptureError> {
        let now = Instant::from_micros(ts);
        let mut rounds = 0;
        while let Some(due) = self.engine.poll_timeout() {
            if due > now {
                break;
            }
            if rounds == 64 {
                // poll_timeout may be early (stale timers); each round retires some, and this bound
                // keeps a pathological queue from spinning.
                self.engine.handle_timeout(now);
                self.drain_transmits(ts.max(self.last_ts), None, out)?;
                break;
            }
            self.engine.handle_timeout(due);
            self.drain_transmits(due.as_micros().max(self.last_ts), None, out)?;
            rounds += 1;
        }
        Ok(())
    }

    fn drain_transmits(
        &mut self,
        ts: u64,
        link: Option<FrameLink<'_>>,
        out: &mut dyn Output,
    ) -> Result<(), CaptureError> {
        while let Some(t) = self.engine.poll_transmit() {
            self.counters.packets_out[t.side.index()] += 1;
            out.packet(t.side, ts, &t.packet, link)?;
        }
        Ok(())
    }

    /// One captured frame. Fails only on an unsupported link type or an output error.
    pub fn frame(
        &mut self,
        ts: u64,
        linktype: LinkType,
        data: &[u8],
        out: &mut dyn Output,
    ) -> Result<(), ReplayError> {
        self.advance(ts, out).map_err(|e| ReplayError::Output(e.to_string()))?;
        if let Some((config, every)) = &self.restart {
            if self.counters.frames % u64::from(*every) == 0 {
                let state = self.engine.save_state();
                self.engine = Engine::restore(config.clone(), &state)
                    .map_err(|e| ReplayError::Args(format!("--restart-every: {e}")))?
                    .0;
            }
        }
        let (outs, drops) = (self.counters.packets_out, self.total_drops());
        self.last = FrameOutcome::default();
        let r = self.frame_inner(ts, linktype, data, out);
        self.last.outputs =
            (self.counters.packets_out[0] + self.counters.packets_out[1] - outs[0] - outs[1]) as u32;
        self.last.drops = self.total_drops() - drops;
        r
    }

    fn frame_inner(
        &mut self,
        ts: u64,
        linktype: LinkType,
        data: &[u8],
        out: &mut dyn Output,
    ) -> Result<(), ReplayError> {
        let out_err = |e: CaptureError| ReplayError::Output(e.to_string());
        self.last_ts = self.last_ts.max(ts);
        self.counters.frames += 1;
        let decoded = match link::decode(linktype, data) {
            Ok(d) => d,
            Err(LinkError::UnsupportedLinkType(t)) => return Err(unsupported_link(self.counters.frames, t)),
            Err(LinkError::Truncated) => {
                self.last.ip = true;
                // Too short to hold even the IP header: nothing the gateway could forward.
                self.counters.packets_in[Side::Outside.index()] += 1;
                self.count_drop(DropReason::Malformed);
                return Ok(());
            }
        };
        let link = FrameLink { linktype, frame: data, decoded: &decoded };
        let l3 = &data[decoded.l3_start..decoded.l3_end];
        match decoded.l3 {
            L3::Other(_) => {
                self.counters.non_ip += 1;
                Ok(())
            }
            L3::Ipv6 => {
                self.last.ip = true;
                self.buf.clear();
                self.buf.extend_from_slice(l3);
                let src = fixup::ipv6_src(&self.buf);
                let side = match src {
                    Some(a) if self.inside_v6.iter().any(|n| n.contains(&a)) => Side::Inside,
                    _ => Side::Outside,
                };
                self.counters.packets_in[side.index()] += 1;
                if self.engine.nat64().is_some() {
                    return self.nat64_frame(ts, side, link, out).map_err(out_err);
                }
                let (ok, repaired) = fixup::ipv6(&mut self.buf, self.repair);
                self.counters.checksums_repaired += repaired;
                if ok {
                    self.counters.ipv6_passed += 1;
                    let to = side.other();
                    self.counters.packets_out[to.index()] += 1;
                    out.packet(to, ts, &self.buf, Some(link)).map_err(out_err)?;
                } else {
                    // RFC 8200 §3 / RFC 4443 §3.3: discarded; the time-exceeded is not ours to send here.
                    self.count_drop(DropReason::TtlExceeded);
                    self.counters.generated_suppressed += 1;
                }
                Ok(())
            }
            L3::Ipv4 => {
                self.last.ip = true;
                self.buf.clear();
                self.buf.extend_from_slice(l3);
                self.counters.checksums_repaired += fixup::ipv4(&mut self.buf, self.repair);
                let side = match fixup::ipv4_src(&self.buf) {
                    Some(a) if self.engine.config().is_inside(a) => Side::Inside,
                    _ => Side::Outside,
                };
                self.counters.packets_in[side.index()] += 1;
                if side == Side::Outside {
                    peer::emulate(&self.engine, &mut self.buf);
                }
                let verdict = self.engine.handle_packet(Instant::from_micros(ts), side, &mut self.buf);
                self.last.held = verdict == Verdict::Held;
                if let Verdict::Forward(to) = verdict {
                    self.counters.packets_out[to.index()] += 1;
                    out.packet(to, ts, &self.buf, Some(link)).map_err(out_err)?;
                }
                self.drain_transmits(ts, Some(link), out).map_err(out_err)
            }
        }
    }

    /// An IPv6 packet with NAT64 on (in `self.buf`): an inside host's goes to the engine as it is; an
    /// outside peer's (recorded on the IPv6 side, from the prefix to the inside host) is first what the
    /// IPv4 server sent: translated (RFC 7915) to the host's stand-in, then emulated like any WAN packet.
    fn nat64_frame(
        &mut self,
        ts: u64,
        side: Side,
        link: FrameLink<'_>,
        out: &mut dyn Output,
    ) -> Result<(), CaptureError> {
        // Checksums repaired as for any input; the hop limit is the engine's to decrement (it routes).
        let hop = self.buf.get(7).copied();
        let (_, repaired) = fixup::ipv6(&mut self.buf, self.repair);
        if let (Some(h), Some(b)) = (hop, self.buf.get_mut(7)) {
            *b = h;
        }
        self.counters.checksums_repaired += repaired;
        if side == Side::Outside {
            let Some(n) = self.engine.nat64() else { return Ok(()) };
            let map = crate::nat64::Nat64Map { prefix: &n.cfg.prefix, hosts: &n.hosts, gateway: None };
            let params = crate::xlat::Params { mtu4: u16::MAX, mtu6: u16::MAX, ident: 0 };
            if crate::xlat::v6_to_v4(&mut self.buf, &map, &params).is_err() {
                // No IPv4 server could have sent it (no prefix address, an inside host with no stand-in).
                self.count_drop(DropReason::Nat64Unroutable);
                return Ok(());
            }
            peer::emulate(&self.engine, &mut self.buf);
        }
        let verdict = self.engine.handle_packet(Instant::from_micros(ts), side, &mut self.buf);
        self.last.held = verdict == Verdict::Held;
        if let Verdict::Forward(to) = verdict {
            self.counters.packets_out[to.index()] += 1;
            out.packet(to, ts, &self.buf, Some(link))?;
        }
        self.drain_transmits(ts, Some(link), out)
    }

    /// Marks the replay as covering only part of its input (see [`Counters::incomplete`]).
    pub fn mark_incomplete(&mut self) {
        self.counters.incomplete = true;
    }

    /// The end of the input: the clock runs on long enough to settle what is still held (fragments
    /// waiting for their first fragment are counted as dropped, held ALG bytes are released).
    pub fn finish(&mut self, out: &mut dyn Output) -> Result<Summary, ReplayError> {
        let end = Instant::from_micros(self.last_ts) + self.drain;
        self.advance(end.as_micros(), out).map_err(|e| ReplayError::Output(e.to_string()))?;
        Ok(self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pcap::PcapWriter;

    fn opts() -> ReplayOptions {
        ReplayOptions::new(
            vec!["10.0.0.0/24".parse().unwrap(), "2001:db8:1::/64".parse().unwrap()],
            Ipv4Addr::new(203, 0, 113, 1),
        )
    }

    fn udp4(src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 32, 0, 7, 0, 0, ttl, 17, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        // Port 5000 on the 10/8 side, 53 on the other.
        let (sp, dp): (u16, u16) = if src[0] == 10 { (5000, 53) } else { (53, 5000) };
        p.extend_from_slice(&sp.to_be_bytes());
        p.extend_from_slice(&dp.to_be_bytes());
        p.extend_from_slice(&[0, 12, 0, 0, b'q', b'u', b'e', b'y']);
        let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_header_checksum();
        ip.fill_transport_checksum();
        p
    }

    fn udp6(src_last: u8, hops: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, hops];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, src_last]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 8, 0x12, 0x34]);
        p
    }

    fn eth(l3: &[u8], ethertype: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    /// `--nat64-prefix`: a capture taken on an IPv6-only LAN (the client and, under the prefix, the
    /// server's address) replays through NAT64: the client's datagram leaves the WAN side as IPv4
    /// from the public address, the recorded answer is emulated as the IPv4 server's and comes back
    /// to the client as IPv6 from the synthesised address.
    #[test]
    fn nat64_replays_an_ipv6_only_capture() {
        use etherparse::PacketBuilder;
        let client: std::net::Ipv6Addr = "2001:db8:1::5".parse().unwrap();
        let server: std::net::Ipv6Addr = "64:ff9b:1::198.51.100.7".parse().unwrap();
        let mut o = opts();
        o.nat64_prefix = Some("64:ff9b:1::/96".parse().unwrap());
        let mut r = Replayer::new(&o).unwrap();
        let mut out = MemoryOutput::default();
        let mut q = Vec::new();
        PacketBuilder::ipv6(client.octets(), server.octets(), 64)
            .udp(5000, 53)
            .write(&mut q, b"query")
            .unwrap();
        let mut a = Vec::new();
        PacketBuilder::ipv6(server.octets(), client.octets(), 60)
            .udp(53, 5000)
            .write(&mut a, b"answer")
            .unwrap();
        r.frame(1_000_000, LinkType::RAW, &q, &mut out).unwrap();
        r.frame(1_000_100, LinkType::RAW, &a, &mut out).unwrap();
        // A recorded packet from no prefix address cannot be the IPv4 server's.
        let mut stray = Vec::new();
        PacketBuilder::ipv6([0x20, 1, 0xd, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], client.octets(), 60)
            .udp(53, 5000)
            .write(&mut stray, b"x")
            .unwrap();
        r.frame(1_000_200, LinkType::RAW, &stray, &mut out).unwrap();
        let s = r.finish(&mut out).unwrap();
        assert_eq!(out.packets.len(), 2, "{:?}", out.packets);
        let (side, _, wan) = &out.packets[0];
        assert_eq!((*side, wan[0] >> 4), (Side::Outside, 4));
        assert_eq!((&wan[12..16], &wan[16..20]), (&[203, 0, 113, 1][..], &[198, 51, 100, 7][..]));
        let (side, _, lan) = &out.packets[1];
        assert_eq!((*side, lan[0] >> 4), (Side::Inside, 6));
        assert_eq!((&lan[8..24], &lan[24..40]), (&server.octets()[..], &client.octets()[..]));
        assert_eq!(&lan[48..], b"answer");
        assert_eq!(s.get("drops.nat64_unroutable"), Some(1));
    }

    #[test]
    fn sides_ipv6_non_ip_and_accounting() {
        let mut r = Replayer::new(&opts()).unwrap();
        let mut out = MemoryOutput::default();
        // LAN UDP out, its answer back (peer emulation), a stray WAN packet (dropped, counted).
        r.frame(1_000_000, LinkType::RAW, &udp4([10, 0, 0, 2], [198, 51, 100, 1], 64), &mut out).unwrap();
        assert_eq!(r.last_frame(), FrameOutcome { ip: true, outputs: 1, drops: 0, held: false });
        r.frame(1_000_100, LinkType::RAW, &udp4([198, 51, 100, 1], [10, 0, 0, 2], 64), &mut out).unwrap();
        assert_eq!(r.last_frame().outputs, 1);
        r.frame(1_000_200, LinkType::RAW, &udp4([198, 51, 100, 9], [10, 0, 0, 2], 64), &mut out).unwrap();
        assert_eq!(r.last_frame(), FrameOutcome { ip: true, outputs: 0, drops: 1, held: false });
        // TTL 1: the router drops it; the time-exceeded it would send is suppressed and counted.
        r.frame(1_000_300, LinkType::RAW, &udp4([10, 0, 0, 2], [198, 51, 100, 1], 1), &mut out).unwrap();
        assert_eq!(r.last_frame().drops, 1);
        // IPv6 from inside and outside; hop limit 1 is dropped.
        r.frame(1_000_400, LinkType::ETHERNET, &eth(&udp6(5, 64), 0x86dd), &mut out).unwrap();
        r.frame(1_000_500, LinkType::ETHERNET, &eth(&udp6(5, 1), 0x86dd), &mut out).unwrap();
        assert_eq!(r.last_frame().drops, 1);
        // ARP and a frame too short for any header.
        r.frame(1_000_600, LinkType::ETHERNET, &eth(&[0; 28], 0x0806), &mut out).unwrap();
        assert_eq!(r.last_frame(), FrameOutcome::default());
        r.frame(1_000_700, LinkType::ETHERNET, &[1, 2, 3], &mut out).unwrap();
        assert_eq!(r.last_frame().drops, 1);
        let s = r.finish(&mut out).unwrap();
        let sides: Vec<(Side, Vec<u8>)> = out.packets.iter().map(|(s, _, p)| (*s, p.clone())).collect();
        assert_eq!(sides.len(), 3);
        assert_eq!(sides[0].0, Side::Outside);
        assert_eq!(&sides[0].1[12..16], &[203, 0, 113, 1]);
        assert_eq!(sides[1].0, Side::Inside);
        assert_eq!(&sides[1].1[16..20], &[10, 0, 0, 2]);
        assert_eq!(sides[2].0, Side::Outside, "IPv6 from an inside prefix goes out");
        assert_eq!(sides[2].1[7], 63);
        assert_eq!(s.get("packets.in.lan"), Some(4));
        assert_eq!(s.get("packets.in.wan"), Some(3), "the answer, the stray packet, the runt frame");
        assert_eq!(s.get("packets.out.wan"), Some(2));
        assert_eq!(s.get("packets.out.lan"), Some(1));
        assert_eq!(s.get("input.ipv6_passed"), Some(1));
        assert_eq!(s.get("input.non_ip"), Some(1));
        assert_eq!(s.get("drops.ttl_exceeded"), Some(2));
        assert_eq!(s.get("drops.malformed"), Some(1));
        assert_eq!(s.get("generated.suppressed"), Some(2));
        assert_eq!(s.get("input.checksums_repaired"), Some(1), "the zero IPv6 UDP checksum");
        assert_eq!(s.total_drops(), 4);
        // Every IP packet in: out or counted once.
        assert_eq!(s.get("packets.in.lan").unwrap() + s.get("packets.in.wan").unwrap(), 3 + s.total_drops());
    }

    #[test]
    fn summary_json_has_the_contract_shape() {
        let r = Replayer::new(&opts()).unwrap();
        let j = r.summary().to_json();
        for path in [
            "/packets/in/lan",
            "/packets/in/wan",
            "/packets/out/lan",
            "/packets/out/wan",
            "/alg/rewrites/port",
            "/alg/rewrites/eprt",
            "/alg/rewrites/227",
            "/alg/rewrites/229",
            "/alg/refused/third_host",
            "/pinholes/created",
            "/pinholes/used",
            "/pinholes/expired",
            "/drops/no_mapping",
            "/generated/suppressed",
            "/input/checksums_repaired",
            "/input/ipv6_passed",
            "/input/non_ip",
        ] {
            assert!(j.pointer(path).is_some_and(|v| v.is_u64()), "{path}");
        }
        // Only these groups, nothing else at the top.
        let top: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(top, ["alg", "drops", "generated", "input", "packets", "pinholes", "tcp"]);
    }

    #[test]
    fn unsupported_link_type_and_bad_options_are_errors() {
        let mut r = Replayer::new(&opts()).unwrap();
        let e = r.frame(0, LinkType(147), &[0; 40], &mut MemoryOutput::default()).unwrap_err();
        assert!(matches!(e, ReplayError::Input(ref m) if m.contains("147")), "{e}");
        let mut o = opts();
        o.inside.clear();
        assert!(matches!(Replayer::new(&o), Err(ReplayError::Args(_))));
        let v6_only =
            ReplayOptions::new(vec!["2001:db8::/32".parse().unwrap()], Ipv4Addr::new(203, 0, 113, 1));
        assert!(Replayer::new(&v6_only).is_ok());
    }

    #[test]
    fn files_errors_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("ftpnat-replay-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = |input: &str| ReplayFiles {
            input: dir.join(input),
            lan_out: dir.join("lan.pcap"),
            wan_out: dir.join("wan.pcap"),
            summary: Some(dir.join("s.json")),
        };
        let e = run(&opts(), &files("missing.pcap")).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("missing.pcap"), "{e}");
        std::fs::write(dir.join("junk.pcap"), b"this is not a capture").unwrap();
        let e = run(&opts(), &files("junk.pcap")).unwrap_err();
        assert!(e.to_string().contains("junk.pcap"), "{e}");
        let mut same = files("junk.pcap");
        same.wan_out = same.lan_out.clone();
        assert_eq!(run(&opts(), &same).unwrap_err().exit_code(), 2);
        // A capture cut inside its last record: replayed up to it, outputs written, error reported.
        let mut w = PcapWriter::create(&dir.join("cut.pcap"), LinkType::RAW).unwrap();
        w.write(1, &udp4([10, 0, 0, 2], [198, 51, 100, 1], 64)).unwrap();
        w.write(2, &udp4([10, 0, 0, 2], [198, 51, 100, 1], 64)).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(dir.join("cut.pcap")).unwrap();
        std::fs::write(dir.join("cut.pcap"), &bytes[..bytes.len() - 5]).unwrap();
        let e = run(&opts(), &files("cut.pcap")).unwrap_err();
        assert!(matches!(e, ReplayError::Incomplete { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("lan.pcap.incomplete"), "{e}");
        let summary = std::fs::read_to_string(dir.join("s.json")).unwrap();
        assert!(summary.contains("\"wan\": 1"), "{summary}");
        // Marked: the summary says so, and the outputs carry a name no complete replay writes.
        let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(v["input"]["incomplete"], 1, "{summary}");
        assert!(!dir.join("lan.pcap").exists() && !dir.join("wan.pcap").exists());
        assert!(dir.join("lan.pcap.incomplete").exists() && dir.join("wan.pcap.incomplete").exists());
        // A complete replay has no such key (the summary's keys are unchanged for it).
        std::fs::write(dir.join("whole.pcap"), &bytes).unwrap();
        let s = run(&opts(), &files("whole.pcap")).unwrap();
        assert!(s.to_json().pointer("/input/incomplete").is_none());
        assert!(dir.join("lan.pcap").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
