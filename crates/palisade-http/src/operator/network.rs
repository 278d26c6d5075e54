//! Operator routes for network policy: MUD per model, sites, edges, placements.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use palisade_core::role::Access;
use palisade_core::{DeviceId, ModelId};
use serde::Deserialize;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::{OperatorApi, Services};

/// A model's MUD file: as JSON, or inside a DSSE envelope signed by the
/// model's supplier (payload type `application/mud+json`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetMud {
    #[schema(value_type = Object)]
    mud: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    envelope: Option<palisade_release::Envelope>,
    /// Accept a policy that allows any address on any port (audited).
    #[serde(default)]
    allow_open: bool,
}

pub(crate) fn policy_view(r: &palisade_store::ModelPolicyRecord) -> serde_json::Value {
    serde_json::json!({
        "model": r.model, "mud_url": r.mud_url, "signed_by": r.signed_by,
        "open_override": r.open_override, "updated_ms": r.updated_ms,
        "policy": serde_json::from_str::<serde_json::Value>(&r.policy).unwrap_or_default(),
    })
}

/// Imports a model's MUD file (RFC 8520) as its network policy.
#[utoipa::path(put, path = "/api/v1/models/{id}/mud", tag = "network", params(("id" = String, Path)), request_body = SetMud,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_model_mud(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<SetMud>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Write, "set network policies").await?;
    let model: ModelId = parse_id(&s, &c, "policy.mud", &id).await?;
    let mud = req.mud.map(|m| m.to_string().into_bytes());
    let r = s
        .network
        .set_mud(
            &c.actor(),
            &model,
            mud.as_deref(),
            req.envelope.as_ref(),
            req.allow_open,
        )
        .await?;
    Ok(Json(policy_view(&r)))
}

/// A model's network policy.
#[utoipa::path(get, path = "/api/v1/models/{id}/policy", tag = "network", params(("id" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_model_policy(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read network policies").await?;
    let model: ModelId = parse_id(&s, &c, "policy.read", &id).await?;
    let r = s
        .store
        .model_policy(&model)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("model {model} has no network policy")))?;
    Ok(Json(policy_view(&r)))
}

pub(crate) async fn site_view(
    s: &Services,
    r: &palisade_store::SiteRecord,
) -> Result<serde_json::Value, ApiError> {
    let bundle = s.network.bundle(&r.name).await?;
    let edges: Vec<serde_json::Value> = s
        .store
        .edges(Some(&r.name))
        .await?
        .iter()
        .map(|e| {
            serde_json::json!({
                "edge": e.device, "applied_version": e.applied_version,
                "in_step": e.applied_version == bundle.version, "reported_ms": e.updated_ms,
                "status": serde_json::from_str::<serde_json::Value>(&e.status).unwrap_or_default(),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "name": r.name, "spec": serde_json::from_str::<serde_json::Value>(&r.spec).unwrap_or_default(),
        "bundle_version": bundle.version, "devices": bundle.devices.len(),
        "quarantined": bundle.devices.iter().filter(|d| d.quarantined).count(),
        "restricted": bundle.devices.iter().filter(|d| d.restricted).count(),
        "edges": edges,
    }))
}

/// Sites with their edges' state.
#[utoipa::path(get, path = "/api/v1/sites", tag = "network", responses((status = 200)))]
pub(crate) async fn list_sites(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    c.require(&s, Access::Read, "read sites").await?;
    let mut out = vec![];
    for r in s.store.sites().await? {
        out.push(site_view(&s, &r).await?);
    }
    Ok(Json(out))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{name}", tag = "network", params(("name" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_site(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read sites").await?;
    let name: palisade_core::SiteName = parse_id(&s, &c, "site.read", &name).await?;
    let r = s
        .store
        .sites()
        .await?
        .into_iter()
        .find(|x| x.name == name)
        .ok_or_else(|| ApiError::not_found(format!("site {name} not found")))?;
    Ok(Json(site_view(&s, &r).await?))
}

/// Creates or changes a site (resolver, control plane, controllers, segments).
#[utoipa::path(put, path = "/api/v1/sites/{name}", tag = "network", params(("name" = String, Path)),
    responses((status = 200), (status = 400, body = ErrorBody)))]
pub(crate) async fn set_site(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
    Body(spec): Body<palisade_control::network::SiteSpec>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Admin, "define sites").await?;
    let name: palisade_core::SiteName = parse_id(&s, &c, "site.set", &name).await?;
    let r = s.network.set_site(&c.actor(), &name, &spec).await?;
    Ok(Json(site_view(&s, &r).await?))
}

/// An edge gateway for a site.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddEdge {
    edge: String,
}

/// Registers an enrolled identity as a site's edge gateway.
#[utoipa::path(post, path = "/api/v1/sites/{name}/edges", tag = "network", params(("name" = String, Path)), request_body = AddEdge,
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn add_site_edge(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
    Body(req): Body<AddEdge>,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "register edge gateways")
        .await?;
    let name: palisade_core::SiteName = parse_id(&s, &c, "site.edge", &name).await?;
    let edge: DeviceId = parse_id(&s, &c, "site.edge", &req.edge).await?;
    s.network.add_edge(&c.actor(), &name, &edge).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a device sits.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Placement {
    site: String,
    /// The segment [default: the site's segment for the device's model].
    #[serde(default)]
    segment: Option<String>,
    address: String,
    /// Rules added to the model's policy for this device.
    #[serde(default)]
    #[schema(value_type = Object)]
    overrides: palisade_policy::Policy,
    /// Accept overrides that open everything (audited).
    #[serde(default)]
    allow_open: bool,
}

/// Places a device at a site, in a segment, with an address (and overrides).
#[utoipa::path(put, path = "/api/v1/devices/{id}/placement", tag = "network", params(("id" = String, Path)), request_body = Placement,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn place_device(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<Placement>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Write, "place devices").await?;
    let id: DeviceId = parse_id(&s, &c, "device.place", &id).await?;
    let site: palisade_core::SiteName = parse_id(&s, &c, "device.place", &req.site).await?;
    let address: std::net::IpAddr = req.address.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_address",
            format!("{:?} is not an IP address", req.address),
        )
    })?;
    let r = s
        .network
        .place(
            &c.actor(),
            &id,
            palisade_control::network::Placement {
                site,
                segment: req.segment,
                address,
                overrides: req.overrides,
                allow_open: req.allow_open,
            },
        )
        .await?;
    Ok(Json(serde_json::json!({
        "device": r.device, "site": r.site, "segment": r.segment, "address": r.address,
    })))
}

pub(crate) fn unmanaged_view(u: &palisade_store::UnmanagedRecord) -> serde_json::Value {
    serde_json::json!({
        "site": u.site, "address": u.address, "mac": u.mac, "hostname": u.hostname,
        "sources": u.sources, "first_ms": u.first_ms, "last_ms": u.last_ms, "bytes": u.bytes,
        "state": u.state, "device": u.device,
        "decided_by": u.decided.as_ref().map(|d| &d.0),
        "decided_ms": u.decided.as_ref().map(|d| d.1),
    })
}

fn parse_address(raw: &str) -> Result<std::net::IpAddr, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_address",
            format!(
                "{:?} is not an IP address",
                raw.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// Addresses the site's edges and flow records see that map to no enrolled
/// device: first and last seen, traffic, sources, and what was decided.
#[utoipa::path(get, path = "/api/v1/sites/{name}/unmanaged", tag = "network", params(("name" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_unmanaged(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read sites").await?;
    let name: palisade_core::SiteName = parse_id(&s, &c, "site.unmanaged", &name).await?;
    let hosts = s.unmanaged.list(Some(&name)).await?;
    Ok(Json(serde_json::json!({
        "site": name,
        "hosts": hosts.iter().map(unmanaged_view).collect::<Vec<_>>(),
    })))
}

/// Adopting an unmanaged host: the device id and model to register it as.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Adopt {
    device: String,
    model: String,
}

/// Blocks, unblocks or adopts an unmanaged host (`block`, `unblock`:
/// no body; `adopt`: `{"device", "model"}`).
#[utoipa::path(post, path = "/api/v1/sites/{name}/unmanaged/{address}/{action}", tag = "network",
    params(("name" = String, Path), ("address" = String, Path), ("action" = String, Path)),
    request_body = Option<Adopt>,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn unmanaged_action(
    State(s): State<OperatorApi>,
    c: Caller,
    Path((name, address, action)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let what = format!("unmanaged.{}", action.chars().take(16).collect::<String>());
    c.require(&s, Access::Write, "decide about unmanaged hosts")
        .await?;
    let site: palisade_core::SiteName = parse_id(&s, &c, &what, &name).await?;
    let address = parse_address(&address)?;
    let actor = c.actor();
    let r = match action.as_str() {
        "block" | "unblock" => {
            s.unmanaged
                .block(&actor, &site, address, action == "block")
                .await?
        }
        "adopt" => {
            let req: Adopt = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(
                    "bad_request",
                    format!("adopt needs {{\"device\": ID, \"model\": MODEL}}: {e}"),
                )
            })?;
            let device: DeviceId = parse_id(&s, &c, &what, &req.device).await?;
            let model: ModelId = parse_id(&s, &c, &what, &req.model).await?;
            s.unmanaged
                .adopt(&actor, &site, address, device, model)
                .await?
        }
        other => {
            return Err(ApiError::not_found(format!(
                "no action {:?} on unmanaged hosts: block, unblock or adopt",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    Ok(Json(unmanaged_view(&r)))
}
