//! Operator and supplier routes for firmware: blobs, releases and their supply-chain gate, supplier keys, lifecycle, the director, update reports, staged rollouts and TUF administration.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use palisade_control::error::ServiceError;
use palisade_core::role::Access;
use palisade_core::{DeviceId, ModelId};
use palisade_store::DeviceFilter;
use serde::Deserialize;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody, tuf_error};
use crate::state::{OperatorApi, Services};
use crate::views::*;

/// Devices past their model's end of support, and devices not running their
/// model's latest security release within the model's update target.
#[utoipa::path(get, path = "/api/v1/lifecycle", tag = "releases", responses((status = 200, body = LifecycleView)))]
pub(crate) async fn lifecycle(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<LifecycleView>, ApiError> {
    c.require(&s, Access::Read, "read the fleet's lifecycle")
        .await?;
    let models = s.store.models().await?;
    let releases = s.store.releases(None).await?;
    let devices = s
        .store
        .devices(&DeviceFilter {
            model: None,
            state: None,
            limit: Some(1_000_000),
        })
        .await?;
    let r = palisade_control::lifecycle::assess(s.clock.now_ms(), &models, &releases, &devices);
    Ok(Json(LifecycleView {
        past_support: r
            .past_support
            .into_iter()
            .map(|p| PastSupportView {
                device: p.device.to_string(),
                model: p.model.to_string(),
                support_ended: rfc3339(p.support_until_ms),
            })
            .collect(),
        behind_target: r
            .behind
            .into_iter()
            .map(|b| BehindTargetView {
                device: b.device.to_string(),
                model: b.model.to_string(),
                running: b.running,
                running_security_version: b.running_security_version,
                required_security_version: b.required_security_version,
                due: rfc3339(b.due_ms),
            })
            .collect(),
    }))
}

/// The director's public key (Ed25519, base64): devices verify assignments with it.
#[utoipa::path(get, path = "/api/v1/director/key", tag = "releases", responses((status = 200)))]
pub(crate) async fn director_key(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read the director key").await?;
    let k = s.tuf.director_public().map_err(tuf_error)?;
    Ok(Json(
        serde_json::json!({ "ed25519_public": palisade_attest::b64(&k) }),
    ))
}

/// Assigns a release to a device (operator): a director assignment signed
/// online, with a 7-day expiry and the device's next counter.
#[utoipa::path(post, path = "/api/v1/devices/{id}/assignment", tag = "releases", params(("id" = String, Path)), request_body = AssignRelease,
    responses((status = 201), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn assign_release(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<AssignRelease>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    c.require(&s, Access::Write, "assign releases").await?;
    let id: DeviceId = parse_id(&s, &c, "director.assign", &id).await?;
    let d = s
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    let r = s
        .store
        .releases(Some(&d.model))
        .await?
        .into_iter()
        .find(|r| r.version == req.version)
        .ok_or_else(|| {
            ApiError::not_found(format!("model {} has no release {}", d.model, req.version))
        })?;
    let now = s.clock.now_ms();
    let (counter, target, change) =
        palisade_control::rollouts::assignment_change(s.store.as_ref(), &s.tuf, &id, &r, now)
            .await?;
    let signed = match &change {
        palisade_store::Change::SetAssignment { signed, .. } => signed.clone(),
        _ => return Err(ApiError::internal("unexpected change")),
    };
    s.store
        .commit(
            vec![change],
            vec![
                palisade_audit::EntryDraft::success(c.actor(), "director.assign", id.as_str())
                    .with_detail(serde_json::json!({
                        "target": target, "sha256": r.image_sha256, "counter": counter,
                    })),
            ],
        )
        .await?;
    palisade_control::rollouts::notify_device(&s.sessions, &id, counter);
    let signed: serde_json::Value = serde_json::from_str(&signed).map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(signed)))
}

/// A new rollout.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRollout {
    name: String,
    model: String,
    release_version: String,
    /// Only these devices (default: all of the model's).
    #[serde(default)]
    devices: Vec<String>,
    /// Only devices with all these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Cumulative wave sizes: counts or percentages, e.g. ["5", "25%", "100%"].
    waves: Vec<String>,
    /// Fraction of a wave that must commit before the next (default 0.95).
    #[serde(default)]
    success_threshold: Option<f64>,
    /// Fraction of a wave whose failure pauses the rollout (default 0.05).
    #[serde(default)]
    failure_threshold: Option<f64>,
    /// Devices updating at once (0: no limit).
    #[serde(default)]
    max_concurrency: u32,
    /// Daily maintenance window, UTC: "HH:MM-HH:MM".
    #[serde(default)]
    window: Option<String>,
}

pub(crate) fn rollout_view(
    r: &palisade_store::RolloutRecord,
    devices: Option<&[palisade_store::RolloutDeviceRecord]>,
) -> serde_json::Value {
    let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
    let mut v = serde_json::json!({
        "name": r.name, "model": r.model, "release_version": r.release_version,
        "state": r.state, "wave": r.wave + 1, "reason": r.reason, "spec": spec,
        "created_by": r.created_by, "created_ms": r.created_ms, "updated_ms": r.updated_ms,
    });
    if let Some(devices) = devices {
        let waves = spec["waves"].as_array().map_or(1, Vec::len);
        let zero: serde_json::Map<String, serde_json::Value> =
            palisade_core::RolloutDeviceState::ALL
                .iter()
                .map(|st| (st.as_str().to_owned(), 0.into()))
                .collect();
        let mut per = vec![serde_json::Value::Object(zero); waves];
        for d in devices {
            if let Some(w) = per.get_mut(d.wave as usize)
                && let Some(n) = w.get_mut(d.state.as_str())
            {
                *n = (n.as_u64().unwrap_or(0) + 1).into();
            }
        }
        v["waves"] = per.into();
        v["devices"] = serde_json::json!(
            devices
                .iter()
                .map(|d| serde_json::json!({
                    "device": d.device, "wave": d.wave + 1, "state": d.state,
                    "counter": d.counter, "detail": d.detail, "updated_ms": d.updated_ms,
                }))
                .collect::<Vec<_>>()
        );
    }
    v
}

/// Starts a staged rollout.
#[utoipa::path(post, path = "/api/v1/rollouts", tag = "releases", request_body = NewRollout,
    responses((status = 201), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_rollout(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<NewRollout>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use palisade_release::rollout::{RolloutSpec, WaveSize, Window};
    c.require(&s, Access::Write, "start rollouts").await?;
    let name: palisade_core::RolloutName = parse_id(&s, &c, "rollout.create", &req.name).await?;
    let model: ModelId = parse_id(&s, &c, "rollout.create", &req.model).await?;
    let bad = |e: palisade_release::rollout::RolloutError| {
        ApiError::bad_request("bad_rollout", e.to_string())
    };
    let spec = RolloutSpec {
        devices: req.devices,
        tags: req.tags,
        waves: req
            .waves
            .iter()
            .map(|w| WaveSize::parse(w))
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        success_threshold: req.success_threshold.unwrap_or(0.95),
        failure_threshold: req.failure_threshold.unwrap_or(0.05),
        max_concurrency: req.max_concurrency,
        window: req
            .window
            .as_deref()
            .map(Window::parse)
            .transpose()
            .map_err(bad)?,
    };
    let r = s
        .rollouts
        .create(&c.actor(), &name, &model, &req.release_version, spec)
        .await?;
    Ok((StatusCode::CREATED, Json(rollout_view(&r, None))))
}

/// Rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/rollouts", tag = "releases", responses((status = 200)))]
pub(crate) async fn list_rollouts(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    c.require(&s, Access::Read, "list rollouts").await?;
    let mut out = vec![];
    for r in s.store.rollouts().await? {
        let devices = s.store.rollout_devices(&r.name).await?;
        out.push(rollout_view(&r, Some(&devices)));
    }
    Ok(Json(out))
}

/// One rollout with its waves and devices.
#[utoipa::path(get, path = "/api/v1/rollouts/{name}", tag = "releases", params(("name" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_rollout(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read rollouts").await?;
    let name: palisade_core::RolloutName = parse_id(&s, &c, "rollout.read", &name).await?;
    let r = s.rollouts.get(&name).await?;
    let devices = s.store.rollout_devices(&name).await?;
    Ok(Json(rollout_view(&r, Some(&devices))))
}

/// Pauses, resumes or cancels a rollout (`action`: pause, resume, cancel).
#[utoipa::path(post, path = "/api/v1/rollouts/{name}/{action}", tag = "releases",
    params(("name" = String, Path), ("action" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rollout_action(
    State(s): State<OperatorApi>,
    c: Caller,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use palisade_control::rollouts::Action;
    c.require(&s, Access::Write, "change rollouts").await?;
    let name: palisade_core::RolloutName = parse_id(&s, &c, "rollout.change", &name).await?;
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        _ => {
            return Err(ApiError::not_found(format!(
                "no rollout action {action:?}: pause, resume or cancel"
            )));
        }
    };
    let r = s.rollouts.act(&c.actor(), &name, action).await?;
    Ok(Json(rollout_view(&r, None)))
}

pub(crate) async fn tuf_audit(
    s: &Services,
    c: &Caller,
    action: &str,
    subject: &str,
    ok: Result<(), String>,
) {
    let entry = match ok {
        Ok(()) => palisade_audit::EntryDraft::success(c.actor(), action, subject),
        Err(reason) => palisade_audit::EntryDraft::denied(c.actor(), action, subject)
            .with_detail(serde_json::json!({ "reason": reason })),
    };
    if let Err(e) = s.store.commit(vec![], vec![entry]).await {
        tracing::error!(error = %e, "could not audit a TUF change");
    }
}

/// The server's online TUF keys (snapshot, timestamp), for the key ceremony.
#[utoipa::path(get, path = "/api/v1/tuf/online-keys", tag = "releases", responses((status = 200)))]
pub(crate) async fn tuf_online_keys(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read the TUF online keys")
        .await?;
    Ok(Json(s.tuf.online_keys().await.map_err(tuf_error)?))
}

/// The server's next online TUF keys, made on first ask (admin): a root that
/// names them rotates the online keys when it is installed.
#[utoipa::path(post, path = "/api/v1/tuf/online-keys/next", tag = "releases", responses((status = 200), (status = 403, body = ErrorBody)))]
pub(crate) async fn tuf_next_online_keys(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Admin, "prepare new TUF online keys")
        .await?;
    let keys = s.tuf.next_online_keys().await.map_err(tuf_error)?;
    tuf_audit(&s, &c, "tuf.online-keys.next", "next online keys", Ok(())).await;
    Ok(Json(keys))
}

/// Installs root metadata signed in a key ceremony (admin).
#[utoipa::path(put, path = "/api/v1/tuf/root", tag = "releases", request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn tuf_set_root(
    State(s): State<OperatorApi>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "install TUF root metadata")
        .await?;
    match s.tuf.set_root(&body, s.clock.now_ms()).await {
        Ok(v) => {
            tuf_audit(&s, &c, "tuf.root", &format!("root v{v}"), Ok(())).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            tuf_audit(&s, &c, "tuf.root", "root", Err(e.to_string())).await;
            Err(tuf_error(e))
        }
    }
}

/// The targets role to sign offline: every accepted release.
#[utoipa::path(get, path = "/api/v1/tuf/targets-draft", tag = "releases", responses((status = 200)))]
pub(crate) async fn tuf_targets_draft(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Write, "draft TUF targets").await?;
    let releases = s.store.releases(None).await?;
    let t = s
        .tuf
        .targets_draft(&releases, s.clock.now_ms(), 365)
        .await
        .map_err(tuf_error)?;
    Ok(Json(serde_json::to_value(&t).map_err(ApiError::internal)?))
}

/// Publishes offline-signed targets; signs a new snapshot and timestamp.
#[utoipa::path(put, path = "/api/v1/tuf/targets", tag = "releases", request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn tuf_publish(
    State(s): State<OperatorApi>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Write, "publish TUF targets").await?;
    let releases = s.store.releases(None).await?;
    match s
        .tuf
        .publish_targets(&body, &releases, s.clock.now_ms())
        .await
    {
        Ok(v) => {
            tuf_audit(&s, &c, "tuf.publish", &format!("targets v{v}"), Ok(())).await;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            tuf_audit(&s, &c, "tuf.publish", "targets", Err(e.to_string())).await;
            Err(tuf_error(e))
        }
    }
}

/// Largest release request (SBOM and provenance inline).
pub(crate) const RELEASE_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A supplier's release-signing keys.
#[utoipa::path(get, path = "/api/v1/suppliers/{name}/keys", tag = "releases", params(("name" = String, Path)),
    responses((status = 200, body = Vec<SupplierKeyView>)))]
pub(crate) async fn list_supplier_keys(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<SupplierKeyView>>, ApiError> {
    let name: palisade_core::SupplierName = parse_id(&s, &c, "supplier.key.list", &name).await?;
    Ok(Json(
        s.store
            .supplier_keys(&name)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Registers a supplier's release-signing public key (admin).
#[utoipa::path(post, path = "/api/v1/suppliers/{name}/keys", tag = "releases", params(("name" = String, Path)), request_body = AddSupplierKey,
    responses((status = 201, body = SupplierKeyView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_supplier_key(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
    Body(req): Body<AddSupplierKey>,
) -> Result<(StatusCode, Json<SupplierKeyView>), ApiError> {
    c.require(&s, Access::Admin, "register supplier keys")
        .await?;
    let name: palisade_core::SupplierName = parse_id(&s, &c, "supplier.key.add", &name).await?;
    let rec = s
        .releases
        .add_key(&c.actor(), &name, &req.public_key_pem)
        .await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Uploads a blob (a firmware image): the raw request body, stored under its
/// SHA-256 (operator, admin or supplier). At most `ota.max_image_bytes`.
#[utoipa::path(put, path = "/api/v1/blobs", tag = "releases", request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = BlobView), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub(crate) async fn upload_blob(
    State(s): State<OperatorApi>,
    c: Caller,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<BlobView>), ApiError> {
    use http_body_util::BodyExt;
    c.require(&s, Access::Release, "upload firmware").await?;
    let mut w = s
        .releases
        .blobs()
        .writer()
        .await
        .map_err(ServiceError::from)?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        if let Ok(chunk) = frame.into_data() {
            if w.written() + chunk.len() as u64 > s.max_image_bytes {
                return Err(ApiError::too_large(format!(
                    "the image is larger than ota.max_image_bytes ({} bytes)",
                    s.max_image_bytes
                )));
            }
            w.write(&chunk).await.map_err(ServiceError::from)?;
        }
    }
    let (sha256, length) = w.finish().await.map_err(ServiceError::from)?;
    Ok((StatusCode::CREATED, Json(BlobView { sha256, length })))
}

/// Submits a release through the supply-chain gate (operator, admin, or the
/// model's supplier).
#[utoipa::path(post, path = "/api/v1/releases", tag = "releases", request_body = NewReleaseBody,
    responses((status = 201, body = ReleaseView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_release(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<NewReleaseBody>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    c.require(&s, Access::Release, "release firmware").await?;
    let model: ModelId = parse_id(&s, &c, "release.upload", &req.model).await?;
    let r = s
        .releases
        .create(
            &c.actor(),
            c.role,
            &c.operator,
            palisade_control::releases::NewRelease {
                model,
                version: req.version,
                security_version: req.security_version,
                hardware: req.hardware.unwrap_or_default(),
                image_sha256: req.image_sha256.to_ascii_lowercase(),
                sbom: serde_json::to_vec(&req.sbom).unwrap_or_default(),
                provenance: serde_json::to_vec(&req.provenance).unwrap_or_default(),
            },
        )
        .await?;
    // Matched against the advisories already imported; a failure here is
    // logged, and the next import matches the release anyway.
    if let Err(e) = s.advisories.match_release(&r).await {
        tracing::warn!(model = %r.model, version = %r.version, error = %e, "could not match the new release against the advisories");
    }
    Ok((StatusCode::CREATED, Json((&r).into())))
}

/// Releases, optionally of one model (a supplier sees only its own models').
#[utoipa::path(get, path = "/api/v1/releases", tag = "releases", params(ReleaseQuery),
    responses((status = 200, body = Vec<ReleaseView>)))]
pub(crate) async fn list_releases(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<ReleaseQuery>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    c.require(&s, Access::Release, "list releases").await?;
    let model = match &q.model {
        Some(m) => Some(parse_id::<ModelId>(&s, &c, "release.list", m).await?),
        None => None,
    };
    let mut list = s.store.releases(model.as_ref()).await?;
    if c.role == palisade_core::Role::Supplier {
        let mut own = Vec::new();
        for r in list {
            let owner = s.store.model(&r.model).await?.and_then(|m| m.supplier);
            if owner.is_some_and(|o| o.as_str() == c.operator) {
                own.push(r);
            }
        }
        list = own;
    }
    Ok(Json(list.iter().map(Into::into).collect()))
}

/// Devices' update states, one device's with `?device=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct UpdateQuery {
    device: Option<String>,
}

/// What devices last reported about their updates.
#[utoipa::path(get, path = "/api/v1/updates", tag = "releases", params(UpdateQuery),
    responses((status = 200)))]
pub(crate) async fn list_updates(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<UpdateQuery>,
) -> Result<Json<Vec<palisade_store::UpdateRecord>>, ApiError> {
    c.require(&s, Access::Read, "read update states").await?;
    let device = match &q.device {
        Some(d) => Some(parse_id::<DeviceId>(&s, &c, "update.list", d).await?),
        None => None,
    };
    Ok(Json(s.store.updates(device.as_ref()).await?))
}
