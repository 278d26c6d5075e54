//! Staged rollouts end to end: `palisade-sim` runs 200 devices with the real
//! installer (slot files, U-Boot environments, trial boots) against the real
//! server; `palisade rollout` drives three waves. A release whose health
//! check fails in the canary wave pauses the rollout before wave 2; a good
//! release reaches every device.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;

const DEVICES: usize = 200;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rollout(server: &ServerProc, name: &str, version: &str) -> serde_json::Value {
    server.cli_ok(&[
        "rollout",
        "create",
        name,
        "--model",
        "cam",
        "--release-version",
        version,
        "--waves",
        "5,50%,100%",
        "--success-threshold",
        "0.9",
        "--failure-threshold",
        "0.2",
    ]);
    let o = server.cli(&["rollout", "watch", name, "--timeout", "240", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("rollout watch printed no JSON ({e}): {}", text(&o)));
    v["exit"] = o.status.code().unwrap_or(-1).into();
    v
}

fn wave(v: &serde_json::Value, i: usize, k: &str) -> u64 {
    v["waves"][i][k].as_u64().unwrap_or(0)
}

#[test]
fn a_failing_canary_pauses_a_three_wave_rollout_to_200_simulated_devices() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");
    let (keys, root) = tuf_ceremony(&server, d);
    upload_release_bytes(
        &server,
        d,
        &key,
        ("cam", "2.0", 1),
        b"cam 2.0 (bad health)",
        &[],
    );
    upload_release_bytes(&server, d, &key, ("cam", "2.1", 1), b"cam 2.1 (good)", &[]);
    upload_release_bytes(&server, d, &key, ("cam", "2.2", 1), b"cam 2.2 (lab)", &[]);
    let o = publish_targets(&server, d, &keys, &root, "targets-1,targets-2");
    assert!(o.status.success(), "{}", text(&o));

    let sim = Sim(Command::new(palisade_sim_bin())
        .args(["--devices", &DEVICES.to_string(), "--model", "cam", "--ota"])
        .args(["--unhealthy-version", "2.0", "--duration", "600"])
        .args(["--telemetry-every", "60", "--update-every", "600"])
        .args(["--state-dir", s(&d.join("sim"))])
        .env("PALISADE_DATA_DIR", &server.data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("sim.log")).unwrap())
        .spawn()
        .unwrap());
    // Wait for the fleet to be connected (it hears about assignments over MQTT).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = server.connected_devices();
        if n >= DEVICES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {DEVICES} simulated devices connected: {}",
            std::fs::read_to_string(d.join("sim.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The bad release: its canaries roll back and the rollout pauses.
    let started = Instant::now();
    let bad = rollout(&server, "bad-2-0", "2.0");
    eprintln!(
        "rollout of 2.0 ended {} after {:?}: {}",
        bad["state"],
        started.elapsed(),
        bad["reason"]
    );
    assert_eq!(bad["exit"], 2, "{bad}");
    assert_eq!(bad["state"], "paused", "{bad}");
    assert_eq!(bad["wave"], 1, "{bad}");
    assert!(
        bad["reason"].as_str().unwrap().contains("wave 1 failed"),
        "{bad}"
    );
    assert!(wave(&bad, 0, "failed") >= 2, "{bad}");
    for w in 1..3 {
        assert_eq!(
            wave(&bad, w, "assigned") + wave(&bad, w, "committed") + wave(&bad, w, "failed"),
            0,
            "wave {} was reached: {bad}",
            w + 1
        );
    }
    assert_eq!(
        (0..3).map(|w| wave(&bad, w, "pending")).sum::<u64>() + 5,
        DEVICES as u64,
        "{bad}"
    );
    // The canaries reported their fallback; the audit log has the pause.
    let updates: Vec<serde_json::Value> =
        serde_json::from_str(&server.api_get("/api/v1/updates")).unwrap();
    let rolled_back = updates
        .iter()
        .filter(|u| u["state"] == "rolled-back")
        .count();
    assert!(rolled_back >= 2, "{updates:?}");
    // Devices outside the canary never got an assignment.
    assert!(updates.len() <= 5, "{} devices were reached", updates.len());
    server.cli_ok(&["rollout", "cancel", "bad-2-0"]);

    // The good release reaches all 200, wave by wave.
    let started = Instant::now();
    let good = rollout(&server, "good-2-1", "2.1");
    eprintln!(
        "rollout of 2.1 to {DEVICES} devices: {} in {:?}",
        good["state"],
        started.elapsed()
    );
    assert_eq!(good["exit"], 0, "{good}");
    assert_eq!(good["state"], "completed", "{good}");
    let committed: u64 = (0..3).map(|w| wave(&good, w, "committed")).sum();
    assert!(committed as f64 >= 0.9 * DEVICES as f64, "{good}");
    assert_eq!(wave(&good, 0, "committed"), 5, "{good}");
    let list = server.cli_ok(&["rollout", "list"]);
    assert!(
        list.contains("good-2-1") && list.contains("completed"),
        "{list}"
    );
    server.cli_ok(&["rollout", "cancel", "good-2-1"]);

    // Outside its maintenance window a rollout issues nothing.
    let minute = palisade_core::Clock::now_ms(&palisade_core::SystemClock) / 60_000 % 1440;
    let (a, b) = ((minute + 120) % 1440, (minute + 180) % 1440);
    let window = format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60);
    server.cli_ok(&[
        "rollout",
        "create",
        "later",
        "--model",
        "cam",
        "--release-version",
        "2.2",
        "--waves",
        "100%",
        "--window",
        &window,
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let later: serde_json::Value =
        serde_json::from_str(&server.api_get("/api/v1/rollouts/later")).unwrap();
    assert_eq!(
        wave(&later, 0, "assigned") + wave(&later, 0, "committed"),
        0,
        "{later}"
    );
    assert_eq!(wave(&later, 0, "pending"), DEVICES as u64, "{later}");
    // A device decommissioned meanwhile leaves the rollout: withdrawn,
    // counted neither for nor against its wave.
    server.cli_ok(&[
        "device",
        "decommission",
        "sim-0199",
        "--reason",
        "housing cracked",
    ]);
    let later: serde_json::Value =
        serde_json::from_str(&server.api_get("/api/v1/rollouts/later")).unwrap();
    assert_eq!(wave(&later, 0, "withdrawn"), 1, "{later}");
    assert_eq!(wave(&later, 0, "pending"), DEVICES as u64 - 1, "{later}");
    server.cli_ok(&["rollout", "cancel", "later"]);

    // A selector by tag reaches exactly the tagged devices, one at a time.
    for id in ["sim-0007", "sim-0042", "sim-0150"] {
        server.cli_ok(&["device", "tag", id, "lab", "floor-2"]);
    }
    server.cli_ok(&["device", "tag", "sim-0008", "lab"]);
    server.cli_ok(&[
        "rollout",
        "create",
        "lab",
        "--model",
        "cam",
        "--release-version",
        "2.2",
        "--waves",
        "100%",
        "--tags",
        "lab,floor-2",
        "--max-concurrency",
        "1",
    ]);
    let o = server.cli(&["rollout", "watch", "lab", "--timeout", "120", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lab: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reached: Vec<&str> = lab["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(reached.len(), 3, "{lab}");
    for id in ["sim-0007", "sim-0042", "sim-0150"] {
        assert!(reached.contains(&id), "{id} not reached: {lab}");
    }
    assert_eq!(wave(&lab, 0, "committed"), 3, "{lab}");
    drop(sim);
}
