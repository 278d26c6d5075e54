//! The real `palisade-agent` binary driven as a device would run it: its
//! command line, enrolment with a token, its long-running session, and polls
//! of what the server then says about the device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ServerProc, agent_bin, text};

/// A running agent, killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct AgentProc(pub Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's command line for `server`, keeping its state in `state`.
pub fn agent_cmd(server: &ServerProc, state: &Path, keys: &[&str]) -> Command {
    let mut c = Command::new(agent_bin());
    c.env("PALISADE_AGENT_SERVER", &server.url)
        .env("PALISADE_AGENT_ROOT", server.data.join("ca/root.pem"))
        .env("PALISADE_AGENT_STATE_DIR", state)
        .env("TSS2_LOG", "all+none")
        .args(keys);
    c
}

/// Enrols `device` of `model` with a fresh enrolment token; the agent's
/// output, with `EXIT: failure` appended when it failed.
pub fn enrol(
    server: &ServerProc,
    state: &Path,
    keys: &[&str],
    device: &str,
    model: &str,
) -> String {
    let token = server.cli_ok(&["enrollment-token", "create", "--model", model]);
    let mut c = agent_cmd(server, state, &[]);
    c.args(["enroll", "--token", token.trim(), "--device-id", device])
        .args(keys);
    let o = c.output().unwrap();
    text(&o)
        + if o.status.success() {
            ""
        } else {
            "\nEXIT: failure"
        }
}

/// Runs `palisade-agent run` (telemetry every second, firmware 1.0) with
/// `keys`; its output is dropped.
pub fn run_agent(
    server: &ServerProc,
    state: &Path,
    keys: &[&str],
    env: &[(&str, &Path)],
) -> AgentProc {
    spawn_agent(server, state, keys, env, &[], None)
}

/// [`run_agent`] with `extra` arguments, its output appended to `log`.
pub fn spawn_agent(
    server: &ServerProc,
    state: &Path,
    keys: &[&str],
    env: &[(&str, &Path)],
    extra: &[&str],
    log: Option<&Path>,
) -> AgentProc {
    let mut c = agent_cmd(server, state, &[]);
    c.args([
        "run",
        "--mqtt-port",
        &server.mqtt_port().to_string(),
        "--telemetry-every",
        "1",
        "--firmware",
        "1.0",
    ])
    .args(keys)
    .args(extra)
    .envs(env.iter().map(|(k, v)| (k, v)))
    .stdout(Stdio::null());
    match log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            c.stderr(f);
        }
        None => {
            c.stderr(Stdio::null());
        }
    }
    AgentProc(c.spawn().unwrap())
}

/// `device show` as JSON, the detail's fields beside the device's.
pub fn device(server: &ServerProc, id: &str) -> serde_json::Value {
    let out = server.cli_ok(&["--json", "device", "show", id]);
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The device's fields, with the detail's (connected, last seen) beside them.
    if let Some(serde_json::Value::Object(inner)) = v.get("device").cloned()
        && let Some(outer) = v.as_object_mut()
    {
        outer.extend(inner);
    }
    v
}

/// Polls `device show` until `pred` holds (bounded).
pub fn wait_for(
    server: &ServerProc,
    id: &str,
    secs: u64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = device(server, id);
        if pred(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "device {id} never reached the state: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the audit log has an entry of `action` mentioning `needle`.
pub fn audit_has(server: &ServerProc, action: &str, needle: &str) -> bool {
    let out = server.api_get("/api/v1/audit/entries?limit=10000");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    entries.iter().any(|e| {
        let t = e.to_string();
        e["action"] == action && t.contains(needle)
    })
}

/// Registers the TPM vendor CA and a `meter` model that requires TPM
/// attestation; with `firmware` (dir, file name, bytes), writes that image and
/// approves it as version 1.0. Returns the image path (empty without one).
pub fn tpm_meter_model(
    server: &ServerProc,
    vendor_ca: &Path,
    firmware: Option<(&Path, &str, &[u8])>,
) -> PathBuf {
    server.cli_ok(&[
        "tpm-vendor",
        "add",
        "--ca-cert",
        vendor_ca.to_str().unwrap(),
    ]);
    server.cli_ok(&["model", "add", "meter", "--attestation", "tpm"]);
    let Some((dir, name, bytes)) = firmware else {
        return PathBuf::new();
    };
    let fw = dir.join(name);
    std::fs::write(&fw, bytes).unwrap();
    server.cli_ok(&[
        "model",
        "firmware",
        "add",
        "meter",
        "1.0",
        "--image",
        fw.to_str().unwrap(),
    ]);
    fw
}

/// The boot shim: measures `image` (version `version`) into the TPM at `tcti`
/// and the boot log in `state`, as a measured-boot loader would.
pub fn boot_measure(server: &ServerProc, state: &Path, tcti: &str, image: &Path, version: &str) {
    let o = agent_cmd(server, state, &[])
        .args([
            "boot-measure",
            "--tpm-tcti",
            tcti,
            "--image",
            image.to_str().unwrap(),
            "--firmware-version",
            version,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
