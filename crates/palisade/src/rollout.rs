//! `palisade rollout …`: staged rollouts of a release, wave by wave.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use palisade_core::{RolloutDeviceState, RolloutState};

use crate::Global;
use crate::commands::client;
use crate::output::{data, say};

/// `palisade rollout …`
#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start a rollout of a release to a model's devices, in waves.
    Create {
        /// Its name.
        name: String,
        /// The model.
        #[arg(long)]
        model: String,
        /// The release version.
        #[arg(long = "release-version", value_name = "VERSION")]
        release_version: String,
        /// Cumulative wave sizes, counts or percentages (comma-separated),
        /// e.g. 5,25%,100%: a canary of 5 devices, then a quarter, then all.
        #[arg(long, value_delimiter = ',', default_value = "1%,10%,100%")]
        waves: Vec<String>,
        /// Only these devices (comma-separated) [default: all of the model's].
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Only devices carrying all these tags (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Fraction of a wave that must commit before the next starts.
        #[arg(long, default_value_t = 0.95)]
        success_threshold: f64,
        /// Fraction of a wave whose failure pauses the rollout.
        #[arg(long, default_value_t = 0.05)]
        failure_threshold: f64,
        /// Devices updating at once (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_concurrency: u32,
        /// Daily maintenance window in UTC, HH:MM-HH:MM.
        #[arg(long)]
        window: Option<String>,
    },
    /// List rollouts with their progress.
    List,
    /// Follow a rollout wave by wave until it completes, pauses or is cancelled.
    Watch {
        /// The rollout.
        name: String,
        /// Give up after this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// Stop issuing assignments (devices already updating finish).
    Pause {
        /// The rollout.
        name: String,
    },
    /// Continue a paused rollout.
    Resume {
        /// The rollout.
        name: String,
    },
    /// Stop a rollout for good.
    Cancel {
        /// The rollout.
        name: String,
    },
}

fn count(w: &Value, k: &str) -> u64 {
    w[k].as_u64().unwrap_or(0)
}

fn summary(r: &Value) -> String {
    let waves = r["waves"].as_array().cloned().unwrap_or_default();
    waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let total: u64 = RolloutDeviceState::ALL
                .iter()
                .map(|k| count(w, k.as_str()))
                .sum();
            format!(
                "w{}: {}/{} ok, {} failed",
                i + 1,
                count(w, RolloutDeviceState::Committed.as_str()),
                total,
                count(w, RolloutDeviceState::Failed.as_str())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs a rollout command.
pub async fn rollout(g: &Global, cmd: RolloutCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let one = |v: &Value| {
        vec![
            v["name"].as_str().unwrap_or("").to_owned(),
            v["model"].as_str().unwrap_or("").to_owned(),
            v["release_version"].as_str().unwrap_or("").to_owned(),
            v["state"].as_str().unwrap_or("").to_owned(),
            v["wave"].to_string(),
            summary(v),
            v["reason"].as_str().unwrap_or("").to_owned(),
        ]
    };
    let headers = [
        "name", "model", "release", "state", "wave", "progress", "reason",
    ];
    match cmd {
        RolloutCmd::Create {
            name,
            model,
            release_version,
            waves,
            devices,
            tags,
            success_threshold,
            failure_threshold,
            max_concurrency,
            window,
        } => {
            let r: Value = c
                .call(
                    Method::POST,
                    "/api/v1/rollouts",
                    Some(&json!({
                        "name": name, "model": model, "release_version": release_version,
                        "waves": waves, "devices": devices, "tags": tags,
                        "success_threshold": success_threshold,
                        "failure_threshold": failure_threshold,
                        "max_concurrency": max_concurrency, "window": window,
                    })),
                )
                .await?;
            say(format!(
                "rollout {name} started: {release_version} to {model} in {} wave(s)",
                r["spec"]["waves"].as_array().map_or(0, Vec::len)
            ));
            let rows = vec![one(&r)];
            data(g.json, &r, &headers, rows);
        }
        RolloutCmd::List => {
            let list: Vec<Value> = c.call(Method::GET, "/api/v1/rollouts", None).await?;
            let rows = list.iter().map(one).collect();
            data(g.json, &list, &headers, rows);
        }
        RolloutCmd::Pause { name } => return act(g, &c, &name, "pause").await,
        RolloutCmd::Resume { name } => return act(g, &c, &name, "resume").await,
        RolloutCmd::Cancel { name } => return act(g, &c, &name, "cancel").await,
        RolloutCmd::Watch { name, timeout } => return watch(g, &c, &name, timeout).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(
    g: &Global,
    c: &crate::client::Client,
    name: &str,
    action: &str,
) -> anyhow::Result<ExitCode> {
    let r: Value = c
        .call(
            Method::POST,
            &format!("/api/v1/rollouts/{}/{action}", crate::commands::enc(name)),
            None,
        )
        .await?;
    say(format!(
        "rollout {name} is {}",
        r["state"].as_str().unwrap_or("?")
    ));
    if g.json {
        data(true, &r, &[], vec![]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a rollout with one progress bar per wave; exits 0 when it
/// completes, 2 when it pauses or is cancelled, 3 on timeout.
async fn watch(
    g: &Global,
    c: &crate::client::Client,
    name: &str,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
    let path = format!("/api/v1/rollouts/{}", crate::commands::enc(name));
    let started = std::time::Instant::now();
    let multi = MultiProgress::with_draw_target(if g.json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")
        .context("progress style")?
        .progress_chars("=> ");
    let mut bars: Vec<ProgressBar> = vec![];
    loop {
        let r: Value = c.call(Method::GET, &path, None).await?;
        let waves = r["waves"].as_array().cloned().unwrap_or_default();
        while bars.len() < waves.len() {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(style.clone());
            b.set_prefix(format!("wave {}", bars.len() + 1));
            bars.push(b);
        }
        for (b, w) in bars.iter().zip(&waves) {
            let total: u64 = RolloutDeviceState::ALL
                .iter()
                .map(|k| count(w, k.as_str()))
                .sum();
            b.set_length(total);
            b.set_position(
                count(w, RolloutDeviceState::Committed.as_str())
                    + count(w, RolloutDeviceState::Failed.as_str()),
            );
            b.set_message(format!(
                "{} committed, {} failed, {} updating",
                count(w, RolloutDeviceState::Committed.as_str()),
                count(w, RolloutDeviceState::Failed.as_str()),
                count(w, RolloutDeviceState::Assigned.as_str())
            ));
        }
        let state = r["state"].as_str().unwrap_or("");
        let done = match RolloutState::parse(state) {
            Ok(RolloutState::Completed) => Some(ExitCode::SUCCESS),
            Ok(RolloutState::Paused | RolloutState::Cancelled) => Some(ExitCode::from(2)),
            Ok(RolloutState::Running) | Err(_) => None,
        };
        if let Some(code) = done {
            for b in &bars {
                b.finish();
            }
            say(format!(
                "rollout {name} {state}{}",
                r["reason"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            ));
            if g.json {
                data(true, &r, &[], vec![]);
            }
            return Ok(code);
        }
        if timeout > 0 && started.elapsed() > Duration::from_secs(timeout) {
            say(format!("rollout {name} is still {state} after {timeout} s"));
            return Ok(ExitCode::from(3));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
