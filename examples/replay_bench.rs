//! Replay throughput for established-flow traffic (a measurement, not a test).
//!
//! ```text
//! cargo run --release --example replay_bench -- [PACKETS] [FLOWS] [PAYLOAD]   (default: 64 and 1000)
//! ```
//!
//! Generates an Ethernet capture of FLOWS TCP connections (handshake first, then PACKETS data and ACK
//! segments spread over them, both directions, PAYLOAD-byte data segments; 64 and 1000 by default), then times `ftpnat replay` on it:
//! once end to end (pcap read, link decode, input checksum verification, peer emulation, engine, pcap
//! write of both outputs) and once in memory (outputs counted, not written). With REPLAY_BENCH_KEEP=DIR
//! the input and outputs stay in DIR/PAYLOAD/ (to profile `replay_run` on them).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ftpnat_testkit::pkt::{Ip, Tcp};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

#[allow(clippy::too_many_arguments)]
fn frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    // Ethernet (02:00:00:00:00:02 <- 02:00:00:00:00:01, IPv4) around the kit's datagram.
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
    let tcp = Tcp { window: 64240, ..Tcp::new(sp, dp, seq, ack, flags, payload) };
    f.extend_from_slice(&Ip::new(src, dst).ident(1).tcp(&tcp));
    f
}

fn main() {
    let mut a = std::env::args().skip(1);
    let packets: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let flows: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let sizes: Vec<usize> = match a.next().and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![64, 1000],
    };
    for size in sizes {
        println!("--- data segments of {size} bytes, each answered by a pure ACK");
        bench(packets, flows, size);
    }
}

fn bench(packets: usize, flows: usize, size: usize) {
    // REPLAY_BENCH_KEEP=DIR keeps the generated input and the outputs there (for profiling `replay_run`).
    let keep = std::env::var_os("REPLAY_BENCH_KEEP").map(PathBuf::from);
    let dir = match &keep {
        Some(d) => d.join(format!("{size}")),
        None => std::env::temp_dir().join(format!("ftpnat-replay-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let input: PathBuf = dir.join("input.pcap");

    // Generate.
    let t = Instant::now();
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
    let mut w =
        PcapWriter::with_header(std::io::BufWriter::new(std::fs::File::create(&input).unwrap()), header)
            .unwrap();
    let payload = vec![0x5a; size];
    let client = |i: usize| Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 2);
    let server = Ipv4Addr::new(198, 51, 100, 10);
    let mut seq = vec![[1_000u32, 500_000u32]; flows];
    let mut ts = 1_704_067_200_000_000u64;
    let mut n = 0usize;
    let put = |w: &mut PcapWriter<_>, f: Vec<u8>, ts: &mut u64| {
        *ts += 1;
        w.write_packet(&PcapPacket::new(Duration::from_micros(*ts), f.len() as u32, &f)).unwrap();
    };
    for i in 0..flows {
        let (c, cp) = (client(i), 20_000 + i as u16);
        put(&mut w, frame(c, server, cp, 443, 999, 0, 0x02, b""), &mut ts);
        put(&mut w, frame(server, c, 443, cp, 499_999, 1000, 0x12, b""), &mut ts);
        put(&mut w, frame(c, server, cp, 443, 1000, 500_000, 0x10, b""), &mut ts);
        n += 3;
    }
    let mut i = 0;
    while n < packets {
        let f = i % flows;
        let (c, cp) = (client(f), 20_000 + f as u16);
        let s = &mut seq[f];
        // Data from the server, then the client's ACK.
        put(&mut w, frame(server, c, 443, cp, s[1], s[0], 0x18, &payload), &mut ts);
        s[1] = s[1].wrapping_add(payload.len() as u32);
        put(&mut w, frame(c, server, cp, 443, s[0], s[1], 0x10, b""), &mut ts);
        n += 2;
        i += 1;
    }
    drop(w);
    println!("generated {n} packets over {flows} flows in {:.2?}", t.elapsed());

    let mut opts = ftpnat::replay::ReplayOptions::new(
        vec!["10.0.0.0/8".parse().unwrap()],
        Ipv4Addr::new(203, 0, 113, 1),
    );
    opts.ftp_ports = vec![21];

    // End to end, files in and out.
    let files = ftpnat::replay::ReplayFiles {
        input: input.clone(),
        lan_out: dir.join("lan.pcap"),
        wan_out: dir.join("wan.pcap"),
        summary: None,
    };
    let t = Instant::now();
    let s = ftpnat::replay::run(&opts, &files).unwrap();
    let e = t.elapsed();
    let out = s.counters.packets_out[0] + s.counters.packets_out[1];
    println!(
        "end to end (pcap in, pcap out): {n} packets in {e:.2?} = {:.2} M packets/s ({out} written, {} dropped)",
        n as f64 / e.as_secs_f64() / 1e6,
        s.total_drops()
    );

    // Reading alone.
    let t = Instant::now();
    let mut frames = Vec::with_capacity(n);
    let mut r = ftpnat::io::pcap::CaptureReader::open(&input).unwrap();
    while let Some(f) = r.next_frame().unwrap() {
        frames.push(f);
    }
    println!("reading the capture alone: {:.2?}", t.elapsed());
    // Writing alone (one output file, every frame).
    let t = Instant::now();
    let mut wr =
        ftpnat::io::pcap::PcapWriter::create(&dir.join("w.pcap"), ftpnat::wire::link::LinkType::RAW).unwrap();
    for f in &frames {
        wr.write(f.ts_micros, &f.data[14..]).unwrap();
    }
    let wt = t.elapsed();
    wr.finish().unwrap();
    println!("writing alone: {wt:.2?} + finish (flush) {:.2?}", t.elapsed() - wt);
    let mut rep = ftpnat::replay::Replayer::new(&opts).unwrap();
    let mut sink = ftpnat::replay::MemoryOutput { discard: true, ..Default::default() };
    let t = Instant::now();
    for f in &frames {
        rep.frame(f.ts_micros, f.linktype, &f.data, &mut sink).unwrap();
    }
    let e = t.elapsed();
    println!(
        "in memory (decode, repair check, emulation, engine): {n} packets in {e:.2?} = {:.2} M packets/s",
        n as f64 / e.as_secs_f64() / 1e6
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
