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

/// `YYYY-MM-DD` of today plus `days` (UTC).
fn day(days: i64) -> String {
    let now = palisade_core::Clock::now(&palisade_core::SystemClock);
    (now + time::Duration::days(days)).date().to_string()
}

fn support(server: &ServerProc, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json", "model", "support", "sensor"];
    a.extend_from_slice(args);
    serde_json::from_str(&server.cli_ok(&a)).unwrap()
}

fn site(server: &ServerProc) -> serde_json::Value {
    serde_json::from_str(&server.api_get("/api/v1/sites/lab")).unwrap()
}

fn audit_actions(server: &ServerProc, action: &str) -> usize {
    let out = server.api_get("/api/v1/audit/entries?limit=10000");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    entries.iter().filter(|e| e["action"] == action).count()
}

/// Support-end enforcement: the notice alerts once, the restriction marks the
/// model's devices restricted in their site's bundle (a new version the edges
/// fetch), an extension lifts it, and the retirement date decommissions them;
/// every move audited.
#[test]
fn a_models_support_end_notifies_restricts_and_retires_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("palisade.toml");
    std::fs::write(&cfg, "[support]\ncheck_every_s = 1\n").unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    sensor_site(&server, dir.path(), 3);
    assert_eq!(support(&server, &[])["stage"], "supported");

    // Ten days before the end, with 30 days' notice: notified, one alert.
    let v = support(&server, &["--until", &day(10), "--notify-days", "30"]);
    assert_eq!(v["stage"], "notified", "{v}");
    let alerts = server.cli_ok(&["--json", "alerts", "list"]);
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&alerts).unwrap();
    let ending: Vec<_> = alerts
        .iter()
        .filter(|a| a["detector"] == "support_ending")
        .collect();
    assert_eq!(ending.len(), 1, "{alerts:?}");
    assert!(
        ending[0]["summary"]
            .as_str()
            .unwrap()
            .contains("3 device(s)"),
        "{}",
        ending[0]
    );
    assert_eq!(audit_actions(&server, "model.support.notified"), 1);
    let before = site(&server);
    assert_eq!(before["restricted"], 0, "{before}");

    // Restricted since yesterday: the bundle confines all three.
    let v = support(
        &server,
        &[
            "--until",
            &day(10),
            "--notify-days",
            "30",
            "--restrict-at",
            &day(-1),
        ],
    );
    assert_eq!(v["stage"], "restricted", "{v}");
    let after = site(&server);
    assert_eq!(after["restricted"], 3, "{after}");
    assert!(
        after["bundle_version"].as_u64() > before["bundle_version"].as_u64(),
        "{before} -> {after}"
    );

    // Support extended: the restriction is lifted, audited.
    let v = support(
        &server,
        &[
            "--until",
            &day(400),
            "--notify-days",
            "30",
            "--restrict-at",
            &day(410),
        ],
    );
    assert_eq!(v["stage"], "supported", "{v}");
    assert_eq!(site(&server)["restricted"], 0);
    assert_eq!(audit_actions(&server, "model.support.lifted"), 1);

    // Retirement day passed: every device is decommissioned, by the policy.
    let v = support(
        &server,
        &[
            "--until",
            &day(-20),
            "--notify-days",
            "30",
            "--restrict-at",
            &day(-10),
            "--retire-at",
            &day(-1),
        ],
    );
    assert_eq!(v["stage"], "retired", "{v}");
    for n in 0..3 {
        let id = format!("sensor-{n}");
        let d: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["--json", "device", "show", &id])).unwrap();
        assert_eq!(d["device"]["state"], "decommissioned", "{d}");
        let r: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["--json", "device", "decommissioning", &id]))
                .unwrap();
        assert_eq!(r["actor"], "support-end", "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("retirement date"),
            "{r}"
        );
    }
    assert_eq!(audit_actions(&server, "model.support.retired"), 1);
    assert_eq!(site(&server)["devices"], 0);
    // Retired is final: a later date does not bring the model back.
    let v = support(&server, &["--until", &day(400), "--notify-days", "30"]);
    assert_eq!(v["stage"], "retired", "{v}");
}
