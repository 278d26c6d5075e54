//! EST enrolment and TPM attestation, in the device zone, under
//! `/.well-known/est/[<label>/]…` and `/attest/v1/…`: `simpleenroll` (birth
//! certificate or enrolment token over HTTP Basic) and `simplereenroll`
//! (current operational certificate). The optional label selects a device
//! model. Errors are `text/plain` with the reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_est::{CT_CERTS_ONLY, Operation, certs_only_base64, decode_pkcs10_body, parse_basic};

use crate::ClientCertChain;
use crate::est::{base64_body, operation, public, refusal, text};
use crate::state::{DeviceApi, Services};
use palisade_control::enroll::claimed_protection;
use palisade_control::error::EnrollError;
use palisade_control::identity::{Credential, Identified};

/// Largest attestation request body.
const MAX_ATTEST_BODY: usize = 32 * 1024;

/// Identifies the caller of an attestation step the way EST does: HTTP Basic
/// enrolment token, else the TLS client certificate.
async fn identify(
    s: &Services,
    headers: &HeaderMap,
    chain: Option<ClientCertChain>,
) -> Result<Identified, EnrollError> {
    let chain = chain.map(|c| c.0).unwrap_or_else(|| Arc::new(Vec::new()));
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.and_then(parse_basic) {
        Some(Ok(basic)) => {
            s.enrollment
                .identify(Credential::Token {
                    device: &basic.user,
                    token: &basic.password,
                })
                .await
        }
        Some(Err(e)) => Err(EnrollError::Unauthorized(e.to_string())),
        None if !chain.is_empty() => s.enrollment.identify(Credential::ClientCert(&chain)).await,
        None => s.enrollment.identify(Credential::None).await,
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, EnrollError> {
    if body.len() > MAX_ATTEST_BODY {
        return Err(EnrollError::BadRequest(format!(
            "attestation body is larger than {MAX_ATTEST_BODY} bytes"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| EnrollError::BadRequest(format!("attestation body is not valid JSON: {e}")))
}

/// `POST /attest/v1/challenge`: EK certificate and AK in, credential and nonce out.
pub(crate) async fn attest_challenge(
    State(s): State<DeviceApi>,
    headers: HeaderMap,
    chain: Option<axum::Extension<ClientCertChain>>,
    body: Bytes,
) -> Response {
    let result = async {
        let req: palisade_attest::ChallengeRequest = json_body(&body)?;
        let who = identify(&s, &headers, chain.map(|c| c.0)).await?;
        s.attestation.challenge(&who, &req).await
    }
    .await;
    attest_response(&s, result.map(|ch| axum::Json(ch).into_response()))
}

/// The answer to an attestation step; refusals are counted with EST's.
fn attest_response(s: &Services, result: Result<Response, EnrollError>) -> Response {
    result.unwrap_or_else(|e| {
        s.metrics.enrollment_refused();
        s.metrics.est_refused(e.label());
        refusal(e)
    })
}

/// `POST /attest/v1/evidence`: the activated secret and the key's certification.
pub(crate) async fn attest_evidence(
    State(s): State<DeviceApi>,
    headers: HeaderMap,
    chain: Option<axum::Extension<ClientCertChain>>,
    body: Bytes,
) -> Response {
    let result = async {
        let ev: palisade_attest::KeyEvidence = json_body(&body)?;
        let who = identify(&s, &headers, chain.map(|c| c.0)).await?;
        s.attestation.evidence(&who, &ev).await
    }
    .await;
    attest_response(&s, result.map(|()| StatusCode::NO_CONTENT.into_response()))
}

/// `/.well-known/est/{op}`
pub(crate) async fn est_unlabeled(
    State(s): State<DeviceApi>,
    Path(op): Path<String>,
    method: Method,
    headers: HeaderMap,
    chain: Option<axum::Extension<ClientCertChain>>,
    body: Bytes,
) -> Response {
    handle(&s, &op, method, &headers, chain.map(|c| c.0), body).await
}

/// `/.well-known/est/{label}/{op}`
pub(crate) async fn est_labeled(
    State(s): State<DeviceApi>,
    Path((label, op)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    chain: Option<axum::Extension<ClientCertChain>>,
    body: Bytes,
) -> Response {
    handle(
        &s,
        &format!("{label}/{op}"),
        method,
        &headers,
        chain.map(|c| c.0),
        body,
    )
    .await
}

async fn handle(
    s: &Services,
    path: &str,
    method: Method,
    headers: &HeaderMap,
    chain: Option<ClientCertChain>,
    body: Bytes,
) -> Response {
    let (label, op) = match operation(path, &method) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match op {
        // Served by the anonymous zone's static routes; a label that shadows
        // them lands here and gets the same answer.
        Operation::CaCerts | Operation::CsrAttrs => public(s, path, method),
        Operation::SimpleEnroll | Operation::SimpleReenroll => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let csr = match decode_pkcs10_body(ct, &body) {
                Ok(c) => c,
                Err(e) => {
                    let status = if matches!(e, palisade_est::EstError::ContentType(_)) {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    return text(status, e.to_string());
                }
            };
            let chain = chain.map(|c| c.0).unwrap_or_else(|| Arc::new(Vec::new()));
            let claim = claimed_protection(
                headers
                    .get("palisade-key-protection")
                    .and_then(|v| v.to_str().ok()),
            );
            let result = if op == Operation::SimpleReenroll {
                s.enrollment.reenroll(label, &chain, &csr, claim).await
            } else {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match auth.and_then(parse_basic) {
                    Some(Ok(basic)) => {
                        s.enrollment
                            .enroll(
                                label,
                                Credential::Token {
                                    device: &basic.user,
                                    token: &basic.password,
                                },
                                &csr,
                                claim,
                            )
                            .await
                    }
                    Some(Err(e)) => Err(EnrollError::Unauthorized(e.to_string())),
                    None if !chain.is_empty() => {
                        s.enrollment
                            .enroll(label, Credential::ClientCert(&chain), &csr, claim)
                            .await
                    }
                    None => {
                        s.enrollment
                            .enroll(label, Credential::None, &csr, claim)
                            .await
                    }
                }
            };
            match result {
                Ok(cert) => match certs_only_base64(&[&cert.der]) {
                    Ok(b) => base64_body(CT_CERTS_ONLY, b),
                    Err(e) => refusal(EnrollError::Internal(e.to_string())),
                },
                Err(e) => {
                    s.metrics.enrollment_refused();
                    s.metrics.est_refused(e.label());
                    refusal(e)
                }
            }
        }
    }
}
