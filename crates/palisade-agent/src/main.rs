//! `palisade-agent`: enrol this device with Palisade (birth identity or token)
//! and keep its operational certificate renewed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use palisade_agent::SystemClock;
use palisade_agent::{Agent, EnrollAuth, EstClient, SoftwareKeystore};
use palisade_core::KeyAlgorithm;
use palisade_keystore::SoftwareKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The Palisade device agent.
#[derive(Debug, Parser)]
#[command(name = "palisade-agent", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct Common {
    /// Palisade server URL, e.g. https://palisade.example:8443
    #[arg(long, env = "PALISADE_AGENT_SERVER")]
    server: String,
    /// Palisade's root CA certificate (PEM): the only server this agent trusts.
    #[arg(long, env = "PALISADE_AGENT_ROOT", value_name = "FILE")]
    root: PathBuf,
    /// State directory (keys 0600, certificates).
    #[arg(long, env = "PALISADE_AGENT_STATE_DIR", value_name = "DIR")]
    state_dir: PathBuf,
    /// EST label (the device model), if the server expects one.
    #[arg(long, env = "PALISADE_AGENT_LABEL")]
    label: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// First enrolment, with a birth certificate or an enrolment token.
    Enroll {
        #[command(flatten)]
        common: Common,
        /// Birth certificate (IDevID, PEM).
        #[arg(long, requires = "idevid_key", conflicts_with = "token")]
        idevid_cert: Option<PathBuf>,
        /// Birth key (PKCS#8 PEM, 0600).
        #[arg(long)]
        idevid_key: Option<PathBuf>,
        /// One-time enrolment token.
        #[arg(
            long,
            env = "PALISADE_AGENT_TOKEN",
            hide_env_values = true,
            requires = "device_id"
        )]
        token: Option<String>,
        /// Device id to enrol with a token.
        #[arg(long)]
        device_id: Option<String>,
    },
    /// Stay connected to the device gateway (telemetry, commands) and keep the
    /// operational certificate renewed (at about 2/3 of its lifetime).
    Run {
        #[command(flatten)]
        common: Common,
        /// Gateway host [default: the server's host].
        #[arg(long, env = "PALISADE_AGENT_MQTT_HOST")]
        mqtt_host: Option<String>,
        /// Gateway port.
        #[arg(long, env = "PALISADE_AGENT_MQTT_PORT", default_value_t = 8883)]
        mqtt_port: u16,
        /// Seconds between telemetry messages.
        #[arg(long, default_value_t = 60)]
        telemetry_every: u64,
        /// Firmware version to report.
        #[arg(long, env = "PALISADE_AGENT_FIRMWARE", default_value = "unknown")]
        firmware: String,
        /// Commands this device runs (comma-separated); others are refused.
        #[arg(long, value_delimiter = ',', default_value = "ping,uptime,echo,reboot")]
        allow_commands: Vec<String>,
    },
    /// Show the current identity.
    Status {
        /// State directory.
        #[arg(long, env = "PALISADE_AGENT_STATE_DIR")]
        state_dir: PathBuf,
    },
}

fn agent(c: &Common) -> anyhow::Result<Agent> {
    let root = std::fs::read(&c.root).with_context(|| format!("reading {}", c.root.display()))?;
    let est = EstClient::new(&c.server, &root, c.label.clone())?;
    std::fs::create_dir_all(&c.state_dir)
        .with_context(|| format!("creating {}", c.state_dir.display()))?;
    Ok(Agent::new(
        &c.state_dir,
        Arc::new(SoftwareKeystore::new(&c.state_dir)),
        est,
        Arc::new(SystemClock),
    ))
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Enroll {
            common,
            idevid_cert,
            idevid_key,
            token,
            device_id,
        } => {
            let a = agent(&common)?;
            let auth = match (idevid_cert, idevid_key, token, device_id) {
                (Some(cert), Some(key), None, _) => EnrollAuth::BirthCertificate {
                    chain: CertificateDer::pem_file_iter(&cert)
                        .with_context(|| format!("reading {}", cert.display()))?
                        .collect::<Result<_, _>>()?,
                    key: Arc::new(SoftwareKey::load(&key, KeyAlgorithm::EcdsaP256)?),
                },
                (None, None, Some(token), Some(device)) => EnrollAuth::Token { device, token },
                _ => {
                    anyhow::bail!("give --idevid-cert and --idevid-key, or --token and --device-id")
                }
            };
            let id = a.enroll(&auth).await?;
            eprintln!(
                "enrolled as {} (certificate {}, valid until {}; keys: {:?})",
                id.device_id,
                id.serial,
                id.not_after,
                a.key_protection()
            );
        }
        Cmd::Run {
            common,
            mqtt_host,
            mqtt_port,
            telemetry_every,
            firmware,
            allow_commands,
        } => {
            let a = agent(&common)?;
            let cfg = palisade_agent::session::SessionConfig {
                host: mqtt_host.unwrap_or_else(|| a.est().host().to_owned()),
                port: mqtt_port,
                telemetry_every: std::time::Duration::from_secs(telemetry_every.max(1)),
                firmware,
                allowed_commands: allow_commands,
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let session = {
                let a = a.clone();
                tokio::spawn(async move { a.run_session(&cfg, stop_rx, jitter).await })
            };
            let mut failures = 0;
            loop {
                let (wait, err) = a.step(jitter(), &mut failures).await;
                if let Some(e) = err {
                    eprintln!("renewal: {e}");
                }
                let secs = u64::try_from(wait.whole_seconds().max(1)).unwrap_or(1);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
            let _ = stop_tx.send(true);
            let _ = session.await;
        }
        Cmd::Status { state_dir } => match palisade_agent::state::read_identity(&state_dir)? {
            Some(id) => println!(
                "device {}\ncertificate {}\nvalid {} .. {}\nkeys software (development keystore)",
                id.device_id, id.serial, id.not_before, id.not_after
            ),
            None => {
                eprintln!("not enrolled");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
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
    match rt.block_on(run(cli.cmd)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
