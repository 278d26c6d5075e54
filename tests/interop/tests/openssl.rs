//! OpenSSL and curl against a real `palisade serve`: chains, CRLs, TLS settings,
//! tokens and roles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_interop::*;

struct Env {
    dir: tempfile::TempDir,
    server: ServerProc,
}

fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    // This model accepts legacy RSA keys too, so every key type OpenSSL makes can be tried.
    server.cli_ok(&[
        "model",
        "add",
        "cam",
        "--key-types",
        "ecdsa-p256,ecdsa-p384,ed25519,rsa-2048",
    ]);
    server.cli_ok(&["device", "register", "cam-1", "--model", "cam"]);
    Env { dir, server }
}

fn peers() -> bool {
    have("openssl") && have("curl")
}

/// Makes a key and CSR with openssl; `keygen` is the openssl argument list.
fn openssl_csr(env: &Env, name: &str, keygen: &str) -> std::path::PathBuf {
    let script = format!(
        "openssl {keygen} -out {name}.key 2>/dev/null && \
         openssl req -new -key {name}.key -subj '/CN=admin/O=Evil, Inc.' \
           -addext subjectKeyIdentifier=hash -addext subjectAltName=DNS:evil.example \
           -out {name}.csr"
    );
    let o = sh(&script, env.dir.path());
    assert!(o.status.success(), "openssl: {}", text(&o));
    env.dir.path().join(format!("{name}.csr"))
}

fn verify_chain(env: &Env, leaf: &std::path::Path) {
    let ca = env.server.data.join("ca/root.pem");
    let int = env.server.data.join("ca/intermediate.pem");
    let o = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-untrusted",
            int.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success() && text(&o).contains(": OK"),
        "openssl verify: {}",
        text(&o)
    );
}

#[test]
fn openssl_verify_accepts_every_chain_palisade_issues() {
    if !peers() {
        return;
    }
    let env = start();
    let data = &env.server.data;
    // The root verifies itself, the intermediate under it, the server leaf under both.
    verify_chain(&env, &data.join("ca/root.pem"));
    verify_chain(&env, &data.join("ca/intermediate.pem"));
    let o = sh(
        "awk 'BEGIN{n=0} /BEGIN CERT/{n++} n==1' tls/server.pem > server-leaf.pem",
        data,
    );
    assert!(o.status.success());
    verify_chain(&env, &data.join("server-leaf.pem"));
    let o = run(
        "openssl",
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            data.join("ca/chain.pem").to_str().unwrap(),
            data.join("server-leaf.pem").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    for (name, keygen) in [
        ("p256", "ecparam -name prime256v1 -genkey -noout"),
        ("p384", "ecparam -name secp384r1 -genkey -noout"),
        ("ed25519", "genpkey -algorithm ed25519"),
        (
            "rsa2048",
            "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048",
        ),
    ] {
        let csr = openssl_csr(&env, name, keygen);
        let pem = env
            .server
            .cli_ok(&["cert", "issue", "cam-1", "--csr", csr.to_str().unwrap()]);
        let leaf = env.dir.path().join(format!("{name}.pem"));
        std::fs::write(&leaf, &pem).unwrap();
        verify_chain(&env, &leaf);
        let o = run(
            "openssl",
            &[
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                data.join("ca/chain.pem").to_str().unwrap(),
                leaf.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{name} as TLS client: {}", text(&o));
        // Identity comes from the server: not the CSR's CN, O or SAN.
        let o = run(
            "openssl",
            &[
                "x509",
                "-in",
                leaf.to_str().unwrap(),
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
            ],
        );
        let t = text(&o);
        assert!(
            t.contains("CN = cam-1") && t.contains("URI:urn:palisade:device:cam-1"),
            "{t}"
        );
        assert!(!t.contains("admin") && !t.contains("evil"), "{t}");
    }
}

#[test]
fn refuses_weak_and_unknown_key_types_from_openssl() {
    if !peers() {
        return;
    }
    let env = start();
    for (name, keygen, expect) in [
        (
            "rsa1024",
            "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024",
            "1024 bits",
        ),
        (
            "p521",
            "ecparam -name secp521r1 -genkey -noout",
            "not accepted",
        ),
        (
            "k256",
            "ecparam -name secp256k1 -genkey -noout",
            "not accepted",
        ),
    ] {
        let csr = openssl_csr(&env, name, keygen);
        let o = env
            .server
            .cli(&["cert", "issue", "cam-1", "--csr", csr.to_str().unwrap()]);
        assert!(!o.status.success(), "{name} was accepted");
        let t = text(&o);
        assert!(t.contains(expect) && t.contains("HTTP 400"), "{name}: {t}");
    }
    let listed = env
        .server
        .cli_ok(&["cert", "list", "--device", "cam-1", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn openssl_crl_verify_accepts_the_crl_and_sees_the_revocation() {
    if !peers() {
        return;
    }
    let env = start();
    let data = &env.server.data;
    let csr = openssl_csr(&env, "dev", "ecparam -name prime256v1 -genkey -noout");
    let pem = env
        .server
        .cli_ok(&["cert", "issue", "cam-1", "--csr", csr.to_str().unwrap()]);
    let leaf = env.dir.path().join("dev.pem");
    std::fs::write(&leaf, &pem).unwrap();
    let list: serde_json::Value = serde_json::from_str(
        &env.server
            .cli_ok(&["cert", "list", "--device", "cam-1", "--json"]),
    )
    .unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_owned();
    env.server
        .cli_ok(&["cert", "revoke", &serial, "--reason", "key-compromise"]);

    let crl = env.dir.path().join("crl.der");
    let o = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--cacert",
            data.join("ca/root.pem").to_str().unwrap(),
            "-o",
            crl.to_str().unwrap(),
            &format!("{}/crl", env.server.url),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl.to_str().unwrap(),
            "-CAfile",
            data.join("ca/chain.pem").to_str().unwrap(),
            "-noout",
            "-verify",
            "-text",
        ],
    );
    let t = text(&o);
    assert!(o.status.success() && t.contains("verify OK"), "{t}");
    assert!(t.contains("Next Update"), "{t}");
    assert!(t.to_lowercase().contains(&serial), "{t}");
    assert!(t.contains("Key Compromise"), "{t}");
    // And a relying party checking the CRL refuses the revoked certificate.
    let o = sh(
        &format!(
            "openssl crl -inform DER -in crl.der -out crl.pem && openssl verify -crl_check -CRLfile crl.pem -CAfile {root} -untrusted {int} dev.pem",
            root = data.join("ca/root.pem").display(),
            int = data.join("ca/intermediate.pem").display()
        ),
        env.dir.path(),
    );
    assert!(
        !o.status.success() && text(&o).contains("certificate revoked"),
        "{}",
        text(&o)
    );
}

#[test]
fn curl_reaches_healthz_with_the_root_ca_and_gets_401_and_403() {
    if !peers() {
        return;
    }
    let env = start();
    let root = env.server.data.join("ca/root.pem");
    let root = root.to_str().unwrap();
    let url = &env.server.url;
    let o = run(
        "curl",
        &["-sS", "--fail", "--cacert", root, &format!("{url}/healthz")],
    );
    assert!(
        o.status.success() && text(&o).contains("ok"),
        "{}",
        text(&o)
    );
    // Without Palisade's root the server is not trusted.
    let o = run(
        "curl",
        &[
            "-sS",
            "--capath",
            "/nonexistent",
            "--cacert",
            "/dev/null",
            &format!("{url}/healthz"),
        ],
    );
    assert!(!o.status.success());
    let code = |args: &[&str]| {
        let mut all = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            root,
        ];
        all.extend_from_slice(args);
        text(&run("curl", &all))
    };
    assert_eq!(code(&[&format!("{url}/api/v1/devices")]), "401");
    let auditor = env
        .server
        .cli_ok(&["token", "create", "--operator", "aud", "--role", "auditor"]);
    let header = format!("Authorization: Bearer {}", auditor.trim());
    assert_eq!(
        code(&["-H", &header, &format!("{url}/api/v1/devices")]),
        "200"
    );
    assert_eq!(
        code(&[
            "-H",
            &header,
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"id\":\"x\"}",
            &format!("{url}/api/v1/models")
        ]),
        "403"
    );
}

#[test]
fn tls_offers_only_1_3_and_1_2_with_ecdhe_aead() {
    if !peers() {
        return;
    }
    let env = start();
    let connect = format!("127.0.0.1:{}", env.server.port());
    let root = env.server.data.join("ca/root.pem");
    let hs = |extra: &str| {
        sh(
            &format!(
                "echo | timeout 10 openssl s_client -connect {connect} -CAfile {} -verify_return_error {extra} 2>&1",
                root.display()
            ),
            env.dir.path(),
        )
    };
    let o = hs("-tls1_3");
    assert!(text(&o).contains("TLSv1.3"), "{}", text(&o));
    let o = hs("-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256");
    assert!(o.status.success(), "{}", text(&o));
    for refused in [
        "-tls1_2 -cipher AES128-GCM-SHA256",
        "-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256",
        "-tls1_1",
    ] {
        let o = hs(refused);
        assert!(!o.status.success(), "{refused} was accepted: {}", text(&o));
    }
}
