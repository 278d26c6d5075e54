//! `palisade posture`: how far the fleet, a model, a site or one device stands
//! from each baseline (the practical checklist, ETSI EN 303 645, NIST IR 8259A,
//! EN 18031-1), and the self-contained HTML report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::Global;
use crate::commands::{client, enc};
use crate::output::{data, say};

/// `palisade posture …`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PostureArgs {
    #[command(subcommand)]
    cmd: Option<PostureCmd>,
    /// One device: every control with its reason.
    #[arg(long)]
    device: Option<String>,
    /// Only this model's devices.
    #[arg(long)]
    model: Option<String>,
    /// Only this site's devices.
    #[arg(long)]
    site: Option<String>,
    /// One framework [default: all four].
    #[arg(long, value_parser = ["checklist", "etsi-en-303-645", "nist-ir-8259a", "en-18031"])]
    framework: Option<String>,
}

/// `palisade posture report`
#[derive(Debug, Subcommand)]
pub enum PostureCmd {
    /// Write the posture report: one self-contained HTML file (no external references).
    Report {
        /// Where to write it.
        #[arg(long, value_name = "FILE.html")]
        out: PathBuf,
    },
}

fn score(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |s| format!("{s:.1} %"))
}

/// Runs `palisade posture`.
pub async fn posture(g: &Global, a: PostureArgs) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    if let Some(PostureCmd::Report { out }) = a.cmd {
        let (status, body) = c.send(Method::GET, "/api/v1/posture/report", None).await?;
        if !status.is_success() {
            bail!(
                "the report was refused ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        std::fs::write(&out, &body).with_context(|| format!("writing {}", out.display()))?;
        say(format!("wrote the posture report to {}", out.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let fw = a
        .framework
        .as_deref()
        .map(|f| format!("framework={f}"))
        .into_iter();
    if let Some(d) = &a.device {
        let q: Vec<String> = fw.collect();
        let v: Value = c
            .call(
                Method::GET,
                &format!("/api/v1/posture/devices/{}?{}", enc(d), q.join("&")),
                None,
            )
            .await?;
        let mut rows = Vec::new();
        for f in v["frameworks"].as_array().into_iter().flatten() {
            for ctl in f["controls"].as_array().into_iter().flatten() {
                rows.push(vec![
                    f["framework"].as_str().unwrap_or("").to_owned(),
                    ctl["control"].as_str().unwrap_or("").to_owned(),
                    ctl["title"].as_str().unwrap_or("").to_owned(),
                    ctl["outcome"].as_str().unwrap_or("").to_owned(),
                    ctl["reason"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            say(format!(
                "{d}: {} {}",
                f["framework"].as_str().unwrap_or(""),
                score(&f["score"])
            ));
        }
        data(
            g.json,
            &v,
            &["framework", "control", "title", "outcome", "reason"],
            rows,
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Operators at a terminal want the fleet as it is now.
    let mut q: Vec<String> = fw.chain(["fresh=true".to_owned()]).collect();
    if let Some(m) = &a.model {
        q.push(format!("model={}", enc(m)));
    }
    if let Some(s) = &a.site {
        q.push(format!("site={}", enc(s)));
    }
    let v: Value = c
        .call(
            Method::GET,
            &format!("/api/v1/posture?{}", q.join("&")),
            None,
        )
        .await?;
    let mut rows = Vec::new();
    for f in v["frameworks"].as_array().into_iter().flatten() {
        say(format!(
            "{}: {} over {} devices",
            f["title"].as_str().unwrap_or(""),
            score(&f["results"]["score"]),
            f["devices"]
        ));
        for ctl in f["controls"].as_array().into_iter().flatten() {
            let d = &ctl["devices"];
            rows.push(vec![
                f["framework"].as_str().unwrap_or("").to_owned(),
                ctl["id"].as_str().unwrap_or("").to_owned(),
                ctl["title"].as_str().unwrap_or("").to_owned(),
                d["pass"].to_string(),
                d["fail"].to_string(),
                d["unknown"].to_string(),
                score(&d["score"]),
            ]);
        }
    }
    data(
        g.json,
        &v,
        &[
            "framework",
            "control",
            "title",
            "pass",
            "fail",
            "unknown",
            "score",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}
