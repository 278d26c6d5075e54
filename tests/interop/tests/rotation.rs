//! CA rotation without a fleet outage. Fifty simulated devices (`palisade-sim`:
//! real agents, EST enrolment, MQTT sessions over mutual TLS) stay connected
//! while the issuing CA and then the root are rotated on the running server:
//! - after each rotation `palisade ca renew-fleet` asks every device to renew;
//!   each renews over EST, reconnects with a certificate from the new issuing
//!   CA, and no device is away longer than its first renewal retry (5 s);
//! - after the root rotation each agent has taken the new root from EST
//!   `cacerts` (vouched for by the old root's cross-certificate) into its
//!   `trust.pem`;
//! - `openssl verify` accepts every device certificate the fleet held (before,
//!   between and after the rotations) against the old root alone and against
//!   the new root alone;
//! - the old CAs retire (an issuing CA with valid certificates only with
//!   `--force`), after which `ca/root.pem` is the new root alone, and a device
//!   key and certificate still reach the gateway with OpenSSL's client
//!   (`mosquitto_pub`) trusting only the new root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;
use palisade_pki::{inspect_certificate, pem_certificates};
use serde_json::Value;

const DEVICES: usize = 50;
/// The agent's first back-off after a lost session (`schedule::backoff`).
const FIRST_RETRY_MS: i64 = 5_000;

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ids() -> Vec<String> {
    (1..=DEVICES).map(|i| format!("sim-{i:04}")).collect()
}

/// Every device's operational certificate now (DER), in id order.
fn fleet_certs(state: &Path) -> Vec<Vec<u8>> {
    ids()
        .iter()
        .map(|id| {
            let text = std::fs::read_to_string(state.join(id).join("op.pem")).unwrap();
            pem_certificates(&text).unwrap().remove(0)
        })
        .collect()
}

fn ca_list(server: &ServerProc) -> Vec<Value> {
    let v: Value = serde_json::from_str(&server.cli_ok(&["ca", "list", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn current_issuing(list: &[Value]) -> Value {
    list.iter()
        .find(|c| c["kind"] == "issuing" && c["status"] == "current")
        .cloned()
        .unwrap()
}

/// Asks the fleet to renew, then waits until every device holds a
/// certificate from `issuing` (its subject) and all are connected again.
fn renew_fleet_onto(server: &ServerProc, state: &Path, issuing: &str) -> Duration {
    let started = Instant::now();
    let out: Value =
        serde_json::from_str(&server.cli_ok(&["ca", "renew-fleet", "--json"])).unwrap();
    assert_eq!(out["queued"], DEVICES, "{out}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let moved = fleet_certs(state)
            .iter()
            .filter(|c| inspect_certificate(c).unwrap().issuer == issuing)
            .count();
        let connected = server.connected_devices();
        if moved == DEVICES && connected == DEVICES {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s only {moved} devices renewed onto {issuing}, {connected} connected"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn write_pems(path: &Path, ders: &[&Vec<u8>]) {
    let text: String = ders
        .iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.to_vec())))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// `openssl verify` of every certificate in `leaves` against `root` alone,
/// with the bundle's certificates issued by that root as the chain.
fn openssl_verify_all(dir: &Path, name: &str, root: &[u8], bundle: &[Vec<u8>], leaves: &[Vec<u8>]) {
    let subject = inspect_certificate(root).unwrap().subject;
    let below: Vec<&Vec<u8>> = bundle
        .iter()
        .filter(|c| {
            let i = inspect_certificate(c).unwrap();
            i.issuer == subject && i.subject != subject
        })
        .collect();
    let ca = dir.join(format!("{name}-root.pem"));
    let untrusted = dir.join(format!("{name}-chain.pem"));
    write_pems(&ca, &[&root.to_vec()]);
    write_pems(&untrusted, &below);
    let mut files = vec![];
    for (n, leaf) in leaves.iter().enumerate() {
        let f = dir.join(format!("{name}-leaf-{n}.pem"));
        write_pems(&f, &[leaf]);
        files.push(f);
    }
    let o = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca)
        .arg("-untrusted")
        .arg(&untrusted)
        .args(&files)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "openssl verify against {name}: {out}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(": OK")).count(),
        leaves.len(),
        "{out}"
    );
}

/// The longest time any device was away (a disconnection to its next
/// connection) since `since_ms`, and how many reconnections there were.
fn longest_absence(server: &ServerProc, since_ms: i64) -> Result<(i64, String, usize), String> {
    let mut worst = (0, String::new());
    let mut reconnections = 0;
    for id in ids() {
        let t: Value = serde_json::from_str(&server.api_get(&format!(
            "/api/v1/devices/{id}/timeline?since_ms={since_ms}"
        )))
        .unwrap();
        let mut away_since = None;
        for item in t["items"].as_array().unwrap() {
            if item["source"] != "event" {
                continue;
            }
            let at = item["at_ms"].as_i64().unwrap();
            match item["kind"].as_str().unwrap() {
                "disconnected" => away_since = away_since.or(Some(at)),
                "connected" => {
                    reconnections += 1;
                    if let Some(from) = away_since.take()
                        && at - from > worst.0
                    {
                        worst = (at - from, id.clone());
                    }
                }
                _ => {}
            }
        }
        if away_since.is_some() {
            return Err(format!("{id} disconnected and did not come back: {t}"));
        }
    }
    Ok((worst.0, worst.1, reconnections))
}

fn now_ms() -> i64 {
    palisade_core::Clock::now_ms(&palisade_core::SystemClock)
}

#[test]
fn fifty_devices_ride_through_an_issuing_ca_rotation_and_a_root_rotation() {
    for tool in ["openssl", "mosquitto_pub", "curl"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    let state: PathBuf = dir.path().join("sim");
    let old_root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let old_root = pem_certificates(std::str::from_utf8(&old_root).unwrap())
        .unwrap()
        .remove(0);
    let sim_log = dir.path().join("sim.log");
    let _sim = Sim(Command::new(palisade_sim_bin())
        .args(["--devices", &DEVICES.to_string(), "--duration", "0"])
        .args(["--telemetry-every", "5", "--model", "sim"])
        .arg("--state-dir")
        .arg(&state)
        .env("PALISADE_DATA_DIR", &server.data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sim_log).unwrap())
        .spawn()
        .unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.connected_devices() < DEVICES {
        assert!(
            Instant::now() < deadline,
            "the fleet did not connect: {}",
            std::fs::read_to_string(&sim_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let first_issuing = current_issuing(&ca_list(&server));
    let mut held = fleet_certs(&state);
    // Let the connections' events land before the window opens.
    std::thread::sleep(Duration::from_secs(2));
    let since = now_ms();

    // 1. The issuing CA.
    let list: Value =
        serde_json::from_str(&server.cli_ok(&["ca", "rotate-issuing", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    let second = current_issuing(list);
    assert_ne!(second["serial"], first_issuing["serial"]);
    let old = list
        .iter()
        .find(|c| c["serial"] == first_issuing["serial"])
        .unwrap();
    assert_eq!(old["status"], "in-service", "{old}");
    let took = renew_fleet_onto(&server, &state, second["subject"].as_str().unwrap());
    eprintln!("issuing CA rotation: {DEVICES} devices renewed and reconnected in {took:?}");
    held.extend(fleet_certs(&state));
    // Each issuing CA has its own CRL at the URL its certificates name.
    let crl = server.api_get_bytes(&format!("/crl/{}", second["serial"].as_str().unwrap()));
    std::fs::write(dir.path().join("second.crl"), &crl).unwrap();
    let o = sh(
        "openssl crl -inform DER -in second.crl -noout -issuer",
        dir.path(),
    );
    assert!(
        text(&o).contains(
            second["subject"]
                .as_str()
                .unwrap()
                .split("CN=")
                .last()
                .unwrap()
        ),
        "{}",
        text(&o)
    );

    // 2. The root.
    let list: Value =
        serde_json::from_str(&server.cli_ok(&["ca", "rotate-root", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    let third = current_issuing(list);
    let new_root = list
        .iter()
        .find(|c| c["kind"] == "root" && c["status"] == "current")
        .unwrap();
    let new_root_der = pem_certificates(new_root["pem"].as_str().unwrap())
        .unwrap()
        .remove(0);
    assert_ne!(new_root_der, old_root);
    assert!(
        list.iter().any(|c| c["kind"] == "cross"),
        "the new root is cross-certified: {list:?}"
    );
    let took = renew_fleet_onto(&server, &state, third["subject"].as_str().unwrap());
    eprintln!("root rotation: {DEVICES} devices renewed and reconnected in {took:?}");
    held.extend(fleet_certs(&state));
    for id in ids() {
        let trust = std::fs::read_to_string(state.join(&id).join("trust.pem")).unwrap();
        assert_eq!(
            pem_certificates(&trust).unwrap(),
            vec![new_root_der.clone()],
            "{id} took the new root"
        );
    }
    // Connection events reach the timeline in batches: wait for the last.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (worst, who, reconnections) = loop {
        match longest_absence(&server, since) {
            Ok(found) => break found,
            Err(why) if Instant::now() < deadline => {
                eprintln!("{why}; looking again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(why) => panic!("{why}"),
        }
    };
    eprintln!(
        "longest absence through both rotations: {worst} ms ({who}); {reconnections} reconnections"
    );
    assert!(
        reconnections >= 2 * DEVICES,
        "every device reconnected after each renewal: {reconnections}"
    );
    assert!(
        worst <= FIRST_RETRY_MS,
        "{who} was away {worst} ms, longer than its first retry"
    );

    // 3. Every chain, old and new, against each root alone.
    let bundle = pem_certificates(&server.api_get("/ca/chain.pem")).unwrap();
    assert_eq!(held.len(), 3 * DEVICES);
    openssl_verify_all(dir.path(), "old", &old_root, &bundle, &held);
    openssl_verify_all(dir.path(), "new", &new_root_der, &bundle, &held);

    // 4. Retiring the old CAs.
    let first = first_issuing["serial"].as_str().unwrap();
    let refused = server.cli(&["ca", "retire", first]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("still has valid certificates"),
        "{}",
        text(&refused)
    );
    server.cli_ok(&["ca", "retire", first, "--force"]);
    server.cli_ok(&[
        "ca",
        "retire",
        second["serial"].as_str().unwrap(),
        "--force",
    ]);
    let old_root_serial = inspect_certificate(&old_root).unwrap().serial_hex;
    let list: Value =
        serde_json::from_str(&server.cli_ok(&["ca", "retire", &old_root_serial, "--json"]))
            .unwrap();
    let retired = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "retired")
        .count();
    assert_eq!(retired, 3, "{list}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let roots =
            pem_certificates(&std::fs::read_to_string(server.data.join("ca/root.pem")).unwrap())
                .unwrap();
        if roots == vec![new_root_der.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ca/root.pem still holds the old root"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.connected_devices(),
        DEVICES,
        "retiring dropped no session"
    );
    // A device certificate from the new issuing CA, with OpenSSL's MQTT client
    // trusting only the new root.
    let device = state.join("sim-0001");
    std::fs::write(
        dir.path().join("new-root.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", new_root_der.clone())),
    )
    .unwrap();
    let o = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt_port().to_string()])
        .arg("--cafile")
        .arg(dir.path().join("new-root.pem"))
        .arg("--cert")
        .arg(device.join("op.pem"))
        .arg("--key")
        .arg(device.join("op.key"))
        .args(["-i", "sim-0001", "-q", "1"])
        .args([
            "-t",
            "palisade/d/sim-0001/telemetry",
            "-m",
            "{\"uptime_s\":1}",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mosquitto_pub with the new root only: {}",
        text(&o)
    );
}
