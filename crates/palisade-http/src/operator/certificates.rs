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

fn ca_error(e: palisade_control::ca::CaSetError) -> ApiError {
    use palisade_control::ca::CaSetError;
    match e {
        CaSetError::Refused(m) => ApiError::conflict(m),
        e @ (CaSetError::Key { .. } | CaSetError::MissingKey { .. }) => {
            ApiError::bad_request("ca_key", e.to_string())
        }
        CaSetError::Store(e) => ApiError::from(e),
        CaSetError::Ca(e) => ApiError::internal(e),
    }
}

/// Every CA certificate of this installation, in service or not, oldest first.
#[utoipa::path(get, path = "/api/v1/ca", tag = "certificates", responses((status = 200, body = [CaView])))]
pub(crate) async fn list_cas(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<Vec<CaView>>, ApiError> {
    c.require(&s, Access::Read, "list the CAs").await?;
    ca_views(&s).await.map(Json)
}

async fn ca_views(s: &OperatorApi) -> Result<Vec<CaView>, ApiError> {
    let cas = s.pki.cas();
    let now = s.clock.now_ms();
    let in_service: Vec<String> = cas
        .bundle()
        .into_iter()
        .filter_map(|d| palisade_pki::inspect_certificate(d).ok())
        .map(|i| i.serial_hex)
        .collect();
    let mut out = vec![];
    for r in s.store.certificate_authorities().await? {
        let issuing = cas.issuer(&r.serial);
        let current =
            r.serial == cas.issuing().serial() || r.serial == cas.root().ca.info().serial_hex;
        let status = if r.status == CertStatus::Revoked {
            "retired"
        } else if current {
            "current"
        } else if in_service.contains(&r.serial) {
            "in-service"
        } else {
            "out-of-service"
        };
        let last = match issuing {
            Some(i) => palisade_control::ca::last_certificate(&*s.store, i.serial(), i.first, now)
                .await?
                .map(rfc3339),
            None => None,
        };
        out.push(CaView {
            serial: r.serial.clone(),
            kind: match r.profile.as_str() {
                "intermediate" => "issuing".into(),
                other => other.into(),
            },
            subject: r.subject.clone(),
            issuer: r.issuer.clone(),
            not_before: rfc3339(r.not_before_ms),
            not_after: rfc3339(r.not_after_ms),
            status: status.into(),
            last_certificate_expires: last,
            pem: palisade_control::files::pem("CERTIFICATE", &r.der),
        });
    }
    Ok(out)
}

/// Rotates the issuing CA (admin): a new issuing CA under the current root
/// issues from now on; the old one stays trusted while a certificate it
/// issued is unexpired.
#[utoipa::path(post, path = "/api/v1/ca/rotate-issuing", tag = "certificates", request_body = RotateCa,
    responses((status = 200, body = [CaView]), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn rotate_issuing(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<RotateCa>,
) -> Result<Json<Vec<CaView>>, ApiError> {
    c.require(&s, Access::Admin, "rotate the issuing CA")
        .await?;
    s.pki
        .rotate_issuing(&*s.store, &c.actor(), req.key.as_deref())
        .await
        .map_err(ca_error)?;
    ca_views(&s).await.map(Json)
}

/// Rotates the root (admin): a new root cross-certified by the current one,
/// and a new issuing CA under it; both roots stay trusted until the old one
/// is retired.
#[utoipa::path(post, path = "/api/v1/ca/rotate-root", tag = "certificates", request_body = RotateCa,
    responses((status = 200, body = [CaView]), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn rotate_root(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<RotateCa>,
) -> Result<Json<Vec<CaView>>, ApiError> {
    c.require(&s, Access::Admin, "rotate the root CA").await?;
    s.pki
        .rotate_root(&*s.store, &c.actor(), req.key.as_deref())
        .await
        .map_err(ca_error)?;
    ca_views(&s).await.map(Json)
}

/// Retires a CA that is not current (admin).
#[utoipa::path(post, path = "/api/v1/ca/{serial}/retire", tag = "certificates", params(("serial" = String, Path)), request_body = RetireCa,
    responses((status = 200, body = [CaView]), (status = 409, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn retire_ca(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(serial): Path<String>,
    Body(req): Body<RetireCa>,
) -> Result<Json<Vec<CaView>>, ApiError> {
    c.require(&s, Access::Admin, "retire a CA").await?;
    s.pki
        .retire(
            &*s.store,
            &c.actor(),
            &serial.to_ascii_lowercase(),
            req.force,
        )
        .await
        .map_err(ca_error)?;
    ca_views(&s).await.map(Json)
}

/// Asks every device whose certificate is from another issuing CA than the
/// current one to renew now (admin): a `renew` command on its commands
/// topic; the agent renews over EST (taking the new CA certificates from
/// `cacerts`) and reconnects with the new certificate.
#[utoipa::path(post, path = "/api/v1/ca/renew-fleet", tag = "certificates", request_body = RenewFleet,
    responses((status = 200, body = RenewFleetView), (status = 403, body = ErrorBody)))]
pub(crate) async fn renew_fleet(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<RenewFleet>,
) -> Result<Json<RenewFleetView>, ApiError> {
    c.require(&s, Access::Admin, "renew the fleet's certificates")
        .await?;
    let cas = s.pki.cas();
    let current = cas.issuing();
    // Certificates recorded before rotation existed name no issuer: they are
    // the first issuing CA's.
    let also = if current.first { "" } else { current.serial() };
    let devices = s
        .store
        .devices_issued_elsewhere(current.serial(), also, s.clock.now_ms(), 1_000_000)
        .await?;
    let queued = s
        .commands
        .send_to_many(
            &c.actor(),
            "ca.renew-fleet",
            &devices,
            palisade_core::RENEW_COMMAND,
            &[req.within_s.to_string()],
        )
        .await?;
    Ok(Json(RenewFleetView {
        queued,
        issuing: current.serial().to_owned(),
    }))
}
