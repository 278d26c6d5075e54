//! `palisade operator …`: people's accounts for the web console (admin):
//! create with a role, set a password, disable (ending every session), list.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_http::operator::accounts::AccountView;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{client, enc};
use crate::Global;
use crate::output::{data, say};

/// `palisade operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Create a person's console account; the password is asked for on the
    /// terminal (twice), or read from a file or, without a terminal, stdin.
    Add {
        /// Their name (also how the audit log names them).
        name: String,
        /// Their role.
        #[arg(long, value_parser = ["admin", "operator", "auditor", "supplier"])]
        role: String,
        /// Read the password from this file (its first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Set an account's password.
    Password {
        /// The account.
        name: String,
        /// Read the password from this file (its first line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Disable an account: it can no longer sign in and its sessions end at once.
    Disable {
        /// The account.
        name: String,
    },
    /// Every account.
    List,
}

/// The password: from a file, the terminal (asked twice), or stdin.
fn password(file: Option<&Path>, name: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        );
        return Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()));
    }
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(format!(
            "password for {name} (at least 12 characters): "
        ))?);
        let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
        if *first != *again {
            bail!("the two passwords differ");
        }
        return Ok(first);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// Runs an operator-account command.
pub async fn operator(g: &Global, cmd: OperatorCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        OperatorCmd::Add {
            name,
            role,
            password_file,
        } => {
            let pw = password(password_file.as_deref(), &name)?;
            // The request body holds the password only until it is sent.
            let body = json!({ "name": name, "role": role, "password": *pw });
            let a: AccountView = c
                .call(Method::POST, "/api/v1/operators", Some(&body))
                .await?;
            say(format!(
                "created {} ({}); they can sign in to the console",
                a.name, a.role
            ));
        }
        OperatorCmd::Password {
            name,
            password_file,
        } => {
            let pw = password(password_file.as_deref(), &name)?;
            let body = json!({ "password": *pw });
            let _: Value = c
                .call(
                    Method::POST,
                    &format!("/api/v1/operators/{}/password", enc(&name)),
                    Some(&body),
                )
                .await?;
            say(format!("set {name}'s password"));
        }
        OperatorCmd::Disable { name } => {
            let _: Value = c
                .call(
                    Method::POST,
                    &format!("/api/v1/operators/{}/disable", enc(&name)),
                    None,
                )
                .await?;
            say(format!("disabled {name}; their sessions have ended"));
        }
        OperatorCmd::List => {
            let list: Vec<AccountView> = c.call(Method::GET, "/api/v1/operators", None).await?;
            let rows = list
                .iter()
                .map(|a| {
                    vec![
                        a.name.clone(),
                        a.role.clone(),
                        if a.disabled_ms.is_some() {
                            "disabled".into()
                        } else {
                            "enabled".into()
                        },
                    ]
                })
                .collect();
            data(g.json, &list, &["name", "role", "status"], rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
