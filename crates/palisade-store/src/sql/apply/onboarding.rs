//! Applying suppliers and their keys, batch manifests, enrolment tokens, TPM vendor CAs and approved firmware.

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
        Change::InsertSupplier(r) => {
            sqlx::query(
                "INSERT INTO suppliers (name, ca_der, ca_sha256, disclosure_contact, created_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(r.name.as_str())
            .bind(&r.ca_der)
            .bind(&r.ca_sha256)
            .bind(r.disclosure_contact.as_deref())
            .bind(r.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "supplier", r.name.as_str()))?;
        }
        Change::SetSupplierContact { name, contact } => {
            let done = sqlx::query("UPDATE suppliers SET disclosure_contact = $1 WHERE name = $2")
                .bind(contact.as_deref())
                .bind(name.as_str())
                .execute(&mut *c)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: "supplier",
                    key: name.to_string(),
                });
            }
        }
        Change::InsertBatch(b) => {
            sqlx::query(
                "INSERT INTO batches (id, supplier, model_id, device_count, imported_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&b.id)
            .bind(b.supplier.as_str())
            .bind(b.model.as_str())
            .bind(i64::from(b.device_count))
            .bind(b.imported_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "batch", &b.id))?;
        }
        Change::InsertEnrollmentToken(t) => {
            sqlx::query(
                "INSERT INTO enrollment_tokens (id, model_id, secret_hash, created_ms, expires_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.id)
            .bind(t.model.as_str())
            .bind(&t.secret_hash[..])
            .bind(t.created_ms)
            .bind(t.expires_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "enrolment token", &t.id))?;
        }
        Change::ConsumeEnrollmentToken { id, device, at_ms } => {
            let done = sqlx::query(
                "UPDATE enrollment_tokens SET used_ms = $1, used_device = $2
                 WHERE id = $3 AND used_ms IS NULL AND expires_ms > $4",
            )
            .bind(at_ms)
            .bind(device.as_str())
            .bind(id)
            .bind(at_ms)
            .execute(&mut *c)
            .await?;
            if done.rows_affected() != 1 {
                return Err(conflict(
                    "enrolment token",
                    id,
                    "is unknown, already used or expired",
                ));
            }
        }
        Change::InsertTpmVendor(v) => {
            sqlx::query(
                "INSERT INTO tpm_vendors (sha256, subject, ca_der, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&v.sha256)
            .bind(&v.subject)
            .bind(&v.ca_der)
            .bind(v.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "TPM vendor CA", &v.subject))?;
        }
        Change::InsertFirmware(f) => {
            sqlx::query(
                "INSERT INTO model_firmware (model_id, version, sha256, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(f.model.as_str())
            .bind(&f.version)
            .bind(&f.sha256)
            .bind(f.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "firmware", &format!("{} {}", f.model, f.version)))?;
        }
        Change::InsertSupplierKey(k) => {
            sqlx::query(
                "INSERT INTO supplier_keys (keyid, supplier, spki_der, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(&k.keyid)
            .bind(k.supplier.as_str())
            .bind(&k.spki_der)
            .bind(k.created_ms)
            .execute(&mut *c)
            .await
            .map_err(|e| map_unique(e, "supplier key", &k.keyid))?;
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}
