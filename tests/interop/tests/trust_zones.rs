//! The HTTP API's trust zones against a real client (curl, with keys and a CSR
//! from openssl): the device zone authenticates by client certificate and
//! never by an operator's token; the operator zone authenticates by token and
//! never by a client certificate; the anonymous zone needs neither.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use palisade_interop::*;

/// curl with the server's root CA; returns (HTTP status, body).
fn curl(server: &ServerProc, path: &str, args: &[&str]) -> (u16, String) {
    let out = run(
        "curl",
        &[
            &[
                "-sS",
                "--cacert",
                &server.data.join("ca/root.pem").to_string_lossy(),
            ],
            args,
            &["-w", "\n%{http_code}", &format!("{}{path}", server.url)],
        ]
        .concat(),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A device `id` of model `m` with an operational certificate issued by the
/// operator API for a key openssl made; returns the curl arguments that present it.
fn device_with_certificate(server: &ServerProc, dir: &Path, id: &str) -> Vec<String> {
    let key = dir.join(format!("{id}.key"));
    let csr = dir.join(format!("{id}.csr"));
    let o = run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=ignored",
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &csr.to_string_lossy(),
        ],
    );
    assert!(o.status.success(), "openssl req: {}", text(&o));
    server.api(
        "POST",
        "/api/v1/devices",
        Some(&format!(r#"{{"id":"{id}","model":"zone-cam"}}"#)),
    );
    let body = serde_json::json!({ "csr": std::fs::read_to_string(&csr).unwrap() }).to_string();
    let issued: serde_json::Value = serde_json::from_str(&server.api(
        "POST",
        &format!("/api/v1/devices/{id}/certificates"),
        Some(&body),
    ))
    .unwrap();
    let cert = dir.join(format!("{id}.pem"));
    std::fs::write(
        &cert,
        issued["pem"].as_str().expect("the certificate's PEM"),
    )
    .unwrap();
    vec![
        "--cert".into(),
        cert.to_string_lossy().into_owned(),
        "--key".into(),
        key.to_string_lossy().into_owned(),
    ]
}

#[test]
fn device_routes_refuse_operator_tokens_and_operator_routes_ignore_device_certificates() {
    if !(have("curl") && have("openssl")) {
        assert!(!in_ci(), "curl and openssl are needed in CI");
        eprintln!("skipped: curl or openssl missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.api("POST", "/api/v1/models", Some(r#"{"id":"zone-cam"}"#));
    let device = device_with_certificate(&server, dir.path(), "zone-cam-1");
    let device: Vec<&str> = device.iter().map(String::as_str).collect();
    let bearer = format!("Authorization: Bearer {}", server.admin_token());

    // The device zone: its certificate is what counts...
    let (code, body) = curl(&server, "/director/v1/key", &device);
    assert_eq!(
        code, 200,
        "a device certificate reaches the director: {body}"
    );
    // ...and a valid admin token is no credential there, alone or beside it.
    for path in [
        "/director/v1/key",
        "/director/v1/assignment",
        "/edge/v1/key",
    ] {
        let (code, body) = curl(&server, path, &["-H", &bearer]);
        assert_eq!(code, 401, "{path} with an operator token: {body}");
    }
    let csr_b64 = dir.path().join("zone-cam-1.b64");
    let o = sh(
        &format!(
            "openssl req -in zone-cam-1.csr -outform DER | base64 -w0 > {}",
            csr_b64.display()
        ),
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let csr_arg = format!("@{}", csr_b64.display());
    let est = [
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        &csr_arg,
    ];
    let (code, body) = curl(
        &server,
        "/.well-known/est/simplereenroll",
        &[&["-H", bearer.as_str()][..], &est].concat(),
    );
    assert_eq!(code, 401, "EST re-enrolment with an operator token: {body}");
    let (code, body) = curl(
        &server,
        "/.well-known/est/simplereenroll",
        &[&device[..], &est].concat(),
    );
    assert_eq!(
        code, 200,
        "EST re-enrolment with the device's certificate: {body}"
    );

    // The operator zone: a valid device certificate is not a credential...
    for path in [
        "/api/v1/devices",
        "/api/v1/whoami",
        "/metrics",
        "/api/openapi.json",
    ] {
        let (code, body) = curl(&server, path, &device);
        assert_eq!(code, 401, "{path} with a device certificate: {body}");
    }
    // ...while the token works with or without one.
    let (code, body) = curl(
        &server,
        "/api/v1/whoami",
        &[&device[..], &["-H", &bearer]].concat(),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("admin"), "{body}");

    // The anonymous zone needs neither.
    for path in [
        "/healthz",
        "/crl",
        "/ca/chain.pem",
        "/.well-known/est/cacerts",
    ] {
        let (code, body) = curl(&server, path, &[]);
        assert_eq!(code, 200, "{path}: {body}");
    }
}
