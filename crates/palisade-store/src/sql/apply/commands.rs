//! Applying operator commands to devices: queued, sent, acknowledged.

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
        Change::InsertCommand(cmd) => {
            sqlx::query(
                "INSERT INTO commands (id, device_id, name, args, status, created_ms) VALUES ($1, $2, $3, $4, 'queued', $5)",
            )
            .bind(&cmd.id)
            .bind(cmd.device.as_str())
            .bind(&cmd.name)
            .bind(&cmd.args)
            .bind(cmd.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "command", &cmd.id))?;
        }
        Change::CommandSent { id, at_ms } => {
            sqlx::query(
                "UPDATE commands SET status = 'sent', sent_ms = $1 WHERE id = $2 AND status = 'queued'",
            )
            .bind(at_ms)
            .bind(id)
            .execute(&mut *c)
            .await?;
        }
        Change::CommandAcked {
            id,
            device,
            ok,
            result,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE commands SET status = $1, acked_ms = $2, result = $3
                 WHERE id = $4 AND device_id = $5 AND status IN ('queued','sent')",
            )
            .bind(if *ok { "acked" } else { "failed" })
            .bind(at_ms)
            .bind(result)
            .bind(id)
            .bind(device.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "command",
                    id,
                    "is unknown, not this device's, or already acknowledged",
                ));
            }
        }
        Change::SetMqttSession {
            device,
            subscribed: Some(subscribed),
            at_ms,
        } => {
            sqlx::query(
                "INSERT INTO mqtt_sessions (device_id, subscribed, updated_ms) VALUES ($1, $2, $3)
                 ON CONFLICT(device_id) DO UPDATE SET subscribed = $2, updated_ms = $3",
            )
            .bind(device.as_str())
            .bind(i64::from(*subscribed))
            .bind(at_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::SetMqttSession {
            device,
            subscribed: None,
            ..
        } => {
            sqlx::query("DELETE FROM mqtt_sessions WHERE device_id = $1")
                .bind(device.as_str())
                .execute(&mut *c)
                .await?;
        }
        Change::SetRetained {
            device,
            topic,
            payload,
            at_ms,
        } => {
            if payload.is_empty() {
                sqlx::query("DELETE FROM mqtt_retained WHERE device_id = $1 AND topic = $2")
                    .bind(device.as_str())
                    .bind(topic)
                    .execute(&mut *c)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO mqtt_retained (device_id, topic, payload, updated_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT(device_id, topic) DO UPDATE SET payload = $3, updated_ms = $4",
                )
                .bind(device.as_str())
                .bind(topic)
                .bind(payload.clone())
                .bind(at_ms)
                .execute(&mut *c)
                .await?;
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
