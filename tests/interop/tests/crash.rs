//! SIGKILL during a burst of certificate issuance: after a restart every
//! certificate the API acknowledged is in the inventory with its audit entry, and
//! the audit log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use palisade_http::views::{AuditEntryView, CertView};
use palisade_interop::*;
use serde_json::json;

fn csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(vec![])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_certificates_survive_sigkill_during_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProc::start(&data).unwrap();
    server.cli_ok(&["model", "add", "sensor"]);
    for i in 0..4 {
        server.cli_ok(&["device", "register", &format!("s-{i}"), "--model", "sensor"]);
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = vec![];
    for t in 0..16 {
        let client = server.client(None);
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/api/v1/devices/s-{}/certificates", t % 4);
            // Bounded: stops at the first failed request (the server is gone) or
            // after 2000 requests.
            for _ in 0..2000 {
                match client
                    .send(Method::POST, &path, Some(&json!({ "csr": csr() })))
                    .await
                {
                    Ok((StatusCode::CREATED, body)) => {
                        let v: CertView = serde_json::from_slice(&body).unwrap();
                        acked.lock().unwrap().push(v.serial);
                    }
                    Ok((status, body)) => {
                        panic!("unexpected {status}: {}", String::from_utf8_lossy(&body))
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 150 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 150,
        "only {} certificates before the deadline",
        acked.len()
    );

    let server = ServerProc::start(&data).unwrap();
    let client = server.client(None);
    let mut audited = HashSet::new();
    let mut from = 0;
    loop {
        let page: Vec<AuditEntryView> = client
            .call(
                Method::GET,
                &format!("/api/v1/audit/entries?from={from}&limit=5000"),
                None,
            )
            .await
            .unwrap();
        let n = page.len();
        for e in page {
            from = e.index + 1;
            if e.action == "cert.issue" && e.outcome == "success" {
                audited.insert(e.subject);
            }
        }
        if n < 5000 {
            break;
        }
    }
    for serial in &acked {
        let c: CertView = client
            .call(Method::GET, &format!("/api/v1/certificates/{serial}"), None)
            .await
            .unwrap_or_else(|e| panic!("acknowledged certificate {serial} is lost: {e:#}"));
        assert_eq!(c.status, "valid");
        assert!(
            audited.contains(serial),
            "certificate {serial} has no audit entry"
        );
    }
    let o = server.cli(&["audit", "verify"]);
    assert!(
        o.status.success(),
        "audit verify after the crash: {}",
        text(&o)
    );
    eprintln!(
        "{} acknowledged certificates all survived SIGKILL",
        acked.len()
    );
}
