//! Hardware roots of trust end to end, with the real `palisade serve`, the real
//! `palisade-agent` binary, real `swtpm` TPMs and a real SoftHSM2 token:
//!
//! * an agent with a TPM keystore enrols zero-touch with EK/AK attestation,
//!   connects to the MQTT gateway with its TPM-held key and passes quotes; when
//!   its booted firmware measurement changes, the device is *attestation
//!   failed* within one attestation interval;
//! * the same with a PKCS#11 keystore (secure element);
//! * neither leaves a private key in its state directory or open files;
//! * refusals: a software key for a TPM model, an EK from an unknown vendor, an
//!   AK not bound to the EK, an exportable key — each audited, nothing issued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_agent::est_client::{AttestAuth, EnrollAuth, EstClient, EstError};
use palisade_attest::{Challenge, ChallengeRequest, KeyEvidence, b64, unb64};
use palisade_interop::agents::*;
use palisade_interop::*;
use palisade_tpm::Tpm;

/// Seconds between quote challenges in these tests.
const INTERVAL: u64 = 2;

fn server(dir: &Path, env: &[(&str, &Path)]) -> ServerProc {
    ServerProc::start_env(
        &dir.join("data"),
        &["--attestation-interval", &INTERVAL.to_string()],
        env,
    )
    .unwrap()
}

fn certificates(server: &ServerProc, id: &str) -> usize {
    let out = server.cli_ok(&["--json", "cert", "list", "--device", id]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap()
        .len()
}

/// No private key in readable form in `dir` or among `pid`'s open files.
fn assert_no_private_key_files(dir: &Path, pid: Option<u32>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if let Some(pid) = pid {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            if let Ok(target) = std::fs::read_link(fd.unwrap().path())
                && target.is_file()
            {
                files.push(target);
            }
        }
    }
    // PKCS#8 EC private key and SEC1 EC private key DER prefixes.
    let pkcs8 = [
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    ];
    let sec1 = [0x02, 0x01, 0x01, 0x04, 0x20];
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a PEM private key",
            f.display()
        );
        assert!(
            !bytes.windows(pkcs8.len()).any(|w| w == pkcs8),
            "{} holds a PKCS#8 key",
            f.display()
        );
        assert!(
            !bytes.windows(sec1.len()).any(|w| w == sec1),
            "{} holds a SEC1 key",
            f.display()
        );
        if f.extension().is_some_and(|e| e == "tpmkey") {
            // A TPM-wrapped blob: its public area says the TPM will never let
            // the key out.
            let blob = palisade_tpm::KeyBlob::from_bytes(&bytes).unwrap();
            let p = blob.ecc_public().unwrap();
            assert!(
                p.has(palisade_attest::attrs::FIXED_TPM | palisade_attest::attrs::FIXED_PARENT),
                "{} is not bound to its TPM",
                f.display()
            );
        }
    }
}

#[test]
fn a_tpm_agent_enrols_with_attestation_connects_and_fails_when_its_firmware_changes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(swtpm) = Swtpm::start(&dir.path().join("tpm")) else {
        return;
    };
    if !have("tpm2_pcrread") {
        return;
    }
    let server = server(dir.path(), &[]);
    let tcti = swtpm.tcti();
    let keys = ["--keystore", "tpm", "--tpm-tcti", tcti.as_str()];
    let fw = tpm_meter_model(
        &server,
        &swtpm.vendor_ca,
        Some((dir.path(), "fw-1.0.bin", b"meter firmware 1.0")),
    );

    // Boot: the shim measures the firmware into the TPM.
    let state = dir.path().join("agent");
    let o = agent_cmd(&server, &state, &[])
        .args([
            "boot-measure",
            "--tpm-tcti",
            &tcti,
            "--image",
            fw.to_str().unwrap(),
            "--firmware-version",
            "1.0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Zero-touch enrolment with attestation.
    let out = enrol(&server, &state, &keys, "meter-1", "meter");
    assert!(!out.contains("EXIT: failure"), "{out}");
    let d = device(&server, "meter-1");
    assert_eq!(d["key_protection"], "tpm", "{d}");
    assert_eq!(d["attached_policy"]["hardware_attested"], true, "{d}");
    assert!(audit_has(&server, "attest.evidence", "meter-1"));

    // Online with the TPM-held key; a quote on connect passes.
    let agent = run_agent(&server, &state, &keys, &[]);
    let d = wait_for(&server, "meter-1", 30, |d| d["attestation"] == "ok");
    assert!(
        d["attestation_detail"].as_str().unwrap().contains("1.0"),
        "{d}"
    );
    assert_no_private_key_files(&state, Some(agent.0.id()));

    // tpm2-tools reads the PCR the log replays to.
    let log: Vec<palisade_attest::BootEvent> =
        serde_json::from_slice(&std::fs::read(state.join("boot-events.json")).unwrap()).unwrap();
    let want: String = palisade_attest::replay(&log, palisade_attest::FIRMWARE_PCR)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let o = Command::new("tpm2_pcrread")
        .args(["-T", &tcti, "sha256:9"])
        .output()
        .unwrap();
    assert!(
        text(&o).to_lowercase().contains(&want),
        "tpm2_pcrread: {}",
        text(&o)
    );

    // Something else gets measured (the firmware changed under the agent):
    // within one interval the device is attestation failed, with the reason.
    let evil = dir.path().join("fw-evil.bin");
    std::fs::write(&evil, b"meter firmware 1.0 with a backdoor").unwrap();
    let o = agent_cmd(&server, &state, &[])
        .args([
            "boot-measure",
            "--tpm-tcti",
            &tcti,
            "--image",
            evil.to_str().unwrap(),
            "--firmware-version",
            "1.0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let changed = Instant::now();
    let d = wait_for(&server, "meter-1", 4 * INTERVAL + 10, |d| {
        d["attestation"] == "failed"
    });
    eprintln!(
        "attestation failed {:.1} s after the measurement changed (interval {INTERVAL} s)",
        changed.elapsed().as_secs_f64()
    );
    assert!(
        d["attestation_detail"]
            .as_str()
            .unwrap()
            .contains("not an approved image"),
        "{d}"
    );
    assert!(audit_has(&server, "attest.quote", "not an approved image"));
    let metrics = server.api_get("/metrics");
    assert!(metrics.contains("quote_failed"), "{metrics}");
    drop(agent);
}

#[test]
fn a_pkcs11_agent_enrols_and_connects_with_its_token_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(hsm) = SoftHsm::new(dir.path()) else {
        return;
    };
    let uri = hsm.token("device-se", "unused");
    let server = server(dir.path(), &[]);
    server.cli_ok(&["model", "add", "cam"]);
    let state = dir.path().join("agent");
    let keys = ["--keystore", "pkcs11", "--pkcs11-uri", uri.as_str()];
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "cam"]);
    let o = agent_cmd(&server, &state, &[])
        .env("SOFTHSM2_CONF", &hsm.conf)
        .args(["enroll", "--token", token.trim(), "--device-id", "cam-1"])
        .args(keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let d = device(&server, "cam-1");
    assert_eq!(d["key_protection"], "secure-element", "{d}");
    // The key is on the token, non-extractable; OpenSC reads it independently.
    let o = hsm.pkcs11_tool("device-se", &["--list-objects", "--type", "privkey"]);
    let listing = text(&o);
    assert!(
        listing.contains("palisade-op") && listing.contains("never extractable"),
        "{listing}"
    );

    let agent = run_agent(&server, &state, &keys, &[("SOFTHSM2_CONF", &hsm.conf)]);
    wait_for(&server, "cam-1", 30, |d| {
        d.get("last_seen").is_some_and(|v| !v.is_null()) || d["connected"] == true
    });
    let out = server.cli_ok(&["device", "command", "cam-1", "ping"]);
    assert!(out.contains("ping"), "{out}");
    assert_no_private_key_files(&state, Some(agent.0.id()));
    drop(agent);
}

#[test]
fn a_software_key_is_refused_for_a_tpm_model_and_nothing_is_issued() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    server.cli_ok(&["model", "add", "meter", "--attestation", "tpm"]);
    let out = enrol(&server, &dir.path().join("agent"), &[], "meter-9", "meter");
    assert!(
        out.contains("EXIT: failure") && out.contains("requires TPM attestation"),
        "{out}"
    );
    assert!(audit_has(&server, "est.enroll", "requires TPM attestation"));
    assert_eq!(certificates(&server, "meter-9"), 0);
}

#[test]
fn an_ek_from_an_unregistered_vendor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registered) = Swtpm::start(&dir.path().join("tpm-a")) else {
        return;
    };
    let Some(foreign) = Swtpm::start(&dir.path().join("tpm-b")) else {
        return;
    };
    let server = server(dir.path(), &[]);
    tpm_meter_model(&server, &registered.vendor_ca, None);
    let tcti = foreign.tcti();
    let out = enrol(
        &server,
        &dir.path().join("agent"),
        &["--keystore", "tpm", "--tpm-tcti", tcti.as_str()],
        "meter-2",
        "meter",
    );
    assert!(
        out.contains("EXIT: failure") && out.contains("not a registered TPM vendor CA"),
        "{out}"
    );
    assert!(audit_has(
        &server,
        "attest.challenge",
        "not a registered TPM vendor CA"
    ));
    assert_eq!(certificates(&server, "meter-2"), 0);
}

/// Drives the attestation API directly, as a forger would.
#[tokio::test]
async fn an_unbound_attestation_key_and_an_exportable_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(a) = Swtpm::start(&dir.path().join("tpm-a")) else {
        return;
    };
    let Some(b) = Swtpm::start(&dir.path().join("tpm-b")) else {
        return;
    };
    let server = server(dir.path(), &[]);
    tpm_meter_model(&server, &a.vendor_ca, None);
    let root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root, None).unwrap();
    let tpm_a = Tpm::open(&a.tcti()).unwrap();
    let tpm_b = Tpm::open(&b.tcti()).unwrap();
    let refused = |r: Result<Option<serde_json::Value>, EstError>, needle: &str| match r {
        Err(EstError::Refused {
            status: 403,
            reason,
        }) => {
            assert!(reason.contains(needle), "{reason} (wanted {needle:?})")
        }
        other => panic!("expected a refusal with {needle:?}, got {other:?}"),
    };

    // TPM A's genuine EK, but an AK from TPM B: B cannot activate the
    // credential, so the forger can only guess the secret.
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "meter"]);
    let auth = EnrollAuth::Token {
        device: "meter-3".into(),
        token: token.trim().into(),
    };
    let ak_b = tpm_b.create_attestation_key().unwrap();
    let req = ChallengeRequest {
        ek_certificate: b64(&tpm_a.ek_certificate().unwrap()),
        ak_public: b64(&ak_b.public),
    };
    let ch: Challenge = est
        .attest("challenge", AttestAuth::Enroll(&auth), &req)
        .await
        .unwrap()
        .unwrap();
    let id_object = unb64("c", &ch.credential_blob, 4096).unwrap();
    let secret = unb64("s", &ch.encrypted_secret, 4096).unwrap();
    assert!(
        tpm_b
            .activate_credential(&ak_b, &id_object, &secret)
            .is_err()
    );
    let key = tpm_b.create_signing_key(false).unwrap();
    let nonce = unb64("n", &ch.nonce, 64).unwrap();
    let (info, sig) = tpm_b.certify(&key, &ak_b, &nonce).unwrap();
    let forged = KeyEvidence {
        id: ch.id.clone(),
        secret: b64(&[0u8; 32]),
        key_public: b64(&key.public),
        certify_info: b64(&info),
        certify_signature: b64(&sig),
    };
    refused(
        est.attest("evidence", AttestAuth::Enroll(&auth), &forged)
            .await,
        "not bound to the endorsement key",
    );
    // The challenge is spent: replaying the evidence is refused as well.
    refused(
        est.attest("evidence", AttestAuth::Enroll(&auth), &forged)
            .await,
        "unknown or expired attestation challenge",
    );

    // A genuine AK in TPM A certifying an exportable key.
    let ak_a = tpm_a.create_attestation_key().unwrap();
    let req = ChallengeRequest {
        ek_certificate: b64(&tpm_a.ek_certificate().unwrap()),
        ak_public: b64(&ak_a.public),
    };
    let ch: Challenge = est
        .attest("challenge", AttestAuth::Enroll(&auth), &req)
        .await
        .unwrap()
        .unwrap();
    let released = tpm_a
        .activate_credential(
            &ak_a,
            &unb64("c", &ch.credential_blob, 4096).unwrap(),
            &unb64("s", &ch.encrypted_secret, 4096).unwrap(),
        )
        .unwrap();
    let exportable = tpm_a.create_signing_key(true).unwrap();
    let (info, sig) = tpm_a
        .certify(&exportable, &ak_a, &unb64("n", &ch.nonce, 64).unwrap())
        .unwrap();
    let ev = KeyEvidence {
        id: ch.id.clone(),
        secret: b64(&released),
        key_public: b64(&exportable.public),
        certify_info: b64(&info),
        certify_signature: b64(&sig),
    };
    refused(
        est.attest("evidence", AttestAuth::Enroll(&auth), &ev).await,
        "exportable",
    );
    assert!(audit_has(&server, "attest.evidence", "exportable"));
    assert_eq!(certificates(&server, "meter-3"), 0);
}

/// The factory line with hardware: birth keys made inside a TPM and on a
/// PKCS#11 token (never files), IDevIDs issued from their CSRs by `palisade
/// factory`, and zero-touch enrolment with those birth identities.
#[test]
fn birth_keys_made_in_a_tpm_and_on_a_token_enrol_zero_touch() {
    let dir = tempfile::tempdir().unwrap();
    let Some(swtpm) = Swtpm::start(&dir.path().join("tpm")) else {
        return;
    };
    let Some(hsm) = SoftHsm::new(dir.path()) else {
        return;
    };
    let uri = hsm.token("birth-se", "unused");
    let tcti = swtpm.tcti();
    let server = server(dir.path(), &[]);
    server.cli_ok(&[
        "tpm-vendor",
        "add",
        "--ca-cert",
        swtpm.vendor_ca.to_str().unwrap(),
    ]);
    server.cli_ok(&["model", "add", "meter"]);
    let factory = dir.path().join("factory");
    let f = factory.to_str().unwrap();
    palisade_ok(&["factory", "init-ca", "--supplier", "acme", "--dir", f]);

    let tpm_keys = ["--keystore", "tpm", "--tpm-tcti", tcti.as_str()];
    let se_keys = ["--keystore", "pkcs11", "--pkcs11-uri", uri.as_str()];
    let mut certs = Vec::new();
    for (serial, keys) in [("sn-tpm-1", &tpm_keys[..]), ("sn-se-1", &se_keys[..])] {
        let state = dir.path().join(serial);
        let csr = state.join("idevid.csr");
        let o = agent_cmd(&server, &state, &[])
            .env("SOFTHSM2_CONF", &hsm.conf)
            .args([
                "birth-key",
                "--serial",
                serial,
                "--out",
                csr.to_str().unwrap(),
            ])
            .args(keys)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let pem = state.join("idevid.pem");
        palisade_ok(&[
            "factory",
            "issue",
            "--dir",
            f,
            "--csr",
            csr.to_str().unwrap(),
            "--serial",
            serial,
            "--out",
            pem.to_str().unwrap(),
        ]);
        certs.push(pem.to_str().unwrap().to_owned());
    }
    let manifest = factory.join("batch.json");
    let mut args = vec!["factory", "batch", "--dir", f, "--model", "meter", "--out"];
    args.push(manifest.to_str().unwrap());
    args.extend(certs.iter().map(String::as_str));
    palisade_ok(&args);
    server.cli_ok(&[
        "supplier",
        "add",
        "acme",
        "--ca-cert",
        factory.join("ca.pem").to_str().unwrap(),
    ]);
    server.cli_ok(&["batch", "import", manifest.to_str().unwrap()]);

    for (serial, keys, protection) in [
        ("sn-tpm-1", &tpm_keys[..], "tpm"),
        ("sn-se-1", &se_keys[..], "secure-element"),
    ] {
        let state = dir.path().join(serial);
        let o = agent_cmd(&server, &state, &[])
            .env("SOFTHSM2_CONF", &hsm.conf)
            .args([
                "enroll",
                "--idevid-cert",
                state.join("idevid.pem").to_str().unwrap(),
            ])
            .args(keys)
            .output()
            .unwrap();
        assert!(o.status.success(), "{serial}: {}", text(&o));
        let d = device(&server, serial);
        assert_eq!(d["key_protection"], protection, "{d}");
        assert_eq!(d["state"], "enrolled", "{d}");
        assert_no_private_key_files(&state, None);
    }
    // The birth key on the token is the one the IDevID certifies.
    let o = hsm.pkcs11_tool("birth-se", &["--list-objects", "--type", "privkey"]);
    assert!(text(&o).contains("palisade-idevid"), "{}", text(&o));
}

/// A compromised agent that answers every challenge with the first quote it
/// ever made (a replay): the server marks the device attestation failed.
#[derive(Debug)]
struct ReplayingAttester {
    inner: palisade_agent::tpm::TpmKeystore,
    first: std::sync::Mutex<Option<palisade_attest::QuoteEvidence>>,
}

impl palisade_agent::Attester for ReplayingAttester {
    fn endorsement(&self) -> anyhow::Result<ChallengeRequest> {
        self.inner.endorsement()
    }
    fn prove_key(&self, raw: &[u8], ch: &Challenge) -> anyhow::Result<KeyEvidence> {
        self.inner.prove_key(raw, ch)
    }
    fn quote(&self, nonce: &[u8], pcr: u8) -> anyhow::Result<palisade_attest::QuoteEvidence> {
        let mut first = self.first.lock().unwrap();
        if first.is_none() {
            *first = Some(self.inner.quote(nonce, pcr)?);
        }
        Ok(first.clone().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_quote_fails_attestation() {
    use palisade_agent::Keystore as _;
    let dir = tempfile::tempdir().unwrap();
    let Some(swtpm) = Swtpm::start(&dir.path().join("tpm")) else {
        return;
    };
    let server = server(dir.path(), &[]);
    tpm_meter_model(
        &server,
        &swtpm.vendor_ca,
        Some((dir.path(), "fw.bin", b"firmware")),
    );
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    let keys = palisade_agent::tpm::TpmKeystore::open(&swtpm.tcti(), &state).unwrap();
    palisade_agent::tpm::measure_boot(keys.tpm(), &state, b"firmware", "1.0").unwrap();
    assert!(keys.attester().is_some());

    let root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root, None).unwrap();
    let agent = palisade_agent::Agent::new(
        &state,
        std::sync::Arc::new(keys.clone()),
        est,
        std::sync::Arc::new(palisade_agent::SystemClock),
    );
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "meter"]);
    agent
        .enroll(&EnrollAuth::Token {
            device: "meter-r".into(),
            token: token.trim().into(),
        })
        .await
        .unwrap();
    let cfg = palisade_agent::session::SessionConfig {
        host: "127.0.0.1".into(),
        port: server.mqtt_port(),
        telemetry_every: Duration::from_secs(1),
        firmware: "1.0".into(),
        allowed_commands: vec![],
        attester: Some(std::sync::Arc::new(ReplayingAttester {
            inner: keys,
            first: std::sync::Mutex::new(None),
        })),
        update: None,
        metrics: None,
        wiper: None,
        journal: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let session = tokio::spawn(async move { agent.run_session(&cfg, stop_rx, || 0.5).await });
    let poll = |want: &'static str| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let d = tokio::task::block_in_place(|| device(server, "meter-r"));
                if d["attestation"] == want {
                    return d;
                }
                assert!(Instant::now() < deadline, "never {want}: {d}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // The first answer is genuine; the replay of it is caught.
    poll("ok").await;
    let d = poll("failed").await;
    assert!(
        d["attestation_detail"].as_str().unwrap().contains("nonce"),
        "{d}"
    );
    assert!(audit_has(&server, "attest.quote", "nonce"));
    let _ = stop_tx.send(true);
    let _ = session.await;
}
