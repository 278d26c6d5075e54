//! Device routes of the director: a device fetches its signed assignment and the director key, and reports its update.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use palisade_core::UpdateState;
use serde::Deserialize;

use super::AuthenticatedDevice;
use crate::error::{ApiError, Body, tuf_error};
use crate::state::DeviceApi;

/// A device fetches its current assignment (authenticated by its certificate).
pub(crate) async fn device_assignment(
    State(s): State<DeviceApi>,
    AuthenticatedDevice(device): AuthenticatedDevice,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, signed) = s
        .store
        .assignment(&device)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no assignment for {device}")))?;
    Ok(Json(
        serde_json::from_str(&signed).map_err(ApiError::internal)?,
    ))
}

/// The director's public key for devices (authenticated by their certificate),
/// which pin it on first use.
pub(crate) async fn device_director_key(
    State(s): State<DeviceApi>,
    _device: AuthenticatedDevice,
) -> Result<Json<serde_json::Value>, ApiError> {
    let k = s.tuf.director_public().map_err(tuf_error)?;
    Ok(Json(
        serde_json::json!({ "ed25519_public": palisade_attest::b64(&k) }),
    ))
}

/// The states a device reports about an update.
/// What a device reports about the assignment with `counter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateReport {
    counter: u64,
    target: String,
    state: String,
    #[serde(default)]
    detail: String,
}

/// A device reports an update's state (authenticated by its certificate).
/// Refusals, failures, fallbacks and commits are audited.
pub(crate) async fn device_update_report(
    State(s): State<DeviceApi>,
    AuthenticatedDevice(device): AuthenticatedDevice,
    Body(r): Body<UpdateReport>,
) -> Result<StatusCode, ApiError> {
    let state = UpdateState::parse(&r.state).map_err(|e| {
        ApiError::bad_request("bad_state", format!("state must be one of {}", e.allowed))
    })?;
    if r.target.len() > 256 || r.detail.len() > 2048 {
        return Err(ApiError::bad_request(
            "too_long",
            "target is at most 256 bytes and detail at most 2048",
        ));
    }
    s.metrics.ota_report(state.as_str());
    let audit = match state {
        UpdateState::Committed => vec![
            palisade_audit::EntryDraft::success(device.as_str(), "ota.committed", device.as_str())
                .with_detail(serde_json::json!({ "target": r.target, "counter": r.counter })),
        ],
        s if s.is_failure() => vec![
            palisade_audit::EntryDraft::denied(
                device.as_str(),
                &format!("ota.{state}"),
                device.as_str(),
            )
            .with_detail(serde_json::json!({
                "target": r.target, "counter": r.counter, "reason": r.detail,
            })),
        ],
        _ => vec![],
    };
    let now = s.clock.now_ms();
    let ended = state.is_end();
    s.store
        .commit(
            vec![palisade_store::Change::RecordUpdate(
                palisade_store::UpdateRecord {
                    device,
                    counter: r.counter,
                    target: r.target,
                    state,
                    detail: r.detail,
                    updated_ms: now,
                },
            )],
            audit,
        )
        .await?;
    if ended {
        s.rollouts.wake();
    }
    Ok(StatusCode::NO_CONTENT)
}
