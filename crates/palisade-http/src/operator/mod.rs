//! The operator zone: `/api/v1/…` by resource family, `/metrics` and the
//! OpenAPI document. Operators authenticate with bearer tokens ([`Caller`]) and
//! act by role; a client certificate is never a credential here: this router
//! drops any the connection presented before a handler runs.

pub mod accounts;
mod advisories;
mod audit;
mod auth;
mod certificates;
mod fleet;
pub mod monitoring;
mod network;
mod onboarding;
pub mod posture;
mod releases;
mod tokens;

use std::str::FromStr;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use utoipa::OpenApi;

pub use self::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::public;
use crate::state::{OperatorApi, Services};
use crate::views::WhoAmI;

/// The operator routes.
pub(crate) fn router(state: OperatorApi) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/models",
            get(fleet::list_models).post(fleet::add_model),
        )
        .route("/api/v1/models/{id}", get(fleet::get_model))
        .route(
            "/api/v1/models/{id}/support",
            get(fleet::get_support).put(fleet::set_support),
        )
        .route(
            "/api/v1/devices",
            get(fleet::list_devices).post(fleet::register_device),
        )
        .route("/api/v1/devices/{id}", get(fleet::get_device))
        .route("/api/v1/devices/{id}/state", post(fleet::set_device_state))
        .route("/api/v1/devices/{id}/approve", post(fleet::approve_device))
        .route(
            "/api/v1/devices/{id}/decommission",
            get(fleet::get_decommission).post(fleet::decommission_device),
        )
        .route(
            "/api/v1/devices/{id}/reinstate",
            post(fleet::reinstate_device),
        )
        .route(
            "/api/v1/devices/{id}/commands",
            get(fleet::list_commands).post(fleet::send_command),
        )
        .route("/api/v1/devices/{id}/tags", put(fleet::set_device_tags))
        .route(
            "/api/v1/devices/{id}/timeline",
            get(monitoring::device_timeline),
        )
        .route(
            "/api/v1/devices/{id}/certificates",
            post(certificates::issue_certificate),
        )
        .route("/api/v1/certificates", get(certificates::list_certificates))
        .route(
            "/api/v1/certificates/{serial}",
            get(certificates::get_certificate),
        )
        .route(
            "/api/v1/certificates/{serial}/revoke",
            post(certificates::revoke_certificate),
        )
        .route("/api/v1/ca", get(certificates::list_cas))
        .route(
            "/api/v1/ca/rotate-issuing",
            post(certificates::rotate_issuing),
        )
        .route("/api/v1/ca/rotate-root", post(certificates::rotate_root))
        .route("/api/v1/ca/renew-fleet", post(certificates::renew_fleet))
        .route("/api/v1/ca/{serial}/retire", post(certificates::retire_ca))
        .route(
            "/api/v1/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/api/v1/tokens/{id}/revoke", post(tokens::revoke_token))
        .route("/api/v1/audit/checkpoint", get(audit::audit_head))
        .route("/api/v1/audit/entries", get(audit::audit_entries))
        .route("/api/v1/audit/checkpoints", get(audit::audit_checkpoints))
        .route("/api/v1/audit/proof/inclusion", get(audit::inclusion_proof))
        .route(
            "/api/v1/audit/proof/consistency",
            get(audit::consistency_proof),
        )
        .route(
            "/api/v1/suppliers",
            get(onboarding::list_suppliers).post(onboarding::add_supplier),
        )
        .route(
            "/api/v1/batches",
            post(onboarding::import_batch)
                .layer(DefaultBodyLimit::max(palisade_pki::MAX_MANIFEST_BYTES)),
        )
        .route(
            "/api/v1/enrollment-tokens",
            post(onboarding::create_enrollment_token),
        )
        .route(
            "/api/v1/tpm-vendors",
            get(onboarding::list_tpm_vendors).post(onboarding::add_tpm_vendor),
        )
        .route(
            "/api/v1/models/{id}/firmware",
            get(onboarding::list_firmware).post(onboarding::add_firmware),
        )
        .route(
            "/api/v1/suppliers/{name}/disclosure-contact",
            put(onboarding::set_disclosure_contact),
        )
        .route(
            "/api/v1/suppliers/{name}/keys",
            get(releases::list_supplier_keys).post(releases::add_supplier_key),
        )
        .route(
            "/api/v1/blobs",
            put(releases::upload_blob).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/releases",
            get(releases::list_releases)
                .post(releases::create_release)
                .layer(DefaultBodyLimit::max(releases::RELEASE_BODY_LIMIT)),
        )
        .route(
            "/api/v1/releases/{model}/{version}/vex",
            post(advisories::upload_vex).layer(DefaultBodyLimit::max(advisories::VEX_BODY_LIMIT)),
        )
        .route("/api/v1/lifecycle", get(releases::lifecycle))
        .route(
            "/api/v1/advisories",
            get(advisories::list)
                .post(advisories::import)
                .layer(DefaultBodyLimit::max(advisories::IMPORT_BODY_LIMIT)),
        )
        .route(
            "/api/v1/advisories/{id}/affected",
            get(advisories::affected),
        )
        .route("/api/v1/advisories/{id}/report", get(advisories::report))
        .route(
            "/api/v1/advisories/{id}/exploited",
            post(advisories::exploited),
        )
        .route(
            "/api/v1/advisories/{id}/cra-pack",
            get(advisories::cra_pack),
        )
        .route("/api/v1/director/key", get(releases::director_key))
        .route(
            "/api/v1/devices/{id}/assignment",
            post(releases::assign_release),
        )
        .route("/api/v1/updates", get(releases::list_updates))
        .route(
            "/api/v1/rollouts",
            get(releases::list_rollouts).post(releases::create_rollout),
        )
        .route("/api/v1/rollouts/{name}", get(releases::get_rollout))
        .route(
            "/api/v1/rollouts/{name}/{action}",
            post(releases::rollout_action),
        )
        .route("/api/v1/tuf/online-keys", get(releases::tuf_online_keys))
        .route(
            "/api/v1/tuf/online-keys/next",
            post(releases::tuf_next_online_keys),
        )
        .route(
            "/api/v1/tuf/root",
            put(releases::tuf_set_root).layer(DefaultBodyLimit::max(
                palisade_control::tuf::MAX_METADATA_BYTES,
            )),
        )
        .route(
            "/api/v1/tuf/targets-draft",
            get(releases::tuf_targets_draft),
        )
        .route(
            "/api/v1/tuf/targets",
            put(releases::tuf_publish).layer(DefaultBodyLimit::max(
                palisade_control::tuf::MAX_METADATA_BYTES,
            )),
        )
        .route(
            "/api/v1/models/{id}/mud",
            put(network::set_model_mud).layer(DefaultBodyLimit::max(
                palisade_policy::mud::MAX_MUD_BYTES * 2,
            )),
        )
        .route("/api/v1/models/{id}/policy", get(network::get_model_policy))
        .route("/api/v1/sites", get(network::list_sites))
        .route(
            "/api/v1/sites/{name}",
            get(network::get_site).put(network::set_site),
        )
        .route("/api/v1/sites/{name}/edges", post(network::add_site_edge))
        .route(
            "/api/v1/sites/{name}/unmanaged",
            get(network::list_unmanaged),
        )
        .route(
            "/api/v1/sites/{name}/unmanaged/{address}/{action}",
            post(network::unmanaged_action),
        )
        .route("/api/v1/devices/{id}/placement", put(network::place_device))
        .route("/api/v1/alerts", get(monitoring::list_alerts))
        .route("/api/v1/alerts/stream", get(monitoring::alert_stream))
        .route("/api/v1/alerts/{id}", get(monitoring::get_alert))
        .route(
            "/api/v1/alerts/{id}/{action}",
            post(monitoring::alert_action),
        )
        .route("/api/v1/posture", get(posture::fleet_posture))
        .route("/api/v1/posture/devices/{id}", get(posture::device_posture))
        .route("/api/v1/posture/failing", get(posture::failing))
        .route("/api/v1/posture/report", get(posture::report))
        .route(
            "/api/v1/operators",
            get(accounts::list_accounts).post(accounts::add_account),
        )
        .route(
            "/api/v1/operators/{name}/password",
            post(accounts::set_password),
        )
        .route(
            "/api/v1/operators/{name}/disable",
            post(accounts::disable_account),
        )
        .layer(axum::middleware::map_request(forget_client_certificate))
        .with_state(state)
}

/// A client certificate is never an operator's credential: drop it before any
/// handler could look.
async fn forget_client_certificate(mut req: Request) -> Request {
    req.extensions_mut().remove::<crate::ClientCertChain>();
    req
}

pub(crate) async fn parse_id<T: FromStr<Err = palisade_core::IdError>>(
    state: &Services,
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

#[derive(OpenApi)]
#[openapi(
    info(title = "Palisade operator API", version = "1", description = "Control plane of the Palisade IoT fleet security platform."),
    paths(
        public::healthz, public::readyz, public::crl, public::crl_of_issuer, public::chain, metrics, whoami,
        fleet::list_models, fleet::add_model, fleet::get_model, fleet::get_support,
        fleet::set_support,
        fleet::list_devices, fleet::register_device, fleet::get_device, fleet::set_device_state,
        fleet::approve_device, fleet::decommission_device, fleet::get_decommission,
        fleet::reinstate_device, certificates::issue_certificate,
        fleet::send_command, fleet::list_commands,
        certificates::list_certificates, certificates::get_certificate, certificates::revoke_certificate,
        certificates::list_cas, certificates::rotate_issuing, certificates::rotate_root, certificates::retire_ca,
        certificates::renew_fleet,
        tokens::list_tokens, tokens::create_token, tokens::revoke_token,
        onboarding::list_suppliers, onboarding::add_supplier, onboarding::set_disclosure_contact, onboarding::import_batch,
        onboarding::create_enrollment_token,
        onboarding::list_tpm_vendors, onboarding::add_tpm_vendor, onboarding::list_firmware,
        onboarding::add_firmware,
        releases::list_supplier_keys, releases::add_supplier_key, releases::upload_blob,
        releases::create_release, releases::list_releases,
        releases::lifecycle, advisories::import, advisories::list, advisories::affected, advisories::upload_vex,
        advisories::report, advisories::exploited, advisories::cra_pack,
        releases::director_key, releases::tuf_next_online_keys, releases::assign_release, releases::list_updates,
        releases::create_rollout, releases::list_rollouts,
        releases::get_rollout, releases::rollout_action, fleet::set_device_tags,
        network::set_model_mud, network::get_model_policy, network::list_sites,
        network::get_site, network::set_site, network::add_site_edge, network::place_device,
        network::list_unmanaged, network::unmanaged_action,
        audit::audit_head, audit::audit_entries, audit::audit_checkpoints, audit::inclusion_proof,
        audit::consistency_proof,
        monitoring::list_alerts, monitoring::get_alert, monitoring::alert_action,
        monitoring::alert_stream, monitoring::device_timeline,
        posture::fleet_posture, posture::device_posture, posture::failing, posture::report,
        accounts::add_account, accounts::list_accounts, accounts::set_password,
        accounts::disable_account,
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

/// Prometheus metrics (any valid token, unless `metrics_public`).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "text exposition format"), (status = 401, body = ErrorBody)))]
async fn metrics(State(s): State<OperatorApi>, req: Request) -> Result<Response, ApiError> {
    if !s.metrics_public {
        let (mut parts, _) = req.into_parts();
        let _caller = <Caller as axum::extract::FromRequestParts<OperatorApi>>::from_request_parts(
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
