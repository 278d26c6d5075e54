//! A node behind HAProxy (Debian's, in TCP mode with `send-proxy-v2`, from
//! `contrib/haproxy.cfg`): devices enrol over EST and connect over MQTT
//! through it with their client certificates (TLS ends at the node), and the
//! node knows them by their own addresses, read from the PROXY protocol v2
//! header. A connection that does not come from the balancer is refused
//! before TLS; a header sent to a listener that does not expect one fails the
//! handshake; the nodes go on serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::balancer::{BALANCER_SOURCE, Haproxy, cluster_peers, node_config};
use palisade_interop::*;
use serde_json::Value;

#[test]
fn devices_reach_a_node_through_haproxy_which_sees_their_own_addresses() {
    for tool in ["haproxy", "mosquitto_pub", "curl", "openssl"] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_config()).unwrap();
    let mut node = ServerProc::start_with(
        &dir.path().join("node"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let direct_https = node.url.clone();
    let direct_mqtt = node.mqtt_port();
    let lb = Haproxy::start(dir.path(), &[&node]).unwrap();
    lb.front(&mut node).unwrap();

    // Operators and devices go through the balancer.
    node.cli_ok(&["model", "add", "cam"]);
    let (key, cert) = enrol_with_token(&node, dir.path(), "cam-1", "cam");
    let mut args = mosquitto_args(&node, &cert, &key, "cam-1");
    args.extend(["-q", "1", "-t", "palisade/d/cam-1/telemetry", "-m", "{}"].map(String::from));
    let o = Command::new("mosquitto_pub").args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // The node saw the device at 127.0.0.1 (the header), not at the
    // balancer's address (the TCP peer).
    let deadline = Instant::now() + Duration::from_secs(10);
    let summary = loop {
        let t: Value =
            serde_json::from_str(&node.api_get("/api/v1/devices/cam-1/timeline")).unwrap();
        let connected = t["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["kind"] == "connected")
            .map(|e| e["summary"].as_str().unwrap_or_default().to_owned());
        if let Some(s) = connected {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no connection in the timeline: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(summary, "connected from 127.0.0.1");

    // An HTTPS client's address too: a refused token is audited with it.
    let o = Command::new("curl")
        .args(["-s", "--interface", "127.0.0.44", "--cacert"])
        .arg(node.data.join("ca/root.pem"))
        .args(["-H", "Authorization: Bearer pal_nope"])
        .arg(format!("{}/api/v1/devices", node.url))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("malformed"),
        "{}",
        text(&o)
    );
    let audit = node.api_get("/api/v1/audit/entries?limit=100");
    assert!(audit.contains("anonymous@127.0.0.44"), "{audit}");
    assert!(
        !audit.contains(&format!("anonymous@{BALANCER_SOURCE}")),
        "{audit}"
    );

    // Straight to the node, without the header (and not from the balancer):
    // refused before TLS on both listeners.
    let o = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(node.data.join("ca/root.pem"))
        .arg(format!("{direct_https}/healthz"))
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a direct HTTPS request was served: {}",
        text(&o)
    );
    let mut direct = mosquitto_args(&node, &cert, &key, "cam-1");
    let p = direct.iter().position(|a| a == "-p").unwrap();
    direct[p + 1] = direct_mqtt.to_string();
    direct.extend(["-t", "palisade/d/cam-1/telemetry", "-m", "{}"].map(String::from));
    let o = Command::new("mosquitto_pub")
        .args(&direct)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a direct MQTT connection was served: {}",
        text(&o)
    );
    let metrics = node.api_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("palisade_mqtt_refusals_total") && l.contains("proxy_header")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("refusals"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A PROXY header (curl sends version 1) on a listener that does not
    // expect one: that connection fails its TLS handshake, the node serves on.
    let plain = ServerProc::start(&dir.path().join("plain")).unwrap();
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(plain.data.join("ca/root.pem"))
            .args(extra)
            .arg(format!("{}/healthz", plain.url))
            .output()
            .unwrap()
    };
    let o = curl(&["--haproxy-protocol"]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = curl(&[]);
    assert!(o.status.success(), "{}", text(&o));

    // The node still serves through the balancer.
    let o = Command::new("mosquitto_pub").args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// Two nodes on one PostgreSQL behind HAProxy. SIGTERM on the node holding a
/// device's MQTT 5 session: it reports not ready first (the balancer stops
/// sending it connections), then tells the device to use another server (the
/// balancer), keeps the device's session, and exits cleanly; the device
/// follows the server reference, lands on the other node with its session
/// present, and gets the command queued meanwhile exactly once.
#[test]
fn a_draining_node_sends_its_devices_through_the_balancer_to_another() {
    let Some(admin) = cluster_peers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = create_postgres_database(&admin, &format!("palisade_drain_{}", std::process::id()))
        .unwrap();
    let (lb_mqtt, lb_https) = (free_port(), free_port());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[drain]\nannounce_secs = 3\nserver_reference = \"127.0.0.1:{lb_mqtt}\"\n",
            node_config()
        ),
    )
    .unwrap();
    let (mut a, mut b) =
        two_nodes_with(dir.path(), &url, &["--config", config.to_str().unwrap()]).unwrap();
    let lb = Haproxy::start_on(dir.path(), &[&a, &b], lb_mqtt, lb_https).unwrap();
    lb.front_node(&mut a, 0).unwrap();
    lb.front_node(&mut b, 1).unwrap();

    a.cli_ok(&["model", "add", "cam"]);
    let (key, cert) = enrol_with_token(&a, dir.path(), "cam-1", "cam");
    // The device's session is on node A (A's own frontend).
    let mut device = Command::new("python3")
        .arg(peer_script("drain_client.py"))
        .args([
            "127.0.0.1",
            &a.mqtt_port().to_string(),
            a.data.join("ca/root.pem").to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            "cam-1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(device.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "subscribed");

    // SIGTERM: A reports not ready while it still serves.
    let term = Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    let readyz = loop {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "1", "--cacert"])
            .arg(a.data.join("ca/root.pem"))
            .arg(format!("{}/readyz", a.url))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        if body.contains("draining") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(readyz.contains("not ready: draining"), "{readyz}");

    // Then it tells the device where to go.
    line.clear();
    out.read_line(&mut line).unwrap();
    let said: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(said["reason"], 156, "use another server: {said}");
    assert_eq!(said["server_reference"], format!("127.0.0.1:{lb_mqtt}"));
    // A exits cleanly once its sessions are closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = a.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "node A did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "node A exited with {status}");

    // A command while the device moves: queued, delivered once on B.
    b.cli_ok(&["device", "command", "cam-1", "reboot"]);
    device.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = device.wait();
    let resumed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(resumed["session_present"], true, "{resumed}");
    let reboots = resumed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m.as_str()
                .unwrap_or_default()
                .contains(r#""name":"reboot""#)
        })
        .count();
    assert_eq!(reboots, 1, "{resumed}");
    let o = b.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}
