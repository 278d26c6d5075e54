//! The whole control plane in-process on an ephemeral port, driven through the
//! same HTTPS client the CLI uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use palisade::client::Client;
use palisade_http::views::*;
use palisade_server::{Config, Handle, Server, SystemClock};
use serde_json::{Value, json};

struct Running {
    _dir: tempfile::TempDir,
    data: PathBuf,
    handle: Handle,
    admin: Client,
}

impl Running {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.handle.addr.port())
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::new(
            &self.url(),
            &self.data.join("ca/root.pem"),
            token.map(str::to_owned),
        )
        .unwrap()
    }

    async fn token(&self, operator: &str, role: &str) -> String {
        let t: CreatedToken = self
            .admin
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&json!({ "operator": operator, "role": role })),
            )
            .await
            .unwrap();
        t.token
    }

    async fn audit(&self) -> Vec<AuditEntryView> {
        self.admin
            .call(Method::GET, "/api/v1/audit/entries?limit=5000", None)
            .await
            .unwrap()
    }
}

/// With `PALISADE_INTEROP_POSTGRES` set (`scripts/test.sh` sets it for its
/// PostgreSQL pass), each server keeps its store in a PostgreSQL database of
/// its own, named after its data directory.
async fn store_config(data: &std::path::Path) -> palisade_server::config::StoreConfig {
    use std::hash::{Hash, Hasher};
    let url = match std::env::var("PALISADE_INTEROP_POSTGRES") {
        Ok(admin) if !admin.is_empty() => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            data.hash(&mut h);
            let name = format!("palisade_api_{:016x}", h.finish());
            Some(
                palisade_store::conformance::postgres_database(&admin, &name)
                    .await
                    .unwrap(),
            )
        }
        _ => None,
    };
    palisade_server::config::StoreConfig {
        url,
        ..Default::default()
    }
}

fn config(data: &std::path::Path) -> Config {
    Config {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        coap_listen: Some("127.0.0.1:0".parse().unwrap()),
        oscore_listen: Some("127.0.0.1:0".parse().unwrap()),
        monitoring: palisade_server::config::MonitoringConfig {
            flow_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        ..Config::default()
    }
}

async fn start_in(dir: tempfile::TempDir) -> Running {
    let data = dir.path().join("data");
    let config = Config {
        store: store_config(&data).await,
        ..config(&data)
    };
    let server = Server::build(config, Arc::new(SystemClock)).await.unwrap();
    let listener = server.bind().await.unwrap();
    let handle = server.spawn(listener).unwrap();
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let admin = Client::new(
        &format!("https://127.0.0.1:{}", handle.addr.port()),
        &data.join("ca/root.pem"),
        Some(token.trim().to_owned()),
    )
    .unwrap();
    Running {
        _dir: dir,
        data,
        handle,
        admin,
    }
}

async fn start() -> Running {
    start_in(tempfile::tempdir().unwrap()).await
}

/// Stops the server and starts it again on the same data directory and
/// store, with the same admin token; whether the new start made a token.
async fn restart(r: Running) -> (Running, bool) {
    let token = std::fs::read_to_string(r.data.join("admin-token")).unwrap();
    let Running {
        _dir, data, handle, ..
    } = r;
    handle.shutdown().await;
    let config = Config {
        store: store_config(&data).await,
        ..config(&data)
    };
    let server = Server::build(config, Arc::new(SystemClock)).await.unwrap();
    let created = server.created_admin_token().is_some();
    let listener = server.bind().await.unwrap();
    let handle = server.spawn(listener).unwrap();
    let admin = Client::new(
        &format!("https://127.0.0.1:{}", handle.addr.port()),
        &data.join("ca/root.pem"),
        Some(token.trim().to_owned()),
    )
    .unwrap();
    let r = Running {
        _dir,
        data,
        handle,
        admin,
    };
    (r, created)
}

fn csr_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Issues `device` a certificate for a fresh P-256 key through the API.
async fn issue_p256(r: &Running, device: &str) -> CertView {
    r.admin
        .call(
            Method::POST,
            &format!("/api/v1/devices/{device}/certificates"),
            Some(&json!({ "csr": csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256) })),
        )
        .await
        .unwrap()
}

async fn model_and_device(r: &Running, device: &str) {
    let _: Value = r
        .admin
        .call(
            Method::POST,
            "/api/v1/models",
            Some(&json!({ "id": "cam" })),
        )
        .await
        .or_else(|e| {
            if e.to_string().contains("already exists") {
                Ok(Value::Null)
            } else {
                Err(e)
            }
        })
        .unwrap();
    let _: DeviceView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(&json!({ "id": device, "model": "cam" })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn api_without_a_token_is_401_and_with_the_wrong_role_is_403() {
    let r = start().await;
    let anon = r.client(None);
    let (s, _) = anon
        .send(Method::GET, "/api/v1/models", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = r
        .client(Some("pal_0000000000000000_nope"))
        .send(Method::GET, "/api/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let auditor = r.client(Some(&r.token("alice", "auditor").await));
    let (s, _) = auditor
        .send(Method::GET, "/api/v1/models", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (s, body) = auditor
        .send(Method::POST, "/api/v1/models", Some(&json!({ "id": "m" })))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("auditor"));

    let operator = r.client(Some(&r.token("bob", "operator").await));
    let (s, _) = operator
        .send(Method::POST, "/api/v1/models", Some(&json!({ "id": "m" })))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = operator
        .send(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({ "operator": "eve", "role": "admin" })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN);

    let audit = r.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "auth.failure" && e.outcome == "denied")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.action == "auth.forbidden" && e.actor == "operator:alice")
    );
    assert!(
        audit
            .iter()
            .any(|e| e.action == "auth.forbidden" && e.actor == "operator:bob")
    );
    r.handle.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let r = start().await;
    let t: CreatedToken = r
        .admin
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({ "operator": "carol", "role": "operator" })),
        )
        .await
        .unwrap();
    let carol = r.client(Some(&t.token));
    let me: WhoAmI = carol
        .call(Method::GET, "/api/v1/whoami", None)
        .await
        .unwrap();
    assert_eq!(me.role, "operator");
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            &format!("/api/v1/tokens/{}/revoke", t.info.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, body) = carol
        .send(Method::GET, "/api/v1/whoami", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    r.handle.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let r = start().await;
    model_and_device(&r, "cam-1").await;
    let before_devices: Vec<DeviceView> = r
        .admin
        .call(Method::GET, "/api/v1/devices", None)
        .await
        .unwrap();
    let before_certs: Vec<CertView> = r
        .admin
        .call(Method::GET, "/api/v1/certificates", None)
        .await
        .unwrap();

    type Case<'a> = (&'a str, Option<(&'a str, Bytes)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/devices",
            Some(("application/json", Bytes::from_static(b"{\"id\": "))),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "/api/v1/devices",
            Some(("text/plain", Bytes::from_static(b"{}"))),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
        ),
        (
            "/api/v1/devices",
            Some(("application/json", Bytes::from(vec![b' '; 70 * 1024]))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "/api/v1/devices",
            Some((
                "application/json",
                Bytes::from_static(b"{\"id\":\"d\",\"model\":\"cam\",\"role\":\"admin\"}"),
            )),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "/api/v1/devices",
            Some((
                "application/json",
                Bytes::from_static(b"{\"id\":\"d,CN=admin\",\"model\":\"cam\"}"),
            )),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
        (
            "/api/v1/devices",
            Some((
                "application/json",
                Bytes::from_static(b"{\"id\":\"d\\nO=x\",\"model\":\"cam\"}"),
            )),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
        (
            "/api/v1/devices/cam-1/certificates",
            Some((
                "application/json",
                Bytes::from_static(b"{\"csr\":\"not a csr\"}"),
            )),
            StatusCode::BAD_REQUEST,
            "bad_csr",
        ),
    ];
    for (path, body, status, code) in cases {
        let (s, b) = r.admin.send_bytes(Method::POST, path, body).await.unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["code"], code, "{path}: {v}");
        assert!(!v["error"].as_str().unwrap_or("").is_empty());
    }

    // A CSR whose signature does not verify.
    let mut der = pem::parse(csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256))
        .unwrap()
        .into_contents();
    let n = der.len();
    der[n - 5] ^= 0x41;
    let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let (s, b) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/devices/cam-1/certificates",
            Some(&json!({ "csr": bad })),
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );

    let after_devices: Vec<DeviceView> = r
        .admin
        .call(Method::GET, "/api/v1/devices", None)
        .await
        .unwrap();
    let after_certs: Vec<CertView> = r
        .admin
        .call(Method::GET, "/api/v1/certificates", None)
        .await
        .unwrap();
    assert_eq!(before_devices.len(), after_devices.len());
    assert_eq!(before_certs.len(), after_certs.len());
    let audit = r.audit().await;
    let denied: Vec<_> = audit.iter().filter(|e| e.outcome == "denied").collect();
    assert!(
        denied
            .iter()
            .any(|e| e.action == "device.register" && e.subject.starts_with("d,CN"))
    );
    assert!(denied.iter().filter(|e| e.action == "cert.issue").count() >= 2);
    r.handle.shutdown().await;
}

#[tokio::test]
async fn issued_device_certificate_takes_identity_from_the_server_not_the_csr() {
    let r = start().await;
    model_and_device(&r, "cam-7").await;
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let c: CertView = r
            .admin
            .call(
                Method::POST,
                "/api/v1/devices/cam-7/certificates",
                Some(&json!({ "csr": csr_pem(alg) })),
            )
            .await
            .unwrap();
        assert_eq!(c.subject, "O=Palisade, CN=cam-7");
        assert_eq!(c.device.as_deref(), Some("cam-7"));
        assert!(c.pem.is_some() && c.chain.is_some());
    }
    let d: DeviceDetail = r
        .admin
        .call(Method::GET, "/api/v1/devices/cam-7", None)
        .await
        .unwrap();
    assert_eq!(d.device.state, "enrolled");
    assert_eq!(d.certificates.len(), 3);
    r.handle.shutdown().await;
}

#[tokio::test]
async fn decommissioning_revokes_certificates_and_refuses_new_ones() {
    let r = start().await;
    model_and_device(&r, "old-1").await;
    let c = issue_p256(&r, "old-1").await;
    let d: DeviceView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/devices/old-1/state",
            Some(&json!({ "state": "decommissioned" })),
        )
        .await
        .unwrap();
    assert_eq!(d.state, "decommissioned");
    let cert: CertView = r
        .admin
        .call(
            Method::GET,
            &format!("/api/v1/certificates/{}", c.serial),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cert.status, "revoked");
    assert_eq!(cert.reason.as_deref(), Some("cessation-of-operation"));
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/devices/old-1/certificates",
            Some(&json!({ "csr": csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256) })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/devices/old-1/state",
            Some(&json!({ "state": "active" })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    r.handle.shutdown().await;
}

#[tokio::test]
async fn openapi_and_metrics_are_served_to_token_holders() {
    let r = start().await;
    let doc: Value = r
        .admin
        .call(Method::GET, "/api/openapi.json", None)
        .await
        .unwrap();
    for path in [
        "/api/v1/devices",
        "/api/v1/certificates/{serial}/revoke",
        "/api/v1/audit/proof/inclusion",
        "/crl",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    let (s, _) = r
        .client(None)
        .send(Method::GET, "/api/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = r
        .client(None)
        .send(Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = r.admin.send(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("palisade_api_auth_failures_total"), "{text}");
    assert!(text.contains("palisade_audit_log_entries"), "{text}");
    for public in ["/healthz", "/readyz", "/ca/chain.pem", "/crl"] {
        let (s, _) = r
            .client(None)
            .send(Method::GET, public, None)
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{public}");
    }
    r.handle.shutdown().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_and_a_restart_reuses_everything() {
    let r = start().await;
    let root_before = std::fs::read(r.data.join("ca/root.pem")).unwrap();
    let err = Server::build(config(&r.data), Arc::new(SystemClock))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another palisade process"),
        "{err:#}"
    );
    let (r, created) = restart(r).await;
    assert!(!created, "a restart makes no new admin token");
    assert_eq!(
        std::fs::read(r.data.join("ca/root.pem")).unwrap(),
        root_before
    );
    let me: WhoAmI = r
        .admin
        .call(Method::GET, "/api/v1/whoami", None)
        .await
        .unwrap();
    assert_eq!(me.role, "admin");
    r.handle.shutdown().await;
}

#[tokio::test]
async fn inclusion_proofs_check_out_against_the_signed_checkpoint() {
    let r = start().await;
    model_and_device(&r, "p-1").await;
    let head: AuditHeadView = r
        .admin
        .call(Method::GET, "/api/v1/audit/checkpoint", None)
        .await
        .unwrap();
    let key = palisade_audit::NoteVerifier::parse(
        std::fs::read_to_string(r.data.join("audit/log.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(key.to_vkey(), head.verifier_key);
    for index in 0..head.size {
        let p: InclusionView = r
            .admin
            .call(
                Method::GET,
                &format!("/api/v1/audit/proof/inclusion?index={index}"),
                None,
            )
            .await
            .unwrap();
        let cp = key.verify(&p.checkpoint, None).unwrap();
        let path: Vec<[u8; 32]> = p
            .path
            .iter()
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
            .collect();
        palisade_audit::verify_inclusion(
            &p.entry.to_entry().digest(),
            index,
            cp.size,
            &cp.root,
            &path,
        )
        .unwrap();
    }
    // The log grows; a consistency proof shows the old signed log is a prefix.
    let old = key.verify(head.note.as_deref().unwrap(), None).unwrap();
    model_and_device(&r, "p-2").await;
    let c: ConsistencyView = r
        .admin
        .call(
            Method::GET,
            &format!("/api/v1/audit/proof/consistency?old_size={}", old.size),
            None,
        )
        .await
        .unwrap();
    let new = key.verify(&c.checkpoint, None).unwrap();
    assert!(new.size > old.size);
    let path: Vec<[u8; 32]> = c
        .path
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect();
    palisade_audit::verify_consistency(old.size, &old.root, new.size, &new.root, &path).unwrap();
    assert!(
        palisade_audit::verify_consistency(old.size, &[0; 32], new.size, &new.root, &path).is_err()
    );
    let (s, _) = r
        .admin
        .send(
            Method::GET,
            &format!("/api/v1/audit/proof/inclusion?index={}", head.size + 5),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    r.handle.shutdown().await;
}

#[tokio::test]
async fn operator_issuance_honours_the_models_key_types_like_est() {
    let r = start().await;
    let _: ModelView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/models",
            Some(&json!({ "id": "lock", "allowed_key_types": ["ecdsa-p256"] })),
        )
        .await
        .unwrap();
    let _: DeviceView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(&json!({ "id": "lock-1", "model": "lock" })),
        )
        .await
        .unwrap();
    let (s, body) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/devices/lock-1/certificates",
            Some(&json!({ "csr": csr_pem(&rcgen::PKCS_ED25519) })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "key_type_not_allowed", "{v}");
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/devices/lock-1/certificates",
            Some(&json!({ "csr": csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256) })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CREATED);
    r.handle.shutdown().await;
}

#[tokio::test]
async fn posture_judges_devices_from_their_evidence_against_every_framework() {
    let r = start().await;
    model_and_device(&r, "cam-1").await;
    model_and_device(&r, "cam-2").await;
    // cam-1 gets a certificate issued by hand (software key); cam-2 stays registered.
    let _: CertView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/devices/cam-1/certificates",
            Some(&json!({ "csr": csr_pem(&rcgen::PKCS_ECDSA_P256_SHA256) })),
        )
        .await
        .unwrap();
    let v: Value = r
        .admin
        .call(Method::GET, "/api/v1/posture/devices/cam-1", None)
        .await
        .unwrap();
    let frameworks = v["frameworks"].as_array().unwrap();
    assert_eq!(frameworks.len(), 4);
    let control = |f: &str, c: &str| -> Value {
        frameworks
            .iter()
            .find(|x| x["framework"] == f)
            .and_then(|x| x["controls"].as_array())
            .and_then(|cs| cs.iter().find(|x| x["control"] == c).cloned())
            .unwrap_or_else(|| panic!("{f} {c} in {v}"))
    };
    // A valid certificate, issued by hand: authenticates, but not zero-touch.
    let cl3 = control("checklist", "CL3");
    assert_eq!(cl3["outcome"], "fail", "{cl3}");
    assert!(cl3["reason"].as_str().unwrap().contains("issued by hand"));
    // Not placed at any site: no edge enforces a policy.
    let cl4 = control("checklist", "CL4");
    assert_eq!(cl4["outcome"], "fail");
    assert!(cl4["reason"].as_str().unwrap().contains("not placed"));
    // No supplier, no support end: the end-of-life control fails.
    assert_eq!(control("checklist", "CL7")["outcome"], "fail");
    // What fleet evidence cannot judge says so.
    let personal = control("etsi-en-303-645", "5.8");
    assert_eq!(personal["outcome"], "not-assessable");
    // Every check carries its facts.
    assert!(
        cl3["checks"][0][1]["facts"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    let p: Value = r
        .admin
        .call(
            Method::GET,
            "/api/v1/posture?framework=checklist&model=cam&fresh=true",
            None,
        )
        .await
        .unwrap();
    let f = &p["frameworks"][0];
    assert_eq!(f["framework"], "checklist");
    assert_eq!(f["devices"], 2);
    assert_eq!(f["controls"].as_array().unwrap().len(), 7);
    assert!(f["results"]["score"].as_f64().unwrap() < 50.0, "{f}");
    // The daily snapshot feeds the trend.
    assert_eq!(f["trend"].as_array().unwrap().len(), 1, "{f}");
    let failing: Value = r
        .admin
        .call(
            Method::GET,
            "/api/v1/posture/failing?framework=checklist&control=CL4",
            None,
        )
        .await
        .unwrap();
    assert_eq!(failing["devices"].as_array().unwrap().len(), 2);
    let (status, _) = r
        .admin
        .send(Method::GET, "/api/v1/posture?framework=iso-27001", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, html) = r
        .admin
        .send(Method::GET, "/api/v1/posture/report", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert!(html.contains("Fleet posture report") && html.contains("ETSI EN 303 645"));
    for external in ["src=", "href=", "http://", "https://", "<script"] {
        assert!(!html.contains(external), "the report references {external}");
    }
    r.handle.shutdown().await;
}

#[tokio::test]
async fn console_accounts_are_created_by_admins_with_strong_passwords_and_disabled() {
    let r = start().await;
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/operators",
            Some(&json!({ "name": "alice", "role": "operator", "password": "short" })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/operators",
            Some(&json!({ "name": "alice", "role": "root", "password": "long enough password" })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let a: Value = r
        .admin
        .call(
            Method::POST,
            "/api/v1/operators",
            Some(
                &json!({ "name": "alice", "role": "operator", "password": "long enough password" }),
            ),
        )
        .await
        .unwrap();
    assert_eq!(a["role"], "operator");
    assert!(a.get("password_hash").is_none());
    // Only admins manage accounts.
    let op = r.client(Some(&r.token("bob", "operator").await));
    let (s, _) = op
        .send(Method::GET, "/api/v1/operators", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN);
    let _: Value = r
        .admin
        .call(Method::POST, "/api/v1/operators/alice/disable", None)
        .await
        .unwrap();
    let list: Vec<Value> = r
        .admin
        .call(Method::GET, "/api/v1/operators", None)
        .await
        .unwrap();
    assert!(list[0]["disabled_ms"].is_i64());
    let audit = r.audit().await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "account.add" && e.subject == "alice")
    );
    assert!(audit.iter().any(|e| e.action == "account.disable"));
    r.handle.shutdown().await;
}

#[tokio::test]
async fn a_suppliers_disclosure_contact_is_checked_recorded_and_judged() {
    let r = start().await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "acme Manufacturer CA");
    let ca_pem = params.self_signed(&key).unwrap().pem();
    // A contact that is no mailto: or https: address is refused, and nothing is stored.
    for bad in ["call us", "javascript:alert(1)", "mailto:a b@example.com"] {
        let (status, body) = r
            .admin
            .send(
                Method::POST,
                "/api/v1/suppliers",
                Some(&json!({ "name": "acme", "ca_pem": ca_pem, "disclosure_contact": bad })),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(String::from_utf8_lossy(&body).contains("bad_disclosure_contact"));
    }
    let none: Vec<SupplierView> = r
        .admin
        .call(Method::GET, "/api/v1/suppliers", None)
        .await
        .unwrap();
    assert!(none.is_empty());
    // Registered without one: ETSI EN 303 645 5.2 fails for its devices.
    let s: SupplierView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/suppliers",
            Some(&json!({ "name": "acme", "ca_pem": ca_pem })),
        )
        .await
        .unwrap();
    assert_eq!(s.disclosure_contact, None);
    let _: Value = r
        .admin
        .call(
            Method::POST,
            "/api/v1/models",
            Some(&json!({ "id": "lock", "supplier": "acme" })),
        )
        .await
        .unwrap();
    let _: DeviceView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(&json!({ "id": "lock-1", "model": "lock" })),
        )
        .await
        .unwrap();
    let provision = |v: &Value| -> Value {
        v["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["framework"] == "etsi-en-303-645")
            .and_then(|f| f["controls"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["control"] == "5.2").cloned())
            .unwrap()
    };
    let v: Value = r
        .admin
        .call(Method::GET, "/api/v1/posture/devices/lock-1", None)
        .await
        .unwrap();
    assert_eq!(provision(&v)["outcome"], "fail", "{v}");
    // Recorded: it passes, with the contact as its evidence.
    let s: SupplierView = r
        .admin
        .call(
            Method::PUT,
            "/api/v1/suppliers/acme/disclosure-contact",
            Some(&json!({ "disclosure_contact": "mailto:psirt@acme.example" })),
        )
        .await
        .unwrap();
    assert_eq!(
        s.disclosure_contact.as_deref(),
        Some("mailto:psirt@acme.example")
    );
    let v: Value = r
        .admin
        .call(Method::GET, "/api/v1/posture/devices/lock-1", None)
        .await
        .unwrap();
    let p = provision(&v);
    assert_eq!(p["outcome"], "pass", "{p}");
    assert!(p.to_string().contains("psirt@acme.example"));
    // An unknown supplier is a 404; a bad one on update a 400.
    let (status, _) = r
        .admin
        .send(
            Method::PUT,
            "/api/v1/suppliers/nobody/disclosure-contact",
            Some(&json!({ "disclosure_contact": "https://nobody.example/security" })),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = r
        .admin
        .send(
            Method::PUT,
            "/api/v1/suppliers/acme/disclosure-contact",
            Some(&json!({ "disclosure_contact": "ftp://acme.example" })),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    r.handle.shutdown().await;
}

/// Unmanaged hosts through the API: an auditor reads but cannot decide;
/// unknown sites, addresses never seen, malformed addresses, unknown actions
/// and an adopt without its body are refused with a reason, and nothing is
/// stored. (Sightings come from edges and flows: the netns test
/// `unmanaged.rs` drives those with the real edge.)
#[tokio::test]
async fn unmanaged_host_decisions_are_checked() {
    let r = start().await;
    let (s, _) = r
        .admin
        .send(Method::GET, "/api/v1/sites/nowhere/unmanaged", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _: Value = r
        .admin
        .call(
            Method::PUT,
            "/api/v1/sites/lab",
            Some(&json!({
                "resolver": "10.0.0.1", "control_plane": [["127.0.0.1", 8443]],
                "segments": [{"name": "cams", "interface": "eth1", "subnet": "10.0.0.0/24"}]
            })),
        )
        .await
        .unwrap();
    let listed: Value = r
        .admin
        .call(Method::GET, "/api/v1/sites/lab/unmanaged", None)
        .await
        .unwrap();
    assert_eq!(listed["hosts"], json!([]));
    let auditor = r.client(Some(&r.token("alice", "auditor").await));
    let (s, _) = auditor
        .send(Method::GET, "/api/v1/sites/lab/unmanaged", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "an auditor reads the inventory");
    let (s, _) = auditor
        .send(
            Method::POST,
            "/api/v1/sites/lab/unmanaged/10.0.0.50/block",
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN, "but does not decide");
    for (path, body, want, why) in [
        (
            "/api/v1/sites/lab/unmanaged/10.0.0.50/block",
            None,
            StatusCode::NOT_FOUND,
            "no unmanaged host 10.0.0.50",
        ),
        (
            "/api/v1/sites/lab/unmanaged/10.0.0.x/block",
            None,
            StatusCode::BAD_REQUEST,
            "not an IP address",
        ),
        (
            "/api/v1/sites/lab/unmanaged/10.0.0.50/explode",
            None,
            StatusCode::NOT_FOUND,
            "block, unblock or adopt",
        ),
        (
            "/api/v1/sites/lab/unmanaged/10.0.0.50/adopt",
            Some(json!({ "device": "x" })),
            StatusCode::BAD_REQUEST,
            "adopt needs",
        ),
        (
            "/api/v1/sites/lab/unmanaged/10.0.0.50/adopt",
            Some(json!({ "device": "x\u{202e}1", "model": "cam" })),
            StatusCode::BAD_REQUEST,
            "bad_id",
        ),
    ] {
        let (s, b) = r
            .admin
            .send(Method::POST, path, body.as_ref())
            .await
            .unwrap();
        let b = String::from_utf8_lossy(&b);
        assert_eq!(s, want, "{path}: {b}");
        assert!(b.contains(why), "{path}: {b}");
    }
    let listed: Value = r
        .admin
        .call(Method::GET, "/api/v1/sites/lab/unmanaged", None)
        .await
        .unwrap();
    assert_eq!(listed["hosts"], json!([]), "nothing stored");
    let (s, _) = r
        .admin
        .send(Method::GET, "/api/v1/devices/x", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND, "no device registered");
}

#[tokio::test]
async fn ca_rotations_are_for_admins_checked_audited_and_survive_a_restart() {
    let r = start().await;
    model_and_device(&r, "cam-9").await;
    let first = issue_p256(&r, "cam-9").await;
    let before: Vec<CaView> = r.admin.call(Method::GET, "/api/v1/ca", None).await.unwrap();
    assert_eq!(before.len(), 2, "{before:?}");
    let issuing = before.iter().find(|c| c.kind == "issuing").unwrap();
    assert_eq!(issuing.status, "current");

    // Admins only; bad requests change nothing.
    let operator = r.client(Some(&r.token("bob", "operator").await));
    for path in ["/api/v1/ca/rotate-issuing", "/api/v1/ca/rotate-root"] {
        let (s, _) = operator
            .send(Method::POST, path, Some(&json!({})))
            .await
            .unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    let (s, body) = r
        .admin
        .send(
            Method::POST,
            &format!("/api/v1/ca/{}/retire", issuing.serial),
            Some(&json!({})),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("is the current one"));
    let (s, body) = r
        .admin
        .send(Method::POST, "/api/v1/ca/00ff/retire", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("not a CA certificate"));
    let (s, body) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/ca/rotate-issuing",
            Some(&json!({ "key": "not-a-pkcs11-uri" })),
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (s, _) = r
        .admin
        .send(
            Method::POST,
            "/api/v1/ca/rotate-issuing",
            Some(&json!({ "unknown": 1 })),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let same: Vec<CaView> = r.admin.call(Method::GET, "/api/v1/ca", None).await.unwrap();
    assert_eq!(same.len(), 2);

    // The issuing CA: new certificates come from the new one, each CA has
    // its own CRL, the old one stays in service.
    let rotated: Vec<CaView> = r
        .admin
        .call(Method::POST, "/api/v1/ca/rotate-issuing", Some(&json!({})))
        .await
        .unwrap();
    let second = rotated
        .iter()
        .find(|c| c.kind == "issuing" && c.status == "current")
        .unwrap();
    assert_ne!(second.serial, issuing.serial);
    let old = rotated.iter().find(|c| c.serial == issuing.serial).unwrap();
    assert_eq!(old.status, "in-service");
    assert!(old.last_certificate_expires.is_some(), "{old:?}");
    let new = issue_p256(&r, "cam-9").await;
    let der = palisade_pki::pem_to_der(new.pem.as_deref().unwrap(), "CERTIFICATE").unwrap();
    assert_eq!(
        palisade_pki::inspect_certificate(&der).unwrap().issuer,
        second.subject
    );
    assert_ne!(first.serial, new.serial);
    let (s, crl) = r
        .admin
        .send(Method::GET, &format!("/crl/{}", second.serial), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert!(crl.len() > 100);
    let (s, _) = r.admin.send(Method::GET, "/crl/00ff", None).await.unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The root, then the fleet asked to renew: cam-9 still holds a
    // certificate from the first issuing CA.
    let rotated: Vec<CaView> = r
        .admin
        .call(Method::POST, "/api/v1/ca/rotate-root", Some(&json!({})))
        .await
        .unwrap();
    assert_eq!(rotated.iter().filter(|c| c.kind == "root").count(), 2);
    assert!(rotated.iter().filter(|c| c.kind == "cross").count() >= 3);
    let renew: RenewFleetView = r
        .admin
        .call(
            Method::POST,
            "/api/v1/ca/renew-fleet",
            Some(&json!({ "within_s": 60 })),
        )
        .await
        .unwrap();
    assert_eq!(renew.queued, 1);
    let actions: Vec<String> = r.audit().await.into_iter().map(|e| e.action).collect();
    for a in ["ca.rotate-issuing", "ca.rotate-root", "ca.renew-fleet"] {
        assert!(actions.iter().any(|x| x == a), "{a} audited");
    }
    let roots = std::fs::read_to_string(r.data.join("ca/root.pem")).unwrap();

    // A restart loads the same CAs from the inventory and their key files.
    let (r, _) = restart(r).await;
    let after: Vec<CaView> = r.admin.call(Method::GET, "/api/v1/ca", None).await.unwrap();
    let status = |l: &[CaView]| {
        l.iter()
            .map(|c| (c.serial.clone(), c.status.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(status(&after), status(&rotated));
    assert_eq!(
        palisade_pki::pem_certificates(
            &std::fs::read_to_string(r.data.join("ca/root.pem")).unwrap()
        )
        .unwrap()
        .len(),
        2,
        "{roots}"
    );
    r.handle.shutdown().await;
}
