//! EST (RFC 7030) against real clients: `openssl req` makes the CSR, `curl` sends
//! it (base64 PKCS#10, `Content-Type: application/pkcs10`) with a birth
//! certificate (`--cert/--key`) or an enrolment token (HTTP Basic), and
//! `openssl pkcs7 -print_certs` reads the answer. The factory workflow runs
//! through the `palisade factory` CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use palisade_interop::*;

struct Env {
    dir: tempfile::TempDir,
    server: ServerProc,
}

impl Env {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn root(&self) -> String {
        self.server.data.join("ca/root.pem").display().to_string()
    }

    /// Runs a shell snippet in the test directory; returns stdout+stderr.
    fn sh(&self, script: &str) -> (bool, String) {
        let o = sh(script, self.dir.path());
        (o.status.success(), text(&o))
    }

    /// POSTs `csr_b64` to an EST operation with curl; returns (HTTP code, body file).
    fn est(&self, op: &str, csr_b64: &str, auth: &str) -> (String, String) {
        let out = format!("{}-{}.out", op.replace('/', "_"), rand_suffix());
        let script = format!(
            "curl -sS --cacert {root} {auth} -H 'Content-Type: application/pkcs10' \
               --data-binary @{csr_b64} -o {out} -w '%{{http_code}}' {url}/.well-known/est/{op}",
            root = self.root(),
            url = self.server.url,
        );
        let (_, code) = self.sh(&script);
        let body = std::fs::read_to_string(self.path(&out)).unwrap_or_default();
        (code.trim().to_owned(), body)
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn peers() -> bool {
    have("openssl") && have("curl")
}

fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "thermo"]);
    server.cli_ok(&["model", "add", "camera"]);
    Env { dir, server }
}

/// A factory batch of `serials` for model thermo; registered and imported if `import`.
fn factory(env: &Env, supplier: &str, serials: &[&str], import: bool) -> PathBuf {
    let cli = |args: &[&str]| {
        env.server.cli_ok(args);
    };
    let batch = factory_batch(&cli, env.dir.path(), supplier, "thermo", serials, 7300);
    if import {
        let ca = batch.factory.join("ca.pem");
        env.server.cli_ok(&[
            "supplier",
            "add",
            supplier,
            "--ca-cert",
            ca.to_str().unwrap(),
        ]);
        env.server
            .cli_ok(&["batch", "import", batch.manifest.to_str().unwrap()]);
    }
    batch.factory
}

/// An openssl key and base64 DER CSR asking for a foreign identity; returns the
/// key and CSR file names.
fn openssl_csr(env: &Env, name: &str) -> (String, String) {
    let (ok, out) = env.sh(&format!(
        "openssl ecparam -name prime256v1 -genkey -noout -out {name}.key && \
         openssl req -new -key {name}.key -subj '/CN=admin' -addext subjectAltName=DNS:evil.example \
           -addext subjectKeyIdentifier=hash -outform DER | base64 > {name}.b64"
    ));
    assert!(ok, "{out}");
    (format!("{name}.key"), format!("{name}.b64"))
}

fn print_certs(env: &Env, b64: &str) -> String {
    std::fs::write(env.path("reply.b64"), b64).unwrap();
    let (ok, out) = env.sh("base64 -d reply.b64 | openssl pkcs7 -inform DER -print_certs");
    assert!(ok, "openssl pkcs7: {out}");
    out
}

fn device_state(env: &Env, id: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["device", "show", id, "--json"])).unwrap();
    v["device"]["state"].as_str().unwrap().to_owned()
}

#[test]
fn est_cacerts_and_csrattrs_parse_with_openssl() {
    if !peers() {
        return;
    }
    let env = start();
    let (ok, out) = env.sh(&format!(
        "curl -sS --fail --cacert {} {}/.well-known/est/cacerts | base64 -d | openssl pkcs7 -inform DER -print_certs -noout",
        env.root(),
        env.server.url
    ));
    assert!(
        ok && out.contains("Palisade Root CA") && out.contains("Issuing CA"),
        "{out}"
    );
    let (ok, out) = env.sh(&format!(
        "curl -sS --fail --cacert {} {}/.well-known/est/thermo/csrattrs | base64 -d | openssl asn1parse -inform DER",
        env.root(),
        env.server.url
    ));
    assert!(ok && out.contains("prime256v1"), "{out}");
}

#[test]
fn zero_touch_enrolment_with_a_birth_identity_over_curl() {
    if !peers() {
        return;
    }
    let env = start();
    factory(&env, "acme", &["SN0001", "SN0002"], true);
    assert_eq!(device_state(&env, "sn0001"), "registered");
    let (key, csr) = openssl_csr(&env, "op1");
    let birth = format!(
        "--cert {} --key {}",
        env.p("dev-SN0001/idevid.pem"),
        env.p("dev-SN0001/idevid.key")
    );
    let (code, body) = env.est("thermo/simpleenroll", &csr, &birth);
    assert_eq!(code, "200", "{body}");
    let certs = print_certs(&env, &body);
    // The server sets the identity: not the CSR's CN or SAN.
    assert!(
        certs.contains("CN = sn0001") && !certs.contains("admin"),
        "{certs}"
    );
    std::fs::write(env.path("op1.pem"), &certs).unwrap();
    let (ok, out) = env.sh(&format!(
        "openssl verify -CAfile {} -untrusted {} op1.pem",
        env.root(),
        env.server.data.join("ca/intermediate.pem").display()
    ));
    assert!(ok, "{out}");
    assert_eq!(device_state(&env, "sn0001"), "enrolled");
    let show: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["device", "show", "sn0001", "--json"])).unwrap();
    assert_eq!(show["certificates"].as_array().unwrap().len(), 1);
    // What was attached at enrolment is kept with the device.
    let policy = &show["device"]["attached_policy"];
    assert_eq!(policy["model"], "thermo");
    assert_eq!(policy["policy_version"], 1);
    assert_eq!(policy["cert_validity_days"], 30);
    assert_eq!(policy["key_type"], "ecdsa-p256");
    assert_eq!(show["device"]["supplier"], "acme");

    // The same birth identity with another key: a clone, refused and audited.
    let (_, csr2) = openssl_csr(&env, "clone");
    let (code, body) = env.est("simpleenroll", &csr2, &birth);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("possible clone"), "{body}");
    let entries: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                &env.root(),
                "-H",
                &format!("Authorization: Bearer {}", env.server.admin_token()),
                &format!("{}/api/v1/audit/entries?limit=5000", env.server.url),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "supplier.add",
        "batch.import",
        "est.enroll",
        "est.clone_suspected",
    ] {
        assert!(actions.contains(&a), "{a} not audited: {actions:?}");
    }

    // Re-enrolment with the operational certificate, and a new key.
    let (_, csr3) = openssl_csr(&env, "rekey");
    let (code, body) = env.est(
        "simplereenroll",
        &csr3,
        &format!("--cert {} --key {}", env.p("op1.pem"), env.p(&key)),
    );
    assert_eq!(code, "200", "{body}");
    assert!(print_certs(&env, &body).contains("CN = sn0001"));
    let o = env.server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn token_enrolment_over_curl_is_single_use_and_bound_to_its_model() {
    if !peers() {
        return;
    }
    let env = start();
    let token = env.server.cli_ok(&[
        "enrollment-token",
        "create",
        "--model",
        "thermo",
        "--ttl",
        "1h",
    ]);
    let token = token.trim();
    assert!(token.starts_with("pet_"), "{token}");
    let (_, csr) = openssl_csr(&env, "t1");
    // Presented for another model's label: refused, and the token stays usable.
    let (code, body) = env.est("camera/simpleenroll", &csr, &format!("-u tok-1:{token}"));
    assert_eq!(code, "403", "{body}");
    let (code, body) = env.est("thermo/simpleenroll", &csr, &format!("-u tok-1:{token}"));
    assert_eq!(code, "200", "{body}");
    assert!(print_certs(&env, &body).contains("CN = tok-1"));
    assert_eq!(device_state(&env, "tok-1"), "enrolled");
    // Replayed.
    let (code, body) = env.est("thermo/simpleenroll", &csr, &format!("-u tok-2:{token}"));
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("already been used"), "{body}");
    // Malformed, wrong secret, none at all.
    let (code, _) = env.est("simpleenroll", &csr, "-u tok-3:nonsense");
    assert_eq!(code, "401");
    let wrong = format!("{}x", &token[..token.len() - 1]);
    let (code, _) = env.est("simpleenroll", &csr, &format!("-u tok-3:{wrong}"));
    assert_eq!(code, "401");
    let (ok, out) = env.sh(&format!(
        "curl -sS -i --cacert {} -H 'Content-Type: application/pkcs10' --data-binary @{csr} {}/.well-known/est/simpleenroll",
        env.root(),
        env.server.url
    ));
    assert!(
        ok && out.contains("401") && out.to_lowercase().contains("www-authenticate: basic"),
        "{out}"
    );
    assert!(env.server.cli(&["device", "show", "tok-2"]).status.code() != Some(0));
}

#[test]
fn est_refuses_bad_input_with_a_reason_and_changes_nothing() {
    if !peers() || !have("python3") {
        return;
    }
    let env = start();
    factory(&env, "acme", &["SN0100"], true);
    // A second manufacturer nobody registered, and a registered one's device in no batch.
    factory(&env, "rogue", &["SN0200"], false);
    let devices_before = env.server.cli_ok(&["device", "list", "--json"]);
    let (_, csr) = openssl_csr(&env, "b");

    let rogue = format!(
        "--cert {} --key {}",
        env.p("dev-SN0200/idevid.pem"),
        env.p("dev-SN0200/idevid.key")
    );
    let (code, body) = env.est("simpleenroll", &csr, &rogue);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("registered manufacturer"), "{body}");

    let acme = env.path("factory-acme");
    let d = env.path("dev-SN0101");
    env.server.cli_ok(&[
        "factory",
        "device-key",
        "--device-dir",
        d.to_str().unwrap(),
        "--serial",
        "SN0101",
    ]);
    env.server.cli_ok(&[
        "factory",
        "issue",
        "--dir",
        acme.to_str().unwrap(),
        "--csr",
        d.join("idevid.csr").to_str().unwrap(),
        "--serial",
        "SN0101",
        "--out",
        d.join("idevid.pem").to_str().unwrap(),
    ]);
    let unlisted = format!(
        "--cert {} --key {}",
        env.p("dev-SN0101/idevid.pem"),
        env.p("dev-SN0101/idevid.key")
    );
    let (code, body) = env.est("simpleenroll", &csr, &unlisted);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("no imported batch"), "{body}");

    let birth = format!(
        "--cert {} --key {}",
        env.p("dev-SN0100/idevid.pem"),
        env.p("dev-SN0100/idevid.key")
    );
    std::fs::write(env.path("junk.b64"), "this is not base64 !!!").unwrap();
    let (code, body) = env.est("simpleenroll", "junk.b64", &birth);
    assert_eq!(code, "400", "{body}");
    std::fs::write(env.path("garbage.b64"), "MIIBAAAAAAAA").unwrap();
    let (code, body) = env.est("simpleenroll", "garbage.b64", &birth);
    assert_eq!(code, "400", "{body}");
    std::fs::write(env.path("big.b64"), "A".repeat(20_000)).unwrap();
    let (code, body) = env.est("simpleenroll", "big.b64", &birth);
    assert_eq!(code, "400", "{body}");
    // A CSR whose signature does not verify.
    let (ok, out) = env.sh(
        "base64 -d b.b64 > b.der && python3 -c \"import sys; d=bytearray(open('b.der','rb').read()); d[-3]^=0x55; open('bad.der','wb').write(d)\" && base64 bad.der > bad.b64",
    );
    assert!(ok, "{out}");
    let (code, body) = env.est("simpleenroll", "bad.b64", &birth);
    assert_eq!(code, "400", "{body}");
    // Wrong content type.
    let (ok, out) = env.sh(&format!(
        "curl -sS --cacert {} {birth} -H 'Content-Type: application/json' --data-binary @b.b64 -o /dev/null -w '%{{http_code}}' {}/.well-known/est/simpleenroll",
        env.root(),
        env.server.url
    ));
    assert!(ok && out.trim() == "415", "{out}");

    // Manifests: signed by the wrong key, or an entry changed after signing.
    let rogue_manifest = env.path("rogue.json");
    env.server.cli_ok(&[
        "factory",
        "batch",
        "--dir",
        env.path("factory-rogue").to_str().unwrap(),
        "--model",
        "thermo",
        "--out",
        rogue_manifest.to_str().unwrap(),
        env.path("dev-SN0200/idevid.pem").to_str().unwrap(),
    ]);
    let (ok, out) = env.sh(&format!(
        "python3 - <<'PY'\nimport json,base64\nm=json.load(open('{}'))\nb=json.loads(base64.b64decode(m['payload']))\nb['supplier']='acme'\nm['payload']=base64.b64encode(json.dumps(b).encode()).decode()\nopen('forged.json','w').write(json.dumps(m))\nPY",
        rogue_manifest.display()
    ));
    assert!(ok, "{out}");
    let o = env
        .server
        .cli(&["batch", "import", env.p("forged.json").as_str()]);
    assert!(
        !o.status.success() && text(&o).contains("signature does not verify"),
        "{}",
        text(&o)
    );
    let good = acme.join("batch.json");
    let (ok, out) = env.sh(&format!(
        "python3 - <<'PY'\nimport json,base64\nm=json.load(open('{}'))\nb=json.loads(base64.b64decode(m['payload']))\nb['devices'][0]['serial']='SN9999'\nm['payload']=base64.b64encode(json.dumps(b).encode()).decode()\nopen('changed.json','w').write(json.dumps(m))\nPY",
        good.display()
    ));
    assert!(ok, "{out}");
    let o = env
        .server
        .cli(&["batch", "import", env.p("changed.json").as_str()]);
    assert!(
        !o.status.success() && text(&o).contains("signature does not verify"),
        "{}",
        text(&o)
    );

    assert_eq!(
        env.server.cli_ok(&["device", "list", "--json"]),
        devices_before
    );
    let o = env.server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_revoked_device_cannot_re_enrol() {
    if !peers() {
        return;
    }
    let env = start();
    let token = env
        .server
        .cli_ok(&["enrollment-token", "create", "--model", "thermo"]);
    let (key, csr) = openssl_csr(&env, "r");
    let (code, body) = env.est("simpleenroll", &csr, &format!("-u rev-1:{}", token.trim()));
    assert_eq!(code, "200", "{body}");
    std::fs::write(env.path("r.pem"), print_certs(&env, &body)).unwrap();
    let list: serde_json::Value = serde_json::from_str(
        &env.server
            .cli_ok(&["cert", "list", "--device", "rev-1", "--json"]),
    )
    .unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_owned();
    env.server
        .cli_ok(&["cert", "revoke", &serial, "--reason", "key-compromise"]);
    let (code, body) = env.est(
        "simplereenroll",
        &csr,
        &format!("--cert {} --key {}", env.p("r.pem"), env.p(&key)),
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("revoked"), "{body}");
}

#[test]
fn a_model_requiring_approval_answers_202_until_an_operator_approves() {
    if !peers() {
        return;
    }
    let env = start();
    env.server
        .cli_ok(&["model", "add", "pump", "--approval-required"]);
    let token = env
        .server
        .cli_ok(&["enrollment-token", "create", "--model", "pump"]);
    let (_, csr) = openssl_csr(&env, "a");
    let auth = format!("-u pump-1:{}", token.trim());
    let (ok, out) = env.sh(&format!(
        "curl -sS -i --cacert {} {auth} -H 'Content-Type: application/pkcs10' --data-binary @{csr} {}/.well-known/est/pump/simpleenroll",
        env.root(),
        env.server.url
    ));
    assert!(ok, "{out}");
    let lower = out.to_lowercase();
    assert!(
        lower.starts_with("http/1.1 202") && lower.contains("retry-after: 60"),
        "{out}"
    );
    assert!(out.contains("approve"), "{out}");
    assert_eq!(device_state(&env, "pump-1"), "registered");
    // Retrying before approval: still 202, and the token stays bound to pump-1.
    let (code, _) = env.est("pump/simpleenroll", &csr, &auth);
    assert_eq!(code, "202");
    let (code, _) = env.est(
        "pump/simpleenroll",
        &csr,
        &format!("-u pump-2:{}", token.trim()),
    );
    assert_eq!(code, "401");
    env.server.cli_ok(&["device", "approve", "pump-1"]);
    let (code, body) = env.est("pump/simpleenroll", &csr, &auth);
    assert_eq!(code, "200", "{body}");
    assert!(print_certs(&env, &body).contains("CN = pump-1"));
    assert_eq!(device_state(&env, "pump-1"), "enrolled");
}

#[test]
fn a_key_type_the_model_does_not_allow_is_refused() {
    if !peers() {
        return;
    }
    let env = start();
    env.server
        .cli_ok(&["model", "add", "lock", "--key-types", "ecdsa-p256"]);
    let token = env
        .server
        .cli_ok(&["enrollment-token", "create", "--model", "lock"]);
    let (ok, out) = env.sh(
        "openssl genpkey -algorithm ed25519 -out ed.key && openssl req -new -key ed.key -subj /CN=x -outform DER | base64 > ed.b64",
    );
    assert!(ok, "{out}");
    let (code, body) = env.est(
        "lock/simpleenroll",
        "ed.b64",
        &format!("-u lock-1:{}", token.trim()),
    );
    assert_eq!(code, "400", "{body}");
    assert!(body.contains("ed25519 is not allowed"), "{body}");
}
