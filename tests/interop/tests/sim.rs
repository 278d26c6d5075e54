//! The fleet simulator against a real server: N simulated agents enrol through EST,
//! connect to the gateway and send telemetry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_interop::*;

#[test]
fn the_simulator_enrols_and_connects_a_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    let o = std::process::Command::new(palisade_sim_bin())
        .args([
            "--devices",
            "25",
            "--duration",
            "2",
            "--telemetry-every",
            "1",
            "--model",
            "sim",
            "--state-dir",
            dir.path().join("sim").to_str().unwrap(),
        ])
        .env("PALISADE_DATA_DIR", &server.data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["device", "list", "--model", "sim", "--json"]))
            .unwrap();
    let devices = list.as_array().unwrap();
    assert_eq!(devices.len(), 25);
    assert!(devices.iter().all(|d| d["state"] == "active"), "{list}");
    let one: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["device", "show", "sim-0013", "--json"])).unwrap();
    assert_eq!(one["reported_firmware"], "sim-1.0.0", "{one}");
    // Each simulated device has its own key and certificate.
    let certs: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--json"])).unwrap();
    let device_certs = certs
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["profile"] == "device")
        .count();
    assert_eq!(device_certs, 25);
}
