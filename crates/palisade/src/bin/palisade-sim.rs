//! `palisade-sim`: a fleet of simulated devices in one process, for demos, load
//! tests and benchmarks. Each simulated device is a real agent (the
//! `palisade-agent` library) with its own key and certificate: it is enrolled
//! through EST with a one-time token, then keeps an MQTT session open, sends
//! telemetry and answers commands.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use palisade::Global;
use palisade::commands::client;
use palisade_agent::SystemClock;
use palisade_agent::session::SessionConfig;
use palisade_agent::{Agent, EnrollAuth, EstClient, SoftwareKeystore};
use palisade_http::views::CreatedEnrollmentToken;
use serde_json::json;
use tokio::sync::Semaphore;

/// Runs N simulated devices against a Palisade server.
#[derive(Debug, Parser)]
#[command(name = "palisade-sim", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Device model (created if missing).
    #[arg(long, default_value = "sim")]
    model: String,
    /// Device id prefix (ids are PREFIX-0001, …).
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Where the simulated devices keep their keys and certificates.
    #[arg(long, default_value = "palisade-sim-state")]
    state_dir: PathBuf,
    /// Gateway address [default: from DATA_DIR/mqtt, else 127.0.0.1:8883].
    #[arg(long, value_name = "HOST:PORT")]
    mqtt: Option<String>,
    /// Seconds between telemetry messages per device.
    #[arg(long, default_value_t = 10)]
    telemetry_every: u64,
    /// Seconds to keep the fleet connected (0: until Ctrl-C).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Enrolments in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Simulate A/B updates: each device gets slot files and a U-Boot
    /// environment in its state directory and runs the real installer, at
    /// once when the server announces an assignment.
    #[arg(long)]
    ota: bool,
    /// With --ota: seconds between update checks without an announcement.
    #[arg(long, default_value_t = 300)]
    update_every: u64,
    /// With --ota: the health check fails on this release version (to rehearse
    /// a bad release: its trial boots roll back).
    #[arg(long, value_name = "VERSION")]
    unhealthy_version: Option<String>,
}

/// Prepares a simulated device's slots and environment (factory image in slot A).
fn ota_device(
    dir: &std::path::Path,
    unhealthy: Option<&str>,
) -> anyhow::Result<palisade_agent::ota::OtaConfig> {
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
    let cfg = palisade_agent::ota::OtaConfig {
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

#[derive(Debug, Default)]
struct OtaCounts {
    committed: AtomicUsize,
    rolled_back: AtomicUsize,
    refused: AtomicUsize,
    errors: AtomicUsize,
}

/// A simulated device's installer: on announcement or timer, one cycle; an
/// armed trial "reboots" (the boot shim's logic) and the next cycle runs the
/// health check.
async fn ota_loop(
    installer: palisade_agent::ota::Installer,
    cfg: palisade_agent::ota::OtaConfig,
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
        // An install arms a trial: "reboot" (the boot shim's logic) and run
        // the next cycle, which is the trial's health check.
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

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec}") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what.to_owned());
    b
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = client(&cli.global)?;
    let data = cli
        .global
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("palisade-data"));
    let url = match &cli.global.url {
        Some(u) => u.clone(),
        None => std::fs::read_to_string(data.join("url"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "https://127.0.0.1:8443".into()),
    };
    let root_path = cli
        .global
        .ca
        .clone()
        .unwrap_or_else(|| data.join("ca/root.pem"));
    let root =
        std::fs::read(&root_path).with_context(|| format!("reading {}", root_path.display()))?;
    let mqtt = match &cli.mqtt {
        Some(m) => m.clone(),
        None => std::fs::read_to_string(data.join("mqtt"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "127.0.0.1:8883".into()),
    };
    let (host, port) = mqtt.rsplit_once(':').context("--mqtt is HOST:PORT")?;
    let port: u16 = port.parse().context("--mqtt port")?;
    let (_, _) = api
        .send(
            Method::POST,
            "/api/v1/models",
            Some(&json!({ "id": cli.model })),
        )
        .await?;
    std::fs::create_dir_all(&cli.state_dir)?;

    let ids: Vec<String> = (1..=cli.devices)
        .map(|i| format!("{}-{i:04}", cli.prefix))
        .collect();
    let est = EstClient::new(&url, &root, Some(cli.model.clone()))?;
    let limit = Arc::new(Semaphore::new(cli.concurrency.max(1)));
    let api = Arc::new(api);
    let enrolling = bar(ids.len(), "enrolling");
    let mut tasks = vec![];
    for id in &ids {
        let (api, est, limit, bar) = (api.clone(), est.clone(), limit.clone(), enrolling.clone());
        let (id, dir, model) = (id.clone(), cli.state_dir.join(id), cli.model.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire_owned().await?;
            std::fs::create_dir_all(&dir)?;
            let agent = Agent::new(
                &dir,
                Arc::new(SoftwareKeystore::new(&dir)),
                est,
                Arc::new(SystemClock),
            );
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
                        device: id,
                        token: t.token,
                    })
                    .await?;
            }
            bar.inc(1);
            anyhow::Ok(agent)
        }));
    }
    let mut agents = vec![];
    for t in tasks {
        agents.push(t.await??);
    }
    enrolling.finish();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = SessionConfig {
        host: host.to_owned(),
        port,
        telemetry_every: Duration::from_secs(cli.telemetry_every.max(1)),
        firmware: "sim-1.0.0".into(),
        allowed_commands: vec![
            "ping".into(),
            "uptime".into(),
            "echo".into(),
            "reboot".into(),
        ],
        attester: None,
        update: None,
        metrics: None,
    };
    let started = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(OtaCounts::default());
    let mut sessions = vec![];
    for (a, id) in agents.into_iter().zip(&ids) {
        let (mut cfg, rx, started) = (cfg.clone(), stop_rx.clone(), started.clone());
        if cli.ota {
            let ota = ota_device(&cli.state_dir.join(id), cli.unhealthy_version.as_deref())?;
            let installer = a.installer(ota.clone(), None)?;
            let announced = Arc::new(tokio::sync::Notify::new());
            cfg.update = Some(announced.clone());
            sessions.push(tokio::spawn(ota_loop(
                installer,
                ota,
                announced,
                Duration::from_secs(cli.update_every.max(1)),
                counts.clone(),
                stop_rx.clone(),
            )));
        }
        sessions.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::Relaxed);
            a.run_session(&cfg, rx, || 0.5).await;
        }));
    }
    let connected = bar(ids.len(), "connected");
    let deadline =
        (cli.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(cli.duration));
    loop {
        let n = metric_connected(&api).await.unwrap_or(0);
        connected.set_position(n as u64);
        let sleep = tokio::time::sleep(Duration::from_millis(500));
        tokio::select! {
            _ = sleep => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
    }
    connected.finish();
    let _ = stop_tx.send(true);
    for s in sessions {
        let _ = s.await;
    }
    eprintln!(
        "{} simulated devices enrolled and ran for their session",
        started.load(Ordering::Relaxed)
    );
    if cli.ota {
        eprintln!(
            "updates: {} committed, {} rolled back, {} refused, {} errors",
            counts.committed.load(Ordering::Relaxed),
            counts.rolled_back.load(Ordering::Relaxed),
            counts.refused.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn metric_connected(api: &palisade::client::Client) -> anyhow::Result<usize> {
    let (_, body) = api.send(Method::GET, "/metrics", None).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find(|l| l.starts_with("palisade_mqtt_connected_devices "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
