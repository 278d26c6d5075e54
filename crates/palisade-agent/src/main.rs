//! `palisade-agent`: enrol this device with Palisade (birth identity or token)
//! and keep its operational certificate renewed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use palisade_agent::SystemClock;
use palisade_agent::{Agent, EnrollAuth, EstClient, Keystore, SoftwareKeystore};
use palisade_core::{KeyAlgorithm, KeyProtection};
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

#[derive(Debug, Args, Clone)]
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
    #[command(flatten)]
    keys: KeystoreArgs,
}

/// Where the device's keys live.
#[derive(Debug, Args, Clone)]
struct KeystoreArgs {
    /// software (PKCS#8 files, development only), pkcs11 (a token: secure element
    /// or HSM) or tpm (TPM 2.0, with attestation).
    #[arg(long, env = "PALISADE_AGENT_KEYSTORE", default_value = "software",
          value_parser = ["software", "pkcs11", "tpm"])]
    keystore: String,
    /// TPM interface (TCTI), e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321.
    #[arg(
        long,
        env = "PALISADE_AGENT_TPM_TCTI",
        default_value = "device:/dev/tpmrm0"
    )]
    tpm_tcti: String,
    /// The token, as an RFC 7512 URI: pkcs11:token=T?module-path=M&pin-source=FILE.
    #[arg(long, env = "PALISADE_AGENT_PKCS11_URI")]
    pkcs11_uri: Option<String>,
}

fn keystore(k: &KeystoreArgs, state_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Keystore>> {
    Ok(match k.keystore.as_str() {
        "pkcs11" => {
            let uri = k
                .pkcs11_uri
                .as_deref()
                .context("--keystore pkcs11 needs --pkcs11-uri")?;
            Arc::new(palisade_agent::Pkcs11Keystore::open(uri, state_dir)?)
        }
        "tpm" => tpm_keystore(k, state_dir)?,
        _ => Arc::new(SoftwareKeystore::new(state_dir)),
    })
}

#[cfg(feature = "tpm")]
fn tpm_keystore(
    k: &KeystoreArgs,
    state_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Keystore>> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    Ok(Arc::new(palisade_agent::tpm::TpmKeystore::open(
        &k.tpm_tcti,
        state_dir,
    )?))
}

#[cfg(not(feature = "tpm"))]
fn tpm_keystore(_: &KeystoreArgs, _: &std::path::Path) -> anyhow::Result<Arc<dyn Keystore>> {
    anyhow::bail!("this agent was built without TPM support (cargo feature \"tpm\")")
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// First enrolment, with a birth certificate or an enrolment token.
    Enroll {
        #[command(flatten)]
        common: Common,
        /// Birth certificate (IDevID, PEM).
        #[arg(long, conflicts_with = "token")]
        idevid_cert: Option<PathBuf>,
        /// Birth key (PKCS#8 PEM, 0600); without it, the keystore's `idevid` key
        /// (made by `palisade-agent birth-key`).
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
        /// An auth log (sshd, login, PAM) whose failed logins are reported.
        #[arg(long, env = "PALISADE_AGENT_AUTH_LOG", value_name = "FILE")]
        auth_log: Option<std::path::PathBuf>,
        /// The running firmware image, whose SHA-256 is reported.
        #[arg(long, env = "PALISADE_AGENT_FIRMWARE_FILE", value_name = "FILE")]
        firmware_file: Option<std::path::PathBuf>,
        /// Leave security metrics out of telemetry.
        #[arg(long)]
        no_security_metrics: bool,
        /// Updates: with --slot-a and --slot-b the installer runs too, at once
        /// when the server announces an assignment, else every --update-every.
        #[command(flatten)]
        ota: OtaArgs,
        /// Seconds between update checks.
        #[arg(long, default_value_t = 3600)]
        update_every: u64,
        /// Command that reboots the device when a trial boot is armed.
        #[arg(long, env = "PALISADE_AGENT_REBOOT_COMMAND")]
        reboot_command: Option<String>,
        /// An application data directory kept encrypted under the data key
        /// (through `palisade-agent data`): a wipe crypto-erases it.
        #[arg(long, env = "PALISADE_AGENT_DATA_DIR", value_name = "DIR")]
        data_dir: Vec<PathBuf>,
    },
    /// Application data at rest, encrypted under the keystore's data key (a
    /// TPM sealed object, a token's AES key, or a key file): what a wipe
    /// destroys by destroying that one key.
    Data {
        /// State directory.
        #[arg(long, env = "PALISADE_AGENT_STATE_DIR", value_name = "DIR")]
        state_dir: PathBuf,
        #[command(flatten)]
        keys: KeystoreArgs,
        /// The data directory [default: the agent's own vault in the state directory].
        #[arg(long, env = "PALISADE_AGENT_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        op: DataOp,
    },
    /// In the factory: make the birth key in the keystore (a TPM or token keeps
    /// it; it never exists as a file) and write its CSR for `palisade factory issue`.
    BirthKey {
        /// State directory.
        #[arg(long, env = "PALISADE_AGENT_STATE_DIR", value_name = "DIR")]
        state_dir: PathBuf,
        #[command(flatten)]
        keys: KeystoreArgs,
        /// The device's serial number (the CSR's CN).
        #[arg(long)]
        serial: String,
        /// Where to write the CSR (PEM).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// The boot shim (simulation of a measured-boot loader): extends the firmware
    /// PCR with the image's SHA-256 and appends it to the boot event log.
    BootMeasure {
        /// State directory (holds the boot event log).
        #[arg(long, env = "PALISADE_AGENT_STATE_DIR", value_name = "DIR")]
        state_dir: PathBuf,
        /// TPM interface (TCTI).
        #[arg(
            long,
            env = "PALISADE_AGENT_TPM_TCTI",
            default_value = "device:/dev/tpmrm0"
        )]
        tpm_tcti: String,
        /// The firmware image booted.
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        /// Its version.
        #[arg(long)]
        firmware_version: String,
    },
    /// Check for an assigned update and install it (the director's assignment,
    /// verified against the TUF repository, into the inactive slot); after a
    /// trial boot, run the health check and commit or fall back.
    Update {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        ota: OtaArgs,
        /// One cycle, then exit: 0 nothing (more) to do, 10 reboot required,
        /// 11 rolled back, 12 refused.
        #[arg(long)]
        once: bool,
        /// Seconds between cycles when not `--once`.
        #[arg(long, default_value_t = 300)]
        interval: u64,
        /// Command that reboots the device when a trial boot is armed.
        #[arg(long, env = "PALISADE_AGENT_REBOOT_COMMAND")]
        reboot_command: Option<String>,
    },
    /// The boot shim (simulation of U-Boot with bootcount and verified boot):
    /// picks the slot as U-Boot would, counting trial boots and falling back
    /// past the boot limit, and boots only an image that verifies.
    Boot {
        #[command(flatten)]
        ota: OtaArgs,
    },
    /// In the factory: write the first image into slot A and record it.
    SlotInit {
        #[command(flatten)]
        ota: OtaArgs,
        /// The image.
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        /// Its version.
        #[arg(long)]
        firmware_version: String,
    },
    /// Show the current identity.
    Status {
        /// State directory.
        #[arg(long, env = "PALISADE_AGENT_STATE_DIR")]
        state_dir: PathBuf,
    },
}

/// What to do with the encrypted data.
#[derive(Debug, Subcommand)]
enum DataOp {
    /// Encrypt standard input (or --file) as NAME.
    Put {
        /// The file's name in the data directory.
        name: String,
        /// Read from this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Decrypt NAME to standard output.
    Get {
        /// The file's name in the data directory.
        name: String,
        /// Decrypt this copy of the file instead (it must have been NAME).
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List the files.
    List,
}

/// Where the A/B slots and the U-Boot environment are.
#[derive(Debug, Args, Clone)]
struct OtaArgs {
    /// libubootenv's configuration naming the environment copies.
    #[arg(
        long,
        env = "PALISADE_AGENT_FW_ENV_CONFIG",
        default_value = "/etc/fw_env.config"
    )]
    fw_env_config: PathBuf,
    /// Slot A: a file or block device (with slot B: enables the installer).
    #[arg(long, env = "PALISADE_AGENT_SLOT_A")]
    slot_a: Option<PathBuf>,
    /// Slot B.
    #[arg(long, env = "PALISADE_AGENT_SLOT_B")]
    slot_b: Option<PathBuf>,
    /// This device's hardware revision.
    #[arg(long, env = "PALISADE_AGENT_HARDWARE", default_value = "")]
    hardware: String,
    /// Trial boots before U-Boot falls back to the previous slot.
    #[arg(long, default_value_t = 3)]
    bootlimit: u32,
    /// Provisioned TUF root metadata; without it the root is fetched once from
    /// the server (TLS pinned to the Palisade root) and pinned.
    #[arg(long, env = "PALISADE_AGENT_TUF_ROOT")]
    tuf_root: Option<PathBuf>,
    /// Health check run during a trial boot (via /bin/sh, with the trial's
    /// version in PALISADE_TRIAL_VERSION); failing rolls back.
    #[arg(long, env = "PALISADE_AGENT_HEALTH_COMMAND")]
    health_command: Option<String>,
    /// Always download whole images (no deltas from the running image).
    #[arg(long, env = "PALISADE_AGENT_NO_DELTAS")]
    no_deltas: bool,
}

impl OtaArgs {
    fn enabled(&self) -> bool {
        self.slot_a.is_some() && self.slot_b.is_some()
    }

    fn config(&self) -> anyhow::Result<palisade_agent::ota::OtaConfig> {
        Ok(palisade_agent::ota::OtaConfig {
            fw_env_config: self.fw_env_config.clone(),
            slot_a: self
                .slot_a
                .clone()
                .context("--slot-a (PALISADE_AGENT_SLOT_A) is required")?,
            slot_b: self
                .slot_b
                .clone()
                .context("--slot-b (PALISADE_AGENT_SLOT_B) is required")?,
            hardware: self.hardware.clone(),
            bootlimit: self.bootlimit.max(1),
            tuf_root: self.tuf_root.clone(),
            health_command: self.health_command.clone(),
            deltas: !self.no_deltas,
        })
    }
}

fn unix_ms() -> i64 {
    palisade_core::Clock::now_ms(&SystemClock)
}

async fn update(
    common: &Common,
    ota: &OtaArgs,
    once: bool,
    interval: u64,
    reboot_command: Option<&str>,
    announced: Option<Arc<tokio::sync::Notify>>,
) -> anyhow::Result<ExitCode> {
    use palisade_agent::ota::Outcome;
    let a = agent(common)?;
    let installer = a.installer(ota.config()?, a.keystore().floor())?;
    loop {
        let outcome = installer.cycle(unix_ms()).await;
        let code = match &outcome {
            Ok(Outcome::Idle) => 0,
            Ok(Outcome::Committed(v)) => {
                println!("committed {v}");
                0
            }
            Ok(Outcome::RebootRequired) => {
                println!("installed: reboot into the trial");
                10
            }
            Ok(Outcome::RolledBack(why)) => {
                println!("rolled back: {why}");
                11
            }
            Ok(Outcome::Refused(why)) => {
                println!("refused: {why}");
                12
            }
            Err(e) => {
                eprintln!("update: {e}");
                if once {
                    return Ok(ExitCode::FAILURE);
                }
                0
            }
        };
        if (code == 10 || code == 11)
            && let Some(cmd) = reboot_command
        {
            let s = std::process::Command::new("/bin/sh")
                .args(["-c", cmd])
                .status()
                .with_context(|| format!("running the reboot command {cmd:?}"))?;
            anyhow::ensure!(s.success(), "the reboot command {cmd:?} failed: {s}");
        }
        if once {
            return Ok(ExitCode::from(code));
        }
        let announced = announced.clone();
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))) => {}
            _ = async move { match announced { Some(n) => n.notified().await, None => std::future::pending().await } } => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn agent(c: &Common) -> anyhow::Result<Agent> {
    let root = std::fs::read(&c.root).with_context(|| format!("reading {}", c.root.display()))?;
    let mut est = EstClient::new(&c.server, &root, c.label.clone())?;
    std::fs::create_dir_all(&c.state_dir)
        .with_context(|| format!("creating {}", c.state_dir.display()))?;
    let keys = keystore(&c.keys, &c.state_dir)?;
    if keys.protection() == KeyProtection::SecureElement {
        est = est.with_key_protection("secure-element");
    }
    Ok(Agent::new(&c.state_dir, keys, est, Arc::new(SystemClock)))
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
                (Some(cert), None, None, _) => EnrollAuth::BirthCertificate {
                    chain: CertificateDer::pem_file_iter(&cert)
                        .with_context(|| format!("reading {}", cert.display()))?
                        .collect::<Result<_, _>>()?,
                    key: a
                        .keystore()
                        .key("idevid")
                        .context("the birth key in the keystore")?,
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
            auth_log,
            firmware_file,
            no_security_metrics,
            ota,
            update_every,
            reboot_command,
            data_dir,
        } => {
            let a = agent(&common)?;
            let journal = palisade_agent::vault::Vault::open(
                a.keystore().as_ref(),
                &common.state_dir.join(palisade_agent::vault::STATE_VAULT),
                true,
            )
            .context("opening the agent's vault (the keystore's data key)")?
            .map(Arc::new);
            let wiper = palisade_agent::wipe::Wiper::new(a.clone(), data_dir);
            let announced = ota.enabled().then(|| Arc::new(tokio::sync::Notify::new()));
            if let Some(n) = announced.clone() {
                let common = common.clone();
                tokio::spawn(async move {
                    if let Err(e) = update(
                        &common,
                        &ota,
                        false,
                        update_every,
                        reboot_command.as_deref(),
                        Some(n),
                    )
                    .await
                    {
                        eprintln!("installer: {e:#}");
                    }
                });
            }
            let cfg = palisade_agent::session::SessionConfig {
                host: mqtt_host.unwrap_or_else(|| a.est().host().to_owned()),
                port: mqtt_port,
                telemetry_every: std::time::Duration::from_secs(telemetry_every.max(1)),
                firmware,
                allowed_commands: allow_commands,
                attester: a.attester(),
                update: announced,
                metrics: (!no_security_metrics).then(|| {
                    std::sync::Arc::new(std::sync::Mutex::new(
                        palisade_agent::metrics::Collector::new(auth_log, firmware_file),
                    ))
                }),
                wiper: Some(wiper.clone()),
                journal,
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
                    _ = wiper.done.notified() => {
                        let _ = session.await;
                        eprintln!("wiped on the control plane's signed command: the data key and the identity are destroyed; re-provision this device to use it again");
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
            let _ = stop_tx.send(true);
            let _ = session.await;
        }
        Cmd::Data {
            state_dir,
            keys,
            data_dir,
            op,
        } => return data(&state_dir, &keys, data_dir, op),
        Cmd::BirthKey {
            state_dir,
            keys,
            serial,
            out,
        } => {
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            let ks = keystore(&keys, &state_dir)?;
            let key = ks.key("idevid")?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, serial.clone());
            let csr = params.serialize_request(&palisade_pki::SignerKey(key))?;
            std::fs::write(&out, csr.pem()?)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "birth key for {serial} is in the {} keystore ({:?}); CSR written to {}",
                keys.keystore,
                ks.protection(),
                out.display()
            );
        }
        Cmd::BootMeasure {
            state_dir,
            tpm_tcti,
            image,
            firmware_version,
        } => boot_measure(&state_dir, &tpm_tcti, &image, &firmware_version)?,
        Cmd::Update {
            common,
            ota,
            once,
            interval,
            reboot_command,
        } => {
            return update(
                &common,
                &ota,
                once,
                interval,
                reboot_command.as_deref(),
                None,
            )
            .await;
        }
        Cmd::Boot { ota } => {
            let cfg = ota.config()?;
            let ctl = palisade_agent::ota::BootControl::open(&cfg.fw_env_config)?;
            match palisade_agent::ota::boot(&ctl, &cfg) {
                Ok((slot, img)) => println!(
                    "booted slot {} version {} sha256 {}",
                    slot.as_str(),
                    img.version,
                    img.sha256
                ),
                Err(e) => {
                    eprintln!("boot failed: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Cmd::SlotInit {
            ota,
            image,
            firmware_version,
        } => {
            let img = palisade_agent::ota::init_slot(&ota.config()?, &image, &firmware_version)?;
            println!("slot a holds {} ({} bytes)", img.sha256, img.length);
        }
        Cmd::Status { state_dir } => match palisade_agent::state::read_identity(&state_dir)? {
            Some(id) => {
                let keys = if state_dir.join("op.tpmkey").exists() {
                    "tpm (TPM-resident, wrapped blob in the state directory)"
                } else if state_dir.join("op.key").exists() {
                    "software (development keystore)"
                } else {
                    "pkcs11 token (or not on this host)"
                };
                println!(
                    "device {}\ncertificate {}\nvalid {} .. {}\nkeys {keys}",
                    id.device_id, id.serial, id.not_before, id.not_after
                );
            }
            None => {
                eprintln!("not enrolled");
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn data(
    state_dir: &std::path::Path,
    keys: &KeystoreArgs,
    data_dir: Option<PathBuf>,
    op: DataOp,
) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let ks = keystore(keys, state_dir)?;
    let dir = data_dir.unwrap_or_else(|| state_dir.join(palisade_agent::vault::STATE_VAULT));
    let create = matches!(op, DataOp::Put { .. });
    let Some(v) = palisade_agent::vault::Vault::open(ks.as_ref(), &dir, create)? else {
        eprintln!(
            "error: the {} keystore holds no data key (destroyed by a wipe, or never made): nothing in {} can be decrypted",
            keys.keystore,
            dir.display()
        );
        return Ok(ExitCode::from(3));
    };
    match op {
        DataOp::Put { name, file } => {
            let bytes = match file {
                Some(f) => std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                None => {
                    let mut b = vec![];
                    std::io::stdin()
                        .take(palisade_agent::vault::MAX_FILE as u64 + 1)
                        .read_to_end(&mut b)?;
                    b
                }
            };
            v.put(&name, &bytes)?;
        }
        DataOp::Get { name, file } => {
            let plain = match file {
                Some(f) => v.decrypt(
                    &name,
                    &std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                )?,
                None => v
                    .get(&name)?
                    .with_context(|| format!("no file {name} in {}", dir.display()))?,
            };
            std::io::stdout().write_all(&plain)?;
        }
        DataOp::List => {
            for n in v.list()? {
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tpm")]
fn boot_measure(
    state_dir: &std::path::Path,
    tcti: &str,
    image: &std::path::Path,
    version: &str,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    std::fs::create_dir_all(state_dir)?;
    let tpm = palisade_tpm::Tpm::open(tcti)?;
    let e = palisade_agent::tpm::measure_boot(&tpm, state_dir, &bytes, version)?;
    eprintln!(
        "measured firmware {version} (sha256 {}) into PCR {}",
        e.digest, e.pcr
    );
    Ok(())
}

#[cfg(not(feature = "tpm"))]
fn boot_measure(_: &std::path::Path, _: &str, _: &std::path::Path, _: &str) -> anyhow::Result<()> {
    anyhow::bail!("this agent was built without TPM support (cargo feature \"tpm\")")
}

fn main() -> ExitCode {
    // RUST_LOG overrides; the TSS library's per-command chatter is kept out.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tss_esapi=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand (duplicate flags,
    /// conflicting names), which otherwise only fire when that subcommand runs.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
