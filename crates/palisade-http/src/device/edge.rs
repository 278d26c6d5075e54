//! Edge gateway routes: the policy key, the signed site bundle (long poll), status reports.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::AuthenticatedDevice;
use crate::error::{ApiError, Body};
use crate::state::DeviceApi;

/// The policy key for edge gateways (authenticated by their certificate).
pub(crate) async fn edge_key(
    State(s): State<DeviceApi>,
    AuthenticatedDevice(edge): AuthenticatedDevice,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.network.edge_site(&edge).await?;
    let k = s.network.public_key()?;
    Ok(Json(
        serde_json::json!({ "ed25519_public": palisade_attest::b64(&k) }),
    ))
}

/// When an edge asks for a bundle newer than `after`, waiting up to `wait` s.
#[derive(Debug, Deserialize)]
pub(crate) struct BundleQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// The edge's signed site bundle: at once if newer than `after`, else when
/// one appears within `wait` seconds (at most 25), else 204.
pub(crate) async fn edge_bundle(
    State(s): State<DeviceApi>,
    AuthenticatedDevice(edge): AuthenticatedDevice,
    Query(q): Query<BundleQuery>,
) -> Result<axum::response::Response, ApiError> {
    let site = s.network.edge_site(&edge).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(25));
    loop {
        let b = s.network.bundle(&site).await?;
        if b.version > q.after {
            let signed = s.network.sign(&b)?;
            return Ok(Json(signed).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What an edge reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EdgeStatus {
    applied_version: u64,
    #[serde(default)]
    counters: serde_json::Value,
    #[serde(default)]
    error: String,
    /// DNS names of the site's policies and the addresses the edge resolved
    /// them to (the monitor's policy verdict on flows to named peers).
    #[serde(default)]
    dns: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Hosts on the site's segments from the edge's neighbour table and the
    /// site's DHCP leases (the unmanaged-hosts inventory).
    #[serde(default)]
    hosts: Vec<palisade_policy::hosts::HostSeen>,
    /// The edge's own addresses on the segments.
    #[serde(default)]
    own: Vec<std::net::IpAddr>,
}

/// An edge reports the bundle version it applied, its counters and errors.
pub(crate) async fn edge_status(
    State(s): State<DeviceApi>,
    AuthenticatedDevice(edge): AuthenticatedDevice,
    Body(r): Body<EdgeStatus>,
) -> Result<StatusCode, ApiError> {
    let site = s.network.edge_site(&edge).await?;
    let dns: std::collections::BTreeMap<&String, &[std::net::IpAddr]> = r
        .dns
        .iter()
        .take(1024)
        .map(|(n, a)| (n, &a[..a.len().min(64)]))
        .collect();
    if r.hosts.len() > palisade_policy::hosts::MAX_HOSTS || r.own.len() > 256 {
        return Err(ApiError::too_large(format!(
            "an edge reports at most {} hosts and 256 own addresses",
            palisade_policy::hosts::MAX_HOSTS
        )));
    }
    let status = serde_json::json!({
        "counters": r.counters,
        "error": r.error.chars().take(2000).collect::<String>(),
        "dns": dns,
        "own": r.own,
        "hosts": r.hosts.len(),
    });
    let text = status.to_string();
    if text.len() > 64 * 1024 {
        return Err(ApiError::too_large("edge status is at most 64 KiB"));
    }
    // An error is audited when it first appears, not at every poll.
    let before = s
        .store
        .edges(Some(&site))
        .await?
        .into_iter()
        .find(|e| e.device == edge)
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.status).ok())
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let audit = if r.error.is_empty() || before == r.error.chars().take(2000).collect::<String>() {
        vec![]
    } else {
        vec![
            palisade_audit::EntryDraft::denied(edge.as_str(), "edge.apply_failed", site.as_str())
                .with_detail(
                    serde_json::json!({ "reason": r.error.chars().take(500).collect::<String>() }),
                ),
        ]
    };
    s.unmanaged.reported(&site, r.hosts);
    s.store
        .commit(
            vec![palisade_store::Change::RecordEdgeStatus {
                device: edge,
                applied_version: r.applied_version,
                status: text,
                at_ms: s.clock.now_ms(),
            }],
            audit,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
