//! The CoAP endpoint over DTLS 1.2 against libcoap's own clients from Debian
//! (`coap-client-openssl` and `coap-client-gnutls`, libcoap 4.3.1) with
//! certificates Palisade issued, and against a flood of real ClientHellos
//! (captured from `openssl s_client -dtls1_2`) from many source ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;

const CLIENTS: [&str; 2] = ["coap-client-openssl", "coap-client-gnutls"];

fn peers() -> bool {
    have("openssl") && have("curl") && CLIENTS.iter().all(|c| have(c))
}

struct Device {
    key: PathBuf,
    cert: PathBuf,
}

fn setup(devices: &[&str]) -> (tempfile::TempDir, ServerProc, Vec<Device>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, list) = ServerProc::with_token_fleet(dir.path(), "meter", devices);
    let list = list
        .into_iter()
        .map(|(key, cert)| Device { key, cert })
        .collect();
    (dir, server, list)
}

/// A libcoap client command for `path` on the server's DTLS endpoint, with
/// the device's certificate and key and the server's root as trust anchor.
fn client(tool: &str, server: &ServerProc, d: &Device, args: &[&str], path: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg("30").arg(tool);
    c.args([
        "-c",
        &d.cert.to_string_lossy(),
        "-j",
        &d.key.to_string_lossy(),
    ]);
    c.args(["-C", &server.data.join("ca/root.pem").to_string_lossy()]);
    c.args(args);
    c.arg(format!("coaps://127.0.0.1:{}/{path}", server.coap_port()));
    c
}

fn run_client(tool: &str, server: &ServerProc, d: &Device, args: &[&str], path: &str) -> Output {
    client(tool, server, d, args, path).output().unwrap()
}

/// The response codes a client logged at verbosity 6 (`c:2.04`, ...).
fn codes(o: &Output) -> Vec<String> {
    text(o)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("c:"))
        .filter(|c| c.starts_with(['2', '4', '5']))
        .map(str::to_owned)
        .collect()
}

#[test]
fn libcoap_clients_post_telemetry_over_dtls_with_palisade_certificates() {
    if !peers() {
        return;
    }
    let (dir, server, devs) = setup(&["m-1"]);
    let d = &devs[0];
    assert_eq!(server.device("m-1")["device"]["state"], "enrolled");
    for (i, tool) in CLIENTS.iter().enumerate() {
        let body = format!(r#"{{"firmware":"2.0.{i}","uptime":{i}}}"#);
        let o = run_client(
            tool,
            &server,
            d,
            &["-m", "post", "-t", "50", "-e", &body, "-v", "6"],
            "telemetry",
        );
        assert!(
            codes(&o).contains(&"2.04".to_owned()),
            "{tool}: {}",
            text(&o)
        );
        let det = server.device("m-1");
        assert_eq!(
            det["reported_firmware"],
            format!("2.0.{i}"),
            "{tool}: {det}"
        );
    }
    // The first session made the device active, as an MQTT session would.
    assert_eq!(server.device("m-1")["device"]["state"], "active");
    // The resource directory, and a resource that does not exist.
    let o = run_client(
        "coap-client-gnutls",
        &server,
        d,
        &["-m", "get"],
        ".well-known/core",
    );
    assert!(
        text(&o).contains("</commands>;rt=\"palisade.commands\";obs"),
        "{}",
        text(&o)
    );
    let o = run_client(
        "coap-client-openssl",
        &server,
        d,
        &["-m", "get", "-v", "6"],
        "devices/m-2/commands",
    );
    assert!(codes(&o).contains(&"4.04".to_owned()), "{}", text(&o));
    // A telemetry document larger than one block, sent in 64-byte Block1
    // blocks, arrives whole.
    let big = format!(r#"{{"firmware":"2.1.0","note":"{}"}}"#, "x".repeat(700));
    let file = dir.path().join("big.json");
    std::fs::write(&file, &big).unwrap();
    let o = run_client(
        "coap-client-gnutls",
        &server,
        d,
        &[
            "-m",
            "post",
            "-t",
            "50",
            "-b",
            "64",
            "-f",
            &file.to_string_lossy(),
            "-v",
            "6",
        ],
        "telemetry",
    );
    // libcoap logs the last exchange: 2.04 for block 11 of 12.
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    assert!(text(&o).contains("Block1:11/_/64"), "{}", text(&o));
    assert_eq!(server.device("m-1")["reported_firmware"], "2.1.0");
    assert!(server.metric_sum("palisade_coap_handshakes_total") >= 5.0);
    assert!(
        server.metric_sum("palisade_coap_requests_total{code=\"2.04\"}") >= 3.0,
        "{}",
        server.metric("palisade_coap")
    );
}

fn observe(server: &ServerProc, d: &Device, secs: &str) -> Child {
    client(
        "coap-client-gnutls",
        server,
        d,
        &["-m", "get", "-s", secs, "-B", "1"],
        "commands",
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

#[test]
fn commands_are_observed_delivered_block_wise_and_answered() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["m-1"]);
    let d = &devs[0];
    let watcher = observe(&server, d, "12");
    server.wait_connected("m-1", true, Duration::from_secs(15));
    let small = server.cli_ok(&["device", "command", "m-1", "reboot", "--json"]);
    let small_id = serde_json::from_str::<serde_json::Value>(&small).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Eight arguments of 400 bytes: the notification carries the first 1024
    // bytes and libcoap fetches the rest with Block2.
    let long = "k".repeat(400);
    let mut args = vec!["device", "command", "m-1", "set-config"];
    args.extend([long.as_str(); 8]);
    server.cli_ok(&args);
    // Both are delivered: each notification's ACK confirms its command.
    let t0 = Instant::now();
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["device", "commands", "m-1", "--json"])).unwrap();
        let statuses: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"].as_str().unwrap_or(""))
            .collect();
        if statuses.len() == 2 && statuses.iter().all(|s| *s != "queued") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not delivered: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watcher.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"name\":\"reboot\""), "{stdout}");
    assert!(
        stdout.contains(&long),
        "the large command arrived whole: {stdout:.300}"
    );
    // The device answers the command on /acks.
    let ack = format!(r#"{{"id":"{small_id}","ok":true,"result":"rebooting"}}"#);
    let o = run_client(
        "coap-client-openssl",
        &server,
        d,
        &["-m", "post", "-t", "50", "-e", &ack, "-v", "6"],
        "acks",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
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
    assert!(server.metric_sum("palisade_coap_notifications_total") >= 2.0);
}

#[test]
fn a_revoked_device_loses_its_dtls_session_within_a_second_and_cannot_come_back() {
    if !peers() {
        return;
    }
    let (_dir, server, devs) = setup(&["m-1", "m-2"]);
    let mut watchers: Vec<Child> = devs.iter().map(|d| observe(&server, d, "60")).collect();
    server.wait_connected("m-1", true, Duration::from_secs(15));
    server.wait_connected("m-2", true, Duration::from_secs(15));
    let serial = server.cert_serial("m-1");
    let t0 = Instant::now();
    server.cli_ok(&["cert", "revoke", &serial, "--reason", "key-compromise"]);
    let cli = t0.elapsed();
    let closed = server.wait_connected("m-1", false, Duration::from_secs(15));
    eprintln!("revocation: CLI returned after {cli:?}, session closed {closed:?} later");
    assert!(
        closed < Duration::from_secs(1),
        "the DTLS session outlived the revocation by {closed:?}"
    );
    assert!(server.metric_sum("palisade_coap_sessions ") <= 1.0 + f64::EPSILON);
    // The other device is unaffected.
    assert_eq!(server.device("m-2")["connected"], true);
    let o = run_client(
        "coap-client-openssl",
        &server,
        &devs[1],
        &["-m", "post", "-t", "50", "-e", "{}", "-v", "6"],
        "telemetry",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    // The revoked certificate completes a handshake (OpenSSL checks the
    // chain) but is refused at admission: no request is answered.
    let o = run_client(
        "coap-client-openssl",
        &server,
        &devs[0],
        &["-m", "post", "-t", "50", "-e", "{}", "-v", "6"],
        "telemetry",
    );
    assert!(!codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    assert!(
        server
            .metric("palisade_coap_refusals_total")
            .contains("revoked"),
        "{}",
        server.metric("palisade_coap")
    );
    for w in &mut watchers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[test]
fn a_certificate_from_another_ca_reaches_nothing_but_est() {
    if !peers() {
        return;
    }
    let (dir, server, _devs) = setup(&["m-1"]);
    let key = dir.path().join("self.key");
    let cert = dir.path().join("self.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=m-1",
            "-days",
            "1",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let foreign = Device { key, cert };
    // The handshake completes (EST over CoAP takes birth certificates), but
    // a certificate that does not chain to Palisade's CAs is no device: its
    // telemetry is refused, and the enrolment service refuses it too.
    for tool in CLIENTS {
        let o = run_client(
            tool,
            &server,
            &foreign,
            &[
                "-m",
                "post",
                "-t",
                "50",
                "-e",
                "{\"firmware\":\"6.6.6\"}",
                "-v",
                "6",
            ],
            "telemetry",
        );
        assert!(
            codes(&o).contains(&"4.01".to_owned()),
            "{tool}: {}",
            text(&o)
        );
    }
    let csr = dir.path().join("x.csr");
    let o = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&foreign.key)
        .args(["-subj", "/CN=m-1", "-outform", "DER", "-out"])
        .arg(&csr)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = run_client(
        "coap-client-gnutls",
        &server,
        &foreign,
        &[
            "-m",
            "post",
            "-t",
            "286",
            "-f",
            &csr.to_string_lossy(),
            "-v",
            "6",
        ],
        ".well-known/est/sen",
    );
    assert!(codes(&o).contains(&"4.01".to_owned()), "{}", text(&o));
    assert_ne!(server.device("m-1")["reported_firmware"], "6.6.6");
    assert_eq!(server.metric_sum("palisade_coap_sessions "), 0.0);
}

/// A birth identity from a factory batch: EST over CoAP (RFC 9148) with
/// libcoap, then the operational certificate it got on the same endpoint.
#[test]
fn a_device_with_a_birth_certificate_enrols_over_coaps_and_renews() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "meter"]);
    let cli = |args: &[&str]| {
        server.cli_ok(args);
    };
    let batch = factory_batch(&cli, dir.path(), "acme", "meter", &["M0001"], 7300);
    let ca = batch.factory.join("ca.pem");
    server.cli_ok(&["supplier", "add", "acme", "--ca-cert", ca.to_str().unwrap()]);
    server.cli_ok(&["batch", "import", batch.manifest.to_str().unwrap()]);
    let d = &batch.devices[0];
    let birth = Device {
        key: d.join("idevid.key"),
        cert: d.join("idevid.pem"),
    };
    // The CA certificates.
    let crts = dir.path().join("crts.p7");
    let o = run_client(
        "coap-client-gnutls",
        &server,
        &birth,
        &["-m", "get", "-o", &crts.to_string_lossy()],
        ".well-known/est/crts",
    );
    assert!(o.status.success(), "{}", text(&o));
    let printed = Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&crts)
        .output()
        .unwrap();
    assert!(
        text(&printed).contains("Palisade Root CA"),
        "{}",
        text(&printed)
    );
    // A new operational key and its CSR (DER, content-format 286).
    let op_key = dir.path().join("op.key");
    let csr = dir.path().join("op.csr");
    let sh = |script: &str| {
        let o = Command::new("bash")
            .args(["-c", script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
    };
    sh(&format!(
        "openssl ecparam -name prime256v1 -genkey -noout -out {k} && openssl req -new -key {k} -subj /CN=ignored -outform DER -out {c}",
        k = op_key.display(),
        c = csr.display()
    ));
    let got = dir.path().join("op.p7");
    let o = run_client(
        "coap-client-gnutls",
        &server,
        &birth,
        &[
            "-m",
            "post",
            "-t",
            "286",
            "-f",
            &csr.to_string_lossy(),
            "-o",
            &got.to_string_lossy(),
            "-v",
            "6",
        ],
        ".well-known/est/sen",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    let op_cert = dir.path().join("op.pem");
    sh(&format!(
        "openssl pkcs7 -inform DER -print_certs -in {} -out {}",
        got.display(),
        op_cert.display()
    ));
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--json"])).unwrap();
    let issued = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["profile"] == "device")
        .expect("an operational certificate");
    let device = issued["device"].as_str().unwrap().to_owned();
    // The operational certificate opens a device session on the same endpoint.
    let op = Device {
        key: op_key.clone(),
        cert: op_cert.clone(),
    };
    let o = run_client(
        "coap-client-openssl",
        &server,
        &op,
        &[
            "-m",
            "post",
            "-t",
            "50",
            "-e",
            "{\"firmware\":\"1.0.0\"}",
            "-v",
            "6",
        ],
        "telemetry",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    assert_eq!(server.device(&device)["reported_firmware"], "1.0.0");
    // Renewal with it (sren), the bare certificate asked for (Accept 287).
    let renewed = dir.path().join("renewed.der");
    let o = run_client(
        "coap-client-gnutls",
        &server,
        &op,
        &[
            "-m",
            "post",
            "-t",
            "286",
            "-A",
            "287",
            "-f",
            &csr.to_string_lossy(),
            "-o",
            &renewed.to_string_lossy(),
            "-v",
            "6",
        ],
        ".well-known/est/sren",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
    let shown = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-subject", "-in"])
        .arg(&renewed)
        .output()
        .unwrap();
    assert!(text(&shown).contains(&device), "{}", text(&shown));
    let certs: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["cert", "list", "--device", &device, "--json"]))
            .unwrap();
    assert_eq!(certs.as_array().unwrap().len(), 2, "{certs}");
    // The birth certificate reaches nothing but EST.
    let o = run_client(
        "coap-client-openssl",
        &server,
        &birth,
        &["-m", "post", "-t", "50", "-e", "{}", "-v", "6"],
        "telemetry",
    );
    assert!(codes(&o).contains(&"4.01".to_owned()), "{}", text(&o));
}

/// One real DTLS 1.2 ClientHello, as `openssl s_client` sends it.
fn client_hello(dir: &Path) -> Vec<u8> {
    let trap = UdpSocket::bind("127.0.0.1:0").unwrap();
    trap.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = trap.local_addr().unwrap().port();
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-dtls1_2",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 2048];
    let got = trap.recv_from(&mut buf);
    let _ = s_client.kill();
    let _ = s_client.wait();
    let (n, _) = got.expect("openssl s_client sent no ClientHello");
    assert_eq!(
        (buf[0], buf[13]),
        (22, 1),
        "a handshake record holding a ClientHello"
    );
    buf[..n].to_vec()
}

#[test]
fn a_client_hello_flood_from_many_sources_meets_stateless_cookies() {
    if !peers() {
        return;
    }
    let (dir, server, devs) = setup(&["m-1"]);
    let hello = client_hello(dir.path());
    let target = format!("127.0.0.1:{}", server.coap_port());
    const SOURCES: usize = 500;
    let mut verified = 0;
    for _ in 0..SOURCES {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(&hello, &target).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            // A HelloVerifyRequest (handshake type 3) with a cookie.
            if n > 14 && buf[0] == 22 && buf[13] == 3 {
                verified += 1;
            }
        }
    }
    assert_eq!(
        verified, SOURCES,
        "every spoofable hello gets a stateless HelloVerifyRequest"
    );
    // Nothing is held for them (the gauge is set at the next 100 ms tick).
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        server.metric_sum("palisade_coap_peers_held "),
        0.0,
        "{}",
        server.metric("palisade_coap")
    );
    assert!(
        server.metric_sum("palisade_coap_refusals_total{reason=\"no_cookie\"}") >= SOURCES as f64
    );
    // A real device still gets through.
    let o = run_client(
        "coap-client-gnutls",
        &server,
        &devs[0],
        &["-m", "post", "-t", "50", "-e", "{}", "-v", "6"],
        "telemetry",
    );
    assert!(codes(&o).contains(&"2.04".to_owned()), "{}", text(&o));
}
