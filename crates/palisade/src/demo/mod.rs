//! `palisade demo`: one command that shows the product working. It starts a
//! server on its own data directory, runs the operator's real workflow
//! against it (a supplier and its signing key, three models with network
//! policies, a TUF key ceremony, signed releases, two sites, console
//! accounts), brings up a simulated fleet in a second process (real agents:
//! EST enrolment, MQTT sessions, telemetry, A/B updates; thermostats keep
//! their keys on SoftHSM2 tokens when SoftHSM2 is installed), runs a staged
//! rollout, plays a few attacks that raise alerts, and prints the console's
//! URL and a demo sign-in.
//!
//! Nothing here is a stand-in: the demo drives the same API, gateway and
//! agents as production. The data directory is the demo's own; a directory
//! that is not a demo's is never touched.

mod fleet;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hyper::Method;
use palisade_server::Config;
use ring::rand::SecureRandom;
use serde_json::{Value, json};

pub use fleet::{FleetArgs, run as run_fleet};

use crate::Global;
use crate::client::Client;
use crate::keys::KeysCmd;
use crate::output::say;

/// Options of `palisade demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the console and API.
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Address of the MQTT device gateway.
    #[arg(long, default_value = "127.0.0.1:8883", value_name = "ADDR:PORT")]
    mqtt_listen: SocketAddr,
    /// Address of the CoAP-over-DTLS device endpoint (UDP).
    #[arg(long, default_value = "127.0.0.1:5684", value_name = "ADDR:PORT")]
    coap_listen: SocketAddr,
    /// Address of the CoAP listener for OSCORE and EDHOC (UDP).
    #[arg(long, default_value = "127.0.0.1:5683", value_name = "ADDR:PORT")]
    oscore_listen: SocketAddr,
    /// Simulated devices, over three models (at least 6).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(6..=5000))]
    devices: u32,
    /// Once the demo is ready, write its console URL and sign-in here (JSON,
    /// mode 0600), for scripts and tests.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long, value_name = "SECS")]
    run_for: Option<u64>,
}

/// Marks a data directory as the demo's (so a re-run may replace it).
const MARKER: &str = ".palisade-demo";

/// The demo's models: id, share of the fleet (percent), id prefix, the
/// firmware most devices report.
const MODELS: [(&str, u32, &str, &str); 3] = [
    ("thermostat", 30, "th", "1.0.0"),
    ("camera", 40, "cam", "3.2.0"),
    ("door-lock", 30, "lock", "0.9.1"),
];

/// A fresh demo directory: an old demo's is replaced, anything else refused.
fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a demo directory: pass --data-dir with a new path",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by `palisade demo`; safe to delete\n",
    )?;
    Ok(())
}

/// Server logs go to DIR/server.log, so the terminal shows the demo's story.
fn log_to_file(dir: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(dir.join("server.log"))?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// A random password of 20 letters and digits.
fn password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Writes `text` to `path`, readable only by its owner.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

async fn post(api: &Client, path: &str, body: Value) -> anyhow::Result<Value> {
    api.call(Method::POST, path, Some(&body))
        .await
        .with_context(|| format!("POST {path}"))
}

async fn put(api: &Client, path: &str, body: Value) -> anyhow::Result<Value> {
    api.call(Method::PUT, path, Some(&body))
        .await
        .with_context(|| format!("PUT {path}"))
}

/// One step of the story, told on the terminal.
fn step(n: usize, what: &str) {
    say(format!("[{n}/9] {what}"));
}

/// The MUD file (RFC 8520) of `model`: it may reach the control plane and its
/// vendor's cloud on HTTPS, nothing else.
fn mud(model: &str) -> Value {
    json!({
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": format!("https://acme.example/mud/{model}.json"),
            "mfg-name": "acme",
            "systeminfo": format!("acme {model}"),
            "from-device-policy": {"access-lists": {"access-list": [{"name": format!("{model}-from")}]}}
        },
        "ietf-access-control-list:acls": {"acl": [{
            "name": format!("{model}-from"),
            "aces": {"ace": [{
                "name": "cloud",
                "matches": {
                    "ipv4": {"destination-ipv4-network": "198.51.100.10/32", "protocol": 6},
                    "tcp": {"destination-port": {"operator": "eq", "port": 443}}
                },
                "actions": {"forwarding": "accept"}
            }]}
        }]}
    })
}

/// Uploads release `version` of `model`: the image, a CycloneDX SBOM and SLSA
/// provenance signed with the supplier's key.
async fn release(
    api: &Client,
    key: &[u8],
    model: &str,
    version: &str,
    security_version: u64,
) -> anyhow::Result<()> {
    let image = format!("{model} firmware {version} (demo image)").into_bytes();
    let sha = palisade_pki::sha256_hex(&image);
    let (status, body) = api
        .send_bytes(
            Method::PUT,
            "/api/v1/blobs",
            Some(("application/octet-stream", image.into())),
        )
        .await?;
    if !status.is_success() {
        bail!(
            "uploading the {model} {version} image failed ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    let statement = json!({
        "_type": palisade_release::STATEMENT_V1,
        "subject": [{"name": format!("{model}-{version}.img"), "digest": {"sha256": sha}}],
        "predicateType": palisade_release::SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {"buildType": "https://acme.example/build@v1", "externalParameters": {"tag": version}},
            "runDetails": {"builder": {"id": "https://ci.acme.example/builder"}}
        }
    });
    let provenance = palisade_release::sign_envelope(
        palisade_release::IN_TOTO_PAYLOAD_TYPE,
        statement.to_string().as_bytes(),
        key,
    )?;
    let sbom = json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "components": [
            {"type": "library", "name": "openssl", "version": "3.0.15", "purl": "pkg:generic/openssl@3.0.15"},
            {"type": "library", "name": "busybox", "version": "1.36.1", "purl": "pkg:generic/busybox@1.36.1"}
        ]
    });
    post(
        api,
        "/api/v1/releases",
        json!({
            "model": model, "version": version, "security_version": security_version,
            "image_sha256": sha, "sbom": sbom, "provenance": provenance,
        }),
    )
    .await?;
    Ok(())
}

/// The supplier: its manufacturer CA, its release-signing key (returned,
/// PKCS#8 Ed25519).
async fn supplier(api: &Client, dir: &Path) -> anyhow::Result<Vec<u8>> {
    use ring::signature::KeyPair;
    let factory = dir.join("factory/acme");
    crate::factory::init_ca("acme", &factory, 3650)?;
    let ca_pem = std::fs::read_to_string(factory.join("ca.pem"))?;
    post(
        api,
        "/api/v1/suppliers",
        json!({ "name": "acme", "ca_pem": ca_pem, "disclosure_contact": "mailto:psirt@acme.example" }),
    )
    .await?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("generating the release key failed"))?;
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("reading the release key failed"))?;
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(kp.public_key().as_ref());
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    post(
        api,
        "/api/v1/suppliers/acme/keys",
        json!({ "public_key_pem": pem }),
    )
    .await?;
    Ok(pkcs8.as_ref().to_vec())
}

/// The offline TUF ceremony (root 2-of-3, targets 2-of-2) and the root
/// installed on the server; returns (key dir, root file).
async fn tuf_ceremony(api: &Client, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let keys = dir.join("ceremony");
    crate::keys::keys(KeysCmd::Generate {
        dir: keys.clone(),
        names: ["root-1", "root-2", "root-3", "targets-1", "targets-2"]
            .map(String::from)
            .to_vec(),
    })
    .await?;
    let online: Value = api
        .call(Method::GET, "/api/v1/tuf/online-keys", None)
        .await?;
    let online_file = dir.join("ceremony/online.json");
    std::fs::write(&online_file, serde_json::to_vec_pretty(&online)?)?;
    let root = dir.join("ceremony/root.json");
    crate::keys::keys(KeysCmd::Root {
        dir: keys.clone(),
        root_key: ["root-1", "root-2", "root-3"].map(String::from).to_vec(),
        root_threshold: 2,
        targets_key: ["targets-1", "targets-2"].map(String::from).to_vec(),
        targets_threshold: 2,
        online_keys: online_file,
        root_version: 1,
        expires_days: 365,
        sign_with: ["root-1", "root-2"].map(String::from).to_vec(),
        previous_root: None,
        out: root.clone(),
    })
    .await?;
    put(
        api,
        "/api/v1/tuf/root",
        serde_json::from_slice(&std::fs::read(&root)?)?,
    )
    .await?;
    Ok((keys, root))
}

/// Signs the server's targets draft with both targets keys and publishes it.
async fn publish_targets(api: &Client, keys: &Path, root: &Path) -> anyhow::Result<()> {
    let draft: Value = api
        .call(Method::GET, "/api/v1/tuf/targets-draft", None)
        .await?;
    let draft_file = keys.join("draft.json");
    std::fs::write(&draft_file, serde_json::to_vec(&draft)?)?;
    let signed = keys.join("targets.json");
    crate::keys::keys(KeysCmd::SignTargets {
        dir: keys.to_path_buf(),
        root: root.to_path_buf(),
        key: ["targets-1", "targets-2"].map(String::from).to_vec(),
        draft: draft_file,
        out: signed.clone(),
    })
    .await?;
    put(
        api,
        "/api/v1/tuf/targets",
        serde_json::from_slice(&std::fs::read(&signed)?)?,
    )
    .await?;
    Ok(())
}

/// Two sites: a plant with VLAN segments, an office behind a legacy MQTT
/// bridge.
async fn sites(api: &Client, https: u16, mqtt: u16) -> anyhow::Result<()> {
    put(
        api,
        "/api/v1/sites/plant-north",
        json!({
            "resolver": "10.20.0.1",
            "control_plane": [["127.0.0.1", https], ["127.0.0.1", mqtt]],
            "segments": [
                {"name": "sensors", "interface": "eth1.10", "vlan": 10, "subnet": "10.20.1.0/24"},
                {"name": "cameras", "interface": "eth1.20", "vlan": 20, "subnet": "10.20.2.0/24"},
                {"name": "quarantine", "interface": "eth1.99", "vlan": 99, "subnet": "10.20.99.0/24", "quarantine": true}
            ],
            "model_segments": {"thermostat": "sensors", "camera": "cameras"}
        }),
    )
    .await?;
    put(
        api,
        "/api/v1/sites/office-south",
        json!({
            "resolver": "10.30.0.1",
            "control_plane": [["127.0.0.1", https], ["127.0.0.1", mqtt]],
            "segments": [{"name": "iot", "interface": "eth1", "subnet": "10.30.1.0/24"}],
            "legacy_mqtt_port": 1883
        }),
    )
    .await?;
    Ok(())
}

/// A simulated edge gateway at plant-north, enrolled as a real one is (its
/// own identity over EST, registered as the site's edge), that fetches the
/// site's signed bundle and reports what a real edge reads from its neighbour
/// table and the site's DHCP leases: besides the fleet, a camera nobody
/// enrolled and a technician's laptop, which the console lists as unmanaged
/// devices. It enforces nothing: there is no network to enforce on.
async fn simulated_edge(api: &Client, url: &str, root: &[u8], dir: &Path) -> anyhow::Result<()> {
    const EDGE: &str = "edge-plant-north";
    post(
        api,
        "/api/v1/models",
        json!({ "id": "edge-gw", "description": "Palisade edge gateway" }),
    )
    .await?;
    let est = palisade_agent::EstClient::new(url, root, None)?;
    let edge_dir = dir.join("edge");
    let keys = std::sync::Arc::new(palisade_agent::SoftwareKeystore::new(&edge_dir));
    let (agent, _) = crate::sim::enrolled(api, est, EDGE, &edge_dir, "edge-gw", keys).await?;
    post(
        api,
        "/api/v1/sites/plant-north/edges",
        json!({ "edge": EDGE }),
    )
    .await?;
    let id = agent.identity()?.context("the edge did not enrol")?;
    let identity = || -> anyhow::Result<palisade_agent::tls_key::ClientIdentity> {
        Ok(palisade_agent::tls_key::ClientIdentity::new(
            vec![rustls::pki_types::CertificateDer::from(id.cert_der.clone())],
            agent.operational_key()?,
        ))
    };
    let get = |path: &'static str| {
        let identity = identity();
        let agent = &agent;
        async move {
            let (status, body) = agent.est().call(Method::GET, path, identity?, None).await?;
            anyhow::ensure!(status.is_success(), "{path}: HTTP {status}");
            anyhow::Ok(body)
        }
    };
    // The policy key pinned, the bundle verified under it, as the edge does.
    let key: Value = serde_json::from_slice(&get("/edge/v1/key").await?)?;
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        key["ed25519_public"].as_str().unwrap_or_default(),
    )?;
    let signed: palisade_policy::signed::SignedBundle =
        serde_json::from_slice(&get("/edge/v1/bundle?after=0&wait=0").await?)?;
    let version = palisade_policy::signed::verify(&signed, &key, "plant-north", 0)?.version;
    let report = json!({
        "applied_version": version, "counters": {},
        "own": ["10.20.1.1", "10.20.2.1", "10.20.99.1"],
        "hosts": [
            {"address": "10.20.2.201", "mac": "3c:84:6a:12:9e:01", "hostname": "IPCAM-9E01", "source": "leases"},
            {"address": "10.20.2.201", "mac": "3c:84:6a:12:9e:01", "source": "neighbours"},
            {"address": "10.20.1.77", "mac": "f0:2f:74:aa:10:77", "hostname": "tech-laptop", "source": "leases"},
        ],
    });
    let (status, body) = agent
        .est()
        .call(
            Method::POST,
            "/edge/v1/status",
            identity()?,
            Some(report.to_string().into_bytes()),
        )
        .await?;
    anyhow::ensure!(
        status.is_success(),
        "the edge's status report: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Where device `i` of `model` sits: (site, segment, address).
fn placement(model: &str, i: u32) -> (&'static str, &'static str, String) {
    match model {
        "thermostat" if i % 4 == 3 => ("office-south", "iot", format!("10.30.1.{}", 10 + i)),
        "thermostat" => ("plant-north", "sensors", format!("10.20.1.{}", 10 + i)),
        "camera" => ("plant-north", "cameras", format!("10.20.2.{}", 10 + i)),
        _ => ("office-south", "iot", format!("10.30.1.{}", 100 + i)),
    }
}

/// The fleet's plan: every device, its model, keystore and firmware.
fn plan(total: u32, secure_elements: bool) -> Vec<fleet::PlannedDevice> {
    let mut out = vec![];
    let mut given = 0;
    for (k, (model, share, prefix, firmware)) in MODELS.iter().enumerate() {
        let n = if k + 1 == MODELS.len() {
            total - given
        } else {
            total * share / 100
        };
        given += n;
        for i in 1..=n {
            // Three cameras run a build no release describes.
            let firmware = if *model == "camera" && i <= 3 {
                "3.1.0-beta"
            } else {
                firmware
            };
            out.push(fleet::PlannedDevice {
                id: format!("{prefix}-{i:04}"),
                model: (*model).to_owned(),
                secure_element: secure_elements && *model == "thermostat",
                firmware: firmware.to_owned(),
                ota: *model == "thermostat",
            });
        }
    }
    out
}

/// The child process running the simulated fleet; killed (by PID) on drop.
struct FleetProcess(std::process::Child);

impl Drop for FleetProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Failed EST enrolments with guessed tokens: an intruder probing the
/// enrolment endpoint (the failed-login detector sees them).
async fn guess_tokens(url: &str, root: &[u8], dir: &Path) -> anyhow::Result<()> {
    let est = palisade_agent::EstClient::new(url, root, Some("camera".into()))?;
    let state = dir.join("intruder");
    for i in 0..10 {
        let agent = palisade_agent::Agent::new(
            &state,
            std::sync::Arc::new(palisade_agent::SoftwareKeystore::new(&state)),
            est.clone(),
            std::sync::Arc::new(palisade_agent::SystemClock),
        );
        let refused = agent
            .enroll(&palisade_agent::EnrollAuth::Token {
                device: format!("intruder-{i:02}"),
                token: format!("guess-{i:04}-0000-0000"),
            })
            .await
            .is_err();
        if !refused {
            bail!("the server accepted a guessed enrolment token");
        }
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(global: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = global
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("palisade-demo"));
    prepare(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    log_to_file(&dir)?;

    step(1, "starting the server on its own data directory");
    let mut config = Config {
        data_dir: dir.clone(),
        listen: args.listen,
        mqtt_listen: Some(args.mqtt_listen),
        coap_listen: Some(args.coap_listen),
        oscore_listen: Some(args.oscore_listen),
        ..Config::default()
    };
    config.monitoring.flow_listen = None;
    config.ota.rollout_tick_ms = 1_000;
    config.posture.interval_secs = 60;
    config.validate()?;
    let server = crate::serve::start(config)
        .await
        .context("starting the demo server (is another Palisade using the ports? see --listen)")?;
    let https_port = server.handle.addr.port();
    let mqtt_port = server
        .handle
        .mqtt_addr
        .map_or(args.mqtt_listen.port(), |a| a.port());
    let api = crate::commands::client(&Global {
        data_dir: Some(dir.clone()),
        ..Global::default()
    })?;

    step(
        2,
        "a supplier with its manufacturer CA and release-signing key",
    );
    let key = supplier(&api, &dir).await?;

    step(
        3,
        "three models, their network policies (MUD) and support periods",
    );
    let secure_elements = fleet::softhsm_installed();
    post(
        &api,
        "/api/v1/models",
        json!({ "id": "thermostat", "supplier": "acme", "support_until": "2031-12-31",
                "security_update_days": 30,
                "description": if secure_elements { "Hall thermostat, keys on a secure element" } else { "Hall thermostat" } }),
    )
    .await?;
    post(
        &api,
        "/api/v1/models",
        json!({ "id": "camera", "supplier": "acme", "support_until": "2030-06-30",
                "security_update_days": 14, "description": "PoE security camera" }),
    )
    .await?;
    post(
        &api,
        "/api/v1/models",
        json!({ "id": "door-lock", "support_until": "2026-06-30",
                "description": "Door lock from a vendor that left the market" }),
    )
    .await?;
    for model in ["thermostat", "camera"] {
        put(
            &api,
            &format!("/api/v1/models/{model}/mud"),
            json!({ "mud": mud(model) }),
        )
        .await?;
    }

    step(
        4,
        "a TUF key ceremony and signed releases (SBOM, SLSA provenance)",
    );
    let (keys, root) = tuf_ceremony(&api, &dir).await?;
    release(&api, &key, "thermostat", "1.0.0", 1).await?;
    release(&api, &key, "thermostat", "1.1.0", 2).await?;
    release(&api, &key, "camera", "3.2.0", 4).await?;
    publish_targets(&api, &keys, &root).await?;

    step(
        5,
        "two sites: plant-north (VLAN segments), office-south (legacy MQTT bridge)",
    );
    sites(&api, https_port, mqtt_port).await?;

    step(6, "console accounts");
    let admin_password = password()?;
    let auditor_password = password()?;
    post(
        &api,
        "/api/v1/operators",
        json!({ "name": "demo", "role": "admin", "password": admin_password }),
    )
    .await?;
    post(
        &api,
        "/api/v1/operators",
        json!({ "name": "auditor", "role": "auditor", "password": auditor_password }),
    )
    .await?;

    step(
        7,
        &format!(
            "{} simulated devices enrol over EST and connect over MQTT (log: {})",
            args.devices,
            dir.join("fleet.log").display()
        ),
    );
    if !secure_elements {
        say(
            "      SoftHSM2 is not installed: every device keeps its keys in software (apt-get install softhsm2 for secure-element thermostats)",
        );
    }
    let devices = plan(args.devices, secure_elements);
    let plan_file = dir.join("fleet-plan.json");
    std::fs::write(&plan_file, serde_json::to_vec_pretty(&devices)?)?;
    let log = std::fs::File::create(dir.join("fleet.log"))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    if secure_elements {
        command.env("SOFTHSM2_CONF", dir.join("softhsm/softhsm2.conf"));
    }
    let child = command
        .arg("demo-fleet")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--plan")
        .arg(&plan_file)
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the simulated fleet")?;
    let mut fleet_process = FleetProcess(child);
    let connecting = crate::sim::bar(devices.len(), "connected");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let n = crate::sim::connected(&api).await.unwrap_or(0);
        connecting.set_position(n as u64);
        if n >= devices.len() {
            break;
        }
        if let Ok(Some(status)) = fleet_process.0.try_wait() {
            bail!(
                "the simulated fleet stopped ({status}); see {}",
                dir.join("fleet.log").display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {n} of {} devices connected within 5 minutes; see {}",
                devices.len(),
                dir.join("fleet.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    connecting.finish();
    let mut per_model = std::collections::BTreeMap::<&str, u32>::new();
    for d in &devices {
        let i = per_model.entry(d.model.as_str()).or_default();
        *i += 1;
        let (site, segment, address) = placement(&d.model, *i);
        put(
            &api,
            &format!("/api/v1/devices/{}/placement", d.id),
            json!({ "site": site, "segment": segment, "address": address,
                    "allow_open": d.model == "door-lock" }),
        )
        .await?;
        let mut tags = vec![if i.is_multiple_of(2) {
            "floor-1"
        } else {
            "floor-2"
        }];
        if *i <= 2 {
            tags.push("lab");
        }
        put(
            &api,
            &format!("/api/v1/devices/{}/tags", d.id),
            json!({ "tags": tags }),
        )
        .await?;
    }

    let root_pem = std::fs::read(dir.join("ca/root.pem"))?;
    simulated_edge(&api, &server.url, &root_pem, &dir)
        .await
        .context("the simulated edge gateway")?;

    step(
        8,
        "a staged rollout of thermostat 1.1.0 (waves of 10 %, 50 %, 100 %)",
    );
    post(
        &api,
        "/api/v1/rollouts",
        json!({ "name": "thermostat-1.1.0", "model": "thermostat", "release_version": "1.1.0",
                "waves": ["10%", "50%", "100%"], "success_threshold": 0.9, "failure_threshold": 0.3,
                "max_concurrency": 0 }),
    )
    .await?;

    step(
        9,
        "attacks: guessed enrolment tokens, an SSH brute force on a door lock, a camera's firmware changed, a cloned identity",
    );
    guess_tokens(&server.url, &root_pem, &dir).await?;
    // The device-side attacks run in the fleet process; wait for their alerts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let alerts: Vec<Value> = api.call(Method::GET, "/api/v1/alerts", None).await?;
        let kinds: std::collections::BTreeSet<String> = alerts
            .iter()
            .filter_map(|a| a["detector"].as_str().map(str::to_owned))
            .collect();
        let attacks = ["failed_logins", "firmware_unassigned", "cloned_identity"];
        if attacks.iter().all(|k| kinds.contains(*k)) || tokio::time::Instant::now() > deadline {
            say(format!(
                "      alerts raised: {}",
                kinds.into_iter().collect::<Vec<_>>().join(", ")
            ));
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A fresh posture evaluation, so the console's first view is current.
    let _: Value = api
        .call(Method::GET, "/api/v1/posture?fresh=true", None)
        .await?;

    let console = format!("{}/", server.url);
    write_private(
        &dir.join("demo-login"),
        &format!(
            "console: {console}\nadmin:   demo / {admin_password}\nauditor: auditor / {auditor_password}\n"
        ),
    )?;
    if let Some(f) = &args.ready_file {
        write_private(
            f,
            &serde_json::to_string_pretty(&json!({
                "url": console, "root_ca": dir.join("ca/root.pem"), "data_dir": dir,
                "admin": {"name": "demo", "password": admin_password},
                "auditor": {"name": "auditor", "password": auditor_password},
            }))?,
        )?;
    }
    say(format!(
        "\nThe demo is running. Open the console:\n\n    {console}\n\n  sign in as   demo / {admin_password}   (admin)\n           or auditor / {auditor_password}   (read-only)\n\n  Your browser will warn about the certificate: it comes from the demo's own CA\n  ({}). The sign-in is also in {}.\n  The CLI works too:  palisade --data-dir {} device list\n\nCtrl-C stops the demo.",
        dir.join("ca/root.pem").display(),
        dir.join("demo-login").display(),
        dir.display(),
    ));
    match args.run_for {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => crate::serve::wait_for_signal().await?,
    }
    say("stopping the demo");
    drop(fleet_process);
    server.handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
