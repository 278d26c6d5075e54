//! Decommissioning with a verified wipe, end to end with the real
//! `palisade serve`, the real `palisade-agent` and each real keystore: the
//! software keystore, a SoftHSM2 token and an swtpm TPM.
//!
//! * `palisade device decommission D --wipe`: the agent checks the signed
//!   command, destroys its data key, answers with a receipt signed by its
//!   identity key (which OpenSSL verifies independently against the device's
//!   certificate), destroys its identity and stops; the server records
//!   `wipe: verified`. Afterwards the token has no object (`pkcs11-tool`), the
//!   TPM no persistent handle or NV index of the device (`tpm2_getcap`,
//!   `tpm2_nvreadpublic`), the vaults' bytes no longer decrypt, and the
//!   device can neither enrol nor connect, until an admin reinstates it.
//! * Wipe commands unsigned, signed by another key, for another device, for
//!   an earlier certificate or expired are refused by the agent, and nothing
//!   is destroyed; forged receipts (bad signature, another nonce) sent with
//!   the device's own certificate through `mosquitto_pub` are refused by the
//!   server and audited; a device that never answers is decommissioned at
//!   the deadline with `wipe: unconfirmed`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_core::wipe::{self, WipeCommand};
use palisade_interop::agents::*;
use palisade_interop::*;

/// What the application stores through the agent.
const SECRET: &[u8] = b"site survey: door code 4711";

fn server(dir: &Path, wipe_timeout_s: u64) -> ServerProc {
    let cfg = dir.join("palisade.toml");
    std::fs::write(
        &cfg,
        format!("[decommission]\nwipe_timeout_s = {wipe_timeout_s}\n"),
    )
    .unwrap();
    ServerProc::start_with(&dir.join("data"), &["--config", cfg.to_str().unwrap()]).unwrap()
}

fn data(
    server: &ServerProc,
    state: &Path,
    keys: &[&str],
    env: &[(&str, &Path)],
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut c = agent_cmd(server, state, &[]);
    c.arg("data")
        .args(keys)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    run_with_stdin(&mut c, stdin)
}

fn decommission_record(server: &ServerProc, id: &str) -> serde_json::Value {
    serde_json::from_str(&server.cli_ok(&["--json", "device", "decommissioning", id])).unwrap()
}

fn commands(server: &ServerProc, id: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&server.cli_ok(&["--json", "device", "commands", id])).unwrap()
}

/// Waits (bounded) for the acknowledgement of the command whose id is `cmd`.
fn ack_of(server: &ServerProc, device: &str, cmd: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = commands(server, device)
            .into_iter()
            .find(|c| c["id"] == cmd && !c["result"].is_null())
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "command {cmd} was never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn current_serial(server: &ServerProc, id: &str) -> String {
    let out = server.cli_ok(&["--json", "cert", "list", "--device", id]);
    let certs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    certs
        .iter()
        .find(|c| c["status"] == "valid")
        .and_then(|c| c["serial"].as_str())
        .unwrap()
        .to_owned()
}

/// The device's certificate (PEM) by serial.
fn cert_pem(server: &ServerProc, serial: &str) -> String {
    let out = server.cli_ok(&["--json", "cert", "show", serial]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["pem"].as_str().unwrap().to_owned()
}

/// OpenSSL checks the receipt's signature with the public key of the
/// device's certificate, over the domain tag and the receipt's bytes.
fn openssl_verifies_receipt(dir: &Path, receipt: &serde_json::Value, cert_pem: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(receipt["payload"].as_str().unwrap()).unwrap();
    let sig = b64.decode(receipt["signature"].as_str().unwrap()).unwrap();
    let cert = dir.join("device.pem");
    let msg = dir.join("receipt.msg");
    let sig_file = dir.join("receipt.sig");
    let pubkey = dir.join("device.pub");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&msg, wipe::receipt_message(&payload)).unwrap();
    std::fs::write(&sig_file, sig).unwrap();
    let o = Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&pubkey, &o.stdout).unwrap();
    let o = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&msg)
        .output()
        .unwrap();
    assert!(text(&o).contains("Verified OK"), "openssl: {}", text(&o));
}

/// The keystore under test, and how to look inside it afterwards.
enum Store<'a> {
    Software,
    Token(&'a SoftHsm),
    Tpm(&'a Swtpm),
}

/// Enrols a device with `keys`, gives the agent application data, wipes it
/// through `palisade device decommission --wipe`, and checks everything the
/// issue asks of a verified wipe.
fn wipe_end_to_end(
    dir: &Path,
    server: &ServerProc,
    store: Store<'_>,
    keys: &[&str],
    env: &[(&str, &Path)],
) {
    let (id, model) = match store {
        Store::Tpm(_) => ("meter-1", "meter"),
        _ => ("cam-1", "cam"),
    };
    let state = dir.join("agent");
    let app = dir.join("app-data");
    let mut enrol_cmd = agent_cmd(server, &state, &[]);
    let token = server.cli_ok(&["enrollment-token", "create", "--model", model]);
    let o = enrol_cmd
        .args(["enroll", "--token", token.trim(), "--device-id", id])
        .args(keys)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(o.status.success(), "enrol: {}", text(&o));

    // The application's data goes into the vault under the data key.
    let app_arg = app.to_str().unwrap();
    let survey = |op: &[&str], stdin: &[u8]| {
        data(
            server,
            &state,
            keys,
            env,
            &[&["--data-dir", app_arg], op].concat(),
            stdin,
        )
    };
    let o = survey(&["put", "survey.txt"], SECRET);
    assert!(o.status.success(), "data put: {}", text(&o));
    let on_disk = std::fs::read(app.join("survey.txt")).unwrap();
    assert!(!on_disk.windows(SECRET.len()).any(|w| w == SECRET));
    let saved = dir.join("survey.copy");
    std::fs::write(&saved, &on_disk).unwrap();
    let o = survey(&["get", "survey.txt"], b"");
    assert_eq!(o.stdout, SECRET, "{}", text(&o));

    if let Store::Tpm(tpm) = store {
        // An update raised the anti-rollback counter: an NV index of the device.
        palisade_tpm::Tpm::open(&tpm.tcti())
            .unwrap()
            .raise_counter(palisade_tpm::FLOOR_NV_INDEX, 2)
            .unwrap();
    }

    let log = dir.join("agent.log");
    let mut agent = spawn_agent(
        server,
        &state,
        keys,
        env,
        &["--data-dir", app_arg],
        Some(&log),
    );
    wait_for(server, id, 60, |d| d["connected"] == true);
    // An operator command, journalled in the agent's own vault.
    let out = server.cli_ok(&["device", "command", id, "ping"]);
    assert!(out.contains("ping"), "{out}");
    let journal = state.join("vault").join("commands.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !journal.exists() {
        assert!(Instant::now() < deadline, "no command journal in the vault");
        std::thread::sleep(Duration::from_millis(200));
    }
    let serial = current_serial(server, id);

    // The wipe.
    let o = server.cli(&[
        "device",
        "decommission",
        id,
        "--wipe",
        "--reason",
        "sold to a reseller",
        "--wait",
        "60",
    ]);
    assert!(o.status.success(), "decommission: {}", text(&o));
    assert!(text(&o).contains("verified"), "{}", text(&o));
    // The agent stops by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop after the wipe"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success() && agent_log.contains("wiped"),
        "{status}: {agent_log}"
    );

    // The server's record, and OpenSSL's own check of the receipt.
    let r = decommission_record(server, id);
    assert_eq!(r["wipe"], "verified", "{r}");
    assert_eq!(r["serial"], serial.as_str(), "{r}");
    let destroyed = r["destroyed"].to_string();
    assert!(
        destroyed.contains("data key") && destroyed.contains("identity key"),
        "{r}"
    );
    let receipt: serde_json::Value = serde_json::from_str(r["receipt"].as_str().unwrap()).unwrap();
    openssl_verifies_receipt(dir, &receipt, &cert_pem(server, &serial));
    let d = device(server, id);
    assert_eq!(d["state"], "decommissioned", "{d}");
    let certs: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli_ok(&["--json", "cert", "list", "--device", id])).unwrap();
    assert!(certs.iter().all(|c| c["status"] == "revoked"), "{certs:?}");
    for (action, needle) in [
        ("device.decommission", "sold to a reseller"),
        ("device.wipe.send", serial.as_str()),
        ("device.wipe", "verified"),
    ] {
        assert!(audit_has(server, action, needle), "no {action} audit entry");
    }

    // Nothing of the keys is left where they lived.
    match store {
        Store::Software => {
            let keys_left: Vec<String> = std::fs::read_dir(&state)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".key"))
                .collect();
            assert!(keys_left.is_empty(), "key files left: {keys_left:?}");
        }
        Store::Token(hsm) => {
            let o = hsm.pkcs11_tool("device-se", &["--list-objects"]);
            assert!(o.status.success(), "{}", text(&o));
            assert!(
                !text(&o).contains("palisade-"),
                "objects left on the token: {}",
                text(&o)
            );
        }
        Store::Tpm(tpm) => {
            let tcti = tpm.tcti();
            let o = Command::new("tpm2_getcap")
                .args(["-T", &tcti, "handles-persistent"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
            assert!(
                !text(&o).to_lowercase().contains("0x81010a01"),
                "persistent handle left: {}",
                text(&o)
            );
            let o = Command::new("tpm2_nvreadpublic")
                .args(["-T", &tcti])
                .output()
                .unwrap();
            assert!(
                !text(&o).to_lowercase().contains("0x1500a00"),
                "NV index left: {}",
                text(&o)
            );
            let blobs: Vec<_> = std::fs::read_dir(&state)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "tpmkey")
                })
                .collect();
            assert!(blobs.is_empty(), "TPM key blobs left");
        }
    }
    // The vaults' bytes no longer decrypt.
    let o = survey(&["get", "survey.txt"], b"");
    assert!(
        !o.status.success() && text(&o).contains("no data key"),
        "{}",
        text(&o)
    );
    let o = survey(
        &["get", "survey.txt", "--file", saved.to_str().unwrap()],
        b"",
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("door code"));

    // The device can neither connect (no identity) nor enrol again.
    let o = agent_cmd(server, &state, &[])
        .arg("status")
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("not enrolled"),
        "{}",
        text(&o)
    );
    let out = enrol(server, &dir.join("agent-again"), &[], id, model);
    assert!(
        out.contains("EXIT: failure") && out.contains("decommissioned"),
        "{out}"
    );

    // Until an admin reinstates it, audited.
    let o = server.cli(&[
        "device",
        "reinstate",
        id,
        "--reason",
        "refurbished by the reseller",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(device(server, id)["state"], "registered");
    assert!(audit_has(server, "device.reinstate", "refurbished"));
}

#[test]
fn a_software_agent_wipes_on_command_and_proves_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 120);
    server.cli_ok(&["model", "add", "cam"]);
    wipe_end_to_end(dir.path(), &server, Store::Software, &[], &[]);
}

#[test]
fn a_pkcs11_agent_wipes_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(dir.path()) else {
        return;
    };
    if !have("pkcs11-tool") {
        return;
    }
    let uri = hsm.token("device-se", "unused");
    let server = server(dir.path(), 120);
    server.cli_ok(&["model", "add", "cam"]);
    let keys = ["--keystore", "pkcs11", "--pkcs11-uri", uri.as_str()];
    wipe_end_to_end(
        dir.path(),
        &server,
        Store::Token(&hsm),
        &keys,
        &[("SOFTHSM2_CONF", &hsm.conf)],
    );
}

#[test]
fn a_tpm_agent_wipes_its_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let Some(swtpm) = Swtpm::start(&dir.path().join("tpm")) else {
        return;
    };
    if !(have("tpm2_getcap") && have("tpm2_nvreadpublic")) {
        return;
    }
    let server = server(dir.path(), 120);
    let tcti = swtpm.tcti();
    let fw = tpm_meter_model(
        &server,
        &swtpm.vendor_ca,
        Some((dir.path(), "fw-1.0.bin", b"meter firmware 1.0")),
    );
    boot_measure(&server, &dir.path().join("agent"), &tcti, &fw, "1.0");
    let keys = ["--keystore", "tpm", "--tpm-tcti", tcti.as_str()];
    wipe_end_to_end(dir.path(), &server, Store::Tpm(&swtpm), &keys, &[]);
}

/// A wipe command signed with `key` (PKCS#8 Ed25519) as the operator API would
/// carry it: `palisade device command D wipe PAYLOAD SIGNATURE`.
fn send_forged(server: &ServerProc, device: &str, cmd: &WipeCommand, key: &[u8]) -> String {
    let signed = palisade_core::signed::seal(wipe::COMMAND_DOMAIN, cmd, key).unwrap();
    let args = wipe::command_args(&signed);
    let out = server.cli_ok(&[
        "--json", "device", "command", device, "wipe", &args[0], &args[1],
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn forged_wipes_and_forged_receipts_are_refused_and_silence_is_unconfirmed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), 6);
    server.cli_ok(&["model", "add", "cam"]);
    let state = dir.path().join("agent");
    let out = enrol(&server, &state, &[], "cam-1", "cam");
    assert!(!out.contains("EXIT: failure"), "{out}");
    let app = dir.path().join("app-data");
    let app_arg = app.to_str().unwrap();
    let o = data(
        &server,
        &state,
        &[],
        &[],
        &["--data-dir", app_arg, "put", "survey.txt"],
        SECRET,
    );
    assert!(o.status.success(), "{}", text(&o));
    let log = dir.path().join("agent.log");
    let agent = spawn_agent(
        &server,
        &state,
        &[],
        &[],
        &["--data-dir", app_arg],
        Some(&log),
    );
    wait_for(&server, "cam-1", 60, |d| d["connected"] == true);
    let serial = current_serial(&server, "cam-1");
    let director = std::fs::read(server.data.join("tuf/online/director.pk8")).unwrap();
    let other_key =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
    let now = palisade_core::Clock::now_ms(&palisade_core::SystemClock);
    let good = WipeCommand {
        device: "cam-1".into(),
        serial: serial.clone(),
        nonce: "00112233445566778899aabbccddeeff".into(),
        issued_ms: now,
        expires_ms: now + 600_000,
    };

    // Unsigned (arguments that are no envelope), another key, another device,
    // an earlier certificate, expired: each refused, nothing destroyed.
    let unsigned = server.cli_ok(&["--json", "device", "command", "cam-1", "wipe", "please"]);
    let unsigned: serde_json::Value = serde_json::from_str(&unsigned).unwrap();
    let cases = [
        (unsigned["id"].as_str().unwrap().to_owned(), "2 arguments"),
        (
            send_forged(&server, "cam-1", &good, &other_key),
            "signature does not verify",
        ),
        (
            send_forged(
                &server,
                "cam-1",
                &WipeCommand {
                    device: "cam-2".into(),
                    ..good.clone()
                },
                &director,
            ),
            "meant for device cam-2",
        ),
        (
            send_forged(
                &server,
                "cam-1",
                &WipeCommand {
                    serial: "00ff".into(),
                    ..good.clone()
                },
                &director,
            ),
            "meant for certificate 00ff",
        ),
        (
            send_forged(
                &server,
                "cam-1",
                &WipeCommand {
                    expires_ms: now - 1,
                    ..good.clone()
                },
                &director,
            ),
            "expired",
        ),
    ];
    for (cmd, why) in cases {
        let c = ack_of(&server, "cam-1", &cmd);
        let result = c["result"].to_string();
        assert!(
            result.contains("wipe refused") && result.contains(why),
            "{why}: {c}"
        );
    }
    assert!(state.join("op.key").exists() && state.join("data.key").exists());
    let o = data(
        &server,
        &state,
        &[],
        &[],
        &["--data-dir", app_arg, "get", "survey.txt"],
        b"",
    );
    assert_eq!(o.stdout, SECRET, "{}", text(&o));
    let out = server.cli_ok(&["device", "command", "cam-1", "ping"]);
    assert!(out.contains("ping"), "{out}");

    // The device goes silent; a wipe is ordered.
    drop(agent);
    let o = server.cli(&[
        "device",
        "decommission",
        "cam-1",
        "--wipe",
        "--reason",
        "stolen",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = decommission_record(&server, "cam-1");
    assert_eq!(r["wipe"], "pending", "{r}");
    assert_eq!(device(&server, "cam-1")["state"], "quarantined");
    let wipe_id = commands(&server, "cam-1")
        .into_iter()
        .find(|c| c["name"] == "wipe" && c["id"].as_str().unwrap().starts_with("wipe-"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone with the device's key forges receipts through mosquitto_pub:
    // one with a bad signature, one for another nonce. Both are refused and
    // audited; the wipe stays pending.
    if have("mosquitto_pub") {
        let pkcs8 = palisade_interop::pem_private_key(&state.join("op.key"));
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &rng,
        )
        .unwrap();
        let receipt = |nonce: &str| wipe::WipeReceipt {
            device: "cam-1".into(),
            serial: serial.clone(),
            nonce: nonce.into(),
            destroyed: vec!["data key".into()],
            keystore: "software".into(),
            at_ms: now,
        };
        let signed = |r: &wipe::WipeReceipt, tamper: bool| {
            let mut payload = wipe::receipt_payload(r);
            let sig = key.sign(&rng, &wipe::receipt_message(&payload)).unwrap();
            if tamper {
                payload.push(b' ');
            }
            serde_json::to_value(wipe::signed_receipt(&payload, sig.as_ref())).unwrap()
        };
        let nonce = r["nonce"].as_str().unwrap().to_owned();
        for (body, why) in [
            (signed(&receipt(&nonce), true), "signature does not verify"),
            (
                signed(&receipt("ffeeddccbbaa99887766554433221100"), false),
                "answers nonce",
            ),
        ] {
            let msg = serde_json::json!({ "id": wipe_id, "ok": true, "result": body });
            let o = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &server.mqtt_port().to_string()])
                .args([
                    "--cafile",
                    server.data.join("ca/chain.pem").to_str().unwrap(),
                ])
                .args(["--cert", state.join("op.pem").to_str().unwrap()])
                .args(["--key", state.join("op.key").to_str().unwrap()])
                .args(["-i", "cam-1", "-q", "1", "-t", "palisade/d/cam-1/acks"])
                .args(["-m", &msg.to_string()])
                .output()
                .unwrap();
            assert!(o.status.success(), "mosquitto_pub: {}", text(&o));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !audit_has(&server, "device.wipe", why) {
                assert!(Instant::now() < deadline, "no refusal audited for: {why}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert_eq!(decommission_record(&server, "cam-1")["wipe"], "pending");
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "mosquitto_pub is missing under CI"
        );
        eprintln!("skipping the forged receipts: mosquitto_pub is not installed");
    }

    // No valid receipt by the deadline: decommissioned, unconfirmed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = decommission_record(&server, "cam-1");
        if r["wipe"] != "pending" {
            break r;
        }
        assert!(Instant::now() < deadline, "the wipe never closed: {r}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r["wipe"], "unconfirmed", "{r}");
    assert_eq!(device(&server, "cam-1")["state"], "decommissioned");
    let posture: serde_json::Value =
        serde_json::from_str(&server.api_get("/api/v1/posture")).unwrap();
    assert_eq!(
        posture["decommissioned"]["wipe_unconfirmed"], 1,
        "{posture}"
    );
    assert_eq!(
        posture["decommissioned"]["unconfirmed"][0], "cam-1",
        "{posture}"
    );
    // The keys were never destroyed: only the device could have done that.
    assert!(state.join("op.key").exists());
}
