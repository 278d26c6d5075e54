//! `palisade cert …`: certificates issued, listed, revoked.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hyper::Method;
use palisade_http::views::*;
use serde_json::json;

use crate::Global;
use crate::output::{data, raw, say};

use super::{client, dash, enc};

/// `palisade cert …`
#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// List certificates.
    List {
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
        /// valid or revoked.
        #[arg(long)]
        status: Option<String>,
    },
    /// Issue a device certificate from a PEM CSR; prints the certificate PEM.
    Issue {
        /// Device id.
        device: String,
        /// PEM CSR file.
        #[arg(long)]
        csr: PathBuf,
        /// Also write the issuing CA and root chain to this file.
        #[arg(long)]
        chain_out: Option<PathBuf>,
    },
    /// Show one certificate (with --pem, print it as PEM).
    Show {
        /// Serial (hex).
        serial: String,
        /// Print the PEM certificate.
        #[arg(long)]
        pem: bool,
    },
    /// Revoke a certificate.
    Revoke {
        /// Serial (hex).
        serial: String,
        /// unspecified, key-compromise, affiliation-changed, superseded,
        /// cessation-of-operation or privilege-withdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

pub(crate) const CERT_HEADERS: [&str; 6] = [
    "serial",
    "profile",
    "device",
    "not after",
    "status",
    "subject",
];

pub(crate) fn cert_rows(list: &[CertView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|c| {
            vec![
                c.serial.clone(),
                c.profile.clone(),
                dash(c.device.as_deref()),
                c.not_after.clone(),
                match &c.reason {
                    Some(r) => format!("{} ({r})", c.status),
                    None => c.status.clone(),
                },
                c.subject.clone(),
            ]
        })
        .collect()
}

/// Runs a cert command.
pub async fn cert(g: &Global, cmd: CertCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        CertCmd::List { device, status } => {
            let mut q = vec![];
            if let Some(d) = device {
                q.push(format!("device={}", enc(&d)));
            }
            if let Some(s) = status {
                q.push(format!("status={}", enc(&s)));
            }
            let list: Vec<CertView> = c
                .call(
                    Method::GET,
                    &format!("/api/v1/certificates?{}", q.join("&")),
                    None,
                )
                .await?;
            data(g.json, &list, &CERT_HEADERS, cert_rows(&list));
        }
        CertCmd::Issue {
            device,
            csr,
            chain_out,
        } => {
            let text = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading the CSR {}", csr.display()))?;
            let v: CertView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/certificates", enc(&device)),
                    Some(&json!({ "csr": text })),
                )
                .await?;
            if let (Some(path), Some(chain)) = (&chain_out, &v.chain) {
                std::fs::write(path, chain)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            say(format!("issued certificate {} to {device}", v.serial));
            if g.json {
                data(true, &v, &[], vec![]);
            } else {
                raw(v.pem.as_deref().unwrap_or(""));
            }
        }
        CertCmd::Show { serial, pem } => {
            let v: CertView = c
                .call(
                    Method::GET,
                    &format!("/api/v1/certificates/{}", enc(&serial)),
                    None,
                )
                .await?;
            if pem && !g.json {
                raw(v.pem.as_deref().unwrap_or(""));
            } else {
                let rows = cert_rows(std::slice::from_ref(&v));
                data(g.json, &v, &CERT_HEADERS, rows);
            }
        }
        CertCmd::Revoke { serial, reason } => {
            let v: CertView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/certificates/{}/revoke", enc(&serial)),
                    Some(&json!({ "reason": reason })),
                )
                .await?;
            say(format!("revoked certificate {} ({reason})", v.serial));
            let rows = cert_rows(std::slice::from_ref(&v));
            data(g.json, &v, &CERT_HEADERS, rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}
