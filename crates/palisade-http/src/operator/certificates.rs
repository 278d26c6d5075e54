//! Operator routes for certificates: issuance to a device from a CSR, listing, revocation.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use palisade_core::DeviceId;
use palisade_core::role::Access;
use palisade_pki::{RevocationReason, pem_to_der};
use palisade_store::{CertFilter, CertStatus};
use serde::Deserialize;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::OperatorApi;
use crate::views::*;

/// Issues a device identity certificate from a CSR (operator or admin).
#[utoipa::path(post, path = "/api/v1/devices/{id}/certificates", tag = "certificates", params(("id" = String, Path)), request_body = IssueCertificate,
    responses((status = 201, body = CertView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn issue_certificate(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<IssueCertificate>,
) -> Result<(StatusCode, Json<CertView>), ApiError> {
    c.require(&s, Access::Write, "issue certificates").await?;
    let id: DeviceId = parse_id(&s, &c, "cert.issue", &id).await?;
    let der = match pem_to_der(&req.csr, "CERTIFICATE REQUEST") {
        Ok(d) => d,
        Err(e) => {
            s.fleet
                .audit_denied(&c.actor(), "cert.issue", id.as_str(), &e.to_string())
                .await;
            return Err(ApiError::bad_request("bad_csr", e.to_string()));
        }
    };
    let rec = s
        .fleet
        .issue_device_certificate(&c.actor(), &id, &der)
        .await?;
    let mut view = CertView::full(&rec);
    view.chain = Some(s.pki.chain_pem());
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertQuery {
    /// Only this device's.
    device: Option<String>,
    /// `valid` or `revoked`.
    status: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<u32>,
}

/// The certificate inventory.
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(CertQuery), responses((status = 200, body = Vec<CertView>)))]
pub(crate) async fn list_certificates(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<CertQuery>,
) -> Result<Json<Vec<CertView>>, ApiError> {
    let device = match q.device {
        Some(d) => Some(parse_id::<DeviceId>(&s, &c, "cert.list", &d).await?),
        None => None,
    };
    let status = match q.status.as_deref() {
        None => None,
        Some("valid") => Some(CertStatus::Valid),
        Some("revoked") => Some(CertStatus::Revoked),
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_status",
                format!("unknown status {other:?}: use valid or revoked"),
            ));
        }
    };
    let list = s
        .store
        .certificates(&CertFilter {
            device,
            status,
            limit: Some(q.limit.unwrap_or(1000).min(10_000)),
        })
        .await?;
    Ok(Json(list.iter().map(CertView::summary).collect()))
}

pub(crate) fn serial_param(raw: &str) -> Result<String, ApiError> {
    palisade_pki::Serial::from_hex(raw)
        .map(|s| s.to_hex())
        .ok_or_else(|| ApiError::bad_request("bad_serial", "a serial is 1 to 20 bytes of hex"))
}

/// One certificate, with its PEM.
#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates", params(("serial" = String, Path)), responses((status = 200, body = CertView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_certificate(
    State(s): State<OperatorApi>,
    _c: Caller,
    Path(serial): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let serial = serial_param(&serial)?;
    let rec = s
        .store
        .certificate(&serial)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("certificate {serial} not found")))?;
    Ok(Json(CertView::full(&rec)))
}

/// Revokes a certificate (operator or admin); the next CRL lists it.
#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", tag = "certificates", params(("serial" = String, Path)), request_body = Revoke,
    responses((status = 200, body = CertView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn revoke_certificate(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(serial): Path<String>,
    Body(req): Body<Revoke>,
) -> Result<Json<CertView>, ApiError> {
    c.require(&s, Access::Write, "revoke certificates").await?;
    let serial = serial_param(&serial)?;
    let reason = match req.reason.as_deref() {
        None => RevocationReason::Unspecified,
        Some(r) => RevocationReason::parse(r).ok_or_else(|| {
            ApiError::bad_request(
                "bad_reason",
                format!(
                    "unknown reason {r:?}: use one of {}",
                    RevocationReason::ALL.map(|r| r.as_str()).join(", ")
                ),
            )
        })?,
    };
    let rec = s
        .fleet
        .revoke_certificate(&c.actor(), &serial, reason)
        .await?;
    Ok(Json(CertView::summary(&rec)))
}
