//! Importing models' MUD files through the real server and CLI: a file signed
//! by the model's supplier (DSSE), one signed by someone else, malformed and
//! impossible ones, and one that opens everything (refused, then accepted
//! with an audited override); placements outside their segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use palisade_interop::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a CLI command that must fail, saying `why`.
fn refused(server: &ServerProc, args: &[&str], why: &str) {
    let o = server.cli(args);
    assert!(
        !o.status.success() && text(&o).contains(why),
        "palisade {args:?} should be refused with {why:?}: {}",
        text(&o)
    );
}

fn mud(acl_match: &str) -> String {
    format!(
        r#"{{"ietf-mud:mud": {{"mud-version": 1, "mud-url": "https://acme.example/cam.json",
          "from-device-policy": {{"access-lists": {{"access-list": [{{"name": "a"}}]}}}}}},
          "ietf-access-control-list:acls": {{"acl": [{{"name": "a", "aces": {{"ace": [
            {{"name": "e", "matches": {acl_match}, "actions": {{"forwarding": "accept"}}}}]}}}}]}}}}"#
    )
}

#[test]
fn mud_files_are_checked_signed_and_never_open_by_accident() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = ServerProc::start(&d.join("data")).unwrap();
    let key = supplier_with_model(&server, d, "acme", "cam");

    let good = mud(
        r#"{"ipv4": {"ietf-acldns:dst-dnsname": "api.acme.example", "protocol": 6},
                     "tcp": {"destination-port": {"operator": "eq", "port": 443}}}"#,
    );
    let envelope = |k: &[u8], body: &str| {
        let e =
            palisade_release::sign_envelope("application/mud+json", body.as_bytes(), k).unwrap();
        let p = d.join("mud.dsse.json");
        std::fs::write(&p, serde_json::to_vec(&e).unwrap()).unwrap();
        p
    };
    // Signed by the supplier: accepted and recorded as such.
    let out = server.cli_ok(&[
        "--json",
        "policy",
        "mud",
        "cam",
        "--envelope",
        s(&envelope(&key, &good)),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!v["signed_by"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(
        v["policy"]["from_device"][0]["peer"]["value"],
        "api.acme.example"
    );
    // Signed by another key: refused.
    let other =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    refused(
        &server,
        &[
            "policy",
            "mud",
            "cam",
            "--envelope",
            s(&envelope(other.as_ref(), &good)),
        ],
        "not signed",
    );

    // Malformed or impossible files are refused with the reason.
    let file = d.join("mud.json");
    for (body, why) in [
        ("{\"ietf-mud:mud\": 7}".to_string(), "must be an object"),
        (
            mud(r#"{"tcp": {"destination-port": {"lower-port": 900, "upper-port": 80}}}"#),
            "above upper-port",
        ),
        (
            mud(r#"{"ipv4": {"destination-ipv4-network": "10.0.0.0/99"}}"#),
            "longer than 32",
        ),
    ] {
        std::fs::write(&file, &body).unwrap();
        refused(&server, &["policy", "mud", "cam", "--file", s(&file)], why);
    }

    // Opening everything needs the operator's explicit, audited override.
    std::fs::write(
        &file,
        mud(r#"{"ipv4": {"destination-ipv4-network": "0.0.0.0/0"}}"#),
    )
    .unwrap();
    refused(
        &server,
        &["policy", "mud", "cam", "--file", s(&file)],
        "any address on any port",
    );
    server.cli_ok(&["policy", "mud", "cam", "--file", s(&file), "--allow-open"]);
    let audit = server.api_get("/api/v1/audit/entries?limit=1000");
    assert!(audit.contains("policy.open_override"), "{audit}");
    assert!(audit.contains("policy.mud"), "{audit}");

    // A placement must fit its segment.
    let spec = d.join("site.json");
    std::fs::write(
        &spec,
        r#"{"resolver": "10.1.0.1", "control_plane": [["10.9.0.1", 8443]],
            "model_segments": {"cam": "cams"},
            "segments": [{"name": "cams", "interface": "eth1", "subnet": "10.1.0.0/24"}]}"#,
    )
    .unwrap();
    server.cli_ok(&["site", "set", "lab", "--file", s(&spec)]);
    enrol_with_token(&server, d, "cam-1", "cam");
    refused(
        &server,
        &[
            "site",
            "place",
            "cam-1",
            "--site",
            "lab",
            "--segment",
            "cams",
            "--address",
            "10.2.0.5",
        ],
        "outside segment",
    );
    refused(
        &server,
        &[
            "site",
            "place",
            "cam-1",
            "--site",
            "lab",
            "--segment",
            "nope",
            "--address",
            "10.1.0.5",
        ],
        "no segment",
    );
    // Without a segment, the device goes where the site puts its model.
    let out = server.cli_ok(&[
        "--json",
        "site",
        "place",
        "cam-1",
        "--site",
        "lab",
        "--address",
        "10.1.0.5",
    ]);
    let placed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(placed["segment"], "cams", "{out}");
    // A site whose interface name could inject into the ruleset is refused.
    std::fs::write(
        &spec,
        r#"{"resolver": "10.1.0.1", "control_plane": [],
            "segments": [{"name": "x", "interface": "eth1\" accept; #", "subnet": "10.1.0.0/24"}]}"#,
    )
    .unwrap();
    refused(
        &server,
        &["site", "set", "lab", "--file", s(&spec)],
        "not an interface name",
    );
}
