//! Capture files: reading pcap/pcapng (optionally gzip-compressed) into [`Frame`]s and writing classic
//! microsecond pcap files.
//!
//! Owns: opening files, format detection by magic number, per-interface link type and timestamp resolution
//! for pcapng, error reporting that names the file. The container formats are parsed by the `pcap-file`
//! crate; nothing here parses record layouts by hand. Writing: pcap-file writes the file header; the
//! 16-byte record header is formatted here ([`PcapRecords`] lets one thread format frames and another
//! write them without a copy), and a test holds it to pcap-file's writer byte for byte.
//! Must not touch: frame contents (link-layer framing is `wire::link`, packets are the engine's).

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use pcap_file::pcap::{PcapHeader, PcapReader};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::wire::link::LinkType;

/// A frame read from a capture.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Capture timestamp, microseconds since the Unix epoch.
    pub ts_micros: u64,
    pub linktype: LinkType,
    /// The captured bytes (may be shorter than `orig_len` when the capture was truncated by a snap length).
    pub data: Vec<u8>,
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// A frame's record fields, its bytes left in the caller's buffer ([`CaptureReader::next_frame_into`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Capture timestamp, microseconds since the Unix epoch.
    pub ts_micros: u64,
    pub linktype: LinkType,
    /// How many captured bytes were appended to the buffer.
    pub len: usize,
    /// Length of the frame on the wire.
    pub orig_len: u32,
}

/// Why a capture could not be read or written. The messages name the file.
#[derive(Debug)]
pub enum CaptureError {
    Io(io::Error),
    Format(String),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io(e) => write!(f, "{e}"),
            CaptureError::Format(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for CaptureError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CaptureError::Io(e) => e.source(),
            CaptureError::Format(_) => None,
        }
    }
}

fn io_err(path: &Path, what: &str, e: io::Error) -> CaptureError {
    CaptureError::Io(io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display())))
}

fn format_err(path: &Path, what: impl fmt::Display) -> CaptureError {
    CaptureError::Format(format!("{}: {what}", path.display()))
}

fn pcap_err(path: &Path, e: PcapError) -> CaptureError {
    match e {
        // pcap-file reports both a file cut short and a record larger than its 8 MB read buffer this way.
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            format_err(path, "truncated: the file ends inside a record (or a record exceeds 8 MB)")
        }
        PcapError::IoError(io) => io_err(path, "read error", io),
        other => format_err(path, format_args!("malformed capture: {other}")),
    }
}

/// An error reading the file's own header (pcap: the 24-byte file header; pcapng: the first section
/// header block): a file cut short there ends inside that header, not inside a record.
fn header_err(path: &Path, header: &str, e: PcapError) -> CaptureError {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            format_err(path, format_args!("truncated: the file ends inside its {header}"))
        }
        other => pcap_err(path, other),
    }
}

/// LINKTYPE values are 16 bits; in pcap headers the upper bits may carry FCS-length information
/// (draft-ietf-opsawg-pcap §4, "LinkType and additional information") which `wire::link` detects itself.
fn linktype_of(datalink: DataLink) -> LinkType {
    LinkType(u32::from(datalink) & 0xFFFF)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const PCAPNG_MAGIC: u32 = 0x0A0D_0D0A;
const PCAP_MAGICS: [u32; 4] = [0xA1B2_C3D4, 0xD4C3_B2A1, 0xA1B2_3C4D, 0x4D3C_B2A1];
const MODIFIED_PCAP_MAGICS: [u32; 2] = [0xA1B2_CD34, 0x34CD_B2A1];

type Source = Box<dyn Read + Send>;

/// Reads up to 4 bytes (fewer only at end of stream) and returns them with a reader that replays them.
fn peek4(mut src: Source) -> io::Result<([u8; 4], usize, Source)> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match src.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let replay = Cursor::new(head[..n].to_vec());
    Ok((head, n, Box::new(replay.chain(src))))
}

/// Largest single read from the file. pcap-file reads into an 8 MB buffer and would fill all of it at
/// once; reading it in slices keeps the bytes being parsed in cache (the rest of the buffer stays unused).
const READ_CHUNK: usize = 256 * 1024;

/// A reader whose reads return at most [`READ_CHUNK`] bytes.
struct Chunked(Source);

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(READ_CHUNK);
        self.0.read(&mut buf[..n])
    }
}

/// A pcapng interface as far as frames need it.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: LinkType,
    /// if_tsresol (pcapng §4.2): MSB clear = 10^-v seconds, MSB set = 2^-(v & 0x7f) seconds. Default 6.
    tsresol: u8,
    /// if_tsoffset: seconds to add to every timestamp.
    tsoffset_secs: i64,
    snaplen: u32,
}

impl Interface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Interface {
        let mut iface = Interface {
            linktype: linktype_of(idb.linktype),
            tsresol: 6,
            tsoffset_secs: 0,
            snaplen: idb.snaplen,
        };
        for opt in &idb.options {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => iface.tsresol = *r,
                // The field is a signed 64-bit value in the spec; pcap-file hands back its bits as u64.
                InterfaceDescriptionOption::IfTsOffset(o) => iface.tsoffset_secs = *o as i64,
                _ => {}
            }
        }
        iface
    }

    fn micros(&self, units: u64) -> u64 {
        let per_second: Option<u128> = if self.tsresol & 0x80 == 0 {
            10u128.checked_pow(u32::from(self.tsresol))
        } else {
            1u128.checked_shl(u32::from(self.tsresol & 0x7f))
        };
        let micros = match per_second {
            Some(per_second) => u128::from(units) * 1_000_000 / per_second,
            // A resolution finer than u128 can express: every representable timestamp is below 1 µs.
            None => 0,
        };
        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
        micros.saturating_add_signed(self.tsoffset_secs.saturating_mul(1_000_000))
    }
}

enum Inner {
    Pcap { reader: PcapReader<Source>, linktype: LinkType, nanos: bool },
    PcapNg { reader: PcapNgReader<Source>, interfaces: Vec<Interface>, last_ts: u64 },
}

/// Reads frames from a pcap or pcapng file (optionally gzip-compressed).
pub struct CaptureReader {
    path: PathBuf,
    inner: Inner,
    done: bool,
}

impl fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Pcap { .. } => "pcap",
            Inner::PcapNg { .. } => "pcapng",
        };
        f.debug_struct("CaptureReader").field("path", &self.path).field("format", &kind).finish()
    }
}

impl CaptureReader {
    /// Opens pcap (any byte order, micro- or nanosecond) or pcapng, detected by magic number; transparently
    /// gunzips when the file starts with the gzip magic.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
        CaptureReader::from_reader(path, Box::new(file))
    }

    /// [`open`](Self::open) for bytes from anywhere (a pipe, memory: the fuzz target); `path` only
    /// names them in errors.
    pub fn from_reader(path: &Path, src: Box<dyn Read + Send>) -> Result<CaptureReader, CaptureError> {
        let (head, n, mut src) = peek4(src).map_err(|e| io_err(path, "read error", e))?;
        let mut compressed = false;
        let mut head = (head, n);
        if n >= 2 && head.0[..2] == GZIP_MAGIC {
            compressed = true;
            let (h, n, s) = peek4(Box::new(flate2::read::MultiGzDecoder::new(src)))
                .map_err(|e| io_err(path, "gzip error", e))?;
            head = (h, n);
            src = s;
        }
        let (head, n) = head;
        let src: Source = Box::new(Chunked(src));
        if n < 4 {
            let what = if compressed { "decompressed data" } else { "file" };
            return Err(format_err(path, format_args!("{what} too short to be a capture ({n} bytes)")));
        }
        let magic = u32::from_be_bytes(head);
        let inner = if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(src).map_err(|e| header_err(path, "file header (24 bytes)", e))?;
            let header = reader.header();
            Inner::Pcap {
                linktype: linktype_of(header.datalink),
                nanos: header.ts_resolution == TsResolution::NanoSecond,
                reader,
            }
        } else if magic == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(src).map_err(|e| header_err(path, "section header block", e))?;
            Inner::PcapNg { reader, interfaces: Vec::new(), last_ts: 0 }
        } else if MODIFIED_PCAP_MAGICS.contains(&magic) {
            return Err(format_err(
                path,
                "modified (Kuznetzov) pcap format is not supported; convert with editcap",
            ));
        } else {
            return Err(format_err(
                path,
                format_args!(
                    "not a pcap or pcapng file (starts with {:02x} {:02x} {:02x} {:02x})",
                    head[0], head[1], head[2], head[3]
                ),
            ));
        };
        Ok(CaptureReader { path: path.to_path_buf(), inner, done: false })
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Next frame; Ok(None) at the end. After the first error it returns that error once, then Ok(None).
    /// pcapng: per-interface link type and timestamp resolution (if_tsresol, if_tsoffset) honoured; EPB,
    /// SPB (no timestamp: the previous frame's is used) and the obsolete Packet Block are read, other
    /// blocks skipped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let mut data = Vec::new();
        Ok(self.next_frame_into(&mut data)?.map(|i| Frame {
            ts_micros: i.ts_micros,
            linktype: i.linktype,
            data,
            orig_len: i.orig_len,
        }))
    }

    /// [`next_frame`](Self::next_frame) without an allocation per frame: the frame's bytes are appended
    /// to `buf` (`FrameInfo::len` of them), so one buffer can carry many frames back to back.
    pub fn next_frame_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<FrameInfo>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_frame(buf);
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_frame(&mut self, buf: &mut Vec<u8>) -> Result<Option<FrameInfo>, CaptureError> {
        let path = &self.path;
        let mut put = |ts_micros: u64, linktype: LinkType, data: &[u8], orig_len: u32| {
            buf.extend_from_slice(data);
            Ok(Some(FrameInfo { ts_micros, linktype, len: data.len(), orig_len }))
        };
        match &mut self.inner {
            Inner::Pcap { reader, linktype, nanos } => {
                // The raw record is used because PcapPacket's validation rejects orig_len > snaplen, which
                // is exactly what a capture truncated by its snap length contains.
                let raw = match reader.next_raw_packet() {
                    None => return Ok(None),
                    Some(r) => r.map_err(|e| pcap_err(path, e))?,
                };
                let frac = if *nanos { u64::from(raw.ts_frac) / 1000 } else { u64::from(raw.ts_frac) };
                put(u64::from(raw.ts_sec) * 1_000_000 + frac, *linktype, &raw.data, raw.orig_len)
            }
            Inner::PcapNg { reader, interfaces, last_ts } => loop {
                let block = match reader.next_block() {
                    None => return Ok(None),
                    Some(b) => b.map_err(|e| pcap_err(path, e))?,
                };
                let iface = |id: u32, interfaces: &[Interface]| {
                    interfaces.get(id as usize).copied().ok_or_else(|| {
                        format_err(
                            path,
                            format_args!(
                                "packet refers to interface {id} but only {} are described",
                                interfaces.len()
                            ),
                        )
                    })
                };
                match block {
                    // A new section starts a new interface numbering (pcapng §4.1).
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) => interfaces.push(Interface::from_idb(&idb)),
                    Block::EnhancedPacket(epb) => {
                        let i = iface(epb.interface_id, interfaces)?;
                        // pcap-file returns the raw unit count as that many ns; if_tsresol gives the unit.
                        let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        *last_ts = i.micros(units);
                        return put(*last_ts, i.linktype, &epb.data, epb.original_len);
                    }
                    Block::SimplePacket(spb) => {
                        // pcapng §4.4: SPBs belong to interface 0; captured length is min(original, snaplen)
                        // and the block's data includes up to 3 padding bytes.
                        let i = iface(0, interfaces)?;
                        let mut len = spb.data.len().min(spb.original_len as usize);
                        if i.snaplen != 0 {
                            len = len.min(i.snaplen as usize);
                        }
                        return put(*last_ts, i.linktype, &spb.data[..len], spb.original_len);
                    }
                    Block::Packet(pb) => {
                        let i = iface(u32::from(pb.interface_id), interfaces)?;
                        *last_ts = i.micros(pb.timestamp);
                        return put(*last_ts, i.linktype, &pb.data, pb.original_len);
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Snap length written into output headers: libpcap's default, above any GRO/TSO datagram plus L2 header.
const WRITE_SNAPLEN: u32 = 262_144;

/// Output buffer for frames written one at a time: large writes keep the syscall count per frame
/// negligible (`BufWriter`'s default of 8 KiB meant one `write` per 8 frames of 1000 bytes).
const WRITE_BUFFER: usize = 1 << 20;

/// The 16-byte record header of a classic microsecond little-endian pcap (draft-ietf-opsawg-pcap §5:
/// seconds, microseconds, captured length, original length), captured length = original length = `len`.
/// Refuses what pcap-file's writer refuses, with its errors (a test checks the bytes against it).
fn record_header(path: &Path, ts_micros: u64, len: usize) -> Result<[u8; 16], CaptureError> {
    let incl_len = u32::try_from(len)
        .map_err(|_| format_err(path, format_args!("frame of {len} bytes is too large")))?;
    let ts_sec = u32::try_from(ts_micros / 1_000_000)
        .map_err(|_| write_err(path, PcapError::InvalidField("PcapPacket: timestamp_secs > u32::MAX")))?;
    if incl_len > WRITE_SNAPLEN {
        return Err(write_err(path, PcapError::InvalidField("PcapPacket: incl_len > snap_len")));
    }
    let ts_frac = (ts_micros % 1_000_000) as u32;
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
    h[4..8].copy_from_slice(&ts_frac.to_le_bytes());
    h[8..12].copy_from_slice(&incl_len.to_le_bytes());
    h[12..16].copy_from_slice(&incl_len.to_le_bytes());
    Ok(h)
}

/// Writes a classic microsecond pcap (magic a1b2c3d4, little-endian) with one link type.
///
/// Not durable: [`finish`](Self::finish) hands everything to the operating system but does not `fsync`.
/// A replay's outputs are derived data that the same command regenerates from its input, and once the
/// process has exited the files read back complete; only a crash of the machine itself could lose them.
/// Syncing cost about as much as the rest of writing (0.3–0.5 s per GB), so a caller that needs the
/// files on disk syncs them itself (`sync FILE`).
pub struct PcapWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcapWriter").field("path", &self.path).finish()
    }
}

impl PcapWriter {
    pub fn create(path: &Path, linktype: LinkType) -> Result<PcapWriter, CaptureError> {
        let file = File::create(path).map_err(|e| io_err(path, "cannot create", e))?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: WRITE_SNAPLEN,
            datalink: DataLink::from(linktype.0),
            ts_resolution: TsResolution::MicroSecond,
            // Fixed rather than native so that outputs are byte-identical across machines.
            endianness: Endianness::Little,
        };
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        header.write_to(&mut out).map_err(|e| write_err(path, e))?;
        Ok(PcapWriter { path: path.to_path_buf(), out })
    }

    /// Appends one frame (captured length = original length = `data.len()`).
    pub fn write(&mut self, ts_micros: u64, data: &[u8]) -> Result<(), CaptureError> {
        let h = record_header(&self.path, ts_micros, data.len())?;
        let err = |e| io_err(&self.path, "write error", e);
        self.out.write_all(&h).map_err(err)?;
        self.out.write_all(data).map_err(err)
    }

    /// An empty buffer of records for this file, to fill (on any thread) and hand to
    /// [`write_records`](Self::write_records).
    pub fn records(&self) -> PcapRecords {
        PcapRecords { path: self.path.clone(), bytes: Vec::new(), count: 0 }
    }

    /// Appends records built with [`PcapRecords::push`], straight from their buffer (no copy).
    pub fn write_records(&mut self, records: &PcapRecords) -> Result<(), CaptureError> {
        let err = |e| io_err(&self.path, "write error", e);
        // Whatever `write` left buffered goes first.
        self.out.flush().map_err(err)?;
        self.out.get_mut().write_all(&records.bytes).map_err(err)
    }

    /// Flushes buffered frames to the file (no `fsync`: see the type's documentation).
    pub fn finish(mut self) -> Result<(), CaptureError> {
        self.out.flush().map_err(|e| io_err(&self.path, "write error", e))
    }
}

/// Frames formatted as the records of one [`PcapWriter`]'s file, kept in memory: a thread that produces
/// frames can format them and another write them with a single `write` per batch.
#[derive(Debug, Clone)]
pub struct PcapRecords {
    /// The file they are for, named by errors.
    path: PathBuf,
    bytes: Vec<u8>,
    count: usize,
}

impl PcapRecords {
    /// Appends one frame as [`PcapWriter::write`] would write it (same refusals, same errors).
    pub fn push(&mut self, ts_micros: u64, data: &[u8]) -> Result<(), CaptureError> {
        let h = record_header(&self.path, ts_micros, data.len())?;
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        self.count += 1;
        Ok(())
    }

    /// How many frames.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many bytes of records.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }
}

fn write_err(path: &Path, e: PcapError) -> CaptureError {
    match e {
        PcapError::IoError(io) => io_err(path, "write error", io),
        other => format_err(path, format_args!("cannot write frame: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(tsresol: u8, tsoffset_secs: i64) -> Interface {
        Interface { linktype: LinkType::ETHERNET, tsresol, tsoffset_secs, snaplen: 0 }
    }

    #[test]
    fn tsresol_scaling() {
        assert_eq!(iface(6, 0).micros(1_234_567), 1_234_567);
        assert_eq!(iface(9, 0).micros(1_234_567_890), 1_234_567);
        assert_eq!(iface(3, 0).micros(1_500), 1_500_000);
        assert_eq!(iface(0, 0).micros(2), 2_000_000);
        // 2^-10 s units: 1024 units = 1 s.
        assert_eq!(iface(0x8a, 0).micros(1024), 1_000_000);
        assert_eq!(iface(0x80 | 20, 0).micros(1 << 20), 1_000_000);
        assert_eq!(iface(6, 10).micros(5), 10_000_005);
        assert_eq!(iface(6, -1).micros(5), 0);
        // Absurd resolutions neither overflow nor panic.
        assert_eq!(iface(127, 0).micros(u64::MAX), 0);
        assert_eq!(iface(0xff, 0).micros(u64::MAX), 0);
        assert_eq!(iface(0, 0).micros(u64::MAX), u64::MAX);
    }

    #[test]
    fn records_are_what_pcap_file_writes() {
        use pcap_file::pcap::PcapPacket;
        let frames: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![]),
            (1_704_067_200_123_456, vec![0x45; 60]),
            (999_999, vec![1, 2, 3]),
            (u64::from(u32::MAX) * 1_000_000 + 999_999, vec![7; 1500]),
            (5, vec![9; WRITE_SNAPLEN as usize]),
        ];
        let header = PcapHeader {
            snaplen: WRITE_SNAPLEN,
            datalink: DataLink::RAW,
            endianness: Endianness::Little,
            ..Default::default()
        };
        let mut reference = pcap_file::pcap::PcapWriter::with_header(Vec::new(), header).unwrap();
        for (ts, data) in &frames {
            let p = PcapPacket::new(std::time::Duration::from_micros(*ts), data.len() as u32, data);
            reference.write_packet(&p).unwrap();
        }
        let reference = reference.into_writer();
        let dir = std::env::temp_dir().join(format!("ftpnat-pcap-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (one, batched) = (dir.join("one.pcap"), dir.join("batched.pcap"));
        let mut w = PcapWriter::create(&one, LinkType::RAW).unwrap();
        let mut b = PcapWriter::create(&batched, LinkType::RAW).unwrap();
        let mut records = b.records();
        for (i, (ts, data)) in frames.iter().enumerate() {
            w.write(*ts, data).unwrap();
            // Mixed: single frames and batches keep their order.
            if i % 2 == 0 {
                records.push(*ts, data).unwrap();
            } else {
                b.write_records(&records).unwrap();
                records.clear();
                b.write(*ts, data).unwrap();
            }
        }
        assert_eq!(records.len(), 1);
        b.write_records(&records).unwrap();
        w.finish().unwrap();
        b.finish().unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), reference);
        assert_eq!(std::fs::read(&batched).unwrap(), reference);
        // What pcap-file refuses is refused, with its message, naming the file.
        let mut w = PcapWriter::create(&one, LinkType::RAW).unwrap();
        let e = w.write(u64::from(u32::MAX) * 1_000_000 + 1_000_000, &[0]).unwrap_err().to_string();
        assert!(e.contains("one.pcap") && e.contains("timestamp_secs > u32::MAX"), "{e}");
        let e = w.records().push(0, &vec![0; WRITE_SNAPLEN as usize + 1]).unwrap_err().to_string();
        assert!(e.contains("one.pcap") && e.contains("incl_len > snap_len"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file cut inside its own header is reported as such (it used to say "ends inside a record"); a
    /// file that is only a header is a capture of no frames.
    #[test]
    fn a_file_cut_in_its_header_says_so_and_a_header_alone_is_empty() {
        let dir = std::env::temp_dir().join(format!("ftpnat-pcap-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pcap = dir.join("h.pcap");
        PcapWriter::create(&pcap, LinkType::RAW).unwrap().finish().unwrap();
        let header = std::fs::read(&pcap).unwrap();
        assert_eq!(header.len(), 24);
        let mut r = CaptureReader::open(&pcap).unwrap();
        assert!(r.next_frame().unwrap().is_none(), "a header-only pcap has no frames");
        // pcapng: a section header block alone, then one cut short.
        let ng = dir.join("h.pcapng");
        let shb = pcap_file::pcapng::blocks::section_header::SectionHeaderBlock::default();
        let w = pcap_file::pcapng::PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
        let shb_bytes = w.into_inner();
        std::fs::write(&ng, &shb_bytes).unwrap();
        assert!(CaptureReader::open(&ng).unwrap().next_frame().unwrap().is_none());
        for (name, bytes, header) in [
            ("cut.pcap", &header[..20], "file header (24 bytes)"),
            ("cut.pcapng", &shb_bytes[..20], "section header block"),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = CaptureReader::open(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.ends_with(&format!("ends inside its {header}")), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn linktype_masks_fcs_bits() {
        assert_eq!(linktype_of(DataLink::from(0x1000_0001)), LinkType::ETHERNET);
        assert_eq!(linktype_of(DataLink::from(276)), LinkType::LINUX_SLL2);
        for lt in [0u32, 1, 12, 14, 101, 108, 113, 228, 229, 276] {
            assert_eq!(linktype_of(DataLink::from(lt)), LinkType(lt));
        }
    }
}
