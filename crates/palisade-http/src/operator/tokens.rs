//! Operator routes for API tokens: create, list, revoke.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use palisade_core::role::Access;
use palisade_core::{OperatorName, Role};

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::OperatorApi;
use crate::views::*;

/// Operator tokens (admin).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "operators", responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    State(s): State<OperatorApi>,
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
pub(crate) async fn create_token(
    State(s): State<OperatorApi>,
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
pub(crate) async fn revoke_token(
    State(s): State<OperatorApi>,
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
