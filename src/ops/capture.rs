//! `--capture FILE.pcapng`: what the gateway writes to its devices, one pcapng interface per side.
//!
//! Owns: the pcapng file (section header naming ftpnat; interface 0 = LAN device, interface 1 = WAN
//! device, both link type IPV4 (228): each record is a bare IPv4 packet; libpcap refuses RAW (101) in a
//! file with two interfaces), nanosecond timestamps, the outbound direction flag on every record,
//! size-bounded rotation (`FILE` is always the newest file, older ones are `FILE.1` ...
//! `FILE.<files-1>`, the oldest removed), creating every file safely ([`create_private`]: never through
//! a symbolic link, always a new owner-only file, since a capture holds FTP passwords), completing the
//! TCP checksum of a segmentation-offload aggregate in the recorded copy (the copy written to the device
//! carries only the pseudo-header sum the kernel completes per segment, which every reader would flag as
//! a bad checksum), and the writer thread: the run loop only copies each packet into a bounded queue
//! ([`Capture::write`], [`Capture::flush`]); the file system calls (writes, renames, opens) and the
//! aggregate checksums happen on the writer, so a slow disk never holds packets up. Must not: decide
//! what is captured (the run loop hands it every packet it wrote), change the packet the device gets, or
//! stop the gateway: a write error ends the capture, logged, and routing goes on; a queue that is full
//! (the disk is slower than the traffic) drops packets from the capture, counted.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};

use crate::flow::Side;

/// Where and how much to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    pub path: PathBuf,
    /// A file is rotated before a record would take it past this size.
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub files: usize,
}

/// Default `--capture-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default `--capture-files`.
pub const DEFAULT_FILES: usize = 4;
/// pcapng §4.3 `epb_flags`: bits 0-1 are the direction, 2 = outbound.
const EPB_OUTBOUND: u32 = 0b10;
/// Snap length in the interface blocks: no packet is cut.
const SNAPLEN: u32 = 65535;
/// Packet bytes queued for the writer at most; beyond it packets are not captured (counted).
pub const MAX_QUEUED: usize = 32 << 20;
/// A batch is handed to the writer once it holds this much, even within one run-loop turn.
const BATCH_BYTES: usize = 1 << 20;
/// Per queued packet: kind (1 byte: the side, and [`KIND_AGGREGATE`]), timestamp in ns since the epoch (8), length (4).
const RECORD_HEAD: usize = 13;
/// In a queued record's first byte, beside the side's index: an offload aggregate (see
/// [`Capture::write_aggregate`]).
const KIND_AGGREGATE: u8 = 2;

/// A buffered file that counts what was written to it (the rotation needs the file's size).
struct Counting {
    inner: BufWriter<File>,
    written: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counters the writer keeps and the run loop reads.
#[derive(Debug, Default)]
struct Shared {
    /// Bytes handed to the writer and not yet written.
    queued: AtomicUsize,
    /// The writer gave up (a write error): nothing more is queued.
    stopped: AtomicBool,
    packets: AtomicU64,
    rotations: AtomicU64,
}

/// An open capture: the run loop's handle. Dropping it hands over what is left, waits for the writer
/// to write it, and closes the file.
pub struct Capture {
    path: PathBuf,
    batch: Vec<u8>,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    shared: Arc<Shared>,
    dropped: u64,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("path", &self.path).field("dropped", &self.dropped).finish()
    }
}

impl Capture {
    /// Creates the capture file (now, so a bad path is an error at start-up) and starts its writer;
    /// `names` are the LAN and WAN device names (the interfaces' names).
    pub fn create(opts: CaptureOptions, names: [&str; 2]) -> Result<Capture, String> {
        if opts.files == 0 {
            return Err("--capture-files: must be at least 1".into());
        }
        let path = opts.path.clone();
        let shared = Arc::new(Shared::default());
        let mut file = CaptureFile {
            names: names.map(str::to_string),
            writer: None,
            in_file: 0,
            dirty: false,
            shared: Arc::clone(&shared),
            scratch: Vec::new(),
            opts,
        };
        file.open()?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("ftpnat-capture".into())
            .spawn(move || file.run(rx))
            .map_err(|e| format!("--capture {}: cannot start the writer thread: {e}", path.display()))?;
        Ok(Capture { path, batch: Vec::new(), tx: Some(tx), shared, dropped: 0, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the same capture, for another worker's loop: its own batch and drop count,
    /// the same writer and file. The writer ends once every handle is gone; only this (the first)
    /// handle waits for it when dropped.
    pub fn handle(&self) -> Capture {
        Capture {
            path: self.path.clone(),
            batch: Vec::new(),
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
            dropped: 0,
            thread: None,
        }
    }

    /// Whether the capture is still being written (a write error ends it).
    pub fn active(&self) -> bool {
        !self.shared.stopped.load(Ordering::Acquire)
    }

    /// Packets written to the file(s) so far.
    pub fn packets(&self) -> u64 {
        self.shared.packets.load(Ordering::Relaxed)
    }

    /// Packets not captured because the writer was [`MAX_QUEUED`] behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn rotations(&self) -> u64 {
        self.shared.rotations.load(Ordering::Relaxed)
    }

    /// Records `pkt` as written to the device on `side` at `ts`: a copy into this turn's batch.
    pub fn write(&mut self, side: Side, ts: SystemTime, pkt: &[u8]) {
        self.record(side.index() as u8, ts, pkt);
    }

    /// Records a TCP segmentation-offload aggregate written whole to the device on `side`. The device
    /// gets it with `CHECKSUM_PARTIAL` (the checksum field holds the pseudo-header sum; the kernel
    /// completes each segment's checksum when it segments), so the writer gives the recorded copy the
    /// checksum of the whole aggregate: the large frame then reads as valid TCP, as `tcpdump` shows a
    /// GRO/TSO frame whose checksum was verified.
    pub fn write_aggregate(&mut self, side: Side, ts: SystemTime, pkt: &[u8]) {
        self.record(side.index() as u8 | KIND_AGGREGATE, ts, pkt);
    }

    fn record(&mut self, kind: u8, ts: SystemTime, pkt: &[u8]) {
        if !self.active() {
            return;
        }
        let queued = self.shared.queued.load(Ordering::Acquire) + self.batch.len();
        if queued + RECORD_HEAD + pkt.len() > MAX_QUEUED {
            self.dropped += 1;
            return;
        }
        let ns = ts.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_nanos();
        self.batch.push(kind);
        self.batch.extend_from_slice(&u64::try_from(ns).unwrap_or(u64::MAX).to_le_bytes());
        self.batch.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        self.batch.extend_from_slice(pkt);
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Hands the packets recorded since the last call to the writer (once per run-loop turn), which
    /// writes them and pushes them to the file, so a reader following it sees them.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.shared.queued.fetch_add(batch.len(), Ordering::AcqRel);
        if let Some(tx) = &self.tx {
            let _ = tx.send(batch);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.flush();
        // The writer ends when the channel closes, after writing what it was handed.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Creates `path` as a new, owner-only (0600) regular file for a capture (which holds FTP passwords).
/// A symbolic link there is refused, never followed (nor replaced: the operator may have meant it); a
/// regular file there is replaced by a new one, never opened as it is, so its old mode, owner, hard
/// links and anyone holding it open see nothing of the capture; anything else (a FIFO, a device, a
/// directory) is refused. The error names the file.
pub fn create_private(path: &Path) -> Result<File, String> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!("{shown}: is a symbolic link; a capture is never written through one"))
        }
        Ok(m) if !m.file_type().is_file() => {
            return Err(format!("{shown}: exists and is not a regular file; refusing to replace it"))
        }
        Ok(_) => {
            std::fs::remove_file(path).map_err(|e| format!("{shown}: cannot replace the old file: {e}"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    // O_EXCL: whatever appeared at the path since (a link planted in the moment between) is an error,
    // not something we write into; O_NOFOLLOW makes that explicit for a symbolic link.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("{shown}: cannot create: {e}"))?;
    // The umask can only take bits away, but a default ACL of the directory could have granted some.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{shown}: cannot make it owner-only: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    // SAFETY: geteuid(2) cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } || meta.nlink() != 1 {
        return Err(format!("{shown}: the new file is not ftpnat's own; refusing to write to it"));
    }
    Ok(file)
}

/// The file(s) of a capture, owned by the writer thread.
struct CaptureFile {
    opts: CaptureOptions,
    names: [String; 2],
    writer: Option<PcapNgWriter<Counting>>,
    /// Packets in the current file.
    in_file: u64,
    dirty: bool,
    shared: Arc<Shared>,
    /// Where an aggregate's copy gets its full checksum before it is recorded.
    scratch: Vec<u8>,
}

impl CaptureFile {
    /// The writer thread: writes every batch it is handed, until the run loop's handle goes.
    fn run(mut self, rx: mpsc::Receiver<Vec<u8>>) {
        for batch in rx {
            let mut rest = &batch[..];
            while rest.len() >= RECORD_HEAD && self.writer.is_some() {
                let side = if rest[0] & 1 == 0 { Side::Inside } else { Side::Outside };
                let aggregate = rest[0] & KIND_AGGREGATE != 0;
                let ns = u64::from_le_bytes(rest[1..9].try_into().unwrap_or_default());
                let len = u32::from_le_bytes(rest[9..13].try_into().unwrap_or_default()) as usize;
                let Some(pkt) = rest.get(RECORD_HEAD..RECORD_HEAD + len) else { break };
                let ts = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
                if aggregate {
                    let mut copy = std::mem::take(&mut self.scratch);
                    copy.clear();
                    copy.extend_from_slice(pkt);
                    if let Ok(mut ip) = crate::wire::Ipv4Packet::new_checked(&mut copy[..]) {
                        ip.fill_transport_checksum();
                    }
                    self.write(side, ts, &copy);
                    self.scratch = copy;
                } else {
                    self.write(side, ts, pkt);
                }
                rest = &rest[RECORD_HEAD + len..];
            }
            self.flush();
            self.shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
            if self.writer.is_none() {
                self.shared.stopped.store(true, Ordering::Release);
            }
        }
        self.flush();
    }

    fn open(&mut self) -> Result<(), String> {
        let path = &self.opts.path;
        // Owner-only: a capture holds payload, FTP passwords included (logs never do; packets do).
        let file = create_private(path).map_err(|e| format!("--capture {e}"))?;
        let section = SectionHeaderBlock {
            // Fixed rather than native, so captures compare byte for byte across machines.
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "ftpnat {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let fail = |e: pcap_file::PcapError| format!("--capture {}: cannot write: {e}", path.display());
        let out = Counting { inner: BufWriter::new(file), written: 0 };
        let mut w = PcapNgWriter::with_section_header(out, section).map_err(fail)?;
        for (side, name) in [Side::Inside, Side::Outside].iter().zip(&self.names) {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::IPV4,
                snaplen: SNAPLEN,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.clone())),
                    InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                        "ftpnat {} side: packets ftpnat wrote to {name}",
                        side.name()
                    ))),
                    // pcap-file writes timestamps as nanoseconds: the resolution must say so (pcapng
                    // §4.2 if_tsresol, 9 = 10^-9 s), or readers take them for microseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            w.write_pcapng_block(idb).map_err(fail)?;
        }
        self.writer = Some(w);
        self.in_file = 0;
        self.dirty = true;
        Ok(())
    }

    /// Writes `pkt` as written to the device on `side` at `ts`.
    fn write(&mut self, side: Side, ts: SystemTime, pkt: &[u8]) {
        if self.writer.is_none() {
            return;
        }
        // Enhanced Packet Block: 28 bytes of header, the data padded to 4, the flags option (8) and the
        // end-of-options marker (4), the trailing length (4).
        let record = 28 + (pkt.len() as u64).div_ceil(4) * 4 + 12 + 4;
        let size = self.writer.as_ref().map_or(0, |w| w.get_ref().written);
        // Never rotate a file without packets: a record larger than the limit is still written once.
        if size + record > self.opts.max_bytes && self.in_file > 0 {
            if let Err(e) = self.rotate() {
                self.fail(&e);
                return;
            }
        }
        let epb = EnhancedPacketBlock {
            interface_id: side.index() as u32,
            timestamp: ts.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO),
            original_len: pkt.len() as u32,
            data: Cow::Borrowed(pkt),
            options: vec![EnhancedPacketOption::Flags(EPB_OUTBOUND)],
        };
        let Some(w) = self.writer.as_mut() else { return };
        match w.write_pcapng_block(epb) {
            Ok(_) => {
                self.in_file += 1;
                self.shared.packets.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
            }
            Err(e) => self.fail(&format!("cannot write: {e}")),
        }
    }

    /// Pushes buffered records to the file, so a reader following it sees them.
    fn flush(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.get_mut().flush() {
                self.fail(&format!("cannot write: {e}"));
            }
        }
    }

    fn rotate(&mut self) -> Result<(), String> {
        if let Some(w) = self.writer.take() {
            w.into_inner().flush().map_err(|e| format!("cannot write: {e}"))?;
        }
        let path = self.opts.path.clone();
        let numbered = |i: usize| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let keep = self.opts.files - 1;
        if keep == 0 {
            std::fs::remove_file(&path).map_err(|e| format!("cannot remove for rotation: {e}"))?;
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for i in (1..keep).rev() {
                let from = numbered(i);
                // Not `exists()`: that follows a link, and a dangling one must be moved on as well.
                if std::fs::symlink_metadata(&from).is_ok() {
                    std::fs::rename(&from, numbered(i + 1)).map_err(|e| format!("cannot rotate: {e}"))?;
                }
            }
            std::fs::rename(&path, numbered(1)).map_err(|e| format!("cannot rotate: {e}"))?;
        }
        self.shared.rotations.fetch_add(1, Ordering::Relaxed);
        self.open()
    }

    fn fail(&mut self, what: &str) {
        tracing::error!(target: "ftpnat::ops", capture = %self.opts.path.display(), error = what,
            packets = self.shared.packets.load(Ordering::Relaxed), "capture stopped; the gateway goes on without it");
        self.writer = None;
    }
}
