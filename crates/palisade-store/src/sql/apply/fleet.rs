//! Applying devices and models: inventory records, lifecycle state (compare-and-set), enrolment, key protection, attestation status, approval, tags and presence.

use sqlx::AnyConnection;

use super::misrouted;
use crate::sql::writer::{conflict, map_unique};
use crate::{Change, StoreError};

/// Applies one of this family's changes inside the open transaction.
pub(super) async fn apply(
    c: &mut AnyConnection,
    change: &Change,
) -> Result<Option<i64>, StoreError> {
    match change {
        Change::InsertModel(m) => {
            sqlx::query(
                "INSERT INTO models (id, description, cert_validity_days, created_ms, policy_version,
                   approval_required, allowed_key_types, attestation, supplier,
                   support_until_ms, security_update_days)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(m.id.as_str())
            .bind(&m.description)
            .bind(i64::from(m.cert_validity_days))
            .bind(m.created_ms)
            .bind(i64::from(m.policy_version))
            .bind(i64::from(m.approval_required))
            .bind(m.allowed_key_types.join(","))
            .bind(&m.attestation)
            .bind(m.supplier.as_ref().map(|s| s.as_str()))
            .bind(m.support_until_ms)
            .bind(m.security_update_days.map(i64::from))
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "model", m.id.as_str()))?;
        }
        Change::InsertDevice(d) => {
            let o = &d.onboarding;
            sqlx::query(
                "INSERT INTO devices (id, model_id, state, hardware_serial, created_ms, updated_ms,
                   supplier, batch_id, birth_cert_sha256, enrolled_key_sha256, attached_policy)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(d.id.as_str())
            .bind(d.model.as_str())
            .bind(d.state.as_str())
            .bind(&d.hardware_serial)
            .bind(d.created_ms)
            .bind(d.updated_ms)
            .bind(o.supplier.as_ref().map(|s| s.as_str().to_owned()))
            .bind(&o.batch_id)
            .bind(&o.birth_cert_sha256)
            .bind(&o.enrolled_key_sha256)
            .bind(&o.attached_policy)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "device", d.id.as_str()))?;
        }
        Change::RecordDecommission(d) => {
            sqlx::query(
                "INSERT INTO decommissions (device_id, actor, reason, requested_ms, wipe, nonce,
                   serial, deadline_ms, completed_ms, receipt, destroyed, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(d.device.as_str())
            .bind(&d.actor)
            .bind(&d.reason)
            .bind(d.requested_ms)
            .bind(d.wipe.as_str())
            .bind(&d.nonce)
            .bind(&d.serial)
            .bind(d.deadline_ms)
            .bind(d.completed_ms)
            .bind(&d.receipt)
            .bind(serde_json::to_string(&d.destroyed).unwrap_or_else(|_| "[]".into()))
            .bind(&d.detail)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "decommissioning of device", d.device.as_str()))?;
        }
        Change::CompleteWipe {
            device,
            nonce,
            wipe,
            receipt,
            destroyed,
            detail,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE decommissions SET wipe = $1, receipt = $2, destroyed = $3, detail = $4,
                   completed_ms = $5
                 WHERE device_id = $6 AND wipe = 'pending' AND nonce = $7",
            )
            .bind(wipe.as_str())
            .bind(receipt)
            .bind(serde_json::to_string(destroyed).unwrap_or_else(|_| "[]".into()))
            .bind(detail)
            .bind(at_ms)
            .bind(device.as_str())
            .bind(nonce)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "wipe of device",
                    device.as_str(),
                    "is not pending with that nonce (closed already?)",
                ));
            }
        }
        Change::SetSupportPolicy {
            model,
            support_until_ms,
            notify_days,
            restrict_ms,
            retire_ms,
            retire_wipe,
            at_ms,
        } => {
            let done = sqlx::query("UPDATE models SET support_until_ms = $1 WHERE id = $2")
                .bind(support_until_ms)
                .bind(model.as_str())
                .execute(&mut *c)
                .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound {
                    what: "model",
                    key: model.to_string(),
                });
            }
            sqlx::query(
                "INSERT INTO support_policies (model_id, notify_days, restrict_ms, retire_ms,
                   retire_wipe, stage, stage_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, 'supported', NULL, $6)
                 ON CONFLICT (model_id) DO UPDATE SET notify_days = $2, restrict_ms = $3,
                   retire_ms = $4, retire_wipe = $5, updated_ms = $6",
            )
            .bind(model.as_str())
            .bind(i64::from(*notify_days))
            .bind(restrict_ms)
            .bind(retire_ms)
            .bind(i64::from(*retire_wipe))
            .bind(at_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::SetSupportStage {
            model,
            expected,
            to,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE support_policies SET stage = $1, stage_ms = $2
                 WHERE model_id = $3 AND stage = $4",
            )
            .bind(to.as_str())
            .bind(at_ms)
            .bind(model.as_str())
            .bind(expected.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "support stage of model",
                    model.as_str(),
                    &format!("is no longer {expected}; retry"),
                ));
            }
        }
        Change::ClearDecommission { device } => {
            sqlx::query("DELETE FROM decommissions WHERE device_id = $1")
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
        }
        Change::SetDeviceState {
            id,
            expected,
            to,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE devices SET state = $1, updated_ms = $2 WHERE id = $3 AND state = $4",
            )
            .bind(to.as_str())
            .bind(at_ms)
            .bind(id.as_str())
            .bind(expected.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "device",
                    id.as_str(),
                    &format!("is no longer {expected}; retry"),
                ));
            }
        }
        Change::RequireDeviceState { id, allowed } => {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM devices WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_all(&mut *c)
                    .await?
                    .into_iter()
                    .next();
            let Some(state) = state else {
                return Err(StoreError::NotFound {
                    what: "device",
                    key: id.to_string(),
                });
            };
            if !allowed.iter().any(|a| a.as_str() == state) {
                return Err(conflict("device", id.as_str(), &format!("is {state}")));
            }
        }
        Change::AdvanceDeviceState {
            id,
            from,
            to,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE devices SET state = $1, updated_ms = $2 WHERE id = $3 AND state = $4",
            )
            .bind(to.as_str())
            .bind(at_ms)
            .bind(id.as_str())
            .bind(from.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::RecordEnrollment {
            id,
            key_sha256,
            attached_policy,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE devices SET enrolled_key_sha256 = $1, attached_policy = $2, updated_ms = $3
                 WHERE id = $4",
            )
            .bind(key_sha256)
            .bind(attached_policy)
            .bind(at_ms)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::RecordKeyProtection {
            id,
            key_protection,
            ak_public,
            ek_sha256,
        } => {
            sqlx::query(
                "UPDATE devices SET key_protection = $1, ak_public = $2, ek_sha256 = $3 WHERE id = $4",
            )
            .bind(key_protection.as_str())
            .bind(ak_public)
            .bind(ek_sha256)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::RecordAttestation {
            id,
            status,
            detail,
            at_ms,
        } => {
            sqlx::query(
                "UPDATE devices SET attestation_status = $1, attestation_detail = $2, attested_ms = $3
                 WHERE id = $4",
            )
            .bind(status)
            .bind(detail)
            .bind(at_ms)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::MarkPending { id, at_ms } => {
            sqlx::query(
                "UPDATE devices SET pending_since_ms = COALESCE(pending_since_ms, $1) WHERE id = $2",
            )
            .bind(at_ms)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::ApproveDevice { id, at_ms } => {
            let done = sqlx::query(
                "UPDATE devices SET approved_ms = $1, updated_ms = $2 WHERE id = $3 AND approved_ms IS NULL",
            )
            .bind(at_ms)
            .bind(at_ms)
            .bind(id.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "device",
                    id.as_str(),
                    "is unknown or already approved",
                ));
            }
        }
        Change::SetDeviceTags { device, tags } => {
            sqlx::query("DELETE FROM device_tags WHERE device_id = $1")
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
            for t in tags {
                sqlx::query(
                    "INSERT INTO device_tags (device_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                    .bind(device.as_str())
                    .bind(t.as_str())
                    .execute(&mut *c)
                    .await?;
            }
        }
        Change::RecordPresence(list) => {
            for (id, seen, firmware) in list {
                sqlx::query(
                    "UPDATE devices SET last_seen_ms = CASE WHEN last_seen_ms > $1 THEN last_seen_ms ELSE $1 END,
                       reported_firmware = COALESCE($2, reported_firmware) WHERE id = $3",
                )
                .bind(seen)
                .bind(firmware)
                .bind(id.as_str())
                .execute(&mut *c)
                .await?;
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
