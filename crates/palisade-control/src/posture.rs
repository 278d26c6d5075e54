//! The posture service: gathers each device's evidence from the store (in a
//! few bulk reads, not per device), judges it with the pure engine
//! (`palisade-posture`) against every framework, keeps the fleet's latest
//! outcomes in memory for the console and the API, and records a daily
//! snapshot per framework and scope for the trend.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use palisade_core::{Clock, DeviceId, DeviceState, KeyProtection, UpdateState};
use palisade_posture::evidence::{
    Activity, AlertCounts, Attested, AuditRef, Certificate, Enrolment, Firmware, Network, Release,
    Supplier, Support,
};
use palisade_posture::{
    DeviceEvidence, DeviceResult, Framework, Outcome, Summary, Tally, Thresholds, evaluate,
};
use palisade_store::leader::Leadership;
use palisade_store::{
    AlertFilter, CertFilter, CertStatus, Change, DeviceFilter, PostureSnapshotRecord,
    ReleaseRecord, Store,
};
use tokio::sync::watch;

use crate::error::ServiceError;
use crate::sessions::Sessions;

/// Audit actions that evidence a device's enrolment and lifecycle.
const AUDIT_ACTIONS: [&str; 7] = [
    "device.register",
    "est.enroll",
    "est.reenroll",
    "cert.issue",
    "device.active",
    "device.approve",
    "attest.quote",
];

/// One device's latest outcomes, per framework (in `Framework::ALL` order)
/// and control (in the framework's order).
#[derive(Debug, Clone)]
pub struct DevicePosture {
    /// The device.
    pub device: String,
    /// Its model.
    pub model: String,
    /// Its site.
    pub site: Option<String>,
    /// Outcomes, `[framework][control]`.
    pub outcomes: [Vec<Outcome>; 4],
}

impl DevicePosture {
    fn index(f: Framework) -> usize {
        Framework::ALL.iter().position(|x| *x == f).unwrap_or(0)
    }

    /// The outcomes for one framework.
    pub fn of(&self, f: Framework) -> &[Outcome] {
        &self.outcomes[Self::index(f)]
    }

    /// Its tally for one framework.
    pub fn tally(&self, f: Framework) -> Tally {
        let mut t = Tally::default();
        for o in self.of(f) {
            t.add(*o);
        }
        t
    }
}

/// The fleet's latest evaluation.
#[derive(Debug, Clone, Default)]
pub struct FleetPosture {
    /// When it was made, Unix ms.
    pub at_ms: i64,
    /// How long it took, ms.
    pub took_ms: u64,
    /// Every device not decommissioned.
    pub devices: Vec<DevicePosture>,
    /// Position in `devices`, by device id.
    index: HashMap<String, usize>,
}

impl FleetPosture {
    /// One device's latest outcomes.
    pub fn get(&self, device: &str) -> Option<&DevicePosture> {
        self.index.get(device).and_then(|i| self.devices.get(*i))
    }

    /// The summary of one framework over the devices `keep` selects.
    pub fn summary(&self, f: Framework, keep: impl Fn(&DevicePosture) -> bool) -> Summary {
        let mut s = Summary::default();
        let controls = f.controls();
        for d in self.devices.iter().filter(|d| keep(d)) {
            let t = d.tally(f);
            s.devices += 1;
            s.fleet.merge(&t);
            s.by_model.entry(d.model.clone()).or_default().merge(&t);
            s.by_site
                .entry(d.site.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .merge(&t);
            for (c, o) in controls.iter().zip(d.of(f)) {
                s.by_control.entry(c.id.to_owned()).or_default().add(*o);
            }
        }
        s
    }
}

/// The posture service.
#[derive(Debug)]
pub struct Posture {
    store: Arc<dyn Store>,
    sessions: Arc<Sessions>,
    clock: Arc<dyn Clock>,
    thresholds: Thresholds,
    latest: RwLock<Option<Arc<FleetPosture>>>,
}

/// The UTC day (`YYYY-MM-DD`) of Unix ms.
pub(crate) fn day_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

fn release(r: &ReleaseRecord) -> Release {
    Release {
        version: r.version.clone(),
        security_version: r.security_version,
        gated: !r.sbom_sha256.is_empty()
            && !r.provenance_sha256.is_empty()
            && !r.signed_by.is_empty(),
        created_ms: r.created_ms,
    }
}

impl Posture {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
        clock: Arc<dyn Clock>,
        thresholds: Thresholds,
    ) -> Self {
        Self {
            store,
            sessions,
            clock,
            thresholds,
            latest: RwLock::new(None),
        }
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The latest fleet evaluation, if one has run.
    pub fn latest(&self) -> Option<Arc<FleetPosture>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Gathers the evidence of every device that is not decommissioned (or of
    /// `only`), in bulk reads.
    pub async fn evidence(
        &self,
        only: Option<&DeviceId>,
    ) -> Result<Vec<DeviceEvidence>, ServiceError> {
        let store = &*self.store;
        let devices = match only {
            Some(id) => store
                .device(id)
                .await?
                .map(|d| vec![d])
                .ok_or_else(|| ServiceError::NotFound(format!("device {id} not found")))?,
            None => store
                .devices(&DeviceFilter {
                    limit: Some(u32::MAX),
                    ..DeviceFilter::default()
                })
                .await?
                .into_iter()
                .filter(|d| d.state != DeviceState::Decommissioned)
                .collect(),
        };
        let models: HashMap<String, _> = store
            .models()
            .await?
            .into_iter()
            .map(|m| (m.id.to_string(), m))
            .collect();
        let mut suppliers = HashMap::new();
        for s in store.suppliers().await? {
            let keys = store.supplier_keys(&s.name).await?.len();
            suppliers.insert(
                s.name.to_string(),
                Supplier {
                    name: s.name.to_string(),
                    signing_keys: u32::try_from(keys).unwrap_or(u32::MAX),
                    disclosure_contact: s.disclosure_contact.clone(),
                },
            );
        }
        let mut releases: HashMap<String, Vec<ReleaseRecord>> = HashMap::new();
        for r in store.releases(None).await? {
            releases.entry(r.model.to_string()).or_default().push(r);
        }
        let updates: HashMap<String, (UpdateState, i64)> = store
            .updates(only)
            .await?
            .into_iter()
            .map(|u| (u.device.to_string(), (u.state, u.updated_ms)))
            .collect();
        let mut certs: HashMap<String, Certificate> = HashMap::new();
        for c in store
            .certificates(&CertFilter {
                device: only.cloned(),
                status: Some(CertStatus::Valid),
                limit: Some(u32::MAX),
            })
            .await?
        {
            let Some(d) = c.device else { continue };
            let newer = certs
                .get(d.as_str())
                .is_none_or(|prev| prev.not_after_ms < c.not_after_ms);
            if newer {
                certs.insert(
                    d.to_string(),
                    Certificate {
                        serial: c.serial,
                        not_before_ms: c.not_before_ms,
                        not_after_ms: c.not_after_ms,
                        key_type: None,
                    },
                );
            }
        }
        let placements: HashMap<String, _> = store
            .placements(None)
            .await?
            .into_iter()
            .map(|p| (p.device.to_string(), p))
            .collect();
        let legacy_sites: HashMap<String, bool> = store
            .sites()
            .await?
            .into_iter()
            .map(|s| {
                let legacy = serde_json::from_str::<serde_json::Value>(&s.spec)
                    .ok()
                    .is_some_and(|v| !v["legacy_mqtt_port"].is_null());
                (s.name.to_string(), legacy)
            })
            .collect();
        // Per site: the newest bundle an edge applied, when, and its denials.
        let mut edges: HashMap<String, (u64, i64, u64)> = HashMap::new();
        for e in store.edges(None).await? {
            let denied = serde_json::from_str::<serde_json::Value>(&e.status)
                .ok()
                .map(|v| {
                    ["denied_out", "denied_in"]
                        .iter()
                        .filter_map(|k| v["counters"][*k]["packets"].as_u64())
                        .sum()
                })
                .unwrap_or(0);
            let best = edges.entry(e.site.to_string()).or_insert((0, 0, 0));
            if e.applied_version >= best.0 {
                *best = (e.applied_version, e.updated_ms, denied);
            }
        }
        let mut policies = HashMap::new();
        for m in models.values() {
            if let Some(p) = store.model_policy(&m.id).await? {
                policies.insert(m.id.to_string(), p.open_override);
            }
        }
        let mut alerts: HashMap<String, AlertCounts> = HashMap::new();
        for state in [
            palisade_core::AlertState::Open,
            palisade_core::AlertState::Acknowledged,
        ] {
            for a in store
                .alerts(&AlertFilter {
                    state: Some(state),
                    device: only.map(|d| d.to_string()),
                    since_ms: None,
                    limit: u32::MAX,
                })
                .await?
            {
                let Some(d) = a.device else { continue };
                let c = alerts.entry(d).or_default();
                match a.severity.as_str() {
                    "critical" => c.critical += 1,
                    "high" => c.high += 1,
                    "medium" => c.medium += 1,
                    _ => c.low += 1,
                }
            }
        }
        let mut audit: HashMap<String, Vec<AuditRef>> = HashMap::new();
        let mut token_enrolled: HashMap<String, bool> = HashMap::new();
        for r in store.audit_refs(&AUDIT_ACTIONS).await? {
            if only.is_some_and(|d| d.as_str() != r.subject) {
                continue;
            }
            if r.action == "est.enroll" {
                let token = serde_json::from_str::<serde_json::Value>(&r.detail)
                    .ok()
                    .is_some_and(|v| v["method"] == "token");
                token_enrolled.insert(r.subject.clone(), token);
            }
            audit.entry(r.subject).or_default().push(AuditRef {
                index: r.index,
                action: r.action,
                at_ms: r.time_ms,
            });
        }
        let connected_from: HashMap<String, String> = store
            .latest_device_events("connected")
            .await?
            .into_iter()
            .filter_map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.detail).ok()?;
                Some((e.device, v["address"].as_str()?.to_owned()))
            })
            .collect();

        let mut out = Vec::with_capacity(devices.len());
        for d in devices {
            let id = d.id.to_string();
            let model = models.get(d.model.as_str());
            let model_releases = releases.get(d.model.as_str());
            let newest = model_releases
                .and_then(|rs| rs.iter().max_by_key(|r| (r.security_version, r.created_ms)))
                .map(release);
            let running = d.reported_firmware.as_ref().and_then(|v| {
                model_releases
                    .and_then(|rs| rs.iter().find(|r| &r.version == v))
                    .map(release)
            });
            let placement = placements.get(&id);
            let site = placement.map(|p| p.site.to_string());
            let edge = site.as_ref().and_then(|s| edges.get(s));
            let attached: Option<serde_json::Value> = d
                .onboarding
                .attached_policy
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok());
            let mut certificate = certs.remove(&id);
            if let (Some(c), Some(a)) = (certificate.as_mut(), &attached) {
                c.key_type = a["key_type"].as_str().map(str::to_owned);
            }
            let legacy_bridge = match (placement, &site) {
                (Some(p), Some(s)) => {
                    legacy_sites.get(s).copied().unwrap_or(false)
                        && connected_from
                            .get(&id)
                            .is_some_and(|addr| *addr != p.address)
                }
                _ => false,
            };
            let attestation = match (
                d.hardware.attestation_status.as_deref(),
                d.hardware.attested_ms,
            ) {
                (Some(status), Some(at)) => Some(Attested {
                    ok: status == "ok",
                    detail: d.hardware.attestation_detail.clone().unwrap_or_default(),
                    at_ms: at,
                }),
                _ => None,
            };
            out.push(DeviceEvidence {
                device: id.clone(),
                model: d.model.to_string(),
                site,
                state: Some(d.state),
                key_protection: d.hardware.key_protection,
                attestation,
                attestation_required: model.is_some_and(|m| m.attestation == "tpm"),
                enrolment: Enrolment {
                    enrolled: d.state != DeviceState::Registered,
                    birth_identity: d.onboarding.birth_cert_sha256.is_some(),
                    token: token_enrolled.get(&id).copied().unwrap_or(false),
                    approved_ms: d.onboarding.approved_ms,
                },
                certificate,
                firmware: Firmware {
                    reported_version: d.reported_firmware.clone(),
                    running,
                    newest,
                    last_update: updates.get(&id).copied(),
                },
                support: Support {
                    until_ms: model.and_then(|m| m.support_until_ms),
                    security_update_days: model.and_then(|m| m.security_update_days),
                },
                network: Network {
                    placed: placement.is_some(),
                    placed_ms: placement.map(|p| p.updated_ms),
                    model_policy: policies.contains_key(d.model.as_str()),
                    open_override: policies.get(d.model.as_str()).copied().unwrap_or(false),
                    edge_applied: edge.map(|e| (e.0, e.1)),
                    denied_packets: edge.map(|e| e.2),
                    legacy_bridge,
                },
                activity: Activity {
                    connected: self.sessions.is_connected(&d.id),
                    last_seen_ms: d.last_seen_ms,
                    transport: self.sessions.transport(&d.id),
                },
                open_alerts: alerts.get(&id).copied().unwrap_or_default(),
                supplier: model
                    .and_then(|m| m.supplier.as_ref())
                    .and_then(|s| suppliers.get(s.as_str()).cloned()),
                audit: audit.remove(&id).unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// One device judged against every framework (fresh, with evidence).
    pub async fn device(&self, id: &DeviceId) -> Result<Vec<DeviceResult>, ServiceError> {
        let now = self.clock.now_ms();
        let evidence = self.evidence(Some(id)).await?;
        let e = evidence
            .first()
            .ok_or_else(|| ServiceError::NotFound(format!("device {id} not found")))?;
        Ok(Framework::ALL
            .iter()
            .map(|f| evaluate(e, *f, now, &self.thresholds))
            .collect())
    }

    /// Evaluates the whole fleet, keeps the result as the latest, and records
    /// today's snapshots.
    pub async fn evaluate_fleet(&self) -> Result<Arc<FleetPosture>, ServiceError> {
        self.evaluate(true).await
    }

    /// Evaluates the fleet and keeps the result; records today's snapshots
    /// only if `record` (one node of a cluster records them).
    async fn evaluate(&self, record: bool) -> Result<Arc<FleetPosture>, ServiceError> {
        let started = std::time::Instant::now();
        let now = self.clock.now_ms();
        let evidence = self.evidence(None).await?;
        let devices: Vec<DevicePosture> = evidence
            .iter()
            .map(|e| DevicePosture {
                device: e.device.clone(),
                model: e.model.clone(),
                site: e.site.clone(),
                outcomes: Framework::ALL.map(|f| {
                    evaluate(e, f, now, &self.thresholds)
                        .controls
                        .into_iter()
                        .map(|c| c.outcome)
                        .collect()
                }),
            })
            .collect();
        let index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.device.clone(), i))
            .collect();
        let fleet = Arc::new(FleetPosture {
            at_ms: now,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            devices,
            index,
        });
        if let Ok(mut l) = self.latest.write() {
            *l = Some(fleet.clone());
        }
        if record {
            self.snapshot(&fleet).await?;
        }
        Ok(fleet)
    }

    async fn snapshot(&self, fleet: &FleetPosture) -> Result<(), ServiceError> {
        let day = day_of(fleet.at_ms);
        let mut rows = Vec::new();
        for f in Framework::ALL {
            let s = fleet.summary(f, |_| true);
            let row = |scope: String, t: &Tally, devices: u64| PostureSnapshotRecord {
                day: day.clone(),
                framework: f.as_str().to_owned(),
                scope,
                pass: t.pass,
                fail: t.fail,
                unknown: t.unknown,
                not_assessable: t.not_assessable,
                devices,
            };
            rows.push(row("fleet".into(), &s.fleet, s.devices));
            for (m, t) in &s.by_model {
                rows.push(row(format!("model:{m}"), t, 0));
            }
            for (site, t) in &s.by_site {
                rows.push(row(format!("site:{site}"), t, 0));
            }
        }
        self.store
            .commit(vec![Change::RecordPostureSnapshots(rows)], vec![])
            .await?;
        Ok(())
    }

    /// The daily trend of one framework's score for a scope over `days` days.
    pub async fn trend(
        &self,
        framework: Framework,
        scope: &str,
        days: u32,
    ) -> Result<Vec<(String, Option<f64>)>, ServiceError> {
        let since = day_of(self.clock.now_ms() - i64::from(days) * 86_400_000);
        Ok(self
            .store
            .posture_snapshots(framework.as_str(), scope, &since)
            .await?
            .into_iter()
            .map(|p| {
                let t = Tally {
                    pass: p.pass,
                    fail: p.fail,
                    unknown: p.unknown,
                    not_assessable: p.not_assessable,
                };
                (p.day, t.score())
            })
            .collect())
    }

    /// Evaluates the fleet now and then every `every` until `stop`; the node
    /// holding `leader` records the daily snapshots, every node keeps its own
    /// latest evaluation for its pages.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        leader: Arc<Leadership>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    match self.evaluate(leader.is_leader()).await {
                        Ok(f) => tracing::debug!(devices = f.devices.len(), took_ms = f.took_ms, "posture evaluated"),
                        Err(e) => tracing::warn!(error = %e, "posture evaluation failed"),
                    }
                }
            }
        }
    }
}

/// The key protection recorded for a device, as shown.
pub fn protection_name(k: Option<KeyProtection>) -> &'static str {
    k.map_or("-", KeyProtection::as_str)
}
