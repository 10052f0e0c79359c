//! The file driver of `ftpnat replay`: a capture in, two captures and a summary out.
//!
//! Owns: [`run`] and its three threads (reading the capture, the replay, writing the outputs), the
//! batches they hand each other, the output captures' framing (`--keep-link-layer`) and the summary file.
//! Must not: look inside packets beyond link framing, or touch the replay's state other than through
//! [`Replayer`]'s public calls.
//!
//! Reading (and decompressing) and writing need nothing from the replay, so each runs on its own thread
//! and the replay's thread only decodes, emulates and translates. Frames and output packets travel in
//! batches (bytes back to back in one buffer) that go back to their producer once used: the steady state
//! allocates nothing. The channels are bounded, so memory stays a few batches whatever the capture size.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use super::{FrameLink, Output, ReplayError, ReplayOptions, Replayer, Summary};
use crate::flow::Side;
use crate::io::pcap::{CaptureError, CaptureReader, FrameInfo, PcapRecords, PcapWriter};
use crate::wire::link::{self, Decoded, LinkType};

/// The files of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFiles {
    pub input: PathBuf,
    pub lan_out: PathBuf,
    pub wan_out: PathBuf,
    pub summary: Option<PathBuf>,
}

/// A batch ends at this many frames (or packets) or at this many bytes, whichever comes first: large
/// enough that handing it over costs nothing per frame, small enough to still be in cache when the other
/// thread reads it.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 128 * 1024;
/// Batches in flight between two threads.
const AHEAD: usize = 4;

/// Frames handed from the reading thread to the replay.
struct FrameBatch {
    data: Vec<u8>,
    frames: Vec<FrameInfo>,
}

impl FrameBatch {
    fn new() -> FrameBatch {
        FrameBatch { data: Vec::with_capacity(BATCH_BYTES + 2048), frames: Vec::with_capacity(BATCH) }
    }

    fn full(&self) -> bool {
        self.frames.len() >= BATCH || self.data.len() >= BATCH_BYTES
    }
}

type BatchResult = Result<FrameBatch, String>;

/// Replays `files.input` with `opts`: writes both outputs and, if asked, the summary JSON.
///
/// A capture that ends in a damaged record is replayed up to it, its outputs are written and renamed
/// `FILE.incomplete`, the summary is written with `input.incomplete` = 1, and
/// [`ReplayError::Incomplete`] is returned: the input could not be read entirely.
pub fn run(opts: &ReplayOptions, files: &ReplayFiles) -> Result<Summary, ReplayError> {
    let mut replayer = Replayer::new(opts)?;
    check_files(files)?;
    let reader = CaptureReader::open(&files.input).map_err(|e| ReplayError::Input(e.to_string()))?;
    let (tx, rx) = sync_channel(AHEAD);
    let (recycle_tx, recycle_rx) = channel();
    std::thread::scope(|scope| {
        scope.spawn(move || read_ahead(reader, tx, recycle_rx));
        replay_batches(scope, &mut replayer, opts, files, rx, recycle_tx)
    })
}

/// The outputs are neither the input nor each other.
pub(super) fn check_files(files: &ReplayFiles) -> Result<(), ReplayError> {
    for (flag, p) in [("--lan-out", &files.lan_out), ("--wan-out", &files.wan_out)] {
        if p == &files.input {
            return Err(ReplayError::Args(format!("{flag} {}: would overwrite the input", p.display())));
        }
    }
    if files.lan_out == files.wan_out {
        return Err(ReplayError::Args(format!(
            "--lan-out and --wan-out are the same file ({})",
            files.lan_out.display()
        )));
    }
    Ok(())
}

/// Reads the capture in batches until its end, its first error (sent after the frames before it), or
/// until the replay stops listening.
fn read_ahead(mut reader: CaptureReader, tx: SyncSender<BatchResult>, recycle: Receiver<FrameBatch>) {
    let mut batch = FrameBatch::new();
    loop {
        match reader.next_frame_into(&mut batch.data) {
            Ok(Some(f)) => {
                batch.frames.push(f);
                if batch.full() {
                    let mut next = recycle.try_recv().unwrap_or_else(|_| FrameBatch::new());
                    next.data.clear();
                    next.frames.clear();
                    if tx.send(Ok(std::mem::replace(&mut batch, next))).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => {
                let _ = tx.send(Ok(batch));
                return;
            }
            Err(e) => {
                let _ = tx.send(Ok(batch));
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        }
    }
}

fn replay_batches<'scope>(
    scope: &'scope Scope<'scope, '_>,
    replayer: &mut Replayer,
    opts: &ReplayOptions,
    files: &ReplayFiles,
    rx: Receiver<BatchResult>,
    recycle: Sender<FrameBatch>,
) -> Result<Summary, ReplayError> {
    let mut output: Option<PcapOutput<'scope>> = None;
    let mut linktype: Option<LinkType> = None;
    let mut read_error = None;
    'read: for batch in rx.iter() {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                read_error = Some(e);
                break 'read;
            }
        };
        let mut at = 0;
        for frame in &batch.frames {
            let data = &batch.data[at..at + frame.len];
            at += frame.len;
            match linktype {
                None => linktype = Some(frame.linktype),
                Some(lt) if lt != frame.linktype && opts.keep_link_layer => {
                    return Err(ReplayError::Input(format!(
                        "{}: --keep-link-layer: the capture mixes link types {lt} and {}; an output pcap holds one",
                        files.input.display(),
                        frame.linktype
                    )));
                }
                Some(_) => {}
            }
            if output.is_none() {
                let keep = opts.keep_link_layer.then_some(frame.linktype);
                output = Some(PcapOutput::create(scope, files, keep)?);
            }
            let out = output.as_mut().expect("created above");
            replayer.frame(frame.ts_micros, frame.linktype, data, out).map_err(|e| match e {
                ReplayError::Input(m) => ReplayError::Input(format!("{}: {m}", files.input.display())),
                other => other,
            })?;
        }
        // The reader may have finished already; then the batch is simply dropped.
        let _ = recycle.send(batch);
    }
    let mut output = match output {
        Some(o) => o,
        None => PcapOutput::create(scope, files, None)?,
    };
    if read_error.is_some() {
        replayer.mark_incomplete();
    }
    let summary = replayer.finish(&mut output)?;
    output.finish()?;
    conclude(files, summary, read_error)
}

/// After the outputs are written: marks them incomplete if the input could not be read to its end
/// (`read_error`), writes the summary file if asked, and returns the summary or the incomplete error.
pub(super) fn conclude(
    files: &ReplayFiles,
    summary: Summary,
    read_error: Option<String>,
) -> Result<Summary, ReplayError> {
    let outputs = match read_error {
        Some(_) => mark_incomplete(files)?,
        None => Vec::new(),
    };
    if let Some(path) = &files.summary {
        write_summary(path, &summary)?;
    }
    match read_error {
        Some(error) => Err(ReplayError::Incomplete { error, summary: Box::new(summary), outputs }),
        None => Ok(summary),
    }
}

/// Renames both outputs `FILE.incomplete`, so that nothing takes them for a whole replay; returns the
/// new names. Only regular files are renamed (`/dev/null` or a pipe is left alone).
fn mark_incomplete(files: &ReplayFiles) -> Result<Vec<PathBuf>, ReplayError> {
    let mut renamed = Vec::new();
    for p in [&files.lan_out, &files.wan_out] {
        if !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let mut to = p.clone().into_os_string();
        to.push(".incomplete");
        let to = PathBuf::from(to);
        std::fs::rename(p, &to).map_err(|e| {
            ReplayError::Output(format!("{}: cannot rename to {}: {e}", p.display(), to.display()))
        })?;
        renamed.push(to);
    }
    Ok(renamed)
}

/// Output packets handed from the replay to the writing thread, already laid out as the records of
/// each file (indexed by [`Side::index`]), so that writing them is one `write` per file and batch.
type PacketBatch = [PcapRecords; 2];

fn batch_full(b: &PacketBatch) -> bool {
    b[0].len() + b[1].len() >= BATCH || b[0].bytes() + b[1].bytes() >= BATCH_BYTES
}

/// The two output captures: raw IP, or the causing frame's framing with `--keep-link-layer`. Packets are
/// framed here and written by a thread of their own ([`write_out`]).
pub(super) struct PcapOutput<'scope> {
    keep: Option<LinkType>,
    /// The last frame seen, for packets released by timers (they have no frame of their own).
    last: Option<(Vec<u8>, Decoded)>,
    /// Where a packet is framed (`--keep-link-layer`), reused.
    framed: Vec<u8>,
    batch: PacketBatch,
    /// Empty record buffers for each file, to start a batch when none comes back from the writer.
    empty: PacketBatch,
    /// `None` once finished.
    tx: Option<SyncSender<PacketBatch>>,
    recycle: Receiver<PacketBatch>,
    writer: Option<ScopedJoinHandle<'scope, Result<(), CaptureError>>>,
}

impl<'scope> PcapOutput<'scope> {
    /// Creates both files now (so that an unwritable path is reported before any replay), and the thread
    /// that writes them.
    pub(super) fn create(
        scope: &'scope Scope<'scope, '_>,
        files: &ReplayFiles,
        keep: Option<LinkType>,
    ) -> Result<PcapOutput<'scope>, ReplayError> {
        let lt = keep.unwrap_or(LinkType::RAW);
        let err = |e: CaptureError| ReplayError::Output(e.to_string());
        let lan = PcapWriter::create(&files.lan_out, lt).map_err(err)?;
        let wan = PcapWriter::create(&files.wan_out, lt).map_err(err)?;
        let empty = [lan.records(), wan.records()];
        let (tx, rx) = sync_channel(AHEAD);
        let (recycle_tx, recycle) = channel();
        let writer = scope.spawn(move || write_out(lan, wan, rx, recycle_tx));
        Ok(PcapOutput {
            keep,
            last: None,
            framed: Vec::new(),
            batch: empty.clone(),
            empty,
            tx: Some(tx),
            recycle,
            writer: Some(writer),
        })
    }

    /// Hands the current batch to the writer. When the writer has stopped on an error, returns it.
    fn send(&mut self) -> Result<(), CaptureError> {
        let mut next = self.recycle.try_recv().unwrap_or_else(|_| self.empty.clone());
        next.iter_mut().for_each(PcapRecords::clear);
        let batch = std::mem::replace(&mut self.batch, next);
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.tx = None;
            self.join()
        }
    }

    /// Waits for the writer; its error, if it had one.
    fn join(&mut self) -> Result<(), CaptureError> {
        match self.writer.take() {
            Some(w) => w.join().unwrap_or_else(|_| {
                Err(CaptureError::Format("the thread writing the outputs panicked".into()))
            }),
            None => Ok(()),
        }
    }

    /// Writes what is left and closes both files.
    pub(super) fn finish(mut self) -> Result<(), ReplayError> {
        let err = |e: CaptureError| ReplayError::Output(e.to_string());
        if self.batch.iter().any(|r| !r.is_empty()) {
            self.send().map_err(err)?;
        }
        self.tx = None;
        self.join().map_err(err)
    }

    fn push(&mut self, side: Side, ts: u64, packet: &[u8]) -> Result<(), CaptureError> {
        self.batch[side.index()].push(ts, packet)?;
        if batch_full(&self.batch) {
            self.send()?;
        }
        Ok(())
    }
}

impl Drop for PcapOutput<'_> {
    /// A replay that stops on an error still leaves what it wrote so far in the files.
    fn drop(&mut self) {
        if self.tx.is_some() && self.batch.iter().any(|r| !r.is_empty()) {
            let _ = self.send();
        }
    }
}

impl Output for PcapOutput<'_> {
    fn packet(
        &mut self,
        side: Side,
        ts: u64,
        packet: &[u8],
        link: Option<FrameLink<'_>>,
    ) -> Result<(), CaptureError> {
        let Some(lt) = self.keep else { return self.push(side, ts, packet) };
        let mut framed = std::mem::take(&mut self.framed);
        match link {
            Some(l) => {
                match &mut self.last {
                    Some((f, d)) => {
                        f.clear();
                        f.extend_from_slice(l.frame);
                        *d = l.decoded.clone();
                    }
                    None => self.last = Some((l.frame.to_vec(), l.decoded.clone())),
                }
                link::encode_into(&mut framed, lt, l.frame, l.decoded, packet);
            }
            None => match &self.last {
                Some((f, d)) => link::encode_into(&mut framed, lt, f, d, packet),
                None => return self.push(side, ts, packet),
            },
        }
        let r = self.push(side, ts, &framed);
        self.framed = framed;
        r
    }
}

/// Writes batches to the two files until the replay is done (its sender dropped), then flushes them.
/// Stops at the first error and returns it (the replay learns of it when its next batch is refused).
fn write_out(
    mut lan: PcapWriter,
    mut wan: PcapWriter,
    rx: Receiver<PacketBatch>,
    recycle: Sender<PacketBatch>,
) -> Result<(), CaptureError> {
    for batch in rx.iter() {
        lan.write_records(&batch[Side::Inside.index()])?;
        wan.write_records(&batch[Side::Outside.index()])?;
        let _ = recycle.send(batch);
    }
    lan.finish()?;
    wan.finish()
}

/// Writes the summary JSON (pretty, one trailing newline).
pub fn write_summary(path: &Path, summary: &Summary) -> Result<(), ReplayError> {
    let mut text = serde_json::to_string_pretty(&summary.to_json()).expect("JSON of integers");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| ReplayError::Output(format!("{}: {e}", path.display())))
}
