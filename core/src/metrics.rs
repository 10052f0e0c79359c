//! Plain counters and the reasons a packet can be dropped or an ALG line refused.
//!
//! Owns: [`DropReason`] (one variant per drop site), [`RefusalReason`] (why the ALG left a line alone) and
//! [`Metrics`], a flat struct of `u64` counters the engine bumps. Must not: do I/O, format output or
//! allocate on the packet path. Exporters (stats summary, replay JSON, control socket) read it through
//! [`Metrics::for_each`], so a counter added here shows up everywhere at once.

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub const COUNT: usize = [$($name::$v,)*].len();
            /// Stable snake_case name used in logs, metrics and the replay summary.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
            pub const fn index(self) -> usize { self as usize }
        }
        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { f.write_str(self.name()) }
        }
    };
}

reasons! {
    /// Why the engine produced no output for a packet. Every drop site has its own variant.
    DropReason {
        /// Shorter than its headers say, bad version or header length.
        Malformed => "malformed",
        /// The IPv4 header checksum is wrong (RFC 1812 §5.2.2: a router must verify it).
        BadIpChecksum => "bad_ip_checksum",
        /// Not IPv4 on a device that only carries IPv4 (IPv6 is not translated).
        NotIpv4 => "not_ipv4",
        /// A protocol other than TCP, UDP or ICMP: there are no ports to translate.
        UnsupportedProtocol => "unsupported_protocol",
        /// A LAN packet whose source is outside every `--inside` prefix.
        SpoofedSource => "spoofed_source",
        /// A WAN packet from an inside address, or one not addressed to the public address.
        Martian => "martian",
        /// TTL would reach 0 here (an ICMP time-exceeded is sent back, RFC 1812 §5.3.1).
        TtlExceeded => "ttl_exceeded",
        /// DF set and larger than the egress MTU (ICMP fragmentation-needed sent, RFC 1191).
        FragNeeded => "frag_needed",
        /// An inbound packet that matches no mapping, port forward or pinhole.
        NoMapping => "no_mapping",
        /// A mapping exists for the public port but not towards this remote (address-and-port-dependent
        /// filtering, RFC 4787 §5 / REQ-8).
        Filtered => "filtered",
        /// A TCP packet that cannot start a connection (not a SYN) arrived inbound with no connection.
        NotSyn => "not_syn",
        /// The connection table is at its configured maximum.
        TableFull => "table_full",
        /// The inside host is at its own flow limit.
        HostFlowLimit => "host_flow_limit",
        /// No free outside port for a new mapping.
        PortsExhausted => "ports_exhausted",
        /// An ICMP type the NAT does not forward (redirect, router advertisement, ...).
        IcmpUnsupported => "icmp_unsupported",
        /// An ICMP error whose quoted packet matches no connection.
        IcmpErrorNoMatch => "icmp_error_no_match",
        /// A non-first fragment whose first fragment never arrived in time.
        FragmentNoState => "fragment_no_state",
        /// Too many fragments waiting for their first fragment.
        FragmentQueueFull => "fragment_queue_full",
        /// An FTP control segment that is fragmented: the ALG cannot read it safely.
        FragmentedControl => "fragmented_control",
        /// A control-connection segment beyond a gap in the stream; the sender will retransmit it.
        AlgOutOfOrder => "alg_out_of_order",
        /// A control-connection segment wholly before what the ALG still remembers (already acknowledged).
        AlgStale => "alg_stale",
        /// An FTP control segment whose TCP checksum is wrong: the ALG would read corrupt bytes and
        /// send them on re-checksummed; the sender retransmits it.
        AlgBadChecksum => "alg_bad_checksum",
        /// Addressed to the gateway itself (only ICMP echo is answered there).
        LocalDelivery => "local_delivery",
        /// A new flow that needs a new public port while its inside host holds its share of them
        /// (`--max-ports-per-host`, RFC 6888 REQ-4); other hosts are not affected.
        HostPortQuota => "host_port_quota",
        /// A later fragment that would wait for its first fragment while its source already has its
        /// share of the waiting queue: one peer cannot crowd out the others' fragments.
        FragmentSourceQuota => "fragment_source_quota",
        /// A TCP segment beyond its connection's window (sequence past what the receiver allows, an ACK
        /// of bytes the other side cannot have sent, an RST outside the window, a SYN-ACK that does not
        /// answer the SYN): what Linux conntrack marks INVALID. It changed no state.
        TcpOutOfWindow => "tcp_out_of_window",
        /// An inside host's answer (SYN-ACK, ACK, data, FIN, RST) to an inbound opening the gateway
        /// refused: it opens no mapping.
        RefusedFlow => "refused_flow",
        /// An IPv6 LAN packet (NAT64) to an address the NAT64 prefix does not map: outside the prefix,
        /// a non-zero u-octet or suffix (RFC 6052 §2.2), a non-global IPv4 address under the well-known
        /// prefix (§3.1), a multicast or link-local destination.
        Nat64Unroutable => "nat64_unroutable",
        /// A new IPv6 source while its /64 already has its share of NAT64 stand-in addresses (source
        /// address spraying), or none is free.
        Nat64HostLimit => "nat64_host_limit",
        /// A packet RFC 7915 does not translate (an ICMP type with no counterpart, fragmented ICMP, a
        /// routing header with segments left, an error quoting an error, a UDP fragment without a
        /// checksum), or an IPv4 packet for an IPv6 host that is gone.
        Nat64Untranslatable => "nat64_untranslatable",
    }
}

reasons! {
    /// Why the FTP ALG left a PORT/EPRT/227/229 line byte-identical and opened no pinhole.
    RefusalReason {
        /// Wrong field count, a value out of range, not a number.
        Malformed => "malformed",
        /// The line names a host other than the sender of the line (FTP bounce, RFC 2577 §3).
        ThirdHost => "third_host",
        /// PORT/EPRT naming a port below 1024 (RFC 2577 §3).
        LowPort => "low_port",
        /// EPRT with an address family other than the connection's (RFC 2428 §2).
        WrongFamily => "wrong_family",
        /// 227/229 that answers no pending PASV/EPSV.
        Unsolicited => "unsolicited",
        /// No outside port was free for the pinhole.
        NoPort => "no_port",
        /// The line never completed within the hold limits; its bytes were released as sent.
        HoldTimeout => "hold_timeout",
        /// The line grew past the maximum length the ALG holds.
        Overlong => "overlong",
        /// The per-host pinhole limit is reached.
        PinholeLimit => "pinhole_limit",
        /// The pinhole would need a new public port and the inside host holds its share of them
        /// (`--max-ports-per-host`).
        HostPortQuota => "host_port_quota",
        /// The connection does not look like FTP (a client line that is not an RFC 959 command, a first
        /// server line that is no greeting, an announcement before the greeting): opaque for good.
        NotFtp => "not_ftp",
    }
}

/// Every counter the engine keeps. Plain `u64`s: the engine is single-threaded.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub packets_in: [u64; 2],
    pub bytes_in: [u64; 2],
    pub packets_out: [u64; 2],
    pub bytes_out: [u64; 2],
    #[serde(with = "serde_big_array::BigArray")]
    pub drops: [u64; DropReason::COUNT],
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_closed: u64,
    /// Closed TCP connections given up early for a new connection of their host at its port share.
    pub flows_reclaimed: u64,
    pub icmp_errors_sent: u64,
    /// Packets the gateway would have originated (ICMP errors, echo replies) but may not (replay).
    pub generated_suppressed: u64,
    pub icmp_errors_translated: u64,
    pub fragments_translated: u64,
    pub fragments_created: u64,
    pub alg_rewrites_port: u64,
    pub alg_rewrites_eprt: u64,
    pub alg_rewrites_227: u64,
    pub alg_rewrites_229: u64,
    pub alg_rewrites_zero_delta: u64,
    #[serde(with = "serde_big_array::BigArray")]
    pub alg_refused: [u64; RefusalReason::COUNT],
    pub alg_lines_held: u64,
    pub alg_retransmits_rebuilt: u64,
    pub alg_segments_split: u64,
    pub alg_tls_opaque: u64,
    pub pinholes_created: u64,
    pub pinholes_used: u64,
    pub pinholes_expired: u64,
    pub pinholes_replaced: u64,
    pub pinholes_refused_by_server: u64,
    pub pinholes_closed_with_control: u64,
    /// First-fragment states forgotten early to make room: a source's own oldest when it is at its
    /// share, the oldest of all when the table is full.
    pub fragment_states_evicted: u64,
    /// TCP segments behind the window (old duplicates, long-delayed ACKs, a SYN of a synchronised
    /// connection) passed on translated without changing any state.
    pub tcp_window_ignored: u64,
    /// RSTs in the window whose sequence number is not the receiver's next (RFC 5961 §3.2): passed on
    /// without changing any state.
    pub tcp_rst_ignored: u64,
    /// Control-connection streams resynchronised after a gap (the peer acknowledged bytes the gateway
    /// never saw).
    pub alg_gaps: u64,
    /// Lines left as sent because they straddle such a gap.
    pub alg_gap_lines: u64,
    /// NAT64: IPv6 datagrams translated to IPv4 (LAN→WAN) and IPv4 to IPv6 (towards the LAN).
    pub nat64_to_v4: u64,
    pub nat64_to_v6: u64,
    /// RFC 6384 on NAT64 control connections: EPSV/LPSV sent as PASV, the 227 answering it rewritten
    /// as 229/228, EPRT/LPRT sent as PORT, and commands the gateway answered itself (the NOOP
    /// substitution of §12: EPSV ALL, EPSV 1, ALGS, LPRT 4, a refused EPRT).
    pub alg_nat64_epsv: u64,
    pub alg_nat64_227: u64,
    pub alg_nat64_eprt: u64,
    pub alg_nat64_answered: u64,
    /// The sum of `drops`, kept by [`Metrics::drop`]: replay asks for it around every packet, and summing
    /// the array each time cost a few percent of a replay.
    dropped: u64,
}

impl Metrics {
    /// Counts a drop. The only way drops are counted (`total_drops` relies on it).
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
        self.dropped += 1;
    }
    pub fn refuse(&mut self, r: RefusalReason) {
        self.alg_refused[r.index()] += 1;
    }
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    pub fn refused_of(&self, r: RefusalReason) -> u64 {
        self.alg_refused[r.index()]
    }
    pub fn total_drops(&self) -> u64 {
        debug_assert_eq!(self.dropped, self.drops.iter().sum::<u64>(), "drops counted past Metrics::drop");
        self.dropped
    }
    pub fn alg_rewrites(&self) -> u64 {
        self.alg_rewrites_port + self.alg_rewrites_eprt + self.alg_rewrites_227 + self.alg_rewrites_229
    }

    /// Adds `other`'s counters to these: several engines' counters as one (`ftpnat replay --workers N`,
    /// issue 18). Destructured whole, so a counter added to [`Metrics`] cannot be left out of the sum.
    pub fn add(&mut self, other: &Metrics) {
        let Metrics {
            packets_in,
            bytes_in,
            packets_out,
            bytes_out,
            drops,
            flows_created,
            flows_expired,
            flows_closed,
            flows_reclaimed,
            icmp_errors_sent,
            generated_suppressed,
            icmp_errors_translated,
            fragments_translated,
            fragments_created,
            alg_rewrites_port,
            alg_rewrites_eprt,
            alg_rewrites_227,
            alg_rewrites_229,
            alg_rewrites_zero_delta,
            alg_refused,
            alg_lines_held,
            alg_retransmits_rebuilt,
            alg_segments_split,
            alg_tls_opaque,
            pinholes_created,
            pinholes_used,
            pinholes_expired,
            pinholes_replaced,
            pinholes_refused_by_server,
            pinholes_closed_with_control,
            fragment_states_evicted,
            tcp_window_ignored,
            tcp_rst_ignored,
            alg_gaps,
            alg_gap_lines,
            nat64_to_v4,
            nat64_to_v6,
            alg_nat64_epsv,
            alg_nat64_227,
            alg_nat64_eprt,
            alg_nat64_answered,
            dropped,
        } = other.clone();
        for (a, b) in self.packets_in.iter_mut().zip(packets_in) {
            *a += b;
        }
        for (a, b) in self.bytes_in.iter_mut().zip(bytes_in) {
            *a += b;
        }
        for (a, b) in self.packets_out.iter_mut().zip(packets_out) {
            *a += b;
        }
        for (a, b) in self.bytes_out.iter_mut().zip(bytes_out) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        self.flows_created += flows_created;
        self.flows_expired += flows_expired;
        self.flows_closed += flows_closed;
        self.flows_reclaimed += flows_reclaimed;
        self.icmp_errors_sent += icmp_errors_sent;
        self.generated_suppressed += generated_suppressed;
        self.icmp_errors_translated += icmp_errors_translated;
        self.fragments_translated += fragments_translated;
        self.fragments_created += fragments_created;
        self.alg_rewrites_port += alg_rewrites_port;
        self.alg_rewrites_eprt += alg_rewrites_eprt;
        self.alg_rewrites_227 += alg_rewrites_227;
        self.alg_rewrites_229 += alg_rewrites_229;
        self.alg_rewrites_zero_delta += alg_rewrites_zero_delta;
        for (a, b) in self.alg_refused.iter_mut().zip(alg_refused) {
            *a += b;
        }
        self.alg_lines_held += alg_lines_held;
        self.alg_retransmits_rebuilt += alg_retransmits_rebuilt;
        self.alg_segments_split += alg_segments_split;
        self.alg_tls_opaque += alg_tls_opaque;
        self.pinholes_created += pinholes_created;
        self.pinholes_used += pinholes_used;
        self.pinholes_expired += pinholes_expired;
        self.pinholes_replaced += pinholes_replaced;
        self.pinholes_refused_by_server += pinholes_refused_by_server;
        self.pinholes_closed_with_control += pinholes_closed_with_control;
        self.fragment_states_evicted += fragment_states_evicted;
        self.tcp_window_ignored += tcp_window_ignored;
        self.tcp_rst_ignored += tcp_rst_ignored;
        self.alg_gaps += alg_gaps;
        self.alg_gap_lines += alg_gap_lines;
        self.nat64_to_v4 += nat64_to_v4;
        self.nat64_to_v6 += nat64_to_v6;
        self.alg_nat64_epsv += alg_nat64_epsv;
        self.alg_nat64_227 += alg_nat64_227;
        self.alg_nat64_eprt += alg_nat64_eprt;
        self.alg_nat64_answered += alg_nat64_answered;
        self.dropped += dropped;
    }

    /// Visits every counter with a stable dotted name (`drops.no_mapping`, `alg.rewrites.port`, ...).
    pub fn for_each(&self, mut f: impl FnMut(&str, u64)) {
        for (i, side) in ["lan", "wan"].iter().enumerate() {
            f(&format!("packets.in.{side}"), self.packets_in[i]);
            f(&format!("bytes.in.{side}"), self.bytes_in[i]);
            f(&format!("packets.out.{side}"), self.packets_out[i]);
            f(&format!("bytes.out.{side}"), self.bytes_out[i]);
        }
        for r in DropReason::ALL {
            f(&format!("drops.{}", r.name()), self.drops[r.index()]);
        }
        for r in RefusalReason::ALL {
            f(&format!("alg.refused.{}", r.name()), self.alg_refused[r.index()]);
        }
        let plain: [(&str, u64); 36] = [
            ("flows.created", self.flows_created),
            ("flows.expired", self.flows_expired),
            ("flows.closed", self.flows_closed),
            ("flows.reclaimed", self.flows_reclaimed),
            ("icmp.errors_sent", self.icmp_errors_sent),
            ("generated.suppressed", self.generated_suppressed),
            ("icmp.errors_translated", self.icmp_errors_translated),
            ("fragments.translated", self.fragments_translated),
            ("fragments.created", self.fragments_created),
            ("alg.rewrites.port", self.alg_rewrites_port),
            ("alg.rewrites.eprt", self.alg_rewrites_eprt),
            ("alg.rewrites.227", self.alg_rewrites_227),
            ("alg.rewrites.229", self.alg_rewrites_229),
            ("alg.rewrites.zero_delta", self.alg_rewrites_zero_delta),
            ("alg.lines_held", self.alg_lines_held),
            ("alg.retransmits_rebuilt", self.alg_retransmits_rebuilt),
            ("alg.segments_split", self.alg_segments_split),
            ("alg.tls_opaque", self.alg_tls_opaque),
            ("pinholes.created", self.pinholes_created),
            ("pinholes.used", self.pinholes_used),
            ("pinholes.expired", self.pinholes_expired),
            ("pinholes.replaced", self.pinholes_replaced),
            ("pinholes.refused_by_server", self.pinholes_refused_by_server),
            ("pinholes.closed_with_control", self.pinholes_closed_with_control),
            ("alg.rewrites.total", self.alg_rewrites()),
            ("fragments.states_evicted", self.fragment_states_evicted),
            ("tcp.window_ignored", self.tcp_window_ignored),
            ("tcp.rst_ignored", self.tcp_rst_ignored),
            ("alg.gaps", self.alg_gaps),
            ("alg.gap_lines", self.alg_gap_lines),
            ("nat64.to_v4", self.nat64_to_v4),
            ("nat64.to_v6", self.nat64_to_v6),
            ("alg.nat64.epsv", self.alg_nat64_epsv),
            ("alg.nat64.227", self.alg_nat64_227),
            ("alg.nat64.eprt", self.alg_nat64_eprt),
            ("alg.nat64.answered", self.alg_nat64_answered),
        ];
        for (k, v) in plain {
            f(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn add_sums_every_counter_and_keeps_the_drop_total() {
        let mut a = Metrics::default();
        a.drop(DropReason::ALL[0]);
        a.flows_created = 2;
        a.packets_in = [1, 2];
        let mut b = Metrics::default();
        b.drop(DropReason::ALL[1]);
        b.flows_created = 3;
        b.packets_in = [10, 20];
        a.add(&b);
        assert_eq!((a.flows_created, a.packets_in, a.total_drops()), (5, [11, 22], 2));
        let mut names = Vec::new();
        a.for_each(|k, v| names.push((k.to_string(), v)));
        let mut twice = a.clone();
        twice.add(&a);
        twice.for_each(|k, v| {
            let one = names.iter().find(|(n, _)| n == k).unwrap().1;
            assert_eq!(v, 2 * one, "{k}");
        });
    }

    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()), "duplicate {}", r.name());
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        let mut m = Metrics::default();
        m.drop(DropReason::NoMapping);
        m.refuse(RefusalReason::ThirdHost);
        let mut got = Vec::new();
        m.for_each(|k, v| got.push((k.to_string(), v)));
        assert!(got.contains(&("drops.no_mapping".into(), 1)));
        assert!(got.contains(&("alg.refused.third_host".into(), 1)));
    }
}
