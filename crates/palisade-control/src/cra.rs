//! Reports for the EU Cyber Resilience Act's vulnerability handling
//! (Regulation (EU) 2024/2847): per advisory, when it was first seen, how
//! many devices it exposed day by day, when the first fixed release was
//! accepted, how much of the affected fleet has moved on, and the days to
//! fix; and, for a vulnerability the manufacturer knows to be actively
//! exploited, the Article 14 reporting pack: the product, affected versions
//! and device counts, the mitigation, and the early warning (24 h), the
//! vulnerability notification (72 h) and the final report (14 days after a
//! corrective measure is available), with what is due next. ENISA's single
//! reporting platform has no API: the pack is for a person to paste.

use std::collections::{BTreeMap, BTreeSet};

use palisade_audit::EntryDraft;
use palisade_core::{DeviceState, ModelId};
use palisade_store::{AdvisoryExposureRecord, Change, ExploitationRecord};
use serde::Serialize;
use serde_json::json;

use crate::advisories::Advisories;
use crate::error::ServiceError;
use crate::posture::day_of;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// One day of exposure.
#[derive(Debug, Clone, Serialize)]
pub struct ExposureDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Devices running a release the advisory hits.
    pub devices: u64,
}

/// A release that fixes the advisory for a model.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRelease {
    /// The model.
    pub model: String,
    /// The release.
    pub version: String,
    /// Accepted, Unix ms.
    pub accepted_ms: i64,
}

/// The vulnerability-handling report of one advisory.
#[derive(Debug, Clone, Serialize)]
pub struct CraReport {
    /// The advisory's id.
    pub advisory: String,
    /// Its other ids (CVE, GHSA, ...).
    pub aliases: Vec<String>,
    /// What it is.
    pub summary: String,
    /// Its severity, as its source gives it.
    pub severity: Option<String>,
    /// First imported here, Unix ms.
    pub first_seen_ms: i64,
    /// Devices exposed now.
    pub exposed_devices: u64,
    /// Releases hit now (VEX suppressions left out), with their devices.
    pub exposed_releases: Vec<(String, String, u64)>,
    /// Matches the releases' suppliers declared not affected.
    pub not_affected: usize,
    /// Exposed devices per day since first seen.
    pub exposure: Vec<ExposureDay>,
    /// The first fixed release accepted for a model it hits.
    pub first_fix: Option<FixedRelease>,
    /// Days from first seen to that release (0 if it was there already).
    pub days_to_fix: Option<i64>,
    /// Of the affected models' devices, the share not running a hit release.
    pub fleet_updated_share: Option<f64>,
    /// The first day on which no device was exposed any more, if it came.
    pub remediated_on: Option<String>,
    /// When the manufacturer became aware of active exploitation.
    pub exploited: Option<ExploitationRecord>,
}

/// To the second.
fn when(ms: i64) -> String {
    palisade_core::rfc3339_ms(ms.div_euclid(1000) * 1000).unwrap_or_default()
}

impl CraReport {
    /// The report as CSV: one row per day, the advisory's figures repeated.
    pub fn csv(&self) -> String {
        let esc = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        let mut out = String::from(
            "advisory,aliases,first_seen,first_fix_release,first_fix_accepted,days_to_fix,fleet_updated_share,exploited_aware,day,exposed_devices\n",
        );
        let fix = self.first_fix.as_ref();
        let fixed = fix.map_or(String::new(), |f| format!("{} {}", f.model, f.version));
        let fixed_at = fix.map_or(String::new(), |f| when(f.accepted_ms));
        let days = self.days_to_fix.map_or(String::new(), |d| d.to_string());
        let share = self
            .fleet_updated_share
            .map_or(String::new(), |s| format!("{s:.4}"));
        let aware = self
            .exploited
            .as_ref()
            .map_or(String::new(), |x| when(x.aware_ms));
        for d in &self.exposure {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                esc(&self.advisory),
                esc(&self.aliases.join(" ")),
                when(self.first_seen_ms),
                esc(&fixed),
                fixed_at,
                days,
                share,
                aware,
                d.day,
                d.devices
            ));
        }
        out
    }
}

/// One reporting obligation of Article 14.
#[derive(Debug, Clone, Serialize)]
pub struct Obligation {
    /// What.
    pub stage: &'static str,
    /// Due, RFC 3339 (none until a corrective measure is available, for the
    /// final report).
    pub due: Option<String>,
    /// `overdue`, `due`, or `pending` (its clock has not started).
    pub status: &'static str,
    /// What it must contain.
    pub contents: &'static str,
}

/// The Article 14 pack for an actively exploited vulnerability.
#[derive(Debug, Clone, Serialize)]
pub struct CraPack {
    /// The legal basis.
    pub regulation: &'static str,
    /// The vulnerability.
    pub vulnerability: serde_json::Value,
    /// The products (models) and their affected versions and devices.
    pub products: Vec<serde_json::Value>,
    /// Aware of active exploitation since (RFC 3339).
    pub aware_at: String,
    /// The three notifications.
    pub notifications: Vec<Obligation>,
    /// The next one not yet past, if any.
    pub next_due: Option<Obligation>,
    /// Corrective or mitigating measures available.
    pub mitigation: Vec<String>,
    /// What Palisade cannot know and the manufacturer must fill in.
    pub to_fill_in: Vec<&'static str>,
    /// The whole pack as text, ready to paste into ENISA's form.
    pub text: String,
}

/// A model's affected versions, exposed devices, fixing release and rollout.
type ModelExposure = (Vec<String>, u64, Option<String>, Option<String>);

impl Advisories {
    /// Records today's exposure of every advisory that hits (or hit) a
    /// release; returns how many were recorded.
    pub async fn record_exposure(&self) -> Result<usize, ServiceError> {
        let today = day_of(self.now_ms());
        // A report must see the fleet as it is, not as an import batch
        // counted it a few seconds ago.
        self.forget_counts().await;
        let list: Vec<AdvisoryExposureRecord> = self
            .list(false)
            .await?
            .into_iter()
            .filter(|a| a.releases > 0 || a.not_affected > 0)
            .map(|a| AdvisoryExposureRecord {
                advisory: a.advisory.id,
                day: today.clone(),
                devices: a.devices as u64,
            })
            .collect();
        let n = list.len();
        for chunk in list.chunks(1000) {
            self.store()
                .commit(vec![Change::RecordAdvisoryExposure(chunk.to_vec())], vec![])
                .await?;
        }
        Ok(n)
    }

    /// Records that the vulnerability is actively exploited, known since
    /// `aware_ms` (audited).
    pub async fn mark_exploited(
        &self,
        actor: &str,
        id: &str,
        aware_ms: Option<i64>,
        note: &str,
    ) -> Result<ExploitationRecord, ServiceError> {
        let record = self
            .store()
            .advisories_named(id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::NotFound(format!("no advisory is known as {id}")))?;
        if note.trim().is_empty() || note.chars().count() > 2000 {
            return Err(ServiceError::BadRequest {
                code: "bad_note",
                message: "say how the exploitation is known (1 to 2000 characters)".into(),
            });
        }
        let now = self.now_ms();
        let x = ExploitationRecord {
            advisory: record.id.clone(),
            aware_ms: aware_ms.unwrap_or(now).min(now),
            actor: actor.to_owned(),
            note: note.to_owned(),
            recorded_ms: now,
        };
        self.store()
            .commit(
                vec![Change::MarkExploited(x.clone())],
                vec![
                    EntryDraft::success(actor, "advisory.exploited", &record.id)
                        .with_detail(json!({ "aware_ms": x.aware_ms, "note": note })),
                ],
            )
            .await?;
        Ok(x)
    }

    /// The vulnerability-handling report of the advisory known by `id`.
    pub async fn report(&self, id: &str) -> Result<CraReport, ServiceError> {
        // Today's figure first, so the series always ends today.
        self.record_exposure().await?;
        let hit = self.affected(id).await?;
        let Some(a) = hit.advisories.first() else {
            return Err(ServiceError::NotFound(format!(
                "no advisory is known as {id}"
            )));
        };
        let aliases: Vec<String> = palisade_advisory::parse_record(&a.body)
            .map(|r| r.aliases)
            .unwrap_or_default();
        let mut exposed_releases = vec![];
        let mut not_affected = 0;
        let mut models: BTreeSet<String> = BTreeSet::new();
        let mut first_fix: Option<FixedRelease> = None;
        for r in &hit.releases {
            if r.not_affected.is_some() {
                not_affected += 1;
                continue;
            }
            models.insert(r.model.clone());
            exposed_releases.push((r.model.clone(), r.version.clone(), r.devices as u64));
            if let Some(v) = &r.fixed_by {
                let model =
                    ModelId::parse(&r.model).map_err(|e| ServiceError::Internal(e.to_string()))?;
                if let Some(rel) = self
                    .store()
                    .releases(Some(&model))
                    .await?
                    .into_iter()
                    .find(|x| &x.version == v)
                    && first_fix
                        .as_ref()
                        .is_none_or(|f| rel.created_ms < f.accepted_ms)
                {
                    first_fix = Some(FixedRelease {
                        model: r.model.clone(),
                        version: v.clone(),
                        accepted_ms: rel.created_ms,
                    });
                }
            }
        }
        let exposed: u64 = exposed_releases.iter().map(|r| r.2).sum();
        // Of the affected models' devices (running anything reported), the
        // share no longer on a hit release.
        let mut total = 0u64;
        for m in &models {
            let model = ModelId::parse(m).map_err(|e| ServiceError::Internal(e.to_string()))?;
            total += self
                .store()
                .devices(&palisade_store::DeviceFilter {
                    model: Some(model),
                    state: None,
                    limit: Some(10_000_000),
                })
                .await?
                .iter()
                .filter(|d| d.state != DeviceState::Decommissioned && d.reported_firmware.is_some())
                .count() as u64;
        }
        let exposure: Vec<ExposureDay> = self
            .store()
            .advisory_exposure(&a.id)
            .await?
            .into_iter()
            .map(|e| ExposureDay {
                day: e.day,
                devices: e.devices,
            })
            .collect();
        let remediated_on = (exposed == 0)
            .then(|| {
                let last_exposed = exposure.iter().rposition(|d| d.devices > 0)?;
                exposure.get(last_exposed + 1).map(|d| d.day.clone())
            })
            .flatten();
        Ok(CraReport {
            advisory: a.id.clone(),
            aliases,
            summary: a.summary.clone(),
            severity: a.severity.clone(),
            first_seen_ms: a.first_seen_ms,
            exposed_devices: exposed,
            exposed_releases,
            not_affected,
            exposure,
            days_to_fix: first_fix
                .as_ref()
                .map(|f| ((f.accepted_ms - a.first_seen_ms) / DAY_MS).max(0)),
            first_fix,
            fleet_updated_share: (total > 0)
                .then(|| (total.saturating_sub(exposed)) as f64 / total as f64),
            remediated_on,
            exploited: self.store().exploitation(&a.id).await?,
        })
    }

    /// The Article 14 pack of an advisory marked actively exploited.
    pub async fn cra_pack(&self, id: &str) -> Result<CraPack, ServiceError> {
        let report = self.report(id).await?;
        let Some(x) = report.exploited.clone() else {
            return Err(ServiceError::Conflict(format!(
                "{id} is not marked as actively exploited: record when you became aware with `palisade advisories exploited {id} --note ...`"
            )));
        };
        let now = self.now_ms();
        let hit = self.affected(id).await?;
        let mut per_model: BTreeMap<String, ModelExposure> = BTreeMap::new();
        for r in hit.releases.iter().filter(|r| r.not_affected.is_none()) {
            let e = per_model.entry(r.model.clone()).or_default();
            e.0.push(r.version.clone());
            e.1 += r.devices as u64;
            if e.2.is_none() {
                e.2.clone_from(&r.fixed_by);
                e.3.clone_from(&r.rollout);
            }
        }
        let mut products = vec![];
        let mut mitigation = vec![];
        for (model, (versions, devices, fixed, rollout)) in &per_model {
            let m = ModelId::parse(model).map_err(|e| ServiceError::Internal(e.to_string()))?;
            let rec = self.store().model(&m).await?;
            products.push(json!({
                "model": model,
                "description": rec.as_ref().map(|r| r.description.clone()),
                "manufacturer": rec.as_ref().and_then(|r| r.supplier.as_ref().map(ToString::to_string)),
                "affected_versions": versions,
                "devices": devices,
                "fixed_in": fixed,
                "rollout": rollout,
            }));
            mitigation.push(match (fixed, rollout) {
                (Some(f), Some(r)) => format!("{model}: release {f} fixes it; rollout {r}"),
                (Some(f), None) => format!("{model}: release {f} fixes it; no rollout to it yet"),
                _ => format!(
                    "{model}: no fixed release yet; confine exposed devices (palisade device set-state ID quarantined, or the model's support restriction)"
                ),
            });
        }
        let fix_ms = report
            .first_fix
            .as_ref()
            .map(|f| f.accepted_ms.max(x.aware_ms));
        let status = |due: Option<i64>| match due {
            None => "pending",
            Some(d) if d < now => "overdue",
            Some(_) => "due",
        };
        let ob = |stage, due: Option<i64>, contents| Obligation {
            stage,
            due: due.map(when),
            status: status(due),
            contents,
        };
        let notifications = vec![
            ob(
                "early warning",
                Some(x.aware_ms + 24 * HOUR_MS),
                "Art. 14(2)(a): that the vulnerability is actively exploited; where known, the Member States where the product is made available",
            ),
            ob(
                "vulnerability notification",
                Some(x.aware_ms + 72 * HOUR_MS),
                "Art. 14(2)(b): the product, the nature of the exploit and of the vulnerability, corrective or mitigating measures taken and that users can take, how sensitive the information is",
            ),
            ob(
                "final report",
                fix_ms.map(|t| t + 14 * DAY_MS),
                "Art. 14(2)(c): a description of the vulnerability with its severity and impact, any information on a malicious actor, the security update or corrective measures made available (due 14 days after a corrective or mitigating measure is available)",
            ),
        ];
        let next_due = notifications
            .iter()
            .find(|n| n.status == "due" || n.status == "pending")
            .cloned();
        let vulnerability = json!({
            "id": report.advisory, "aliases": report.aliases, "summary": report.summary,
            "severity": report.severity, "first_seen": when(report.first_seen_ms),
            "exploitation_evidence": x.note,
        });
        let to_fill_in = vec![
            "the Member States where the products are made available",
            "the nature of the exploit and any information on a malicious actor",
            "how sensitive the notified information is",
        ];
        let mut text = format!(
            "CRA Article 14 notification pack — {}\n\nVulnerability: {} ({})\nSummary: {}\nSeverity: {}\nAware of active exploitation since: {}\nEvidence: {}\n\nProducts affected:\n",
            report.advisory,
            report.advisory,
            report.aliases.join(", "),
            report.summary,
            report.severity.as_deref().unwrap_or("not given"),
            when(x.aware_ms),
            x.note
        );
        for p in &products {
            text.push_str(&format!(
                "  - {} (manufacturer {}): versions {}; {} device(s) exposed; fixed in {}\n",
                p["model"].as_str().unwrap_or_default(),
                p["manufacturer"].as_str().unwrap_or("not recorded"),
                p["affected_versions"]
                    .as_array()
                    .map(|v| v
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                p["devices"],
                p["fixed_in"].as_str().unwrap_or("no release yet")
            ));
        }
        text.push_str("\nMitigation:\n");
        for m in &mitigation {
            text.push_str(&format!("  - {m}\n"));
        }
        text.push_str("\nDeadlines:\n");
        for n in &notifications {
            text.push_str(&format!(
                "  - {}: {} ({})\n",
                n.stage,
                n.due
                    .as_deref()
                    .unwrap_or("14 days after a corrective measure is available"),
                n.status
            ));
        }
        text.push_str("\nTo fill in:\n");
        for f in &to_fill_in {
            text.push_str(&format!("  - {f}\n"));
        }
        Ok(CraPack {
            regulation: "Regulation (EU) 2024/2847 (Cyber Resilience Act), Article 14(1) and (2)",
            vulnerability,
            products,
            aware_at: when(x.aware_ms),
            notifications,
            next_due,
            mitigation,
            to_fill_in,
            text,
        })
    }
}
