//! Operator routes for people's console accounts (admin): create, list, set a
//! password, disable (which ends the account's sessions at once).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use palisade_core::role::Access;
use palisade_core::{OperatorName, Role};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Caller, parse_id};
use crate::error::{ApiError, Body, ErrorBody};
use crate::state::OperatorApi;

/// A new account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// The person's operator name.
    name: String,
    /// `admin`, `operator`, `auditor` or `supplier`.
    role: String,
    /// At least 12 characters.
    password: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 12 characters.
    password: String,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword").finish_non_exhaustive()
    }
}

/// An account as shown (never its password hash).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Disabled, Unix ms.
    pub disabled_ms: Option<i64>,
}

/// Creates a person's console account (admin; audited).
#[utoipa::path(post, path = "/api/v1/operators", tag = "operators", request_body = NewAccount,
    responses((status = 201, body = AccountView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn add_account(
    State(s): State<OperatorApi>,
    c: Caller,
    Body(req): Body<NewAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    c.require(&s, Access::Admin, "create accounts").await?;
    let name: OperatorName = parse_id(&s, &c, "account.add", &req.name).await?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: palisade_core::RoleError| ApiError::bad_request("bad_role", e.to_string()))?;
    let a = s
        .accounts
        .add(&c.actor(), name, role, Zeroizing::new(req.password))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountView {
            name: a.name.to_string(),
            role: a.role.to_string(),
            created_ms: a.created_ms,
            disabled_ms: a.disabled_ms,
        }),
    ))
}

/// Every account (admin).
#[utoipa::path(get, path = "/api/v1/operators", tag = "operators",
    responses((status = 200, body = Vec<AccountView>)))]
pub(crate) async fn list_accounts(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Json<Vec<AccountView>>, ApiError> {
    c.require(&s, Access::Admin, "list accounts").await?;
    Ok(Json(
        s.accounts
            .list()
            .await?
            .into_iter()
            .map(|a| AccountView {
                name: a.name.to_string(),
                role: a.role.to_string(),
                created_ms: a.created_ms,
                disabled_ms: a.disabled_ms,
            })
            .collect(),
    ))
}

/// Sets an account's password (admin; audited).
#[utoipa::path(post, path = "/api/v1/operators/{name}/password", tag = "operators",
    params(("name" = String, Path)), request_body = NewPassword,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn set_password(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
    Body(req): Body<NewPassword>,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "set passwords").await?;
    let name: OperatorName = parse_id(&s, &c, "account.password", &name).await?;
    s.accounts
        .set_password(&c.actor(), &name, Zeroizing::new(req.password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables an account and ends its sessions (admin; audited).
#[utoipa::path(post, path = "/api/v1/operators/{name}/disable", tag = "operators",
    params(("name" = String, Path)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
pub(crate) async fn disable_account(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    c.require(&s, Access::Admin, "disable accounts").await?;
    let name: OperatorName = parse_id(&s, &c, "account.disable", &name).await?;
    s.accounts.disable(&c.actor(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
