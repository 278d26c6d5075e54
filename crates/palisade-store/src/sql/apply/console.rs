//! Applying console accounts, sessions and saved device groups.

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
        Change::InsertAccount(a) => {
            sqlx::query(
                "INSERT INTO operator_accounts (name, role, password_hash, created_ms, updated_ms,
                   disabled_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(a.name.as_str())
            .bind(a.role.to_string())
            .bind(&a.password_hash)
            .bind(a.created_ms)
            .bind(a.updated_ms)
            .bind(a.disabled_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "account", a.name.as_str()))?;
        }
        Change::UpdateAccount {
            name,
            password_hash,
            role,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE operator_accounts SET password_hash = COALESCE($1, password_hash),
                   role = COALESCE($2, role), updated_ms = $3 WHERE name = $4 AND disabled_ms IS NULL",
            )
            .bind(password_hash)
            .bind(role.map(|r| r.to_string()))
            .bind(at_ms)
            .bind(name.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict("account", name.as_str(), "is unknown or disabled"));
            }
        }
        Change::DisableAccount { name, at_ms } => {
            let done = sqlx::query(
                "UPDATE operator_accounts SET disabled_ms = $1, updated_ms = $2
                 WHERE name = $3 AND disabled_ms IS NULL",
            )
            .bind(at_ms)
            .bind(at_ms)
            .bind(name.as_str())
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "account",
                    name.as_str(),
                    "is unknown or already disabled",
                ));
            }
            sqlx::query(
                "UPDATE console_sessions SET revoked_ms = $1 WHERE operator = $2 AND revoked_ms IS NULL",
            )
            .bind(at_ms)
            .bind(name.as_str())
            .execute(&mut *c)
            .await?;
        }
        Change::InsertSession(s) => {
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, operator, csrf, address, created_ms,
                   last_seen_ms, expires_ms, revoked_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(s.id_hash.to_vec())
            .bind(s.operator.as_str())
            .bind(&s.csrf)
            .bind(&s.address)
            .bind(s.created_ms)
            .bind(s.last_seen_ms)
            .bind(s.expires_ms)
            .bind(s.revoked_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "session", s.operator.as_str()))?;
        }
        Change::TouchSession { id_hash, at_ms } => {
            sqlx::query(
                "UPDATE console_sessions SET last_seen_ms = CASE WHEN last_seen_ms > $1 THEN last_seen_ms ELSE $1 END WHERE id_hash = $2",
            )
            .bind(at_ms)
            .bind(id_hash.to_vec())
            .execute(&mut *c)
            .await?;
        }
        Change::RevokeSession { id_hash, at_ms } => {
            sqlx::query(
                "UPDATE console_sessions SET revoked_ms = COALESCE(revoked_ms, $1) WHERE id_hash = $2",
            )
            .bind(at_ms)
            .bind(id_hash.to_vec())
            .execute(&mut *c)
            .await?;
        }
        Change::SaveDeviceGroup(g) => {
            sqlx::query(
                "INSERT INTO device_groups (name, query, created_by, created_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(name) DO UPDATE SET query = $2, created_by = $3, created_ms = $4",
            )
            .bind(&g.name)
            .bind(&g.query)
            .bind(&g.created_by)
            .bind(g.created_ms)
            .execute(&mut *c)
            .await?;
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
