//! Packets (part of the replay checker, see `mod.rs`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use ftpnat::io::pcap::CaptureReader;

#[derive(Clone, Debug, Default)]
pub struct Tcp {
    pub seq: u32,
    pub ack: u32,
    pub syn: bool,
    pub ackf: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: Vec<u8>,
}

/// One IP datagram of a capture, as etherparse reads it.
#[derive(Clone, Debug)]
pub struct Pkt {
    /// Position of the frame in its file.
    pub frame: usize,
    pub ts: u64,
    pub bytes: Vec<u8>,
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: u8,
    pub fragment: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp: Option<Tcp>,
    pub icmp_type: Option<u8>,
    /// Where the transport header starts in `bytes` (None when etherparse found none).
    pub l4: Option<usize>,
}

impl Pkt {
    pub fn key(&self) -> Flow {
        Flow { src: (self.src, self.sport), dst: (self.dst, self.dport), proto: self.proto }
    }
    fn v4(&self, a: IpAddr) -> Option<Ipv4Addr> {
        match a {
            IpAddr::V4(a) => Some(a),
            _ => None,
        }
    }
    pub fn src4(&self) -> Option<Ipv4Addr> {
        self.v4(self.src)
    }
    pub fn dst4(&self) -> Option<Ipv4Addr> {
        self.v4(self.dst)
    }
    pub fn describe(&self) -> String {
        let mut s = format!(
            "frame {} {}:{} > {}:{} proto {}",
            self.frame + 1,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.proto
        );
        if let Some(t) = &self.tcp {
            let _ = write!(
                s,
                " [{}{}{}{}] seq {} ack {} len {}",
                if t.syn { "S" } else { "" },
                if t.fin { "F" } else { "" },
                if t.rst { "R" } else { "" },
                if t.ackf { "." } else { "" },
                t.seq,
                t.ack,
                t.payload.len()
            );
        }
        s
    }
}

/// A flow as one packet carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
}

impl Flow {
    pub fn rev(self) -> Flow {
        Flow { src: self.dst, dst: self.src, proto: self.proto }
    }
}

/// Parses an IP datagram (the capture's TSO "length 0" is taken as the buffer length).
pub fn parse_ip(frame: usize, ts: u64, mut bytes: Vec<u8>) -> Option<Pkt> {
    if bytes.len() >= 20 && bytes[0] >> 4 == 4 && bytes[2] == 0 && bytes[3] == 0 && bytes.len() <= 65535 {
        let n = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&n.to_be_bytes());
        bytes[10] = 0;
        bytes[11] = 0;
        let c = rfc1071(&bytes[..((bytes[0] & 15) as usize) * 4]);
        bytes[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let sliced = LaxSlicedPacket::from_ip(&bytes).ok()?;
    let (v6, src, dst, ttl, proto, fragment, payload_at) = match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => {
            let h = s.header();
            (
                false,
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                s.payload().ip_number.0,
                s.is_payload_fragmented(),
                s.payload().payload.as_ptr() as usize - bytes.as_ptr() as usize,
            )
        }
        LaxNetSlice::Ipv6(s) => {
            let h = s.header();
            (
                true,
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                s.payload().ip_number.0,
                s.is_payload_fragmented(),
                s.payload().payload.as_ptr() as usize - bytes.as_ptr() as usize,
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    let (mut sport, mut dport, mut tcp, mut icmp_type) = (0, 0, None, None);
    let mut l4 = None;
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            sport = t.source_port();
            dport = t.destination_port();
            tcp = Some(Tcp {
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                syn: t.syn(),
                ackf: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                payload: t.payload().to_vec(),
            });
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Udp(u)) => {
            sport = u.source_port();
            dport = u.destination_port();
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Icmpv4(i)) => {
            icmp_type = Some(i.type_u8());
            if matches!(i.type_u8(), 0 | 8) {
                let id = u16::from_be_bytes([i.bytes5to8()[0], i.bytes5to8()[1]]);
                sport = id;
                dport = id;
            }
            l4 = Some(payload_at);
        }
        Some(TransportSlice::Icmpv6(i)) => {
            icmp_type = Some(i.type_u8());
            l4 = Some(payload_at);
        }
        _ => {}
    }
    drop(sliced);
    Some(Pkt { frame, ts, bytes, v6, src, dst, ttl, proto, fragment, sport, dport, tcp, icmp_type, l4 })
}

/// RFC 1071: the kit's, written from the RFC, so the checker shares no code with the crate.
pub use ftpnat_testkit::csum::rfc1071;

/// The IP datagram inside a captured frame, located by etherparse.
pub(super) fn l3_of(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let base = frame.as_ptr() as usize;
    let sliced = match linktype {
        1 => LaxSlicedPacket::from_ethernet(frame).ok()?,
        12 | 14 | 101 | 228 | 229 => LaxSlicedPacket::from_ip(frame).ok()?,
        113 => {
            let et = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
            LaxSlicedPacket::from_ether_type(EtherType(et), frame.get(16..)?)
        }
        276 => {
            let et = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
            LaxSlicedPacket::from_ether_type(EtherType(et), frame.get(20..)?)
        }
        0 | 108 => LaxSlicedPacket::from_ip(frame.get(4..)?).ok()?,
        other => panic!("checker: link type {other} not supported"),
    };
    let (start, end) = match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(s) => {
            let p = &s.payload().payload;
            (s.header().slice().as_ptr() as usize - base, p.as_ptr() as usize - base + p.len())
        }
        LaxNetSlice::Ipv6(s) => {
            let p = &s.payload().payload;
            (s.header().slice().as_ptr() as usize - base, p.as_ptr() as usize - base + p.len())
        }
        LaxNetSlice::Arp(_) => return None,
    };
    frame.get(start..end)
}

/// A capture read for checking.
pub struct Capture {
    pub pkts: Vec<Pkt>,
    pub frames: usize,
    pub non_ip: usize,
}

pub fn read_capture(path: &Path) -> Capture {
    let mut r = CaptureReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut c = Capture { pkts: Vec::new(), frames: 0, non_ip: 0 };
    while let Some(f) = r.next_frame().unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let i = c.frames;
        c.frames += 1;
        match l3_of(f.linktype.0, &f.data).and_then(|l3| parse_ip(i, f.ts_micros, l3.to_vec())) {
            Some(p) => c.pkts.push(p),
            None => c.non_ip += 1,
        }
    }
    c
}
