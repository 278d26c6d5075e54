//! Applying vulnerability advisories and their matches against releases.

use sqlx::AnyConnection;

use super::misrouted;
use crate::{AdvisoryMatchRecord, Change, StoreError};

/// Applies one of this family's changes inside the open transaction.
pub(super) async fn apply(
    c: &mut AnyConnection,
    change: &Change,
) -> Result<Option<i64>, StoreError> {
    match change {
        Change::UpsertAdvisory {
            record: r,
            ids,
            packages,
        } => {
            sqlx::query(
                "INSERT INTO advisories (id, modified, withdrawn, summary, severity, body, first_seen_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT(id) DO UPDATE SET modified = $2, withdrawn = $3, summary = $4,
                   severity = $5, body = $6, updated_ms = $8",
            )
            .bind(&r.id)
            .bind(&r.modified)
            .bind(&r.withdrawn)
            .bind(&r.summary)
            .bind(&r.severity)
            .bind(r.body.clone())
            .bind(r.first_seen_ms)
            .bind(r.updated_ms)
            .execute(&mut *c)
            .await?;
            for delete in [
                "DELETE FROM advisory_ids WHERE advisory_id = $1",
                "DELETE FROM advisory_packages WHERE advisory_id = $1",
            ] {
                sqlx::query(delete).bind(&r.id).execute(&mut *c).await?;
            }
            for id in ids {
                sqlx::query(
                    "INSERT INTO advisory_ids (alias, advisory_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(id.to_uppercase())
                .bind(&r.id)
                .execute(&mut *c)
                .await?;
            }
            for (ecosystem, name) in packages {
                sqlx::query(
                    "INSERT INTO advisory_packages (ecosystem, name, advisory_id) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(ecosystem)
                .bind(name)
                .bind(&r.id)
                .execute(&mut *c)
                .await?;
            }
        }
        Change::SetAdvisoryMatches { advisory, matches } => {
            sqlx::query("DELETE FROM advisory_matches WHERE advisory_id = $1")
                .bind(advisory)
                .execute(&mut *c)
                .await?;
            insert(c, matches).await?;
        }
        Change::RecordAdvisoryExposure(list) => {
            for e in list {
                sqlx::query(
                    "INSERT INTO advisory_exposure (advisory_id, day, devices) VALUES ($1, $2, $3)
                     ON CONFLICT (advisory_id, day) DO UPDATE SET devices = $3",
                )
                .bind(&e.advisory)
                .bind(&e.day)
                .bind(i64::try_from(e.devices).unwrap_or(i64::MAX))
                .execute(&mut *c)
                .await?;
            }
        }
        Change::MarkExploited(x) => {
            sqlx::query(
                "INSERT INTO advisory_exploitation (advisory_id, aware_ms, actor, note, recorded_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (advisory_id) DO UPDATE SET aware_ms = $2, actor = $3, note = $4,
                   recorded_ms = $5",
            )
            .bind(&x.advisory)
            .bind(x.aware_ms)
            .bind(&x.actor)
            .bind(&x.note)
            .bind(x.recorded_ms)
            .execute(&mut *c)
            .await?;
        }
        Change::SetReleaseVex {
            model,
            version,
            statements,
        } => {
            sqlx::query("DELETE FROM vex_statements WHERE model_id = $1 AND version = $2")
                .bind(model.as_str())
                .bind(version)
                .execute(&mut *c)
                .await?;
            for v in statements {
                sqlx::query(
                    "INSERT INTO vex_statements (model_id, version, vulnerability, component,
                       status, justification, detail, supplier, document_sha256, uploaded_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (model_id, version, vulnerability, component) DO UPDATE SET
                       status = $5, justification = $6, detail = $7, supplier = $8,
                       document_sha256 = $9, uploaded_ms = $10",
                )
                .bind(model.as_str())
                .bind(version)
                .bind(&v.vulnerability)
                .bind(v.component.as_deref().unwrap_or(""))
                .bind(&v.status)
                .bind(&v.justification)
                .bind(&v.detail)
                .bind(&v.supplier)
                .bind(&v.document_sha256)
                .bind(v.uploaded_ms)
                .execute(&mut *c)
                .await?;
            }
        }
        Change::SetReleaseMatches {
            model,
            version,
            matches,
        } => {
            sqlx::query("DELETE FROM advisory_matches WHERE model_id = $1 AND version = $2")
                .bind(model.as_str())
                .bind(version)
                .execute(&mut *c)
                .await?;
            insert(c, matches).await?;
        }
        other => return Err(misrouted(other)),
    }
    Ok(None)
}

async fn insert(c: &mut AnyConnection, matches: &[AdvisoryMatchRecord]) -> Result<(), StoreError> {
    for m in matches {
        sqlx::query(
            "INSERT INTO advisory_matches (advisory_id, model_id, version, component, component_version, why, fixed)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&m.advisory)
        .bind(m.model.as_str())
        .bind(&m.version)
        .bind(&m.component)
        .bind(&m.component_version)
        .bind(&m.why)
        .bind(&m.fixed)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
