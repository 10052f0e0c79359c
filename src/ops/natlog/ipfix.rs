//! IPFIX (RFC 7011) messages carrying the RFC 8158 NAT event records: pure encoding, no I/O.
//!
//! Owns: the templates ftpnat exports (one per record shape), the information elements in them, the
//! message header (export time, sequence number, observation domain) and cutting records into
//! messages of at most a given size. Must not: open sockets, read clocks (times come in as
//! milliseconds since the Unix epoch) or decide when templates are re-sent (the exporter does).
//!
//! No maintained crate encodes IPFIX templates of our choosing (the published ones serve flow
//! exporters of their own), and the records are few and fixed-size, so they are written here by hand
//! and checked in the tests by independent decoders (tshark's dissector and a Python decoder written
//! from RFC 7011/8158: `tests/natlog.rs`).
//!
//! The templates (all fields fixed-length, IANA information elements, enterprise bit clear):
//!
//! | id | records | fields |
//! |---|---|---|
//! | 256 | port block allocate (natEvent 16) and release (17) | observationTimeMilliseconds, flowStartMilliseconds (when the block was allocated), natEvent, sourceIPv4Address, postNATSourceIPv4Address, portRangeStart, portRangeEnd, portRangeStepSize, portRangeNumPorts |
//! | 257 | NAT44 session create (4) and delete (5) | observationTimeMilliseconds, flowStartMilliseconds, natEvent, protocolIdentifier, sourceIPv4Address, sourceTransportPort, postNATSourceIPv4Address, postNAPTSourceTransportPort, destinationIPv4Address, destinationTransportPort |
//! | 258 | NAT addresses exhausted (3) | observationTimeMilliseconds, natEvent, natPoolId, protocolIdentifier |
//! | 259 | NAT ports exhausted (12) | observationTimeMilliseconds, natEvent, postNATSourceIPv4Address, protocolIdentifier |
//! | 260 | quota exceeded (13) | observationTimeMilliseconds, natEvent, natQuotaExceededEvent (3: maximum entries per user), maxEntriesPerUser, sourceIPv4Address, protocolIdentifier |
//! | 261 | NAT64 port block allocate (16) and release (17) | as 256 with sourceIPv6Address (the IPv6 subscriber) in place of sourceIPv4Address |
//! | 262 | NAT64 session create (4) and delete (5) | as 257 with sourceIPv6Address in place of sourceIPv4Address |
//!
//! NAT64 hosts are known inside by a stand-in IPv4 address (240.0.0.0/4) that no wire and no
//! operator ever sees; their records name the IPv6 source instead, with sourceIPv6Address (IE 27) as
//! RFC 8158's NAT64 templates do, so a public port traces back to the IPv6 subscriber.
//!
//! A block serves every protocol, so block records carry no protocolIdentifier (as RFC 8158's port
//! block template has none). Session records need no post-NAT destination: ftpnat never rewrites the
//! remote end of an outbound connection.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::Proto;
use crate::nat::Record;

pub const VERSION: u16 = 10;
pub const TEMPLATE_SET: u16 = 2;
pub const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;

/// Information element identifiers (IANA "IPFIX Information Elements").
pub mod ie {
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    pub const NAT_EVENT: u16 = 230;
    pub const NAT_POOL_ID: u16 = 283;
    pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
    pub const PORT_RANGE_START: u16 = 361;
    pub const PORT_RANGE_END: u16 = 362;
    pub const PORT_RANGE_STEP_SIZE: u16 = 363;
    pub const PORT_RANGE_NUM_PORTS: u16 = 364;
    pub const NAT_QUOTA_EXCEEDED_EVENT: u16 = 466;
    pub const MAX_ENTRIES_PER_USER: u16 = 473;
}

/// natEvent values (IANA "natEvent", RFC 8158 §4.1).
pub mod event {
    pub const ADDRESSES_EXHAUSTED: u8 = 3;
    pub const SESSION_CREATE: u8 = 4;
    pub const SESSION_DELETE: u8 = 5;
    pub const PORTS_EXHAUSTED: u8 = 12;
    pub const QUOTA_EXCEEDED: u8 = 13;
    pub const PORT_BLOCK_ALLOCATION: u8 = 16;
    pub const PORT_BLOCK_DEALLOCATION: u8 = 17;
}

/// natQuotaExceededEvent 3: maximum entries per user (RFC 8158 §4.2).
pub const QUOTA_ENTRIES_PER_USER: u32 = 3;
/// The natPoolId of ftpnat's one pool.
pub const POOL_ID: u32 = 1;

/// The templates: id and (information element, length) per field.
pub const TEMPLATES: [(u16, &[(u16, u16)]); 7] = [
    (
        256,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::FLOW_START_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::PORT_RANGE_START, 2),
            (ie::PORT_RANGE_END, 2),
            (ie::PORT_RANGE_STEP_SIZE, 2),
            (ie::PORT_RANGE_NUM_PORTS, 2),
        ],
    ),
    (
        257,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::FLOW_START_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
            (ie::DESTINATION_IPV4_ADDRESS, 4),
            (ie::DESTINATION_TRANSPORT_PORT, 2),
        ],
    ),
    (
        258,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::NAT_POOL_ID, 4),
            (ie::PROTOCOL_IDENTIFIER, 1),
        ],
    ),
    (
        259,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::PROTOCOL_IDENTIFIER, 1),
        ],
    ),
    (
        260,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::NAT_QUOTA_EXCEEDED_EVENT, 4),
            (ie::MAX_ENTRIES_PER_USER, 4),
            (ie::SOURCE_IPV4_ADDRESS, 4),
            (ie::PROTOCOL_IDENTIFIER, 1),
        ],
    ),
    (
        261,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::FLOW_START_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::SOURCE_IPV6_ADDRESS, 16),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::PORT_RANGE_START, 2),
            (ie::PORT_RANGE_END, 2),
            (ie::PORT_RANGE_STEP_SIZE, 2),
            (ie::PORT_RANGE_NUM_PORTS, 2),
        ],
    ),
    (
        262,
        &[
            (ie::OBSERVATION_TIME_MILLISECONDS, 8),
            (ie::FLOW_START_MILLISECONDS, 8),
            (ie::NAT_EVENT, 1),
            (ie::PROTOCOL_IDENTIFIER, 1),
            (ie::SOURCE_IPV6_ADDRESS, 16),
            (ie::SOURCE_TRANSPORT_PORT, 2),
            (ie::POST_NAT_SOURCE_IPV4_ADDRESS, 4),
            (ie::POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
            (ie::DESTINATION_IPV4_ADDRESS, 4),
            (ie::DESTINATION_TRANSPORT_PORT, 2),
        ],
    ),
];

fn record_len(template: u16) -> usize {
    TEMPLATES
        .iter()
        .find(|(id, _)| *id == template)
        .map_or(0, |(_, f)| f.iter().map(|&(_, l)| l as usize).sum())
}

/// A record as its template's id and field bytes; `ms` converts the core's instants to milliseconds
/// since the Unix epoch.
pub fn encode_record(r: &Record, ms: &dyn Fn(crate::time::Instant) -> u64) -> (u16, Vec<u8>) {
    let mut b = Vec::with_capacity(48);
    let ip = |b: &mut Vec<u8>, a: Ipv4Addr| b.extend_from_slice(&a.octets());
    let id = match r {
        Record::BlockAllocated { at, inside, inside6, public, ports }
        | Record::BlockReleased { at, inside, inside6, public, ports, .. } => {
            let (ev, since) = match r {
                Record::BlockReleased { since, .. } => (event::PORT_BLOCK_DEALLOCATION, *since),
                _ => (event::PORT_BLOCK_ALLOCATION, *at),
            };
            b.extend_from_slice(&ms(*at).to_be_bytes());
            b.extend_from_slice(&ms(since).to_be_bytes());
            b.push(ev);
            source(&mut b, *inside, *inside6);
            ip(&mut b, *public);
            b.extend_from_slice(&ports.first().to_be_bytes());
            b.extend_from_slice(&ports.last().to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            // portRangeNumPorts is 16 bits: a 65,536-port block (never made) would read as 0.
            b.extend_from_slice(&(ports.len().min(u32::from(u16::MAX)) as u16).to_be_bytes());
            if inside6.is_some() {
                261
            } else {
                256
            }
        }
        Record::SessionCreated { at, proto, inside, inside6, public, remote } => {
            let ev = event::SESSION_CREATE;
            session(&mut b, ms(*at), ms(*at), ev, *proto, (*inside, *inside6), *public, *remote)
        }
        Record::SessionDeleted { at, since, proto, inside, inside6, public, remote } => {
            let ev = event::SESSION_DELETE;
            session(&mut b, ms(*at), ms(*since), ev, *proto, (*inside, *inside6), *public, *remote)
        }
        Record::AddressesExhausted { at, proto } => {
            b.extend_from_slice(&ms(*at).to_be_bytes());
            b.push(event::ADDRESSES_EXHAUSTED);
            b.extend_from_slice(&POOL_ID.to_be_bytes());
            b.push(proto.number());
            258
        }
        Record::PortsExhausted { at, proto, public } => {
            b.extend_from_slice(&ms(*at).to_be_bytes());
            b.push(event::PORTS_EXHAUSTED);
            ip(&mut b, *public);
            b.push(proto.number());
            259
        }
        Record::QuotaExceeded { at, proto, host, limit, .. } => {
            b.extend_from_slice(&ms(*at).to_be_bytes());
            b.push(event::QUOTA_EXCEEDED);
            b.extend_from_slice(&QUOTA_ENTRIES_PER_USER.to_be_bytes());
            b.extend_from_slice(&limit.to_be_bytes());
            ip(&mut b, *host);
            b.push(proto.number());
            260
        }
    };
    debug_assert_eq!(b.len(), record_len(id), "template {id}");
    (id, b)
}

/// The inside host: its IPv6 address for a NAT64 host (sourceIPv6Address), else its IPv4 one.
fn source(b: &mut Vec<u8>, inside: Ipv4Addr, inside6: Option<Ipv6Addr>) {
    match inside6 {
        Some(v6) => b.extend_from_slice(&v6.octets()),
        None => b.extend_from_slice(&inside.octets()),
    }
}

/// A session record's fields; returns its template (257, or 262 for a NAT64 host).
#[allow(clippy::too_many_arguments)]
fn session(
    b: &mut Vec<u8>,
    at: u64,
    since: u64,
    ev: u8,
    proto: Proto,
    (inside, inside6): (crate::nat::InsideEndpoint, Option<Ipv6Addr>),
    public: crate::nat::PublicEndpoint,
    remote: crate::flow::Endpoint,
) -> u16 {
    b.extend_from_slice(&at.to_be_bytes());
    b.extend_from_slice(&since.to_be_bytes());
    b.push(ev);
    b.push(proto.number());
    source(b, inside.addr(), inside6);
    b.extend_from_slice(&inside.port().to_be_bytes());
    b.extend_from_slice(&public.addr().octets());
    b.extend_from_slice(&public.port().to_be_bytes());
    b.extend_from_slice(&remote.addr.octets());
    b.extend_from_slice(&remote.port.to_be_bytes());
    if inside6.is_some() {
        262
    } else {
        257
    }
}

/// Message framing state for one Transport Session (one collector over UDP) and one Observation
/// Domain.
#[derive(Debug, Clone)]
pub struct Encoder {
    domain: u32,
    /// Data records sent so far, modulo 2^32 (RFC 7011 §3.1: the Sequence Number of a message is this
    /// count before its records).
    sequence: u32,
    max_message: usize,
}

impl Encoder {
    /// `max_message`: the largest message (RFC 7011 §10.3.3: the path MTU to the collector, less the
    /// IP and UDP headers; at least 256 here).
    pub fn new(domain: u32, max_message: usize) -> Encoder {
        Encoder { domain, sequence: 0, max_message: max_message.clamp(256, 65_507) }
    }

    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    fn header(&self, buf: &mut [u8], export_secs: u32) {
        let len = buf.len() as u16;
        buf[0..2].copy_from_slice(&VERSION.to_be_bytes());
        buf[2..4].copy_from_slice(&len.to_be_bytes());
        buf[4..8].copy_from_slice(&export_secs.to_be_bytes());
        buf[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        buf[12..16].copy_from_slice(&self.domain.to_be_bytes());
    }

    /// One message with every template (sent at start and every template refresh interval, RFC 7011
    /// §8.4: over UDP, templates are re-sent periodically since the collector may have missed them).
    pub fn templates(&self, export_secs: u32) -> Vec<u8> {
        let mut m = vec![0; HEADER_LEN];
        let set_at = m.len();
        m.extend_from_slice(&TEMPLATE_SET.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        for (id, fields) in TEMPLATES {
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&(fields.len() as u16).to_be_bytes());
            for &(ie, len) in fields {
                m.extend_from_slice(&ie.to_be_bytes());
                m.extend_from_slice(&len.to_be_bytes());
            }
        }
        let set_len = (m.len() - set_at) as u16;
        m[set_at + 2..set_at + 4].copy_from_slice(&set_len.to_be_bytes());
        self.header(&mut m, export_secs);
        m
    }

    /// `records` (template id, field bytes) cut into messages of at most `max_message` bytes, one data
    /// set per run of records of the same template, in order. Advances the sequence number.
    pub fn data(&mut self, records: &[(u16, Vec<u8>)], export_secs: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < records.len() {
            let mut m = vec![0; HEADER_LEN];
            // The set being filled: its template id and where its header is.
            let mut set: Option<(u16, usize)> = None;
            let mut in_msg = 0u32;
            while let Some((id, body)) = records.get(i) {
                let opens = set.is_none_or(|(sid, _)| sid != *id);
                let need = body.len() + if opens { SET_HEADER_LEN } else { 0 };
                if m.len() + need > self.max_message && in_msg > 0 {
                    break;
                }
                if opens {
                    set = Some((*id, m.len()));
                    m.extend_from_slice(&id.to_be_bytes());
                    m.extend_from_slice(&[0, 0]);
                }
                m.extend_from_slice(body);
                let at = set.map_or(HEADER_LEN, |(_, at)| at);
                let set_len = (m.len() - at) as u16;
                m[at + 2..at + 4].copy_from_slice(&set_len.to_be_bytes());
                in_msg += 1;
                i += 1;
            }
            self.header(&mut m, export_secs);
            self.sequence = self.sequence.wrapping_add(in_msg);
            out.push(m);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{InsideEndpoint, PortRange, PublicEndpoint};
    use crate::time::Instant;

    fn ms(i: Instant) -> u64 {
        1_700_000_000_000 + i.as_micros() / 1000
    }

    /// A minimal reader of what this module writes, walking sets by their lengths (the independent
    /// decoders live in tests/natlog.rs; this one checks the framing arithmetic).
    fn walk(m: &[u8]) -> (u16, u32, Vec<(u16, usize)>) {
        assert_eq!(u16::from_be_bytes([m[0], m[1]]), VERSION);
        let len = u16::from_be_bytes([m[2], m[3]]) as usize;
        assert_eq!(len, m.len());
        let seq = u32::from_be_bytes([m[8], m[9], m[10], m[11]]);
        let mut at = HEADER_LEN;
        let mut sets = Vec::new();
        while at < m.len() {
            let id = u16::from_be_bytes([m[at], m[at + 1]]);
            let l = u16::from_be_bytes([m[at + 2], m[at + 3]]) as usize;
            assert!(l >= 4 && at + l <= m.len());
            sets.push((id, l));
            at += l;
        }
        (len as u16, seq, sets)
    }

    fn block(n: u16) -> Record {
        Record::BlockAllocated {
            at: Instant::from_secs(u64::from(n)),
            inside: Ipv4Addr::new(100, 64, 0, 2),
            inside6: None,
            public: Ipv4Addr::new(198, 51, 100, 1),
            ports: PortRange::new(1024 + n * 512, 1535 + n * 512).unwrap(),
        }
    }

    #[test]
    fn template_lengths_match_the_encoded_records() {
        let recs = [
            block(0),
            Record::BlockReleased {
                at: Instant::from_secs(9),
                since: Instant::from_secs(1),
                inside: Ipv4Addr::new(100, 64, 0, 2),
                inside6: None,
                public: Ipv4Addr::new(198, 51, 100, 1),
                ports: PortRange::new(1024, 1535).unwrap(),
            },
            Record::SessionCreated {
                at: Instant::ZERO,
                proto: Proto::Tcp,
                inside: InsideEndpoint::new(Ipv4Addr::new(100, 64, 0, 2), 40000),
                inside6: None,
                public: PublicEndpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1030),
                remote: crate::flow::Endpoint::new(Ipv4Addr::new(203, 0, 113, 9), 80),
            },
            Record::AddressesExhausted { at: Instant::ZERO, proto: Proto::Udp },
            Record::PortsExhausted {
                at: Instant::ZERO,
                proto: Proto::Udp,
                public: Ipv4Addr::new(198, 51, 100, 1),
            },
            Record::QuotaExceeded {
                at: Instant::ZERO,
                proto: Proto::Icmp,
                host: Ipv4Addr::new(100, 64, 0, 2),
                quota: crate::nat::Quota::BlocksPerHost,
                limit: 4096,
            },
        ];
        for r in &recs {
            let (id, b) = encode_record(r, &ms);
            assert_eq!(b.len(), record_len(id), "{r:?}");
        }
        let (id, b) = encode_record(&recs[1], &ms);
        assert_eq!(id, 256);
        assert_eq!(b[16], event::PORT_BLOCK_DEALLOCATION);
        assert_eq!(
            u64::from_be_bytes(b[8..16].try_into().unwrap()),
            ms(Instant::from_secs(1)),
            "allocated at"
        );
        assert_eq!(&b[25..33], &[4, 0, 5, 0xff, 0, 1, 2, 0], "1024-1535, step 1, 512 ports");
    }

    #[test]
    fn nat64_records_name_the_ipv6_source() {
        let v6: Ipv6Addr = "2001:db8:64::2".parse().unwrap();
        let alias = Ipv4Addr::new(240, 0, 0, 1);
        let created = Record::SessionCreated {
            at: Instant::ZERO,
            proto: Proto::Tcp,
            inside: InsideEndpoint::new(alias, 40000),
            inside6: Some(v6),
            public: PublicEndpoint::new(Ipv4Addr::new(198, 51, 100, 1), 1030),
            remote: crate::flow::Endpoint::new(Ipv4Addr::new(203, 0, 113, 9), 21),
        };
        let (id, b) = encode_record(&created, &ms);
        assert_eq!((id, b.len()), (262, record_len(262)));
        assert_eq!(&b[18..34], &v6.octets(), "sourceIPv6Address, never the 240/4 stand-in");
        assert_eq!(u16::from_be_bytes([b[34], b[35]]), 40000);
        assert_eq!(&b[36..40], &[198, 51, 100, 1]);
        let Record::BlockAllocated { at, public, ports, .. } = block(0) else { unreachable!() };
        let blk = Record::BlockAllocated { at, inside: alias, inside6: Some(v6), public, ports };
        let (id, b) = encode_record(&blk, &ms);
        assert_eq!((id, b.len()), (261, record_len(261)));
        assert_eq!(&b[17..33], &v6.octets());
        assert_eq!(&b[33..37], &[198, 51, 100, 1]);
        assert!(!b.windows(4).any(|w| w == alias.octets()), "the stand-in is not exported");
        // The template set announces IE 27 with length 16 for both.
        let t = Encoder::new(7, 1400).templates(1000);
        let needle = [&ie::SOURCE_IPV6_ADDRESS.to_be_bytes()[..], &16u16.to_be_bytes()[..]].concat();
        assert_eq!(t.windows(4).filter(|w| *w == &needle[..]).count(), 2);
    }

    #[test]
    fn messages_respect_the_size_and_count_the_sequence() {
        let mut e = Encoder::new(7, 256);
        let t = e.templates(1000);
        let (_, seq, sets) = walk(&t);
        assert_eq!((seq, sets.len(), sets[0].0), (0, 1, TEMPLATE_SET));
        let recs: Vec<_> = (0..30).map(|n| encode_record(&block(n), &ms)).collect();
        let msgs = e.data(&recs, 1000);
        assert!(msgs.len() > 1);
        let mut expect_seq = 0;
        let mut total = 0;
        for m in &msgs {
            assert!(m.len() <= 256);
            let (_, seq, sets) = walk(m);
            assert_eq!(seq, expect_seq, "sequence = data records sent before this message");
            let n: usize = sets
                .iter()
                .map(|&(id, l)| {
                    assert_eq!(id, 256);
                    (l - 4) / record_len(256)
                })
                .sum();
            expect_seq += n as u32;
            total += n;
        }
        assert_eq!(total, 30);
        assert_eq!(e.sequence(), 30);
        // Mixed templates: one set per run.
        let mixed = vec![
            encode_record(&block(1), &ms),
            encode_record(&Record::AddressesExhausted { at: Instant::ZERO, proto: Proto::Tcp }, &ms),
            encode_record(&block(2), &ms),
        ];
        let m = e.data(&mixed, 1);
        assert_eq!(m.len(), 1);
        let (_, seq, sets) = walk(&m[0]);
        assert_eq!(seq, 30);
        assert_eq!(sets.iter().map(|s| s.0).collect::<Vec<_>>(), vec![256, 258, 256]);
    }
}
