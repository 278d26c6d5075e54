//! Support lifecycle end to end: releases through the supply-chain gate, devices
//! reporting their firmware over MQTT (`mosquitto_pub`), and `palisade device
//! lifecycle` listing devices past support and behind the security-update
//! target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_interop::*;
use ring::signature::KeyPair;

/// A supplier signing key made here; returns (PKCS#8, public PEM).
fn supplier_key() -> (Vec<u8>, String) {
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(kp.public_key().as_ref());
    (
        pkcs8.as_ref().to_vec(),
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki)),
    )
}

fn release(server: &ServerProc, dir: &Path, key: &[u8], version: &str, sv: u64) {
    let image = dir.join(format!("cam-{version}.img"));
    std::fs::write(&image, format!("camera firmware {version}")).unwrap();
    let sha = palisade_pki::sha256_hex(&std::fs::read(&image).unwrap());
    let statement = serde_json::json!({
        "_type": palisade_release::STATEMENT_V1,
        "subject": [{"name": image.file_name().unwrap().to_str().unwrap(), "digest": {"sha256": sha}}],
        "predicateType": palisade_release::SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {"buildType": "https://example.com/build@v1", "externalParameters": {"tag": version}},
            "runDetails": {"builder": {"id": "https://ci.example.com/acme"}}
        }
    });
    let env = palisade_release::sign_envelope(
        palisade_release::IN_TOTO_PAYLOAD_TYPE,
        statement.to_string().as_bytes(),
        key,
    )
    .unwrap();
    let prov = dir.join(format!("{version}.dsse.json"));
    std::fs::write(&prov, serde_json::to_vec(&env).unwrap()).unwrap();
    let sbom = dir.join("sbom.json");
    std::fs::write(
        &sbom,
        r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#,
    )
    .unwrap();
    server.cli_ok(&[
        "release",
        "upload",
        "--model",
        "cam",
        "--release-version",
        version,
        "--security-version",
        &sv.to_string(),
        "--image",
        image.to_str().unwrap(),
        "--sbom",
        sbom.to_str().unwrap(),
        "--provenance",
        prov.to_str().unwrap(),
    ]);
}

fn report_firmware(server: &ServerProc, dir: &Path, device: &str, version: &str) {
    let (key, cert) = enrol_with_token(server, dir, device, "cam");
    let o = Command::new("timeout")
        .arg("10")
        .arg("mosquitto_pub")
        .arg("--cafile")
        .arg(server.data.join("ca/root.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.mqtt_port().to_string(),
            "-i",
            device,
        ])
        .args(["-t", &format!("palisade/d/{device}/telemetry"), "-q", "1"])
        .args(["-m", &format!(r#"{{"firmware":"{version}","uptime_s":5}}"#)])
        .output()
        .unwrap();
    assert!(o.status.success(), "mosquitto_pub: {}", text(&o));
}

#[test]
fn lifecycle_lists_devices_past_support_and_behind_their_security_target() {
    if !(have("openssl") && have("curl") && have("mosquitto_pub")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    let f = dir.path().join("factory");
    palisade_ok(&[
        "factory",
        "init-ca",
        "--supplier",
        "acme",
        "--dir",
        f.to_str().unwrap(),
    ]);
    server.cli_ok(&[
        "supplier",
        "add",
        "acme",
        "--ca-cert",
        f.join("ca.pem").to_str().unwrap(),
    ]);
    let (key, public) = supplier_key();
    let pub_path = dir.path().join("acme.pub");
    std::fs::write(&pub_path, public).unwrap();
    server.cli_ok(&[
        "supplier",
        "key",
        "add",
        "acme",
        "--public-key",
        pub_path.to_str().unwrap(),
    ]);
    // Support ended long ago; security releases are due at once.
    server.cli_ok(&[
        "model",
        "add",
        "cam",
        "--supplier",
        "acme",
        "--support-until",
        "2001-01-01",
        "--security-update-days",
        "0",
    ]);
    release(&server, dir.path(), &key, "1.0", 1);
    release(&server, dir.path(), &key, "1.1", 2);

    report_firmware(&server, dir.path(), "cam-old", "1.0");
    report_firmware(&server, dir.path(), "cam-new", "1.1");
    report_firmware(&server, dir.path(), "cam-odd", "7.7-custom");

    // Reported firmware reaches the inventory within the presence flush (5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let l = loop {
        let l: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["--json", "device", "lifecycle"])).unwrap();
        if l["behind_target"].as_array().unwrap().len() == 2 {
            break l;
        }
        assert!(Instant::now() < deadline, "lifecycle never settled: {l}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let past: Vec<&str> = l["past_support"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["device"].as_str().unwrap())
        .collect();
    assert_eq!(past.len(), 3, "{l}");
    let behind = l["behind_target"].as_array().unwrap();
    let old = behind
        .iter()
        .find(|b| b["device"] == "cam-old")
        .expect("cam-old behind");
    assert_eq!(old["running"], "1.0");
    assert_eq!(old["running_security_version"], 1);
    assert_eq!(old["required_security_version"], 2);
    let odd = behind
        .iter()
        .find(|b| b["device"] == "cam-odd")
        .expect("cam-odd behind");
    assert!(odd["running_security_version"].is_null(), "{odd}");
    assert!(behind.iter().all(|b| b["device"] != "cam-new"), "{l}");
    // The table form says the same.
    let table = server.cli_ok(&["device", "lifecycle"]);
    assert!(
        table.contains("cam-old") && table.contains("unknown"),
        "{table}"
    );
}
