//! The HTTPS operator API: routes, handlers and the OpenAPI document generated
//! from them. Public without a token: `/healthz`, `/readyz`, `/crl`,
//! `/ca/chain.pem` (and `/metrics` only if configured so). Everything else needs
//! a bearer token, and writes need the right role.

pub mod auth;
pub mod error;
pub mod monitoring;
pub mod views;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use palisade_core::role::Access;
use palisade_core::{Clock, DeviceId, DeviceState, ModelId, OperatorName, Role};
use palisade_pki::{RevocationReason, pem_to_der};
use palisade_store::{CertFilter, CertStatus, DeviceFilter, Store};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use self::auth::{AuditLimiter, Caller};
use self::error::{ApiError, ErrorBody};
use self::views::*;
use palisade_control::fleet::Fleet;
use palisade_control::metrics::Metrics;
use palisade_control::pki::Pki;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Alerts.
    pub alerts: Arc<palisade_control::alerts::Alerts>,
    /// Monitoring (observations and timeline events).
    pub monitor: Arc<palisade_control::monitor::Monitor>,
    /// The fleet service.
    pub fleet: Arc<Fleet>,
    /// The enrolment service (EST, suppliers, batches, enrolment tokens).
    pub enrollment: Arc<palisade_control::enroll::Enrollment>,
    /// The store (reads).
    pub store: Arc<dyn Store>,
    /// The CAs.
    pub pki: Arc<Pki>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Live MQTT sessions.
    pub sessions: Arc<palisade_control::sessions::Sessions>,
    /// What devices last said.
    pub presence: Arc<palisade_control::presence::Presence>,
    /// Commands to devices.
    pub commands: Arc<palisade_control::commands::Commands>,
    /// TPM attestation.
    pub attestation: Arc<palisade_control::attestation::Attestation>,
    /// Firmware releases.
    pub releases: Arc<palisade_control::releases::Releases>,
    /// Largest firmware image accepted.
    pub max_image_bytes: u64,
    /// The TUF image repository.
    pub tuf: palisade_control::tuf::Repository,
    /// Staged rollouts.
    pub rollouts: Arc<palisade_control::rollouts::Rollouts>,
    /// Network policy: MUD, sites, placements, edge bundles.
    pub network: Arc<palisade_control::network::Network>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Rate limit for auditing auth failures.
    pub audit_limiter: Arc<AuditLimiter>,
    /// The audit verifier key text.
    pub audit_vkey: Arc<str>,
    /// Whether `/metrics` is public.
    pub metrics_public: bool,
    /// Per-request time limit.
    pub request_timeout: Duration,
}

/// A JSON body whose rejections are answered in the API's error shape.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let status = rej.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
        _ => "bad_json",
    };
    ApiError {
        status: if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        },
        code,
        message: rej.body_text(),
    }
}

async fn parse_id<T: FromStr<Err = palisade_core::IdError>>(
    state: &AppState,
    caller: &Caller,
    action: &str,
    raw: &str,
) -> Result<T, ApiError> {
    match T::from_str(raw) {
        Ok(v) => Ok(v),
        Err(e) => {
            // A name that could have injected into a subject or topic is worth a record.
            let shown: String = raw.chars().take(80).collect();
            state
                .fleet
                .audit_denied(&caller.actor(), action, &shown, &e.to_string())
                .await;
            Err(ApiError::bad_request("bad_id", e.to_string()))
        }
    }
}

/// Builds the router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/models", get(list_models).post(add_model))
        .route("/api/v1/models/{id}", get(get_model))
        .route("/api/v1/devices", get(list_devices).post(register_device))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/state", post(set_device_state))
        .route(
            "/api/v1/devices/{id}/timeline",
            get(monitoring::device_timeline),
        )
        .route("/api/v1/alerts", get(monitoring::list_alerts))
        .route("/api/v1/alerts/stream", get(monitoring::alert_stream))
        .route("/api/v1/alerts/{id}", get(monitoring::get_alert))
        .route(
            "/api/v1/alerts/{id}/{action}",
            post(monitoring::alert_action),
        )
        .route("/api/v1/devices/{id}/approve", post(approve_device))
        .route(
            "/api/v1/devices/{id}/commands",
            get(list_commands).post(send_command),
        )
        .route("/api/v1/devices/{id}/certificates", post(issue_certificate))
        .route("/api/v1/certificates", get(list_certificates))
        .route("/api/v1/certificates/{serial}", get(get_certificate))
        .route(
            "/api/v1/certificates/{serial}/revoke",
            post(revoke_certificate),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/api/v1/audit/checkpoint", get(audit_head))
        .route("/api/v1/audit/entries", get(audit_entries))
        .route("/api/v1/audit/checkpoints", get(audit_checkpoints))
        .route("/api/v1/audit/proof/inclusion", get(inclusion_proof))
        .route("/api/v1/audit/proof/consistency", get(consistency_proof))
        .route("/api/v1/suppliers", get(list_suppliers).post(add_supplier))
        .route(
            "/api/v1/suppliers/{name}/keys",
            get(list_supplier_keys).post(add_supplier_key),
        )
        .route("/api/v1/lifecycle", get(lifecycle))
        .route("/api/v1/tuf/online-keys", get(tuf_online_keys))
        .route("/api/v1/director/key", get(director_key))
        .route("/api/v1/devices/{id}/assignment", post(assign_release))
        .route("/director/v1/assignment", get(device_assignment))
        .route("/director/v1/key", get(device_director_key))
        .route("/director/v1/report", post(device_update_report))
        .route(
            "/api/v1/tuf/root",
            axum::routing::put(tuf_set_root).layer(DefaultBodyLimit::max(
                palisade_control::tuf::MAX_METADATA_BYTES,
            )),
        )
        .route("/api/v1/tuf/targets-draft", get(tuf_targets_draft))
        .route(
            "/api/v1/tuf/targets",
            axum::routing::put(tuf_publish).layer(DefaultBodyLimit::max(
                palisade_control::tuf::MAX_METADATA_BYTES,
            )),
        )
        .route("/tuf/metadata/{name}", get(tuf_metadata))
        .route("/tuf/targets/{*path}", get(tuf_target))
        .route("/tuf/deltas/{*path}", get(tuf_delta))
        .route(
            "/api/v1/blobs",
            axum::routing::put(upload_blob).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/updates", get(list_updates))
        .route(
            "/api/v1/models/{id}/mud",
            axum::routing::put(set_model_mud).layer(DefaultBodyLimit::max(
                palisade_policy::mud::MAX_MUD_BYTES * 2,
            )),
        )
        .route("/api/v1/models/{id}/policy", get(get_model_policy))
        .route("/api/v1/sites", get(list_sites))
        .route("/api/v1/sites/{name}", get(get_site).put(set_site))
        .route("/api/v1/sites/{name}/edges", post(add_site_edge))
        .route(
            "/api/v1/devices/{id}/placement",
            axum::routing::put(place_device),
        )
        .route("/edge/v1/key", get(edge_key))
        .route("/edge/v1/bundle", get(edge_bundle))
        .route("/edge/v1/status", post(edge_status))
        .route("/api/v1/rollouts", get(list_rollouts).post(create_rollout))
        .route("/api/v1/rollouts/{name}", get(get_rollout))
        .route("/api/v1/rollouts/{name}/{action}", post(rollout_action))
        .route(
            "/api/v1/devices/{id}/tags",
            axum::routing::put(set_device_tags),
        )
        .route(
            "/api/v1/releases",
            get(list_releases)
                .post(create_release)
                .layer(DefaultBodyLimit::max(RELEASE_BODY_LIMIT)),
        )
        .route(
            "/api/v1/tpm-vendors",
            get(list_tpm_vendors).post(add_tpm_vendor),
        )
        .route(
            "/api/v1/models/{id}/firmware",
            get(list_firmware).post(add_firmware),
        )
        .route(
            "/api/v1/batches",
            post(import_batch).layer(DefaultBodyLimit::max(palisade_pki::MAX_MANIFEST_BYTES)),
        )
        .route("/api/v1/enrollment-tokens", post(create_enrollment_token))
        .route(
            "/attest/v1/challenge",
            axum::routing::post(crate::est::attest_challenge),
        )
        .route(
            "/attest/v1/evidence",
            axum::routing::post(crate::est::attest_evidence),
        )
        .route(
            "/.well-known/est/{op}",
            axum::routing::any(crate::est::est_unlabeled),
        )
        .route(
            "/.well-known/est/{label}/{op}",
            axum::routing::any(crate::est::est_labeled),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/crl", get(crl))
        .route("/ca/chain.pem", get(chain));
    api.fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/openapi.json")
}

/// Counts responses and bounds request time.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: "the request took too long; retry".into(),
        }
        .into_response(),
    };
    state.metrics.response(resp.status().as_u16());
    resp
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Palisade operator API", version = "1", description = "Control plane of the Palisade IoT fleet security platform."),
    paths(
        healthz, readyz, crl, chain, metrics, whoami,
        list_models, add_model, get_model,
        list_devices, register_device, get_device, set_device_state, approve_device, issue_certificate,
        send_command, list_commands,
        list_certificates, get_certificate, revoke_certificate,
        list_tokens, create_token, revoke_token,
        list_suppliers, add_supplier, import_batch, create_enrollment_token,
        list_tpm_vendors, add_tpm_vendor, list_firmware, add_firmware,
        list_supplier_keys, add_supplier_key, upload_blob, create_release, list_releases,
        lifecycle, director_key, assign_release, list_updates, create_rollout, list_rollouts,
        get_rollout, rollout_action, set_device_tags, set_model_mud, get_model_policy, list_sites,
        get_site, set_site, add_site_edge, place_device,
        audit_head, audit_entries, audit_checkpoints, inclusion_proof, consistency_proof,
        monitoring::list_alerts, monitoring::get_alert, monitoring::alert_action,
        monitoring::alert_stream, monitoring::device_timeline,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi(_caller: Caller) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers and the audit log is sealed.
#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.models().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

/// The issuing CA's CRL (DER), with nextUpdate.
#[utoipa::path(get, path = "/crl", security(()), responses((status = 200, description = "DER CRL", content_type = "application/pkix-crl")))]
async fn crl(State(s): State<AppState>) -> Result<Response, ApiError> {
    let der = s.pki.crl(&*s.store).await.map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        der,
    )
        .into_response())
}

/// The issuing CA and root certificates (PEM).
#[utoipa::path(get, path = "/ca/chain.pem", security(()), responses((status = 200, description = "PEM chain", content_type = "application/pem-certificate-chain")))]
async fn chain(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        s.pki.chain_pem(),
    )
        .into_response()
}

/// Prometheus metrics (any valid token, unless `metrics_public`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "text exposition format"), (status = 401, body = ErrorBody)))]
async fn metrics(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if !s.metrics_public {
        let (mut parts, _) = req.into_parts();
        let _caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &s,
        )
        .await?;
    }
    let size = s.store.audit_head().map_or(0, |h| h.size);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(size),
    )
        .into_response())
}

/// The caller's identity and role.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "operators", responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        operator: caller.operator,
        role: caller.role.to_string(),
        token_id: caller.token_id,
    })
}

/// All device models.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", responses((status = 200, body = Vec<ModelView>), (status = 401, body = ErrorBody)))]
async fn list_models(
    State(s): State<AppState>,
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
async fn add_model(
    State(s): State<AppState>,
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
async fn get_model(
    State(s): State<AppState>,
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    /// Only this model.
    model: Option<String>,
    /// Only this state.
    state: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<u32>,
}

/// Devices, optionally by model and state.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", params(DeviceQuery), responses((status = 200, body = Vec<DeviceView>), (status = 400, body = ErrorBody)))]
async fn list_devices(
    State(s): State<AppState>,
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
async fn register_device(
    State(s): State<AppState>,
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
async fn get_device(
    State(s): State<AppState>,
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
async fn set_device_state(
    State(s): State<AppState>,
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

/// Issues a device identity certificate from a CSR (operator or admin).
#[utoipa::path(post, path = "/api/v1/devices/{id}/certificates", tag = "certificates", params(("id" = String, Path)), request_body = IssueCertificate,
    responses((status = 201, body = CertView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn issue_certificate(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<IssueCertificate>,
) -> Result<(StatusCode, Json<CertView>), ApiError> {
    c.require(&s, Access::Write, "issue certificates").await?;
    let id: DeviceId = parse_id(&s, &c, "cert.issue", &id).await?;
    let der = match pem_to_der(&req.csr, "CERTIFICATE REQUEST") {
        Ok(d) => d,
        Err(e) => {
            s.fleet
                .audit_denied(&c.actor(), "cert.issue", id.as_str(), &e.to_string())
                .await;
            return Err(ApiError::bad_request("bad_csr", e.to_string()));
        }
    };
    let rec = s
        .fleet
        .issue_device_certificate(&c.actor(), &id, &der)
        .await?;
    let mut view = CertView::full(&rec);
    view.chain = Some(s.pki.chain_pem());
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct CertQuery {
    /// Only this device's.
    device: Option<String>,
    /// `valid` or `revoked`.
    status: Option<String>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<u32>,
}

/// The certificate inventory.
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(CertQuery), responses((status = 200, body = Vec<CertView>)))]
async fn list_certificates(
    State(s): State<AppState>,
    c: Caller,
    Query(q): Query<CertQuery>,
) -> Result<Json<Vec<CertView>>, ApiError> {
    let device = match q.device {
        Some(d) => Some(parse_id::<DeviceId>(&s, &c, "cert.list", &d).await?),
        None => None,
    };
    let status = match q.status.as_deref() {
        None => None,
        Some("valid") => Some(CertStatus::Valid),
        Some("revoked") => Some(CertStatus::Revoked),
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_status",
                format!("unknown status {other:?}: use valid or revoked"),
            ));
        }
    };
    let list = s
        .store
        .certificates(&CertFilter {
            device,
            status,
            limit: Some(q.limit.unwrap_or(1000).min(10_000)),
        })
        .await?;
    Ok(Json(list.iter().map(CertView::summary).collect()))
}

fn serial_param(raw: &str) -> Result<String, ApiError> {
    palisade_pki::Serial::from_hex(raw)
        .map(|s| s.to_hex())
        .ok_or_else(|| ApiError::bad_request("bad_serial", "a serial is 1 to 20 bytes of hex"))
}

/// One certificate, with its PEM.
#[utoipa::path(get, path = "/api/v1/certificates/{serial}", tag = "certificates", params(("serial" = String, Path)), responses((status = 200, body = CertView), (status = 404, body = ErrorBody)))]
async fn get_certificate(
    State(s): State<AppState>,
    _c: Caller,
    Path(serial): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let serial = serial_param(&serial)?;
    let rec = s
        .store
        .certificate(&serial)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("certificate {serial} not found")))?;
    Ok(Json(CertView::full(&rec)))
}

/// Revokes a certificate (operator or admin); the next CRL lists it.
#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revoke", tag = "certificates", params(("serial" = String, Path)), request_body = Revoke,
    responses((status = 200, body = CertView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_certificate(
    State(s): State<AppState>,
    c: Caller,
    Path(serial): Path<String>,
    Body(req): Body<Revoke>,
) -> Result<Json<CertView>, ApiError> {
    c.require(&s, Access::Write, "revoke certificates").await?;
    let serial = serial_param(&serial)?;
    let reason = match req.reason.as_deref() {
        None => RevocationReason::Unspecified,
        Some(r) => RevocationReason::parse(r).ok_or_else(|| {
            ApiError::bad_request(
                "bad_reason",
                format!(
                    "unknown reason {r:?}: use one of {}",
                    RevocationReason::ALL.map(|r| r.as_str()).join(", ")
                ),
            )
        })?,
    };
    let rec = s
        .fleet
        .revoke_certificate(&c.actor(), &serial, reason)
        .await?;
    Ok(Json(CertView::summary(&rec)))
}

/// Operator tokens (admin).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "operators", responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)))]
async fn list_tokens(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    c.require(&s, Access::Admin, "list tokens").await?;
    Ok(Json(
        s.store.tokens().await?.iter().map(Into::into).collect(),
    ))
}

/// Creates an operator token (admin); the secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "operators", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_token(
    State(s): State<AppState>,
    c: Caller,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    c.require(&s, Access::Admin, "create tokens").await?;
    let operator: OperatorName = parse_id(&s, &c, "token.create", &req.operator).await?;
    let role =
        Role::from_str(&req.role).map_err(|e| ApiError::bad_request("bad_role", e.to_string()))?;
    let (text, record) = s
        .fleet
        .create_token(&c.actor(), operator, role, req.ttl_days)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: text.to_string(),
            info: (&record).into(),
        }),
    ))
}

/// Revokes an operator token (admin).
#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", tag = "operators", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_token(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "revoke tokens").await?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "bad_token_id",
            "a token id is 16 hex characters",
        ));
    }
    s.fleet.revoke_token(&c.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The newest signed checkpoint and the verifier key.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit", responses((status = 200, body = AuditHeadView)))]
async fn audit_head(State(s): State<AppState>, _c: Caller) -> Json<AuditHeadView> {
    let head = s.store.audit_head();
    Json(AuditHeadView {
        size: head.as_ref().map_or(0, |h| h.size),
        note: head.map(|h| h.note),
        verifier_key: s.audit_vkey.to_string(),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// First index (entries) or size (checkpoints).
    from: Option<u64>,
    /// At most this many (default 1000, at most 5000).
    limit: Option<u32>,
}

/// Audit entries in order.
#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit", params(PageQuery), responses((status = 200, body = Vec<AuditEntryView>)))]
async fn audit_entries(
    State(s): State<AppState>,
    _c: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Vec<AuditEntryView>>, ApiError> {
    let rows = s
        .store
        .audit_entries(q.from.unwrap_or(0), q.limit.unwrap_or(1000).min(5000))
        .await?;
    Ok(Json(rows.iter().map(Into::into).collect()))
}

/// Stored checkpoints by size.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", params(PageQuery), responses((status = 200, body = Vec<CheckpointView>)))]
async fn audit_checkpoints(
    State(s): State<AppState>,
    _c: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Vec<CheckpointView>>, ApiError> {
    let rows = s
        .store
        .audit_checkpoints(q.from.unwrap_or(0), q.limit.unwrap_or(1000).min(5000))
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|c| CheckpointView {
                size: c.size,
                note: c.note,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct IndexQuery {
    /// Entry index.
    index: u64,
}

/// Proof that an entry is in the log of the newest checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/proof/inclusion", tag = "audit", params(IndexQuery), responses((status = 200, body = InclusionView), (status = 404, body = ErrorBody)))]
async fn inclusion_proof(
    State(s): State<AppState>,
    _c: Caller,
    Query(q): Query<IndexQuery>,
) -> Result<Json<InclusionView>, ApiError> {
    let p = s
        .store
        .inclusion_proof(q.index)
        .await
        .map_err(|e| match e {
            palisade_store::StoreError::Proof(p) => ApiError::not_found(p.to_string()),
            other => other.into(),
        })?;
    Ok(Json(InclusionView {
        entry: (&p.entry).into(),
        path: p.path.iter().map(hex::encode).collect(),
        checkpoint: p.head.note,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct OldSizeQuery {
    /// The older log size.
    old_size: u64,
}

/// Proof that the log of `old_size` is a prefix of the newest checkpoint's.
#[utoipa::path(get, path = "/api/v1/audit/proof/consistency", tag = "audit", params(OldSizeQuery), responses((status = 200, body = ConsistencyView), (status = 404, body = ErrorBody)))]
async fn consistency_proof(
    State(s): State<AppState>,
    _c: Caller,
    Query(q): Query<OldSizeQuery>,
) -> Result<Json<ConsistencyView>, ApiError> {
    let p = s
        .store
        .consistency_proof(q.old_size)
        .await
        .map_err(|e| match e {
            palisade_store::StoreError::Proof(p) => ApiError::not_found(p.to_string()),
            other => other.into(),
        })?;
    Ok(Json(ConsistencyView {
        old_size: p.old_size,
        path: p.path.iter().map(hex::encode).collect(),
        checkpoint: p.head.note,
    }))
}

/// Registered suppliers.
#[utoipa::path(get, path = "/api/v1/suppliers", tag = "onboarding", responses((status = 200, body = Vec<SupplierView>)))]
async fn list_suppliers(
    State(s): State<AppState>,
    _c: Caller,
) -> Result<Json<Vec<SupplierView>>, ApiError> {
    Ok(Json(
        s.store.suppliers().await?.iter().map(Into::into).collect(),
    ))
}

/// Registers a supplier's manufacturer CA (admin).
#[utoipa::path(post, path = "/api/v1/suppliers", tag = "onboarding", request_body = AddSupplier,
    responses((status = 201, body = SupplierView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_supplier(
    State(s): State<AppState>,
    c: Caller,
    Body(req): Body<AddSupplier>,
) -> Result<(StatusCode, Json<SupplierView>), ApiError> {
    c.require(&s, Access::Admin, "register suppliers").await?;
    let name: palisade_core::SupplierName = parse_id(&s, &c, "supplier.add", &req.name).await?;
    let der = pem_to_der(&req.ca_pem, "CERTIFICATE")
        .map_err(|e| ApiError::bad_request("bad_ca", e.to_string()))?;
    let rec = s.enrollment.add_supplier(&c.actor(), name, der).await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Devices past their model's end of support, and devices not running their
/// model's latest security release within the model's update target.
#[utoipa::path(get, path = "/api/v1/lifecycle", tag = "releases", responses((status = 200, body = LifecycleView)))]
async fn lifecycle(State(s): State<AppState>, c: Caller) -> Result<Json<LifecycleView>, ApiError> {
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
async fn director_key(
    State(s): State<AppState>,
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
async fn assign_release(
    State(s): State<AppState>,
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

/// The device presenting a valid operational certificate.
async fn calling_device(
    s: &AppState,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
) -> Result<DeviceId, ApiError> {
    let chain = chain.map(|c| c.0.0).unwrap_or_default();
    let who = s
        .enrollment
        .identify(palisade_control::identity::Credential::ClientCert(&chain))
        .await
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    Ok(who.device)
}

/// A device fetches its current assignment (authenticated by its certificate).
async fn device_assignment(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = calling_device(&s, chain).await?;
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
async fn device_director_key(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    calling_device(&s, chain).await?;
    let k = s.tuf.director_public().map_err(tuf_error)?;
    Ok(Json(
        serde_json::json!({ "ed25519_public": palisade_attest::b64(&k) }),
    ))
}

/// The states a device reports about an update.
pub const UPDATE_STATES: [&str; 7] = [
    "downloading",
    "installed",
    "trial",
    "committed",
    "rolled-back",
    "refused",
    "failed",
];

/// What a device reports about the assignment with `counter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateReport {
    counter: u64,
    target: String,
    state: String,
    #[serde(default)]
    detail: String,
}

/// A device reports an update's state (authenticated by its certificate).
/// Refusals, failures, fallbacks and commits are audited.
async fn device_update_report(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
    Body(r): Body<UpdateReport>,
) -> Result<StatusCode, ApiError> {
    let device = calling_device(&s, chain).await?;
    if !UPDATE_STATES.contains(&r.state.as_str()) {
        return Err(ApiError::bad_request(
            "bad_state",
            format!("state must be one of {}", UPDATE_STATES.join(", ")),
        ));
    }
    if r.target.len() > 256 || r.detail.len() > 2048 {
        return Err(ApiError::bad_request(
            "too_long",
            "target is at most 256 bytes and detail at most 2048",
        ));
    }
    s.metrics.ota_report(&r.state);
    let audit = match r.state.as_str() {
        "committed" => vec![
            palisade_audit::EntryDraft::success(device.as_str(), "ota.committed", device.as_str())
                .with_detail(serde_json::json!({ "target": r.target, "counter": r.counter })),
        ],
        "refused" | "failed" | "rolled-back" => vec![
            palisade_audit::EntryDraft::denied(
                device.as_str(),
                &format!("ota.{}", r.state),
                device.as_str(),
            )
            .with_detail(serde_json::json!({
                "target": r.target, "counter": r.counter, "reason": r.detail,
            })),
        ],
        _ => vec![],
    };
    let now = s.clock.now_ms();
    let ended = matches!(
        r.state.as_str(),
        "committed" | "refused" | "failed" | "rolled-back"
    );
    s.store
        .commit(
            vec![palisade_store::Change::RecordUpdate(
                palisade_store::UpdateRecord {
                    device,
                    counter: r.counter,
                    target: r.target,
                    state: r.state,
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

/// A new rollout.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRollout {
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

fn rollout_view(
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
        let mut per = vec![
            serde_json::json!({"pending": 0, "assigned": 0, "committed": 0, "failed": 0});
            waves
        ];
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
async fn create_rollout(
    State(s): State<AppState>,
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
async fn list_rollouts(
    State(s): State<AppState>,
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
async fn get_rollout(
    State(s): State<AppState>,
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
async fn rollout_action(
    State(s): State<AppState>,
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

/// A model's MUD file: as JSON, or inside a DSSE envelope signed by the
/// model's supplier (payload type `application/mud+json`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetMud {
    #[schema(value_type = Object)]
    mud: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    envelope: Option<palisade_release::Envelope>,
    /// Accept a policy that allows any address on any port (audited).
    #[serde(default)]
    allow_open: bool,
}

fn policy_view(r: &palisade_store::ModelPolicyRecord) -> serde_json::Value {
    serde_json::json!({
        "model": r.model, "mud_url": r.mud_url, "signed_by": r.signed_by,
        "open_override": r.open_override, "updated_ms": r.updated_ms,
        "policy": serde_json::from_str::<serde_json::Value>(&r.policy).unwrap_or_default(),
    })
}

/// Imports a model's MUD file (RFC 8520) as its network policy.
#[utoipa::path(put, path = "/api/v1/models/{id}/mud", tag = "network", params(("id" = String, Path)), request_body = SetMud,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_model_mud(
    State(s): State<AppState>,
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
async fn get_model_policy(
    State(s): State<AppState>,
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

async fn site_view(
    s: &AppState,
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
        "edges": edges,
    }))
}

/// Sites with their edges' state.
#[utoipa::path(get, path = "/api/v1/sites", tag = "network", responses((status = 200)))]
async fn list_sites(
    State(s): State<AppState>,
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
async fn get_site(
    State(s): State<AppState>,
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
async fn set_site(
    State(s): State<AppState>,
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
struct AddEdge {
    edge: String,
}

/// Registers an enrolled identity as a site's edge gateway.
#[utoipa::path(post, path = "/api/v1/sites/{name}/edges", tag = "network", params(("name" = String, Path)), request_body = AddEdge,
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn add_site_edge(
    State(s): State<AppState>,
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
struct Placement {
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
async fn place_device(
    State(s): State<AppState>,
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

/// The policy key for edge gateways (authenticated by their certificate).
async fn edge_key(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let edge = calling_device(&s, chain).await?;
    s.network.edge_site(&edge).await?;
    let k = s.network.public_key()?;
    Ok(Json(
        serde_json::json!({ "ed25519_public": palisade_attest::b64(&k) }),
    ))
}

/// When an edge asks for a bundle newer than `after`, waiting up to `wait` s.
#[derive(Debug, Deserialize)]
struct BundleQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// The edge's signed site bundle: at once if newer than `after`, else when
/// one appears within `wait` seconds (at most 25), else 204.
async fn edge_bundle(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
    Query(q): Query<BundleQuery>,
) -> Result<axum::response::Response, ApiError> {
    let edge = calling_device(&s, chain).await?;
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
struct EdgeStatus {
    applied_version: u64,
    #[serde(default)]
    counters: serde_json::Value,
    #[serde(default)]
    error: String,
    /// DNS names of the site's policies and the addresses the edge resolved
    /// them to (the monitor's policy verdict on flows to named peers).
    #[serde(default)]
    dns: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

/// An edge reports the bundle version it applied, its counters and errors.
async fn edge_status(
    State(s): State<AppState>,
    chain: Option<axum::Extension<crate::api::auth::ClientCertChain>>,
    Body(r): Body<EdgeStatus>,
) -> Result<StatusCode, ApiError> {
    let edge = calling_device(&s, chain).await?;
    let site = s.network.edge_site(&edge).await?;
    let dns: std::collections::BTreeMap<&String, &[std::net::IpAddr]> = r
        .dns
        .iter()
        .take(1024)
        .map(|(n, a)| (n, &a[..a.len().min(64)]))
        .collect();
    let status = serde_json::json!({
        "counters": r.counters,
        "error": r.error.chars().take(2000).collect::<String>(),
        "dns": dns,
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

/// A device's tags.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeviceTags {
    tags: Vec<String>,
}

/// Replaces a device's tags (rollout selectors).
#[utoipa::path(put, path = "/api/v1/devices/{id}/tags", tag = "devices", params(("id" = String, Path)), request_body = DeviceTags,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_device_tags(
    State(s): State<AppState>,
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
    s.store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    s.store
        .commit(
            vec![palisade_store::Change::SetDeviceTags {
                device: id.clone(),
                tags: tags.clone(),
            }],
            vec![
                palisade_audit::EntryDraft::success(c.actor(), "device.tags", id.as_str())
                    .with_detail(serde_json::json!({ "tags": tags })),
            ],
        )
        .await?;
    s.rollouts.wake();
    Ok(Json(serde_json::json!({ "device": id, "tags": tags })))
}

/// A single byte range `bytes=START-` or `bytes=START-END` of a `total`-byte
/// file: the inclusive range to send, or `None` when unsatisfiable.
fn byte_range(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => total.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(total.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

fn tuf_error(e: palisade_control::tuf::TufError) -> ApiError {
    match e {
        palisade_control::tuf::TufError::Refused(m) => ApiError::bad_request("tuf_refused", m),
        palisade_control::tuf::TufError::NoRoot => ApiError::conflict(e.to_string()),
        palisade_control::tuf::TufError::Internal(m) => ApiError::internal(m),
    }
}

async fn tuf_audit(s: &AppState, c: &Caller, action: &str, subject: &str, ok: Result<(), String>) {
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
async fn tuf_online_keys(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read the TUF online keys")
        .await?;
    Ok(Json(s.tuf.online_keys().await.map_err(tuf_error)?))
}

/// Installs root metadata signed in a key ceremony (admin).
#[utoipa::path(put, path = "/api/v1/tuf/root", tag = "releases", request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn tuf_set_root(
    State(s): State<AppState>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "install TUF root metadata")
        .await?;
    match s.tuf.set_root(&body).await {
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
async fn tuf_targets_draft(
    State(s): State<AppState>,
    c: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Write, "draft TUF targets").await?;
    let releases = s.store.releases(None).await?;
    let t = s
        .tuf
        .targets_draft(&releases, s.clock.now_ms(), 365)
        .map_err(tuf_error)?;
    Ok(Json(serde_json::to_value(&t).map_err(ApiError::internal)?))
}

/// Publishes offline-signed targets; signs a new snapshot and timestamp.
#[utoipa::path(put, path = "/api/v1/tuf/targets", tag = "releases", request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn tuf_publish(
    State(s): State<AppState>,
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

/// TUF metadata (public: its integrity comes from its signatures).
async fn tuf_metadata(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let path = s
        .tuf
        .metadata_path(&name)
        .ok_or_else(|| ApiError::not_found(format!("no TUF metadata {name}")))?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("no TUF metadata {name}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response())
}

/// Which image a delta starts from.
#[derive(Debug, Deserialize)]
struct DeltaQuery {
    from: String,
}

/// A delta to a target image (`MODEL/VERSION.img`) from the image with SHA-256
/// `from` (a release of the same model): zstd with the old image as
/// reference. 404 when `from` is not a release of the model. The device
/// checks the rebuilt image against the signed metadata, as for a full image.
async fn tuf_delta(
    State(s): State<AppState>,
    Path(path): Path<String>,
    Query(q): Query<DeltaQuery>,
) -> Result<axum::response::Response, ApiError> {
    let releases = s.store.releases(None).await?;
    let to = releases
        .iter()
        .find(|r| palisade_control::tuf::target_name(r) == path)
        .ok_or_else(|| ApiError::not_found(format!("no target {path}")))?;
    let from = releases
        .iter()
        .find(|r| r.model == to.model && r.image_sha256.eq_ignore_ascii_case(&q.from))
        .ok_or_else(|| {
            ApiError::not_found(format!("no release of {} has image {}", to.model, q.from))
        })?;
    if from.image_sha256 == to.image_sha256 {
        return Err(ApiError::not_found("the device already has this image"));
    }
    let sha = s.releases.delta(from, to).await?;
    let file = s
        .releases
        .blobs()
        .open(&sha)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("the delta blob vanished"))?;
    let len = file.metadata().map_err(ApiError::internal)?.len();
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
            tokio::fs::File::from_std(file),
        )),
    )
        .into_response())
}

/// A target image by its TUF name (`MODEL/VERSION.img`); a single `Range`
/// (`bytes=N-` or `bytes=N-M`) resumes an interrupted download.
async fn tuf_target(
    State(s): State<AppState>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let releases = s.store.releases(None).await?;
    let r = releases
        .iter()
        .find(|r| palisade_control::tuf::target_name(r) == path)
        .ok_or_else(|| ApiError::not_found(format!("no target {path}")))?;
    let file = s
        .releases
        .blobs()
        .open(&r.image_sha256)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no target {path}")))?;
    let mut file = tokio::fs::File::from_std(file);
    let total = r.image_len;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|h| byte_range(h, total));
    match range {
        None => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::ACCEPT_RANGES, "bytes".to_owned()),
            ],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        )
            .into_response()),
        Some(None) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
        Some(Some((start, end))) => {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(ApiError::internal)?;
            let len = end - start + 1;
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{end}/{total}"),
                    ),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len))),
            )
                .into_response())
        }
    }
}

/// Largest release request (SBOM and provenance inline).
const RELEASE_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A supplier's release-signing keys.
#[utoipa::path(get, path = "/api/v1/suppliers/{name}/keys", tag = "releases", params(("name" = String, Path)),
    responses((status = 200, body = Vec<SupplierKeyView>)))]
async fn list_supplier_keys(
    State(s): State<AppState>,
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
async fn add_supplier_key(
    State(s): State<AppState>,
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
async fn upload_blob(
    State(s): State<AppState>,
    c: Caller,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<BlobView>), ApiError> {
    use http_body_util::BodyExt;
    c.require(&s, Access::Release, "upload firmware").await?;
    let mut w = s.releases.blobs().writer().map_err(ApiError::internal)?;
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
            w.write(&chunk).map_err(ApiError::internal)?;
        }
    }
    let (sha256, length) = w.finish().map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(BlobView { sha256, length })))
}

/// Submits a release through the supply-chain gate (operator, admin, or the
/// model's supplier).
#[utoipa::path(post, path = "/api/v1/releases", tag = "releases", request_body = NewReleaseBody,
    responses((status = 201, body = ReleaseView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_release(
    State(s): State<AppState>,
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
    Ok((StatusCode::CREATED, Json((&r).into())))
}

/// Releases, optionally of one model (a supplier sees only its own models').
#[utoipa::path(get, path = "/api/v1/releases", tag = "releases", params(ReleaseQuery),
    responses((status = 200, body = Vec<ReleaseView>)))]
async fn list_releases(
    State(s): State<AppState>,
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
struct UpdateQuery {
    device: Option<String>,
}

/// What devices last reported about their updates.
#[utoipa::path(get, path = "/api/v1/updates", tag = "releases", params(UpdateQuery),
    responses((status = 200)))]
async fn list_updates(
    State(s): State<AppState>,
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

/// Registered TPM vendor CAs.
#[utoipa::path(get, path = "/api/v1/tpm-vendors", tag = "attestation", responses((status = 200, body = Vec<TpmVendorView>)))]
async fn list_tpm_vendors(
    State(s): State<AppState>,
    _c: Caller,
) -> Result<Json<Vec<TpmVendorView>>, ApiError> {
    Ok(Json(
        s.store
            .tpm_vendors()
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Registers a TPM vendor CA (admin): devices' EK certificates must chain to one.
#[utoipa::path(post, path = "/api/v1/tpm-vendors", tag = "attestation", request_body = AddTpmVendor,
    responses((status = 201, body = TpmVendorView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_tpm_vendor(
    State(s): State<AppState>,
    c: Caller,
    Body(req): Body<AddTpmVendor>,
) -> Result<(StatusCode, Json<TpmVendorView>), ApiError> {
    c.require(&s, Access::Admin, "register TPM vendors").await?;
    let der = pem_to_der(&req.ca_pem, "CERTIFICATE")
        .map_err(|e| ApiError::bad_request("bad_ca", e.to_string()))?;
    let rec = s.enrollment.add_tpm_vendor(&c.actor(), der).await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Firmware approved for a model.
#[utoipa::path(get, path = "/api/v1/models/{id}/firmware", tag = "attestation", params(("id" = String, Path)),
    responses((status = 200, body = Vec<FirmwareView>)))]
async fn list_firmware(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<FirmwareView>>, ApiError> {
    let id: ModelId = parse_id(&s, &c, "firmware.list", &id).await?;
    Ok(Json(
        s.store
            .firmware(&id)
            .await?
            .iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Approves a firmware image for a model (operator or admin).
#[utoipa::path(post, path = "/api/v1/models/{id}/firmware", tag = "attestation", params(("id" = String, Path)), request_body = AddFirmware,
    responses((status = 201, body = FirmwareView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_firmware(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<AddFirmware>,
) -> Result<(StatusCode, Json<FirmwareView>), ApiError> {
    c.require(&s, Access::Write, "approve firmware").await?;
    let id: ModelId = parse_id(&s, &c, "firmware.approve", &id).await?;
    let rec = s
        .enrollment
        .add_firmware(&c.actor(), &id, &req.version, &req.sha256)
        .await?;
    Ok((StatusCode::CREATED, Json((&rec).into())))
}

/// Imports a signed batch manifest (operator or admin): the body is the manifest file.
#[utoipa::path(post, path = "/api/v1/batches", tag = "onboarding", request_body(content = String, content_type = "application/json"),
    responses((status = 201, body = BatchView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn import_batch(
    State(s): State<AppState>,
    c: Caller,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<BatchView>), ApiError> {
    c.require(&s, Access::Write, "import batches").await?;
    let b = s.enrollment.import_batch(&c.actor(), &body).await?;
    Ok((StatusCode::CREATED, Json((&b).into())))
}

/// Creates a one-time enrolment token for a model (operator or admin).
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "onboarding", request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_enrollment_token(
    State(s): State<AppState>,
    c: Caller,
    Body(req): Body<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<CreatedEnrollmentToken>), ApiError> {
    c.require(&s, Access::Write, "create enrolment tokens")
        .await?;
    let model: ModelId = parse_id(&s, &c, "enrollment_token.create", &req.model).await?;
    let (text, rec) = s
        .enrollment
        .create_enrollment_token(&c.actor(), model, req.ttl_secs.unwrap_or(86_400))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollmentToken {
            token: text.to_string(),
            id: rec.id,
            model: rec.model.to_string(),
            expires_at: rfc3339(rec.expires_ms),
        }),
    ))
}

/// Approves a device whose model requires approval before enrolment (operator or admin).
#[utoipa::path(post, path = "/api/v1/devices/{id}/approve", tag = "devices", params(("id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve_device(
    State(s): State<AppState>,
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
async fn send_command(
    State(s): State<AppState>,
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
async fn list_commands(
    State(s): State<AppState>,
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

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges_resume_and_refuse_the_unsatisfiable() {
        assert_eq!(byte_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(byte_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(byte_range("bytes=4-6", 10), Some((4, 6)));
        assert_eq!(byte_range("bytes=4-600", 10), Some((4, 9)));
        assert_eq!(byte_range("bytes=10-", 10), None);
        assert_eq!(byte_range("bytes=6-4", 10), None);
        assert_eq!(byte_range("bytes=-4", 10), None);
        assert_eq!(byte_range("items=0-", 10), None);
        assert_eq!(byte_range("bytes=0-", 0), None);
        assert_eq!(byte_range("bytes=0-1,3-4", 10), None);
    }
}
