//! `palisade site …` and `palisade policy …`: sites and segments, where devices
//! sit, edge gateways, and models' MUD policies.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use crate::Global;
use crate::commands::{client, enc};
use crate::output::{data, say};

/// `palisade site …`
#[derive(Debug, Subcommand)]
pub enum SiteCmd {
    /// Create or change a site from a JSON file: {"resolver", "control_plane":
    /// [["ip", port]], "model_segments"?: {"model": "segment"}, "segments": [{"name", "interface", "subnet", "vlan"?,
    /// "quarantine"?}], "controllers"?, "my_controller"?}.
    Set {
        /// Site name.
        name: String,
        /// The specification (JSON).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List sites with their bundle version and what each edge applied.
    List,
    /// One site.
    Show {
        /// Site name.
        name: String,
    },
    /// Register an enrolled identity as the site's edge gateway.
    EdgeAdd {
        /// Site name.
        name: String,
        /// The edge's id (enrolled with `palisade-edge enroll`).
        edge: String,
    },
    /// Hosts the site's edges and flow records see that map to no enrolled
    /// device (first/last seen, traffic, where seen); block or adopt one.
    Unmanaged {
        /// Site name.
        name: String,
        /// Cut this address off at the site's edges.
        #[arg(long, value_name = "ADDRESS", conflicts_with_all = ["unblock", "adopt"])]
        block: Option<String>,
        /// Lift a block.
        #[arg(long, value_name = "ADDRESS", conflicts_with = "adopt")]
        unblock: Option<String>,
        /// Register this address as a device (with --device and --model) and
        /// place it there; the device still has to enrol.
        #[arg(long, value_name = "ADDRESS", requires_all = ["device", "model"])]
        adopt: Option<String>,
        /// The adopted device's id.
        #[arg(long)]
        device: Option<String>,
        /// The adopted device's model.
        #[arg(long)]
        model: Option<String>,
    },
    /// Place a device at a site: segment, address, optional policy overrides.
    Place {
        /// Device id.
        device: String,
        /// Site name.
        #[arg(long)]
        site: String,
        /// Segment name [default: the site's segment for the device's model
        /// (`model_segments` in the site's specification)].
        #[arg(long)]
        segment: Option<String>,
        /// The device's address there.
        #[arg(long)]
        address: String,
        /// Rules added to the model's policy (JSON {"from_device": [...], "to_device": [...]}).
        #[arg(long, value_name = "FILE")]
        overrides: Option<PathBuf>,
        /// Accept overrides that open everything (audited).
        #[arg(long)]
        allow_open: bool,
    },
}

/// `palisade policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Import a model's MUD file (RFC 8520) as its network policy.
    Mud {
        /// Model id.
        model: String,
        /// The MUD file (JSON).
        #[arg(long, value_name = "FILE", conflicts_with = "envelope")]
        file: Option<PathBuf>,
        /// A DSSE envelope (payload type application/mud+json) holding the MUD
        /// file, signed by the model's supplier.
        #[arg(long, value_name = "FILE")]
        envelope: Option<PathBuf>,
        /// Accept a policy that allows any address on any port (audited).
        #[arg(long)]
        allow_open: bool,
    },
    /// A model's compiled policy.
    Show {
        /// Model id.
        model: String,
    },
}

fn read_json(p: &PathBuf) -> anyhow::Result<Value> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("{} is not JSON", p.display()))
}

fn site_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            let edges = s["edges"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|e| {
                            format!(
                                "{} v{}",
                                e["edge"].as_str().unwrap_or(""),
                                e["applied_version"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![
                s["name"].as_str().unwrap_or("").to_owned(),
                s["bundle_version"].to_string(),
                s["devices"].to_string(),
                s["quarantined"].to_string(),
                edges,
            ]
        })
        .collect()
}

const SITE_HEADERS: [&str; 5] = [
    "site",
    "bundle version",
    "devices",
    "quarantined",
    "edges (applied)",
];

/// Runs a site command.
pub async fn site(g: &Global, cmd: SiteCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        SiteCmd::Set { name, file } => {
            let spec = read_json(&file)?;
            let v: Value = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/sites/{}", enc(&name)),
                    Some(&spec),
                )
                .await?;
            say(format!(
                "site {name} set (bundle version {})",
                v["bundle_version"]
            ));
            data(
                g.json,
                &v,
                &SITE_HEADERS,
                site_rows(std::slice::from_ref(&v)),
            );
        }
        SiteCmd::List => {
            let v: Vec<Value> = c.call(Method::GET, "/api/v1/sites", None).await?;
            data(g.json, &v, &SITE_HEADERS, site_rows(&v));
        }
        SiteCmd::Show { name } => {
            let v: Value = c
                .call(Method::GET, &format!("/api/v1/sites/{}", enc(&name)), None)
                .await?;
            data(
                g.json,
                &v,
                &SITE_HEADERS,
                site_rows(std::slice::from_ref(&v)),
            );
        }
        SiteCmd::EdgeAdd { name, edge } => {
            c.send(
                Method::POST,
                &format!("/api/v1/sites/{}/edges", enc(&name)),
                Some(&json!({ "edge": edge })),
            )
            .await
            .and_then(|(s, b)| {
                if s.is_success() {
                    Ok(())
                } else {
                    anyhow::bail!(
                        "registering the edge failed ({s}): {}",
                        String::from_utf8_lossy(&b)
                    )
                }
            })?;
            say(format!("{edge} is site {name}'s edge gateway"));
        }
        SiteCmd::Unmanaged {
            name,
            block,
            unblock,
            adopt,
            device,
            model,
        } => {
            let base = format!("/api/v1/sites/{}/unmanaged", enc(&name));
            let decided = match (block, unblock, adopt) {
                (Some(a), _, _) => Some(("block", a, json!({}))),
                (_, Some(a), _) => Some(("unblock", a, json!({}))),
                (_, _, Some(a)) => Some(("adopt", a, json!({ "device": device, "model": model }))),
                _ => None,
            };
            if let Some((action, address, body)) = decided {
                let v: Value = c
                    .call(
                        Method::POST,
                        &format!("{base}/{}/{action}", enc(&address)),
                        Some(&body),
                    )
                    .await?;
                say(match action {
                    "block" => format!(
                        "{address} at site {name} is blocked: the site's edges cut it off with the next bundle"
                    ),
                    "unblock" => format!("{address} at site {name} is no longer blocked"),
                    _ => format!(
                        "{address} at site {name} adopted as device {} (model {}); enrol it to give it an identity",
                        v["device"].as_str().unwrap_or("?"),
                        model.as_deref().unwrap_or("?")
                    ),
                });
                if g.json {
                    data(true, &v, &[], vec![]);
                }
            } else {
                let v: Value = c.call(Method::GET, &base, None).await?;
                let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
                let rows = hosts
                    .iter()
                    .map(|h| {
                        let s = |k: &str| h[k].as_str().unwrap_or("").to_owned();
                        vec![
                            s("address"),
                            s("mac"),
                            s("hostname"),
                            h["sources"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                            crate::monitoring::time(h["first_ms"].as_i64().unwrap_or(0)),
                            crate::monitoring::time(h["last_ms"].as_i64().unwrap_or(0)),
                            h["bytes"].to_string(),
                            match (s("state").as_str(), h["device"].as_str()) {
                                ("adopted", Some(d)) => format!("adopted as {d}"),
                                (st, _) => st.to_owned(),
                            },
                        ]
                    })
                    .collect();
                data(
                    g.json,
                    &v,
                    &[
                        "address",
                        "mac",
                        "hostname",
                        "seen in",
                        "first seen",
                        "last seen",
                        "bytes",
                        "state",
                    ],
                    rows,
                );
            }
        }
        SiteCmd::Place {
            device,
            site,
            segment,
            address,
            overrides,
            allow_open,
        } => {
            let overrides = overrides
                .as_ref()
                .map(read_json)
                .transpose()?
                .unwrap_or(json!({}));
            let v: Value = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/devices/{}/placement", enc(&device)),
                    Some(&json!({
                        "site": site, "segment": segment, "address": address,
                        "overrides": overrides, "allow_open": allow_open,
                    })),
                )
                .await?;
            say(format!(
                "device {device} placed at {site}/{} as {address}",
                v["segment"].as_str().unwrap_or("?")
            ));
            if g.json {
                data(true, &v, &[], vec![]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a policy command.
pub async fn policy(g: &Global, cmd: PolicyCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let v: Value = match cmd {
        PolicyCmd::Mud {
            model,
            file,
            envelope,
            allow_open,
        } => {
            let body = match (file, envelope) {
                (Some(f), None) => json!({ "mud": read_json(&f)?, "allow_open": allow_open }),
                (None, Some(e)) => json!({ "envelope": read_json(&e)?, "allow_open": allow_open }),
                _ => anyhow::bail!("give --file or --envelope"),
            };
            let v: Value = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/models/{}/mud", enc(&model)),
                    Some(&body),
                )
                .await?;
            let rules = v["policy"]["from_device"].as_array().map_or(0, Vec::len)
                + v["policy"]["to_device"].as_array().map_or(0, Vec::len);
            say(format!(
                "model {model}: MUD policy {} imported ({rules} rules{})",
                v["mud_url"].as_str().unwrap_or(""),
                if v["signed_by"].as_str().is_some_and(|s| !s.is_empty()) {
                    ", signed by the supplier"
                } else {
                    ""
                }
            ));
            v
        }
        PolicyCmd::Show { model } => {
            c.call(
                Method::GET,
                &format!("/api/v1/models/{}/policy", enc(&model)),
                None,
            )
            .await?
        }
    };
    if g.json {
        data(true, &v, &[], vec![]);
    } else {
        crate::output::raw(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v["policy"]).unwrap_or_default()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
