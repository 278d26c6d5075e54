//! Support lifecycle end to end: releases through the supply-chain gate, devices
//! reporting their firmware over MQTT (`mosquitto_pub`), and `palisade device
//! lifecycle` listing devices past support and behind the security-update
//! target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_interop::*;

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
    let key = register_supplier_key(&server, dir.path(), "acme");
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
    upload_release(&server, dir.path(), &key, "cam", "1.0", 1);
    upload_release(&server, dir.path(), &key, "cam", "1.1", 2);

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
