//! The issuing CA key on a real SoftHSM2 token: `palisade serve` generates it on
//! the token (non-extractable), issues with it, and OpenSSL verifies the result;
//! OpenSC's `pkcs11-tool` reads the token independently. A key that could leave
//! the token is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_interop::*;

fn peers() -> bool {
    have("openssl") && have("pkcs11-tool")
}

#[test]
fn the_ca_issues_with_a_softhsm_held_key_and_openssl_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(dir.path()) else {
        return;
    };
    if !peers() {
        return;
    }
    let uri = hsm.token("palisade-ca", "issuing-ca");
    let data = dir.path().join("data");
    let server = ServerProc::start_env(
        &data,
        &["--ca-issuing-key", &uri],
        &[("SOFTHSM2_CONF", &hsm.conf)],
    )
    .unwrap();
    assert!(
        !data.join("ca/intermediate.key").exists(),
        "no issuing key file may exist when the key is on the token"
    );

    // The token holds the key, marked sensitive and never extractable.
    let o = hsm.pkcs11_tool("palisade-ca", &["--list-objects", "--type", "privkey"]);
    let listing = text(&o);
    assert!(o.status.success(), "{listing}");
    assert!(listing.contains("issuing-ca"), "{listing}");
    assert!(listing.contains("never extractable"), "{listing}");
    assert!(listing.contains("Usage:      sign\n"), "{listing}");
    // Its public key is the one in the issuing CA certificate.
    let pubder = dir.path().join("pub.der");
    let o = hsm.pkcs11_tool(
        "palisade-ca",
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "issuing-ca",
            "-o",
            pubder.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = sh(
        &format!(
            "openssl pkey -pubin -inform der -in pub.der -outform der | sha256sum; \
             openssl x509 -in {data}/ca/intermediate.pem -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
            data = data.display()
        ),
        dir.path(),
    );
    let sums = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = sums.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text(&o));
    assert_eq!(
        lines[0], lines[1],
        "token key differs from the CA certificate"
    );

    // A device certificate signed on the token verifies with OpenSSL.
    server.cli_ok(&["model", "add", "cam"]);
    server.cli_ok(&["device", "register", "cam-1", "--model", "cam"]);
    let o = sh(
        "openssl ecparam -name prime256v1 -genkey -noout -out d.key && \
         openssl req -new -key d.key -subj /CN=cam-1 -out d.csr",
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let pem = server.cli_ok(&[
        "cert",
        "issue",
        "cam-1",
        "--csr",
        dir.path().join("d.csr").to_str().unwrap(),
    ]);
    std::fs::write(dir.path().join("d.pem"), pem).unwrap();
    let o = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            data.join("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            data.join("ca/intermediate.pem").to_str().unwrap(),
            dir.path().join("d.pem").to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success() && text(&o).contains(": OK"),
        "openssl verify: {}",
        text(&o)
    );
    // So does the CRL the token signs.
    let o = sh(
        &format!(
            "curl -sf --cacert {data}/ca/root.pem {url}/crl -o crl.der && \
             openssl crl -inform der -in crl.der -CAfile {data}/ca/chain.pem -noout",
            data = data.display(),
            url = server.url
        ),
        dir.path(),
    );
    assert!(
        o.status.success() && text(&o).contains("verify OK"),
        "openssl crl: {}",
        text(&o)
    );

    // A restart finds the same key on the token.
    drop(server);
    let server = ServerProc::start_env(
        &data,
        &["--ca-issuing-key", &uri],
        &[("SOFTHSM2_CONF", &hsm.conf)],
    )
    .unwrap();
    server.cli_ok(&["device", "register", "cam-2", "--model", "cam"]);
}

#[test]
fn an_extractable_token_key_is_refused_as_a_ca_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(dir.path()) else {
        return;
    };
    if !peers() {
        return;
    }
    let uri = hsm.token("weak-ca", "issuing-ca");
    let o = hsm.pkcs11_tool(
        "weak-ca",
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "issuing-ca",
            "--extractable",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = ServerProc::start_env(
        &dir.path().join("data"),
        &["--ca-issuing-key", &uri],
        &[("SOFTHSM2_CONF", &hsm.conf)],
    )
    .expect_err("an extractable CA key must be refused");
    assert!(format!("{err:#}").contains("extractable"), "{err:#}");
}
