//! Monitoring: the IPFIX / NetFlow v9 collector, device telemetry and gateway
//! events turned into observations for the detectors (`palisade-detect`), and
//! the device timeline events. Observations travel over one bounded channel
//! to one detection task that owns the detectors' state; whatever does not
//! fit is counted and dropped, never queued without bound.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Clock, DeviceId, SiteName};
use palisade_detect::detect::{Engine, Observation};
use palisade_detect::flow::{Collector, CollectorLimits, FlowRecord};
use palisade_detect::telemetry;
use palisade_detect::verdict::{self, DnsView, Verdict};
use palisade_policy::Prefix;
use palisade_policy::site::SiteBundle;
use palisade_store::{Change, DeviceEventRecord, Store};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::alerts::Alerts;
use crate::events::{Event, Missed, Subscription};
use crate::metrics::Metrics;
use crate::network::Network;
use palisade_mqtt::TopicKind;

/// Observations waiting for the detectors, at most.
const QUEUE: usize = 65_536;
/// Timeline events waiting to be written, at most.
const EVENT_QUEUE: usize = 16_384;
/// Flow addresses of no device waiting for the unmanaged-hosts service, at most.
const UNMAPPED_QUEUE: usize = 16_384;

/// An address on a site's segment that a flow names and no device holds:
/// the site, the sighting, its bytes, when (Unix ms).
pub type Unmapped = (SiteName, palisade_policy::hosts::HostSeen, u64, i64);

/// The monitoring front door: services hand it observations and timeline events.
#[derive(Debug)]
pub struct Monitor {
    tx: mpsc::Sender<Observation>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Observation>>>,
    events_tx: mpsc::Sender<DeviceEventRecord>,
    events_rx: std::sync::Mutex<Option<mpsc::Receiver<DeviceEventRecord>>>,
    unmapped_tx: mpsc::Sender<Unmapped>,
    unmapped_rx: std::sync::Mutex<Option<mpsc::Receiver<Unmapped>>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Monitor {
    /// A monitor; its tasks start with [`MonitorDeps::spawn`].
    pub fn new(metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (unmapped_tx, unmapped_rx) = mpsc::channel(UNMAPPED_QUEUE);
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            events_tx,
            events_rx: std::sync::Mutex::new(Some(events_rx)),
            unmapped_tx,
            unmapped_rx: std::sync::Mutex::new(Some(unmapped_rx)),
            metrics,
            clock,
        }
    }

    /// Now, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Hands an observation to the detectors (dropped and counted when they
    /// are behind).
    pub fn observe(&self, o: Observation) {
        if self.tx.try_send(o).is_err() {
            self.metrics.monitor_dropped("observation");
        }
    }

    /// The flow addresses no device holds, for the unmanaged-hosts service
    /// (once: the first caller takes them).
    pub fn take_unmapped(&self) -> Option<mpsc::Receiver<Unmapped>> {
        self.unmapped_rx.lock().ok().and_then(|mut r| r.take())
    }

    /// Adds an event to a device's timeline.
    pub fn event(&self, device: &str, kind: &str, summary: String, detail: serde_json::Value) {
        self.event_at(device, kind, summary, detail, self.now_ms());
    }

    /// Adds an event that happened at `at_ms` to a device's timeline.
    pub fn event_at(
        &self,
        device: &str,
        kind: &str,
        summary: String,
        detail: serde_json::Value,
        at_ms: i64,
    ) {
        let e = DeviceEventRecord {
            device: device.to_owned(),
            at_ms,
            kind: kind.to_owned(),
            summary,
            detail: detail.to_string(),
        };
        if self.events_tx.try_send(e).is_err() {
            self.metrics.monitor_dropped("timeline_event");
        }
    }
}

/// How often a device's security metrics are sampled into its timeline.
const TELEMETRY_SAMPLE_MS: i64 = 600_000;

/// What the monitoring tasks need.
#[derive(Debug, Clone)]
pub struct MonitorDeps {
    /// The monitor.
    pub monitor: Arc<Monitor>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Network policy (site bundles: addresses and policies).
    pub network: Arc<Network>,
    /// Alerts.
    pub alerts: Arc<Alerts>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Monitoring settings.
    pub config: crate::config::MonitoringConfig,
    /// Whether this node counts the cluster's session takeovers (the
    /// cloned-identity detector runs on one node: every node's takeovers
    /// reach it).
    pub sessions_leader: Arc<palisade_store::leader::Leadership>,
    /// Where devices are compared with their model's fleet.
    pub fleet: FleetComparison,
}

/// Where the fleet comparison runs.
#[derive(Debug, Clone)]
pub enum FleetComparison {
    /// Here, over the devices this process observes (one process).
    Local,
    /// On the node holding `lead`, over every node's devices: each node
    /// records its devices' closed windows in the store.
    Shared {
        /// The `fleet-comparison` lead.
        lead: Arc<palisade_store::leader::Leadership>,
        /// This node's id, recorded with its windows.
        node: String,
    },
}

/// How long after a window's end the fleet-comparison lead waits for every
/// node's record of it (at most half a window).
const FLEET_GRACE_MS: i64 = 5_000;

/// What the fleet-comparison lead keeps between comparisons.
#[derive(Debug, Default)]
struct FleetLead {
    /// The end of the last window it compared.
    compared: Option<i64>,
}

impl MonitorDeps {
    /// Starts the detection task, the timeline writer and the bus follower;
    /// and the flow collector on `flows`, if given.
    pub fn spawn(
        self,
        bus: Subscription,
        flows: Option<tokio::net::UdpSocket>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let map = Arc::new(tokio::sync::RwLock::new(AddressMap::default()));
        if let Some(rx) = self.monitor.rx.lock().ok().and_then(|mut r| r.take()) {
            tasks.push(tokio::spawn(self.clone().detect(rx, shutdown.clone())));
        }
        if let Some(rx) = self
            .monitor
            .events_rx
            .lock()
            .ok()
            .and_then(|mut r| r.take())
        {
            tasks.push(tokio::spawn(
                self.clone().write_events(rx, shutdown.clone()),
            ));
        }
        tokio::spawn(self.clone().follow(bus, map.clone()));
        tokio::spawn(self.clone().refresh_map(map.clone(), shutdown.clone()));
        if let Some(socket) = flows {
            tokio::spawn(self.collect(socket, map, shutdown));
        }
        tasks
    }

    async fn detect(self, mut rx: mpsc::Receiver<Observation>, mut stop: watch::Receiver<bool>) {
        let disabled: HashSet<palisade_detect::detect::Detector> = self
            .config
            .disabled
            .iter()
            .filter_map(|n| palisade_detect::detect::Detector::parse(n))
            .collect();
        let mut engine = Engine::new(self.config.detectors.clone());
        if matches!(self.fleet, FleetComparison::Shared { .. }) {
            engine.share_fleet_comparison();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut found = Vec::new();
        // What this node keeps while it leads the fleet comparison.
        let mut fleet_lead = FleetLead::default();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                o = rx.recv() => {
                    let Some(o) = o else { return };
                    engine.observe(&o, &mut found);
                    // Take what else is waiting, then raise in one go.
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(o) => engine.observe(&o, &mut found),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = self.monitor.now_ms();
                    engine.tick(now, &mut found);
                    if let FleetComparison::Shared { lead, node } = &self.fleet {
                        self.record_windows(engine.take_window(), node);
                        if lead.is_leader() {
                            self.compare_fleet(&mut engine, &mut fleet_lead, now, &mut found)
                                .await;
                        } else {
                            fleet_lead = FleetLead::default();
                        }
                    }
                }
            }
            found.retain(|f| !disabled.contains(&f.detector));
            if !found.is_empty() {
                self.alerts.raise(std::mem::take(&mut found)).await;
            }
        }
    }

    /// Records the devices' features of a window this node closed, for the
    /// fleet-comparison lead (in the background: they are observations, and
    /// a lost window only delays a comparison).
    fn record_windows(
        &self,
        closed: Option<(i64, Vec<palisade_detect::detect::WindowFeatures>)>,
        node: &str,
    ) {
        let Some((at_ms, closed)) = closed else {
            return;
        };
        let rows: Vec<palisade_store::FleetWindowRecord> = closed
            .into_iter()
            .filter_map(|w| {
                let [dests, bytes_out, bytes_in] = w.features.map(|f| f as u64);
                Some(palisade_store::FleetWindowRecord {
                    device: DeviceId::parse(&w.device).ok()?,
                    model: palisade_core::ModelId::parse(&w.model).ok()?,
                    closed_ms: at_ms,
                    dests,
                    bytes_out,
                    bytes_in,
                    node: node.to_owned(),
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store
                .commit(vec![Change::RecordFleetWindows(rows)], vec![])
                .await
            {
                tracing::warn!(error = %e, "could not record this node's fleet window");
            }
        });
    }

    /// As the fleet-comparison lead: a moment after each window's end (the
    /// same on every node), compares every node's devices over that window.
    /// A device no node recorded for it is left out and keeps its count.
    async fn compare_fleet(
        &self,
        engine: &mut Engine,
        lead: &mut FleetLead,
        now: i64,
        found: &mut Vec<palisade_detect::detect::Finding>,
    ) {
        let window = self.config.detectors.window_ms.max(1);
        // The nodes record a window when their detector ticks (every 2 s).
        let grace = (window / 2).min(FLEET_GRACE_MS);
        let end = (now - grace) - (now - grace).rem_euclid(window);
        if lead.compared.is_some_and(|c| c >= end) {
            return;
        }
        match self.store.fleet_windows(end - 1, end).await {
            Ok(rows) => {
                lead.compared = Some(end);
                let members: Vec<palisade_detect::detect::WindowFeatures> = rows
                    .into_iter()
                    .map(|r| palisade_detect::detect::WindowFeatures {
                        device: r.device.to_string(),
                        model: r.model.to_string(),
                        features: [r.dests, r.bytes_out, r.bytes_in].map(|v| v as f64),
                    })
                    .collect();
                engine.compare_fleet(&members, now, found);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the fleet's windows"),
        }
    }

    async fn write_events(
        self,
        mut rx: mpsc::Receiver<DeviceEventRecord>,
        mut stop: watch::Receiver<bool>,
    ) {
        let retention_ms = i64::from(self.config.retention_days) * 86_400_000;
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                _ = stop.changed() => {
                    while let Ok(e) = rx.try_recv() {
                        batch.push(e);
                    }
                    self.write(batch).await;
                    return;
                }
                _ = prune.tick() => {
                    let before_ms = self.monitor.now_ms() - retention_ms;
                    if let Err(e) = self.store.commit(vec![Change::PruneMonitoring { before_ms }], vec![]).await {
                        tracing::warn!(error = %e, "could not prune old timeline events");
                    }
                    continue;
                }
                e = rx.recv() => match e {
                    Some(e) => batch.push(e),
                    None => return,
                },
            }
            // Group what arrives within 200 ms into one commit.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            self.write(batch).await;
        }
    }

    async fn write(&self, batch: Vec<DeviceEventRecord>) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .commit(vec![Change::RecordDeviceEvents(batch)], vec![])
            .await
        {
            tracing::warn!(error = %e, "could not record timeline events");
        }
    }

    /// Follows the bus: gateway sessions, refused credentials and failed
    /// attestations become observations and timeline events; telemetry is
    /// decoded with bounds, its security metrics go to the detectors and
    /// firmware changes to the timeline.
    async fn follow(self, mut bus: Subscription, map: Arc<tokio::sync::RwLock<AddressMap>>) {
        let mut last_hash: HashMap<DeviceId, String> = HashMap::new();
        // When each device's metrics last went to its timeline (the console's
        // telemetry chart): at most one sample per device every 10 minutes.
        let mut sampled: HashMap<DeviceId, i64> = HashMap::new();
        loop {
            let e = match bus.recv().await {
                Some(Ok(Event::Message(e))) => e,
                Some(Ok(other)) => {
                    self.on_event(other);
                    continue;
                }
                Some(Err(Missed(n))) => {
                    tracing::warn!(missed = n, "monitoring fell behind the device bus");
                    continue;
                }
                None => return,
            };
            if e.kind != TopicKind::Telemetry {
                continue;
            }
            let t = match telemetry::decode(&e.payload) {
                Ok(t) => t,
                Err(err) => {
                    self.metrics.telemetry_refused(match err {
                        telemetry::TelemetryError::TooLarge(_) => "too_large",
                        telemetry::TelemetryError::Malformed(_) => "malformed",
                        telemetry::TelemetryError::TooMany { .. } => "too_many",
                        telemetry::TelemetryError::Absurd { .. } => "absurd",
                    });
                    tracing::debug!(device = %e.device, error = %err, "telemetry refused");
                    continue;
                }
            };
            let Some(metrics) = t.metrics else { continue };
            if sampled
                .get(&e.device)
                .is_none_or(|at| e.at_ms - at >= TELEMETRY_SAMPLE_MS)
            {
                if sampled.len() > 1_000_000 {
                    sampled.clear();
                }
                sampled.insert(e.device.clone(), e.at_ms);
                self.monitor.event_at(
                    e.device.as_str(),
                    "telemetry",
                    format!(
                        "{} connections, {} listening ports, {} processes",
                        metrics.established,
                        metrics.listening.len(),
                        metrics.processes
                    ),
                    json!({
                        "established": metrics.established, "listening": metrics.listening.len(),
                        "processes": metrics.processes, "bytes_in": metrics.bytes_in,
                        "bytes_out": metrics.bytes_out, "failed_logins": metrics.failed_logins,
                    }),
                    e.at_ms,
                );
            }
            let mut assigned = Vec::new();
            if let Some(h) = &metrics.firmware_sha256 {
                let changed = last_hash
                    .get(&e.device)
                    .is_none_or(|p| !p.eq_ignore_ascii_case(h));
                if changed {
                    assigned = self.assigned_images(&e.device).await;
                    if last_hash.contains_key(&e.device) {
                        self.monitor.event(
                            e.device.as_str(),
                            "firmware",
                            format!("running firmware changed to {}", &h[..16.min(h.len())]),
                            json!({ "sha256": h, "version": t.firmware, "assigned": assigned.contains(&h.to_ascii_lowercase()) }),
                        );
                    }
                    if last_hash.len() > 1_000_000 {
                        last_hash.clear();
                    }
                    last_hash.insert(e.device.clone(), h.to_ascii_lowercase());
                }
            }
            let model = map.read().await.models.get(e.device.as_str()).cloned();
            self.monitor.observe(Observation::Telemetry {
                device: e.device.to_string(),
                model,
                at_ms: e.at_ms,
                metrics,
                assigned,
            });
        }
    }

    /// What the gateway, EST and attestation tell the bus, for the detectors
    /// and the timeline.
    fn on_event(&self, e: Event) {
        let m = &self.monitor;
        match e {
            Event::SessionUp {
                device,
                address,
                previous,
                takeover,
                at_ms,
            } => {
                let summary = match (takeover, previous) {
                    (Some(old), _) => {
                        format!("connected from {address} while still connected from {old}")
                    }
                    (None, Some(p)) if p != address => {
                        format!("connected from {address} (before: {p})")
                    }
                    _ => format!("connected from {address}"),
                };
                m.event_at(
                    device.as_str(),
                    "connected",
                    summary,
                    json!({ "address": address, "previous": previous, "takeover": takeover.is_some() }),
                    at_ms,
                );
                // A takeover is counted from its own event (below), which
                // every node's takeovers reach.
                m.observe(Observation::Connected {
                    device: device.to_string(),
                    peer: address,
                    takeover: None,
                    at_ms,
                });
            }
            Event::Takeover {
                device,
                from,
                to,
                at_ms,
            } if self.sessions_leader.is_leader() => m.observe(Observation::Connected {
                device: device.to_string(),
                peer: to,
                takeover: Some(from),
                at_ms,
            }),
            Event::SessionDown {
                device,
                reason,
                at_ms,
            } => m.event_at(
                device.as_str(),
                "disconnected",
                format!("disconnected ({reason})"),
                json!({ "reason": reason }),
                at_ms,
            ),
            Event::CredentialRefused {
                device,
                peer,
                place,
                reason,
                at_ms,
            } => m.observe(Observation::AuthFailure {
                device,
                peer,
                place,
                reason,
                at_ms,
            }),
            Event::EnrolmentReplayed {
                device,
                reason,
                at_ms,
            } => m.observe(Observation::EnrolmentReplay {
                device,
                peer: None,
                reason,
                at_ms,
            }),
            Event::AttestationFailed {
                device,
                reason,
                at_ms,
            } => {
                m.event_at(
                    device.as_str(),
                    "attestation",
                    format!("attestation failed: {reason}"),
                    json!({ "ok": false, "reason": reason }),
                    at_ms,
                );
                m.observe(Observation::AttestationFailed {
                    device: device.to_string(),
                    reason: reason.chars().take(200).collect(),
                    at_ms,
                });
            }
            Event::Message(_)
            | Event::CommandsSubscribed { .. }
            | Event::CommandDelivered { .. }
            | Event::CloseSession { .. }
            | Event::CommandQueued { .. }
            | Event::SessionClaimed { .. }
            | Event::Takeover { .. }
            | Event::AlertChanged { .. }
            | Event::NetworkChanged
            | Event::CrlPublished { .. } => {}
        }
    }

    /// Image hashes of the device's director assignment and of the releases
    /// its update reports name.
    async fn assigned_images(&self, device: &DeviceId) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(Some((_, signed))) = self.store.assignment(device).await
            && let Ok(s) =
                serde_json::from_str::<palisade_release::director::SignedAssignment>(&signed)
            && let Ok(bytes) =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &s.payload)
            && let Ok(a) = serde_json::from_slice::<palisade_release::director::Assignment>(&bytes)
        {
            out.push(a.sha256.to_ascii_lowercase());
        }
        if let Ok(Some(d)) = self.store.device(device).await {
            let targets: HashSet<String> = self
                .store
                .updates(Some(device))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.target)
                .collect();
            for r in self
                .store
                .releases(Some(&d.model))
                .await
                .unwrap_or_default()
            {
                if targets
                    .iter()
                    .any(|t| t.contains(&format!("/{}.", r.version)) || *t == r.version)
                {
                    out.push(r.image_sha256.to_ascii_lowercase());
                }
            }
        }
        out
    }

    /// Keeps the address map (which device has which address at which site,
    /// with its policy) in step with the sites: at once when sites,
    /// placements or policies change, and every 10 s (device states).
    async fn refresh_map(
        self,
        map: Arc<tokio::sync::RwLock<AddressMap>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut changes = self.network.changes();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
                r = changes.changed() => if r.is_err() { return },
            }
            let dns = map.read().await.dns.clone();
            match AddressMap::build(&*self.store, &self.network, dns, self.monitor.now_ms()).await {
                Ok(m) => *map.write().await = m,
                Err(e) => tracing::warn!(error = %e, "could not refresh the flow address map"),
            }
        }
    }

    /// The flow collector: datagrams in, flows mapped to devices, observations
    /// and per-minute summaries out.
    async fn collect(
        self,
        socket: tokio::net::UdpSocket,
        map: Arc<tokio::sync::RwLock<AddressMap>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let exporters: Vec<Prefix> = self
            .config
            .flow_exporters
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let mut collector = match Collector::new(CollectorLimits::default()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the flow collector cannot start");
                return;
            }
        };
        let mut buf = vec![0u8; 65_536];
        let mut flows = Vec::new();
        let mut summaries = Summaries::default();
        let mut flush =
            tokio::time::interval(Duration::from_secs(self.config.flow_summary_secs.max(1)));
        let mut reported = palisade_detect::flow::CollectorStats::default();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    summaries.flush(&self.monitor);
                    return;
                }
                _ = flush.tick() => {
                    summaries.flush(&self.monitor);
                    continue;
                }
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    if !exporters.is_empty() && !exporters.iter().any(|p| p.contains(from.ip())) {
                        collector.refuse();
                    } else {
                        collector.decode(from, &buf[..n], self.monitor.now_ms(), &mut flows);
                    }
                }
            }
            if !flows.is_empty() {
                let m = map.read().await;
                for f in flows.drain(..) {
                    self.route(&m, f, &mut summaries);
                }
            }
            let s = collector.stats();
            self.metrics.flow_stats(&reported, s);
            reported = s.clone();
        }
    }

    fn route(&self, m: &AddressMap, f: FlowRecord, summaries: &mut Summaries) {
        let mut mapped = false;
        for (outbound, addr) in [(true, f.src), (false, f.dst)] {
            let Some(entry) = m.lookup(addr, f.exporter) else {
                if let Some(site) = m.segment_site(addr, f.exporter) {
                    let seen = palisade_policy::hosts::HostSeen {
                        address: addr,
                        mac: None,
                        hostname: None,
                        source: palisade_policy::hosts::HostSource::Flows,
                    };
                    if self
                        .monitor
                        .unmapped_tx
                        .try_send((site.clone(), seen, f.octets, f.end_ms))
                        .is_err()
                    {
                        self.metrics.monitor_dropped("unmanaged_sighting");
                    }
                }
                continue;
            };
            mapped = true;
            let d = &entry.bundle.devices[entry.index];
            let verdict = if outbound {
                let dns = m.dns.get(&entry.site);
                verdict::outbound(
                    &entry.bundle,
                    d,
                    f.dst,
                    f.protocol,
                    f.dst_port,
                    f.src_port,
                    &|name, ip| dns.map(|v| v.resolves(name.as_str(), ip)),
                )
            } else {
                verdict::inbound(&entry.bundle, f.src, f.protocol, f.src_port)
            };
            summaries.add(&d.device, outbound, &f, verdict);
            self.monitor.observe(Observation::Flow {
                device: d.device.clone(),
                model: m.models.get(&d.device).cloned(),
                outbound,
                flow: f.clone(),
                verdict,
            });
        }
        self.metrics.flow_mapped(mapped);
        if !mapped {
            tracing::debug!(src = %f.src, dst = %f.dst, exporter = %f.exporter, "flow matches no placed device");
        }
    }
}

/// One device at one site.
#[derive(Debug)]
struct Placed {
    site: SiteName,
    bundle: Arc<SiteBundle>,
    index: usize,
}

/// Addresses → devices, with each site's bundle (for the policy verdict) and
/// the DNS answers its edges reported.
#[derive(Debug, Default)]
pub struct AddressMap {
    by_address: HashMap<IpAddr, Vec<Placed>>,
    /// Edge addresses seen, by site (to pick a site when addresses overlap).
    edges: HashMap<IpAddr, SiteName>,
    dns: HashMap<SiteName, DnsView>,
    models: HashMap<String, String>,
    /// Each site's bundle (its segments, for addresses no device holds).
    sites: Vec<Arc<SiteBundle>>,
}

impl AddressMap {
    /// Builds the map afresh; DNS answers add to `dns` (what earlier builds
    /// remembered).
    async fn build(
        store: &dyn Store,
        network: &Network,
        dns: HashMap<SiteName, DnsView>,
        now_ms: i64,
    ) -> Result<Self, crate::error::ServiceError> {
        let mut m = AddressMap {
            dns,
            ..AddressMap::default()
        };
        for site in store.sites().await? {
            let bundle = Arc::new(network.bundle(&site.name).await?);
            m.sites.push(bundle.clone());
            for (index, d) in bundle.devices.iter().enumerate() {
                m.by_address.entry(d.address).or_default().push(Placed {
                    site: site.name.clone(),
                    bundle: bundle.clone(),
                    index,
                });
            }
            for e in store.edges(Some(&site.name)).await? {
                let status: serde_json::Value = serde_json::from_str(&e.status).unwrap_or_default();
                if let Some(ip) = status["address"].as_str().and_then(|a| a.parse().ok()) {
                    m.edges.insert(ip, site.name.clone());
                }
                if let Some(names) = status["dns"].as_object() {
                    let site_dns = m.dns.entry(site.name.clone()).or_default();
                    for (name, addrs) in names {
                        for a in addrs.as_array().into_iter().flatten() {
                            if let Some(ip) = a.as_str().and_then(|s| s.parse().ok()) {
                                site_dns.saw(name, ip, now_ms);
                            }
                        }
                    }
                }
            }
        }
        let all = palisade_store::DeviceFilter {
            limit: Some(palisade_policy::site::MAX_DEVICES as u32 * 10),
            ..palisade_store::DeviceFilter::default()
        };
        for d in store.devices(&all).await? {
            m.models.insert(d.id.to_string(), d.model.to_string());
        }
        for v in m.dns.values_mut() {
            v.prune(now_ms);
        }
        Ok(m)
    }

    /// The site on whose segments `addr` is a host address (the exporter's
    /// site when several sites use the same private range), if any.
    fn segment_site(&self, addr: IpAddr, exporter: IpAddr) -> Option<SiteName> {
        let mut on = self
            .sites
            .iter()
            .filter(|b| palisade_policy::hosts::on_segments(&b.spec, addr));
        let first = on.next()?;
        match on.next() {
            None => first.site.parse().ok(),
            Some(_) => self.edges.get(&exporter).cloned(),
        }
    }

    fn lookup(&self, addr: IpAddr, exporter: IpAddr) -> Option<&Placed> {
        let list = self.by_address.get(&addr)?;
        if list.len() == 1 {
            return list.first();
        }
        // The same private address at several sites: the exporter's site.
        let site = self.edges.get(&exporter)?;
        list.iter().find(|p| &p.site == site)
    }
}

/// Per-device flow summaries for the timeline, one event a minute.
#[derive(Debug, Default)]
struct Summaries {
    by_device: HashMap<String, Summary>,
}

#[derive(Debug, Default)]
struct Summary {
    first_ms: i64,
    last_ms: i64,
    flows: u64,
    bytes_out: u64,
    bytes_in: u64,
    packets: u64,
    violations: u64,
    peers: HashMap<IpAddr, u64>,
}

impl Summaries {
    fn add(&mut self, device: &str, outbound: bool, f: &FlowRecord, v: Verdict) {
        if !self.by_device.contains_key(device) {
            if self.by_device.len() >= 1_000_000 {
                return;
            }
            self.by_device.insert(device.to_owned(), Summary::default());
        }
        let Some(s) = self.by_device.get_mut(device) else {
            return;
        };
        if s.flows == 0 || f.start_ms < s.first_ms {
            s.first_ms = f.start_ms;
        }
        s.last_ms = s.last_ms.max(f.end_ms);
        s.flows += 1;
        s.packets = s.packets.saturating_add(f.packets);
        if outbound {
            s.bytes_out = s.bytes_out.saturating_add(f.octets);
        } else {
            s.bytes_in = s.bytes_in.saturating_add(f.octets);
        }
        if v == Verdict::Violation {
            s.violations += 1;
        }
        let peer = if outbound { f.dst } else { f.src };
        if s.peers.len() < 256 || s.peers.contains_key(&peer) {
            *s.peers.entry(peer).or_default() += f.octets;
        }
    }

    fn flush(&mut self, monitor: &Monitor) {
        for (device, s) in self.by_device.drain() {
            let mut peers: Vec<(IpAddr, u64)> = s.peers.into_iter().collect();
            peers.sort_by_key(|p| std::cmp::Reverse(p.1));
            let distinct = peers.len();
            peers.truncate(10);
            monitor.event(
                &device,
                "flows",
                format!(
                    "{} flows, {} B out, {} B in, {} peers{}",
                    s.flows,
                    s.bytes_out,
                    s.bytes_in,
                    distinct,
                    if s.violations > 0 {
                        format!(", {} outside policy", s.violations)
                    } else {
                        String::new()
                    }
                ),
                json!({
                    "from_ms": s.first_ms, "to_ms": s.last_ms, "flows": s.flows,
                    "bytes_out": s.bytes_out, "bytes_in": s.bytes_in, "packets": s.packets,
                    "violations": s.violations, "peers": distinct,
                    "top_peers": peers.iter().map(|(a, b)| json!({ "address": a, "bytes": b })).collect::<Vec<_>>(),
                }),
            );
        }
    }
}

/// Receive buffer asked for the collector's socket: exporters send in bursts.
const FLOW_RCVBUF: usize = 8 << 20;

/// Binds the flow collector's socket (with a large receive buffer, as nfcapd's
/// `-B`; the kernel caps it at `net.core.rmem_max`).
pub async fn bind_flows(addr: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    use anyhow::Context;
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = || -> std::io::Result<std::net::UdpSocket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let Err(e) = s.set_recv_buffer_size(FLOW_RCVBUF) {
            tracing::warn!(error = %e, "could not enlarge the flow collector's receive buffer");
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    let std = bind().with_context(|| {
        format!(
            "cannot listen for IPFIX/NetFlow on UDP {addr}: is another collector using the port? Choose another with --flow-listen"
        )
    })?;
    Ok(tokio::net::UdpSocket::from_std(std)?)
}
