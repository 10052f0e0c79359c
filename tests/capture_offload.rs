//! `--capture` of a transfer that crosses ftpnat as segmentation-offload aggregates: every recorded
//! packet, the large aggregate frames included, must read as valid IPv4/TCP to an independent parser
//! (etherparse; tshark too when it is installed). Before the fix an aggregate was recorded before its
//! checksum field was set for the kernel (it held a pseudo-header sum), and Wireshark flagged every one
//! "Bad checksum".
//!
//! Needs root: without it the test prints `SKIP (needs root + netns)` locally and fails under `CI=true`.

#[path = "netns_support/mod.rs"]
mod netns_support;

use std::path::Path;
use std::time::Duration;

use etherparse::{Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};
use netns_support::*;

const TRANSFER: usize = 4 << 20;

/// Per pcapng interface (0 = LAN, 1 = WAN): packets, packets larger than the 1500-byte MTU (aggregates),
/// and the descriptions of packets whose checksums etherparse does not accept.
#[derive(Debug, Default)]
struct Side {
    packets: usize,
    aggregates: usize,
    bad: Vec<String>,
}

fn check_capture(path: &Path) -> [Side; 2] {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut sides: [Side; 2] = Default::default();
    let mut r = PcapNgReader::new(std::fs::File::open(path).unwrap()).unwrap();
    while let Some(b) = r.next_block() {
        let Block::EnhancedPacket(p) = b.unwrap() else { continue };
        let side = &mut sides[p.interface_id as usize];
        side.packets += 1;
        let data = &p.data[..];
        if data.len() > 1500 {
            side.aggregates += 1;
        }
        let ip = match Ipv4HeaderSlice::from_slice(data) {
            Ok(ip) => ip,
            Err(e) => {
                side.bad.push(format!("not IPv4 ({e})"));
                continue;
            }
        };
        if ip.header_checksum() != ip.to_header().calc_header_checksum() {
            side.bad.push(format!("{} bytes: IPv4 header checksum", data.len()));
        }
        let payload = &data[ip.slice().len()..usize::from(ip.total_len()).min(data.len())];
        match ip.protocol().0 {
            6 => {
                let tcp = TcpHeaderSlice::from_slice(payload).unwrap();
                let body = &payload[tcp.slice().len()..];
                let want = tcp.calc_checksum_ipv4(&ip, body).unwrap();
                if tcp.checksum() != want {
                    side.bad.push(format!(
                        "{} bytes, TCP {} -> {} seq {}: checksum {:#06x}, should be {want:#06x}",
                        data.len(),
                        tcp.source_port(),
                        tcp.destination_port(),
                        tcp.sequence_number(),
                        tcp.checksum()
                    ));
                }
            }
            17 => {
                let udp = UdpHeaderSlice::from_slice(payload).unwrap();
                let want = udp.to_header().calc_checksum_ipv4(&ip.to_header(), &payload[8..]).unwrap();
                if udp.checksum() != 0 && udp.checksum() != want {
                    side.bad.push(format!("{} bytes: UDP checksum", data.len()));
                }
            }
            _ => {}
        }
    }
    sides
}

/// tshark, when installed, must find no packet with a bad TCP checksum (its checksum validation is off
/// by default; turned on here).
fn tshark_finds_no_bad_checksum(path: &Path) {
    let out = std::process::Command::new("tshark")
        .args(["-n", "-o", "tcp.check_checksum:TRUE", "-Y", "tcp.checksum.status == \"Bad\"", "-r"])
        .arg(path)
        .output();
    let Ok(out) = out else {
        eprintln!("tshark not installed: the capture was checked with etherparse only");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim().is_empty(), "tshark flags bad TCP checksums:\n{stdout}");
}

#[test]
fn an_offloaded_transfer_is_captured_with_valid_checksums() {
    let test = "an_offloaded_transfer_is_captured_with_valid_checksums";
    let dir = std::env::temp_dir().join(format!("ftpnat-capoff-{}", std::process::id()));
    let cap = dir.join("offload.pcapng");
    if netns_available(test) {
        std::fs::create_dir_all(dir.join("www")).unwrap();
    }
    let cap_arg = cap.display().to_string();
    let Some(mut t) = Topology::up(test, &[], &["--capture", &cap_arg]) else { return };
    let blob: Vec<u8> = (0..TRANSFER).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(dir.join("www/blob.bin"), &blob).unwrap();
    let www = dir.join("www").display().to_string();
    // Download (the aggregates come from the WAN and are written to the LAN device) ...
    t.serve_wan(
        "tcp",
        8000,
        &["python3", "-m", "http.server", "--bind", WAN_HOST, "--directory", &www, "8000"],
    );
    let url = format!("http://{WAN_HOST}:8000/blob.bin");
    let out =
        t.lan(Duration::from_secs(60), &["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", &url]);
    assert_eq!(text(&out.stdout), TRANSFER.to_string(), "download: {}", text(&out.stderr));
    // ... and upload (written to the WAN device).
    let peer = peer_py();
    t.serve_wan("tcp", 9000, &["python3", &peer, "tcp-sink", "9000"]);
    let n = TRANSFER.to_string();
    let out = t.lan(Duration::from_secs(60), &["python3", &peer, "tcp-send", WAN_HOST, "9000", &n]);
    assert!(text(&out.stdout).starts_with(&format!("got {TRANSFER} bytes")), "upload: {}", text(&out.stdout));
    let s = t.stop_cleanly();
    let aggregates_in = s.counter("device.lan.rx_aggregates") + s.counter("device.wan.rx_aggregates");
    assert!(
        aggregates_in > 0,
        "no offload aggregates crossed ftpnat; the test proves nothing:\n{}",
        s.summary
    );

    let [lan, wan] = check_capture(&cap);
    assert!(lan.aggregates > 0, "no aggregate written to the LAN device was captured: {lan:?}");
    assert!(wan.aggregates > 0, "no aggregate written to the WAN device was captured: {wan:?}");
    let bad: Vec<&String> = lan.bad.iter().chain(&wan.bad).collect();
    assert!(
        bad.is_empty(),
        "{} of {} captured packets have wrong checksums ({} LAN aggregates, {} WAN aggregates), e.g.:\n{}",
        bad.len(),
        lan.packets + wan.packets,
        lan.aggregates,
        wan.aggregates,
        bad.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    tshark_finds_no_bad_checksum(&cap);
    let _ = std::fs::remove_dir_all(&dir);
}
