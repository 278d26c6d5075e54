//! The detectors. Each is a pure function of what was observed and the time,
//! tested on its own; [`Engine`] keeps the bounded per-device state they look
//! at and turns observations into [`Finding`]s. Alerting (de-duplication, rate
//! limits, lifecycle, delivery) is the server's job.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::flow::FlowRecord;
use crate::telemetry::{Listener, SecurityMetrics};
use crate::verdict::Verdict;

/// Which detector spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// A flow to a destination outside the device's policy.
    PolicyViolation,
    /// One port, many hosts.
    ScanHorizontal,
    /// One host, many ports.
    ScanVertical,
    /// Bytes or packets far above the device's own baseline.
    VolumeSpike,
    /// Regular connections to a destination the device did not use before.
    Beaconing,
    /// A burst of failed logins (device, gateway or EST).
    FailedLogins,
    /// Firmware changed without a release assigned to the device.
    FirmwareUnassigned,
    /// The same identity in two places, or an enrolment replayed.
    ClonedIdentity,
    /// A listening port the device did not have before.
    NewListeningPort,
    /// A device unlike the rest of its model's fleet.
    FleetOutlier,
    /// An address at a site that maps to no enrolled device (seen in flows,
    /// the edge's neighbour table or its DHCP leases); raised once per address.
    UnmanagedDevice,
    /// Devices run a release with a component that a vulnerability advisory
    /// names (raised when the advisory is imported or the release accepted).
    VulnerableFirmware,
    /// A model's support end is near (its support-end policy's notice).
    SupportEnding,
}

impl Detector {
    /// Every detector.
    pub const ALL: [Detector; 13] = [
        Detector::PolicyViolation,
        Detector::ScanHorizontal,
        Detector::ScanVertical,
        Detector::VolumeSpike,
        Detector::Beaconing,
        Detector::FailedLogins,
        Detector::FirmwareUnassigned,
        Detector::ClonedIdentity,
        Detector::NewListeningPort,
        Detector::FleetOutlier,
        Detector::UnmanagedDevice,
        Detector::VulnerableFirmware,
        Detector::SupportEnding,
    ];

    /// Its name in the API, alerts and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::PolicyViolation => "policy_violation",
            Detector::ScanHorizontal => "scan_horizontal",
            Detector::ScanVertical => "scan_vertical",
            Detector::VolumeSpike => "volume_spike",
            Detector::Beaconing => "beaconing",
            Detector::FailedLogins => "failed_logins",
            Detector::FirmwareUnassigned => "firmware_unassigned",
            Detector::ClonedIdentity => "cloned_identity",
            Detector::NewListeningPort => "new_listening_port",
            Detector::FleetOutlier => "fleet_outlier",
            Detector::UnmanagedDevice => "unmanaged_device",
            Detector::VulnerableFirmware => "vulnerable_firmware",
            Detector::SupportEnding => "support_ending",
        }
    }

    /// Parses [`Detector::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// How bad a finding of this kind is by default.
    pub fn severity(self) -> Severity {
        match self {
            Detector::ClonedIdentity | Detector::FirmwareUnassigned => Severity::Critical,
            Detector::PolicyViolation
            | Detector::ScanHorizontal
            | Detector::ScanVertical
            | Detector::VolumeSpike
            | Detector::Beaconing
            | Detector::VulnerableFirmware => Severity::High,
            Detector::FailedLogins
            | Detector::NewListeningPort
            | Detector::UnmanagedDevice
            | Detector::SupportEnding => Severity::Medium,
            Detector::FleetOutlier => Severity::Low,
        }
    }
}

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Look today.
    Medium,
    /// Look now.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// The RFC 5424 severity (critical 2, error 3, warning 4, notice 5).
    pub fn syslog(self) -> u8 {
        match self {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Medium => 4,
            Severity::Low => 5,
        }
    }
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The detector.
    pub detector: Detector,
    /// How bad.
    pub severity: Severity,
    /// The device it concerns, when one is known.
    pub device: Option<String>,
    /// The network peer it concerns (an address), when no device is known.
    pub peer: Option<String>,
    /// Findings with the same key are the same alert (de-duplication).
    pub key: String,
    /// One line for people.
    pub summary: String,
    /// The facts that triggered it.
    pub evidence: Value,
    /// When, Unix ms (the time of the triggering observation).
    pub at_ms: i64,
}

/// Where a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPlace {
    /// On the device (its auth log, via telemetry).
    Device,
    /// At the MQTT gateway (refused certificates, identities not allowed).
    Gateway,
    /// At EST (refused enrolments).
    Est,
    /// At the web console's sign-in (people).
    Console,
}

impl AuthPlace {
    fn as_str(self) -> &'static str {
        match self {
            AuthPlace::Device => "device",
            AuthPlace::Gateway => "gateway",
            AuthPlace::Est => "est",
            AuthPlace::Console => "console",
        }
    }
}

/// Something the server observed.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A flow the device sent (`outbound`) or received, with the policy's verdict.
    Flow {
        /// The device.
        device: String,
        /// Its model.
        model: Option<String>,
        /// Whether the device is the flow's source.
        outbound: bool,
        /// The flow.
        flow: FlowRecord,
        /// The policy's word on it (outbound only).
        verdict: Verdict,
    },
    /// A telemetry message with security metrics.
    Telemetry {
        /// The device.
        device: String,
        /// Its model.
        model: Option<String>,
        /// When it arrived.
        at_ms: i64,
        /// The metrics.
        metrics: SecurityMetrics,
        /// Image hashes (hex SHA-256) of releases assigned to or installed on
        /// the device.
        assigned: Vec<String>,
    },
    /// A failed login or refused credential.
    AuthFailure {
        /// The device it claimed to be, if known.
        device: Option<String>,
        /// Where it came from.
        peer: Option<IpAddr>,
        /// Where it failed.
        place: AuthPlace,
        /// Why.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// A device's session came up at the gateway.
    Connected {
        /// The device.
        device: String,
        /// Its source address.
        peer: IpAddr,
        /// Whether it replaced a live session of the same device.
        takeover: Option<IpAddr>,
        /// When.
        at_ms: i64,
    },
    /// An enrolment that repeated one already used (a copied birth identity or
    /// a replayed request).
    EnrolmentReplay {
        /// The device.
        device: String,
        /// From where.
        peer: Option<IpAddr>,
        /// What was replayed.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// A failed attestation: the measured firmware is not one the server knows.
    AttestationFailed {
        /// The device.
        device: String,
        /// Why.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// An address at a site that maps to no enrolled device, seen for the
    /// first time.
    UnmanagedHost {
        /// The site.
        site: String,
        /// The address.
        address: IpAddr,
        /// Its link-layer address, if known.
        mac: Option<String>,
        /// Where it was seen: `flows`, `neighbours` or `leases`.
        source: String,
        /// When.
        at_ms: i64,
    },
}

/// Thresholds. The defaults are what the evaluation harness measured
/// (BENCHMARKS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Window for scans and login bursts, ms.
    pub window_ms: i64,
    /// Distinct hosts on one port that make a horizontal scan.
    pub scan_hosts: usize,
    /// Distinct ports on one host that make a vertical scan.
    pub scan_ports: usize,
    /// Volume bucket, ms.
    pub bucket_ms: i64,
    /// Buckets of history kept for the baseline.
    pub history: usize,
    /// Buckets needed before the baseline is trusted.
    pub warmup: usize,
    /// Robust z (median + k × 1.4826 × MAD) that makes a spike.
    pub volume_k: f64,
    /// A spike must also exceed this multiple of the device's busiest bucket
    /// of the last `peak_days` (and, while the device is less than a day
    /// old, of its model's typical peak): a camera that uploads clips is
    /// not spiking when it uploads one.
    pub volume_peak_factor: f64,
    /// Days of busiest buckets remembered.
    pub peak_days: usize,
    /// A spike must also exceed this many bytes in a bucket...
    pub volume_floor_bytes: u64,
    /// ... or this many packets.
    pub volume_floor_packets: u64,
    /// After a device is first seen, its destinations and listening ports are
    /// learned for this long, ms (nothing is "new" meanwhile).
    pub learn_ms: i64,
    /// After a device starts running an assigned release, its listening
    /// ports are learned again for this long, ms (an update may add a
    /// service).
    pub relearn_ms: i64,
    /// Connections to one new destination that can make a beacon.
    pub beacon_count: usize,
    /// Largest coefficient of variation of the intervals of a beacon.
    pub beacon_cv: f64,
    /// Shortest beacon period, ms.
    pub beacon_min_ms: i64,
    /// Failed logins in a window that make a burst.
    pub login_burst: usize,
    /// Session takeovers between different addresses in a window that make a
    /// cloned identity.
    pub clone_takeovers: usize,
    /// Robust z of a feature against the model's fleet that makes an outlier.
    pub outlier_z: f64,
    /// Fewest devices of a model to compare against.
    pub outlier_min_fleet: usize,
    /// Consecutive comparisons a device must stand out in (one busy minute
    /// is not "unlike its fleet").
    pub outlier_persist: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            scan_hosts: 16,
            scan_ports: 16,
            bucket_ms: 10_000,
            history: 360,
            warmup: 6,
            volume_k: 10.0,
            volume_peak_factor: 3.0,
            peak_days: 7,
            volume_floor_bytes: 4 << 20,
            volume_floor_packets: 5_000,
            learn_ms: 3_600_000,
            relearn_ms: 600_000,
            beacon_count: 6,
            beacon_cv: 0.15,
            beacon_min_ms: 1_000,
            login_burst: 8,
            clone_takeovers: 2,
            outlier_z: 12.0,
            outlier_min_fleet: 5,
            outlier_persist: 3,
        }
    }
}

// ---------------------------------------------------------------- pure pieces

/// A flow as the scan detector keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLite {
    /// Start, ms.
    pub at_ms: i64,
    /// Destination.
    pub dst: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: u8,
}

/// The flows of a sliding window with, kept up to date as flows enter and
/// leave, the distinct hosts per (protocol, port) — a horizontal scan — and
/// the distinct (protocol, port) per host — a vertical scan. O(1) per flow.
#[derive(Debug, Default)]
pub struct ScanWindow {
    flows: VecDeque<FlowLite>,
    by_port: HashMap<(u8, u16), HashMap<IpAddr, u32>>,
    by_host: HashMap<IpAddr, HashMap<(u8, u16), u32>>,
}

impl ScanWindow {
    /// Adds a flow; drops those older than `since` (and the oldest beyond
    /// `max`). Returns (distinct hosts on its port, distinct ports on its host).
    pub fn add(&mut self, f: FlowLite, since: i64, max: usize) -> (usize, usize) {
        while self.flows.len() >= max || self.flows.front().is_some_and(|x| x.at_ms < since) {
            let Some(old) = self.flows.pop_front() else {
                break;
            };
            let key = (old.protocol, old.port);
            if let Some(hosts) = self.by_port.get_mut(&key) {
                dec(hosts, &old.dst);
                if hosts.is_empty() {
                    self.by_port.remove(&key);
                }
            }
            if let Some(ports) = self.by_host.get_mut(&old.dst) {
                dec(ports, &key);
                if ports.is_empty() {
                    self.by_host.remove(&old.dst);
                }
            }
        }
        let key = (f.protocol, f.port);
        *self
            .by_port
            .entry(key)
            .or_default()
            .entry(f.dst)
            .or_default() += 1;
        *self
            .by_host
            .entry(f.dst)
            .or_default()
            .entry(key)
            .or_default() += 1;
        self.flows.push_back(f);
        (
            self.by_port.get(&key).map_or(0, HashMap::len),
            self.by_host.get(&f.dst).map_or(0, HashMap::len),
        )
    }
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

/// The median and the median absolute deviation of `xs`.
pub fn median_mad(xs: &[u64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    // Selection, not sorting: this runs each time a device's bucket closes.
    let med = |v: &mut Vec<f64>| {
        let n = v.len();
        let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
        let upper = *mid;
        if n % 2 == 1 {
            upper
        } else {
            let lower = below
                .iter()
                .copied()
                .max_by(f64::total_cmp)
                .unwrap_or(upper);
            (lower + upper) / 2.0
        }
    };
    let mut v: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    let m = med(&mut v);
    let mut d: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    Some((m, med(&mut d)))
}

/// The level above which a bucket is a spike: median + k × 1.4826 × MAD, and
/// never below `floor` nor below 4 × the median (quiet devices have a MAD of 0).
pub fn spike_threshold(history: &[u64], k: f64, floor: u64) -> Option<f64> {
    let (m, mad) = median_mad(history)?;
    Some((m + k * 1.4826 * mad).max(4.0 * m).max(floor as f64))
}

/// Whether connection start times look like a beacon: at least `count` of
/// them, intervals with a coefficient of variation under `cv` and a mean
/// period of at least `min_ms`. Returns (period ms, cv).
pub fn beacon(times: &[i64], count: usize, cv: f64, min_ms: i64) -> Option<(f64, f64)> {
    if times.len() < count.max(3) {
        return None;
    }
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    if mean < min_ms as f64 {
        return None;
    }
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    let c = var.sqrt() / mean;
    (c <= cv).then_some((mean, c))
}

/// How many events of `times` fall in the window ending at `now`.
pub fn in_window(times: &VecDeque<i64>, now: i64, window: i64) -> usize {
    times
        .iter()
        .filter(|&&t| t > now - window && t <= now)
        .count()
}

/// Firmware that changed without a release: the new hash differs from the
/// last one reported and is not one of the `assigned` images.
pub fn unassigned_firmware(previous: Option<&str>, now: &str, assigned: &[String]) -> bool {
    previous.is_some_and(|p| !p.eq_ignore_ascii_case(now))
        && !assigned.iter().any(|a| a.eq_ignore_ascii_case(now))
}

/// Devices whose feature is far from their fleet's: for each feature, robust
/// z = (x − median) / (1.4826 × MAD), with the spread floored at 1 % of the
/// median and at the feature's `floors` entry (1 where none), so a uniform
/// or mostly silent fleet does not make every difference infinite. Returns
/// (member index, feature index, z).
pub fn fleet_outliers(
    members: &[Vec<f64>],
    z: f64,
    min_fleet: usize,
    floors: &[f64],
) -> Vec<(usize, usize, f64)> {
    let mut out = Vec::new();
    if members.len() < min_fleet.max(3) {
        return out;
    }
    let features = members.iter().map(Vec::len).min().unwrap_or(0);
    for f in 0..features {
        let xs: Vec<f64> = members.iter().map(|m| m[f]).collect();
        let mut s = xs.clone();
        s.sort_by(f64::total_cmp);
        let med = s[s.len() / 2];
        let mut d: Vec<f64> = xs.iter().map(|x| (x - med).abs()).collect();
        d.sort_by(f64::total_cmp);
        let floor = floors.get(f).copied().unwrap_or(1.0).max(1.0);
        let mad = (1.4826 * d[d.len() / 2]).max(med.abs() * 0.01).max(floor);
        for (i, x) in xs.iter().enumerate() {
            let zi = (x - med) / mad;
            if zi > z {
                out.push((i, f, zi));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- engine

const DAY_MS: i64 = 86_400_000;

/// The fleet features: (key, what it counts, least spread). A minute's
/// traffic of a mostly silent fleet has a MAD of 0; the least spread (64 KiB
/// a minute) keeps "sent anything at all" from standing out.
const FEATURES: [(&str, &str, f64); 3] = [
    ("destinations", "destinations", 1.0),
    ("bytes_out", "bytes out", 65_536.0),
    ("bytes_in", "bytes in", 65_536.0),
];

/// Most flows kept per device for scan detection.
const MAX_FLOWS: usize = 4096;
/// Most destinations learned per device.
const MAX_KNOWN: usize = 4096;
/// Most candidate beacon destinations tracked per device.
const MAX_BEACONS: usize = 256;
/// Most failure sources (devices or peers) tracked for login bursts.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Default)]
struct DeviceState {
    first_ms: i64,
    model: Option<String>,
    scans: ScanWindow,
    /// Closed volume buckets: (bytes, packets).
    history: VecDeque<(u64, u64)>,
    /// Spike thresholds and medians (bytes, packets) from `history`, computed
    /// when the open bucket first passes a floor (they are never below it,
    /// so most buckets never need them), until the next bucket closes.
    thresholds: Option<((f64, f64), (f64, f64))>,
    /// The open bucket: start, bytes, packets.
    bucket: (i64, u64, u64),
    /// The bucket a spike was last reported in.
    spiked: Option<i64>,
    /// Busiest (bytes, packets) bucket of each past day, and of this one
    /// (start, bytes, packets). A spike counts too: while its alert is open
    /// a repeat at the same level is no news, a larger one is.
    peaks: VecDeque<(u64, u64)>,
    day: (i64, u64, u64),
    /// The busiest bucket over `peaks` and `day`.
    peak: (u64, u64),
    /// Listening ports are learned until then (after an update).
    relearn_until: i64,
    known: HashSet<(IpAddr, u16, u8)>,
    beacons: HashMap<(IpAddr, u16, u8), (u16, VecDeque<i64>)>,
    listening: BTreeSet<Listener>,
    failed_logins: Option<u64>,
    firmware: Option<String>,
    takeovers: VecDeque<(i64, IpAddr, IpAddr)>,
    /// Fleet features over the last window: destinations, bytes out, bytes
    /// in ([`FEATURES`]).
    window_dests: HashSet<IpAddr>,
    window_bytes: u64,
    window_bytes_in: u64,
}

/// The detectors with their state. Feed it observations in time order.
#[derive(Debug, Default)]
pub struct Engine {
    cfg: Config,
    devices: HashMap<String, DeviceState>,
    failures: HashMap<(String, AuthPlace), VecDeque<i64>>,
    last_fleet_ms: i64,
    /// Each model's typical (median) peak, for devices with little history.
    model_peaks: HashMap<String, (u64, u64)>,
    /// Consecutive fleet comparisons each feature of a device stood out in
    /// (devices with a count only).
    streaks: HashMap<String, [u32; 3]>,
    /// Whether the caller does the fleet comparison.
    shared_fleet: bool,
    /// The window closed last (its end and features), when the caller compares.
    closed: Option<(i64, Vec<WindowFeatures>)>,
}

impl Engine {
    /// An engine with `cfg`.
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    fn device(&mut self, id: &str, model: Option<&String>, now: i64) -> &mut DeviceState {
        Self::device_in(&mut self.devices, id, model, now)
    }

    /// [`Self::device`] on the map alone, so the caller may still read the
    /// engine's other fields.
    fn device_in<'a>(
        devices: &'a mut HashMap<String, DeviceState>,
        id: &str,
        model: Option<&String>,
        now: i64,
    ) -> &'a mut DeviceState {
        // The id and the model are copied only when new (hot path).
        if !devices.contains_key(id) {
            let fresh = DeviceState {
                first_ms: now,
                bucket: (now, 0, 0),
                day: (now, 0, 0),
                ..DeviceState::default()
            };
            devices.insert(id.to_owned(), fresh);
        }
        let Some(d) = devices.get_mut(id) else {
            unreachable!("inserted above")
        };
        if let Some(m) = model
            && d.model.as_ref() != Some(m)
        {
            d.model = Some(m.clone());
        }
        d
    }

    /// Takes one observation; appends what it makes the detectors find.
    pub fn observe(&mut self, o: &Observation, out: &mut Vec<Finding>) {
        match o {
            Observation::Flow {
                device,
                model,
                outbound,
                flow,
                verdict,
            } => self.flow(device, model.as_ref(), *outbound, flow, *verdict, out),
            Observation::Telemetry {
                device,
                model,
                at_ms,
                metrics,
                assigned,
            } => self.telemetry(device, model.as_ref(), *at_ms, metrics, assigned, out),
            Observation::AuthFailure {
                device,
                peer,
                place,
                reason,
                at_ms,
            } => {
                let who = device
                    .clone()
                    .or_else(|| peer.map(|p| p.to_string()))
                    .unwrap_or_else(|| "unknown".into());
                self.login_failures(device.as_deref(), &who, *place, *at_ms, 1, reason, out);
            }
            Observation::Connected {
                device,
                peer,
                takeover,
                at_ms,
            } => {
                let cfg = self.cfg.clone();
                let d = self.device(device, None, *at_ms);
                if let Some(old) = takeover
                    && old != peer
                {
                    d.takeovers.push_back((*at_ms, *old, *peer));
                }
                while d
                    .takeovers
                    .front()
                    .is_some_and(|t| t.0 <= at_ms - 2 * cfg.window_ms)
                {
                    d.takeovers.pop_front();
                }
                if d.takeovers.len() >= cfg.clone_takeovers {
                    let places: BTreeSet<String> = d
                        .takeovers
                        .iter()
                        .flat_map(|(_, a, b)| [a.to_string(), b.to_string()])
                        .collect();
                    out.push(finding(
                        Detector::ClonedIdentity,
                        device,
                        format!("{device}:sessions"),
                        format!(
                            "{device} connected from {} places in turn ({} session takeovers in {} s)",
                            places.len(),
                            d.takeovers.len(),
                            cfg.window_ms * 2 / 1000
                        ),
                        json!({ "addresses": places, "takeovers": d.takeovers.len() }),
                        *at_ms,
                    ));
                    d.takeovers.clear();
                }
            }
            Observation::EnrolmentReplay {
                device,
                peer,
                reason,
                at_ms,
            } => out.push(finding(
                Detector::ClonedIdentity,
                device,
                format!("{device}:enrolment"),
                format!("{device}: enrolment replayed ({reason})"),
                json!({ "peer": peer.map(|p| p.to_string()), "reason": reason }),
                *at_ms,
            )),
            Observation::UnmanagedHost {
                site,
                address,
                mac,
                source,
                at_ms,
            } => out.push(Finding {
                detector: Detector::UnmanagedDevice,
                severity: Detector::UnmanagedDevice.severity(),
                device: None,
                peer: Some(address.to_string()),
                key: format!("{}:{site}:{address}", Detector::UnmanagedDevice.as_str()),
                summary: format!(
                    "{address} at site {site} is no enrolled device{} (seen in {source}): adopt or block it",
                    mac.as_deref().map(|m| format!(", MAC {m}")).unwrap_or_default()
                ),
                evidence: json!({ "site": site, "address": address, "mac": mac, "source": source }),
                at_ms: *at_ms,
            }),
            Observation::AttestationFailed {
                device,
                reason,
                at_ms,
            } => out.push(finding(
                Detector::FirmwareUnassigned,
                device,
                format!("{device}:attestation"),
                format!("{device}: attestation failed ({reason})"),
                json!({ "source": "attestation", "reason": reason }),
                *at_ms,
            )),
        }
    }

    fn flow(
        &mut self,
        device: &str,
        model: Option<&String>,
        outbound: bool,
        f: &FlowRecord,
        verdict: Verdict,
        out: &mut Vec<Finding>,
    ) {
        let cfg = self.cfg.clone();
        let now = f.start_ms;
        let d = Self::device_in(&mut self.devices, device, model, now);
        // Volume (both directions: floods come in too, exfiltration goes
        // out), except with the control plane (firmware downloads).
        roll_buckets(d, f.end_ms.max(now), &cfg);
        let counted = verdict != Verdict::ControlPlane;
        if counted {
            d.bucket.1 = d.bucket.1.saturating_add(f.octets);
            d.bucket.2 = d.bucket.2.saturating_add(f.packets);
        }
        let floors = d.bucket.1 > cfg.volume_floor_bytes || d.bucket.2 > cfg.volume_floor_packets;
        if counted && floors && d.thresholds.is_none() {
            d.thresholds = thresholds(d, &cfg);
        }
        if counted
            && floors
            && d.history.len() >= cfg.warmup
            && d.spiked != Some(d.bucket.0)
            && let Some(((tb, mb), (tp, mp))) = d.thresholds
        {
            // A device less than a day old has not shown its busiest yet:
            // its model's typical peak stands in.
            let peak = match d.model.as_ref().and_then(|m| self.model_peaks.get(m)) {
                Some(mp) if now - d.first_ms < DAY_MS => (d.peak.0.max(mp.0), d.peak.1.max(mp.1)),
                _ => d.peak,
            };
            let tb = tb.max(cfg.volume_peak_factor * peak.0 as f64);
            let tp = tp.max(cfg.volume_peak_factor * peak.1 as f64);
            let over_b = d.bucket.1 as f64 > tb;
            let over_p = d.bucket.2 as f64 > tp;
            if over_b || over_p {
                let (what, value, base) = if over_b {
                    ("bytes", d.bucket.1, Some(mb))
                } else {
                    ("packets", d.bucket.2, Some(mp))
                };
                out.push(finding(
                    Detector::VolumeSpike,
                    device,
                    format!("{device}:volume"),
                    format!(
                        "{device}: {value} {what} in {} s against a median of {:.0}",
                        cfg.bucket_ms / 1000,
                        base.unwrap_or(0.0)
                    ),
                    json!({
                        "measure": what, "value": value, "median": base,
                        "threshold": if over_b { tb } else { tp },
                        "bucket_ms": cfg.bucket_ms, "last_peer": peer_of(f, outbound),
                    }),
                    now,
                ));
                // Once per bucket.
                d.spiked = Some(d.bucket.0);
            }
        }
        if !outbound {
            if counted {
                d.window_bytes_in = d.window_bytes_in.saturating_add(f.octets);
            }
            return;
        }
        if verdict == Verdict::Violation {
            out.push(finding(
                Detector::PolicyViolation,
                device,
                format!("{device}:violation:{}:{}:{}", f.dst, f.protocol, f.dst_port),
                format!(
                    "{device} sent {} to {}:{} outside its policy",
                    proto_name(f.protocol),
                    f.dst,
                    f.dst_port
                ),
                json!({ "flow": f }),
                now,
            ));
        }
        // Scans.
        let (hosts, ports) = d.scans.add(
            FlowLite {
                at_ms: now,
                dst: f.dst,
                port: f.dst_port,
                protocol: f.protocol,
            },
            now - cfg.window_ms,
            MAX_FLOWS,
        );
        if matches!(f.protocol, 6 | 17) && hosts == cfg.scan_hosts {
            out.push(finding(
                Detector::ScanHorizontal,
                device,
                format!("{device}:hscan:{}:{}", f.protocol, f.dst_port),
                format!(
                    "{device} contacted {hosts} hosts on {}/{} within {} s",
                    proto_name(f.protocol),
                    f.dst_port,
                    cfg.window_ms / 1000
                ),
                json!({ "port": f.dst_port, "protocol": f.protocol, "hosts": hosts }),
                now,
            ));
        }
        if ports == cfg.scan_ports {
            out.push(finding(
                Detector::ScanVertical,
                device,
                format!("{device}:vscan:{}", f.dst),
                format!(
                    "{device} contacted {ports} ports on {} within {} s",
                    f.dst,
                    cfg.window_ms / 1000
                ),
                json!({ "host": f.dst, "ports": ports }),
                now,
            ));
        }
        // Destinations: learned at first, watched for beacons after.
        let dest = (f.dst, f.dst_port, f.protocol);
        if counted {
            d.window_dests.insert(f.dst);
            d.window_bytes = d.window_bytes.saturating_add(f.octets);
        }
        if now - d.first_ms < cfg.learn_ms {
            if d.known.len() < MAX_KNOWN {
                d.known.insert(dest);
            }
        } else if !d.known.contains(&dest) && verdict == Verdict::Allowed {
            // Only peers allowed as a range: one the policy names (a DNS
            // name whose addresses rotate, a controller) is expected to be
            // polled regularly.
            if !d.beacons.contains_key(&dest) && d.beacons.len() >= MAX_BEACONS {
                d.beacons.clear();
            }
            let (last_port, times) = d.beacons.entry(dest).or_default();
            // A record that continues a connection (split by the exporter's
            // active timeout) is no new contact: TCP without SYN, or the
            // same source port as the last one.
            let continues =
                (f.protocol == 6 && f.tcp_flags & 0x02 == 0) || *last_port == f.src_port;
            *last_port = f.src_port;
            if !continues && times.back().is_none_or(|&t| now - t >= cfg.beacon_min_ms) {
                times.push_back(now);
            }
            while times.len() > 16 {
                times.pop_front();
            }
            let ts: Vec<i64> = times.iter().copied().collect();
            if let Some((period, cv)) =
                beacon(&ts, cfg.beacon_count, cfg.beacon_cv, cfg.beacon_min_ms)
            {
                out.push(finding(
                    Detector::Beaconing,
                    device,
                    format!("{device}:beacon:{}:{}:{}", f.dst, f.protocol, f.dst_port),
                    format!(
                        "{device} connects to new destination {}:{} every {:.1} s (cv {:.2}, {} times)",
                        f.dst,
                        f.dst_port,
                        period / 1000.0,
                        cv,
                        ts.len()
                    ),
                    json!({ "destination": f.dst, "port": f.dst_port, "protocol": f.protocol,
                            "period_ms": period, "cv": cv, "connections": ts }),
                    now,
                ));
                times.clear();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn login_failures(
        &mut self,
        device: Option<&str>,
        who: &str,
        place: AuthPlace,
        at_ms: i64,
        count: u64,
        reason: &str,
        out: &mut Vec<Finding>,
    ) {
        let cfg = self.cfg.clone();
        if self.failures.len() >= MAX_SOURCES
            && !self.failures.contains_key(&(who.to_owned(), place))
        {
            self.failures
                .retain(|_, v| v.back().is_some_and(|&t| t > at_ms - cfg.window_ms));
            if self.failures.len() >= MAX_SOURCES {
                return;
            }
        }
        let times = self.failures.entry((who.to_owned(), place)).or_default();
        for _ in 0..count.min(cfg.login_burst as u64 * 4) {
            times.push_back(at_ms);
        }
        while times.front().is_some_and(|&t| t <= at_ms - cfg.window_ms)
            || times.len() > cfg.login_burst * 4
        {
            times.pop_front();
        }
        let n = in_window(times, at_ms, cfg.window_ms);
        if n >= cfg.login_burst {
            let mut f = finding(
                Detector::FailedLogins,
                device.unwrap_or(who),
                format!("{who}:logins:{}", place.as_str()),
                format!(
                    "{n} failed logins {} {who} within {} s ({reason})",
                    match place {
                        AuthPlace::Device => "on",
                        AuthPlace::Gateway => "at the gateway by",
                        AuthPlace::Est => "at EST by",
                        AuthPlace::Console => "at the console's sign-in from",
                    },
                    cfg.window_ms / 1000
                ),
                json!({ "place": place.as_str(), "failures": n, "last_reason": reason }),
                at_ms,
            );
            if device.is_none() {
                f.device = None;
                f.peer = Some(who.to_owned());
            }
            out.push(f);
            times.clear();
        }
    }

    fn telemetry(
        &mut self,
        device: &str,
        model: Option<&String>,
        at_ms: i64,
        m: &SecurityMetrics,
        assigned: &[String],
        out: &mut Vec<Finding>,
    ) {
        let cfg = self.cfg.clone();
        let d = self.device(device, model, at_ms);
        // Firmware first: a change to an assigned release starts a short
        // relearning of the listening ports.
        if let Some(h) = &m.firmware_sha256 {
            let changed = d
                .firmware
                .as_deref()
                .is_some_and(|p| !p.eq_ignore_ascii_case(h));
            if unassigned_firmware(d.firmware.as_deref(), h, assigned) {
                out.push(finding(
                    Detector::FirmwareUnassigned,
                    device,
                    format!("{device}:firmware:{h}"),
                    format!("{device} runs firmware {} that no release assigned", &h[..h.len().min(16)]),
                    json!({ "source": "telemetry", "previous": d.firmware, "now": h, "assigned": assigned }),
                    at_ms,
                ));
            } else if changed {
                d.relearn_until = at_ms.saturating_add(cfg.relearn_ms);
            }
            d.firmware = Some(h.to_ascii_lowercase());
        }
        // Listening ports.
        let learning = at_ms - d.first_ms < cfg.learn_ms;
        let relearning = at_ms < d.relearn_until;
        let new: Vec<Listener> = m
            .listening
            .iter()
            .filter(|l| !d.listening.contains(l))
            .copied()
            .collect();
        for l in &new {
            if d.listening.len() < crate::telemetry::MAX_LISTENING * 2 {
                d.listening.insert(*l);
            }
        }
        if !learning && !relearning {
            for l in new {
                out.push(finding(
                    Detector::NewListeningPort,
                    device,
                    format!("{device}:listen:{}:{}", l.protocol, l.port),
                    format!(
                        "{device} now listens on {}/{}",
                        proto_name(l.protocol),
                        l.port
                    ),
                    json!({ "protocol": l.protocol, "port": l.port, "listening": m.listening }),
                    at_ms,
                ));
            }
        }
        // Failed logins on the device: the counter's growth.
        let grown = match (d.failed_logins, m.failed_logins) {
            (Some(a), Some(b)) if b >= a => b - a,
            (None, Some(b)) if !learning => b.min(cfg.login_burst as u64),
            _ => 0,
        };
        if m.failed_logins.is_some() {
            d.failed_logins = m.failed_logins;
        }
        if grown > 0 {
            self.login_failures(
                Some(device),
                device,
                AuthPlace::Device,
                at_ms,
                grown,
                "auth log",
                out,
            );
        }
    }

    /// Time passes: closes volume buckets and compares each model's fleet
    /// (once per window). Call it every few seconds.
    pub fn tick(&mut self, now: i64, out: &mut Vec<Finding>) {
        let cfg = self.cfg.clone();
        for d in self.devices.values_mut() {
            roll_buckets(d, now, &cfg);
        }
        if self.shared_fleet {
            // Windows end on multiples of the window, the same on every
            // node, so the comparison sees every node's same window.
            let end = now - now.rem_euclid(cfg.window_ms.max(1));
            if end <= self.last_fleet_ms {
                return;
            }
            self.last_fleet_ms = end;
        } else {
            if now - self.last_fleet_ms < cfg.window_ms {
                return;
            }
            self.last_fleet_ms = now;
        }
        let mut members = Vec::new();
        let mut peaks: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
        for (id, d) in &mut self.devices {
            let features = [
                d.window_dests.len() as f64,
                d.window_bytes as f64,
                d.window_bytes_in as f64,
            ];
            d.window_dests.clear();
            d.window_bytes = 0;
            d.window_bytes_in = 0;
            if let Some(m) = &d.model
                && now - d.first_ms >= cfg.learn_ms
            {
                members.push(WindowFeatures {
                    device: id.clone(),
                    model: m.clone(),
                    features,
                });
                if now - d.first_ms >= DAY_MS {
                    peaks.entry(m.clone()).or_default().push(d.peak);
                }
            } else {
                self.streaks.remove(id);
            }
        }
        self.model_peaks = peaks
            .into_iter()
            .filter(|(_, ps)| ps.len() >= cfg.outlier_min_fleet.max(1))
            .map(|(m, ps)| {
                let med = |mut v: Vec<u64>| {
                    v.sort_unstable();
                    v[v.len() / 2]
                };
                let typical = (
                    med(ps.iter().map(|p| p.0).collect()),
                    med(ps.iter().map(|p| p.1).collect()),
                );
                (m, typical)
            })
            .collect();
        if self.shared_fleet {
            self.closed = Some((self.last_fleet_ms, members));
        } else {
            self.compare_fleet(&members, now, out);
        }
    }

    /// Leaves the fleet comparison to the caller: windows end on multiples
    /// of the window length (the same on every node), each closed window's
    /// features are kept for [`Engine::take_window`], and whoever compares
    /// (one node of a cluster, over every node's devices) calls
    /// [`Engine::compare_fleet`].
    pub fn share_fleet_comparison(&mut self) {
        self.shared_fleet = true;
    }

    /// When the window closed last ended, and its features (devices past
    /// learning, with a model); once.
    pub fn take_window(&mut self) -> Option<(i64, Vec<WindowFeatures>)> {
        self.closed.take()
    }

    /// Compares each model's devices in `members` (one closed window): a
    /// feature that stands out in `outlier_persist` comparisons in a row is a
    /// finding. A device absent from a comparison keeps its count.
    pub fn compare_fleet(&mut self, members: &[WindowFeatures], now: i64, out: &mut Vec<Finding>) {
        let cfg = &self.cfg;
        let persist = cfg.outlier_persist.max(1);
        let mut by_model: HashMap<&str, Vec<&WindowFeatures>> = HashMap::new();
        for m in members {
            by_model.entry(m.model.as_str()).or_default().push(m);
        }
        let floors = FEATURES.map(|f| f.2);
        for (model, members) in by_model {
            let xs: Vec<Vec<f64>> = members.iter().map(|m| m.features.to_vec()).collect();
            let found = fleet_outliers(&xs, cfg.outlier_z, cfg.outlier_min_fleet, &floors);
            for (i, m) in members.iter().enumerate() {
                let streak = self.streaks.entry(m.device.clone()).or_default();
                for (f, s) in streak.iter_mut().enumerate() {
                    *s = if found.iter().any(|&(j, g, _)| j == i && g == f) {
                        s.saturating_add(1)
                    } else {
                        0
                    };
                }
                if *streak == [0; 3] {
                    self.streaks.remove(&m.device);
                }
            }
            for (i, f, z) in found {
                let id = &members[i].device;
                if self.streaks.get(id).is_none_or(|s| s[f] != persist) {
                    continue;
                }
                out.push(finding(
                    Detector::FleetOutlier,
                    id,
                    format!("{id}:outlier:{}", FEATURES[f].0),
                    format!(
                        "{id} is unlike the rest of model {model}: {} {} in {} s (robust z {z:.1}, {persist} comparisons in a row)",
                        xs[i][f],
                        FEATURES[f].1,
                        cfg.window_ms / 1000,
                    ),
                    json!({ "model": model, "feature": FEATURES[f].0, "value": xs[i][f], "z": z,
                            "fleet": xs.len(), "comparisons": persist }),
                    now,
                ));
            }
        }
    }
}

/// One device's fleet features over a closed window ([`FEATURES`]:
/// destinations, bytes out, bytes in).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFeatures {
    /// The device.
    pub device: String,
    /// Its model: devices are compared with their model's fleet.
    pub model: String,
    /// The features.
    pub features: [f64; 3],
}

fn roll_buckets(d: &mut DeviceState, now: i64, cfg: &Config) {
    // Whole empty buckets count as zeros (a quiet device has a quiet baseline),
    // but a long silence is not replayed bucket by bucket.
    let mut n = 0;
    while now >= d.bucket.0 + cfg.bucket_ms && n < cfg.history {
        note_peak(d, d.bucket.0, (d.bucket.1, d.bucket.2), cfg);
        d.history.push_back((d.bucket.1, d.bucket.2));
        d.bucket = (d.bucket.0 + cfg.bucket_ms, 0, 0);
        n += 1;
        while d.history.len() > cfg.history {
            d.history.pop_front();
        }
    }
    if now >= d.bucket.0 + cfg.bucket_ms {
        d.bucket = (now - now.rem_euclid(cfg.bucket_ms), 0, 0);
    }
    if n > 0 {
        d.thresholds = None;
    }
}

/// The spike thresholds and medians (bytes, packets) of the device's history.
fn thresholds(d: &DeviceState, cfg: &Config) -> Option<((f64, f64), (f64, f64))> {
    let bytes: Vec<u64> = d.history.iter().map(|h| h.0).collect();
    let packets: Vec<u64> = d.history.iter().map(|h| h.1).collect();
    let level =
        |xs: &[u64], floor| Some((spike_threshold(xs, cfg.volume_k, floor)?, median_mad(xs)?.0));
    level(&bytes, cfg.volume_floor_bytes).zip(level(&packets, cfg.volume_floor_packets))
}

/// Remembers a closed bucket for the busiest-bucket baseline (daily maxima).
fn note_peak(d: &mut DeviceState, start: i64, v: (u64, u64), cfg: &Config) {
    if start >= d.day.0 + DAY_MS {
        // Days without traffic count as quiet days.
        let mut skipped = (start - d.day.0) / DAY_MS;
        d.peaks.push_back((d.day.1, d.day.2));
        while skipped > 1 && d.peaks.len() <= cfg.peak_days {
            d.peaks.push_back((0, 0));
            skipped -= 1;
        }
        while d.peaks.len() > cfg.peak_days {
            d.peaks.pop_front();
        }
        d.day = (start - (start - d.day.0).rem_euclid(DAY_MS), 0, 0);
        d.peak = d
            .peaks
            .iter()
            .fold((0, 0), |a, p| (a.0.max(p.0), a.1.max(p.1)));
    }
    d.day.1 = d.day.1.max(v.0);
    d.day.2 = d.day.2.max(v.1);
    d.peak = (d.peak.0.max(v.0), d.peak.1.max(v.1));
}

fn peer_of(f: &FlowRecord, outbound: bool) -> String {
    if outbound { f.dst } else { f.src }.to_string()
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        p => format!("proto {p}"),
    }
}

fn finding(
    detector: Detector,
    device: &str,
    key: String,
    summary: String,
    evidence: Value,
    at_ms: i64,
) -> Finding {
    Finding {
        detector,
        severity: detector.severity(),
        device: Some(device.to_owned()),
        peer: None,
        key: format!("{}:{key}", detector.as_str()),
        summary,
        evidence,
        at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Listener;
    use std::net::Ipv4Addr;

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
    }

    fn flow(at: i64, dst: IpAddr, port: u16, octets: u64) -> FlowRecord {
        FlowRecord {
            exporter: ip(9, 9),
            domain: 0,
            src: ip(1, 10),
            dst,
            src_port: 30_000 + ((at / 7) % 30_000) as u16,
            dst_port: port,
            protocol: 6,
            packets: octets.div_ceil(1000),
            octets,
            start_ms: at,
            end_ms: at + 100,
            tcp_flags: 0x1b,
        }
    }

    fn obs(f: FlowRecord, v: Verdict) -> Observation {
        Observation::Flow {
            device: "cam-1".into(),
            model: Some("cam".into()),
            outbound: true,
            flow: f,
            verdict: v,
        }
    }

    fn run(e: &mut Engine, o: impl IntoIterator<Item = Observation>) -> Vec<Finding> {
        let mut out = Vec::new();
        for o in o {
            e.observe(&o, &mut out);
        }
        out
    }

    fn kinds(f: &[Finding]) -> Vec<Detector> {
        f.iter().map(|f| f.detector).collect()
    }

    fn cfg() -> Config {
        Config {
            learn_ms: 60_000,
            ..Config::default()
        }
    }

    #[test]
    fn benign_periodic_traffic_to_known_peers_finds_nothing() {
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        // An hour of telemetry every 10 s to the control plane, and DNS.
        for i in 0..360 {
            let t = i * 10_000;
            e.observe(
                &obs(
                    flow(t, ip(9, 1), 8883, 2_000 + (i as u64 % 7) * 50),
                    Verdict::Allowed,
                ),
                &mut out,
            );
            e.observe(
                &obs(flow(t + 5, ip(9, 2), 53, 120), Verdict::Allowed),
                &mut out,
            );
            e.tick(t + 10, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_flow_outside_the_policy_is_a_violation() {
        let mut e = Engine::new(cfg());
        let f = run(&mut e, [obs(flow(0, ip(7, 7), 23, 60), Verdict::Violation)]);
        assert_eq!(kinds(&f), vec![Detector::PolicyViolation]);
        assert!(f[0].key.contains("10.0.7.7:6:23"), "{}", f[0].key);
        // Unknown (DNS not known) is not a violation.
        assert!(run(&mut e, [obs(flow(0, ip(7, 8), 443, 60), Verdict::Unknown)]).is_empty());
    }

    #[test]
    fn horizontal_and_vertical_scans_are_told_apart() {
        let mut e = Engine::new(cfg());
        let h = run(
            &mut e,
            (1..=20).map(|i| obs(flow(i * 10, ip(2, i as u8), 23, 60), Verdict::Allowed)),
        );
        assert_eq!(kinds(&h), vec![Detector::ScanHorizontal]);
        let mut e = Engine::new(cfg());
        let v = run(
            &mut e,
            (1..=20).map(|i| {
                obs(
                    flow(i * 10, ip(2, 1), 1000 + i as u16, 60),
                    Verdict::Allowed,
                )
            }),
        );
        assert_eq!(kinds(&v), vec![Detector::ScanVertical]);
        // The same contacts spread over more than the window are no scan.
        let mut e = Engine::new(cfg());
        let slow = run(
            &mut e,
            (1..=20).map(|i| obs(flow(i * 5_000, ip(2, i as u8), 23, 60), Verdict::Allowed)),
        );
        assert!(slow.is_empty(), "{slow:?}");
    }

    #[test]
    fn a_volume_spike_is_measured_against_the_devices_own_baseline() {
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        for i in 0..30 {
            e.observe(
                &obs(
                    flow(i * 10_000, ip(9, 1), 443, 50_000 + (i as u64 % 5) * 5_000),
                    Verdict::Allowed,
                ),
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        // 40 MB in one bucket.
        for j in 0..40 {
            e.observe(
                &obs(
                    flow(300_000 + j * 100, ip(9, 1), 443, 1_000_000),
                    Verdict::Allowed,
                ),
                &mut out,
            );
        }
        assert_eq!(kinds(&out), vec![Detector::VolumeSpike]);
        assert_eq!(out[0].evidence["measure"], "bytes");
        // A device that always moves 40 MB per bucket is not spiking.
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        for i in 0..40 {
            e.observe(
                &obs(
                    flow(i * 10_000, ip(9, 1), 443, 40_000_000),
                    Verdict::Allowed,
                ),
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn firmware_downloads_and_usual_bursts_are_no_spike() {
        let quiet = |e: &mut Engine, out: &mut Vec<Finding>, from: i64, to: i64| {
            for t in (from..to).step_by(10_000) {
                e.observe(&obs(flow(t, ip(9, 1), 443, 50_000), Verdict::Allowed), out);
            }
        };
        let burst = |e: &mut Engine, out: &mut Vec<Finding>, at: i64, mb: i64, v: Verdict| {
            for j in 0..mb {
                e.observe(&obs(flow(at + j * 100, ip(9, 2), 443, 1_000_000), v), out);
            }
        };
        // 30 MB of firmware from the control plane: not counted at all.
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        quiet(&mut e, &mut out, 0, 300_000);
        burst(&mut e, &mut out, 300_000, 30, Verdict::ControlPlane);
        assert!(out.is_empty(), "{out:?}");
        // A camera's clips: the first is news, the same again within the
        // week is not; three times its busiest is.
        burst(&mut e, &mut out, 310_000, 20, Verdict::Named);
        assert_eq!(kinds(&out), vec![Detector::VolumeSpike]);
        out.clear();
        quiet(&mut e, &mut out, 320_000, 3_000_000);
        burst(&mut e, &mut out, 3_000_000, 25, Verdict::Named);
        assert!(out.is_empty(), "{out:?}");
        quiet(&mut e, &mut out, 3_010_000, 3_600_000);
        burst(&mut e, &mut out, 3_600_000, 100, Verdict::Named);
        assert_eq!(kinds(&out), vec![Detector::VolumeSpike]);

        // A new camera borrows its model's typical peak (the median of the
        // cameras with a day of history).
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        let send = |e: &mut Engine, out: &mut Vec<Finding>, dev: &str, t: i64, mb: u64| {
            let o = Observation::Flow {
                device: dev.into(),
                model: Some("cam".into()),
                outbound: true,
                flow: flow(t, ip(9, 2), 443, mb * 1_000_000 + 50_000),
                verdict: Verdict::Named,
            };
            e.observe(&o, out);
        };
        let t0 = DAY_MS + 600_000;
        for t in (0..t0).step_by(60_000) {
            for d in 0..5 {
                send(
                    &mut e,
                    &mut out,
                    &format!("cam-{d}"),
                    t,
                    u64::from(t == 120_000) * 20,
                );
            }
            e.tick(t + 5_000, &mut out);
        }
        out.clear();
        let spikes = |out: &[Finding]| {
            out.iter()
                .filter(|f| f.detector == Detector::VolumeSpike)
                .count()
        };
        for (k, t) in (t0..t0 + 300_000).step_by(10_000).enumerate() {
            let mb = match k {
                12 => 40,  // under 3 × 20 MB
                24 => 130, // over 3 × its own 40 MB
                _ => 0,
            };
            send(&mut e, &mut out, "cam-new", t, mb);
            e.tick(t + 5_000, &mut out);
            if k == 12 {
                assert_eq!(spikes(&out), 0, "{out:?}");
            }
        }
        assert_eq!(spikes(&out), 1, "{out:?}");
    }

    #[test]
    fn regular_connections_to_a_new_destination_are_a_beacon() {
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        e.observe(
            &obs(flow(0, ip(9, 1), 443, 500), Verdict::Allowed),
            &mut out,
        );
        // After learning: every 5 s (± 100 ms) to a new address.
        for i in 0..8 {
            let t = 120_000 + i * 5_000 + (i % 3) * 50;
            e.observe(
                &obs(flow(t, ip(6, 6), 8080, 400), Verdict::Allowed),
                &mut out,
            );
        }
        assert_eq!(kinds(&out), vec![Detector::Beaconing]);
        // Irregular contacts are not.
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        e.observe(
            &obs(flow(0, ip(9, 1), 443, 500), Verdict::Allowed),
            &mut out,
        );
        for (i, gap) in [1_000, 9_000, 3_000, 20_000, 2_000, 11_000, 4_000, 30_000]
            .iter()
            .enumerate()
        {
            let t = 120_000 + i as i64 * 10_000 + gap;
            e.observe(
                &obs(flow(t, ip(6, 6), 8080, 400), Verdict::Allowed),
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        // Nor is one long connection exported in 5 s pieces (same source
        // port, no SYN after the first).
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        e.observe(
            &obs(flow(0, ip(9, 1), 443, 500), Verdict::Allowed),
            &mut out,
        );
        for i in 0..10 {
            let mut f = flow(120_000 + i * 5_000, ip(6, 7), 8883, 400);
            f.src_port = 45_000;
            f.tcp_flags = if i == 0 { 0x1a } else { 0x18 };
            e.observe(&obs(f, Verdict::Allowed), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // Nor is a destination learned while the device was new.
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        e.observe(
            &obs(flow(0, ip(6, 6), 8080, 500), Verdict::Allowed),
            &mut out,
        );
        for i in 0..8 {
            e.observe(
                &obs(
                    flow(120_000 + i * 5_000, ip(6, 6), 8080, 400),
                    Verdict::Allowed,
                ),
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
        // Nor a peer the policy names (a vendor API whose DNS answer moved
        // to a new address), nor the control plane.
        for v in [Verdict::Named, Verdict::ControlPlane] {
            let mut e = Engine::new(cfg());
            let mut out = Vec::new();
            e.observe(&obs(flow(0, ip(9, 1), 443, 500), v), &mut out);
            for i in 0..8 {
                e.observe(
                    &obs(flow(120_000 + i * 5_000, ip(6, 8), 443, 400), v),
                    &mut out,
                );
            }
            assert!(out.is_empty(), "{v:?}: {out:?}");
        }
    }

    fn telemetry(at: i64, m: SecurityMetrics, assigned: &[&str]) -> Observation {
        Observation::Telemetry {
            device: "cam-1".into(),
            model: Some("cam".into()),
            at_ms: at,
            metrics: m,
            assigned: assigned.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn failed_logins_burst_on_the_device_and_at_the_gateway() {
        let mut e = Engine::new(cfg());
        let m = |n| SecurityMetrics {
            failed_logins: Some(n),
            ..SecurityMetrics::default()
        };
        let out = run(
            &mut e,
            [
                telemetry(0, m(2), &[]),
                telemetry(10_000, m(3), &[]),
                telemetry(20_000, m(15), &[]),
            ],
        );
        assert_eq!(kinds(&out), vec![Detector::FailedLogins]);
        assert_eq!(out[0].device.as_deref(), Some("cam-1"));
        // A refused certificate ten times from one address.
        let out = run(
            &mut e,
            (0..10).map(|i| Observation::AuthFailure {
                device: None,
                peer: Some(ip(5, 5)),
                place: AuthPlace::Gateway,
                reason: "unknown_ca".into(),
                at_ms: 30_000 + i * 500,
            }),
        );
        assert_eq!(kinds(&out), vec![Detector::FailedLogins]);
        assert_eq!(
            (out[0].device.as_deref(), out[0].peer.as_deref()),
            (None, Some("10.0.5.5"))
        );
        // Slow failures (one a minute) are no burst.
        let out = run(
            &mut e,
            (0..10).map(|i| Observation::AuthFailure {
                device: Some("cam-2".into()),
                peer: None,
                place: AuthPlace::Est,
                reason: "bad token".into(),
                at_ms: 100_000 + i * 61_000,
            }),
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn firmware_changes_need_an_assigned_release() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let c = "cc".repeat(32);
        let m = |h: &str| SecurityMetrics {
            firmware_sha256: Some(h.into()),
            ..SecurityMetrics::default()
        };
        let mut e = Engine::new(cfg());
        let out = run(
            &mut e,
            [
                telemetry(0, m(&a), &[]),
                telemetry(1, m(&b), &[&b]),
                telemetry(2, m(&c), &[&b]),
            ],
        );
        assert_eq!(kinds(&out), vec![Detector::FirmwareUnassigned]);
        assert_eq!(out[0].evidence["now"], c);
        let out = run(
            &mut e,
            [Observation::AttestationFailed {
                device: "cam-1".into(),
                reason: "PCR 9 does not match".into(),
                at_ms: 3,
            }],
        );
        assert_eq!(kinds(&out), vec![Detector::FirmwareUnassigned]);
    }

    #[test]
    fn one_identity_in_two_places_is_a_clone() {
        let mut e = Engine::new(cfg());
        let c = |at, peer, old| Observation::Connected {
            device: "cam-1".into(),
            peer,
            takeover: old,
            at_ms: at,
        };
        // Moving once (new DHCP lease) is not a clone.
        assert!(
            run(
                &mut e,
                [c(0, ip(1, 1), None), c(1_000, ip(1, 2), Some(ip(1, 1)))]
            )
            .is_empty()
        );
        // Ping-pong between two addresses is.
        let out = run(&mut e, [c(5_000, ip(1, 1), Some(ip(1, 2)))]);
        assert_eq!(kinds(&out), vec![Detector::ClonedIdentity]);
        let out = run(
            &mut e,
            [Observation::EnrolmentReplay {
                device: "cam-1".into(),
                peer: None,
                reason: "birth certificate already used".into(),
                at_ms: 6_000,
            }],
        );
        assert_eq!(kinds(&out), vec![Detector::ClonedIdentity]);
    }

    #[test]
    fn a_new_listening_port_after_learning() {
        let mut e = Engine::new(cfg());
        let m = |ports: &[u16]| SecurityMetrics {
            listening: ports
                .iter()
                .map(|&port| Listener { protocol: 6, port })
                .collect(),
            ..SecurityMetrics::default()
        };
        let out = run(
            &mut e,
            [
                telemetry(0, m(&[22]), &[]),
                telemetry(30_000, m(&[22, 8080]), &[]),
                telemetry(90_000, m(&[22, 8080]), &[]),
                telemetry(100_000, m(&[22, 8080, 4444]), &[]),
            ],
        );
        assert_eq!(kinds(&out), vec![Detector::NewListeningPort]);
        assert_eq!(out[0].evidence["port"], 4444);
        // An assigned release may add a service: learned for a while; a
        // port opened after that is news again.
        let fw = |h: &str, ports: &[u16]| SecurityMetrics {
            firmware_sha256: Some(h.repeat(64)),
            ..m(ports)
        };
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut e = Engine::new(cfg());
        let out = run(
            &mut e,
            [
                telemetry(0, fw("a", &[22]), &[&a]),
                telemetry(100_000, fw("b", &[22, 8554]), &[&a, &b]),
                telemetry(200_000, fw("b", &[22, 8554, 8555]), &[&a, &b]),
                telemetry(800_000, fw("b", &[22, 8554, 8555, 4444]), &[&a, &b]),
            ],
        );
        assert_eq!(kinds(&out), vec![Detector::NewListeningPort]);
        assert_eq!(out[0].evidence["port"], 4444);
    }

    #[test]
    fn the_odd_device_of_a_fleet_stands_out() {
        let mut xs: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![3.0 + f64::from(i % 2), 10_000.0 + f64::from(i) * 100.0])
            .collect();
        assert!(fleet_outliers(&xs, 12.0, 5, &[]).is_empty());
        xs.push(vec![250.0, 11_000.0]);
        let o = fleet_outliers(&xs, 12.0, 5, &[]);
        assert_eq!(
            o.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            vec![(20, 0)]
        );
        // A mostly silent fleet: one heartbeat of 5 KB is not "unlike" it
        // once bytes have a least spread; 5 MB is.
        let mut quiet: Vec<Vec<f64>> = (0..20).map(|_| vec![0.0, 0.0]).collect();
        quiet[3] = vec![1.0, 5_000.0];
        assert_eq!(fleet_outliers(&quiet, 12.0, 5, &[]).len(), 1);
        assert!(fleet_outliers(&quiet, 12.0, 5, &[1.0, 65_536.0]).is_empty());
        quiet[3] = vec![1.0, 5e6];
        assert_eq!(
            fleet_outliers(&quiet, 12.0, 5, &[1.0, 65_536.0])
                .iter()
                .map(|x| (x.0, x.1))
                .collect::<Vec<_>>(),
            vec![(3, 1)]
        );
        // Through the engine: 8 cameras talk to 2 peers a minute; one to 60
        // for a minute (a busy minute), another for good (unlike its fleet).
        let mut e = Engine::new(cfg());
        let mut out = Vec::new();
        for t in (0..480_000).step_by(10_000) {
            for d in 0..8u8 {
                let busy = (d == 7 && t > 120_000) || (d == 6 && (130_000..190_000).contains(&t));
                let n = if busy { 60 } else { 2 };
                for k in 0..n {
                    let dev = format!("cam-{d}");
                    let mut f = flow(t, ip(8, k as u8), 443, 500);
                    f.src = ip(1, d);
                    let o = Observation::Flow {
                        device: dev,
                        model: Some("cam".into()),
                        outbound: true,
                        flow: f,
                        verdict: Verdict::Allowed,
                    };
                    e.observe(&o, &mut out);
                }
            }
            e.tick(t + 5_000, &mut out);
        }
        let outliers: Vec<&Finding> = out
            .iter()
            .filter(|f| f.detector == Detector::FleetOutlier)
            .collect();
        assert!(!outliers.is_empty(), "{out:?}");
        assert!(
            outliers
                .iter()
                .all(|f| f.device.as_deref() == Some("cam-7")),
            "{outliers:?}"
        );
    }

    #[test]
    fn a_fleet_split_between_nodes_is_compared_whole_on_one() {
        // 8 cameras on two nodes, 4 each: fewer than the 5 a comparison needs
        // on either node. The nodes share their closed windows; one compares.
        assert!(4 < cfg().outlier_min_fleet);
        let mut nodes = [Engine::new(cfg()), Engine::new(cfg())];
        for n in &mut nodes {
            n.share_fleet_comparison();
        }
        let mut leader = Engine::new(cfg());
        let (mut local, mut out) = (Vec::new(), Vec::new());
        for t in (0..480_000).step_by(10_000) {
            let mut window = Vec::new();
            for d in 0..8u8 {
                let n = if d == 7 && t > 120_000 { 60 } else { 2 };
                for k in 0..n {
                    let mut f = flow(t, ip(8, k as u8), 443, 500);
                    f.src = ip(1, d);
                    let o = Observation::Flow {
                        device: format!("cam-{d}"),
                        model: Some("cam".into()),
                        outbound: true,
                        flow: f,
                        verdict: Verdict::Allowed,
                    };
                    nodes[usize::from(d % 2)].observe(&o, &mut local);
                }
            }
            for n in &mut nodes {
                n.tick(t + 5_000, &mut local);
                if let Some((end, w)) = n.take_window() {
                    assert_eq!(end % 60_000, 0, "windows end on the minute");
                    window.extend(w);
                }
            }
            assert!(
                local.iter().all(|f| f.detector != Detector::FleetOutlier),
                "a node compared on its own"
            );
            if !window.is_empty() {
                assert!(window.len() == 8, "{window:?}");
                leader.compare_fleet(&window, t + 5_000, &mut out);
            }
        }
        let outliers: Vec<Option<&str>> = out
            .iter()
            .filter(|f| f.detector == Detector::FleetOutlier)
            .map(|f| f.device.as_deref())
            .collect();
        assert!(!outliers.is_empty(), "no outlier found");
        assert!(outliers.iter().all(|d| *d == Some("cam-7")), "{outliers:?}");
        // The same windows compared again (a window read twice) would count
        // twice: the caller hands each window over once, so take_window is empty.
        assert!(nodes[0].take_window().is_none());
    }
}
