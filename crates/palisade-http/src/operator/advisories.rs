//! Operator routes for vulnerability advisories: importing OSV records in
//! batches, the list with what each hits, and the releases and devices one
//! advisory (by its id, a CVE or GHSA alias) exposes.

use axum::Json;
use axum::extract::{Path, Query, State};
use palisade_control::advisories::{AdvisorySummary, AffectedReport, ImportReport};
use palisade_core::role::Access;
use serde::Deserialize;

use super::Caller;
use crate::error::{ApiError, Body};
use crate::state::OperatorApi;

/// Largest import request: a batch of OSV records.
pub(crate) const IMPORT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Imports a batch of OSV records (a JSON array, at most 1000): new and
/// changed records are stored and matched against every accepted release.
#[utoipa::path(post, path = "/api/v1/advisories", tag = "advisories",
    request_body(content = String, content_type = "application/json"),
    responses((status = 200), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn import(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(records): Body<Vec<serde_json::Value>>,
) -> Result<Json<ImportReport>, ApiError> {
    c.require(&s, Access::Write, "import advisories").await?;
    Ok(Json(s.advisories.import(&c.actor(), &records).await?))
}

/// Which advisories to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Only those that hit firmware devices run.
    #[serde(default)]
    exposed: bool,
}

/// The advisories, newest first, with the releases and devices each hits.
#[utoipa::path(get, path = "/api/v1/advisories", tag = "advisories", params(ListQuery),
    responses((status = 200)))]
pub(crate) async fn list(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<AdvisorySummary>>, ApiError> {
    c.require(&s, Access::Read, "list advisories").await?;
    Ok(Json(s.advisories.list(q.exposed).await?))
}

/// The releases and devices an advisory hits (by its id or an alias).
#[utoipa::path(get, path = "/api/v1/advisories/{id}/affected", tag = "advisories",
    params(("id" = String, Path)), responses((status = 200), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn affected(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<AffectedReport>, ApiError> {
    c.require(&s, Access::Read, "read an advisory's exposure")
        .await?;
    check_id(&id)?;
    Ok(Json(s.advisories.affected(&id).await?))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_id",
            "an advisory id is 1 to 200 printable characters",
        ));
    }
    Ok(())
}

/// The report's format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: Option<String>,
}

/// The advisory's vulnerability-handling report for the CRA: first seen,
/// exposed devices day by day, the first fixed release, the share of the
/// fleet updated and the days to fix (JSON, or CSV with `format=csv`).
#[utoipa::path(get, path = "/api/v1/advisories/{id}/report", tag = "advisories",
    params(("id" = String, Path), ReportQuery), responses((status = 200), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn report(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    c.require(&s, Access::Read, "read advisory reports").await?;
    check_id(&id)?;
    let r = s.advisories.report(&id).await?;
    Ok(match q.format.as_deref() {
        None | Some("json") => Json(r).into_response(),
        Some("csv") => (
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            r.csv(),
        )
            .into_response(),
        Some(_) => {
            return Err(ApiError::bad_request("bad_format", "format is json or csv"));
        }
    })
}

/// When the manufacturer became aware of active exploitation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exploited {
    /// Aware since: YYYY-MM-DD or RFC 3339 [default: now].
    #[serde(default)]
    pub aware_at: Option<String>,
    /// How the exploitation is known (1 to 2000 characters).
    pub note: String,
}

/// Records that the advisory's vulnerability is actively exploited, which
/// starts the CRA Article 14 reporting clock (operator or admin; audited).
#[utoipa::path(post, path = "/api/v1/advisories/{id}/exploited", tag = "advisories",
    params(("id" = String, Path)), request_body = Exploited,
    responses((status = 200), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn exploited(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Body(req): Body<Exploited>,
) -> Result<Json<palisade_store::ExploitationRecord>, ApiError> {
    c.require(&s, Access::Write, "mark advisories exploited")
        .await?;
    check_id(&id)?;
    let aware = match &req.aware_at {
        Some(t) => Some(
            palisade_control::lifecycle::parse_date_ms(t)
                .map_err(|e| ApiError::bad_request("bad_aware_at", e))?,
        ),
        None => None,
    };
    Ok(Json(
        s.advisories
            .mark_exploited(&c.actor(), &id, aware, &req.note)
            .await?,
    ))
}

/// The CRA Article 14 pack of an actively exploited vulnerability: the
/// product, affected versions and device counts, mitigation, the 24 h / 72 h
/// / final-report deadlines and what is due next, with a text to paste.
#[utoipa::path(get, path = "/api/v1/advisories/{id}/cra-pack", tag = "advisories",
    params(("id" = String, Path)), responses((status = 200), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn cra_pack(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<palisade_control::cra::CraPack>, ApiError> {
    c.require(&s, Access::Read, "read advisory reports").await?;
    check_id(&id)?;
    Ok(Json(s.advisories.cra_pack(&id).await?))
}

/// Largest VEX upload (a DSSE envelope around a 4 MiB document, base64).
pub(crate) const VEX_BODY_LIMIT: usize = 6 << 20;

/// Stores a supplier's VEX for its release (the model's supplier, an
/// operator or an admin): a DSSE envelope whose payload is a CSAF 2.0 VEX or
/// CycloneDX VEX document, signed by a registered key of the release's
/// supplier. Its `not_affected` statements suppress the matches they cover.
#[utoipa::path(post, path = "/api/v1/releases/{model}/{version}/vex", tag = "advisories",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "the statements stored"), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn upload_vex(
    State(s): State<OperatorApi>,
    c: Caller,
    Path((model, version)): Path<(String, String)>,
    Body(env): Body<palisade_release::Envelope>,
) -> Result<Json<palisade_control::vex::VexReport>, ApiError> {
    c.require(&s, Access::Release, "upload VEX").await?;
    let model: palisade_core::ModelId = super::parse_id(&s, &c, "release.vex", &model).await?;
    Ok(Json(
        s.advisories
            .upload_vex(&c.actor(), (c.role, &c.operator), &model, &version, &env)
            .await?,
    ))
}
