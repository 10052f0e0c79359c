//! Capture file I/O: `io::pcap` writes and reads back pcap, reads pcapng (interfaces, resolutions, SPB),
//! gzip and byte-swapped/nanosecond pcap, stops at the first error, and reads the shared FTP corpus with
//! the frame counts of its CATALOG.md, every frame of which `wire::link` decodes and re-encodes unchanged.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ftpnat::io::pcap::{CaptureError, CaptureReader, Frame, PcapWriter};
use ftpnat::wire::link::{self, LinkType, L3};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pcap_io");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn read_all(path: &Path) -> Result<Vec<Frame>, CaptureError> {
    let mut r = CaptureReader::open(path)?;
    let mut frames = Vec::new();
    while let Some(f) = r.next_frame()? {
        frames.push(f);
    }
    Ok(frames)
}

fn sample_frames() -> Vec<(u64, Vec<u8>)> {
    vec![
        (1_700_000_000_000_001, vec![0xAA; 60]),
        (1_700_000_000_500_000, (0..=255u8).collect()),
        (1_700_000_001_999_999, vec![0x42; 9000]),
        (0, vec![]),
    ]
}

#[test]
fn write_then_read_back() {
    let path = tmp("roundtrip.pcap");
    let mut w = PcapWriter::create(&path, LinkType::RAW).unwrap();
    for (ts, data) in sample_frames() {
        w.write(ts, &data).unwrap();
    }
    w.finish().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], &0xA1B2_C3D4u32.to_le_bytes(), "classic microsecond magic");
    let frames = read_all(&path).unwrap();
    assert_eq!(frames.len(), 4);
    for (f, (ts, data)) in frames.iter().zip(sample_frames()) {
        assert_eq!(f.ts_micros, ts);
        assert_eq!(f.data, data);
        assert_eq!(f.orig_len as usize, data.len());
        assert_eq!(f.linktype, LinkType::RAW);
    }
}

#[test]
fn write_rejects_unrepresentable_timestamp() {
    let path = tmp("bad-ts.pcap");
    let mut w = PcapWriter::create(&path, LinkType::ETHERNET).unwrap();
    let err = w.write((u64::from(u32::MAX) + 1) * 1_000_000, &[0; 20]).unwrap_err();
    assert!(err.to_string().contains("bad-ts.pcap"), "{err}");
}

#[test]
fn gzip_big_endian_nanosecond_pcap() {
    let header = pcap_file::pcap::PcapHeader {
        datalink: DataLink::from(113),
        ts_resolution: TsResolution::NanoSecond,
        endianness: Endianness::Big,
        ..Default::default()
    };
    let mut w = pcap_file::pcap::PcapWriter::with_header(Vec::new(), header).unwrap();
    let pkt = pcap_file::pcap::PcapPacket::new(Duration::new(1_600_000_000, 123_456_789), 30, &[7u8; 30]);
    w.write_packet(&pkt).unwrap();
    let raw = w.into_writer();
    assert_eq!(&raw[..4], &[0xA1, 0xB2, 0x3C, 0x4D]);

    let plain = tmp("be-nano.pcap");
    std::fs::write(&plain, &raw).unwrap();
    let gz = tmp("be-nano.pcap.gz");
    let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap();

    for path in [plain, gz] {
        let frames = read_all(&path).unwrap();
        assert_eq!(frames.len(), 1, "{}", path.display());
        assert_eq!(frames[0].ts_micros, 1_600_000_000_123_456);
        assert_eq!(frames[0].linktype, LinkType::LINUX_SLL);
        assert_eq!(frames[0].data, vec![7u8; 30]);
    }
}

#[test]
fn pcapng_interfaces_resolutions_and_spb() {
    let path = tmp("multi.pcapng");
    let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
    // Interface 0: Ethernet with nanosecond stamps; interface 1: raw IP with the default microseconds.
    let mut eth = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
    eth.options.push(InterfaceDescriptionOption::IfTsResol(9));
    w.write_block(&Block::InterfaceDescription(eth)).unwrap();
    w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock::new(DataLink::RAW, 0))).unwrap();
    let epb = |iface: u32, units: u64, data: &'static [u8]| {
        Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_nanos(units),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![],
        })
    };
    w.write_block(&epb(0, 1_000_000_123_456_789, &[1; 61])).unwrap();
    w.write_block(&epb(1, 2_000_000_000_000, &[2; 20])).unwrap();
    // SPB: interface 0, no timestamp of its own; 5 data bytes get 3 bytes of block padding that must go.
    let spb = SimplePacketBlock { original_len: 5, data: Cow::Borrowed(&[3; 5]) };
    w.write_block(&Block::SimplePacket(spb)).unwrap();
    drop(w);

    let frames = read_all(&path).unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(
        (frames[0].linktype, frames[0].ts_micros, frames[0].data.len()),
        (LinkType::ETHERNET, 1_000_000_123_456, 61)
    );
    assert_eq!(
        (frames[1].linktype, frames[1].ts_micros, frames[1].data.len()),
        (LinkType::RAW, 2_000_000_000_000, 20)
    );
    assert_eq!((frames[2].linktype, frames[2].ts_micros), (LinkType::ETHERNET, 2_000_000_000_000));
    assert_eq!(frames[2].data, vec![3; 5]);
}

#[test]
fn stops_after_first_error() {
    let path = tmp("cut.pcap");
    let mut w = PcapWriter::create(&path, LinkType::ETHERNET).unwrap();
    for i in 0..3u64 {
        w.write(i, &[i as u8; 100]).unwrap();
    }
    w.finish().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();

    let mut r = CaptureReader::open(&path).unwrap();
    assert!(r.next_frame().unwrap().is_some());
    assert!(r.next_frame().unwrap().is_some());
    let err = r.next_frame().unwrap_err();
    assert!(matches!(err, CaptureError::Format(_)), "{err:?}");
    assert!(err.to_string().contains("cut.pcap"), "{err}");
    assert!(r.next_frame().unwrap().is_none());
    assert!(r.next_frame().unwrap().is_none());
}

#[test]
fn open_errors_name_the_file() {
    let junk = tmp("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let err = CaptureReader::open(&junk).unwrap_err();
    assert!(matches!(err, CaptureError::Format(_)));
    assert!(err.to_string().contains("junk.pcap") && err.to_string().contains("not a pcap"), "{err}");

    let short = tmp("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3]).unwrap();
    assert!(CaptureReader::open(&short).unwrap_err().to_string().contains("too short"));

    let missing = tmp("does-not-exist.pcap");
    let err = CaptureReader::open(&missing).unwrap_err();
    assert!(matches!(err, CaptureError::Io(_)));
    assert!(err.to_string().contains("does-not-exist.pcap"), "{err}");

    let bad_gz = tmp("bad.pcap.gz");
    std::fs::write(&bad_gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    assert!(CaptureReader::open(&bad_gz).is_err());
}

/// `<crate root>/../shared/corpus`, or `$FTPNAT_CORPUS`.
fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FTPNAT_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("shared").join("corpus"),
    };
    dir.is_dir().then_some(dir)
}

fn capture_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            capture_files(&p, out);
        } else if [".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz", ".cap"].iter().any(|s| name.ends_with(s)) {
            out.push(p);
        }
    }
}

/// (file under corpus/, pkts) for every table row of CATALOG.md.
fn catalog_counts(dir: &Path) -> Vec<(String, usize)> {
    let Ok(text) = std::fs::read_to_string(dir.join("CATALOG.md")) else { return vec![] };
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let file = cols.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            let pkts = cols.get(6)?.parse().ok()?;
            Some((file.to_string(), pkts))
        })
        .collect()
}

#[test]
fn corpus() {
    let Some(dir) = corpus_dir() else {
        println!("SKIP: corpus absent (looked for ../shared/corpus next to the crate; set FTPNAT_CORPUS)");
        eprintln!("SKIP: corpus absent (looked for ../shared/corpus next to the crate; set FTPNAT_CORPUS)");
        return;
    };
    let mut files = Vec::new();
    capture_files(&dir, &mut files);
    assert!(!files.is_empty(), "no capture files under {}", dir.display());

    // (frames, frames that are IP, frames with bytes after the datagram, frames with an FCS)
    let mut stats = std::collections::HashMap::new();
    for path in &files {
        let frames = read_all(path).unwrap_or_else(|e| panic!("{e}"));
        let (mut ip, mut trailer, mut fcs) = (0, 0, 0);
        for (i, f) in frames.iter().enumerate() {
            let d = link::decode(f.linktype, &f.data)
                .unwrap_or_else(|e| panic!("{} frame {}: {e}", path.display(), i + 1));
            ip += usize::from(matches!(d.l3, L3::Ipv4 | L3::Ipv6));
            trailer += usize::from(d.l3_end < f.data.len());
            fcs += usize::from(d.has_fcs);
            let again = link::encode(f.linktype, &f.data, &d, &f.data[d.l3_start..d.l3_end]);
            assert!(again == f.data, "{} frame {}: re-encoding changed the frame", path.display(), i + 1);
        }
        let rel = path.strip_prefix(&dir).unwrap().to_string_lossy().replace('\\', "/");
        println!("{rel}: {} frames, {ip} IP, {trailer} with trailer, {fcs} with FCS", frames.len());
        stats.insert(rel, (frames.len(), ip));
    }

    for (file, pkts) in [
        ("ftp/arkime/ftp.pcap", 10),
        ("ftp/zeek/ipv4.pcap", 95),
        ("ftp/ppa-packets/tickedoffdeveloper.pcapng", 93),
        ("ftp-synthetic/zeek/ftp-many-port-expected.pcap.gz", 1008),
    ] {
        assert_eq!(stats.get(file), Some(&(pkts, pkts)), "{file}: (frames, IP frames)");
    }
    let counts: std::collections::HashMap<_, _> = stats.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    let catalog = catalog_counts(&dir);
    assert!(catalog.len() >= 4, "CATALOG.md rows not understood");
    for (file, pkts) in catalog {
        if let Some(n) = counts.get(&file) {
            assert_eq!(*n, pkts, "{file}: frame count differs from CATALOG.md");
        } else {
            println!("catalogued but absent: {file}");
        }
    }
}
