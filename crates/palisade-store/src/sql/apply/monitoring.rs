//! Applying alerts and their lifecycle, timeline events, and their pruning.

use sqlx::AnyConnection;

use super::misrouted;
use palisade_core::AlertState;

use crate::{Change, StoreError};

/// Applies one of this family's changes inside the open transaction.
pub(super) async fn apply(
    c: &mut AnyConnection,
    change: &Change,
) -> Result<Option<i64>, StoreError> {
    match change {
        Change::OpenAlert(a) => {
            sqlx::query(
                "INSERT INTO alerts (id, dedup_key, detector, severity, device_id, peer, state,
                   summary, evidence, last_evidence, count, first_ms, last_ms, note, responses)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&a.id)
            .bind(&a.dedup_key)
            .bind(&a.detector)
            .bind(&a.severity)
            .bind(&a.device)
            .bind(&a.peer)
            .bind(a.state.as_str())
            .bind(&a.summary)
            .bind(&a.evidence)
            .bind(&a.last_evidence)
            .bind(i64::try_from(a.count).unwrap_or(i64::MAX))
            .bind(a.first_ms)
            .bind(a.last_ms)
            .bind(&a.note)
            .bind(&a.responses)
            .execute(&mut *c)
            .await?;
        }
        Change::BumpAlert {
            id,
            count,
            last_ms,
            last_evidence,
        } => {
            sqlx::query(
                "UPDATE alerts SET count = count + $1, last_ms = CASE WHEN last_ms > $2 THEN last_ms ELSE $2 END, last_evidence = $3
                 WHERE id = $4",
            )
            .bind(i64::try_from(*count).unwrap_or(i64::MAX))
            .bind(last_ms)
            .bind(last_evidence)
            .bind(id)
            .execute(&mut *c)
            .await?;
        }
        Change::SetAlertState {
            id,
            from,
            to,
            by,
            at_ms,
            note,
        } => {
            let current: Option<String> =
                sqlx::query_scalar("SELECT state FROM alerts WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *c)
                    .await?;
            let Some(current) = current else {
                return Err(StoreError::NotFound {
                    what: "alert",
                    key: id.clone(),
                });
            };
            if !from.iter().any(|f| f.as_str() == current) {
                return Err(StoreError::Conflict {
                    what: "alert",
                    key: id.clone(),
                    reason: format!("it is {current}, it cannot become {to}"),
                });
            }
            let sql = if *to == AlertState::Resolved {
                "UPDATE alerts SET state = $1, resolved_by = $2, resolved_ms = $3,
                   note = CASE WHEN $4 = '' THEN note WHEN note = '' THEN $4 ELSE note || '\n' || $4 END
                 WHERE id = $5"
            } else {
                "UPDATE alerts SET state = $1, acked_by = $2, acked_ms = $3,
                   note = CASE WHEN $4 = '' THEN note WHEN note = '' THEN $4 ELSE note || '\n' || $4 END
                 WHERE id = $5"
            };
            sqlx::query(sql)
                .bind(to.as_str())
                .bind(by)
                .bind(at_ms)
                .bind(note)
                .bind(id)
                .execute(&mut *c)
                .await?;
        }
        Change::SetAlertResponses { id, responses } => {
            sqlx::query("UPDATE alerts SET responses = $1 WHERE id = $2")
                .bind(responses)
                .bind(id)
                .execute(&mut *c)
                .await?;
        }
        Change::RecordDeviceEvents(list) => {
            for e in list {
                sqlx::query(
                    "INSERT INTO device_events (device_id, at_ms, kind, summary, detail)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&e.device)
                .bind(e.at_ms)
                .bind(&e.kind)
                .bind(&e.summary)
                .bind(&e.detail)
                .execute(&mut *c)
                .await?;
            }
        }
        Change::RecordPostureSnapshots(list) => {
            for p in list {
                let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                sqlx::query(
                    "INSERT INTO posture_snapshots (day, framework, scope, pass, fail, unknown,
                       not_assessable, devices) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT(day, framework, scope) DO UPDATE SET pass = $4, fail = $5,
                       unknown = $6, not_assessable = $7, devices = $8",
                )
                .bind(&p.day)
                .bind(&p.framework)
                .bind(&p.scope)
                .bind(n(p.pass))
                .bind(n(p.fail))
                .bind(n(p.unknown))
                .bind(n(p.not_assessable))
                .bind(n(p.devices))
                .execute(&mut *c)
                .await?;
            }
        }
        Change::PruneMonitoring { before_ms } => {
            sqlx::query("DELETE FROM device_events WHERE at_ms < $1")
                .bind(before_ms)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM alerts WHERE state = 'resolved' AND last_ms < $1")
                .bind(before_ms)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM fleet_windows WHERE closed_ms < $1")
                .bind(before_ms)
                .execute(&mut *c)
                .await?;
        }
        Change::RecordFleetWindows(rows) => {
            let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            for r in rows {
                sqlx::query(
                    "INSERT INTO fleet_windows (device_id, model_id, closed_ms, dests, bytes_out, bytes_in, node)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT(device_id) DO UPDATE SET model_id = $2, closed_ms = $3, dests = $4,
                       bytes_out = $5, bytes_in = $6, node = $7",
                )
                .bind(r.device.as_str())
                .bind(r.model.as_str())
                .bind(r.closed_ms)
                .bind(int(r.dests))
                .bind(int(r.bytes_out))
                .bind(int(r.bytes_in))
                .bind(&r.node)
                .execute(&mut *c)
                .await?;
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
