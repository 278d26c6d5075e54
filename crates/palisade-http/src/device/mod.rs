//! The device zone: EST enrolment and TPM attestation, the director (a
//! device's signed assignment and update reports), and edge gateways (site
//! bundles and status). Devices authenticate with their client certificate
//! ([`AuthenticatedDevice`]) — or, only to enrol, a birth certificate or an
//! enrolment token over HTTP Basic. An operator's bearer token is never a
//! credential here: this router drops it before any handler runs.

mod director;
mod edge;
mod est;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{any, get, post};
use palisade_control::identity::Credential;
use palisade_core::DeviceId;

use crate::ClientCertChain;
use crate::error::ApiError;
use crate::state::DeviceApi;

/// The device routes.
pub(crate) fn router(state: DeviceApi) -> Router {
    Router::new()
        .route("/.well-known/est/{op}", any(est::est_unlabeled))
        .route("/.well-known/est/{label}/{op}", any(est::est_labeled))
        .route("/attest/v1/challenge", post(est::attest_challenge))
        .route("/attest/v1/evidence", post(est::attest_evidence))
        .route("/director/v1/assignment", get(director::device_assignment))
        .route("/director/v1/key", get(director::device_director_key))
        .route("/director/v1/report", post(director::device_update_report))
        .route("/edge/v1/key", get(edge::edge_key))
        .route("/edge/v1/bundle", get(edge::edge_bundle))
        .route("/edge/v1/status", post(edge::edge_status))
        .layer(axum::middleware::map_request(forget_operator_token))
        .with_state(state)
}

/// An operator's bearer token is never a device's credential: drop it before
/// any handler could look (HTTP Basic, for enrolment tokens, stays).
async fn forget_operator_token(mut req: Request) -> Request {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 7 && v[..7].eq_ignore_ascii_case("bearer "));
    if bearer {
        req.headers_mut().remove(AUTHORIZATION);
    }
    req
}

/// A device that presented a valid Palisade operational certificate (not
/// revoked, its device in the inventory).
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedDevice(pub DeviceId);

impl FromRequestParts<DeviceApi> for AuthenticatedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &DeviceApi) -> Result<Self, ApiError> {
        let chain = parts
            .extensions
            .get::<ClientCertChain>()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let who = s
            .enrollment
            .identify(Credential::ClientCert(&chain))
            .await
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        Ok(AuthenticatedDevice(who.device))
    }
}
