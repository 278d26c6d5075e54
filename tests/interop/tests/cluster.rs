//! Two `palisade serve` nodes on one PostgreSQL database (the second started
//! from a copy of the first's data directory: the same CA, audit and TLS keys):
//! a device connected to one node gets a command an operator sent through the
//! other, is disconnected there when the other revokes its certificate or
//! decommissions it; a device's identity used from two addresses on the two
//! nodes raises one cloned-identity alert; and the merged audit log verifies.
//!
//! Needs `PALISADE_TEST_POSTGRES_URL` (scripts/test.sh starts PostgreSQL and
//! sets it); without it the test is skipped, except under `CI=true`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;
use serde_json::Value;

/// How long after `since` the held session ended (the peer exits when the
/// server closes it); `None` if it did not within 10 s.
fn closed_after(child: &mut Child, since: Instant) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    None
}

#[test]
fn two_nodes_on_one_database_share_commands_revocations_and_one_audit_log() {
    let Some(admin) = postgres_admin() else {
        return;
    };
    if !have("psql") || !have("python3") || !have("mosquitto_sub") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = create_postgres_database(&admin, &format!("palisade_cluster_{}", std::process::id()))
        .unwrap();
    let (a, b) = two_nodes(dir.path(), &url).unwrap();

    a.cli_ok(&["model", "add", "cam"]);
    let (key, cert) = enrol_with_token(&a, dir.path(), "cam-1", "cam");

    // A command sent through A reaches the device connected to B.
    let mut args = mosquitto_args(&b, &cert, &key, "cam-1");
    args.extend(["-q", "1"].map(String::from));
    args.extend(["-t", "palisade/d/cam-1/commands", "-C", "1", "-W", "20"].map(String::from));
    let sub = Command::new("mosquitto_sub")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let v: Value =
            serde_json::from_str(&b.cli_ok(&["device", "show", "cam-1", "--json"])).unwrap();
        if v["connected"] == true {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    a.cli_ok(&["device", "command", "cam-1", "reboot"]);
    let o = sub.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(r#""name":"reboot""#),
        "{}",
        text(&o)
    );

    // Revoked through A: B closes the device's session.
    let mut held = hold_session(&b, &cert, &key, "cam-1");
    let v: Value = serde_json::from_str(&a.cli_ok(&["device", "show", "cam-1", "--json"])).unwrap();
    let serial = v["certificates"][0]["serial"].as_str().unwrap().to_owned();
    a.cli_ok(&["cert", "revoke", &serial]);
    let t = Instant::now();
    let took = closed_after(&mut held, t).expect("B closed the revoked device's session");
    eprintln!("revocation on node A -> session closed on node B: {took:?}");
    // B's CRL follows A's revocation: within moments the certificate fails
    // B's TLS handshake (until B's verifier is rebuilt, admission refuses it
    // as revoked: every attempt is refused either way).
    let mut args: Vec<String> = args[..args.len() - 6].to_vec();
    args.extend(["-t", "palisade/d/cam-1/telemetry", "-m", "x"].map(String::from));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = Command::new("mosquitto_pub").args(&args).output().unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        let metrics = b.api_get("/metrics");
        if metrics
            .lines()
            .any(|l| l.starts_with("palisade_mqtt_refusals_total") && l.contains("\"tls\""))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refused at the TLS handshake: {}",
            metrics
                .lines()
                .filter(|l| l.contains("refusals"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // One CRL for the cluster: signed once by the node holding the
    // crl-signing lead, served byte for byte by both, listing the serial.
    one_crl_listing(&[&a, &b], &serial, Duration::from_secs(5));

    // Decommissioned through B: the session of a second device, on A, ends.
    let (key2, cert2) = enrol_with_token(&b, dir.path(), "cam-2", "cam");
    let mut held = hold_session(&a, &cert2, &key2, "cam-2");
    b.cli_ok(&["device", "set-state", "cam-2", "decommissioned"]);
    let t = Instant::now();
    let took = closed_after(&mut held, t).expect("A closed the decommissioned device's session");
    eprintln!("decommission on node B -> session closed on node A: {took:?}");

    // A cloned identity across nodes: the device holds a session on A from
    // 127.0.0.1, a copy connects to B from 127.0.0.2, then the original to A
    // again. Each new session closes the other node's (one session per
    // device), and the takeovers between two addresses, counted on the one
    // node that runs the session detectors, raise one cloned-identity alert.
    // Both nodes stream alerts (SSE), whichever node raises or changes them.
    let stream = |node: &ServerProc, name: &str| {
        let out = dir.path().join(name);
        let child = Command::new("curl")
            .args(["-sN", "--max-time", "30", "--cacert"])
            .arg(node.data.join("ca/root.pem"))
            .args([
                "-H",
                &format!("Authorization: Bearer {}", node.admin_token()),
            ])
            .arg("-o")
            .arg(&out)
            .arg(format!("{}/api/v1/alerts/stream", node.url))
            .spawn()
            .unwrap();
        (child, out)
    };
    let (mut sse_a, sse_a_out) = stream(&a, "a.sse");
    let (mut sse_b, sse_b_out) = stream(&b, "b.sse");
    std::thread::sleep(Duration::from_millis(500));
    let (key3, cert3) = enrol_with_token(&a, dir.path(), "cam-3", "cam");
    let mut original = hold_session_from(&a, &cert3, &key3, "cam-3", "127.0.0.1");
    let mut copy = hold_session_from(&b, &cert3, &key3, "cam-3", "127.0.0.2");
    closed_after(&mut original, Instant::now()).expect("A closed the session B took over");
    let mut original = hold_session_from(&a, &cert3, &key3, "cam-3", "127.0.0.1");
    closed_after(&mut copy, Instant::now()).expect("B closed the session A took over");
    let deadline = Instant::now() + Duration::from_secs(10);
    let clones = loop {
        let alerts: Vec<Value> =
            serde_json::from_str(&b.api_get("/api/v1/alerts?device=cam-3")).unwrap();
        let clones: Vec<Value> = alerts
            .into_iter()
            .filter(|a| a["detector"] == "cloned_identity")
            .collect();
        if !clones.is_empty() || Instant::now() > deadline {
            break clones;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(clones.len(), 1, "{clones:?}");
    let places = clones[0]["evidence"]["addresses"].to_string();
    assert!(
        places.contains("127.0.0.1") && places.contains("127.0.0.2"),
        "{places}"
    );
    let _ = original.kill();
    let _ = original.wait();
    // The timeline says why the sessions ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a
        .api_get("/api/v1/devices/cam-3/timeline")
        .contains("disconnected (session taken over on another node)")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            a.api_get("/api/v1/devices/cam-3/timeline")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Acknowledged through A: B's stream hears it too.
    let id = clones[0]["id"].as_str().unwrap().to_owned();
    a.api("POST", &format!("/api/v1/alerts/{id}/ack"), Some("{}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&id) && l.contains(what))
    };
    while !(seen(&sse_a_out, "opened")
        && seen(&sse_b_out, "opened")
        && seen(&sse_b_out, "acknowledged"))
    {
        assert!(
            Instant::now() < deadline,
            "A's stream:\n{}\nB's stream:\n{}",
            std::fs::read_to_string(&sse_a_out).unwrap_or_default(),
            std::fs::read_to_string(&sse_b_out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut sse_a, &mut sse_b] {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Both nodes wrote to one audit log; it verifies from either.
    for node in [&a, &b] {
        let o = node.cli(&["audit", "verify"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let entries: Vec<Value> =
        serde_json::from_str(&b.api_get("/api/v1/audit/entries?limit=5000")).unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["command.send", "cert.revoke", "device.state"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
}
