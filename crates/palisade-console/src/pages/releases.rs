//! Releases: per model, every accepted release with its image, SBOM and
//! provenance digests, who signed and built it, and how many devices run it.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use palisade_core::role::Role;
use palisade_store::DevicePageQuery;

use crate::chrome::{Chrome, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// One release.
pub struct Line {
    model: String,
    version: String,
    security_version: u64,
    hardware: String,
    image: String,
    size: String,
    sbom: String,
    provenance: String,
    signed_by: String,
    builder: String,
    uploaded: String,
    running: u64,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct Page {
    chrome: Chrome,
    lines: Vec<Line>,
}

/// `GET /releases`
pub async fn list(State(c): State<Console>, who: Person) -> Response {
    let mut releases = match c.store.releases(None).await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    // A supplier (its account is named after it) sees only its own models'
    // releases.
    if who.0.role == Role::Supplier {
        let own = who.0.operator.as_str();
        let models = match c.store.models().await {
            Ok(m) => m,
            Err(e) => return store_error(e),
        };
        releases.retain(|r| {
            models
                .iter()
                .any(|m| m.id == r.model && m.supplier.as_ref().is_some_and(|s| s.as_str() == own))
        });
    }
    releases.sort_by(|a, b| {
        (a.model.as_str(), b.security_version, b.created_ms).cmp(&(
            b.model.as_str(),
            a.security_version,
            a.created_ms,
        ))
    });
    let mut lines = Vec::with_capacity(releases.len());
    for r in releases {
        let running = match c
            .store
            .device_page(&DevicePageQuery {
                model: Some(r.model.clone()),
                firmware: Some(r.version.clone()),
                limit: 1,
                ..DevicePageQuery::default()
            })
            .await
        {
            Ok(p) => p.total,
            Err(e) => return store_error(e),
        };
        lines.push(Line {
            model: r.model.to_string(),
            version: r.version,
            security_version: r.security_version,
            hardware: r.hardware.join(", "),
            image: r.image_sha256,
            size: fmt::bytes(r.image_len),
            sbom: r.sbom_sha256,
            provenance: r.provenance_sha256,
            signed_by: r.signed_by,
            builder: r.builder_id,
            uploaded: format!("{} by {}", fmt::when(r.created_ms), r.uploaded_by),
            running,
        });
    }
    render(&Page {
        chrome: Chrome::new(&who, "Releases", "releases"),
        lines,
    })
}
