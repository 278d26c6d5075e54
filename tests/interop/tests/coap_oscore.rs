//! The OSCORE listener against aiocoap 0.4 (its EDHOC through lakers-python,
//! its OSCORE): EDHOC from the device's identity, then the fleet's resources
//! under OSCORE; a key that is not the certificate's; revocation dropping the
//! context; replayed and altered requests, taken off the wire by a relay
//! between aiocoap and the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_interop::*;

fn peers() -> bool {
    have("openssl")
        && have("curl")
        && have("python3")
        && have_python_module("aiocoap.edhoc", "aiocoap[oscore]")
}

fn setup(devices: &[&str]) -> (tempfile::TempDir, ServerProc, Vec<(PathBuf, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, list) = ServerProc::with_token_fleet(dir.path(), "meter", devices);
    (dir, server, list)
}

/// Runs the aiocoap device with `steps` against `port`; returns its JSON lines.
fn device(
    dir: &Path,
    server: &ServerProc,
    port: u16,
    id: &str,
    key: &Path,
    steps: serde_json::Value,
) -> Vec<serde_json::Value> {
    let script = dir.join(format!("{id}-steps.json"));
    std::fs::write(&script, steps.to_string()).unwrap();
    let o: Output = Command::new("timeout")
        .args(["120", "python3"])
        .arg(peer_script("aiocoap_edhoc.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(id)
        .arg(key)
        .arg(server.data.join("edhoc/credential.cbor"))
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "aiocoap device: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn edhoc_then_oscore_carries_telemetry_commands_and_answers() {
    if !peers() {
        return;
    }
    let (dir, server, devs) = setup(&["m-1"]);
    let port = server.oscore_port();
    // Commands queued before the device comes: delivered when it observes.
    let sent = server.cli_ok(&["device", "command", "m-1", "reboot", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(&sent).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = device(
        dir.path(),
        &server,
        port,
        "m-1",
        &devs[0].0,
        serde_json::json!([
            {"op": "post", "path": "telemetry", "json": {"firmware": "4.0.1", "uptime": 9}},
            {"op": "get", "path": ".well-known/core"},
            {"op": "observe", "path": "commands", "count": 1, "timeout": 20},
            {"op": "post", "path": "acks", "json": {"id": id, "ok": true, "result": "rebooting"}},
        ]),
    );
    assert_eq!(out[0]["code"], "2.04", "{out:?}");
    assert!(
        out[1]["payload"].as_str().unwrap().contains("</commands>"),
        "{out:?}"
    );
    let notes = out
        .iter()
        .find(|o| o.get("notifications").is_some())
        .unwrap();
    assert!(
        notes["notifications"][0]
            .as_str()
            .unwrap()
            .contains("\"reboot\""),
        "{out:?}"
    );
    assert_eq!(out.last().unwrap()["code"], "2.04", "{out:?}");
    let det = server.device("m-1");
    assert_eq!(det["reported_firmware"], "4.0.1", "{det}");
    assert_eq!(det["device"]["state"], "active");
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "the answer was not recorded",
        || {
            server
                .cli_ok(&["device", "commands", "m-1", "--json"])
                .contains("rebooting")
        },
    );
    assert!(server.metric_sum("palisade_coap_edhoc_completed_total") >= 1.0);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    if !peers() {
        return;
    }
    let (dir, server, _devs) = setup(&["m-1"]);
    let other = dir.path().join("other.key");
    let o = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = device(
        dir.path(),
        &server,
        server.oscore_port(),
        "m-1",
        &other,
        serde_json::json!([{"op": "post", "path": "telemetry", "json": {"firmware": "6.6.6"}}]),
    );
    assert!(out[0].get("code").is_none_or(|c| c != "2.04"), "{out:?}");
    assert!(
        server
            .metric("palisade_coap_refusals_total")
            .contains("key_not_certified"),
        "{}",
        server.metric("palisade_coap")
    );
    assert_ne!(server.device("m-1")["reported_firmware"], "6.6.6");
}

#[test]
fn revoking_the_certificate_drops_the_oscore_context_within_a_second() {
    if !peers() {
        return;
    }
    let (dir, server, devs) = setup(&["m-1", "m-2"]);
    let port = server.oscore_port();
    // m-1 observes its commands for a while (its context stays live).
    let steps = dir.path().join("hold.json");
    std::fs::write(
        &steps,
        serde_json::json!([{"op": "observe", "path": "commands", "count": 99, "timeout": 8}])
            .to_string(),
    )
    .unwrap();
    let mut hold = Command::new("python3")
        .arg(peer_script("aiocoap_edhoc.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg("m-1")
        .arg(&devs[0].0)
        .arg(server.data.join("edhoc/credential.cbor"))
        .arg(&steps)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    server.wait_connected("m-1", true, Duration::from_secs(30));
    let serial = server.cert_serial("m-1");
    let t0 = Instant::now();
    server.cli_ok(&["cert", "revoke", &serial]);
    let cli = t0.elapsed();
    let gone = server.wait_connected("m-1", false, Duration::from_secs(5));
    eprintln!("revocation: CLI returned after {cli:?}, OSCORE context dropped {gone:?} later");
    assert!(gone < Duration::from_secs(1), "{gone:?}");
    let _ = hold.kill();
    let _ = hold.wait();
    assert_eq!(server.metric_sum("palisade_coap_oscore_contexts "), 0.0);
    // A new EDHOC run with the revoked certificate's key is refused at
    // admission; the other device is unaffected.
    let out = device(
        dir.path(),
        &server,
        port,
        "m-1",
        &devs[0].0,
        serde_json::json!([{"op": "post", "path": "telemetry", "json": {}}]),
    );
    assert!(out[0].get("code").is_none_or(|c| c != "2.04"), "{out:?}");
    assert!(
        server
            .metric("palisade_coap_refusals_total")
            .contains("revoked"),
        "{}",
        server.metric("palisade_coap")
    );
    let out = device(
        dir.path(),
        &server,
        port,
        "m-2",
        &devs[1].0,
        serde_json::json!([{"op": "post", "path": "telemetry", "json": {}}]),
    );
    assert_eq!(out[0]["code"], "2.04", "{out:?}");
}

/// A UDP relay between aiocoap and the server that keeps what the device
/// sent, so the test can send it again, changed or not.
struct Relay {
    front: u16,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(server).unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = front.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    s2.lock().unwrap().push(buf[..n].to_vec());
                    let _ = back.send(&buf[..n]);
                }
                if let (Ok(n), Some(c)) = (back.recv(&mut buf), client) {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
        });
        Self {
            front: port,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `d` to the server from a fresh socket; returns the answer's code
/// (`c.dd`) and payload.
fn send_raw(server: SocketAddr, d: &[u8]) -> Option<(String, Vec<u8>)> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(d, server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    let p = coap_lite::Packet::from_bytes(&buf[..n]).ok()?;
    Some((p.header.code.to_string(), p.payload))
}

#[test]
fn replayed_and_altered_requests_are_refused_and_the_device_carries_on() {
    if !peers() {
        return;
    }
    let (dir, server, devs) = setup(&["m-1"]);
    let target: SocketAddr = format!("127.0.0.1:{}", server.oscore_port())
        .parse()
        .unwrap();
    let relay = Relay::start(target);
    let out = device(
        dir.path(),
        &server,
        relay.front,
        "m-1",
        &devs[0].0,
        serde_json::json!([
            {"op": "post", "path": "telemetry", "json": {"firmware": "5.0.0"}},
            {"op": "post", "path": "telemetry", "json": {"firmware": "5.0.1"}},
        ]),
    );
    assert_eq!(out[1]["code"], "2.04", "{out:?}");
    let seen = relay.seen.lock().unwrap().clone();
    drop(relay);
    // aiocoap 0.4.17 runs EDHOC for every request (its transport caches the
    // context on the wrong object), so each request is a combined one: the
    // EDHOC option and message_3 in front of the OSCORE request.
    let last = seen
        .iter()
        .rev()
        .find_map(|d| {
            let p = coap_lite::Packet::from_bytes(d).ok()?;
            p.get_option(coap_lite::CoapOption::Unknown(21))?;
            Some(p)
        })
        .expect("a combined request went through the relay");
    // Replayed whole under a new message id: message_3 finds no EDHOC session.
    let mut again = last.clone();
    again.header.message_id ^= 0x5555;
    let (code, _) = send_raw(target, &again.to_bytes().unwrap()).expect("an answer");
    assert_eq!(code, "4.00");
    assert!(
        server
            .metric("palisade_coap_refusals_total")
            .contains("edhoc_message_3")
    );
    // The OSCORE request inside it, under a new message id: not a
    // retransmission, so it meets the context's replay window.
    let mut inner = last.clone();
    inner.clear_option(coap_lite::CoapOption::Unknown(21));
    // message_3 is a CBOR byte string: its head, then its bytes.
    let m3_len = match inner.payload[0] {
        b @ 0x40..=0x57 => 1 + usize::from(b & 0x1f),
        0x58 => 2 + usize::from(inner.payload[1]),
        other => panic!("message_3 is not a short byte string: {other:#x}"),
    };
    inner.payload = inner.payload[m3_len..].to_vec();
    inner.header.message_id ^= 0x3333;
    let before = server.metric_sum("palisade_coap_refusals_total{reason=\"oscore_replay\"}");
    let (code, diag) =
        send_raw(target, &inner.to_bytes().unwrap()).expect("an answer to the replay");
    assert_eq!(code, "4.01", "{}", String::from_utf8_lossy(&diag));
    assert_eq!(
        server.metric_sum("palisade_coap_refusals_total{reason=\"oscore_replay\"}"),
        before + 1.0
    );
    let last = inner.to_bytes().unwrap();
    // Under a Partial IV never used (so the replay window lets it by) with
    // one ciphertext byte changed: refused, the AEAD does not verify.
    let mut altered = coap_lite::Packet::from_bytes(&last).unwrap();
    let mut option = altered
        .get_first_option(coap_lite::CoapOption::Oscore)
        .unwrap()
        .clone();
    assert_eq!(option[0] & 0x07, 1, "a one-byte Partial IV");
    option[1] = 0x7f;
    altered.clear_option(coap_lite::CoapOption::Oscore);
    altered.add_option(coap_lite::CoapOption::Oscore, option);
    let n = altered.payload.len();
    altered.payload[n - 1] ^= 0x01;
    altered.header.message_id ^= 0x1111;
    let (code, _) =
        send_raw(target, &altered.to_bytes().unwrap()).expect("an answer to the altered request");
    assert_eq!(code, "4.00");
    assert!(
        server
            .metric("palisade_coap_refusals_total")
            .contains("oscore_decrypt")
    );
    assert_eq!(
        server.device("m-1")["reported_firmware"],
        "5.0.1",
        "nothing replayed took effect"
    );
    // The device's own next request still goes through.
    let out = device(
        dir.path(),
        &server,
        server.oscore_port(),
        "m-1",
        &devs[0].0,
        serde_json::json!([{"op": "post", "path": "telemetry", "json": {"firmware": "5.0.2"}}]),
    );
    assert_eq!(out[0]["code"], "2.04", "{out:?}");
    assert_eq!(server.device("m-1")["reported_firmware"], "5.0.2");
}
