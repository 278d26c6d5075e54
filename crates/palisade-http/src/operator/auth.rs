//! Operator authentication (bearer tokens, and nothing else) and role checks. Failures are counted
//! in metrics and audited, at a bounded rate so a flood cannot fill the log.

use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use palisade_core::Role;
use palisade_core::role::Access;

use crate::PeerAddr;

use crate::error::ApiError;
use crate::state::{OperatorApi, Services};
use palisade_control::tokens::{parse_token, secret_matches};

/// An authenticated operator.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Operator name.
    pub operator: String,
    /// Token id.
    pub token_id: String,
    /// Role granted by the token.
    pub role: Role,
    /// Peer address.
    pub addr: Option<SocketAddr>,
}

impl Caller {
    /// The audit actor label.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.operator)
    }

    /// Refuses (403, audited) unless the caller's role permits `access`.
    pub async fn require(
        &self,
        state: &Services,
        access: Access,
        what: &str,
    ) -> Result<(), ApiError> {
        if self.role.permits(access) {
            return Ok(());
        }
        state.metrics.auth_failure("forbidden");
        if state.audit_limiter.allow(state.clock.now_ms()) {
            state
                .fleet
                .audit_denied(
                    &self.actor(),
                    "auth.forbidden",
                    what,
                    &format!("role {} may not do this", self.role),
                )
                .await;
        }
        Err(ApiError::forbidden(format!(
            "role {} may not {what}; ask an admin for a token with a suitable role",
            self.role
        )))
    }
}

async fn deny(
    state: &Services,
    addr: Option<SocketAddr>,
    reason: &'static str,
    subject: &str,
) -> ApiError {
    state.metrics.auth_failure(reason);
    if state.audit_limiter.allow(state.clock.now_ms()) {
        let actor = match addr {
            Some(a) => format!("anonymous@{}", a.ip()),
            None => "anonymous".into(),
        };
        state
            .fleet
            .audit_denied(&actor, "auth.failure", subject, reason)
            .await;
    }
    ApiError::unauthorized(match reason {
        "missing" => {
            "no API token: send `Authorization: Bearer <token>` (see `palisade token create`)"
        }
        "malformed" => "the API token is malformed: it should look like pal_<id>_<secret>",
        "expired" => "the API token has expired: ask an admin for a new one",
        "revoked" => "the API token has been revoked: ask an admin for a new one",
        _ => "the API token is not valid",
    })
}

impl FromRequestParts<OperatorApi> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &OperatorApi) -> Result<Self, ApiError> {
        let addr = parts.extensions.get::<PeerAddr>().map(|p| p.0);
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            // A request without any token is not an attack on a token: count it,
            // but do not fill the audit log with health probes and curious scanners.
            state.metrics.auth_failure("missing");
            return Err(ApiError::unauthorized(
                "no API token: send `Authorization: Bearer <token>` (see `palisade token create`)",
            ));
        };
        let text = value.to_str().unwrap_or("");
        let Some(token) = text.strip_prefix("Bearer ").map(str::trim) else {
            return Err(deny(state, addr, "malformed", "-").await);
        };
        let Some((id, secret)) = parse_token(token) else {
            return Err(deny(state, addr, "malformed", "-").await);
        };
        let record = match state.store.token(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(deny(state, addr, "unknown", id).await),
            Err(e) => return Err(e.into()),
        };
        if !secret_matches(secret, &record) {
            return Err(deny(state, addr, "wrong-secret", id).await);
        }
        if record.revoked_ms.is_some() {
            return Err(deny(state, addr, "revoked", id).await);
        }
        let now = state.clock.now_ms();
        if record.expires_ms.is_some_and(|e| e <= now) {
            return Err(deny(state, addr, "expired", id).await);
        }
        // A supplier's token reaches the release upload paths and nothing else.
        let path = parts.uri.path();
        if record.role == Role::Supplier
            && !(path == "/api/v1/blobs" || path == "/api/v1/releases" || path == "/api/v1/whoami")
        {
            return Err(deny(state, addr, "supplier-scope", id).await);
        }
        Ok(Caller {
            operator: record.operator.to_string(),
            token_id: record.id,
            role: record.role,
            addr,
        })
    }
}
