//! `--capture FILE.pcapng`: what the gateway writes to its devices, one pcapng interface per side.
//!
//! Owns: the pcapng file (section header naming ftpnat; interface 0 = LAN device, interface 1 = WAN
//! device, both link type IPV4 (228): each record is a bare IPv4 packet; libpcap refuses RAW (101) in a
//! file with two interfaces), nanosecond timestamps, the outbound direction flag on every record, and
//! size-bounded rotation (`FILE` is always the newest file, older ones are `FILE.1` ...
//! `FILE.<files-1>`, the oldest removed), and completing the TCP checksum of a segmentation-offload
//! aggregate in the recorded copy (the copy written to the device carries only the pseudo-header sum the
//! kernel completes per segment, which every reader would flag as a bad checksum). Must not: decide what
//! is captured (the run loop hands it every packet it wrote), change the packet the device gets, or stop
//! the gateway: a write error ends the capture, logged, and routing goes on.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
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

/// An open capture.
pub struct Capture {
    opts: CaptureOptions,
    names: [String; 2],
    writer: Option<PcapNgWriter<Counting>>,
    /// Packets in the current file.
    in_file: u64,
    dirty: bool,
    /// Where an aggregate's copy gets its full checksum before it is recorded.
    scratch: Vec<u8>,
    pub packets: u64,
    pub rotations: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("opts", &self.opts).field("packets", &self.packets).finish()
    }
}

impl Capture {
    /// Creates the capture file; `names` are the LAN and WAN device names (the interfaces' names).
    pub fn create(opts: CaptureOptions, names: [&str; 2]) -> Result<Capture, String> {
        if opts.files == 0 {
            return Err("--capture-files: must be at least 1".into());
        }
        let mut c = Capture {
            names: names.map(str::to_string),
            writer: None,
            in_file: 0,
            dirty: false,
            scratch: Vec::new(),
            packets: 0,
            rotations: 0,
            opts,
        };
        c.open()?;
        Ok(c)
    }

    pub fn path(&self) -> &Path {
        &self.opts.path
    }

    /// Whether the capture is still being written (a write error ends it).
    pub fn active(&self) -> bool {
        self.writer.is_some()
    }

    fn open(&mut self) -> Result<(), String> {
        let path = &self.opts.path;
        // Owner-only: a capture holds payload, FTP passwords included (logs never do; packets do).
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("--capture {}: cannot create: {e}", path.display()))?;
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

    /// Records `pkt` as written to the device on `side` at `ts`.
    pub fn write(&mut self, side: Side, ts: SystemTime, pkt: &[u8]) {
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
                self.packets += 1;
                self.dirty = true;
            }
            Err(e) => self.fail(&format!("cannot write: {e}")),
        }
    }

    /// Records a TCP segmentation-offload aggregate written whole to the device on `side`. The device
    /// gets it with `CHECKSUM_PARTIAL` (the checksum field holds the pseudo-header sum; the kernel
    /// completes each segment's checksum when it segments), so the recorded copy gets the checksum of
    /// the whole aggregate instead: the large frame then reads as valid TCP, as `tcpdump` shows a
    /// GRO/TSO frame whose checksum was verified.
    pub fn write_aggregate(&mut self, side: Side, ts: SystemTime, pkt: &[u8]) {
        if self.writer.is_none() {
            return;
        }
        let mut copy = std::mem::take(&mut self.scratch);
        copy.clear();
        copy.extend_from_slice(pkt);
        if let Ok(mut ip) = crate::wire::Ipv4Packet::new_checked(&mut copy[..]) {
            ip.fill_transport_checksum();
        }
        self.write(side, ts, &copy);
        self.scratch = copy;
    }

    /// Pushes buffered records to the file, so a reader following it sees them.
    pub fn flush(&mut self) {
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
                if from.exists() {
                    std::fs::rename(&from, numbered(i + 1)).map_err(|e| format!("cannot rotate: {e}"))?;
                }
            }
            std::fs::rename(&path, numbered(1)).map_err(|e| format!("cannot rotate: {e}"))?;
        }
        self.rotations += 1;
        self.open()
    }

    fn fail(&mut self, what: &str) {
        tracing::error!(target: "ftpnat::ops", capture = %self.opts.path.display(), error = what,
            packets = self.packets, "capture stopped; the gateway goes on without it");
        self.writer = None;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.flush();
    }
}
