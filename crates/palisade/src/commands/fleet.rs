//! `palisade model …` and `palisade device …`: models, devices, their state, commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use hyper::Method;
use palisade_http::views::*;
use serde_json::{Value, json};

use crate::Global;
use crate::output::{data, raw, say};

use super::certs::{CERT_HEADERS, cert_rows};
use super::onboarding::{FirmwareCmd, firmware};
use super::{client, dash, enc};

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
    /// A model's support end and what it does to its devices: an alert
    /// --notify-days before, confinement to the control plane and update
    /// traffic from --restrict-at, decommissioning at --retire-at (with a
    /// verified wipe if --retire-wipe). Without options: show it.
    Support {
        /// Model id.
        id: String,
        /// End of support: YYYY-MM-DD (end of that day, UTC) or RFC 3339.
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Alert this many days before the support end.
        #[arg(long, value_name = "DAYS")]
        notify_days: Option<u32>,
        /// Confine the devices from this date.
        #[arg(long, value_name = "DATE")]
        restrict_at: Option<String>,
        /// Decommission the devices on this date.
        #[arg(long, value_name = "DATE")]
        retire_at: Option<String>,
        /// Retire with a verified wipe.
        #[arg(long)]
        retire_wipe: bool,
    },
    /// Firmware images approved for a model (what measured boot must show).
    Firmware {
        #[command(subcommand)]
        cmd: FirmwareCmd,
    },
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
    /// Decommission a device: certificates revoked, sessions closed, out of its
    /// site's policy and its rollouts; its id becomes a tombstone. With --wipe
    /// the device is first sent a signed wipe command and answers with a
    /// receipt signed by its identity key (wipe: verified); without an answer
    /// by the deadline it is decommissioned all the same (wipe: unconfirmed).
    Decommission {
        /// Device id.
        id: String,
        /// Send a signed wipe command (crypto-erase of the device's data and
        /// destruction of its keys).
        #[arg(long)]
        wipe: bool,
        /// Why (kept and audited).
        #[arg(long, default_value = "decommissioned by an operator")]
        reason: String,
        /// With --wipe: wait up to this many seconds for the receipt, showing
        /// progress (exit 0 verified, 4 still pending, 5 unconfirmed).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// A decommissioned device's record: who, why, and its wipe (the receipt
    /// and what it destroyed).
    Decommissioning {
        /// Device id.
        id: String,
    },
    /// Lift a decommissioned device's tombstone (admin): it is registered
    /// again, with no credentials, and must enrol afresh.
    Reinstate {
        /// Device id.
        id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
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
        ModelCmd::Support {
            id,
            until,
            notify_days,
            restrict_at,
            retire_at,
            retire_wipe,
        } => {
            let path = format!("/api/v1/models/{}/support", enc(&id));
            let set = until.is_some()
                || notify_days.is_some()
                || restrict_at.is_some()
                || retire_at.is_some()
                || retire_wipe;
            let v: SupportView = if set {
                c.call(
                    Method::PUT,
                    &path,
                    Some(&json!({
                        "until": until, "notify_days": notify_days.unwrap_or(0),
                        "restrict_at": restrict_at, "retire_at": retire_at,
                        "retire_wipe": retire_wipe,
                    })),
                )
                .await?
            } else {
                c.call(Method::GET, &path, None).await?
            };
            data(
                g.json,
                &v,
                &[
                    "model",
                    "support until",
                    "notice",
                    "restrict at",
                    "retire at",
                    "stage",
                    "since",
                ],
                vec![vec![
                    v.model.clone(),
                    dash(v.support_until.as_deref()),
                    format!("{} d", v.notify_days),
                    dash(v.restrict_at.as_deref()),
                    format!(
                        "{}{}",
                        dash(v.retire_at.as_deref()),
                        if v.retire_wipe { " (wipe)" } else { "" }
                    ),
                    v.stage.clone(),
                    dash(v.stage_since.as_deref()),
                ]],
            );
        }
        ModelCmd::Firmware { cmd } => firmware(g, &c, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn show_models(json: bool, list: &[ModelView]) {
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

pub(crate) fn device_rows(list: &[DeviceView]) -> Vec<Vec<String>> {
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

pub(crate) const DEVICE_HEADERS: [&str; 5] = ["device", "model", "state", "hw serial", "updated"];

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
        DeviceCmd::Decommission {
            id,
            wipe,
            reason,
            wait,
        } => {
            let mut r: DecommissionView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/decommission", enc(&id)),
                    Some(&json!({ "reason": reason, "wipe": wipe })),
                )
                .await?;
            if r.wipe == "pending" {
                say(format!(
                    "device {} is quarantined and sent a signed wipe command; it is decommissioned when its receipt arrives, or unconfirmed at {}",
                    r.device,
                    r.deadline.as_deref().unwrap_or("the deadline")
                ));
            } else {
                say(format!(
                    "device {} is decommissioned (wipe: {})",
                    r.device, r.wipe
                ));
            }
            if let Some(secs) = wait.filter(|_| r.wipe == "pending") {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message(format!("waiting for {}'s wipe receipt", r.device));
                let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                while r.wipe == "pending" && std::time::Instant::now() < until {
                    bar.tick();
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    r = c
                        .call(
                            Method::GET,
                            &format!("/api/v1/devices/{}/decommission", enc(&id)),
                            None,
                        )
                        .await?;
                }
                bar.finish_and_clear();
                say(format!("wipe: {} {}", r.wipe, r.detail));
            }
            let code = match r.wipe.as_str() {
                "pending" if wait.is_some() => 4,
                "unconfirmed" if wipe => 5,
                _ => 0,
            };
            data(g.json, &r, &DECOMMISSION_HEADERS, decommission_rows(&r));
            return Ok(ExitCode::from(code));
        }
        DeviceCmd::Decommissioning { id } => {
            let r: DecommissionView = c
                .call(
                    Method::GET,
                    &format!("/api/v1/devices/{}/decommission", enc(&id)),
                    None,
                )
                .await?;
            data(g.json, &r, &DECOMMISSION_HEADERS, decommission_rows(&r));
            if !g.json {
                for d in &r.destroyed {
                    say(format!("destroyed: {d}"));
                }
            }
        }
        DeviceCmd::Reinstate { id, reason } => {
            let d: DeviceView = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{}/reinstate", enc(&id)),
                    Some(&json!({ "reason": reason })),
                )
                .await?;
            say(format!(
                "device {} is {} again: it must enrol afresh",
                d.id, d.state
            ));
            let rows = device_rows(std::slice::from_ref(&d));
            data(g.json, &d, &DEVICE_HEADERS, rows);
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

const DECOMMISSION_HEADERS: [&str; 6] = ["device", "by", "reason", "requested", "wipe", "detail"];

fn decommission_rows(r: &DecommissionView) -> Vec<Vec<String>> {
    vec![vec![
        r.device.clone(),
        r.actor.clone(),
        r.reason.clone(),
        r.requested.clone(),
        r.wipe.clone(),
        r.detail.clone(),
    ]]
}

pub(crate) const COMMAND_HEADERS: [&str; 6] =
    ["command", "name", "args", "status", "created", "result"];

pub(crate) fn command_rows(list: &[CommandView]) -> Vec<Vec<String>> {
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
