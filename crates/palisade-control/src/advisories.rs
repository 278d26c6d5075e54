//! Vulnerability advisories against the fleet: OSV records are imported (in
//! batches the CLI reads from a file, a directory or OSV's per-ecosystem zip),
//! matched against the components of every accepted release's CycloneDX SBOM
//! (`palisade-advisory`), and answered as "which releases and devices does
//! this advisory hit". A newly imported advisory that hits firmware devices
//! run raises a `vulnerable_firmware` alert per release, with the evidence.
//!
//! Matches are kept in the store (per advisory, per release), so answering
//! for 100 000 devices is a read and a join in memory, not a re-match.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use palisade_advisory::{
    Package, Record, affected_at_commit, affected_by, components, parse_record,
};
use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceState, ModelId};
use palisade_detect::detect::{Detector, Finding, Severity};
use palisade_store::{
    AdvisoryMatchRecord, AdvisoryRecord, Change, DeviceFilter, DeviceRecord, ReleaseRecord, Store,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::alerts::Alerts;
use crate::blobs::BlobStore;
use crate::error::ServiceError;

/// Most records in one import call.
pub const MAX_BATCH: usize = 1000;
/// Largest SBOM read for matching.
const MAX_SBOM_BYTES: u64 = 64 << 20;

/// What an import did.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    /// Records seen for the first time.
    pub new: usize,
    /// Records whose `modified` (or content) changed.
    pub updated: usize,
    /// Records already stored as they are.
    pub unchanged: usize,
    /// Of the new and updated, those withdrawn (they match nothing).
    pub withdrawn: usize,
    /// Records refused, with why.
    pub refused: Vec<Refused>,
    /// Releases that devices run and that an imported record newly hits.
    pub exposed: Vec<Exposure>,
    /// Advisories among them recent enough to raise an alert (one each).
    pub alerted: usize,
}

/// A record that was refused.
#[derive(Debug, Serialize)]
pub struct Refused {
    /// Its id, if it had a readable one.
    pub id: String,
    /// Why.
    pub error: String,
}

/// A release newly hit by an advisory.
#[derive(Debug, Clone, Serialize)]
pub struct Exposure {
    /// The advisory.
    pub advisory: String,
    /// The release's model.
    pub model: String,
    /// The release.
    pub version: String,
    /// Devices running it.
    pub devices: usize,
}

/// One component of an accepted release, by the package it is.
#[derive(Debug, Clone)]
struct Component {
    model: ModelId,
    version: String,
    package: Package,
    purl: String,
    component_version: String,
    /// The commit it was built from, if the SBOM says.
    commit: Option<String>,
}

/// Every accepted release's components, by package.
#[derive(Debug, Default)]
struct ReleaseIndex {
    /// The releases it was built from (it is rebuilt when they change).
    releases: BTreeSet<(String, String)>,
    by_package: HashMap<(String, String), Vec<Component>>,
}

/// The store key of a package: (OSV ecosystem without release, name).
fn key(p: &Package) -> (String, String) {
    use palisade_advisory::Ecosystem as E;
    let e = match &p.ecosystem {
        E::CratesIo => "crates.io".to_owned(),
        E::Npm => "npm".to_owned(),
        E::Go => "Go".to_owned(),
        E::PyPi => "PyPI".to_owned(),
        E::Debian(_) => "Debian".to_owned(),
        E::Alpine(_) => "Alpine".to_owned(),
        E::Other(s) => s.split(':').next().unwrap_or(s).to_owned(),
    };
    (e, p.name.clone())
}

/// The packages a record names, as store keys.
fn packages(r: &Record) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .affected
        .iter()
        .filter_map(|a| a.package.as_ref())
        .map(|p| key(&Package::from_osv(p)))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn severity(label: Option<&str>) -> Severity {
    match label {
        Some("CRITICAL") => Severity::Critical,
        Some("MODERATE" | "MEDIUM") => Severity::Medium,
        Some("LOW") => Severity::Low,
        _ => Severity::High,
    }
}

/// The advisories service.
#[derive(Debug)]
pub struct Advisories {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    alerts: Arc<Alerts>,
    clock: Arc<dyn Clock>,
    index: Mutex<ReleaseIndex>,
    /// Records published within this many days raise alerts.
    alert_within_days: u32,
    /// Devices running each (model, firmware), and when they were counted.
    counts: Mutex<Option<(i64, RunningCounts)>>,
}

/// Devices running each (model, firmware).
type RunningCounts = HashMap<(String, String), usize>;

/// How long device counts are reused.
const COUNTS_TTL_MS: i64 = 10_000;

impl Advisories {
    /// The service.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        alerts: Arc<Alerts>,
        clock: Arc<dyn Clock>,
        alert_within_days: u32,
    ) -> Self {
        Self {
            store,
            blobs,
            alerts,
            clock,
            index: Mutex::default(),
            alert_within_days,
            counts: Mutex::default(),
        }
    }

    /// Whether `record` is recent enough to alert on.
    fn alerts_on(&self, record: &Record, now: i64) -> bool {
        let when = record.published.as_deref().unwrap_or(&record.modified);
        when.parse::<jiff::Timestamp>().is_ok_and(|t| {
            now - t.as_millisecond() <= i64::from(self.alert_within_days) * 86_400_000
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Drops the cached device counts: the next read counts afresh.
    pub(crate) async fn forget_counts(&self) {
        *self.counts.lock().await = None;
    }

    /// The time now, Unix ms.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Every component of one release's SBOM (empty, with a warning, when
    /// the SBOM is missing, too large or unreadable).
    pub(crate) async fn sbom_of(
        &self,
        r: &ReleaseRecord,
    ) -> Result<Vec<palisade_advisory::sbom::Component>, ServiceError> {
        let read = self.blobs.read(&r.sbom_sha256, None).await?;
        let Some(read) = read.filter(|b| b.len <= MAX_SBOM_BYTES) else {
            tracing::warn!(model = %r.model, version = %r.version, "the release's SBOM is missing or too large; not matched");
            return Ok(Vec::new());
        };
        let bytes = read.bytes().await?;
        Ok(components(&bytes).unwrap_or_else(|e| {
            tracing::warn!(model = %r.model, version = %r.version, error = %e, "the release's SBOM could not be read; not matched");
            Vec::new()
        }))
    }

    /// The components of one release's SBOM that name a package an advisory
    /// can name.
    async fn release_components(&self, r: &ReleaseRecord) -> Result<Vec<Component>, ServiceError> {
        Ok(self
            .sbom_of(r)
            .await?
            .into_iter()
            .filter_map(|c| {
                let purl = c.purl?;
                let (package, v) = Package::from_purl(&purl)?;
                Some(Component {
                    model: r.model.clone(),
                    version: r.version.clone(),
                    package,
                    component_version: v.or(c.version)?,
                    purl,
                    commit: c.commit,
                })
            })
            .collect())
    }

    /// Rebuilds the index of the accepted releases' components if the
    /// releases changed.
    async fn refresh_index(&self, index: &mut ReleaseIndex) -> Result<(), ServiceError> {
        let releases = self.store.releases(None).await?;
        let keys: BTreeSet<(String, String)> = releases
            .iter()
            .map(|r| (r.model.to_string(), r.version.clone()))
            .collect();
        if keys == index.releases {
            return Ok(());
        }
        let mut by_package: HashMap<(String, String), Vec<Component>> = HashMap::new();
        for r in &releases {
            for c in self.release_components(r).await? {
                by_package.entry(key(&c.package)).or_default().push(c);
            }
        }
        *index = ReleaseIndex {
            releases: keys,
            by_package,
        };
        Ok(())
    }

    fn matches_of(record: &Record, index: &ReleaseIndex) -> Vec<AdvisoryMatchRecord> {
        let mut out: Vec<AdvisoryMatchRecord> = Vec::new();
        for k in packages(record) {
            for c in index.by_package.get(&k).into_iter().flatten() {
                let hit = affected_by(record, &c.package, &c.component_version).or_else(|| {
                    c.commit
                        .as_deref()
                        .and_then(|k| affected_at_commit(record, &c.package, k))
                });
                if let Some(hit) = hit
                    && !out.iter().any(|m| {
                        m.model == c.model && m.version == c.version && m.component == c.purl
                    })
                {
                    out.push(AdvisoryMatchRecord {
                        advisory: record.id.clone(),
                        model: c.model.clone(),
                        version: c.version.clone(),
                        component: c.purl.clone(),
                        component_version: c.component_version.clone(),
                        why: hit.why,
                        fixed: hit.fixed,
                    });
                }
            }
        }
        out
    }

    /// Imports a batch of OSV records (at most [`MAX_BATCH`]): each is
    /// checked, stored if new or changed, and matched against every accepted
    /// release. One audit entry records the batch.
    pub async fn import(
        &self,
        actor: &str,
        records: &[serde_json::Value],
    ) -> Result<ImportReport, ServiceError> {
        if records.len() > MAX_BATCH {
            return Err(ServiceError::BadRequest {
                code: "too_many_records",
                message: format!(
                    "{} records in one request; send at most {MAX_BATCH} at a time",
                    records.len()
                ),
            });
        }
        let now = self.clock.now_ms();
        let mut report = ImportReport::default();
        let mut index = self.index.lock().await;
        self.refresh_index(&mut index).await?;
        let mut changes = Vec::new();
        let mut newly: Vec<(Record, Vec<AdvisoryMatchRecord>)> = Vec::new();
        for raw in records {
            let bytes =
                serde_json::to_vec(raw).map_err(|e| ServiceError::Internal(e.to_string()))?;
            let record = match parse_record(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    report.refused.push(Refused {
                        id: raw
                            .get("id")
                            .and_then(|v| v.as_str())
                            .map(|s| s.chars().take(80).collect())
                            .unwrap_or_default(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let stored = self.store.advisory(&record.id).await?;
            if let Some(s) = &stored
                && s.body == bytes
            {
                report.unchanged += 1;
                continue;
            }
            match &stored {
                Some(_) => report.updated += 1,
                None => report.new += 1,
            }
            if record.withdrawn.is_some() {
                report.withdrawn += 1;
            }
            let before: BTreeSet<(String, String)> = self
                .store
                .advisory_matches(Some(&record.id))
                .await?
                .into_iter()
                .map(|m| (m.model.to_string(), m.version))
                .collect();
            let matches = Self::matches_of(&record, &index);
            let gained: Vec<AdvisoryMatchRecord> = matches
                .iter()
                .filter(|m| !before.contains(&(m.model.to_string(), m.version.clone())))
                .cloned()
                .collect();
            changes.push(Change::UpsertAdvisory {
                record: AdvisoryRecord {
                    id: record.id.clone(),
                    modified: record.modified.clone(),
                    withdrawn: record.withdrawn.clone(),
                    summary: record
                        .summary
                        .clone()
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect(),
                    severity: record.severity_label(),
                    body: bytes,
                    first_seen_ms: stored.as_ref().map_or(now, |s| s.first_seen_ms),
                    updated_ms: now,
                },
                ids: record.ids().map(str::to_owned).collect(),
                packages: packages(&record),
            });
            changes.push(Change::SetAdvisoryMatches {
                advisory: record.id.clone(),
                matches,
            });
            if !gained.is_empty() {
                newly.push((record, gained));
            }
        }
        drop(index);
        let audit =
            EntryDraft::success(actor, "advisories.import", "advisories").with_detail(json!({
                "new": report.new, "updated": report.updated, "unchanged": report.unchanged,
                "withdrawn": report.withdrawn, "refused": report.refused.len(),
            }));
        self.store.commit(changes, vec![audit]).await?;
        // Who runs what, for the releases newly hit; one alert per recent
        // advisory, over all the releases it newly hits.
        let (running, suppressed) = if newly.is_empty() {
            (HashMap::new(), Vec::new())
        } else {
            (self.running_counts().await?, self.suppressions().await?)
        };
        let mut findings = Vec::new();
        for (record, gained) in newly {
            let mut hits = Vec::new();
            for m in gained {
                if suppressing(&suppressed, &m).is_some() {
                    continue; // its supplier says it is not affected
                }
                let n = running
                    .get(&(m.model.to_string(), m.version.clone()))
                    .copied()
                    .unwrap_or(0);
                if n == 0 {
                    continue;
                }
                report.exposed.push(Exposure {
                    advisory: record.id.clone(),
                    model: m.model.to_string(),
                    version: m.version.clone(),
                    devices: n,
                });
                hits.push((m, n));
            }
            if !hits.is_empty() && self.alerts_on(&record, now) {
                findings.push(self.finding(&record, &hits, now));
                report.alerted += 1;
            }
        }
        if !findings.is_empty() {
            self.alerts.raise(findings).await;
        }
        Ok(report)
    }

    fn finding(&self, record: &Record, hits: &[(AdvisoryMatchRecord, usize)], now: i64) -> Finding {
        let label = record.severity_label();
        let devices: usize = hits.iter().map(|h| h.1).sum();
        let aliases = record.aliases.join(", ");
        let first = &hits[0].0;
        let releases: Vec<serde_json::Value> = hits
            .iter()
            .take(50)
            .map(|(m, n)| {
                json!({"model": m.model.as_str(), "release": m.version, "component": m.component,
                       "component_version": m.component_version, "range": m.why,
                       "fixed": m.fixed, "devices": n})
            })
            .collect();
        Finding {
            detector: Detector::VulnerableFirmware,
            severity: severity(label.as_deref()),
            device: None,
            peer: None,
            key: format!("vulnerable_firmware:{}", record.id),
            summary: format!(
                "{devices} device(s) run firmware affected by {}{} ({}): {} release(s), e.g. {} {} with {}; {}",
                record.id,
                if aliases.is_empty() {
                    String::new()
                } else {
                    format!(" / {aliases}")
                },
                record.summary.as_deref().unwrap_or("no summary"),
                hits.len(),
                first.model,
                first.version,
                first.component,
                match &first.fixed {
                    Some(f) => format!("fixed in {f}"),
                    None => "no fixed version yet".into(),
                }
            ),
            evidence: json!({
                "advisory": record.id, "aliases": record.aliases, "severity": label,
                "devices": devices, "releases": releases, "release_count": hits.len(),
                "component": first.component,
            }),
            at_ms: now,
        }
    }

    async fn devices_of(&self, model: &ModelId) -> Result<Vec<DeviceRecord>, ServiceError> {
        Ok(self
            .store
            .devices(&DeviceFilter {
                model: Some(model.clone()),
                state: None,
                limit: Some(10_000_000),
            })
            .await?)
    }

    /// Matches a release just accepted against the stored advisories.
    pub async fn match_release(&self, release: &ReleaseRecord) -> Result<usize, ServiceError> {
        let comps = self.release_components(release).await?;
        let mut keys: Vec<(String, String)> = comps.iter().map(|c| key(&c.package)).collect();
        keys.sort();
        keys.dedup();
        let mut index = ReleaseIndex::default();
        for c in comps {
            index.by_package.entry(key(&c.package)).or_default().push(c);
        }
        let mut matches = Vec::new();
        for a in self.store.advisories_for(&keys).await? {
            match parse_record(&a.body) {
                Ok(r) => matches.extend(Self::matches_of(&r, &index)),
                Err(e) => {
                    tracing::warn!(advisory = %a.id, error = %e, "a stored advisory no longer parses")
                }
            }
        }
        let n = matches.len();
        self.store
            .commit(
                vec![Change::SetReleaseMatches {
                    model: release.model.clone(),
                    version: release.version.clone(),
                    matches,
                }],
                vec![],
            )
            .await?;
        Ok(n)
    }

    /// The advisories, with what each hits; with `exposed`, only those that
    /// hit firmware devices run.
    pub async fn list(&self, exposed: bool) -> Result<Vec<AdvisorySummary>, ServiceError> {
        let all = self.store.advisories().await?;
        let matches = self.store.advisory_matches(None).await?;
        let running = self.running_counts().await?;
        let suppressed = self.suppressions().await?;
        let mut out = Vec::with_capacity(all.len());
        for a in all {
            let (cleared, mine): (Vec<&AdvisoryMatchRecord>, Vec<&AdvisoryMatchRecord>) = matches
                .iter()
                .filter(|m| m.advisory == a.id)
                .partition(|m| suppressing(&suppressed, m).is_some());
            let mut releases: Vec<(String, String)> = mine
                .iter()
                .map(|m| (m.model.to_string(), m.version.clone()))
                .collect();
            releases.sort();
            releases.dedup();
            let devices: usize = releases
                .iter()
                .map(|r| running.get(r).copied().unwrap_or(0))
                .sum();
            if exposed && devices == 0 {
                continue;
            }
            out.push(AdvisorySummary {
                advisory: a,
                releases: releases.len(),
                devices,
                not_affected: cleared.len(),
            });
        }
        Ok(out)
    }

    /// Devices running each (model, firmware), decommissioned ones left out;
    /// read again when older than [`COUNTS_TTL_MS`] (an import of a whole
    /// database asks once a batch).
    async fn running_counts(&self) -> Result<RunningCounts, ServiceError> {
        let now = self.clock.now_ms();
        let mut cached = self.counts.lock().await;
        if let Some((at, counts)) = cached.as_ref()
            && now - at < COUNTS_TTL_MS
        {
            return Ok(counts.clone());
        }
        let counts = self.count_running().await?;
        *cached = Some((now, counts.clone()));
        Ok(counts)
    }

    async fn count_running(&self) -> Result<RunningCounts, ServiceError> {
        let devices = self
            .store
            .devices(&DeviceFilter {
                model: None,
                state: None,
                limit: Some(10_000_000),
            })
            .await?;
        let mut n: HashMap<(String, String), usize> = HashMap::new();
        for d in &devices {
            if d.state == DeviceState::Decommissioned {
                continue;
            }
            if let Some(f) = &d.reported_firmware {
                *n.entry((d.model.to_string(), f.clone())).or_default() += 1;
            }
        }
        Ok(n)
    }

    /// What the advisory known by `id` (its id, a CVE or GHSA alias) hits:
    /// the releases, and every device running one of them with its site, the
    /// release that fixes it and the rollout to that release, if any.
    pub async fn affected(&self, id: &str) -> Result<AffectedReport, ServiceError> {
        let records = self.store.advisories_named(id).await?;
        if records.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "no advisory is known as {id}: import it first (palisade advisories import)"
            )));
        }
        let mut matches = Vec::new();
        for r in &records {
            matches.extend(self.store.advisory_matches(Some(&r.id)).await?);
        }
        let sites: HashMap<String, String> = self
            .store
            .placements(None)
            .await?
            .into_iter()
            .map(|p| (p.device.to_string(), p.site.to_string()))
            .collect();
        let rollouts = self.store.rollouts().await?;
        let suppressed = self.suppressions().await?;
        let mut fleet: HashMap<ModelId, Vec<DeviceRecord>> = HashMap::new();
        let mut releases: Vec<ExposedRelease> = Vec::new();
        let mut devices: Vec<ExposedDevice> = Vec::new();
        let mut by_model: HashMap<ModelId, Vec<ReleaseRecord>> = HashMap::new();
        for m in &matches {
            if releases
                .iter()
                .any(|r| r.model == m.model.as_str() && r.version == m.version)
            {
                continue;
            }
            if !by_model.contains_key(&m.model) {
                by_model.insert(m.model.clone(), self.store.releases(Some(&m.model)).await?);
            }
            let of_model = by_model.get(&m.model).map(Vec::as_slice).unwrap_or(&[]);
            let hit_versions: BTreeSet<&str> = matches
                .iter()
                .filter(|x| x.model == m.model)
                .map(|x| x.version.as_str())
                .collect();
            let this = of_model.iter().find(|r| r.version == m.version);
            // The first release after this one that no record named by `id` hits.
            let fixed_by = this.and_then(|this| {
                of_model
                    .iter()
                    .filter(|r| {
                        r.created_ms > this.created_ms
                            && r.security_version >= this.security_version
                            && !hit_versions.contains(r.version.as_str())
                    })
                    .min_by_key(|r| r.created_ms)
                    .map(|r| r.version.clone())
            });
            let rollout = fixed_by.as_ref().and_then(|v| {
                rollouts
                    .iter()
                    .filter(|r| r.model == m.model && &r.release_version == v)
                    .max_by_key(|r| r.created_ms)
                    .map(|r| format!("{} ({})", r.name, r.state.as_str()))
            });
            if !fleet.contains_key(&m.model) {
                fleet.insert(m.model.clone(), self.devices_of(&m.model).await?);
            }
            let model_devices = fleet.get(&m.model).map(Vec::as_slice).unwrap_or(&[]);
            // The release's supplier says it is not affected: shown, with
            // why, but no device is exposed by it.
            let vex = suppressing(&suppressed, m).map(|v| NotAffected {
                vulnerability: v.vulnerability.clone(),
                justification: v.justification.clone().unwrap_or_default(),
                detail: v.detail.clone(),
                supplier: v.supplier.clone(),
            });
            let running: Vec<&DeviceRecord> = if vex.is_some() {
                vec![]
            } else {
                runs(model_devices, &m.version).collect()
            };
            for d in &running {
                let id = d.id.to_string();
                devices.push(ExposedDevice {
                    site: sites.get(&id).cloned(),
                    device: id,
                    model: d.model.to_string(),
                    firmware: m.version.clone(),
                    fixed_by: fixed_by.clone(),
                    rollout: rollout.clone(),
                });
            }
            releases.push(ExposedRelease {
                model: m.model.to_string(),
                version: m.version.clone(),
                component: m.component.clone(),
                component_version: m.component_version.clone(),
                range: m.why.clone(),
                fixed_component: m.fixed.clone(),
                devices: running.len(),
                fixed_by,
                rollout,
                not_affected: vex,
            });
        }
        Ok(AffectedReport {
            advisories: records,
            releases,
            devices,
        })
    }
}

/// The devices of `devices` running `version` (not decommissioned).
fn runs<'a>(
    devices: &'a [DeviceRecord],
    version: &'a str,
) -> impl Iterator<Item = &'a DeviceRecord> {
    devices.iter().filter(move |d| {
        d.state != DeviceState::Decommissioned && d.reported_firmware.as_deref() == Some(version)
    })
}

/// An advisory and what it hits.
#[derive(Debug, Serialize)]
pub struct AdvisorySummary {
    /// The advisory.
    #[serde(flatten)]
    pub advisory: AdvisoryRecord,
    /// Accepted releases it hits.
    pub releases: usize,
    /// Devices running those.
    pub devices: usize,
    /// Matches their releases' suppliers declared not affected (VEX).
    pub not_affected: usize,
}

/// What an advisory hits.
#[derive(Debug, Serialize)]
pub struct AffectedReport {
    /// The records known by the id asked (a CVE may have a GHSA and an OSV record).
    pub advisories: Vec<AdvisoryRecord>,
    /// The accepted releases hit.
    pub releases: Vec<ExposedRelease>,
    /// The devices running them.
    pub devices: Vec<ExposedDevice>,
}

/// A release an advisory hits.
#[derive(Debug, Serialize)]
pub struct ExposedRelease {
    /// Its model.
    pub model: String,
    /// The release.
    pub version: String,
    /// The component (package URL).
    pub component: String,
    /// The component's version.
    pub component_version: String,
    /// Which rule matched.
    pub range: String,
    /// The component version that fixes it, if the advisory says.
    pub fixed_component: Option<String>,
    /// Devices running the release.
    pub devices: usize,
    /// The first later release of the model the advisory does not hit.
    pub fixed_by: Option<String>,
    /// The newest rollout to that release, with its state.
    pub rollout: Option<String>,
    /// Its supplier's VEX says the release is not affected (then no device
    /// is counted).
    pub not_affected: Option<NotAffected>,
}

/// A supplier's `not_affected` statement on a release.
#[derive(Debug, Serialize)]
pub struct NotAffected {
    /// The vulnerability as the supplier named it.
    pub vulnerability: String,
    /// Why (e.g. `code_not_reachable`, `vulnerable_code_not_in_execute_path`).
    pub justification: String,
    /// The supplier's words.
    pub detail: String,
    /// The supplier whose key signed the statement.
    pub supplier: String,
}

/// A device exposed by an advisory.
#[derive(Debug, Serialize)]
pub struct ExposedDevice {
    /// The device.
    pub device: String,
    /// Its model.
    pub model: String,
    /// Its site, if placed.
    pub site: Option<String>,
    /// The firmware it runs.
    pub firmware: String,
    /// The release that fixes it.
    pub fixed_by: Option<String>,
    /// The rollout to that release.
    pub rollout: Option<String>,
}

/// A `not_affected` statement, resolved to the advisory records it names.
#[derive(Debug, Clone)]
pub struct Suppression {
    /// The stored advisory id (the statement may name an alias).
    pub advisory: String,
    /// The component's package and version, if the statement names one.
    pub(crate) component: Option<(Package, Option<String>)>,
    /// The statement.
    pub statement: palisade_store::VexRecord,
}

/// The statement in `sup` that suppresses match `m`, if any.
pub(crate) fn suppressing<'a>(
    sup: &'a [Suppression],
    m: &AdvisoryMatchRecord,
) -> Option<&'a palisade_store::VexRecord> {
    sup.iter()
        .find(|s| {
            s.advisory == m.advisory
                && s.statement.model == m.model
                && s.statement.version == m.version
                && match &s.component {
                    None => true,
                    Some((p, v)) => Package::from_purl(&m.component).is_some_and(|(q, qv)| {
                        &q == p
                            && v.as_ref()
                                .is_none_or(|v| qv.as_deref().unwrap_or(&m.component_version) == v)
                    }),
                }
        })
        .map(|s| &s.statement)
}
