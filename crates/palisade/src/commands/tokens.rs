//! `palisade token …`: operator API tokens.

use std::process::ExitCode;

use clap::Subcommand;
use hyper::Method;
use palisade_http::views::*;
use serde_json::{Value, json};

use crate::Global;
use crate::output::{data, raw, say};

use super::{client, dash, enc};

/// `palisade token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token; it is printed once (stdout).
    Create {
        /// Operator name.
        #[arg(long)]
        operator: String,
        /// admin, operator or auditor.
        #[arg(long)]
        role: String,
        /// Lifetime in days (no expiry if absent).
        #[arg(long)]
        ttl_days: Option<u32>,
    },
    /// List API tokens (never their secrets).
    List,
    /// Revoke an API token.
    Revoke {
        /// Token id.
        id: String,
    },
}

pub(crate) fn token_rows(list: &[TokenView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.operator.clone(),
                t.role.clone(),
                t.created_at.clone(),
                dash(t.expires_at.as_deref()),
                dash(t.revoked_at.as_deref()),
            ]
        })
        .collect()
}

pub(crate) const TOKEN_HEADERS: [&str; 6] =
    ["id", "operator", "role", "created", "expires", "revoked"];

/// Runs a token command.
pub async fn token(g: &Global, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        TokenCmd::Create {
            operator,
            role,
            ttl_days,
        } => {
            let t: CreatedToken = c
                .call(
                    Method::POST,
                    "/api/v1/tokens",
                    Some(&json!({ "operator": operator, "role": role, "ttl_days": ttl_days })),
                )
                .await?;
            say(format!(
                "created token {} for {} ({}); it is shown only now:",
                t.info.id, t.info.operator, t.info.role
            ));
            if g.json {
                data(true, &t, &[], vec![]);
            } else {
                raw(&format!("{}\n", t.token));
            }
        }
        TokenCmd::List => {
            let list: Vec<TokenView> = c.call(Method::GET, "/api/v1/tokens", None).await?;
            data(g.json, &list, &TOKEN_HEADERS, token_rows(&list));
        }
        TokenCmd::Revoke { id } => {
            let _: Value = c
                .call(
                    Method::POST,
                    &format!("/api/v1/tokens/{}/revoke", enc(&id)),
                    None,
                )
                .await?;
            say(format!("revoked token {id}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
