//! EST (RFC 7030) over HTTP, the parts both trust zones share: paths and
//! methods, `text/plain` refusals with the status RFC 7030 gives them, base64
//! bodies, and the public operations `cacerts` and `csrattrs` (the anonymous
//! zone serves them; enrolment is the device zone's).

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_control::error::EnrollError;
use palisade_est::{
    CT_CERTS_ONLY, CT_CSRATTRS, Operation, certs_only_base64, csrattrs_p256_base64, parse_path,
};

use crate::state::Services;

/// Why an EST path or method is refused.
#[derive(Debug)]
pub(crate) enum BadRequest {
    /// Not an EST path (404).
    Path(String),
    /// The operation takes another method (405 with `Allow`).
    Method(Method),
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        match self {
            BadRequest::Path(why) => text(StatusCode::NOT_FOUND, why),
            BadRequest::Method(want) => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {want}"));
                if let Ok(v) = HeaderValue::from_str(want.as_str()) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                r
            }
        }
    }
}

/// The label (if any) and operation of an EST path.
pub(crate) fn operation<'a>(
    path: &'a str,
    method: &Method,
) -> Result<(Option<&'a str>, Operation), BadRequest> {
    let (label, op) = parse_path(path).map_err(|e| BadRequest::Path(e.to_string()))?;
    let want = match op {
        Operation::CaCerts | Operation::CsrAttrs => Method::GET,
        Operation::SimpleEnroll | Operation::SimpleReenroll => Method::POST,
    };
    if *method != want {
        return Err(BadRequest::Method(want));
    }
    Ok((label, op))
}

/// The public operations: the CA certificates (certs-only CMS) and the CSR
/// attributes. Anything else is not served without a credential.
pub(crate) fn public(s: &Services, path: &str, method: Method) -> Response {
    let op = match operation(path, &method) {
        Ok((_, op)) => op,
        Err(r) => return r.into_response(),
    };
    match op {
        // Every CA certificate in service, current issuing CA first: during a
        // root rotation this carries the new root with its certificate by the
        // old one, which is how devices come to trust it (RFC 7030 4.1.3).
        Operation::CaCerts => match certs_only_base64(&s.pki.cas().bundle()) {
            Ok(b) => base64_body(CT_CERTS_ONLY, b),
            Err(e) => refusal(EnrollError::Internal(e.to_string())),
        },
        Operation::CsrAttrs => base64_body(CT_CSRATTRS, csrattrs_p256_base64()),
        Operation::SimpleEnroll | Operation::SimpleReenroll => {
            text(StatusCode::NOT_FOUND, "not a public EST operation")
        }
    }
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, format!("{}\n", msg.into())).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"palisade-est\""),
        );
    }
    r
}

pub(crate) fn base64_body(content_type: &'static str, body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    r
}

/// An enrolment refusal as EST answers it: `text/plain` with the reason, and the
/// status RFC 7030 gives it.
pub(crate) fn refusal(e: EnrollError) -> Response {
    {
        let status = match &e {
            EnrollError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EnrollError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EnrollError::Forbidden(_) => StatusCode::FORBIDDEN,
            EnrollError::NotFound(_) => StatusCode::NOT_FOUND,
            EnrollError::Pending { retry_after, .. } => {
                let mut r = text(StatusCode::ACCEPTED, e.to_string());
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            EnrollError::Unavailable(m) => {
                tracing::warn!(error = %m, "EST: database unavailable");
                let mut r = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the enrolment service is unavailable; retry shortly",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
                return r;
            }
            EnrollError::Internal(m) => {
                tracing::error!(error = %m, "EST internal error");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log",
                );
            }
        };
        text(status, e.to_string())
    }
}
