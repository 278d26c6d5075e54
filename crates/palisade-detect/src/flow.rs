//! Flow records from IPFIX (RFC 7011) and NetFlow v9 (RFC 3954) datagrams.
//!
//! Parsing is `netflow_parser`'s (per-exporter template caches scoped by
//! observation domain / source id, bounded by its limits); this module bounds
//! what it keeps around it, accounts for sequence gaps per exporter and domain,
//! and turns data records into [`FlowRecord`]s with absolute times. Nothing here
//! reads a clock or a socket: the caller passes the datagram, its sender and the
//! time it arrived.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use netflow_parser::scoped_parser::AutoScopedParser;
use netflow_parser::variable_versions::field_value::FieldValue;
use netflow_parser::variable_versions::ipfix::lookup::IPFixField;
use netflow_parser::{NetflowPacket, NetflowParser};
use serde::Serialize;

/// One flow as an exporter saw it, in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// Who exported it.
    pub exporter: IpAddr,
    /// IPFIX observation domain / NetFlow v9 source id.
    pub domain: u32,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 when the protocol has none).
    pub src_port: u16,
    /// Destination port (for ICMP, type × 256 + code as exporters put it).
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP layer).
    pub octets: u64,
    /// First packet, Unix ms.
    pub start_ms: i64,
    /// Last packet, Unix ms.
    pub end_ms: i64,
    /// TCP flags seen (OR of all packets).
    pub tcp_flags: u8,
}

/// What the collector has seen and refused, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectorStats {
    /// Datagrams received.
    pub datagrams: u64,
    /// Flow records decoded.
    pub records: u64,
    /// Datagrams that were not IPFIX/NetFlow v9, or malformed (rest ignored).
    pub malformed: u64,
    /// Data sets whose template the exporter has not (yet) sent.
    pub unknown_template: u64,
    /// Records (IPFIX) or export packets (NetFlow v9) missing per the
    /// exporters' sequence numbers.
    pub sequence_lost: u64,
    /// Sequence numbers that went backwards (exporter restart or reordering).
    pub sequence_resets: u64,
    /// Data records lacking addresses (options data and the like), skipped.
    pub incomplete: u64,
    /// Datagrams from exporters not allowed, or beyond the exporter limit.
    pub refused: u64,
    /// Datagrams longer than the limit.
    pub oversized: u64,
}

/// Bounds on what the collector keeps.
#[derive(Debug, Clone, Copy)]
pub struct CollectorLimits {
    /// Exporters tracked (templates and sequence state) at once; more are refused.
    pub max_exporters: usize,
    /// Templates cached per exporter scope.
    pub max_templates: usize,
    /// Fields in one template.
    pub max_fields: usize,
    /// Datagram size.
    pub max_datagram: usize,
}

impl Default for CollectorLimits {
    fn default() -> Self {
        Self {
            max_exporters: 1024,
            max_templates: 256,
            max_fields: 128,
            max_datagram: 65_535,
        }
    }
}

/// Why the collector could not be built.
#[derive(Debug, thiserror::Error)]
#[error("flow parser configuration refused: {0}")]
pub struct CollectorError(String);

/// Turns datagrams into flow records; one per listening socket.
#[derive(Debug)]
pub struct Collector {
    parser: AutoScopedParser,
    limits: CollectorLimits,
    /// Next expected sequence number per (exporter, version, domain).
    sequence: HashMap<(SocketAddr, u16, u32), u32>,
    /// Exporters heard from.
    exporters: HashSet<SocketAddr>,
    stats: CollectorStats,
}

impl Collector {
    /// A collector with `limits`.
    pub fn new(limits: CollectorLimits) -> Result<Self, CollectorError> {
        let builder = NetflowParser::builder()
            .with_allowed_versions(&[9, 10])
            .with_cache_size(limits.max_templates)
            .with_max_field_count(limits.max_fields);
        let parser = AutoScopedParser::try_with_builder(builder)
            .and_then(|p| p.with_max_sources(limits.max_exporters))
            .map_err(|e| CollectorError(e.to_string()))?;
        Ok(Self {
            parser,
            limits,
            sequence: HashMap::new(),
            exporters: HashSet::new(),
            stats: CollectorStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &CollectorStats {
        &self.stats
    }

    /// Counts a datagram refused before parsing (an exporter not allowed).
    pub fn refuse(&mut self) {
        self.stats.datagrams += 1;
        self.stats.refused += 1;
    }

    /// Decodes one datagram from `from`, received at `now_ms`, appending its
    /// flow records to `out`. Bad input is counted, never an error.
    pub fn decode(
        &mut self,
        from: SocketAddr,
        data: &[u8],
        now_ms: i64,
        out: &mut Vec<FlowRecord>,
    ) {
        self.stats.datagrams += 1;
        if data.len() > self.limits.max_datagram {
            self.stats.oversized += 1;
            return;
        }
        if !self.exporters.contains(&from) {
            if self.exporters.len() >= self.limits.max_exporters {
                self.stats.refused += 1;
                return;
            }
            self.exporters.insert(from);
        }
        let result = self.parser.parse_from_source(from, data);
        if result.error.is_some() {
            self.stats.malformed += 1;
        }
        for packet in result.packets {
            match packet {
                NetflowPacket::IPFix(m) => {
                    let h = m.header;
                    let export_ms = i64::from(h.export_time) * 1000;
                    let before = out.len();
                    for set in m.flowsets {
                        use netflow_parser::variable_versions::ipfix::FlowSetBody as B;
                        match set.body {
                            B::Data(d) => {
                                for r in d.fields {
                                    self.push(
                                        out,
                                        from,
                                        h.observation_domain_id,
                                        export_ms,
                                        &Times::Absolute,
                                        r.iter().filter_map(ipfix_id),
                                    );
                                }
                            }
                            B::V9Data(d) => {
                                for r in d.fields {
                                    self.push(
                                        out,
                                        from,
                                        h.observation_domain_id,
                                        export_ms,
                                        &Times::Absolute,
                                        r.iter().map(|(f, v)| (u16::from(*f), v)),
                                    );
                                }
                            }
                            B::NoTemplate(_) => self.stats.unknown_template += 1,
                            _ => {}
                        }
                    }
                    let records = (out.len() - before) as u32;
                    self.sequence_check(
                        (from, 10, h.observation_domain_id),
                        h.sequence_number,
                        records,
                    );
                    let _ = now_ms;
                }
                NetflowPacket::V9(m) => {
                    let h = m.header;
                    let export_ms = i64::from(h.unix_secs) * 1000;
                    let times = Times::Uptime {
                        export_ms,
                        uptime_ms: i64::from(h.sys_up_time),
                    };
                    for set in m.flowsets {
                        use netflow_parser::variable_versions::v9::FlowSetBody as B;
                        match set.body {
                            B::Data(d) => {
                                for r in d.fields {
                                    self.push(
                                        out,
                                        from,
                                        h.source_id,
                                        export_ms,
                                        &times,
                                        r.iter().map(|(f, v)| (u16::from(*f), v)),
                                    );
                                }
                            }
                            B::NoTemplate(_) => self.stats.unknown_template += 1,
                            _ => {}
                        }
                    }
                    self.sequence_check((from, 9, h.source_id), h.sequence_number, 1);
                }
                _ => self.stats.malformed += 1,
            }
        }
    }

    /// IPFIX counts data records, NetFlow v9 export packets: `advance` is how
    /// many this message carried.
    fn sequence_check(&mut self, key: (SocketAddr, u16, u32), seq: u32, advance: u32) {
        if let Some(expected) = self.sequence.get(&key).copied() {
            let ahead = seq.wrapping_sub(expected);
            if ahead == 0 {
            } else if ahead < 1 << 31 {
                self.stats.sequence_lost += u64::from(ahead);
            } else {
                self.stats.sequence_resets += 1;
            }
        } else if self.sequence.len() >= self.limits.max_exporters * 4 {
            // Too many domains: forget them all rather than grow.
            self.sequence.clear();
        }
        self.sequence.insert(key, seq.wrapping_add(advance));
    }

    fn push<'a>(
        &mut self,
        out: &mut Vec<FlowRecord>,
        from: SocketAddr,
        domain: u32,
        export_ms: i64,
        times: &Times,
        fields: impl Iterator<Item = (u16, &'a FieldValue)>,
    ) {
        let mut f = Fields::default();
        for (id, v) in fields {
            f.set(id, v);
        }
        let (Some(src), Some(dst)) = (f.src, f.dst) else {
            self.stats.incomplete += 1;
            return;
        };
        let (start_ms, end_ms) = match times {
            Times::Absolute => (
                f.start_ms.or(f.start_s).unwrap_or(export_ms),
                f.end_ms.or(f.end_s).unwrap_or(export_ms),
            ),
            Times::Uptime {
                export_ms,
                uptime_ms,
            } => {
                let at = |up: Option<i64>| up.map_or(*export_ms, |u| export_ms - (uptime_ms - u));
                (at(f.first_up), at(f.last_up))
            }
        };
        self.stats.records += 1;
        out.push(FlowRecord {
            exporter: from.ip(),
            domain,
            src,
            dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            protocol: f.protocol,
            packets: f.packets,
            octets: f.octets,
            start_ms,
            end_ms: end_ms.max(start_ms),
            tcp_flags: f.tcp_flags,
        });
    }
}

enum Times {
    /// IPFIX: absolute timestamps in the record, else the export time.
    Absolute,
    /// NetFlow v9: first/last switched relative to the exporter's uptime.
    Uptime { export_ms: i64, uptime_ms: i64 },
}

/// The information elements used, by their IANA numbers.
fn ipfix_id((f, v): &(IPFixField, FieldValue)) -> Option<(u16, &FieldValue)> {
    use netflow_parser::variable_versions::ipfix::lookup::IANAIPFixField as I;
    let IPFixField::IANA(x) = f else { return None };
    let id = match x {
        I::OctetDeltaCount => 1,
        I::PacketDeltaCount => 2,
        I::ProtocolIdentifier => 4,
        I::TcpControlBits => 6,
        I::SourceTransportPort => 7,
        I::SourceIpv4address => 8,
        I::DestinationTransportPort => 11,
        I::DestinationIpv4address => 12,
        I::FlowEndSysUpTime => 21,
        I::FlowStartSysUpTime => 22,
        I::SourceIpv6address => 27,
        I::DestinationIpv6address => 28,
        I::IcmpTypeCodeIpv4 => 32,
        I::OctetTotalCount => 85,
        I::PacketTotalCount => 86,
        I::IcmpTypeCodeIpv6 => 139,
        I::FlowStartSeconds => 150,
        I::FlowEndSeconds => 151,
        I::FlowStartMilliseconds => 152,
        I::FlowEndMilliseconds => 153,
        _ => return None,
    };
    Some((id, v))
}

#[derive(Default)]
struct Fields {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    packets: u64,
    octets: u64,
    tcp_flags: u8,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    start_s: Option<i64>,
    end_s: Option<i64>,
    first_up: Option<i64>,
    last_up: Option<i64>,
}

impl Fields {
    /// Information element ids shared by IPFIX and NetFlow v9 (RFC 7012 kept
    /// v9's numbering).
    fn set(&mut self, id: u16, v: &FieldValue) {
        let n = || number(v);
        match id {
            1 | 85 => self.octets = self.octets.max(n().unwrap_or(0)),
            2 | 86 => self.packets = self.packets.max(n().unwrap_or(0)),
            4 => self.protocol = n().unwrap_or(0).min(255) as u8,
            6 => self.tcp_flags = (n().unwrap_or(0) & 0xff) as u8,
            7 => self.src_port = n().unwrap_or(0).min(65_535) as u16,
            11 => self.dst_port = n().unwrap_or(0).min(65_535) as u16,
            32 | 139 if self.dst_port == 0 => self.dst_port = n().unwrap_or(0).min(65_535) as u16,
            8 | 27 => self.src = addr(v),
            12 | 28 => self.dst = addr(v),
            21 => self.last_up = n().map(clamp),
            22 => self.first_up = n().map(clamp),
            150 => self.start_s = seconds_ms(v).map(clamp),
            151 => self.end_s = seconds_ms(v).map(clamp),
            152 => self.start_ms = n().map(clamp),
            153 => self.end_ms = n().map(clamp),
            _ => {}
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX / 2).min(i64::MAX / 2)
}

/// A number; durations (the time stamps) in milliseconds.
fn number(v: &FieldValue) -> Option<u64> {
    match v {
        FieldValue::ProtocolType(p) => Some(u64::from(u8::from(*p))),
        FieldValue::TcpControlBits(bits, _) => Some(u64::from(u16::from(*bits))),
        other => other.as_u64(),
    }
}

/// Seconds as milliseconds (a duration is already in milliseconds).
fn seconds_ms(v: &FieldValue) -> Option<u64> {
    match v {
        FieldValue::Duration(_) => v.as_u64(),
        _ => number(v).map(|s| s.saturating_mul(1000)),
    }
}

fn addr(v: &FieldValue) -> Option<IpAddr> {
    match v {
        FieldValue::Ip4Addr(a) => Some(IpAddr::V4(*a)),
        FieldValue::Ip6Addr(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// IPFIX template 256 as [`encode_ipfix`] writes it: IPv4 addresses, ports,
/// protocol, TCP flags, packets, octets, start and end in milliseconds.
const TEMPLATE_V4: [(u16, u16); 10] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (2, 8),
    (1, 8),
    (152, 8),
    (153, 8),
];

/// Writes one IPFIX message carrying IPv4 `records` (and, with `template`, the
/// template first): what softflowd sends, for tests, benchmarks and generators.
/// Records with IPv6 addresses are skipped.
pub fn encode_ipfix(
    export_s: u32,
    sequence: u32,
    domain: u32,
    template: bool,
    records: &[FlowRecord],
) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    if template {
        let len = 4 + 4 + TEMPLATE_V4.len() * 4;
        m.extend_from_slice(&2u16.to_be_bytes());
        m.extend_from_slice(&(len as u16).to_be_bytes());
        m.extend_from_slice(&256u16.to_be_bytes());
        m.extend_from_slice(&(TEMPLATE_V4.len() as u16).to_be_bytes());
        for (id, l) in TEMPLATE_V4 {
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&l.to_be_bytes());
        }
    }
    let v4: Vec<_> = records
        .iter()
        .filter_map(|r| match (r.src, r.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some((s, d, r)),
            _ => None,
        })
        .collect();
    if !v4.is_empty() {
        m.extend_from_slice(&256u16.to_be_bytes());
        m.extend_from_slice(&((4 + v4.len() * 46) as u16).to_be_bytes());
        for (s, d, r) in v4 {
            m.extend_from_slice(&s.octets());
            m.extend_from_slice(&d.octets());
            m.extend_from_slice(&r.src_port.to_be_bytes());
            m.extend_from_slice(&r.dst_port.to_be_bytes());
            m.push(r.protocol);
            m.push(r.tcp_flags);
            m.extend_from_slice(&r.packets.to_be_bytes());
            m.extend_from_slice(&r.octets.to_be_bytes());
            m.extend_from_slice(&(r.start_ms.max(0) as u64).to_be_bytes());
            m.extend_from_slice(&(r.end_ms.max(0) as u64).to_be_bytes());
        }
    }
    let len = m.len() as u16;
    m[0..2].copy_from_slice(&10u16.to_be_bytes());
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m[4..8].copy_from_slice(&export_s.to_be_bytes());
    m[8..12].copy_from_slice(&sequence.to_be_bytes());
    m[12..16].copy_from_slice(&domain.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn rec(i: u8) -> FlowRecord {
        FlowRecord {
            exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
            domain: 7,
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            src_port: 40_000 + u16::from(i),
            dst_port: 443,
            protocol: 6,
            packets: 10,
            octets: 1_000 + u64::from(i),
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_001_000,
            tcp_flags: 0x1b,
        }
    }

    fn from() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn ipfix_template_then_data_gives_records() {
        let mut c = Collector::new(CollectorLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        let m = encode_ipfix(1_700_000_002, 0, 7, true, &[rec(1), rec(2)]);
        c.decode(from(), &m, 0, &mut out);
        assert_eq!(out, vec![rec(1), rec(2)]);
        // Data alone, later: the template is remembered for this exporter.
        let m = encode_ipfix(1_700_000_003, 2, 7, false, &[rec(3)]);
        c.decode(from(), &m, 0, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(c.stats().sequence_lost, 0);
        assert_eq!(c.stats().records, 3);
    }

    #[test]
    fn data_before_template_and_from_another_exporter_is_counted_not_guessed() {
        let mut c = Collector::new(CollectorLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        c.decode(
            from(),
            &encode_ipfix(1, 0, 7, false, &[rec(1)]),
            0,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(c.stats().unknown_template, 1);
        c.decode(from(), &encode_ipfix(1, 1, 7, true, &[rec(1)]), 0, &mut out);
        assert_eq!(out.len(), 1);
        // Another exporter's data with the same template id: unknown there.
        let other: SocketAddr = "127.0.0.2:5000".parse().unwrap_or_else(|_| unreachable!());
        c.decode(other, &encode_ipfix(1, 0, 7, false, &[rec(1)]), 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(c.stats().unknown_template, 2);
    }

    #[test]
    fn sequence_gaps_are_counted_in_records() {
        let mut c = Collector::new(CollectorLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        c.decode(
            from(),
            &encode_ipfix(1, 100, 7, true, &[rec(1), rec(2)]),
            0,
            &mut out,
        );
        // Expected 102; 5 records went missing.
        c.decode(
            from(),
            &encode_ipfix(1, 107, 7, false, &[rec(3)]),
            0,
            &mut out,
        );
        assert_eq!(c.stats().sequence_lost, 5);
        // An exporter restart goes backwards: a reset, not a loss of 4 billion.
        c.decode(
            from(),
            &encode_ipfix(1, 0, 7, false, &[rec(3)]),
            0,
            &mut out,
        );
        assert_eq!(c.stats().sequence_lost, 5);
        assert_eq!(c.stats().sequence_resets, 1);
    }

    #[test]
    fn netflow_v9_uses_uptime_relative_times() {
        // Header: version 9, count 2, uptime 10 000 ms, unix 1 700 000 000 s, seq 5, source 3.
        let mut m = Vec::new();
        for v in [9u16, 2] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10_000u32, 1_700_000_000, 5, 3] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        // Template flowset 0: template 300 with src, dst, ports, proto, bytes, pkts, first, last.
        let fields: [(u16, u16); 9] = [
            (8, 4),
            (12, 4),
            (7, 2),
            (11, 2),
            (4, 1),
            (1, 4),
            (2, 4),
            (22, 4),
            (21, 4),
        ];
        m.extend_from_slice(&0u16.to_be_bytes());
        m.extend_from_slice(&((8 + fields.len() * 4) as u16).to_be_bytes());
        m.extend_from_slice(&300u16.to_be_bytes());
        m.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (id, l) in fields {
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&l.to_be_bytes());
        }
        m.extend_from_slice(&300u16.to_be_bytes());
        m.extend_from_slice(&(4u16 + 29 + 3).to_be_bytes());
        m.extend_from_slice(&[10, 0, 0, 9, 198, 51, 100, 7]);
        m.extend_from_slice(&5353u16.to_be_bytes());
        m.extend_from_slice(&53u16.to_be_bytes());
        m.push(17);
        for v in [640u32, 8, 4_000, 9_000] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m.extend_from_slice(&[0, 0, 0]);
        let mut c = Collector::new(CollectorLimits::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        c.decode(from(), &m, 0, &mut out);
        assert_eq!(out.len(), 1, "{:?}", c.stats());
        let r = &out[0];
        assert_eq!(
            (r.src.to_string().as_str(), r.dst_port, r.protocol),
            ("10.0.0.9", 53, 17)
        );
        assert_eq!((r.octets, r.packets, r.domain), (640, 8, 3));
        assert_eq!(r.start_ms, 1_700_000_000_000 - 6_000);
        assert_eq!(r.end_ms, 1_700_000_000_000 - 1_000);
    }

    #[test]
    fn garbage_and_exporter_floods_are_bounded_and_counted() {
        let limits = CollectorLimits {
            max_exporters: 4,
            ..CollectorLimits::default()
        };
        let mut c = Collector::new(limits).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        for i in 0..10u16 {
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 6000 + i);
            c.decode(a, &encode_ipfix(1, 0, 1, true, &[rec(1)]), 0, &mut out);
        }
        assert_eq!(out.len(), 4);
        assert_eq!(c.stats().refused, 6);
        // Zero-length set, truncated header, template with a zero-length field.
        let mut m = encode_ipfix(1, 0, 1, true, &[rec(1)]);
        m[16 + 4 + 4 + 2..16 + 4 + 4 + 4].copy_from_slice(&0u16.to_be_bytes());
        let known = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 6000);
        c.decode(known, &m, 0, &mut out);
        c.decode(known, &[0, 10, 0], 0, &mut out);
        c.decode(known, &[0, 5, 0, 0], 0, &mut out);
        assert!(c.stats().malformed >= 2, "{:?}", c.stats());
    }
}
