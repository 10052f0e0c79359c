//! `ftpnat replay --workers N`: the capture replayed by N engines, each with its shard of the
//! configuration, on N threads, as the gateway's workers would handle it (issue 18).
//!
//! Owns: [`run_sharded`]: which engine each frame goes to ([`Dispatch`], the core's steering rule as a
//! replay needs it), running the shards ([`Schedule`]: one thread each, or one after the other on this
//! thread), and merging what they emit back into the capture's order, and their summaries into one.
//! Must not: translate or emulate anything itself ([`Replayer`] does, one per shard), or let the
//! threads' timing show in any output.
//!
//! The outputs are a function of the capture and N alone: every frame's outputs (and the outputs of
//! the timers its engine ran just before it) are written at the frame's place in the capture; what the
//! engines release after the last frame follows, engine 0 first. So N threads write exactly what the
//! same N engines write one after the other ([`Schedule::Sequential`]); `tests/replay_sharded.rs`
//! checks it byte for byte over every committed case and the corpus. They are not the bytes of a
//! one-engine replay: each engine hands out the public ports of its own slice of the port range, as
//! the gateway's workers do.
//!
//! Which engine: the gateway's rule ([`Steering`]) with one difference a capture recorded on a flat
//! network needs: a WAN-side packet still addressed to an inside host (the peer emulation readdresses
//! it to the gateway) goes to that host's engine, as the gateway's rule sends what the host's flows
//! receive. LAN-side packets go by their source host; WAN-side packets to the public address by the
//! rule (their port's slice, a forward's host); their later fragments follow their first fragment.
//! IPv6 (passed through untranslated) and frames that are not IP go to engine 0. NAT64 runs on one
//! engine (as in `ftpnat run`).
//!
//! Memory: the capture is held whole (the shards' threads read it side by side), with what the
//! engines emit until it is written; `--workers 1` (the default) streams as always.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::files::{check_files, conclude, PcapOutput};
use super::{Counters, FrameLink, Output, ReplayError, ReplayFiles, ReplayOptions, Replayer, Summary};
use crate::config::{Config, Shard};
use crate::flow::Side;
use crate::io::pcap::{CaptureError, CaptureReader, FrameInfo};
use crate::steer::{host_worker, Owner, Steering};
use crate::wire::link::{self, LinkError, LinkType, L3};

/// How the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// One thread per engine.
    Threads,
    /// One engine after the other on the calling thread: the reference the threads must equal.
    Sequential,
}

/// The frames of a capture, back to back.
struct Frames {
    data: Vec<u8>,
    /// (info, offset into `data`)
    frames: Vec<(FrameInfo, usize)>,
}

impl Frames {
    fn get(&self, i: usize) -> (&FrameInfo, &[u8]) {
        let (f, at) = &self.frames[i];
        (f, &self.data[*at..*at + f.len])
    }
}

/// Decides each frame's engine, in capture order.
struct Dispatch<'a> {
    config: &'a Config,
    steering: Steering,
    /// A fragmented WAN datagram's engine, as its first fragment said: (source, destination, id).
    datagrams: HashMap<(Ipv4Addr, Ipv4Addr, u16), u16>,
}

impl Dispatch<'_> {
    fn engine(&mut self, linktype: LinkType, frame: &[u8]) -> u16 {
        let n = self.steering.workers();
        let Ok(d) = link::decode(linktype, frame) else { return 0 };
        if !matches!(d.l3, L3::Ipv4) {
            return 0;
        }
        let p = &frame[d.l3_start..d.l3_end];
        if p.len() < 20 {
            return 0;
        }
        let addr = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        let (src, dst) = (addr(12), addr(16));
        if self.config.is_inside(src) {
            return match self.steering.owner(Side::Inside, p) {
                Owner::Worker(w) => w,
                Owner::Fragment { .. } => host_worker(src, n),
            };
        }
        if self.config.is_inside(dst) {
            return host_worker(dst, n);
        }
        match self.steering.owner(Side::Outside, p) {
            Owner::Worker(w) => w,
            Owner::Fragment { frag_worker, first, .. } => {
                let key = (src, dst, u16::from_be_bytes([p[4], p[5]]));
                if first {
                    let w = self.steering.first_fragment_owner(Side::Outside, p);
                    self.datagrams.insert(key, w);
                    w
                } else {
                    self.datagrams.get(&key).copied().unwrap_or(frag_worker)
                }
            }
        }
    }
}

/// What one engine emitted: each packet tagged with the frame it belongs to (`usize::MAX`: after the
/// last frame).
#[derive(Default)]
struct Emitted {
    bytes: Vec<u8>,
    /// (frame, side, timestamp, caused by the frame itself (its link framing), start, length)
    packets: Vec<(usize, Side, u64, bool, usize, usize)>,
    frame: usize,
}

impl Output for Emitted {
    fn packet(
        &mut self,
        side: Side,
        ts: u64,
        packet: &[u8],
        link: Option<FrameLink<'_>>,
    ) -> Result<(), CaptureError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.packets.push((self.frame, side, ts, link.is_some(), start, packet.len()));
        Ok(())
    }
}

/// One engine's run over its frames (`mine`, in capture order).
fn run_shard(
    opts: &ReplayOptions,
    shard: Shard,
    frames: &Frames,
    mine: &[usize],
    incomplete: bool,
) -> Result<(Emitted, Summary), ReplayError> {
    let mut r = Replayer::for_shard(opts, shard)?;
    let mut out = Emitted::default();
    for &i in mine {
        let (f, data) = frames.get(i);
        out.frame = i;
        r.frame(f.ts_micros, f.linktype, data, &mut out)?;
    }
    if incomplete {
        r.mark_incomplete();
    }
    out.frame = usize::MAX;
    let summary = r.finish(&mut out)?;
    Ok((out, summary))
}

/// Replays `files.input` with `opts` on `workers` engines (see the module header): writes both
/// outputs and, if asked, the summary (every counter summed over the engines). Errors as [`super::run`].
pub fn run_sharded(
    opts: &ReplayOptions,
    files: &ReplayFiles,
    workers: u16,
    schedule: Schedule,
) -> Result<Summary, ReplayError> {
    let config = opts.config().map_err(ReplayError::Args)?;
    if !(1..=Shard::MAX_COUNT).contains(&workers) {
        return Err(ReplayError::Args(format!(
            "--workers: {workers} is not between 1 and {}",
            Shard::MAX_COUNT
        )));
    }
    if workers > 1 && config.nat64.is_some() {
        return Err(ReplayError::Args("--workers: NAT64 (--nat64-prefix) replays on one engine".into()));
    }
    config.for_shard(Shard { index: 0, count: workers }).validate().map_err(ReplayError::Args)?;
    check_files(files)?;
    let mut reader = CaptureReader::open(&files.input).map_err(|e| ReplayError::Input(e.to_string()))?;
    let mut frames = Frames { data: Vec::new(), frames: Vec::new() };
    let mut read_error = None;
    loop {
        let at = frames.data.len();
        match reader.next_frame_into(&mut frames.data) {
            Ok(Some(f)) => frames.frames.push((f, at)),
            Ok(None) => break,
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    // The checks a one-engine replay makes as it reaches a frame, made before any engine runs: a link
    // type nothing decodes ends the replay there; --keep-link-layer needs one link type.
    let mut stop = None;
    let first_lt = frames.frames.first().map(|(f, _)| f.linktype);
    for (i, (f, at)) in frames.frames.iter().enumerate() {
        if let Err(LinkError::UnsupportedLinkType(t)) =
            link::decode(f.linktype, &frames.data[*at..*at + f.len])
        {
            stop = Some(match super::unsupported_link(i as u64 + 1, t) {
                ReplayError::Input(m) => ReplayError::Input(format!("{}: {m}", files.input.display())),
                other => other,
            });
            break;
        }
        if opts.keep_link_layer && Some(f.linktype) != first_lt {
            return Err(ReplayError::Input(format!(
                "{}: --keep-link-layer: the capture mixes link types {} and {}; an output pcap holds one",
                files.input.display(),
                first_lt.unwrap_or(f.linktype),
                f.linktype
            )));
        }
    }
    let usable = if stop.is_some() {
        frames.frames.iter().position(|(f, at)| {
            matches!(
                link::decode(f.linktype, &frames.data[*at..*at + f.len]),
                Err(LinkError::UnsupportedLinkType(_))
            )
        })
    } else {
        None
    }
    .unwrap_or(frames.frames.len());
    let mut dispatch =
        Dispatch { config: &config, steering: Steering::new(&config, workers), datagrams: HashMap::new() };
    let owners: Vec<u16> = (0..usable)
        .map(|i| {
            let (f, data) = frames.get(i);
            dispatch.engine(f.linktype, data)
        })
        .collect();
    let mut mine: Vec<Vec<usize>> = vec![Vec::new(); usize::from(workers)];
    for (i, w) in owners.iter().enumerate() {
        mine[usize::from(*w)].push(i);
    }
    let incomplete = read_error.is_some();
    let results: Vec<Result<(Emitted, Summary), ReplayError>> = match schedule {
        Schedule::Sequential => Shard::all(workers)
            .map(|s| run_shard(opts, s, &frames, &mine[usize::from(s.index)], incomplete))
            .collect(),
        Schedule::Threads => std::thread::scope(|scope| {
            let handles: Vec<_> = Shard::all(workers)
                .map(|s| {
                    let (frames, mine) = (&frames, &mine[usize::from(s.index)]);
                    scope.spawn(move || run_shard(opts, s, frames, mine, incomplete))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(ReplayError::Output("a replay thread panicked".into())))
                })
                .collect()
        }),
    };
    let mut shards = Vec::with_capacity(results.len());
    for r in results {
        shards.push(r?);
    }
    let summary = merge_summaries(shards.iter().map(|(_, s)| s));
    std::thread::scope(|scope| {
        let keep = if opts.keep_link_layer { first_lt } else { None };
        let mut out = PcapOutput::create(scope, files, keep)?;
        let err = |e: CaptureError| ReplayError::Output(e.to_string());
        let mut next = vec![0usize; shards.len()];
        let mut write = |shard: usize, frame: usize, out: &mut PcapOutput<'_>| -> Result<(), CaptureError> {
            let (e, _) = &shards[shard];
            while let Some(&(f, side, ts, own, start, len)) = e.packets.get(next[shard]) {
                if f != frame {
                    break;
                }
                next[shard] += 1;
                let packet = &e.bytes[start..start + len];
                // The causing frame's framing matters only with --keep-link-layer.
                if own && keep.is_some() {
                    let (info, data) = frames.get(f);
                    let decoded = link::decode(info.linktype, data).expect("decoded by its engine");
                    let l = FrameLink { linktype: info.linktype, frame: data, decoded: &decoded };
                    out.packet(side, ts, packet, Some(l))?;
                } else {
                    out.packet(side, ts, packet, None)?;
                }
            }
            Ok(())
        };
        for (i, w) in owners.iter().enumerate() {
            write(usize::from(*w), i, &mut out).map_err(err)?;
        }
        for s in 0..shards.len() {
            write(s, usize::MAX, &mut out).map_err(err)?;
        }
        out.finish()
    })?;
    if let Some(e) = stop {
        return Err(e);
    }
    conclude(files, summary, read_error)
}

/// Every counter summed over the engines.
fn merge_summaries<'a>(all: impl Iterator<Item = &'a Summary>) -> Summary {
    let mut s = Summary { counters: Counters::default(), metrics: Default::default() };
    for one in all {
        s.counters.add(&one.counters);
        s.metrics.add(&one.metrics);
    }
    s
}
