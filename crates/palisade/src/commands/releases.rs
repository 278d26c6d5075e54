//! `palisade release …`: firmware releases through the supply-chain gate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_http::views::*;
use serde_json::json;

use crate::Global;
use crate::output::{Progress, data, say};

use super::{client, enc, read_json};

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
    /// Upload the supplier's VEX for a release: a DSSE envelope (signed by a
    /// registered key of the model's supplier) around a CSAF 2.0 VEX or
    /// CycloneDX VEX document; it replaces the release's earlier statements,
    /// and `not_affected` statements suppress the advisory matches they cover.
    Vex {
        /// The model.
        #[arg(long)]
        model: String,
        /// The release.
        #[arg(long = "release-version", value_name = "VERSION")]
        release_version: String,
        /// The DSSE envelope (JSON).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
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
        ReleaseCmd::Vex {
            model,
            release_version,
            file,
        } => {
            let env = read_json(&file)?;
            let r: serde_json::Value = c
                .call(
                    Method::POST,
                    &format!(
                        "/api/v1/releases/{}/{}/vex",
                        enc(&model),
                        enc(&release_version)
                    ),
                    Some(&env),
                )
                .await?;
            if g.json {
                crate::output::raw(&format!("{r}\n"));
            } else {
                say(format!(
                    "{} statement(s) stored for {model} {release_version} from {} ({} not affected)",
                    r["statements"],
                    r["supplier"].as_str().unwrap_or("?"),
                    r["not_affected"]
                ));
            }
            return Ok(ExitCode::SUCCESS);
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
