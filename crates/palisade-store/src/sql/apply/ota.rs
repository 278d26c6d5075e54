//! Applying releases, director assignments, device update reports and staged rollouts.

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
        Change::InsertRelease(r) => {
            let floor: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(security_version) FROM releases WHERE model_id = $1",
            )
            .bind(r.model.as_str())
            .fetch_one(&mut *c)
            .await?;
            let sv = i64::try_from(r.security_version)
                .map_err(|_| conflict("release", &r.version, "security version is out of range"))?;
            if floor.is_some_and(|f| sv < f) {
                return Err(conflict(
                    "release",
                    &r.version,
                    "its security version is below an earlier release's: the anti-rollback floor never goes down",
                ));
            }
            sqlx::query(
                "INSERT INTO releases (model_id, version, security_version, hardware, image_sha256,
                   image_len, sbom_sha256, provenance_sha256, signed_by, builder_id, uploaded_by, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(r.model.as_str())
            .bind(&r.version)
            .bind(sv)
            .bind(r.hardware.join(","))
            .bind(&r.image_sha256)
            .bind(i64::try_from(r.image_len).unwrap_or(i64::MAX))
            .bind(&r.sbom_sha256)
            .bind(&r.provenance_sha256)
            .bind(&r.signed_by)
            .bind(&r.builder_id)
            .bind(&r.uploaded_by)
            .bind(r.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "release", &format!("{} {}", r.model, r.version)))?;
        }
        Change::SetAssignment {
            device,
            counter,
            signed,
            at_ms,
        } => {
            let counter = i64::try_from(*counter)
                .map_err(|_| conflict("assignment", device.as_str(), "counter out of range"))?;
            let done = sqlx::query(
                "INSERT INTO device_assignments (device_id, counter, signed, created_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT(device_id) DO UPDATE SET counter = $2, signed = $3, created_ms = $4
                 WHERE device_assignments.counter < $2",
            )
            .bind(device.as_str())
            .bind(counter)
            .bind(signed)
            .bind(at_ms)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "assignment",
                    device.as_str(),
                    "the counter did not increase",
                ));
            }
        }
        Change::RecordUpdate(u) => {
            let counter = i64::try_from(u.counter)
                .map_err(|_| conflict("update", u.device.as_str(), "counter out of range"))?;
            sqlx::query(
                "INSERT INTO device_updates (device_id, counter, target, state, detail, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT(device_id) DO UPDATE SET counter = $2, target = $3, state = $4,
                    detail = $5, updated_ms = $6
                 WHERE device_updates.counter <= $2",
            )
            .bind(u.device.as_str())
            .bind(counter)
            .bind(&u.target)
            .bind(u.state.as_str())
            .bind(&u.detail)
            .bind(u.updated_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::InsertRollout(r) => {
            sqlx::query(
                "INSERT INTO rollouts (name, model_id, release_version, spec, state, wave, reason,
                    created_by, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(r.name.as_str())
            .bind(r.model.as_str())
            .bind(&r.release_version)
            .bind(&r.spec)
            .bind(r.state.as_str())
            .bind(i64::from(r.wave))
            .bind(&r.reason)
            .bind(&r.created_by)
            .bind(r.created_ms)
            .bind(r.updated_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "rollout", r.name.as_str()))?;
        }
        Change::SetRolloutState {
            name,
            state,
            wave,
            reason,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE rollouts SET state = $1, wave = $2, reason = $3, updated_ms = $4 WHERE name = $5",
            )
            .bind(state.as_str())
            .bind(i64::from(*wave))
            .bind(reason)
            .bind(at_ms)
            .bind(name.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::NotFound {
                    what: "rollout",
                    key: name.to_string(),
                });
            }
        }
        Change::UpsertRolloutDevices(list) => {
            for d in list {
                let counter = i64::try_from(d.counter)
                    .map_err(|_| conflict("rollout", d.device.as_str(), "counter out of range"))?;
                sqlx::query(
                    "INSERT INTO rollout_devices (rollout, device_id, wave, state, counter, detail, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT(rollout, device_id) DO UPDATE SET wave = $3, state = $4,
                        counter = $5, detail = $6, updated_ms = $7",
                )
                .bind(d.rollout.as_str())
                .bind(d.device.as_str())
                .bind(i64::from(d.wave))
                .bind(d.state.as_str())
                .bind(counter)
                .bind(&d.detail)
                .bind(d.updated_ms)
                .execute(&mut *c)
                .await?;
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
