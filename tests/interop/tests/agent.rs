//! The device agent against a real `palisade serve`: zero-touch enrolment of a
//! factory batch, renewal driven by an injected clock, refusal after revocation,
//! and refusal of a server that does not chain to the configured root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use palisade_agent::est_client::EstError;
use palisade_agent::state::next_action;
use palisade_agent::{Agent, AgentError, EnrollAuth, EstClient, SoftwareKeystore};
use palisade_core::{Clock, KeyAlgorithm};
use palisade_interop::*;
use palisade_keystore::SoftwareKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(Mutex<OffsetDateTime>);

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(palisade_core::Clock::now(
            &palisade_core::SystemClock,
        ))))
    }
    fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
}

fn agent(
    server: &ServerProc,
    dir: &std::path::Path,
    clock: Arc<dyn Clock>,
    label: Option<&str>,
) -> Agent {
    let root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root, label.map(str::to_owned)).unwrap();
    Agent::new(dir, Arc::new(SoftwareKeystore::new(dir)), est, clock)
}

fn start() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "meter", "--cert-validity-days", "30"]);
    (dir, server)
}

#[tokio::test]
async fn agent_renews_before_expiry_with_an_injected_clock() {
    let (dir, server) = start();
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "meter"]);
    let clock = TestClock::new();
    let a = agent(
        &server,
        &dir.path().join("agent"),
        clock.clone(),
        Some("meter"),
    );
    let first = a
        .enroll(&EnrollAuth::Token {
            device: "meter-1".into(),
            token: token.trim().into(),
        })
        .await
        .unwrap();
    assert_eq!(first.device_id, "meter-1");
    assert!(dir.path().join("agent/chain.pem").exists());
    // Freshly enrolled: nothing to do but wait about 20 of the 30 days.
    let mut failures = 0;
    let (wait, err) = a.step(0.5, &mut failures).await;
    assert!(err.is_none());
    assert!(
        wait > Duration::days(19) && wait < Duration::days(21),
        "{wait}"
    );
    // Three weeks later (past two thirds, before expiry) it renews, with a new key.
    let key_before = std::fs::read(dir.path().join("agent/op.key")).unwrap();
    clock.set(first.not_before + Duration::days(21));
    assert!(matches!(
        next_action(&first, clock.now(), 0.5),
        palisade_agent::state::Action::Renew
    ));
    let (_, err) = a.step(0.5, &mut failures).await;
    assert!(err.is_none(), "{err:?}");
    let second = a.identity().unwrap().unwrap();
    assert_ne!(second.serial, first.serial);
    assert!(second.not_after >= first.not_after);
    assert_ne!(
        std::fs::read(dir.path().join("agent/op.key")).unwrap(),
        key_before
    );
    let o = server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test]
async fn a_revoked_devices_renewal_is_refused() {
    let (dir, server) = start();
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "meter"]);
    let clock = TestClock::new();
    let a = agent(&server, &dir.path().join("agent"), clock.clone(), None);
    let id = a
        .enroll(&EnrollAuth::Token {
            device: "meter-2".into(),
            token: token.trim().into(),
        })
        .await
        .unwrap();
    server.cli_ok(&["cert", "revoke", &id.serial, "--reason", "key-compromise"]);
    clock.set(id.not_before + Duration::days(25));
    let mut failures = 0;
    let (wait, err) = a.step(0.5, &mut failures).await;
    match err {
        Some(AgentError::Est(EstError::Refused {
            status: 403,
            reason,
        })) => {
            assert!(reason.contains("revoked"), "{reason}")
        }
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
    assert_eq!(failures, 1);
    assert!(
        wait < Duration::days(3),
        "backs off and retries before expiry: {wait}"
    );
    // The old certificate and key are kept.
    assert_eq!(a.identity().unwrap().unwrap().serial, id.serial);
}

#[tokio::test]
async fn agent_refuses_a_server_that_does_not_chain_to_its_root() {
    let (dir, server) = start();
    let (other_dir, other) = start();
    // The agent trusts the *other* installation's root.
    let root = std::fs::read(other.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root, None).unwrap();
    let err = est.cacerts().await.unwrap_err();
    assert!(matches!(err, EstError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    drop((dir, other_dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_devices_enrol_zero_touch_from_a_factory_batch() {
    let (dir, server) = start();
    let serials: Vec<String> = (0..50).map(|i| format!("AC{i:04}")).collect();
    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
    let cli = |args: &[&str]| {
        server.cli_ok(args);
    };
    let batch = factory_batch(&cli, dir.path(), "acme", "meter", &refs, 7300);
    let ca = batch.factory.join("ca.pem");
    server.cli_ok(&["supplier", "add", "acme", "--ca-cert", ca.to_str().unwrap()]);
    server.cli_ok(&["batch", "import", batch.manifest.to_str().unwrap()]);

    // 50 agents at once, no operator action.
    let mut tasks = vec![];
    for s in &serials {
        let d = dir.path().join(format!("dev-{s}"));
        let a = agent(&server, &d.join("state"), TestClock::new(), Some("meter"));
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(d.join("idevid.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key =
            Arc::new(SoftwareKey::load(&d.join("idevid.key"), KeyAlgorithm::EcdsaP256).unwrap());
        tasks.push(tokio::spawn(async move {
            a.enroll(&EnrollAuth::BirthCertificate { chain, key }).await
        }));
    }
    for (t, s) in tasks.into_iter().zip(&serials) {
        let id = t.await.unwrap().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(id.device_id, s.to_lowercase());
    }
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["device", "list", "--model", "meter", "--json"]))
            .unwrap();
    let devices = list.as_array().unwrap();
    assert_eq!(devices.len(), 50);
    assert!(devices.iter().all(|d| d["state"] == "enrolled"), "{list}");
    let o = server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let entries: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["audit", "verify", "--json"])).unwrap();
    assert_eq!(entries["ok"], true);
    let client = server.client(None);
    let audit: Vec<palisade_http::views::AuditEntryView> = client
        .call(hyper::Method::GET, "/api/v1/audit/entries?limit=5000", None)
        .await
        .unwrap();
    let enrolled = audit
        .iter()
        .filter(|e| e.action == "est.enroll" && e.outcome == "success")
        .count();
    assert_eq!(enrolled, 50);
    assert!(audit.iter().any(|e| e.action == "batch.import"));
    assert!(audit.iter().any(|e| e.action == "supplier.add"));
}

/// A server in-process on a clock the test moves: (temp dir, handle, URL, admin client).
async fn in_process(
    clock: Arc<TestClock>,
) -> (
    tempfile::TempDir,
    palisade_server::Handle,
    String,
    palisade::client::Client,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = palisade_server::Config {
        data_dir: data.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        coap_listen: Some("127.0.0.1:0".parse().unwrap()),
        oscore_listen: Some("127.0.0.1:0".parse().unwrap()),
        monitoring: palisade_server::config::MonitoringConfig {
            flow_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = palisade_server::Server::build(config, clock).await.unwrap();
    let listener = server.bind().await.unwrap();
    let handle = server.spawn(listener).unwrap();
    let url = format!("https://127.0.0.1:{}", handle.addr.port());
    let admin = palisade::client::Client::new(
        &url,
        &data.join("ca/root.pem"),
        Some(
            std::fs::read_to_string(data.join("admin-token"))
                .unwrap()
                .trim()
                .to_owned(),
        ),
    )
    .unwrap();
    let _: serde_json::Value = admin
        .call(
            hyper::Method::POST,
            "/api/v1/models",
            Some(&serde_json::json!({ "id": "meter" })),
        )
        .await
        .unwrap();
    (dir, handle, url, admin)
}

fn agent_at(dir: &std::path::Path, url: &str, clock: Arc<dyn Clock>) -> Agent {
    let root = std::fs::read(dir.join("data/ca/root.pem")).unwrap();
    let state = dir.join("agent");
    std::fs::create_dir_all(&state).unwrap();
    Agent::new(
        &state,
        Arc::new(SoftwareKeystore::new(&state)),
        EstClient::new(url, &root, None).unwrap(),
        clock,
    )
}

#[tokio::test]
async fn an_expired_enrolment_token_is_refused() {
    let clock = TestClock::new();
    let (dir, handle, url, admin) = in_process(clock.clone()).await;
    let t: palisade_http::views::CreatedEnrollmentToken = admin
        .call(
            hyper::Method::POST,
            "/api/v1/enrollment-tokens",
            Some(&serde_json::json!({ "model": "meter", "ttl_secs": 60 })),
        )
        .await
        .unwrap();
    clock.set(clock.now() + Duration::minutes(2));
    let err = agent_at(dir.path(), &url, clock.clone())
        .enroll(&EnrollAuth::Token {
            device: "late-1".into(),
            token: t.token,
        })
        .await
        .unwrap_err();
    match err {
        AgentError::Est(EstError::Refused {
            status: 401,
            reason,
        }) => {
            assert!(reason.contains("expired"), "{reason}")
        }
        other => panic!("expected 401 expired, got {other}"),
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn an_expired_birth_certificate_is_refused() {
    let clock = TestClock::new();
    let (dir, handle, url, admin) = in_process(clock.clone()).await;
    // A one-day IDevID from the factory, imported while valid.
    let batch = factory_batch(&palisade_ok, dir.path(), "acme", "meter", &["EX0001"], 1);
    let (f, d) = (batch.factory.clone(), batch.devices[0].clone());
    let _: serde_json::Value = admin
        .call(
            hyper::Method::POST,
            "/api/v1/suppliers",
            Some(&serde_json::json!({ "name": "acme",
                "ca_pem": std::fs::read_to_string(f.join("ca.pem")).unwrap() })),
        )
        .await
        .unwrap();
    let (status, body) = admin
        .send_bytes(
            hyper::Method::POST,
            "/api/v1/batches",
            Some((
                "application/json",
                std::fs::read(f.join("batch.json")).unwrap().into(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 201, "{}", String::from_utf8_lossy(&body));
    // Two days later the birth certificate has expired.
    clock.set(clock.now() + Duration::days(2));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(d.join("idevid.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = Arc::new(SoftwareKey::load(&d.join("idevid.key"), KeyAlgorithm::EcdsaP256).unwrap());
    let err = agent_at(dir.path(), &url, clock.clone())
        .enroll(&EnrollAuth::BirthCertificate { chain, key })
        .await
        .unwrap_err();
    match err {
        AgentError::Est(EstError::Refused {
            status: 401,
            reason,
        }) => {
            assert!(
                reason.contains("not valid now") && reason.contains("Expired"),
                "{reason}"
            )
        }
        other => panic!("expected 401 for an expired birth certificate, got {other}"),
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_session_sends_telemetry_and_answers_allowlisted_commands() {
    let (dir, server) = start();
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "meter"]);
    let a = agent(&server, &dir.path().join("agent"), TestClock::new(), None);
    a.enroll(&EnrollAuth::Token {
        device: "meter-7".into(),
        token: token.trim().into(),
    })
    .await
    .unwrap();
    let cfg = palisade_agent::session::SessionConfig {
        host: "127.0.0.1".into(),
        port: server.mqtt_port(),
        telemetry_every: std::time::Duration::from_millis(200),
        firmware: "2.0.1".into(),
        allowed_commands: vec!["ping".into()],
        attester: None,
        update: None,
        metrics: None,
        wiper: None,
        journal: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let session = {
        let a = a.clone();
        tokio::spawn(async move { a.run_session(&cfg, stop_rx, || 0.5).await })
    };
    let show = |id: &str| -> serde_json::Value {
        serde_json::from_str(&server.cli_ok(&["device", "show", id, "--json"])).unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let d = show("meter-7");
        if d["connected"] == true && d["reported_firmware"] == "2.0.1" {
            assert_eq!(d["device"]["state"], "active");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no telemetry arrived: {d}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.cli_ok(&["device", "command", "meter-7", "ping"]);
    server.cli_ok(&["device", "command", "meter-7", "format-disk"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["device", "commands", "meter-7", "--json"]))
                .unwrap();
        let by_name = |n: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == n)
                .cloned()
                .unwrap_or_default()
        };
        let (ping, fmt) = (by_name("ping"), by_name("format-disk"));
        if ping["status"] == "acked" && fmt["status"] == "failed" {
            assert_eq!(ping["result"], "\"pong\"");
            assert!(
                fmt["result"].as_str().unwrap().contains("not allowed"),
                "{fmt}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "commands not acknowledged: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    session.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_operational_certificate_cannot_connect_to_the_gateway() {
    if !have("mosquitto_pub") {
        return;
    }
    // Issue a one-day certificate while the server's clock reads three days ago.
    let clock = TestClock::new();
    let real_now = clock.now();
    clock.set(real_now - Duration::days(3));
    let (dir, handle, url, admin) = in_process(clock.clone()).await;
    let _: serde_json::Value = admin
        .call(
            hyper::Method::POST,
            "/api/v1/models",
            Some(&serde_json::json!({ "id": "short", "cert_validity_days": 1 })),
        )
        .await
        .unwrap();
    let t: palisade_http::views::CreatedEnrollmentToken = admin
        .call(
            hyper::Method::POST,
            "/api/v1/enrollment-tokens",
            Some(&serde_json::json!({ "model": "short" })),
        )
        .await
        .unwrap();
    let a = agent_at(dir.path(), &url, clock.clone());
    let id = a
        .enroll(&EnrollAuth::Token {
            device: "old-1".into(),
            token: t.token,
        })
        .await
        .unwrap();
    assert!(
        id.not_after < real_now,
        "the certificate should have expired by now"
    );
    clock.set(real_now);
    // Keys and certificate as files for mosquitto_pub.
    let state = dir.path().join("agent");
    std::fs::write(
        state.join("op-cert.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", id.cert_der.clone())),
    )
    .unwrap();
    let o = std::process::Command::new("timeout")
        .args([
            "10",
            "mosquitto_pub",
            "--cafile",
            dir.path().join("data/ca/root.pem").to_str().unwrap(),
            "--cert",
            state.join("op-cert.pem").to_str().unwrap(),
            "--key",
            state.join("op.key").to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &handle.mqtt_addr.unwrap().port().to_string(),
            "-i",
            "old-1",
            "-t",
            "palisade/d/old-1/telemetry",
            "-m",
            "{}",
            "-q",
            "1",
            "-d",
        ])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success() && !out.contains("CONNACK (0)"), "{out}");
    assert!(
        out.contains("sending CONNECT"),
        "the TLS connection itself should have opened: {out}"
    );
    handle.shutdown().await;
}
