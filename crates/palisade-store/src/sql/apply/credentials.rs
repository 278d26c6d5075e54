//! Applying certificates, their revocation, operator API tokens, the durable counters (CRL numbers) and published signed documents (the CRL, TUF metadata).

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
        Change::InsertCertificate(r) => {
            sqlx::query(
                "INSERT INTO certificates (serial, profile, subject, device_id, not_before_ms, not_after_ms,
                   status, revoked_ms, reason, der, issued_ms, issuer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&r.serial)
            .bind(&r.profile)
            .bind(&r.subject)
            .bind(r.device.as_ref().map(|d| d.as_str().to_owned()))
            .bind(r.not_before_ms)
            .bind(r.not_after_ms)
            .bind(r.status.as_str())
            .bind(r.revoked_ms)
            .bind(&r.reason)
            .bind(&r.der)
            .bind(r.issued_ms)
            .bind(&r.issuer)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "certificate", &r.serial))?;
        }
        Change::RevokeCertificate {
            serial,
            reason,
            at_ms,
        } => {
            let done = sqlx::query(
                "UPDATE certificates SET status = 'revoked', revoked_ms = $1, reason = $2
                 WHERE serial = $3 AND status = 'valid'",
            )
            .bind(at_ms)
            .bind(reason)
            .bind(serial)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "certificate",
                    serial,
                    "is unknown or already revoked",
                ));
            }
        }
        Change::InsertToken(t) => {
            sqlx::query(
                "INSERT INTO tokens (id, operator, role, secret_hash, created_ms, expires_ms, revoked_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.id)
            .bind(t.operator.as_str())
            .bind(t.role.as_str())
            .bind(&t.secret_hash[..])
            .bind(t.created_ms)
            .bind(t.expires_ms)
            .bind(t.revoked_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "token", &t.id))?;
        }
        Change::RevokeToken { id, at_ms } => {
            let done = sqlx::query(
                "UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
            )
            .bind(at_ms)
            .bind(id)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict("token", id, "is unknown or already revoked"));
            }
        }
        Change::BumpCounter { name } => {
            let v: i64 = sqlx::query_scalar(
                "INSERT INTO counters (name, value) VALUES ($1, 1)
                 ON CONFLICT(name) DO UPDATE SET value = counters.value + 1 RETURNING value",
            )
            .bind(name)
            .fetch_one(&mut *c)
            .await?;
            return Ok(Some(v));
        }
        Change::PutDocument {
            name,
            version,
            replaces,
            body,
            at_ms,
        } => {
            let version = i64::try_from(*version)
                .map_err(|_| conflict("document", name, "version out of range"))?;
            let done = match replaces {
                None => {
                    sqlx::query(
                        "INSERT INTO signed_documents (name, version, body, updated_ms)
                     VALUES ($1, $2, $3, $4) ON CONFLICT(name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(version)
                    .bind(body.clone())
                    .bind(at_ms)
                    .execute(&mut *c)
                    .await?
                }
                Some(old) => {
                    sqlx::query(
                        "UPDATE signed_documents SET version = $2, body = $3, updated_ms = $4
                     WHERE name = $1 AND version = $5",
                    )
                    .bind(name)
                    .bind(version)
                    .bind(body.clone())
                    .bind(at_ms)
                    .bind(i64::try_from(*old).unwrap_or(i64::MAX))
                    .execute(&mut *c)
                    .await?
                }
            };
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "document",
                    name,
                    "another version was published meanwhile (on this node or another): read it and try again",
                ));
            }
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
