//! The operator commands: each is one or a few API calls, with tables for people
//! and `--json` for scripts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_audit::{NoteVerifier, StoredCheckpoint, Verifier, VerifyReport, verify_inclusion};
use palisade_http::views::*;
use serde_json::{Value, json};

use crate::Global;
use crate::client::Client;
use crate::output::{Progress, data, raw, say};

fn data_dir(g: &Global) -> PathBuf {
    g.data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("palisade-data"))
}

/// Builds the API client from options, environment and the data directory.
pub fn client(g: &Global) -> anyhow::Result<Client> {
    let dir = data_dir(g);
    let url = match &g.url {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(dir.join("url"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "https://127.0.0.1:8443".to_owned()),
    };
    let ca = g.ca.clone().unwrap_or_else(|| dir.join("ca/root.pem"));
    let token = match &g.token {
        Some(t) => Some(t.trim().to_owned()),
        None => std::fs::read_to_string(dir.join("admin-token"))
            .ok()
            .map(|s| s.trim().to_owned()),
    };
    Client::new(&url, &ca, token)
}

fn dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    // Path segments and query values from the command line: keep them from
    // changing the request's shape.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `palisade model …`
#[derive(Debug, Subcommand)]
pub enum ModelCmd {
    /// Add a device model.
    Add {
        /// Model id (lower-case letters, digits, '.', '_', '-').
        id: String,
        /// Free-text description.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime of device certificates for this model, in days [default: the server's, 30].
        #[arg(long)]
        cert_validity_days: Option<u32>,
        /// Each device needs `palisade device approve` before it is issued a certificate.
        #[arg(long)]
        approval_required: bool,
        /// Allowed key types, comma-separated [default: ecdsa-p256,ecdsa-p384,ed25519].
        #[arg(long, value_delimiter = ',')]
        key_types: Vec<String>,
        /// `tpm`: devices must prove a TPM-resident key at enrolment (EK/AK
        /// attestation) and their booted firmware is checked by TPM quotes.
        #[arg(long, value_parser = ["none", "tpm"], default_value = "none")]
        attestation: String,
        /// The supplier that builds its firmware (its registered keys sign releases).
        #[arg(long)]
        supplier: Option<String>,
        /// End of support: YYYY-MM-DD (end of that day, UTC) or an RFC 3339 time.
        #[arg(long, value_name = "DATE")]
        support_until: Option<String>,
        /// Days after a security release by which every device must run it.
        #[arg(long, value_name = "DAYS")]
        security_update_days: Option<u32>,
    },
    /// List device models.
    List,
    /// Firmware images approved for a model (what measured boot must show).
    Firmware {
        #[command(subcommand)]
        cmd: FirmwareCmd,
    },
}

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

async fn firmware(g: &Global, c: &crate::client::Client, cmd: FirmwareCmd) -> anyhow::Result<()> {
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

/// `palisade device …`
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Register a device.
    Register {
        /// Device id: becomes the certificate CN.
        id: String,
        /// Its model.
        #[arg(long)]
        model: String,
        /// Manufacturer serial number.
        #[arg(long)]
        hardware_serial: Option<String>,
    },
    /// List devices.
    List {
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
        /// Only this state (registered, enrolled, active, quarantined, decommissioned).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one device and its certificates.
    Show {
        /// Device id.
        id: String,
    },
    /// Send a command to a device (delivered over its MQTT session; tracked).
    Command {
        /// Device id.
        id: String,
        /// Command name.
        name: String,
        /// Arguments (passed through, including ones starting with '-').
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List a device's commands and their delivery and acknowledgement.
    Commands {
        /// Device id.
        id: String,
    },
    /// Approve a device whose model requires approval before enrolment.
    Approve {
        /// Device id.
        id: String,
    },
    /// Move a device to another lifecycle state (decommissioned revokes its certificates).
    SetState {
        /// Device id.
        id: String,
        /// enrolled, active, quarantined or decommissioned.
        state: String,
    },
    /// Devices past their model's end of support, and devices not running their
    /// model's latest security release within the model's update target.
    Lifecycle,
    /// Set a device's tags (replacing its previous ones); rollouts select by tag.
    Tag {
        /// Device id.
        id: String,
        /// Its tags (none: remove all).
        tags: Vec<String>,
    },
    /// A device's forensic timeline: enrolment, sessions and source addresses,
    /// flow summaries, firmware changes, attestation, alerts and audit entries.
    Timeline {
        /// Device id.
        id: String,
        /// How far back: 7d, 12h, 30m.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Write the timeline with audit inclusion proofs to FILE (verify it
        /// later with `palisade audit verify-timeline FILE`).
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Assign a release to a device: a director assignment, signed online
    /// (printed as JSON).
    Assign {
        /// Device id.
        id: String,
        /// The release version (of the device's model).
        #[arg(long = "release-version", value_name = "VERSION")]
        release_version: String,
    },
}

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

/// `palisade audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the whole log against its signed checkpoints; name the first
    /// entry that was edited, deleted, inserted or reordered.
    Verify {
        /// Read this SQLite database directly (offline) instead of the API.
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
    /// Fetch and check the inclusion proof of one entry.
    Proof {
        /// Entry index.
        index: u64,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
    /// Check an exported device timeline (`palisade device timeline --export`):
    /// each audit entry in it is proven in the signed log. Works offline.
    VerifyTimeline {
        /// The exported timeline.
        file: PathBuf,
        /// Checkpoint verifier key file [default: DATA_DIR/audit/log.pub].
        #[arg(long, value_name = "FILE")]
        log_key: Option<PathBuf>,
    },
}

/// Runs a model command.
pub async fn model(g: &Global, cmd: ModelCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        ModelCmd::Add {
            id,
            description,
            cert_validity_days,
            approval_required,
            key_types,
            attestation,
            supplier,
            support_until,
            security_update_days,
        } => {
            let key_types = (!key_types.is_empty()).then_some(key_types);
            let m: ModelView = c
                .call(
                    Method::POST,
                    "/api/v1/models",
                    Some(&json!({ "id": id, "description": description,
                        "cert_validity_days": cert_validity_days,
                        "approval_required": approval_required,
                        "allowed_key_types": key_types,
                        "attestation": attestation,
                        "supplier": supplier,
                        "support_until": support_until,
                        "security_update_days": security_update_days })),
                )
                .await?;
            say(format!("added model {}", m.id));
            show_models(g.json, &[m]);
        }
        ModelCmd::List => {
            let list: Vec<ModelView> = c.call(Method::GET, "/api/v1/models", None).await?;
            show_models(g.json, &list);
        }
        ModelCmd::Firmware { cmd } => firmware(g, &c, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn show_models(json: bool, list: &[ModelView]) {
    let rows = list
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.cert_validity_days.to_string(),
                m.created_at.clone(),
                m.description.clone(),
            ]
        })
        .collect();
    data(
        json,
        &list,
        &["model", "cert days", "created", "description"],
        rows,
    );
}

fn device_rows(list: &[DeviceView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.model.clone(),
                d.state.clone(),
                dash(d.hardware_serial.as_deref()),
                d.updated_at.clone(),
            ]
        })
        .collect()
}

const DEVICE_HEADERS: [&str; 5] = ["device", "model", "state", "hw serial", "updated"];

/// Runs a device command.
pub async fn device(g: &Global, cmd: DeviceCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        DeviceCmd::Register {
            id,
            model,
            hardware_serial,
        } => {
            let d: DeviceView = c
                .call(
                    Method::POST,
                    "/api/v1/devices",
                    Some(&json!({ "id": id, "model": model, "hardware_serial": hardware_serial })),
                )
                .await?;
            say(format!("registered device {}", d.id));
            let rows = device_rows(std::slice::from_ref(&d));
            data(g.json, &d, &DEVICE_HEADERS, rows);
        }
        DeviceCmd::List { model, state } => {
            let mut q = vec![];
            if let Some(m) = model {
                q.push(format!("model={}", enc(&m)));
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(&s)));
            }
            let list: Vec<DeviceView> = c
                .call(
                    Method::GET,
                    &format!("/api/v1/devices?{}", q.join("&")),
                    None,
                )
                .await?;
            data(g.json, &list, &DEVICE_HEADERS, device_rows(&list));
        }
        DeviceCmd::Show { id } => {
            let d: DeviceDetail = c
                .call(Method::GET, &format!("/api/v1/devices/{}", enc(&id)), None)
                .await?;
            if !g.json {
                say(format!(
                    "device {}  model {}  state {}  hardware serial {}",
                    d.device.id,
                    d.device.model,
                    d.device.state,
                    dash(d.device.hardware_serial.as_deref())
                ));
            }
            let rows = cert_rows(&d.certificates);
            data(g.json, &d, &CERT_HEADERS, rows);
        }
        DeviceCmd::Command { id, name, args } => {
            let v: CommandView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/commands", enc(&id)),
                    Some(&json!({ "name": name, "args": args })),
                )
                .await?;
            say(format!("command {} to {}: {}", v.id, v.device, v.status));
            let rows = command_rows(std::slice::from_ref(&v));
            data(g.json, &v, &COMMAND_HEADERS, rows);
        }
        DeviceCmd::Commands { id } => {
            let list: Vec<CommandView> = c
                .call(
                    Method::GET,
                    &format!("/api/v1/devices/{}/commands", enc(&id)),
                    None,
                )
                .await?;
            data(g.json, &list, &COMMAND_HEADERS, command_rows(&list));
        }
        DeviceCmd::Approve { id } => {
            let d: DeviceView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/approve", enc(&id)),
                    None,
                )
                .await?;
            say(format!("approved device {} for enrolment", d.id));
            let rows = device_rows(std::slice::from_ref(&d));
            data(g.json, &d, &DEVICE_HEADERS, rows);
        }
        DeviceCmd::Timeline { id, since, export } => {
            return crate::monitoring::timeline(g, &id, &since, export.as_deref()).await;
        }
        DeviceCmd::Tag { id, tags } => {
            let v: Value = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/devices/{}/tags", enc(&id)),
                    Some(&json!({ "tags": tags })),
                )
                .await?;
            say(format!("device {id} tags: {}", tags.join(", ")));
            if g.json {
                data(true, &v, &[], vec![]);
            }
        }
        DeviceCmd::Assign {
            id,
            release_version,
        } => {
            let v: Value = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/assignment", enc(&id)),
                    Some(&json!({ "version": release_version })),
                )
                .await?;
            raw(&serde_json::to_string_pretty(&v)?);
        }
        DeviceCmd::Lifecycle => {
            let l: LifecycleView = c.call(Method::GET, "/api/v1/lifecycle", None).await?;
            if g.json {
                raw(&serde_json::to_string_pretty(&l)?);
            } else {
                say(format!(
                    "{} device(s) past end of support",
                    l.past_support.len()
                ));
                let rows = l
                    .past_support
                    .iter()
                    .map(|p| vec![p.device.clone(), p.model.clone(), p.support_ended.clone()])
                    .collect();
                data(
                    false,
                    &l.past_support,
                    &["device", "model", "support ended"],
                    rows,
                );
                say(format!(
                    "{} device(s) behind their security-update target",
                    l.behind_target.len()
                ));
                let rows = l
                    .behind_target
                    .iter()
                    .map(|b| {
                        vec![
                            b.device.clone(),
                            b.model.clone(),
                            dash(b.running.as_deref()),
                            b.running_security_version
                                .map_or("unknown".into(), |v| v.to_string()),
                            b.required_security_version.to_string(),
                            b.due.clone(),
                        ]
                    })
                    .collect();
                data(
                    false,
                    &l.behind_target,
                    &["device", "model", "running", "security", "required", "due"],
                    rows,
                );
            }
        }
        DeviceCmd::SetState { id, state } => {
            let d: DeviceView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/state", enc(&id)),
                    Some(&json!({ "state": state })),
                )
                .await?;
            say(format!("device {} is now {}", d.id, d.state));
            let rows = device_rows(std::slice::from_ref(&d));
            data(g.json, &d, &DEVICE_HEADERS, rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

const COMMAND_HEADERS: [&str; 6] = ["command", "name", "args", "status", "created", "result"];

fn command_rows(list: &[CommandView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.name.clone(),
                c.args.join(" "),
                c.status.clone(),
                c.created_at.clone(),
                dash(c.result.as_deref()),
            ]
        })
        .collect()
}

const CERT_HEADERS: [&str; 6] = [
    "serial",
    "profile",
    "device",
    "not after",
    "status",
    "subject",
];

fn cert_rows(list: &[CertView]) -> Vec<Vec<String>> {
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

fn token_rows(list: &[TokenView]) -> Vec<Vec<String>> {
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

const TOKEN_HEADERS: [&str; 6] = ["id", "operator", "role", "created", "expires", "revoked"];

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

/// Checks an inclusion proof: the checkpoint's signature under the pinned
/// key, and the entry's path to its root. Returns the entry and the size of
/// the log the checkpoint signs.
pub fn check_inclusion(
    key: &NoteVerifier,
    p: &InclusionView,
) -> anyhow::Result<(palisade_audit::Entry, u64)> {
    let cp = key
        .verify(&p.checkpoint, None)
        .context("the checkpoint's signature does not verify with the pinned key")?;
    let path: Vec<[u8; 32]> = p
        .path
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| v.try_into().ok())
                .context("malformed proof hash")
        })
        .collect::<anyhow::Result<_>>()?;
    let entry = p.entry.to_entry();
    verify_inclusion(&entry.digest(), entry.index, cp.size, &cp.root, &path).with_context(|| {
        format!(
            "the inclusion proof of entry {} does not verify: the entry is not in the signed log",
            entry.index
        )
    })?;
    Ok((entry, cp.size))
}

/// The pinned checkpoint verifier key.
pub fn load_vkey(g: &Global, path: Option<&Path>) -> anyhow::Result<Option<NoteVerifier>> {
    let default = data_dir(g).join("audit/log.pub");
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default, false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(NoteVerifier::parse(text.trim()).with_context(
            || format!("{} is not a checkpoint verifier key", path.display()),
        )?)),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

const PAGE: u32 = 2000;

/// Runs an audit command.
pub async fn audit(g: &Global, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { db, log_key } => {
            let pinned = load_vkey(g, log_key.as_deref())?;
            let report = match db {
                Some(path) => verify_db(&path, pinned).await?,
                None => verify_api(g, pinned).await?,
            };
            report_verify(g.json, &report)
        }
        AuditCmd::VerifyTimeline { file, log_key } => {
            crate::monitoring::verify_timeline(g, &file, log_key.as_deref()).await
        }
        AuditCmd::Proof { index, log_key } => {
            let c = client(g)?;
            let key = match load_vkey(g, log_key.as_deref())? {
                Some(k) => k,
                None => bail!(
                    "no checkpoint verifier key: pass --log-key FILE (the server's audit/log.pub)"
                ),
            };
            let p: InclusionView = c
                .call(
                    Method::GET,
                    &format!("/api/v1/audit/proof/inclusion?index={index}"),
                    None,
                )
                .await?;
            let (entry, size) = check_inclusion(&key, &p)?;
            if entry.index != index {
                bail!(
                    "the server answered with entry {} instead of {index}",
                    entry.index
                );
            }
            let cp_size = size;
            say(format!(
                "entry {index} ({} {} by {}) is included in the signed log of {} entries",
                entry.action, entry.subject, entry.actor, cp_size
            ));
            data(
                g.json,
                &p,
                &["index", "action", "subject", "actor", "checkpoint size"],
                vec![vec![
                    index.to_string(),
                    entry.action,
                    entry.subject,
                    entry.actor,
                    cp_size.to_string(),
                ]],
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn verify_db(path: &Path, pinned: Option<NoteVerifier>) -> anyhow::Result<VerifyReport> {
    let Some(key) = pinned else {
        bail!(
            "no checkpoint verifier key: pass --log-key FILE (audit/log.pub of the data directory)"
        );
    };
    let reader = palisade_store::SqliteReader::open_read_only(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut cps: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = cps.last().map_or(0, |c| c.size + 1);
        let page = reader.audit_checkpoints(from, PAGE).await?;
        let done = page.len() < PAGE as usize;
        cps.extend(page);
        if done {
            break;
        }
    }
    let total = cps.last().map_or(0, |c| c.size);
    let mut v = Verifier::new(&key, Some(key.name()), &cps);
    let progress = Progress::new("verifying audit entries");
    let mut from = 0;
    loop {
        let page = reader.audit_entries(from, PAGE).await?;
        let n = page.len();
        for e in page {
            from = e.entry.index + 1;
            v.push(e.entry, e.recorded_digest);
        }
        progress.set(from, total);
        if n < PAGE as usize {
            break;
        }
    }
    progress.finish();
    reader.close().await;
    Ok(v.finish())
}

async fn verify_api(g: &Global, pinned: Option<NoteVerifier>) -> anyhow::Result<VerifyReport> {
    let c = client(g)?;
    let head: AuditHeadView = c
        .call(Method::GET, "/api/v1/audit/checkpoint", None)
        .await?;
    let key = match pinned {
        Some(k) => {
            if k.to_vkey() != head.verifier_key {
                say(
                    "warning: the server presents a different checkpoint key than the pinned one; using the pinned key",
                );
            }
            k
        }
        None => {
            say(
                "warning: no pinned checkpoint key (--log-key); trusting the key the server presents",
            );
            NoteVerifier::parse(&head.verifier_key)
                .context("the server's verifier key is malformed")?
        }
    };
    let mut cps: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = cps.last().map_or(0, |c| c.size + 1);
        let page: Vec<CheckpointView> = c
            .call(
                Method::GET,
                &format!("/api/v1/audit/checkpoints?from={from}&limit={PAGE}"),
                None,
            )
            .await?;
        let done = page.len() < PAGE as usize;
        cps.extend(page.into_iter().map(|p| StoredCheckpoint {
            size: p.size,
            note: p.note,
        }));
        if done {
            break;
        }
    }
    let mut v = Verifier::new(&key, Some(key.name()), &cps);
    let progress = Progress::new("verifying audit entries");
    let mut from = 0u64;
    loop {
        let page: Vec<AuditEntryView> = c
            .call(
                Method::GET,
                &format!("/api/v1/audit/entries?from={from}&limit={PAGE}"),
                None,
            )
            .await?;
        let n = page.len();
        for e in &page {
            let digest: [u8; 32] = hex::decode(&e.recorded_digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .context("malformed digest from the server")?;
            from = e.index + 1;
            v.push(e.to_entry(), digest);
        }
        progress.set(from, head.size);
        if n < PAGE as usize {
            break;
        }
    }
    progress.finish();
    Ok(v.finish())
}

fn report_verify(json: bool, r: &VerifyReport) -> anyhow::Result<ExitCode> {
    let latest = r.latest.as_ref().map_or(0, |c| c.size);
    let value = json!({
        "ok": r.problem.is_none(),
        "entries": r.entries,
        "checkpoints": r.checkpoints,
        "latest_verified_size": latest,
        "first_bad_entry": r.problem.as_ref().map(|p| json!({
            "index": p.index, "kind": p.kind.to_string(), "detail": p.detail })),
    });
    if json {
        data(true, &value, &[], vec![]);
    }
    match &r.problem {
        None => {
            say(format!(
                "audit log verified: {} entries, {} signed checkpoints, newest covers {latest}",
                r.entries, r.checkpoints
            ));
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            say(format!(
                "audit log verification FAILED: first bad entry is #{} ({}): {}",
                p.index, p.kind, p.detail
            ));
            Ok(ExitCode::FAILURE)
        }
    }
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

/// `palisade release …`
#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Upload a firmware image with its SBOM and signed provenance; the release is
    /// accepted only if it passes the supply-chain gate.
    Upload {
        /// The model.
        #[arg(long)]
        model: String,
        /// Version string.
        #[arg(long = "release-version", value_name = "VERSION")]
        release_version: String,
        /// Anti-rollback floor (never below an earlier release of the model).
        #[arg(long)]
        security_version: u64,
        /// Hardware revisions it runs on (comma-separated) [default: all].
        #[arg(long, value_delimiter = ',')]
        hardware: Vec<String>,
        /// The image.
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        /// CycloneDX SBOM (JSON).
        #[arg(long, value_name = "FILE")]
        sbom: PathBuf,
        /// DSSE envelope of an in-toto SLSA provenance, signed by the supplier.
        #[arg(long, value_name = "FILE")]
        provenance: PathBuf,
    },
    /// List releases.
    List {
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
    },
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// Runs a release command.
pub async fn release(g: &Global, cmd: ReleaseCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let list: Vec<ReleaseView> = match cmd {
        ReleaseCmd::Upload {
            model,
            release_version,
            security_version,
            hardware,
            image,
            sbom,
            provenance,
        } => {
            let sbom = read_json(&sbom)?;
            let provenance = read_json(&provenance)?;
            let bytes =
                std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let total = bytes.len() as u64;
            let progress = Progress::new("uploading the image (bytes)");
            progress.set(0, total);
            let (status, body) = c
                .send_bytes(
                    Method::PUT,
                    "/api/v1/blobs",
                    Some(("application/octet-stream", bytes.into())),
                )
                .await?;
            progress.set(total, total);
            progress.finish();
            if !status.is_success() {
                bail!(
                    "uploading {} failed ({status}): {}",
                    image.display(),
                    String::from_utf8_lossy(&body).trim()
                );
            }
            let blob: BlobView = serde_json::from_slice(&body)?;
            let hardware = (!hardware.is_empty()).then_some(hardware);
            let r: ReleaseView = c
                .call(
                    Method::POST,
                    "/api/v1/releases",
                    Some(&json!({
                        "model": model, "version": release_version,
                        "security_version": security_version, "hardware": hardware,
                        "image_sha256": blob.sha256, "sbom": sbom, "provenance": provenance,
                    })),
                )
                .await?;
            say(format!(
                "released {} {} (security version {}, signed by {})",
                r.model, r.version, r.security_version, r.signed_by
            ));
            vec![r]
        }
        ReleaseCmd::List { model } => {
            let q = model
                .map(|m| format!("?model={}", enc(&m)))
                .unwrap_or_default();
            c.call(Method::GET, &format!("/api/v1/releases{q}"), None)
                .await?
        }
    };
    let rows = list
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.version.clone(),
                r.security_version.to_string(),
                r.image_sha256.clone(),
                r.builder_id.clone(),
                r.created_at.clone(),
            ]
        })
        .collect();
    data(
        g.json,
        &list,
        &[
            "model",
            "version",
            "security",
            "image sha-256",
            "builder",
            "released",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
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

/// Parses `90s`, `30m`, `24h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration such as 30m, 24h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown duration unit {other:?}: use s, m, h or d"),
    };
    Ok(n.saturating_mul(mult))
}

/// Runs a supplier command.
pub async fn supplier(g: &Global, cmd: SupplierCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let list = match cmd {
        SupplierCmd::Add { name, ca_cert } => {
            let pem = std::fs::read_to_string(&ca_cert)
                .with_context(|| format!("reading {}", ca_cert.display()))?;
            let s: SupplierView = c
                .call(
                    Method::POST,
                    "/api/v1/suppliers",
                    Some(&json!({ "name": name, "ca_pem": pem })),
                )
                .await?;
            say(format!("registered supplier {}", s.name));
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
        .map(|s| vec![s.name.clone(), s.ca_sha256.clone(), s.created_at.clone()])
        .collect();
    data(
        g.json,
        &list,
        &["supplier", "ca sha-256", "registered"],
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
