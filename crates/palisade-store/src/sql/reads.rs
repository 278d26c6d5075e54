//! The `Store` trait over SQLite: `commit` hands the job to the writer; the
//! reads run on the read-only pool.

use std::collections::HashMap;

use async_trait::async_trait;
use palisade_audit::{EntryDraft, StoredCheckpoint};
use palisade_core::{DeviceId, ModelId, RolloutName, SiteName, SupplierName, Tag, UnmanagedState};
use sqlx::Row;
use tokio::sync::oneshot;

use super::rows::*;
use super::writer::Job;
use super::{DEFAULT_LIMIT, Engine, SqlStore};

use crate::{AccountRecord, DeviceGroupRecord, DocumentRecord, FleetWindowRecord, SessionRecord};
use crate::{AdvisoryExposureRecord, ExploitationRecord};
use crate::{
    AdvisoryMatchRecord, AdvisoryRecord, DecommissionRecord, SupportPolicyRecord, VexRecord,
    WipeStatus,
};
use crate::{
    AlertFilter, AlertRecord, AuditHead, AuditRefRecord, BatchRecord, CertFilter, CertRecord,
    Change, CommandRecord, ConsistencyProof, DeviceEventRecord, DeviceFilter, DeviceRecord,
    EdgeRecord, EnrollmentTokenRecord, FirmwareRecord, InclusionProof, ModelPolicyRecord,
    ModelRecord, PlacementRecord, PostureSnapshotRecord, Receipt, ReleaseRecord,
    RolloutDeviceRecord, RolloutRecord, SiteRecord, Store, StoreError, StoredEntry,
    SupplierKeyRecord, SupplierRecord, TokenRecord, TpmVendorRecord, UnmanagedRecord, UpdateRecord,
};
use crate::{DevicePage, DevicePageQuery, DeviceRow, DeviceSort};
use palisade_audit::Digest32;
use palisade_core::DeviceState;
use palisade_core::OperatorName;

#[async_trait]
impl Store for SqlStore {
    async fn commit(
        &self,
        changes: Vec<Change>,
        audit: Vec<EntryDraft>,
    ) -> Result<Receipt, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                changes,
                audit,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn model(&self, id: &ModelId) -> Result<Option<ModelRecord>, StoreError> {
        self.one(
            "SELECT * FROM models WHERE id = $1",
            id.as_str(),
            model_from_row,
        )
        .await
    }

    async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        self.all("SELECT * FROM models ORDER BY id", model_from_row)
            .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.one(
            "SELECT * FROM devices WHERE id = $1",
            id.as_str(),
            device_from_row,
        )
        .await
    }

    async fn devices(&self, f: &DeviceFilter) -> Result<Vec<DeviceRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM devices WHERE ($1 IS NULL OR model_id = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY id LIMIT $3",
        )
        .bind(f.model.as_ref().map(|m| m.as_str().to_owned()))
        .bind(f.state.map(|s| s.as_str()))
        .bind(f.limit.map_or(DEFAULT_LIMIT, i64::from))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertRecord>, StoreError> {
        self.one(
            "SELECT * FROM certificates WHERE serial = $1",
            serial,
            cert_from_row,
        )
        .await
    }

    async fn certificates(&self, f: &CertFilter) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE ($1 IS NULL OR device_id = $1) AND ($2 IS NULL OR status = $2)
             ORDER BY issued_ms, serial LIMIT $3",
        )
        .bind(f.device.as_ref().map(|d| d.as_str().to_owned()))
        .bind(f.status.map(|s| s.as_str()))
        .bind(f.limit.map_or(DEFAULT_LIMIT, i64::from))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn certificate_authorities(&self) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE profile IN ('root', 'intermediate', 'cross')
             ORDER BY issued_ms, serial",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn issuer_last_expiry(
        &self,
        issuer: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(not_after_ms) AS last FROM certificates
             WHERE issuer = $1 AND status = 'valid' AND not_after_ms > $2",
        )
        .bind(issuer)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<Option<i64>, _>("last")?)
    }

    async fn devices_issued_elsewhere(
        &self,
        current: &str,
        also: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT device_id FROM certificates
             WHERE device_id IS NOT NULL AND status = 'valid' AND not_after_ms > $1
               AND issuer <> $2 AND issuer <> $3
             ORDER BY device_id LIMIT $4",
        )
        .bind(now_ms)
        .bind(current)
        .bind(also)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("device_id")?;
                DeviceId::parse(&id).map_err(|e| super::rows::corrupt("certificate", e))
            })
            .collect()
    }

    async fn revoked_unexpired(&self, now_ms: i64) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE status = 'revoked' AND not_after_ms > $1 ORDER BY serial",
        )
        .bind(now_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn supplier(&self, name: &SupplierName) -> Result<Option<SupplierRecord>, StoreError> {
        self.one(
            "SELECT * FROM suppliers WHERE name = $1",
            name.as_str(),
            supplier_from_row,
        )
        .await
    }

    async fn suppliers(&self) -> Result<Vec<SupplierRecord>, StoreError> {
        self.all("SELECT * FROM suppliers ORDER BY name", supplier_from_row)
            .await
    }

    async fn tpm_vendors(&self) -> Result<Vec<TpmVendorRecord>, StoreError> {
        self.all(
            "SELECT * FROM tpm_vendors ORDER BY created_ms",
            tpm_vendor_from_row,
        )
        .await
    }

    async fn supplier_keys(
        &self,
        supplier: &SupplierName,
    ) -> Result<Vec<SupplierKeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM supplier_keys WHERE supplier = $1 ORDER BY created_ms")
            .bind(supplier.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(supplier_key_from_row)
            .collect()
    }

    async fn assignment(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError> {
        let row =
            sqlx::query("SELECT counter, signed FROM device_assignments WHERE device_id = $1")
                .bind(device.as_str())
                .fetch_all(self.pool())
                .await?;
        row.first()
            .map(|r| {
                Ok((
                    u64::try_from(r.try_get::<i64, _>("counter")?).unwrap_or(0),
                    r.try_get("signed")?,
                ))
            })
            .transpose()
    }

    async fn model_policy(&self, model: &ModelId) -> Result<Option<ModelPolicyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM model_policies WHERE model_id = $1")
            .bind(model.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.first().map(model_policy_from_row).transpose()
    }

    async fn sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        sqlx::query("SELECT * FROM sites ORDER BY name")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(site_from_row)
            .collect()
    }

    async fn placements(
        &self,
        site: Option<&SiteName>,
    ) -> Result<Vec<PlacementRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM device_placements WHERE $1 IS NULL OR site = $1 ORDER BY device_id",
        )
        .bind(site.map(SiteName::as_str))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(placement_from_row)
        .collect()
    }

    async fn edges(&self, site: Option<&SiteName>) -> Result<Vec<EdgeRecord>, StoreError> {
        sqlx::query("SELECT * FROM site_edges WHERE $1 IS NULL OR site = $1 ORDER BY device_id")
            .bind(site.map(SiteName::as_str))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(edge_from_row)
            .collect()
    }

    async fn unmanaged(
        &self,
        site: Option<&SiteName>,
        state: Option<UnmanagedState>,
    ) -> Result<Vec<UnmanagedRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM unmanaged_hosts WHERE ($1 IS NULL OR site = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY state <> 'seen', last_ms DESC, site, address LIMIT $3",
        )
        .bind(site.map(SiteName::as_str))
        .bind(state.map(UnmanagedState::as_str))
        .bind(DEFAULT_LIMIT)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(unmanaged_from_row)
        .collect()
    }

    async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        sqlx::query("SELECT * FROM rollouts ORDER BY created_ms DESC, name")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(rollout_from_row)
            .collect()
    }

    async fn rollout_devices(
        &self,
        name: &RolloutName,
    ) -> Result<Vec<RolloutDeviceRecord>, StoreError> {
        sqlx::query("SELECT * FROM rollout_devices WHERE rollout = $1 ORDER BY wave, device_id")
            .bind(name.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(rollout_device_from_row)
            .collect()
    }

    async fn device_tags(&self, device: &DeviceId) -> Result<Vec<Tag>, StoreError> {
        sqlx::query("SELECT tag FROM device_tags WHERE device_id = $1 ORDER BY tag")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Tag::parse(r.try_get("tag")?).map_err(|e| corrupt("device tag", e)))
            .collect()
    }

    async fn devices_tagged(&self, tags: &[Tag]) -> Result<Vec<DeviceId>, StoreError> {
        if tags.is_empty() {
            return Ok(vec![]);
        }
        let list = serde_json::to_string(&tags.iter().map(Tag::as_str).collect::<Vec<_>>())
            .map_err(|e| corrupt("device tag", e))?;
        sqlx::query(
            "SELECT device_id FROM device_tags WHERE tag IN (SELECT value FROM json_each($1))
             GROUP BY device_id HAVING COUNT(DISTINCT tag) = json_array_length($1) ORDER BY device_id",
        )
        .bind(list)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| DeviceId::parse(r.try_get("device_id")?).map_err(|e| corrupt("device tag", e)))
        .collect()
    }

    async fn updates(&self, device: Option<&DeviceId>) -> Result<Vec<UpdateRecord>, StoreError> {
        sqlx::query(
            "SELECT device_id, counter, target, state, detail, updated_ms FROM device_updates
             WHERE $1 IS NULL OR device_id = $1 ORDER BY device_id",
        )
        .bind(device.map(DeviceId::as_str))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(update_from_row)
        .collect()
    }

    async fn releases(&self, model: Option<&ModelId>) -> Result<Vec<ReleaseRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM releases WHERE ($1 IS NULL OR model_id = $1)
             ORDER BY model_id, security_version, created_ms",
        )
        .bind(model.map(|m| m.as_str()))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(release_from_row)
        .collect()
    }

    async fn firmware(&self, model: &ModelId) -> Result<Vec<FirmwareRecord>, StoreError> {
        sqlx::query("SELECT * FROM model_firmware WHERE model_id = $1 ORDER BY created_ms")
            .bind(model.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(firmware_from_row)
            .collect()
    }

    async fn device_by_birth_cert(&self, sha256: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.one(
            "SELECT * FROM devices WHERE birth_cert_sha256 = $1",
            sha256,
            device_from_row,
        )
        .await
    }

    async fn enrollment_token(
        &self,
        id: &str,
    ) -> Result<Option<EnrollmentTokenRecord>, StoreError> {
        self.one(
            "SELECT * FROM enrollment_tokens WHERE id = $1",
            id,
            enrollment_token_from_row,
        )
        .await
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = $1")
            .bind(id)
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .next();
        row.as_ref().map(batch_from_row).transpose()
    }

    async fn commands(
        &self,
        device: &DeviceId,
        queued_only: bool,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM commands WHERE device_id = $1 AND ($2 = 0 OR status = 'queued')
             ORDER BY created_ms DESC, id LIMIT 500",
        )
        .bind(device.as_str())
        .bind(i64::from(queued_only))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(command_from_row)
        .collect()
    }

    async fn queued_command_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        sqlx::query(
            "SELECT DISTINCT device_id FROM commands WHERE status = 'queued' ORDER BY device_id",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| DeviceId::parse(r.try_get("device_id")?).map_err(|e| corrupt("command", e)))
        .collect()
    }

    async fn advisory_exposure(
        &self,
        advisory: &str,
    ) -> Result<Vec<AdvisoryExposureRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM advisory_exposure WHERE advisory_id = $1 ORDER BY day LIMIT 100000",
        )
        .bind(advisory)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(AdvisoryExposureRecord {
                advisory: r.try_get("advisory_id")?,
                day: r.try_get("day")?,
                devices: u64::try_from(r.try_get::<i64, _>("devices")?).unwrap_or(0),
            })
        })
        .collect()
    }

    async fn exploitation(&self, advisory: &str) -> Result<Option<ExploitationRecord>, StoreError> {
        sqlx::query("SELECT * FROM advisory_exploitation WHERE advisory_id = $1")
            .bind(advisory)
            .fetch_all(self.pool())
            .await?
            .first()
            .map(|r| {
                Ok(ExploitationRecord {
                    advisory: r.try_get("advisory_id")?,
                    aware_ms: r.try_get("aware_ms")?,
                    actor: r.try_get("actor")?,
                    note: r.try_get("note")?,
                    recorded_ms: r.try_get("recorded_ms")?,
                })
            })
            .transpose()
    }

    async fn vex_statements(
        &self,
        release: Option<(&ModelId, &str)>,
    ) -> Result<Vec<VexRecord>, StoreError> {
        let (model, version) = release.map_or(("", ""), |(m, v)| (m.as_str(), v));
        sqlx::query(
            "SELECT * FROM vex_statements WHERE ($1 = '' OR (model_id = $1 AND version = $2))
             ORDER BY model_id, version, vulnerability, component LIMIT 100000",
        )
        .bind(model)
        .bind(version)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(vex_from_row)
        .collect()
    }

    async fn support_policies(&self) -> Result<Vec<SupportPolicyRecord>, StoreError> {
        sqlx::query("SELECT * FROM support_policies ORDER BY model_id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(support_policy_from_row)
            .collect()
    }

    async fn decommission(
        &self,
        device: &DeviceId,
    ) -> Result<Option<DecommissionRecord>, StoreError> {
        sqlx::query("SELECT * FROM decommissions WHERE device_id = $1")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?
            .first()
            .map(decommission_from_row)
            .transpose()
    }

    async fn decommissions(
        &self,
        wipe: Option<WipeStatus>,
    ) -> Result<Vec<DecommissionRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM decommissions WHERE ($1 = '' OR wipe = $1)
             ORDER BY requested_ms, device_id LIMIT 10000",
        )
        .bind(wipe.map(WipeStatus::as_str).unwrap_or(""))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(decommission_from_row)
        .collect()
    }

    async fn mqtt_session(&self, device: &DeviceId) -> Result<Option<bool>, StoreError> {
        sqlx::query("SELECT subscribed FROM mqtt_sessions WHERE device_id = $1")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?
            .first()
            .map(|r| Ok(r.try_get::<i64, _>("subscribed")? != 0))
            .transpose()
    }

    async fn retained(&self, device: &DeviceId) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        sqlx::query("SELECT topic, payload FROM mqtt_retained WHERE device_id = $1 ORDER BY topic")
            .bind(device.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Ok((r.try_get("topic")?, r.try_get("payload")?)))
            .collect()
    }

    async fn advisory(&self, id: &str) -> Result<Option<AdvisoryRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM advisories WHERE id = $1")
            .bind(id)
            .fetch_all(self.pool())
            .await?;
        rows.first().map(|r| advisory_from_row(r, true)).transpose()
    }

    async fn advisories_named(&self, id: &str) -> Result<Vec<AdvisoryRecord>, StoreError> {
        sqlx::query(
            "SELECT a.* FROM advisories a JOIN advisory_ids i ON i.advisory_id = a.id
             WHERE i.alias = $1 ORDER BY a.id",
        )
        .bind(id.to_uppercase())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| advisory_from_row(r, true))
        .collect()
    }

    async fn advisories(&self) -> Result<Vec<AdvisoryRecord>, StoreError> {
        sqlx::query(
            "SELECT id, modified, withdrawn, summary, severity, first_seen_ms, updated_ms
             FROM advisories ORDER BY first_seen_ms DESC, id",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| advisory_from_row(r, false))
        .collect()
    }

    async fn advisories_for(
        &self,
        packages: &[(String, String)],
    ) -> Result<Vec<AdvisoryRecord>, StoreError> {
        // The advisory ids first, 200 packages a query (row-value IN lists,
        // which SQLite and PostgreSQL both read), then each record once.
        let mut ids = std::collections::BTreeSet::new();
        for chunk in packages.chunks(200) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "SELECT DISTINCT advisory_id FROM advisory_packages WHERE (ecosystem, name) IN ({})",
                pairs.join(", ")
            );
            let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for (ecosystem, name) in chunk {
                q = q.bind(ecosystem).bind(name);
            }
            ids.extend(q.fetch_all(self.pool()).await?);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(a) = self.advisory(&id).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn advisory_matches(
        &self,
        advisory: Option<&str>,
    ) -> Result<Vec<AdvisoryMatchRecord>, StoreError> {
        let q = match advisory {
            Some(_) => {
                "SELECT * FROM advisory_matches WHERE advisory_id = $1
                        ORDER BY advisory_id, model_id, version, component"
            }
            None => {
                "SELECT * FROM advisory_matches ORDER BY advisory_id, model_id, version, component"
            }
        };
        let mut query = sqlx::query(q);
        if let Some(a) = advisory {
            query = query.bind(a);
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(AdvisoryMatchRecord {
                    advisory: r.try_get("advisory_id")?,
                    model: ModelId::parse(&r.try_get::<String, _>("model_id")?)
                        .map_err(|e| corrupt("advisory match", e))?,
                    version: r.try_get("version")?,
                    component: r.try_get("component")?,
                    component_version: r.try_get("component_version")?,
                    why: r.try_get("why")?,
                    fixed: r.try_get("fixed")?,
                })
            })
            .collect()
    }

    async fn fleet_windows(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<FleetWindowRecord>, StoreError> {
        let uint = |v: i64| u64::try_from(v).unwrap_or(0);
        sqlx::query(
            "SELECT * FROM fleet_windows WHERE closed_ms > $1 AND closed_ms <= $2 ORDER BY device_id",
        )
        .bind(after_ms)
        .bind(until_ms)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(FleetWindowRecord {
                device: DeviceId::parse(&r.try_get::<String, _>("device_id")?)
                    .map_err(|e| corrupt("fleet window", e))?,
                model: ModelId::parse(&r.try_get::<String, _>("model_id")?)
                    .map_err(|e| corrupt("fleet window", e))?,
                closed_ms: r.try_get("closed_ms")?,
                dests: uint(r.try_get("dests")?),
                bytes_out: uint(r.try_get("bytes_out")?),
                bytes_in: uint(r.try_get("bytes_in")?),
                node: r.try_get("node")?,
            })
        })
        .collect()
    }

    async fn document(&self, name: &str) -> Result<Option<DocumentRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT version, body, updated_ms FROM signed_documents WHERE name = $1")
                .bind(name)
                .fetch_all(self.pool())
                .await?;
        rows.first()
            .map(|r| {
                Ok(DocumentRecord {
                    version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                    body: r.try_get("body")?,
                    updated_ms: r.try_get("updated_ms")?,
                })
            })
            .transpose()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.one("SELECT * FROM tokens WHERE id = $1", id, token_from_row)
            .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all(
            "SELECT * FROM tokens ORDER BY created_ms, id",
            token_from_row,
        )
        .await
    }

    async fn audit_entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        self.reader.audit_entries(from, limit).await
    }

    async fn audit_checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.reader.audit_checkpoints(from_size, limit).await
    }

    fn audit_head(&self) -> Option<AuditHead> {
        self.head.lock().ok().and_then(|h| h.clone())
    }

    async fn inclusion_proof(&self, index: u64) -> Result<InclusionProof, StoreError> {
        let (path, head) = {
            let log = self.log.read().await;
            let head = self.audit_head().ok_or(StoreError::NotFound {
                what: "audit entry",
                key: index.to_string(),
            })?;
            (log.tree.inclusion_proof(index)?, head)
        };
        let entry = self
            .reader
            .audit_entries(index, 1)
            .await?
            .into_iter()
            .find(|e| e.entry.index == index)
            .ok_or(StoreError::NotFound {
                what: "audit entry",
                key: index.to_string(),
            })?;
        Ok(InclusionProof { entry, path, head })
    }

    async fn alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM alerts WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR device_id = $2)
               AND ($3 IS NULL OR last_ms >= $3) ORDER BY last_ms DESC, id LIMIT $4",
        )
        .bind(f.state.map(|s| s.as_str()))
        .bind(&f.device)
        .bind(f.since_ms)
        .bind(i64::from(f.limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(alert_from_row)
        .collect()
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        sqlx::query("SELECT * FROM alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn device_events(
        &self,
        device: &str,
        since_ms: i64,
        until_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeviceEventRecord>, StoreError> {
        sqlx::query(
            "SELECT device_id, at_ms, kind, summary, detail FROM device_events
             WHERE device_id = $1 AND at_ms >= $2 AND at_ms <= $3 ORDER BY at_ms, id LIMIT $4",
        )
        .bind(device)
        .bind(since_ms)
        .bind(until_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(device_event_from_row)
        .collect()
    }

    async fn device_page(&self, q: &DevicePageQuery) -> Result<DevicePage, StoreError> {
        // Placements are joined only when the site filters or sorts; otherwise
        // the page's own placements are read afterwards (50 rows, by key).
        let join = q.site.is_some() || q.sort == DeviceSort::Site;
        let mut count = Dynamic::new("SELECT COUNT(*) AS n FROM devices d");
        push_device_filters(&mut count, q, join)?;
        let total = count
            .query()?
            .fetch_all(self.pool())
            .await?
            .first()
            .map(|r| unsigned(r, "n", "device count"))
            .transpose()?
            .unwrap_or(0);
        let mut page = Dynamic::new(if join {
            "SELECT d.*, p.site AS placed_site, p.address AS placed_address FROM devices d"
        } else {
            "SELECT d.*, NULL AS placed_site, NULL AS placed_address FROM devices d"
        });
        push_device_filters(&mut page, q, join)?;
        // Plain columns, so the indexes order the rows (NULL sorts first, as
        // "never" and "unknown" should).
        let key = match q.sort {
            DeviceSort::Id => "d.id",
            DeviceSort::Model => "d.model_id",
            DeviceSort::State => "d.state",
            DeviceSort::LastSeen => "d.last_seen_ms",
            DeviceSort::Firmware => "d.reported_firmware",
            DeviceSort::Site => "p.site",
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        // PostgreSQL sorts NULL last in ascending order; say what SQLite does.
        let nulls = match (self.engine, q.descending) {
            (Engine::Sqlite, _) => "",
            (Engine::Postgres, false) => " NULLS FIRST",
            (Engine::Postgres, true) => " NULLS LAST",
        };
        if q.sort == DeviceSort::Id {
            page.push(&format!(" ORDER BY d.id {dir} LIMIT "));
        } else {
            page.push(&format!(" ORDER BY {key} {dir}{nulls}, d.id {dir} LIMIT "));
        }
        page.bind(i64::from(q.limit))
            .push(" OFFSET ")
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX));
        let mut rows = page
            .query()?
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(DeviceRow {
                    device: device_from_row(r)?,
                    site: r.try_get("placed_site")?,
                    address: r.try_get("placed_address")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !join && !rows.is_empty() {
            let ids: Vec<&str> = rows.iter().map(|r| r.device.id.as_str()).collect();
            let list = serde_json::to_string(&ids).map_err(|e| corrupt("device page", e))?;
            let placed: HashMap<String, (String, String)> = sqlx::query(
                "SELECT device_id, site, address FROM device_placements
                 WHERE device_id IN (SELECT value FROM json_each($1))",
            )
            .bind(list)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("device_id")?,
                    (r.try_get("site")?, r.try_get("address")?),
                ))
            })
            .collect::<Result<_, StoreError>>()?;
            for row in &mut rows {
                if let Some((site, address)) = placed.get(row.device.id.as_str()) {
                    row.site = Some(site.clone());
                    row.address = Some(address.clone());
                }
            }
        }
        Ok(DevicePage { rows, total })
    }

    async fn device_counts(&self) -> Result<Vec<(ModelId, DeviceState, u64)>, StoreError> {
        sqlx::query(
            "SELECT model_id, state, COUNT(*) AS n FROM devices GROUP BY model_id, state
             ORDER BY model_id, state",
        )
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            let st: String = r.try_get("state")?;
            Ok((
                name(r, "model_id", "device count")?,
                DeviceState::parse(&st).ok_or_else(|| corrupt("device count", &st))?,
                unsigned(r, "n", "device count")?,
            ))
        })
        .collect()
    }

    async fn certificates_expiring(
        &self,
        before_ms: i64,
        limit: u32,
    ) -> Result<Vec<CertRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM certificates WHERE status = 'valid' AND not_after_ms < $1
             ORDER BY not_after_ms LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(cert_from_row)
        .collect()
    }

    async fn account(&self, name: &OperatorName) -> Result<Option<AccountRecord>, StoreError> {
        self.one(
            "SELECT * FROM operator_accounts WHERE name = $1",
            name.as_str(),
            account_from_row,
        )
        .await
    }

    async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.all(
            "SELECT * FROM operator_accounts ORDER BY name",
            account_from_row,
        )
        .await
    }

    async fn session(&self, id_hash: &Digest32) -> Result<Option<SessionRecord>, StoreError> {
        sqlx::query("SELECT * FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.to_vec())
            .fetch_all(self.pool())
            .await?
            .first()
            .map(session_from_row)
            .transpose()
    }

    async fn device_groups(&self) -> Result<Vec<DeviceGroupRecord>, StoreError> {
        self.all(
            "SELECT * FROM device_groups ORDER BY name",
            device_group_from_row,
        )
        .await
    }

    async fn posture_snapshots(
        &self,
        framework: &str,
        scope: &str,
        since_day: &str,
    ) -> Result<Vec<PostureSnapshotRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM posture_snapshots WHERE framework = $1 AND scope = $2 AND day >= $3
             ORDER BY day",
        )
        .bind(framework)
        .bind(scope)
        .bind(since_day)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(posture_snapshot_from_row)
        .collect()
    }

    async fn audit_refs(&self, actions: &[&str]) -> Result<Vec<AuditRefRecord>, StoreError> {
        let list = serde_json::to_string(actions).map_err(|e| corrupt("audit action", e))?;
        sqlx::query(
            "SELECT seq, subject, action, time_ms, detail FROM audit_entries
             WHERE action IN (SELECT value FROM json_each($1)) ORDER BY seq",
        )
        .bind(list)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(audit_ref_from_row)
        .collect()
    }

    async fn latest_device_events(&self, kind: &str) -> Result<Vec<DeviceEventRecord>, StoreError> {
        let sql = match self.engine {
            // SQLite returns the row of the maximum with a bare MAX() aggregate.
            Engine::Sqlite => {
                "SELECT device_id, MAX(at_ms) AS at_ms, kind, summary, detail FROM device_events
                 WHERE kind = $1 GROUP BY device_id ORDER BY device_id"
            }
            Engine::Postgres => {
                "SELECT DISTINCT ON (device_id) device_id, at_ms, kind, summary, detail
                 FROM device_events WHERE kind = $1 ORDER BY device_id, at_ms DESC, id DESC"
            }
        };
        sqlx::query(sql)
            .bind(kind)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(device_event_from_row)
            .collect()
    }

    async fn audit_entries_about(
        &self,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, actor, action, subject, outcome, detail, digest
             FROM audit_entries WHERE subject = $1 OR detail LIKE $2 ESCAPE '\\'
             ORDER BY seq LIMIT $3",
        )
        .bind(subject)
        .bind(format!(
            "%\"device\":\"{}\"%",
            subject
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn consistency_proof(&self, old_size: u64) -> Result<ConsistencyProof, StoreError> {
        let log = self.log.read().await;
        let head = self.audit_head().ok_or(StoreError::NotFound {
            what: "audit checkpoint",
            key: old_size.to_string(),
        })?;
        Ok(ConsistencyProof {
            old_size,
            path: log.tree.consistency_proof(old_size)?,
            head,
        })
    }
}

/// The device list's filters, after `FROM devices d`.
fn push_device_filters(
    qb: &mut Dynamic,
    q: &DevicePageQuery,
    join: bool,
) -> Result<(), StoreError> {
    if join {
        qb.push(" LEFT JOIN device_placements p ON p.device_id = d.id");
    }
    qb.push(" WHERE 1 = 1");
    if let Some(text) = q.search.as_deref().filter(|t| !t.is_empty()) {
        // A substring of the id (ids are lower-case by construction) or of the
        // hardware serial, any case; instr() is plain text, no pattern.
        let needle = text.to_lowercase();
        qb.push(" AND (instr(d.id, ")
            .bind(needle.clone())
            .push(") > 0 OR instr(lower(d.hardware_serial), ")
            .bind(needle)
            .push(") > 0)");
    }
    if let Some(m) = &q.model {
        qb.push(" AND d.model_id = ").bind(m.as_str().to_owned());
    }
    if let Some(st) = q.state {
        qb.push(" AND d.state = ").bind(st.as_str().to_owned());
    }
    match q.site.as_deref() {
        Some("") => {
            qb.push(" AND p.site IS NULL");
        }
        Some(site) => {
            qb.push(" AND p.site = ").bind(site.to_owned());
        }
        None => {}
    }
    if let Some(f) = &q.firmware {
        qb.push(" AND d.reported_firmware = ").bind(f.clone());
    }
    match q.seen_since {
        Some((true, since)) => {
            qb.push(" AND d.last_seen_ms >= ").bind(since);
        }
        Some((false, since)) => {
            qb.push(" AND (d.last_seen_ms IS NULL OR d.last_seen_ms < ")
                .bind(since)
                .push(")");
        }
        None => {}
    }
    if let Some(only) = &q.only {
        let list = serde_json::to_string(only).map_err(|e| corrupt("device selection", e))?;
        qb.push(" AND d.id IN (SELECT value FROM json_each(")
            .bind(list)
            .push("))");
    }
    Ok(())
}

/// A statement put together at run time: its text with `$N` parameters, and
/// their values in order (sqlx's `QueryBuilder` writes `?` for the `Any`
/// driver, which PostgreSQL does not take).
struct Dynamic {
    sql: String,
    args: sqlx::any::AnyArguments,
    n: usize,
    error: Option<String>,
}

impl Dynamic {
    fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: sqlx::any::AnyArguments::default(),
            n: 0,
            error: None,
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: for<'t> sqlx::Encode<'t, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        use sqlx::Arguments;
        self.n += 1;
        self.sql.push_str(&format!("${}", self.n));
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e.to_string());
        }
        self
    }

    fn query(
        self,
    ) -> Result<sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>, StoreError> {
        match self.error {
            Some(e) => Err(StoreError::Internal(format!("binding a parameter: {e}"))),
            None => Ok(sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args)),
        }
    }
}
