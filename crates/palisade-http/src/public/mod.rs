//! The anonymous zone: what a protocol needs before any credential — liveness
//! and readiness, the CRL and the CA chain, EST `cacerts` and `csrattrs`
//! (RFC 7030 §4.1, §4.5), and TUF metadata, images and deltas (their integrity
//! comes from the signatures devices check). No handler here reads a
//! credential.

mod tuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::error::ApiError;
use crate::state::PublicApi;

/// The anonymous routes.
pub(crate) fn router(state: PublicApi) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/crl", get(crl))
        .route("/crl/{serial}", get(crl_of_issuer))
        .route("/ca/chain.pem", get(chain))
        .route("/.well-known/est/cacerts", any(est_unlabeled))
        .route("/.well-known/est/csrattrs", any(est_unlabeled))
        .route("/.well-known/est/{label}/cacerts", any(est_labeled))
        .route("/.well-known/est/{label}/csrattrs", any(est_labeled))
        .route("/tuf/metadata/{name}", get(tuf::tuf_metadata))
        .route("/tuf/targets/{*path}", get(tuf::tuf_target))
        .route("/tuf/deltas/{*path}", get(tuf::tuf_delta))
        .with_state(state)
}

/// `/.well-known/est/cacerts` and `/.well-known/est/csrattrs`.
async fn est_unlabeled(
    State(s): State<PublicApi>,
    method: Method,
    req: axum::extract::Request,
) -> Response {
    let path = req
        .uri()
        .path()
        .trim_start_matches("/.well-known/est/")
        .to_owned();
    crate::est::public(&s, &path, method)
}

/// `/.well-known/est/{label}/cacerts` and `…/csrattrs`.
async fn est_labeled(
    State(s): State<PublicApi>,
    Path(label): Path<String>,
    method: Method,
    req: axum::extract::Request,
) -> Response {
    let op = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
    crate::est::public(&s, &format!("{label}/{op}"), method)
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// How long readiness waits for the database and for the blob store.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the node is not draining, and the database and the blob store
/// answer (each within [`READY_WITHIN`]).
#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub(crate) async fn readyz(State(s): State<PublicApi>) -> Response {
    if s.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining (shutting down)\n",
        )
            .into_response();
    }
    // A balancer's health check waits a few seconds at most; a database that
    // does not answer within READY_WITHIN is as good as down.
    let not_ready = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    };
    match tokio::time::timeout(READY_WITHIN, s.store.models()).await {
        Err(_) => {
            return not_ready(format!(
                "the database did not answer within {READY_WITHIN:?}"
            ));
        }
        Ok(Err(e)) => return not_ready(e.to_string()),
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout(READY_WITHIN, s.releases.blobs().check()).await {
        Err(_) => not_ready(format!(
            "the blob store did not answer within {READY_WITHIN:?}"
        )),
        Ok(Err(e)) => not_ready(e.to_string()),
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
    }
}

fn crl_error(e: palisade_control::pki::CrlError) -> ApiError {
    match e {
        palisade_control::pki::CrlError::Store(e) => ApiError::from(e),
        other => ApiError::internal(other),
    }
}

fn crl_body(der: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        der,
    )
        .into_response()
}

/// The first issuing CA's CRL (DER), with nextUpdate; once that CA has left
/// service, the current issuing CA's.
#[utoipa::path(get, path = "/crl", security(()), responses((status = 200, description = "DER CRL", content_type = "application/pkix-crl")))]
pub(crate) async fn crl(State(s): State<PublicApi>) -> Result<Response, ApiError> {
    let der = s.pki.crl(&*s.store).await.map_err(crl_error)?;
    Ok(crl_body(der))
}

/// The CRL of the issuing CA with this serial (the distribution point of
/// the certificates it issues), while it is in service.
#[utoipa::path(get, path = "/crl/{serial}", security(()), params(("serial" = String, Path, description = "the issuing CA certificate's serial, hex")), responses((status = 200, description = "DER CRL", content_type = "application/pkix-crl"), (status = 404, description = "no issuing CA in service has this serial")))]
pub(crate) async fn crl_of_issuer(
    State(s): State<PublicApi>,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    match s
        .pki
        .crl_by_serial(&*s.store, &serial.to_ascii_lowercase())
        .await
        .map_err(crl_error)?
    {
        Some(der) => Ok(crl_body(der)),
        None => Err(ApiError::not_found(format!(
            "no issuing CA in service has serial {serial}: /ca/chain.pem lists them"
        ))),
    }
}

/// Every CA certificate in service (PEM): the current issuing CA first, then
/// older issuing CAs and cross-certificates, then the roots.
#[utoipa::path(get, path = "/ca/chain.pem", security(()), responses((status = 200, description = "PEM chain", content_type = "application/pem-certificate-chain")))]
pub(crate) async fn chain(State(s): State<PublicApi>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        s.pki.chain_pem(),
    )
        .into_response()
}
