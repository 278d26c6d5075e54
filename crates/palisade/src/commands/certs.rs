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

/// `palisade ca …`
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// List every CA certificate: roots, issuing CAs and cross-certificates,
    /// with whether each is current, in service or retired.
    List,
    /// Rotate the issuing CA: a new issuing CA under the current root issues
    /// from now on; the old one stays trusted (gateway, its CRL) while a
    /// certificate it issued is unexpired (admin).
    RotateIssuing {
        /// Keep the new issuing CA's key on an HSM: an RFC 7512 `pkcs11:`
        /// URI (generated on the token if absent) [default: a key file
        /// `ca/keys/SERIAL.key`, 0600].
        #[arg(long, value_name = "URI")]
        key: Option<String>,
    },
    /// Rotate the root: a new root cross-certified by the current one, the
    /// issuing CAs in service cross-certified by it, and a new issuing CA
    /// under it. Devices take the new root from EST `cacerts` at their next
    /// renewal and keep both until the old root is retired (admin).
    RotateRoot {
        /// Keep the new issuing CA's key on an HSM (`pkcs11:` URI).
        #[arg(long, value_name = "URI")]
        key: Option<String>,
    },
    /// Ask every device whose certificate is from an older issuing CA to
    /// renew now (a `renew` command on its commands topic) (admin).
    RenewFleet {
        /// Each device renews at a random moment within this many seconds.
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        within: u32,
    },
    /// Take a CA that is not current out of service (admin).
    Retire {
        /// The CA certificate's serial (hex), from `palisade ca list`.
        serial: String,
        /// Retire an issuing CA even though certificates it issued are still
        /// valid: they stop working at once.
        #[arg(long)]
        force: bool,
    },
}

const CA_HEADERS: [&str; 6] = [
    "serial",
    "kind",
    "status",
    "not after",
    "last cert",
    "subject",
];

fn ca_rows(list: &[CaView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|c| {
            vec![
                c.serial.clone(),
                c.kind.clone(),
                c.status.clone(),
                c.not_after.clone(),
                dash(c.last_certificate_expires.as_deref()),
                c.subject.clone(),
            ]
        })
        .collect()
}

/// Runs a CA command.
pub async fn ca(g: &Global, cmd: CaCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let (list, done): (Vec<CaView>, Option<String>) = match cmd {
        CaCmd::List => (c.call(Method::GET, "/api/v1/ca", None).await?, None),
        CaCmd::RotateIssuing { key } => (
            c.call(
                Method::POST,
                "/api/v1/ca/rotate-issuing",
                Some(&json!({ "key": key })),
            )
            .await?,
            Some("rotated the issuing CA: new certificates come from the current one".into()),
        ),
        CaCmd::RotateRoot { key } => (
            c.call(
                Method::POST,
                "/api/v1/ca/rotate-root",
                Some(&json!({ "key": key })),
            )
            .await?,
            Some(
                "rotated the root: devices take the new root at their next renewal \
                 (`palisade ca renew-fleet` to ask them now); retire the old root once \
                 every device has renewed"
                    .into(),
            ),
        ),
        CaCmd::Retire { serial, force } => (
            c.call(
                Method::POST,
                &format!("/api/v1/ca/{}/retire", enc(&serial)),
                Some(&json!({ "force": force })),
            )
            .await?,
            Some(format!("retired CA {serial}")),
        ),
        CaCmd::RenewFleet { within } => {
            let v: RenewFleetView = c
                .call(
                    Method::POST,
                    "/api/v1/ca/renew-fleet",
                    Some(&json!({ "within_s": within })),
                )
                .await?;
            say(format!(
                "asked {} devices to renew from issuing CA {} within {within} s",
                v.queued, v.issuing
            ));
            data(g.json, &v, &[], vec![]);
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(m) = done {
        say(m);
    }
    data(g.json, &list, &CA_HEADERS, ca_rows(&list));
    Ok(ExitCode::SUCCESS)
}
