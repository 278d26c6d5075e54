//! Operator routes for the inventory: models, devices, their lifecycle state, approval, tags and commands.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use palisade_core::role::Access;
use palisade_core::{DeviceId, DeviceState, ModelId};
use palisade_store::{CertFilter, DeviceFilter};
use serde::Deserialize;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::OperatorApi;
use crate::views::*;

/// All device models.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", responses((status = 200, body = Vec<ModelView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_models(
    State(s): State<OperatorApi>,
    _c: Caller,
) -> Result<Json<Vec<ModelView>>, ApiError> {
    Ok(Json(
        s.store
            .models()
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Adds a device model (operator or admin).
#[utoipa::path(post, path = "/api/v1/models", tag = "models", request_body = AddModel,
    responses((status = 201, body = ModelView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_model(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<AddModel>,
) -> Result<(StatusCode, Json<ModelView>), ApiError> {
    c.require(&s, Access::Write, "add models").await?;
    let id: ModelId = parse_id(&s, &c, "model.add", &req.id).await?;
    let supplier = match &req.supplier {
        Some(name) => Some(parse_id(&s, &c, "model.add", name).await?),
        None => None,
    };
    let m = s
        .fleet
        .add_model(
            &c.actor(),
            id,
            palisade_control::fleet::ModelPolicy {
                description: req.description,
                cert_validity_days: req.cert_validity_days,
                approval_required: req.approval_required,
                allowed_key_types: req.allowed_key_types,
                attestation: req.attestation,
                supplier,
                support_until_ms: match &req.support_until {
                    Some(t) => Some(
                        palisade_control::lifecycle::parse_date_ms(t)
                            .map_err(|e| ApiError::bad_request("bad_support_until", e))?,
                    ),
                    None => None,
                },
                security_update_days: req.security_update_days,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(m.into())))
}

/// One model.
#[utoipa::path(get, path = "/api/v1/models/{id}", tag = "models", params(("id" = String, Path)), responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_model(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let id: ModelId = parse_id(&s, &c, "model.read", &id).await?;
    let m = s
        .store
        .model(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {id} not found")))?;
    Ok(Json(m.into()))
}

fn date(field: &'static str, t: Option<&str>) -> Result<Option<i64>, ApiError> {
    t.map(|t| {
        palisade_control::lifecycle::parse_date_ms(t).map_err(|e| ApiError::bad_request(field, e))
    })
    .transpose()
}

async fn support_view(s: &OperatorApi, id: &ModelId) -> Result<SupportView, ApiError> {
    let m = s
        .store
        .model(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {id} not found")))?;
    let p = s.support.get(id).await?;
    Ok(SupportView {
        model: id.to_string(),
        support_until: m.support_until_ms.map(rfc3339),
        notify_days: p.as_ref().map_or(0, |p| p.notify_days),
        restrict_at: p.as_ref().and_then(|p| p.restrict_ms).map(rfc3339),
        retire_at: p.as_ref().and_then(|p| p.retire_ms).map(rfc3339),
        retire_wipe: p.as_ref().is_some_and(|p| p.retire_wipe),
        stage: p
            .as_ref()
            .map_or("supported", |p| p.stage.as_str())
            .to_owned(),
        stage_since: p.as_ref().and_then(|p| p.stage_ms).map(rfc3339),
    })
}

/// A model's support end, its policy and the stage it has reached (any role).
#[utoipa::path(get, path = "/api/v1/models/{id}/support", tag = "models", params(("id" = String, Path)),
    responses((status = 200, body = SupportView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_support(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<SupportView>, ApiError> {
    c.require(&s, Access::Read, "read models").await?;
    let id: ModelId = parse_id(&s, &c, "model.read", &id).await?;
    Ok(Json(support_view(&s, &id).await?))
}

/// Sets a model's support end and what it does (operator or admin): an
/// alert `notify_days` before, confinement from `restrict_at`, decommissioning
/// (with a wipe if asked) at `retire_at`; each stage audited.
#[utoipa::path(put, path = "/api/v1/models/{id}/support", tag = "models", params(("id" = String, Path)), request_body = SetSupport,
    responses((status = 200, body = SupportView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_support(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<SetSupport>,
) -> Result<Json<SupportView>, ApiError> {
    c.require(&s, Access::Write, "set support policies").await?;
    let id: ModelId = parse_id(&s, &c, "model.support", &id).await?;
    let plan = palisade_control::support::SupportPlan {
        until_ms: date("bad_until", req.until.as_deref())?,
        notify_days: req.notify_days,
        restrict_ms: date("bad_restrict_at", req.restrict_at.as_deref())?,
        retire_ms: date("bad_retire_at", req.retire_at.as_deref())?,
        retire_wipe: req.retire_wipe,
    };
    s.support.set(&c.actor(), &id, plan).await?;
    Ok(Json(support_view(&s, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceQuery {
    /// Only this model.
    model: Option<String>,
    /// Only this state.
    state: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<u32>,
}

/// Devices, optionally by model and state.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceQuery), responses((status = 200, body = Vec<DeviceView>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_devices(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<DeviceQuery>,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let model = match q.model {
        Some(m) => Some(parse_id::<ModelId>(&s, &c, "device.list", &m).await?),
        None => None,
    };
    let state =
        match q.state {
            Some(st) => Some(DeviceState::parse(&st).ok_or_else(|| {
                ApiError::bad_request("bad_state", format!("unknown state {st:?}"))
            })?),
            None => None,
        };
    let list = s
        .store
        .devices(&DeviceFilter {
            model,
            state,
            limit: Some(q.limit.unwrap_or(1000).min(10_000)),
        })
        .await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// Registers a device (operator or admin).
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices", request_body = RegisterDevice,
    responses((status = 201, body = DeviceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn register_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<RegisterDevice>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    c.require(&s, Access::Write, "register devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.register", &req.id).await?;
    let model: ModelId = parse_id(&s, &c, "device.register", &req.model).await?;
    let d = s
        .fleet
        .register_device(&c.actor(), id, model, req.hardware_serial)
        .await?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

/// One device with its certificates.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", params(("id" = String, Path)), responses((status = 200, body = DeviceDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let id: DeviceId = parse_id(&s, &c, "device.read", &id).await?;
    // The live view first, the stored record after: a device is admitted
    // (and a first connection makes it active in the store) before its
    // session exists, so "connected" never shows beside a state from before
    // the connection.
    let connected = s.sessions.is_connected(&id);
    let seen = s.presence.get(&id);
    let d = s
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    let certs = s
        .store
        .certificates(&CertFilter {
            device: Some(id),
            ..CertFilter::default()
        })
        .await?;
    Ok(Json(DeviceDetail {
        connected,
        last_seen: seen
            .as_ref()
            .map(|x| x.last_seen_ms)
            .or(d.last_seen_ms)
            .map(rfc3339),
        security_events: seen.as_ref().map_or(0, |x| x.security_events),
        reported_firmware: seen
            .and_then(|x| x.firmware)
            .or_else(|| d.reported_firmware.clone()),
        device: d.into(),
        certificates: certs.iter().map(CertView::summary).collect(),
    }))
}

/// Moves a device through its lifecycle (operator or admin). Decommissioning
/// revokes its certificates.
#[utoipa::path(post, path = "/api/v1/devices/{id}/state", tag = "devices", params(("id" = String, Path)), request_body = SetState,
    responses((status = 200, body = DeviceView), (status = 409, body = ErrorBody)))]
pub(crate) async fn set_device_state(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<SetState>,
) -> Result<Json<DeviceView>, ApiError> {
    c.require(&s, Access::Write, "change device states").await?;
    let id: DeviceId = parse_id(&s, &c, "device.state", &id).await?;
    let to = DeviceState::parse(&req.state).ok_or_else(|| {
        ApiError::bad_request(
            "bad_state",
            format!(
                "unknown state {:?}: use enrolled, active, quarantined or decommissioned",
                req.state
            ),
        )
    })?;
    Ok(Json(
        s.fleet.set_device_state(&c.actor(), &id, to).await?.into(),
    ))
}

/// Decommissions a device (operator or admin): certificates revoked, sessions
/// closed, out of its site's policy and its rollouts; with `wipe`, a signed
/// wipe command first, and the device's signed receipt or the deadline closes it.
#[utoipa::path(post, path = "/api/v1/devices/{id}/decommission", tag = "devices", params(("id" = String, Path)), request_body = Decommission,
    responses((status = 200, body = DecommissionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn decommission_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<Decommission>,
) -> Result<Json<DecommissionView>, ApiError> {
    c.require(&s, Access::Write, "decommission devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.decommission", &id).await?;
    Ok(Json(
        s.decommissioning
            .decommission(&c.actor(), &id, &req.reason, req.wipe)
            .await?
            .into(),
    ))
}

/// A device's decommissioning and what is known of its wipe (any role).
#[utoipa::path(get, path = "/api/v1/devices/{id}/decommission", tag = "devices", params(("id" = String, Path)),
    responses((status = 200, body = DecommissionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_decommission(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<DecommissionView>, ApiError> {
    c.require(&s, Access::Read, "read devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.decommission", &id).await?;
    match s.decommissioning.get(&id).await? {
        Some(r) => Ok(Json(r.into())),
        None => Err(ApiError::not_found(format!(
            "device {id} has not been decommissioned"
        ))),
    }
}

/// Lifts a decommissioned device's tombstone (admin): it is `registered`
/// again, with no credentials, and must enrol afresh.
#[utoipa::path(post, path = "/api/v1/devices/{id}/reinstate", tag = "devices", params(("id" = String, Path)), request_body = Reinstate,
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn reinstate_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<Reinstate>,
) -> Result<Json<DeviceView>, ApiError> {
    c.require(&s, Access::Admin, "reinstate decommissioned devices")
        .await?;
    let id: DeviceId = parse_id(&s, &c, "device.reinstate", &id).await?;
    Ok(Json(
        s.decommissioning
            .reinstate(&c.actor(), &id, &req.reason)
            .await?
            .into(),
    ))
}

/// Approves a device whose model requires approval before enrolment (operator or admin).
#[utoipa::path(post, path = "/api/v1/devices/{id}/approve", tag = "devices", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    c.require(&s, Access::Write, "approve devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.approve", &id).await?;
    Ok(Json(s.fleet.approve_device(&c.actor(), &id).await?.into()))
}

/// Sends a command to a device (operator or admin); delivery and the device's
/// acknowledgement are tracked.
#[utoipa::path(post, path = "/api/v1/devices/{id}/commands", tag = "devices", params(("id" = String, Path)), request_body = SendCommand,
    responses((status = 201, body = CommandView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn send_command(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<SendCommand>,
) -> Result<(StatusCode, Json<CommandView>), ApiError> {
    c.require(&s, Access::Write, "send commands").await?;
    let id: DeviceId = parse_id(&s, &c, "command.send", &id).await?;
    let rec = s
        .commands
        .send(&c.actor(), &id, &req.name, req.args)
        .await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// A device's commands, newest first.
#[utoipa::path(get, path = "/api/v1/devices/{id}/commands", tag = "devices", params(("id" = String, Path)),
    responses((status = 200, body = Vec<CommandView>)))]
pub(crate) async fn list_commands(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<CommandView>>, ApiError> {
    let id: DeviceId = parse_id(&s, &c, "command.list", &id).await?;
    Ok(Json(
        s.store
            .commands(&id, false)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// A device's tags.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceTags {
    tags: Vec<String>,
}

/// Replaces a device's tags (rollout selectors).
#[utoipa::path(put, path = "/api/v1/devices/{id}/tags", tag = "devices", params(("id" = String, Path)), request_body = DeviceTags,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_device_tags(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<DeviceTags>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Write, "tag devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.tags", &id).await?;
    if req.tags.len() > 64 {
        return Err(ApiError::bad_request(
            "too_many_tags",
            "at most 64 tags per device",
        ));
    }
    let mut tags = vec![];
    for t in &req.tags {
        tags.push(parse_id::<palisade_core::Tag>(&s, &c, "device.tags", t).await?);
    }
    s.fleet.set_tags(&c.actor(), &id, tags.clone()).await?;
    s.rollouts.wake();
    Ok(Json(serde_json::json!({ "device": id, "tags": tags })))
}
