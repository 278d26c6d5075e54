//! The MQTT device gateway against Mosquitto's own clients (`mosquitto_pub`,
//! `mosquitto_sub` with `--cafile/--cert/--key`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;

fn peers() -> bool {
    have("openssl") && have("curl") && have("mosquitto_pub") && have("mosquitto_sub")
}

struct Device {
    key: PathBuf,
    cert: PathBuf,
}

fn setup(devices: &[&str]) -> (tempfile::TempDir, ServerProc, Vec<Device>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, list) = ServerProc::with_token_fleet(dir.path(), "cam", devices);
    let list = list
        .into_iter()
        .map(|(key, cert)| Device { key, cert })
        .collect();
    (dir, server, list)
}

fn mq_args(server: &ServerProc, cert: &Path, key: &Path, id: &str) -> Vec<String> {
    let mut args = mosquitto_args(server, cert, key, id);
    args.push("-d".into());
    args
}

fn pub_(
    server: &ServerProc,
    d: &Device,
    id: &str,
    topic: &str,
    msg: &str,
    extra: &[&str],
) -> (bool, String) {
    let mut args = mq_args(server, &d.cert, &d.key, id);
    args.extend(["-t", topic, "-m", msg, "-q", "1"].map(String::from));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let o = Command::new("timeout")
        .arg("10")
        .arg("mosquitto_pub")
        .args(&args)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

#[test]
fn a_valid_devices_telemetry_reaches_the_inventory() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let d = &devs[0];
    assert_eq!(server.device("cam-1")["device"]["state"], "enrolled");
    for v in ["mqttv311", "mqttv5"] {
        let (ok, out) = pub_(
            &server,
            d,
            "cam-1",
            "palisade/d/cam-1/telemetry",
            r#"{"firmware":"1.2.3","uptime":5}"#,
            &["-V", v],
        );
        assert!(ok && out.contains("received PUBACK"), "{v}: {out}");
    }
    let det = server.device("cam-1");
    assert_eq!(det["device"]["state"], "active", "{det}");
    assert_eq!(det["reported_firmware"], "1.2.3", "{det}");
    assert!(det["last_seen"].is_string(), "{det}");
    assert!(
        server
            .metric("palisade_mqtt_messages_in_total")
            .contains(" 2"),
        "{}",
        server.metric("palisade_mqtt")
    );
    // Last-seen and firmware are kept in the inventory across a restart.
    let mut server = server;
    server.stop();
    let server = ServerProc::start(&server.data).unwrap();
    let det = server.device("cam-1");
    assert_eq!(det["reported_firmware"], "1.2.3", "{det}");
    assert!(det["last_seen"].is_string(), "{det}");
}

#[test]
fn a_device_cannot_use_another_devices_topics() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1", "cam-2"]);
    let d = &devs[0];
    // MQTT 5: the PUBLISH is refused with "Not authorized" (0x87 = 135).
    let (_, out) = pub_(
        &server,
        d,
        "cam-1",
        "palisade/d/cam-2/telemetry",
        "x",
        &["-V", "mqttv5"],
    );
    assert!(
        out.contains("RC:135") || out.contains("Not authorized"),
        "{out}"
    );
    // MQTT 3.1.1 cannot say so: the connection is closed and nothing is acknowledged.
    let (_, out) = pub_(
        &server,
        d,
        "cam-1",
        "palisade/d/cam-2/telemetry",
        "x",
        &["-V", "mqttv311"],
    );
    assert!(!out.contains("received PUBACK"), "{out}");
    // Wildcards in a topic name, and the commands topic the device only receives on.
    let (_, out) = pub_(
        &server,
        d,
        "cam-1",
        "palisade/d/cam-1/commands",
        "x",
        &["-V", "mqttv5"],
    );
    assert!(out.contains("RC:135"), "{out}");
    // Subscriptions beyond its own namespace are refused, its own are granted.
    for (filter, granted) in [
        ("#", false),
        ("palisade/d/+/commands", false),
        ("palisade/d/cam-2/commands", false),
        ("palisade/d/cam-1/commands", true),
    ] {
        for v in ["mqttv311", "mqttv5"] {
            let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
            args.extend(["-t", filter, "-V", v, "-W", "1", "-C", "1"].map(String::from));
            let o = Command::new("timeout")
                .arg("10")
                .arg("mosquitto_sub")
                .args(&args)
                .output()
                .unwrap();
            let out = text(&o);
            let refused =
                out.contains("): 128") || out.contains("): 135") || out.contains("denied");
            assert_eq!(!refused, granted, "{filter} over {v}: {out}");
        }
    }
    let denials = server.metric("palisade_mqtt_acl_denials_total");
    assert!(
        denials.contains("other_namespace") && denials.contains("not_permitted"),
        "{denials}"
    );
    // The other device is unaffected.
    let (ok, out) = pub_(
        &server,
        &devs[1],
        "cam-2",
        "palisade/d/cam-2/telemetry",
        "{}",
        &[],
    );
    assert!(ok, "{out}");
}

#[test]
fn a_client_id_that_differs_from_the_certificate_is_refused() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let (ok, out) = pub_(
        &server,
        &devs[0],
        "cam-2",
        "palisade/d/cam-2/telemetry",
        "x",
        &["-V", "mqttv311"],
    );
    assert!(!ok && out.contains("CONNACK (2)"), "{out}");
    let (ok, out) = pub_(
        &server,
        &devs[0],
        "cam-2",
        "palisade/d/cam-2/telemetry",
        "x",
        &["-V", "mqttv5"],
    );
    assert!(!ok && out.contains("CONNACK (133)"), "{out}");
}

#[test]
fn revoked_and_foreign_ca_certificates_cannot_connect() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let (_odir, other, odevs) = setup(&["cam-1"]);
    // A certificate from another Palisade installation (a foreign CA).
    let (ok, out) = pub_(
        &server,
        &odevs[0],
        "cam-1",
        "palisade/d/cam-1/telemetry",
        "x",
        &[],
    );
    assert!(!ok && !out.contains("CONNACK (0)"), "{out}");
    drop(other);
    // Revoked: the next handshake fails.
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--device", "cam-1", "--json"]))
            .unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_owned();
    server.cli_ok(&["cert", "revoke", &serial, "--reason", "key-compromise"]);
    let (ok, out) = pub_(
        &server,
        &devs[0],
        "cam-1",
        "palisade/d/cam-1/telemetry",
        "x",
        &[],
    );
    assert!(!ok && !out.contains("CONNACK (0)"), "{out}");
    assert!(
        server
            .metric("palisade_mqtt_refusals_total")
            .contains("tls"),
        "{}",
        server.metric("palisade_mqtt")
    );
}

#[test]
fn revoking_a_connected_device_closes_its_session() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let d = &devs[0];
    let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
    args.extend(["-t", "palisade/d/cam-1/commands", "-V", "mqttv5"].map(String::from));
    let mut sub = Command::new("mosquitto_sub")
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the session is live.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.device("cam-1")["connected"] != true {
        assert!(Instant::now() < deadline, "the subscriber never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--device", "cam-1", "--json"]))
            .unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_owned();
    let t0 = Instant::now();
    server.cli_ok(&["cert", "revoke", &serial]);
    let revoked_at = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        if let Some(status) = sub.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let latency = t0.elapsed();
    let _ = sub.kill();
    assert!(closed.is_some(), "the revoked device's session stayed open");
    assert_eq!(server.device("cam-1")["connected"], false);
    eprintln!("revocation (CLI returned after {revoked_at:?}) to session closed: {latency:?}");
}

#[test]
fn a_connection_that_never_sends_connect_is_closed() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, "[mqtt]\nconnect_timeout_secs = 1\n").unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    server.cli_ok(&["model", "add", "cam"]);
    let (key, cert) = enrol_with_token(&server, dir.path(), "slow-1", "cam");
    // Complete the TLS handshake with a valid certificate, then say nothing.
    let t0 = Instant::now();
    let o = Command::new("timeout")
        .args([
            "15",
            "openssl",
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", server.mqtt_port()),
            "-CAfile",
            server.data.join("ca/root.pem").to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    let _ = o;
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "the silent connection was not closed"
    );
    assert!(
        server
            .metric("palisade_mqtt_refusals_total")
            .contains("connect_timeout"),
        "{}",
        server.metric("palisade_mqtt")
    );
}

#[test]
fn an_operators_command_is_delivered_and_its_acknowledgement_tracked() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let d = &devs[0];
    // Queued while the device is offline…
    let sent: serde_json::Value = serde_json::from_str(
        &server.cli_ok(&["--json", "device", "command", "cam-1", "reboot", "--now"]),
    )
    .unwrap();
    assert_eq!(sent["status"], "queued");
    let id = sent["id"].as_str().unwrap().to_owned();
    // …delivered when it subscribes to its commands topic.
    let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
    args.extend(
        [
            "-t",
            "palisade/d/cam-1/commands",
            "-C",
            "1",
            "-q",
            "1",
            "-W",
            "5",
        ]
        .map(String::from),
    );
    let o = Command::new("mosquitto_sub").args(&args).output().unwrap();
    let got = String::from_utf8_lossy(&o.stdout);
    let line = got.lines().find(|l| l.starts_with('{')).unwrap_or("{}");
    let msg: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(msg["id"], id.as_str(), "{got}");
    assert_eq!(msg["name"], "reboot");
    assert_eq!(msg["args"], serde_json::json!(["--now"]));
    // The device acknowledges on its acks topic.
    let ack = format!(r#"{{"id":"{id}","ok":true,"result":"rebooting"}}"#);
    let (ok, out) = pub_(&server, d, "cam-1", "palisade/d/cam-1/acks", &ack, &[]);
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["device", "commands", "cam-1", "--json"]))
                .unwrap();
        if list[0]["status"] == "acked" {
            assert!(
                list[0]["sent_at"].is_string() && list[0]["acked_at"].is_string(),
                "{list}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never acknowledged: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Runs a Python peer from `peers/` against the gateway as device `d` presenting
/// client id `id`; the script prints one JSON object.
fn python_peer(
    script: &str,
    server: &ServerProc,
    d: &Device,
    id: &str,
    last: &str,
) -> serde_json::Value {
    let path = palisade_interop::peer_script(script);
    let o = Command::new("python3")
        .arg(path)
        .args([
            "127.0.0.1",
            &server.mqtt_port().to_string(),
            server.data.join("ca/root.pem").to_str().unwrap(),
            d.cert.to_str().unwrap(),
            d.key.to_str().unwrap(),
            id,
            last,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{script}: {}", text(&o)));
    if v.as_object().is_some_and(|m| m.is_empty()) {
        panic!("{script} got no answer: {}", text(&o));
    }
    v
}

fn paho(server: &ServerProc, d: &Device, id: &str, other: &str) -> serde_json::Value {
    python_peer("paho_v5.py", server, d, id, other)
}

#[test]
fn paho_mqtt5_sees_the_right_reason_codes() {
    if !peers() || !have_python_module("paho.mqtt", "paho-mqtt") {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1", "cam-2"]);
    let r = paho(&server, &devs[0], "cam-1", "cam-2");
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["own_publish"], 0, "{r}");
    assert_eq!(r["cross_publish"], 135, "not authorised: {r}");
    assert_eq!(r["suback"], serde_json::json!([1, 135]), "{r}");
    assert_eq!(server.device("cam-1")["reported_firmware"], "5.0.0");
    // A client id that is not the certificate's identity: 0x85.
    let r = paho(&server, &devs[0], "cam-2", "cam-1");
    assert_eq!(r["connack"], 133, "{r}");
    // Revoked: the TLS handshake fails.
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--device", "cam-1", "--json"]))
            .unwrap();
    server.cli_ok(&["cert", "revoke", list[0]["serial"].as_str().unwrap()]);
    let r = paho(&server, &devs[0], "cam-1", "cam-2");
    assert!(r["error"].is_string() && r.get("connack").is_none(), "{r}");
}

#[test]
fn a_will_is_published_on_an_unclean_close_and_must_stay_in_its_namespace() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1"]);
    let d = &devs[0];
    let will = |topic: &str| {
        let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
        args.extend(
            [
                "-t",
                "palisade/d/cam-1/commands",
                "--will-topic",
                topic,
                "--will-payload",
                r#"{"firmware":"9.9.9-will"}"#,
            ]
            .map(String::from),
        );
        Command::new("mosquitto_sub")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A will aimed at another device is refused at CONNECT.
    let mut bad = will("palisade/d/cam-2/telemetry");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bad.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "a foreign will was accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its own will: published when the client dies without DISCONNECT.
    let mut good = will("palisade/d/cam-1/telemetry");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.device("cam-1")["connected"] != true {
        assert!(Instant::now() < deadline, "never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    good.kill().unwrap();
    let _ = good.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.device("cam-1")["reported_firmware"] != "9.9.9-will" {
        assert!(
            Instant::now() < deadline,
            "the will never arrived: {}",
            server.device("cam-1")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn raw(server: &ServerProc, d: &Device, id: &str, scenario: &str) -> serde_json::Value {
    python_peer("raw_mqtt.py", server, d, id, scenario)
}

#[test]
fn malformed_oversized_wrong_level_and_flooding_connections_are_closed() {
    if !peers() || !have("python3") {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1", "cam-2"]);
    let d = &devs[0];
    for (scenario, reason) in [
        ("garbage", "bad_protocol"),
        ("bad_level", "bad_protocol"),
        ("oversized", "malformed_packet"),
        ("flood", "rate_limited"),
    ] {
        let r = raw(&server, d, "cam-1", scenario);
        assert_eq!(r["closed"], true, "{scenario}: {r}");
        let refusals = server.metric("palisade_mqtt_refusals_total");
        assert!(
            refusals.contains(reason),
            "{scenario}: expected {reason} in {refusals}"
        );
    }
    // The bad connection took nothing from the others: a well-formed CONNECT still
    // gets CONNACK 0 and another device publishes normally.
    let r = raw(&server, d, "cam-1", "connect_only");
    assert_eq!(r["connack"], "20020000", "{r}");
    let (ok, out) = pub_(
        &server,
        &devs[1],
        "cam-2",
        "palisade/d/cam-2/telemetry",
        "{}",
        &[],
    );
    assert!(ok, "{out}");
}

#[test]
fn a_persistent_session_resumes_and_retained_messages_stay_in_the_namespace() {
    if !peers() || !have("python3") {
        return;
    }
    let (_dir, server, devs) = setup(&["cam-1", "cam-2"]);
    let d = &devs[0];
    // First non-clean CONNECT: no session yet. Second: the session is present.
    assert_eq!(
        raw(&server, d, "cam-1", "persistent")["connack"],
        "20020000"
    );
    assert_eq!(
        raw(&server, d, "cam-1", "persistent")["connack"],
        "20020100"
    );
    // A clean session discards it.
    assert_eq!(
        raw(&server, d, "cam-1", "connect_only")["connack"],
        "20020000"
    );
    assert_eq!(
        raw(&server, d, "cam-1", "persistent")["connack"],
        "20020000"
    );
    // A retained message on its own telemetry comes back on its own-namespace
    // subscription, and to no other device.
    let (ok, out) = pub_(
        &server,
        d,
        "cam-1",
        "palisade/d/cam-1/telemetry",
        r#"{"retained":true}"#,
        &["-r"],
    );
    assert!(ok, "{out}");
    let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
    args.extend(["-t", "palisade/d/cam-1/#", "-C", "1", "-W", "5"].map(String::from));
    let o = Command::new("mosquitto_sub").args(&args).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(r#"{"retained":true}"#),
        "{}",
        text(&o)
    );
    let mut args = mq_args(&server, &devs[1].cert, &devs[1].key, "cam-2");
    args.extend(["-t", "palisade/d/cam-2/#", "-C", "1", "-W", "2"].map(String::from));
    let o = Command::new("mosquitto_sub").args(&args).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("retained"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_persistent_session_its_queued_command_and_retained_messages_survive_a_restart() {
    if !peers() || !have("python3") {
        return;
    }
    let (_dir, mut server, devs) = setup(&["cam-1"]);
    let d = &devs[0];
    // A retained message (mosquitto_pub: a clean session of its own) ...
    let (ok, out) = pub_(
        &server,
        d,
        "cam-1",
        "palisade/d/cam-1/telemetry",
        r#"{"kept":"over a restart"}"#,
        &["-r", "-q", "1"],
    );
    assert!(ok, "{out}");
    // ... then paho, clean session false: subscribes to its commands, goes away.
    let first = python_peer("persistent_session.py", &server, d, "cam-1", "subscribe");
    assert_eq!(first["session_present"], false, "{first}");
    assert_eq!(first["suback"], serde_json::json!([1]), "{first}");

    // The server restarts while the device is offline; a command is queued.
    let data = server.data.clone();
    server.stop();
    drop(server);
    let server = ServerProc::start(&data).unwrap();
    server.cli_ok(&["device", "command", "cam-1", "reboot"]);

    // A session that takes the command and drops without acknowledging it
    // leaves it queued ...
    let dropped = raw(&server, d, "cam-1", "take_no_ack");
    assert_eq!(dropped["connack"], "20020100", "{dropped}");
    assert_eq!(dropped["publish"], true, "{dropped}");
    // ... so when the device is back (without subscribing: the session is
    // there), it gets the command, and only it.
    let back = python_peer("persistent_session.py", &server, d, "cam-1", "resume");
    assert_eq!(back["session_present"], true, "{back}");
    let got: Vec<&str> = back["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert_eq!(got.len(), 1, "exactly one message: {back}");
    assert!(got[0].contains(r#""name":"reboot""#), "{back}");
    // Once: the next resume finds the session but nothing to deliver.
    let again = python_peer("persistent_session.py", &server, d, "cam-1", "resume");
    assert_eq!(again["session_present"], true, "{again}");
    assert_eq!(again["messages"], serde_json::json!([]), "{again}");

    // The retained message outlived the restart too.
    let mut args = mq_args(&server, &d.cert, &d.key, "cam-1");
    args.extend(["-t", "palisade/d/cam-1/#", "-C", "1", "-W", "5"].map(String::from));
    let o = Command::new("mosquitto_sub").args(&args).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("over a restart"),
        "{}",
        text(&o)
    );
}
