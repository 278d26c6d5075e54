//! The demo's simulated fleet, in its own process (`palisade demo-fleet`,
//! started by `palisade demo`): every device is a real agent with its own key,
//! enrolled over EST with a one-time token, keeping an MQTT session with
//! telemetry; thermostats install updates with the real A/B installer and,
//! when SoftHSM2 is installed, keep their keys on a PKCS#11 token each.
//!
//! A separate process because SoftHSM2 finds its token directory through the
//! `SOFTHSM2_CONF` environment variable, which is set for this child only.
//! It exits when `palisade demo` (holding its stdin) goes away.
//!
//! After the fleet is up it plays the device-side attacks: failed SSH logins
//! in a door lock's auth log, a camera's firmware changed behind the
//! release process, and a door lock's identity used from a second place.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use palisade_agent::session::SessionConfig;
use palisade_agent::{EstClient, Keystore, Pkcs11Keystore, SoftwareKeystore};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

use crate::Global;
use crate::sim;

/// Debian's SoftHSM2 PKCS#11 module.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Whether SoftHSM2 (its tool and module) is installed.
pub fn softhsm_installed() -> bool {
    Path::new(SOFTHSM_MODULE).exists()
        && std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("softhsm2-util").is_file()))
}

/// One simulated device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedDevice {
    /// Its id.
    pub id: String,
    /// Its model.
    pub model: String,
    /// Keys on a SoftHSM2 token (else in software).
    pub secure_element: bool,
    /// The firmware it reports.
    pub firmware: String,
    /// Installs updates (A/B slots in its state directory).
    pub ota: bool,
}

/// Options of the hidden `palisade demo-fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The devices (JSON, written by `palisade demo`).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
}

/// A token of its own for `id` on the demo's SoftHSM2; its PKCS#11 URI.
fn token(conf_dir: &Path, id: &str) -> anyhow::Result<String> {
    let pin_file = conf_dir.join(format!("{id}.pin"));
    let pin = "4711-demo";
    let o = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            id,
            "--pin",
            pin,
            "--so-pin",
            "4711-demo-so",
        ])
        .env("SOFTHSM2_CONF", conf_dir.join("softhsm2.conf"))
        .output()
        .context("running softhsm2-util")?;
    if !o.status.success() {
        bail!(
            "softhsm2-util --init-token {id}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    std::fs::write(&pin_file, pin)?;
    Ok(format!(
        "pkcs11:token={id}?module-path={SOFTHSM_MODULE}&pin-source={}",
        pin_file.display()
    ))
}

/// The SoftHSM2 configuration of the demo (tokens under `dir/tokens`).
fn softhsm_conf(dir: &Path) -> anyhow::Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    Ok(conf)
}

/// Appends failed SSH logins to `log`, as sshd would.
fn ssh_brute_force(log: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(log)?;
    for i in 0..20 {
        writeln!(
            f,
            "Dec  7 10:00:{i:02} lock sshd[812]: Failed password for root from 203.0.113.66 port {} ssh2",
            40000 + i
        )?;
    }
    Ok(())
}

/// Runs the fleet until stdin closes.
pub async fn run(global: &Global, args: FleetArgs) -> anyhow::Result<ExitCode> {
    let data = global
        .data_dir
        .clone()
        .context("demo-fleet needs --data-dir")?;
    let plan: Vec<PlannedDevice> = serde_json::from_slice(
        &std::fs::read(&args.plan).with_context(|| format!("reading {}", args.plan.display()))?,
    )?;
    let api = Arc::new(crate::commands::client(global)?);
    let url = std::fs::read_to_string(data.join("url"))?.trim().to_owned();
    let mqtt = std::fs::read_to_string(data.join("mqtt"))?
        .trim()
        .to_owned();
    let (host, port) = mqtt
        .rsplit_once(':')
        .context("the mqtt file is HOST:PORT")?;
    let port: u16 = port.parse()?;
    let root = std::fs::read(data.join("ca/root.pem"))?;
    let state = data.join("devices");
    let hsm = data.join("softhsm");
    if plan.iter().any(|d| d.secure_element) {
        // The module reads it when it loads, in this process only.
        let conf = softhsm_conf(&hsm)?;
        if std::env::var_os("SOFTHSM2_CONF").as_deref() != Some(conf.as_os_str()) {
            bail!(
                "demo-fleet must be started with SOFTHSM2_CONF={}",
                conf.display()
            );
        }
    }

    // The tokens first, one at a time (softhsm2-util picks the free slot).
    let mut uris = std::collections::HashMap::new();
    for d in plan.iter().filter(|d| d.secure_element) {
        uris.insert(d.id.clone(), token(&hsm, &d.id)?);
    }
    // Enrolment, a few at a time.
    let limit = Arc::new(Semaphore::new(8));
    let mut tasks = vec![];
    for d in &plan {
        let est = EstClient::new(&url, &root, Some(d.model.clone()))?;
        let (api, limit, d, dir) = (api.clone(), limit.clone(), d.clone(), state.join(&d.id));
        let uri = uris.get(&d.id).cloned();
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire_owned().await?;
            std::fs::create_dir_all(&dir)?;
            let keystore: Arc<dyn Keystore> = match uri {
                Some(uri) => Arc::new(Pkcs11Keystore::open(&uri, &dir)?),
                None => Arc::new(SoftwareKeystore::new(&dir)),
            };
            // The agent says how it keeps its keys, as `palisade-agent` does.
            let est = est.with_key_protection(keystore.protection().as_str());
            let (agent, token) = sim::enrolled(&api, est, &d.id, &dir, &d.model, keystore)
                .await
                .with_context(|| format!("enrolling {}", d.id))?;
            tracing::info!(device = %d.id, "enrolled");
            anyhow::Ok((d, dir, agent, token))
        }));
    }
    let mut agents = vec![];
    for t in tasks {
        agents.push(t.await??);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counts = Arc::new(sim::OtaCounts::default());
    let mut sessions = vec![];
    // The attacked devices report security metrics (an auth log, a firmware file).
    let ssh_victim = plan
        .iter()
        .find(|d| d.model == "door-lock")
        .map(|d| d.id.clone());
    let tampered = plan
        .iter()
        .filter(|d| d.model == "camera")
        .nth(5)
        .map(|d| d.id.clone());
    let cloned = plan
        .iter()
        .filter(|d| d.model == "door-lock")
        .nth(1)
        .map(|d| d.id.clone());
    let mut clone_agent = None;
    let mut polled = 0u64;
    for (d, dir, agent, token) in agents {
        let mut cfg = SessionConfig {
            host: host.to_owned(),
            port,
            telemetry_every: Duration::from_secs(5),
            firmware: d.firmware.clone(),
            allowed_commands: ["ping", "uptime", "echo", "reboot"]
                .map(String::from)
                .to_vec(),
            attester: None,
            update: None,
            metrics: None,
            wiper: None,
            journal: None,
        };
        let watched = Some(&d.id) == ssh_victim.as_ref() || Some(&d.id) == tampered.as_ref();
        if watched {
            let auth = dir.join("auth.log");
            let fw = dir.join("firmware.img");
            std::fs::write(&auth, "")?;
            std::fs::write(&fw, format!("{} firmware {}", d.model, d.firmware))?;
            cfg.metrics = Some(Arc::new(std::sync::Mutex::new(
                palisade_agent::metrics::Collector::new(Some(auth), Some(fw)),
            )));
        }
        if d.ota {
            // Devices check for updates on their own schedule (from under two
            // minutes to over ten), as a real fleet does: the rollout moves
            // wave by wave while the demo runs.
            let ota = sim::ota_device(&dir, None)?;
            let installer = agent.installer(ota.clone(), None)?;
            let never_announced = Arc::new(tokio::sync::Notify::new());
            polled += 1;
            sessions.push(tokio::spawn(sim::ota_loop(
                installer,
                ota,
                never_announced,
                Duration::from_secs(60 + 40 * polled),
                counts.clone(),
                stop_rx.clone(),
            )));
        }
        if Some(&d.id) == cloned.as_ref() {
            clone_agent = token.map(|t| (d.id.clone(), d.model.clone(), t));
        }
        let rx = stop_rx.clone();
        sessions.push(tokio::spawn(async move {
            agent.run_session(&cfg, rx, || 0.5).await;
        }));
    }
    tracing::info!(
        devices = plan.len(),
        "every device enrolled and its session started"
    );

    // The device-side attacks, once the fleet has settled.
    let attacks = {
        let (state, stop_rx, url, root) =
            (state.clone(), stop_rx.clone(), url.clone(), root.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if let Some(id) = ssh_victim {
                tracing::info!(device = %id, "attack: SSH brute force");
                if let Err(e) = ssh_brute_force(&state.join(&id).join("auth.log")) {
                    tracing::warn!(error = %e, "the SSH attack could not be written");
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Some(id) = tampered {
                tracing::info!(device = %id, "attack: firmware changed outside a release");
                let _ = std::fs::write(
                    state.join(&id).join("firmware.img"),
                    "camera firmware 3.2.0 with a backdoor",
                );
            }
            if let Some((id, model, spent)) = clone_agent {
                // A copy of the device's enrolment (its spent one-time token)
                // tried from another machine: the server refuses it and
                // flags the identity as cloned.
                tracing::info!(device = %id, "attack: a cloned device replays its enrolment");
                let dir = state.join("clone-of").join(&id);
                let replay = async {
                    std::fs::create_dir_all(&dir)?;
                    let est = EstClient::new(&url, &root, Some(model))?;
                    let clone = palisade_agent::Agent::new(
                        &dir,
                        Arc::new(SoftwareKeystore::new(&dir)),
                        est,
                        Arc::new(palisade_agent::SystemClock),
                    );
                    let refused = clone
                        .enroll(&palisade_agent::EnrollAuth::Token {
                            device: id,
                            token: spent,
                        })
                        .await
                        .is_err();
                    anyhow::ensure!(refused, "the server accepted a replayed enrolment");
                    anyhow::Ok(())
                };
                if let Err(e) = replay.await {
                    tracing::warn!(error = %e, "the cloned-identity attack");
                }
            }
            let _ = stop_rx;
        })
    };

    // Until `palisade demo` goes away (its end of our stdin closes).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            n = stdin.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { break },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = stop_tx.send(true);
    attacks.abort();
    for s in sessions {
        let _ = s.await;
    }
    Ok(ExitCode::SUCCESS)
}
