//! Simulated devices for `palisade-sim` and `palisade demo`: each is a real
//! agent (the `palisade-agent` library) with its own key and certificate,
//! enrolled through EST with a one-time token, keeping an MQTT session,
//! sending telemetry, answering commands and, with A/B slots in its state
//! directory, installing updates with the real installer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use palisade_agent::ota::{Installer, OtaConfig};
use palisade_agent::{Agent, EnrollAuth, EstClient, Keystore, SystemClock};
use palisade_http::views::CreatedEnrollmentToken;
use serde_json::json;

use crate::client::Client;

/// Prepares a simulated device's slots and U-Boot environment (a factory
/// image labelled `factory` in slot A) under `dir`. With `unhealthy`, the
/// health check fails on that release version (to rehearse a bad release).
pub fn ota_device(dir: &Path, unhealthy: Option<&str>) -> anyhow::Result<OtaConfig> {
    let env_cfg = dir.join("fw_env.config");
    for e in ["env0", "env1"] {
        let p = dir.join(e);
        if !p.exists() {
            std::fs::write(&p, vec![0u8; 0x2000])?;
        }
    }
    std::fs::write(
        &env_cfg,
        format!(
            "{} 0x0 0x2000\n{} 0x0 0x2000\n",
            dir.join("env0").display(),
            dir.join("env1").display()
        ),
    )?;
    let cfg = OtaConfig {
        fw_env_config: env_cfg,
        slot_a: dir.join("slot-a.img"),
        slot_b: dir.join("slot-b.img"),
        hardware: String::new(),
        bootlimit: 3,
        tuf_root: None,
        health_command: unhealthy.map(|v| format!("test \"$PALISADE_TRIAL_VERSION\" != '{v}'")),
        deltas: true,
    };
    if !cfg.slot_a.exists() {
        let factory = dir.join("factory.img");
        std::fs::write(&factory, b"simulated factory image")?;
        palisade_agent::ota::init_slot(&cfg, &factory, "factory")?;
    }
    Ok(cfg)
}

/// What the simulated installers did.
#[derive(Debug, Default)]
pub struct OtaCounts {
    /// Releases committed after a healthy trial boot.
    pub committed: AtomicUsize,
    /// Trial boots that fell back.
    pub rolled_back: AtomicUsize,
    /// Assignments the installer refused.
    pub refused: AtomicUsize,
    /// Cycles that failed.
    pub errors: AtomicUsize,
}

/// A simulated device's installer: on announcement or timer, one cycle; an
/// armed trial "reboots" (the boot shim's logic) and the next cycle runs the
/// health check.
pub async fn ota_loop(
    installer: Installer,
    cfg: OtaConfig,
    announced: Arc<tokio::sync::Notify>,
    every: Duration,
    counts: Arc<OtaCounts>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use palisade_agent::ota::Outcome;
    loop {
        tokio::select! {
            _ = announced.notified() => {}
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        for _ in 0..2 {
            let now = palisade_core::Clock::now_ms(&SystemClock);
            let outcome = installer.cycle(now).await;
            let reboot = matches!(
                outcome,
                Ok(Outcome::RebootRequired | Outcome::RolledBack(_))
            );
            match outcome {
                Ok(Outcome::Committed(_)) => {
                    counts.committed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Outcome::RolledBack(_)) => {
                    counts.rolled_back.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Outcome::Refused(_)) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Outcome::Idle | Outcome::RebootRequired) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "simulated installer");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !reboot {
                break;
            }
            let booted = palisade_agent::ota::BootControl::open(&cfg.fw_env_config)
                .and_then(|ctl| palisade_agent::ota::boot(&ctl, &cfg));
            if let Err(e) = booted {
                tracing::error!(error = %e, "simulated device cannot boot");
                counts.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// A progress bar for `len` items.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec}") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_owned());
    b
}

/// The agent of simulated device `id` (state in `dir`, keys in `keystore`),
/// enrolled with a one-time token for `model` unless it already is; with the
/// token it used (now spent), if it enrolled.
pub async fn enrolled(
    api: &Client,
    est: EstClient,
    id: &str,
    dir: &Path,
    model: &str,
    keystore: Arc<dyn Keystore>,
) -> anyhow::Result<(Agent, Option<String>)> {
    std::fs::create_dir_all(dir)?;
    let agent = Agent::new(dir, keystore, est, Arc::new(SystemClock));
    let mut spent = None;
    if agent.identity()?.is_none() {
        let t: CreatedEnrollmentToken = api
            .call(
                Method::POST,
                "/api/v1/enrollment-tokens",
                Some(&json!({ "model": model })),
            )
            .await?;
        agent
            .enroll(&EnrollAuth::Token {
                device: id.to_owned(),
                token: t.token.clone(),
            })
            .await?;
        spent = Some(t.token);
    }
    Ok((agent, spent))
}

/// Devices connected to the gateway now (from `/metrics`).
pub async fn connected(api: &Client) -> anyhow::Result<usize> {
    let (_, body) = api.send(Method::GET, "/metrics", None).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find(|l| l.starts_with("palisade_mqtt_connected_devices "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize)
}
