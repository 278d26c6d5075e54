//! Operator routes for the audit log: the signed checkpoint, entries, checkpoints and proofs.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::OperatorApi;
use crate::views::*;

/// The newest signed checkpoint and the verifier key.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit", responses((status = 200, body = AuditHeadView)))]
pub(crate) async fn audit_head(State(s): State<OperatorApi>, _c: Caller) -> Json<AuditHeadView> {
    let head = s.store.audit_head();
    Json(AuditHeadView {
        size: head.as_ref().map_or(0, |h| h.size),
        note: head.map(|h| h.note),
        verifier_key: s.audit_vkey.to_string(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// First index (entries) or size (checkpoints).
    from: Option<u64>,
    /// At most this many (default 1000, at most 5000).
    limit: Option<u32>,
}

/// Audit entries in order.
#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit", params(PageQuery), responses((status = 200, body = Vec<AuditEntryView>)))]
pub(crate) async fn audit_entries(
    State(s): State<OperatorApi>,
    _c: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Vec<AuditEntryView>>, ApiError> {
    let rows = s
        .store
        .audit_entries(q.from.unwrap_or(0), q.limit.unwrap_or(1000).min(5000))
        .await?;
    Ok(Json(rows.iter().map(Into::into).collect()))
}

/// Stored checkpoints by size.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", params(PageQuery), responses((status = 200, body = Vec<CheckpointView>)))]
pub(crate) async fn audit_checkpoints(
    State(s): State<OperatorApi>,
    _c: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Vec<CheckpointView>>, ApiError> {
    let rows = s
        .store
        .audit_checkpoints(q.from.unwrap_or(0), q.limit.unwrap_or(1000).min(5000))
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|c| CheckpointView {
                size: c.size,
                note: c.note,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexQuery {
    /// Entry index.
    index: u64,
}

/// Proof that an entry is in the log of the newest checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/proof/inclusion", tag = "audit", params(IndexQuery), responses((status = 200, body = InclusionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn inclusion_proof(
    State(s): State<OperatorApi>,
    _c: Caller,
    Query(q): Query<IndexQuery>,
) -> Result<Json<InclusionView>, ApiError> {
    let p = s
        .store
        .inclusion_proof(q.index)
        .await
        .map_err(|e| match e {
            palisade_store::StoreError::Proof(p) => ApiError::not_found(p.to_string()),
            other => other.into(),
        })?;
    Ok(Json(InclusionView {
        entry: (&p.entry).into(),
        path: p.path.iter().map(hex::encode).collect(),
        checkpoint: p.head.note,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct OldSizeQuery {
    /// The older log size.
    old_size: u64,
}

/// Proof that the log of `old_size` is a prefix of the newest checkpoint's.
#[utoipa::path(get, path = "/api/v1/audit/proof/consistency", tag = "audit", params(OldSizeQuery), responses((status = 200, body = ConsistencyView), (status = 404, body = ErrorBody)))]
pub(crate) async fn consistency_proof(
    State(s): State<OperatorApi>,
    _c: Caller,
    Query(q): Query<OldSizeQuery>,
) -> Result<Json<ConsistencyView>, ApiError> {
    let p = s
        .store
        .consistency_proof(q.old_size)
        .await
        .map_err(|e| match e {
            palisade_store::StoreError::Proof(p) => ApiError::not_found(p.to_string()),
            other => other.into(),
        })?;
    Ok(Json(ConsistencyView {
        old_size: p.old_size,
        path: p.path.iter().map(hex::encode).collect(),
        checkpoint: p.head.note,
    }))
}
