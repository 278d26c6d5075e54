//! The web console in a real browser: `palisade demo` brings up a server with
//! a simulated fleet (50 devices, three models, two sites, a rollout, attacks),
//! then Debian's Chromium, driven by Playwright (`peers/console_browser.py`),
//! signs in, walks every page (screenshots, axe-core), quarantines a device,
//! acknowledges an alert, pauses the rollout, and checks hostile text, CSRF,
//! cross-origin POSTs, roles and absurd queries. This test then checks what
//! the browser did through the API and the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;
use serde_json::Value;

/// The demo, stopped by PID when the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// axe-core's browser build: `AXE_CORE_JS`, else where scripts/test.sh installs it.
fn axe_core() -> Option<PathBuf> {
    let path = std::env::var_os("AXE_CORE_JS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/palisade-peers/node_modules/axe-core/axe.min.js")
        },
        PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "axe-core is missing at {}; scripts/test.sh installs it",
        path.display()
    );
    eprintln!("SKIP: axe-core is not installed (npm install axe-core)");
    None
}

fn api(data: &Path, url: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body", "-X", method, "--cacert"])
        .arg(data.join("ca/root.pem"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let o = c.arg(format!("{url}{path}")).output().unwrap();
    assert!(o.status.success(), "{method} {path}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_console_in_chromium_signs_in_walks_every_page_and_acts_through_the_services() {
    if !(have("chromium") && have("curl") && have_python_module("playwright", "playwright")) {
        return;
    }
    let Some(axe) = axe_core() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ready = d.join("ready.json");
    let data = d.join("demo");
    let log = std::fs::File::create(d.join("demo.log")).unwrap();
    let mut demo = Demo(
        Command::new(palisade_bin())
            .args(["demo", "--devices", "50", "--run-for", "1800"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--coap-listen",
                "127.0.0.1:0",
                "--oscore-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(480);
    while !ready.exists() {
        let demo_log = || std::fs::read_to_string(d.join("demo.log")).unwrap_or_default();
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!(
                "palisade demo exited ({status}): {}\n{}",
                demo_log(),
                std::fs::read_to_string(data.join("fleet.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the demo was not ready in time: {}",
            demo_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let r: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let url = r["url"].as_str().unwrap().trim_end_matches('/').to_owned();

    // The demo's fleet: at least 50 devices over three models, two sites,
    // alerts from its attacks, a rollout.
    let devices = api(&data, &url, "GET", "/api/v1/devices?limit=1000", None);
    let models: std::collections::BTreeSet<&str> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["model"].as_str())
        .collect();
    assert!(devices.as_array().unwrap().len() >= 50, "{devices}");
    // Three device models, and the edge gateway's identity.
    assert_eq!(
        models.iter().filter(|m| **m != "edge-gw").count(),
        3,
        "{models:?}"
    );
    assert!(models.contains("edge-gw"), "{models:?}");
    assert_eq!(
        api(&data, &url, "GET", "/api/v1/sites", None)
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let alerts = api(&data, &url, "GET", "/api/v1/alerts", None);
    assert!(alerts.as_array().unwrap().len() >= 2, "{alerts}");

    // Hostile text in the fleet: a model's description (operator input) and a
    // device's reported firmware (telemetry from the device).
    api(
        &data,
        &url,
        "POST",
        "/api/v1/models",
        Some(r#"{"id": "xss-model", "description": "<script>window.__xss='model'</script>"}"#),
    );
    let sim = Command::new(palisade_sim_bin())
        .args(["--devices", "1", "--model", "xss-model", "--prefix", "xss"])
        .args([
            "--firmware",
            "<img src=x onerror=\"window.__xss='telemetry'\">",
        ])
        .args(["--duration", "6", "--telemetry-every", "1"])
        .arg("--state-dir")
        .arg(d.join("xss-sim"))
        .env("PALISADE_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(sim.status.success(), "{}", text(&sim));

    let shots = std::env::var_os("PALISADE_SCREENSHOTS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
                .join("console-screenshots")
        },
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&shots);
    let script = palisade_interop::peer_script("console_browser.py");
    let chromium = String::from_utf8(run("sh", &["-c", "command -v chromium"]).stdout).unwrap();
    let o = Command::new("python3")
        .arg(script)
        .arg(&ready)
        .arg(&shots)
        .arg(&axe)
        .env("CHROMIUM", chromium.trim())
        .output()
        .unwrap();
    eprintln!("{}", text(&o));
    assert!(o.status.success(), "the browser test failed: {}", text(&o));
    let out: Value = serde_json::from_str(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or("{}"),
    )
    .unwrap();
    let n = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(n >= 20, "only {n} screenshots in {}", shots.display());
    eprintln!("screenshots: {}", shots.display());

    // What the browser did, seen through the API.
    let device = out["device"].as_str().unwrap();
    let dev = api(
        &data,
        &url,
        "GET",
        &format!("/api/v1/devices/{device}"),
        None,
    );
    assert_eq!(dev["device"]["state"], "quarantined", "{dev}");
    let alert = out["alert"].as_str().unwrap();
    let a = api(&data, &url, "GET", &format!("/api/v1/alerts/{alert}"), None);
    assert_eq!(a["state"], "acknowledged", "{a}");
    let ro = api(
        &data,
        &url,
        "GET",
        "/api/v1/rollouts/thermostat-1.1.0",
        None,
    );
    assert_eq!(ro["state"], "paused", "{ro}");
    // The unmanaged devices the demo's edge reported, decided in the browser.
    let um = api(
        &data,
        &url,
        "GET",
        "/api/v1/sites/plant-north/unmanaged",
        None,
    );
    let host = |a: &str| {
        um["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == a)
            .cloned()
            .unwrap_or_else(|| panic!("{a} is not listed: {um}"))
    };
    assert_eq!(host("10.20.1.77")["state"], "blocked", "{um}");
    assert_eq!(host("10.20.2.201")["state"], "adopted", "{um}");
    assert_eq!(host("10.20.2.201")["device"], "cam-found-1", "{um}");
    let adopted = api(&data, &url, "GET", "/api/v1/devices/cam-found-1", None);
    assert_eq!(adopted["device"]["model"], "camera", "{adopted}");
    // The console's actions and refusals are in the audit log under people's names.
    let entries = api(&data, &url, "GET", "/api/v1/audit/entries?limit=5000", None);
    let has = |action: &str, outcome: &str, actor: &str| {
        entries.as_array().unwrap().iter().any(|e| {
            e["action"] == action
                && e["outcome"] == outcome
                && e["actor"].as_str().is_some_and(|a| a.contains(actor))
        })
    };
    assert!(
        has("device.state", "success", "demo"),
        "no quarantine by demo"
    );
    assert!(has("rollout.pause", "success", "demo"), "no pause by demo");
    assert!(
        has("device.decommission", "success", "demo"),
        "no decommissioning by demo"
    );
    assert!(
        has("unmanaged.block", "success", "demo"),
        "no block by demo"
    );
    assert!(
        has("unmanaged.adopt", "success", "demo"),
        "no adopt by demo"
    );
    assert!(
        has("console.csrf", "denied", "demo"),
        "no refused cross-origin POST"
    );
    assert!(
        has("auth.forbidden", "denied", "auditor"),
        "no refused auditor POST"
    );
    assert!(
        has("console.login", "denied", "anonymous"),
        "no refused sign-in"
    );
    // And the stored data is intact: the log verifies offline.
    let o = Command::new(palisade_bin())
        .args(["audit", "verify", "--db"])
        .arg(data.join("palisade.db"))
        .arg("--log-key")
        .arg(data.join("audit/log.pub"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
