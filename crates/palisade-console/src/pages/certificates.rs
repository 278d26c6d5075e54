//! Certificates: the CA chain, what expires soon, what is revoked and not
//! yet expired (what the CRL carries), and one device's certificates.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use palisade_core::DeviceId;
use palisade_store::{CertFilter, CertRecord};
use serde::Deserialize;

use crate::chrome::{Chrome, error_page, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// A certificate line.
pub struct Line {
    serial: String,
    profile: String,
    holder: String,
    device: bool,
    not_after: String,
    status: String,
    reason: String,
}

impl Line {
    fn of(c: CertRecord) -> Self {
        Self {
            device: c.device.is_some(),
            holder: c.device.map_or(c.subject, |d| d.to_string()),
            serial: c.serial,
            profile: c.profile,
            not_after: fmt::when(c.not_after_ms),
            status: c.status.as_str().to_owned(),
            reason: c.reason.unwrap_or_default(),
        }
    }
}

/// A CA in the chain.
pub struct CaLine {
    role: &'static str,
    subject: String,
    not_after: String,
}

#[derive(Template)]
#[template(path = "certificates.html")]
struct Page {
    chrome: Chrome,
    chain: Vec<CaLine>,
    device: String,
    of_device: Vec<Line>,
    expiring: Vec<Line>,
    revoked: Vec<Line>,
    revoked_total: usize,
}

/// Which device's certificates.
#[derive(Debug, Deserialize)]
pub struct CertQuery {
    device: Option<String>,
}

const SHOWN: usize = 200;

/// `GET /certificates`
pub async fn list(
    State(c): State<Console>,
    who: Person,
    q: Result<Query<CertQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(StatusCode::BAD_REQUEST, "the query is malformed");
    };
    let now = c.clock.now_ms();
    let device = q.device.unwrap_or_default();
    let of_device = if device.trim().is_empty() {
        vec![]
    } else {
        let id = match DeviceId::parse(device.trim()) {
            Ok(i) => i,
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match c
            .store
            .certificates(&CertFilter {
                device: Some(id),
                status: None,
                limit: Some(100),
            })
            .await
        {
            Ok(l) => l.into_iter().rev().map(Line::of).collect(),
            Err(e) => return store_error(e),
        }
    };
    let expiring = match c
        .store
        .certificates_expiring(now + 30 * 86_400_000, SHOWN as u32)
        .await
    {
        Ok(l) => l.into_iter().map(Line::of).collect(),
        Err(e) => return store_error(e),
    };
    let revoked_all = match c.store.revoked_unexpired(now).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    let revoked_total = revoked_all.len();
    let revoked = revoked_all.into_iter().take(SHOWN).map(Line::of).collect();
    // Every CA in service, current first: during a rotation the old ones
    // stay listed until they leave service.
    let cas = c.pki.cas();
    let current_root = cas.root().ca.info().serial_hex.clone();
    let current_issuing = cas.issuing().serial().to_owned();
    let roots = cas.roots().iter().rev().map(|r| &r.ca);
    let issuers = cas.issuers().iter().rev().map(|i| &i.ca);
    let chain = roots
        .map(|ca| {
            (
                ca,
                ca.info().serial_hex == current_root,
                "root",
                "previous root",
            )
        })
        .chain(issuers.map(|ca| {
            (
                ca,
                ca.info().serial_hex == current_issuing,
                "issuing",
                "previous issuing",
            )
        }))
        .map(|(ca, current, now, before)| CaLine {
            role: if current { now } else { before },
            subject: ca.info().subject.clone(),
            not_after: fmt::when(ca.info().not_after.unix_timestamp() * 1000),
        })
        .collect();
    render(&Page {
        chrome: Chrome::new(&who, "Certificates", "certificates"),
        chain,
        device,
        of_device,
        expiring,
        revoked,
        revoked_total,
    })
}
