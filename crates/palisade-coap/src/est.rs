//! EST over CoAP (RFC 9148) on the DTLS endpoint, through the same
//! enrolment service as EST over HTTPS: `crts` (the CAs in service, as a
//! certs-only CMS message), `sen` (a birth certificate's first enrolment:
//! the chain is judged against the suppliers' CAs, batches and tokens' rules
//! there) and `sren` (renewal with the operational certificate).

use std::sync::Arc;

use coap_lite::ResponseType;
use palisade_control::enroll::{Enrollment, claimed_protection};
use palisade_control::error::EnrollError;
use palisade_control::identity::Credential;
use palisade_control::metrics::Metrics;
use palisade_control::pki::Pki;
use palisade_est::certs_only_der;
use rustls_pki_types::CertificateDer;

use crate::exchange::{CF_CERTS_ONLY, CF_PKIX_CERT, EstOp, EstRequest};

/// What an EST-coaps request is answered with.
#[derive(Debug)]
pub(crate) struct EstAnswer {
    pub code: ResponseType,
    pub format: Option<u16>,
    pub body: Vec<u8>,
}

fn error(code: ResponseType, message: String) -> EstAnswer {
    EstAnswer {
        code,
        format: None,
        body: message.into_bytes(),
    }
}

/// Carries out `req` for a session authenticated with `chain` (leaf first).
pub(crate) async fn answer(
    enrollment: &Arc<Enrollment>,
    pki: &Arc<Pki>,
    metrics: &Metrics,
    req: &EstRequest,
    chain: &[Vec<u8>],
) -> EstAnswer {
    if req.op == EstOp::CaCerts {
        return match certs_only_der(&pki.cas().bundle()) {
            Ok(der) => EstAnswer {
                code: ResponseType::Content,
                format: Some(CF_CERTS_ONLY),
                body: der,
            },
            Err(e) => error(ResponseType::InternalServerError, e.to_string()),
        };
    }
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let claim = claimed_protection(None);
    let result = if req.op == EstOp::Reenroll {
        enrollment.reenroll(None, &chain, &req.csr, claim).await
    } else {
        enrollment
            .enroll(None, Credential::ClientCert(&chain), &req.csr, claim)
            .await
    };
    match result {
        Ok(cert) if req.pkix_cert => EstAnswer {
            code: ResponseType::Changed,
            format: Some(CF_PKIX_CERT),
            body: cert.der,
        },
        Ok(cert) => match certs_only_der(&[&cert.der]) {
            Ok(der) => EstAnswer {
                code: ResponseType::Changed,
                format: Some(CF_CERTS_ONLY),
                body: der,
            },
            Err(e) => error(ResponseType::InternalServerError, e.to_string()),
        },
        Err(e) => {
            metrics.enrollment_refused();
            metrics.est_refused(e.label());
            let code = match &e {
                EnrollError::BadRequest(_) => ResponseType::BadRequest,
                EnrollError::Unauthorized(_) => ResponseType::Unauthorized,
                EnrollError::Forbidden(_) => ResponseType::Forbidden,
                EnrollError::NotFound(_) => ResponseType::NotFound,
                EnrollError::Pending { .. } | EnrollError::Unavailable(_) => {
                    ResponseType::ServiceUnavailable
                }
                EnrollError::Internal(_) => ResponseType::InternalServerError,
            };
            tracing::info!(error = %e, "EST over CoAP refused");
            error(code, e.to_string())
        }
    }
}
