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
use palisade::commands::client;
use palisade::{Global, sim};
use palisade_agent::session::SessionConfig;
use palisade_agent::{EstClient, SoftwareKeystore};
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
    /// The firmware version the devices report.
    #[arg(long, default_value = "sim-1.0.0")]
    firmware: String,
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
    let enrolling = sim::bar(ids.len(), "enrolling");
    let mut tasks = vec![];
    for id in &ids {
        let (api, est, limit, bar) = (api.clone(), est.clone(), limit.clone(), enrolling.clone());
        let (id, dir, model) = (id.clone(), cli.state_dir.join(id), cli.model.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire_owned().await?;
            let keystore = Arc::new(SoftwareKeystore::new(&dir));
            let (agent, _) = sim::enrolled(&api, est, &id, &dir, &model, keystore).await?;
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
        firmware: cli.firmware.clone(),
        allowed_commands: vec![
            "ping".into(),
            "uptime".into(),
            "echo".into(),
            "reboot".into(),
        ],
        attester: None,
        update: None,
        metrics: None,
        wiper: None,
        journal: None,
    };
    let started = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(sim::OtaCounts::default());
    let mut sessions = vec![];
    for (a, id) in agents.into_iter().zip(&ids) {
        let (mut cfg, rx, started) = (cfg.clone(), stop_rx.clone(), started.clone());
        if cli.ota {
            let ota = sim::ota_device(&cli.state_dir.join(id), cli.unhealthy_version.as_deref())?;
            let installer = a.installer(ota.clone(), None)?;
            let announced = Arc::new(tokio::sync::Notify::new());
            cfg.update = Some(announced.clone());
            sessions.push(tokio::spawn(sim::ota_loop(
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
    let connected = sim::bar(ids.len(), "connected");
    let deadline =
        (cli.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(cli.duration));
    loop {
        let n = sim::connected(&api).await.unwrap_or(0);
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
