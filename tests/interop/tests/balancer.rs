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

use std::process::Command;
use std::time::{Duration, Instant};

use palisade_interop::balancer::{BALANCER_SOURCE, Haproxy, node_config};
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
