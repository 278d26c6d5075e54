//! `palisade supplier …`, `batch …`, `enrollment-token …`, `tpm-vendor …` and model firmware: what onboarding trusts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_http::views::*;
use serde_json::{Value, json};

use crate::Global;
use crate::output::{data, raw, say};

use super::{client, enc, parse_ttl};

/// `palisade model firmware …`
#[derive(Debug, Subcommand)]
pub enum FirmwareCmd {
    /// Approve a firmware image for a model.
    Add {
        /// The model.
        model: String,
        /// Version as devices report it.
        #[arg(value_name = "VERSION")]
        firmware_version: String,
        /// SHA-256 of the image (hex).
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        sha256: Option<String>,
        /// The image file (its SHA-256 is computed here).
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
    },
    /// List a model's approved firmware.
    List {
        /// The model.
        model: String,
    },
}

/// `palisade tpm-vendor …`
#[derive(Debug, Subcommand)]
pub enum TpmVendorCmd {
    /// Register a TPM vendor's EK-issuing CA (admin).
    Add {
        /// The CA certificate (PEM).
        #[arg(long, value_name = "FILE")]
        ca_cert: PathBuf,
    },
    /// List registered TPM vendor CAs.
    List,
}

/// Runs a TPM vendor command.
pub async fn tpm_vendor(g: &Global, cmd: TpmVendorCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let list: Vec<TpmVendorView> = match cmd {
        TpmVendorCmd::Add { ca_cert } => {
            let pem = std::fs::read_to_string(&ca_cert)
                .with_context(|| format!("reading {}", ca_cert.display()))?;
            let v: TpmVendorView = c
                .call(
                    Method::POST,
                    "/api/v1/tpm-vendors",
                    Some(&json!({ "ca_pem": pem })),
                )
                .await?;
            say(format!("registered TPM vendor CA {}", v.subject));
            vec![v]
        }
        TpmVendorCmd::List => c.call(Method::GET, "/api/v1/tpm-vendors", None).await?,
    };
    let rows = list
        .iter()
        .map(|v| vec![v.subject.clone(), v.sha256.clone(), v.created_at.clone()])
        .collect();
    data(g.json, &list, &["subject", "sha-256", "registered"], rows);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn firmware(
    g: &Global,
    c: &crate::client::Client,
    cmd: FirmwareCmd,
) -> anyhow::Result<()> {
    let list: Vec<FirmwareView> = match cmd {
        FirmwareCmd::Add {
            model,
            firmware_version: version,
            sha256,
            image,
        } => {
            let sha256 = match (sha256, image) {
                (Some(s), _) => s,
                (None, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    palisade_pki::sha256_hex(&bytes)
                }
                (None, None) => bail!("give --sha256 or --image"),
            };
            let f: FirmwareView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/models/{}/firmware", enc(&model)),
                    Some(&json!({ "version": version, "sha256": sha256 })),
                )
                .await?;
            say(format!(
                "approved firmware {} for model {}",
                f.version, f.model
            ));
            vec![f]
        }
        FirmwareCmd::List { model } => {
            c.call(
                Method::GET,
                &format!("/api/v1/models/{}/firmware", enc(&model)),
                None,
            )
            .await?
        }
    };
    let rows = list
        .iter()
        .map(|f| {
            vec![
                f.model.clone(),
                f.version.clone(),
                f.sha256.clone(),
                f.created_at.clone(),
            ]
        })
        .collect();
    data(
        g.json,
        &list,
        &["model", "version", "sha-256", "approved"],
        rows,
    );
    Ok(())
}

/// `palisade supplier …`
#[derive(Debug, Subcommand)]
pub enum SupplierCmd {
    /// Register a supplier's manufacturer CA (admin).
    Add {
        /// Supplier name.
        name: String,
        /// Manufacturer CA certificate (PEM).
        #[arg(long, value_name = "FILE")]
        ca_cert: PathBuf,
        /// Where it takes vulnerability reports (`mailto:…` or `https://…`).
        #[arg(long, value_name = "URI")]
        disclosure_contact: Option<String>,
    },
    /// Record where a supplier takes vulnerability reports (admin); `--clear` removes it.
    Contact {
        /// Supplier name.
        name: String,
        /// `mailto:…` or `https://…`.
        #[arg(required_unless_present = "clear", value_name = "URI")]
        contact: Option<String>,
        /// Remove the contact on record.
        #[arg(long, conflicts_with = "contact")]
        clear: bool,
    },
    /// List registered suppliers.
    List,
    /// A supplier's release-signing keys (public halves).
    Key {
        #[command(subcommand)]
        cmd: SupplierKeyCmd,
    },
}

/// `palisade supplier key …`
#[derive(Debug, Subcommand)]
pub enum SupplierKeyCmd {
    /// Register a release-signing public key (admin): PEM, Ed25519 or ECDSA P-256/P-384.
    Add {
        /// Supplier name.
        supplier: String,
        /// The public key (PEM `PUBLIC KEY`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// List a supplier's keys.
    List {
        /// Supplier name.
        supplier: String,
    },
}

/// `palisade batch …`
#[derive(Debug, Subcommand)]
pub enum BatchCmd {
    /// Verify a signed batch manifest and register its devices.
    Import {
        /// The manifest file from `palisade factory batch`.
        file: PathBuf,
    },
}

/// `palisade enrollment-token …`
#[derive(Debug, Subcommand)]
pub enum EnrollmentTokenCmd {
    /// Create a single-use enrolment token for a model; printed once (stdout).
    Create {
        /// The model the device joins.
        #[arg(long)]
        model: String,
        /// Lifetime: e.g. 30m, 24h, 7d [default: 24h].
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// Runs a supplier command.
pub async fn supplier(g: &Global, cmd: SupplierCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let list = match cmd {
        SupplierCmd::Add {
            name,
            ca_cert,
            disclosure_contact,
        } => {
            let pem = std::fs::read_to_string(&ca_cert)
                .with_context(|| format!("reading {}", ca_cert.display()))?;
            let s: SupplierView = c
                .call(
                    Method::POST,
                    "/api/v1/suppliers",
                    Some(&json!({ "name": name, "ca_pem": pem,
                                  "disclosure_contact": disclosure_contact })),
                )
                .await?;
            say(format!("registered supplier {}", s.name));
            vec![s]
        }
        SupplierCmd::Contact {
            name,
            contact,
            clear,
        } => {
            let s: SupplierView = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/suppliers/{}/disclosure-contact", enc(&name)),
                    Some(&json!({ "disclosure_contact": if clear { None } else { contact } })),
                )
                .await?;
            say(match &s.disclosure_contact {
                Some(x) => format!("{} takes vulnerability reports at {x}", s.name),
                None => format!("{} has no disclosure contact on record", s.name),
            });
            vec![s]
        }
        SupplierCmd::List => c.call(Method::GET, "/api/v1/suppliers", None).await?,
        SupplierCmd::Key { cmd } => {
            let keys: Vec<SupplierKeyView> = match cmd {
                SupplierKeyCmd::Add {
                    supplier,
                    public_key,
                } => {
                    let pem = std::fs::read_to_string(&public_key)
                        .with_context(|| format!("reading {}", public_key.display()))?;
                    let k: SupplierKeyView = c
                        .call(
                            Method::POST,
                            &format!("/api/v1/suppliers/{}/keys", enc(&supplier)),
                            Some(&json!({ "public_key_pem": pem })),
                        )
                        .await?;
                    say(format!("registered key {} for {}", k.keyid, k.supplier));
                    vec![k]
                }
                SupplierKeyCmd::List { supplier } => {
                    c.call(
                        Method::GET,
                        &format!("/api/v1/suppliers/{}/keys", enc(&supplier)),
                        None,
                    )
                    .await?
                }
            };
            let rows = keys
                .iter()
                .map(|k| vec![k.supplier.clone(), k.keyid.clone(), k.created_at.clone()])
                .collect();
            data(g.json, &keys, &["supplier", "key id", "registered"], rows);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.ca_sha256.clone(),
                s.disclosure_contact.clone().unwrap_or_else(|| "-".into()),
                s.created_at.clone(),
            ]
        })
        .collect();
    data(
        g.json,
        &list,
        &["supplier", "ca sha-256", "disclosure contact", "registered"],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a batch command.
pub async fn batch(g: &Global, cmd: BatchCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        BatchCmd::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (status, body) = c
                .send_bytes(
                    Method::POST,
                    "/api/v1/batches",
                    Some(("application/json", bytes.into())),
                )
                .await?;
            if !status.is_success() {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                bail!(
                    "{} (HTTP {})",
                    v["error"].as_str().unwrap_or("batch import failed"),
                    status.as_u16()
                );
            }
            let b: BatchView = serde_json::from_slice(&body)?;
            say(format!(
                "imported batch {} of {} {} devices from {}",
                &b.id[..16.min(b.id.len())],
                b.device_count,
                b.model,
                b.supplier
            ));
            let rows = vec![vec![
                b.id.clone(),
                b.supplier.clone(),
                b.model.clone(),
                b.device_count.to_string(),
            ]];
            data(g.json, &b, &["batch", "supplier", "model", "devices"], rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an enrollment-token command.
pub async fn enrollment_token(g: &Global, cmd: EnrollmentTokenCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        EnrollmentTokenCmd::Create { model, ttl } => {
            let secs = parse_ttl(&ttl)?;
            let t: CreatedEnrollmentToken = c
                .call(
                    Method::POST,
                    "/api/v1/enrollment-tokens",
                    Some(&json!({ "model": model, "ttl_secs": secs })),
                )
                .await?;
            say(format!(
                "created a single-use enrolment token for model {} (expires {}); it is shown only now:",
                t.model, t.expires_at
            ));
            if g.json {
                data(true, &t, &[], vec![]);
            } else {
                raw(&format!("{}\n", t.token));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
