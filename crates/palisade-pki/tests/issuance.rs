//! Issuance, CSR checks and CRLs against keys made at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use palisade_core::{KeyAlgorithm, Signer};
use palisade_keystore::SoftwareKey;
use palisade_pki::*;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use ring::rand::SystemRandom;
use time::{Duration, OffsetDateTime, macros::datetime};

const NOW: OffsetDateTime = datetime!(2026-11-26 12:00 UTC);

fn key(alg: KeyAlgorithm) -> Arc<dyn Signer> {
    Arc::new(SoftwareKey::generate(alg, "test").unwrap().0)
}

fn cas() -> (CertificateAuthority, CertificateAuthority) {
    let rng = SystemRandom::new();
    let root = CertificateAuthority::create_root(
        key(KeyAlgorithm::EcdsaP256),
        "Test Fleet",
        "Test Root",
        NOW,
        Duration::days(3650),
        &Serial::random(&rng).unwrap(),
    )
    .unwrap();
    let ikey = key(KeyAlgorithm::EcdsaP256);
    let spki = ikey.spki_der();
    let issued = root
        .issue(
            &IssueRequest {
                profile: Profile::Intermediate,
                common_name: "Test Issuing CA",
                sans: vec![],
                spki_der: &spki,
                validity: Duration::days(1825),
                crl_url: None,
            },
            "Test Fleet",
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    let inter = CertificateAuthority::from_parts(issued.der, ikey).unwrap();
    (root, inter)
}

fn csr_with(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

#[test]
fn issues_a_device_certificate_that_chains_to_the_root() {
    let (root, inter) = cas();
    let device_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    let csr = verify_csr(&csr_with(&params, &device_key), &CsrLimits::default()).unwrap();
    assert_eq!(csr.key_type, KeyType::EcdsaP256);
    let rng = SystemRandom::new();
    let issued = inter
        .issue(
            &IssueRequest {
                profile: Profile::DeviceIdentity,
                common_name: "sensor-1",
                sans: vec![San::Uri("urn:palisade:device:sensor-1".into())],
                spki_der: &csr.spki_der,
                validity: Duration::days(90),
                crl_url: None,
            },
            "Test Fleet",
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    // The subject comes from policy, never from the CSR.
    assert!(issued.info.subject.contains("CN=sensor-1"));
    assert!(!issued.info.subject.contains("admin"));
    assert!(issued.info.serial_hex.len() >= 32, "at least 128 bits");
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
    let (_, ica) = x509_parser::parse_x509_certificate(inter.certificate_der()).unwrap();
    let (_, rca) = x509_parser::parse_x509_certificate(root.certificate_der()).unwrap();
    leaf.verify_signature(Some(ica.public_key())).unwrap();
    ica.verify_signature(Some(rca.public_key())).unwrap();
    let sans = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        sans.value.general_names.len(),
        1,
        "no SAN copied from the CSR"
    );
}

#[test]
fn validity_is_bounded_by_the_issuer() {
    let (_, inter) = cas();
    let k = key(KeyAlgorithm::Ed25519);
    let spki = k.spki_der();
    let issued = inter
        .issue(
            &IssueRequest {
                profile: Profile::DeviceIdentity,
                common_name: "d",
                sans: vec![],
                spki_der: &spki,
                validity: Duration::days(100_000),
                crl_url: None,
            },
            "Test Fleet",
            &Serial::random(&SystemRandom::new()).unwrap(),
            NOW,
        )
        .unwrap();
    assert_eq!(issued.info.not_after, inter.info().not_after);
    let late = inter.info().not_after + Duration::seconds(1);
    let err = inter
        .issue(
            &IssueRequest {
                profile: Profile::DeviceIdentity,
                common_name: "d",
                sans: vec![],
                spki_der: &spki,
                validity: Duration::days(1),
                crl_url: None,
            },
            "Test Fleet",
            &Serial::random(&SystemRandom::new()).unwrap(),
            late,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::IssuerNotValid { .. }));
}

#[test]
fn accepts_csrs_with_a_subject_key_identifier_and_every_allowed_key_type() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let k = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        // subjectKeyIdentifier (2.5.29.14) = OCTET STRING of 20 bytes.
        let mut ski = vec![0x04, 20];
        ski.extend_from_slice(&[7u8; 20]);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 14], ski));
        verify_csr(&csr_with(&params, &k), &CsrLimits::default()).unwrap();
    }
}

#[test]
fn refuses_a_csr_whose_signature_does_not_verify() {
    let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut der = csr_with(&CertificateParams::new(vec![]).unwrap(), &k);
    let n = der.len();
    der[n - 3] ^= 0x55;
    assert!(matches!(
        verify_csr(&der, &CsrLimits::default()),
        Err(CsrError::BadSignature | CsrError::Malformed(_))
    ));
}

#[test]
fn refuses_oversized_truncated_and_garbage_csrs() {
    let limits = CsrLimits::default();
    assert!(matches!(
        verify_csr(&vec![0x30; 9000], &limits),
        Err(CsrError::TooLarge { .. })
    ));
    let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let der = csr_with(&CertificateParams::new(vec![]).unwrap(), &k);
    for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
        assert!(verify_csr(&der[..cut], &limits).is_err());
    }
    let mut trailing = der.clone();
    trailing.push(0);
    assert_eq!(
        verify_csr(&trailing, &limits).unwrap_err(),
        CsrError::TrailingData(1)
    );
}

#[test]
fn crl_lists_revoked_serials_with_reasons() {
    let (_, inter) = cas();
    let serial = Serial::random(&SystemRandom::new()).unwrap();
    let der = inter
        .crl(
            &[CrlEntry {
                serial_hex: serial.to_hex(),
                revoked_at: NOW,
                reason: RevocationReason::KeyCompromise,
            }],
            7,
            NOW,
            NOW + Duration::hours(24),
        )
        .unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), 1);
    let r = crl.iter_revoked_certificates().next().unwrap();
    assert_eq!(hex::encode(r.raw_serial()), serial.to_hex());
    assert!(crl.next_update().is_some());
    let (_, ica) = x509_parser::parse_x509_certificate(inter.certificate_der()).unwrap();
    crl.verify_signature(ica.public_key()).unwrap();
}

#[test]
fn serial_hex_round_trips() {
    let s = Serial::random(&SystemRandom::new()).unwrap();
    assert_eq!(Serial::from_hex(&s.to_hex()).unwrap(), s);
    assert!(Serial::from_hex("zz").is_none());
    assert!(Serial::from_hex(&"00".repeat(21)).is_none());
}

fn manufacturer() -> (CertificateAuthority, Arc<dyn Signer>) {
    let key = key(KeyAlgorithm::EcdsaP256);
    let ca = CertificateAuthority::create_root(
        key.clone(),
        "Acme Devices",
        "Acme Manufacturer CA",
        NOW,
        Duration::days(7300),
        &Serial::random(&SystemRandom::new()).unwrap(),
    )
    .unwrap();
    (ca, key)
}

fn idevid(ca: &CertificateAuthority, serial: &str) -> ManifestDevice {
    let k = key(KeyAlgorithm::EcdsaP256);
    let spki = k.spki_der();
    let issued = ca
        .issue(
            &IssueRequest {
                profile: Profile::BirthIdentity,
                common_name: serial,
                sans: vec![],
                spki_der: &spki,
                validity: Duration::days(7000),
                crl_url: None,
            },
            "Acme Devices",
            &Serial::random(&SystemRandom::new()).unwrap(),
            NOW,
        )
        .unwrap();
    ManifestDevice {
        serial: serial.into(),
        idevid_sha256: sha256_hex(&issued.der),
        public_key_sha256: sha256_hex(&spki),
        certificate_pem: pem::encode(&pem::Pem::new("CERTIFICATE", issued.der)),
    }
}

fn body(ca: &CertificateAuthority) -> ManifestBody {
    ManifestBody {
        version: 1,
        supplier: "acme".into(),
        model: "thermo".into(),
        created_ms: 1,
        devices: (0..3).map(|i| idevid(ca, &format!("sn{i}"))).collect(),
    }
}

#[test]
fn a_signed_batch_manifest_verifies_against_its_manufacturer_ca() {
    let (ca, key) = manufacturer();
    let file = sign_manifest(&body(&ca), &*key).unwrap();
    let v = verify_manifest(file.as_bytes(), "acme", ca.certificate_der(), NOW).unwrap();
    assert_eq!(v.devices.len(), 3);
    assert_eq!(v.id.len(), 64);
}

#[test]
fn refuses_a_manifest_with_a_bad_signature_or_a_changed_entry() {
    let (ca, key) = manufacturer();
    let (other_ca, other_key) = manufacturer();
    // Signed by another supplier's key.
    let forged = sign_manifest(&body(&ca), &*other_key).unwrap();
    assert_eq!(
        verify_manifest(forged.as_bytes(), "acme", ca.certificate_der(), NOW).unwrap_err(),
        ManifestError::BadSignature("acme".into())
    );
    // An entry changed after signing.
    let file = sign_manifest(&body(&ca), &*key).unwrap();
    let mut env: SignedManifest = serde_json::from_str(&file).unwrap();
    let mut b: ManifestBody = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &env.payload).unwrap(),
    )
    .unwrap();
    b.devices[1].serial = "sn9".into();
    env.payload = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::to_vec(&b).unwrap(),
    );
    let changed = serde_json::to_string(&env).unwrap();
    assert!(matches!(
        verify_manifest(changed.as_bytes(), "acme", ca.certificate_der(), NOW),
        Err(ManifestError::BadSignature(_))
    ));
    // Correctly signed, but an IDevID from another manufacturer CA.
    let mut mixed = body(&ca);
    mixed.devices[0] = idevid(&other_ca, "sn0");
    let file = sign_manifest(&mixed, &*key).unwrap();
    assert!(matches!(
        verify_manifest(file.as_bytes(), "acme", ca.certificate_der(), NOW),
        Err(ManifestError::Device { .. })
    ));
    for junk in [&b"{}"[..], b"not json", b""] {
        assert!(verify_manifest(junk, "acme", ca.certificate_der(), NOW).is_err());
    }
}

fn root_named(cn: &str) -> CertificateAuthority {
    CertificateAuthority::create_root(
        key(KeyAlgorithm::EcdsaP256),
        "Test Fleet",
        cn,
        NOW,
        Duration::days(30),
        &Serial::random(&SystemRandom::new()).unwrap(),
    )
    .unwrap()
}

#[test]
fn a_cross_certificate_names_the_other_ca_exactly_and_carries_its_key() {
    let rng = SystemRandom::new();
    let (old, issuing) = cas();
    let new = root_named("Test Root 2");
    let x = old
        .cross_certify(
            new.certificate_der(),
            1,
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    let (_, xc) = x509_parser::parse_x509_certificate(&x.der).unwrap();
    let (_, nc) = x509_parser::parse_x509_certificate(new.certificate_der()).unwrap();
    let (_, oc) = x509_parser::parse_x509_certificate(old.certificate_der()).unwrap();
    assert_eq!(xc.subject().as_raw(), nc.subject().as_raw());
    assert_eq!(xc.issuer().as_raw(), oc.subject().as_raw());
    assert_eq!(xc.public_key().raw, nc.public_key().raw);
    xc.verify_signature(Some(oc.public_key())).unwrap();
    assert_eq!(x.issuer_serial, old.info().serial_hex);
    // Never outlasts either CA.
    assert!(x.info.not_after <= new.info().not_after && x.info.not_after <= old.info().not_after);
    // An end-entity certificate cannot be cross-certified.
    let leaf_key = key(KeyAlgorithm::EcdsaP256);
    let leaf = issuing
        .issue(
            &IssueRequest {
                profile: Profile::DeviceIdentity,
                common_name: "dev-1",
                sans: vec![],
                spki_der: &leaf_key.spki_der(),
                validity: Duration::days(1),
                crl_url: None,
            },
            "Test Fleet",
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    assert!(matches!(
        old.cross_certify(&leaf.der, 0, &Serial::random(&rng).unwrap(), NOW),
        Err(CaError::NotCa(_))
    ));
}

#[test]
fn a_new_root_is_taken_only_with_a_certificate_from_a_trusted_root() {
    let rng = SystemRandom::new();
    let old = root_named("Root CA");
    let new = root_named("Root CA 2");
    let stranger = root_named("Root CA 3");
    let trusted = vec![old.certificate_der().to_vec()];
    let new_with_old = old
        .cross_certify(
            new.certificate_der(),
            1,
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    // Offered alone, the new root is ignored.
    let alone = vec![
        old.certificate_der().to_vec(),
        new.certificate_der().to_vec(),
    ];
    assert_eq!(accepted_roots(&trusted, &alone, NOW), trusted);
    // With its certificate by the old root, it is taken.
    let mut bundle = alone.clone();
    bundle.push(new_with_old.der.clone());
    let got = accepted_roots(&trusted, &bundle, NOW);
    assert_eq!(got.len(), 2);
    assert!(got.contains(&new.certificate_der().to_vec()));
    // A root vouched for by a root the device does not trust is not.
    let by_stranger = stranger
        .cross_certify(
            new.certificate_der(),
            1,
            &Serial::random(&rng).unwrap(),
            NOW,
        )
        .unwrap();
    let bundle = vec![new.certificate_der().to_vec(), by_stranger.der];
    assert!(accepted_roots(&trusted, &bundle, NOW).is_empty());
    // Nor once the vouching certificate has expired.
    let mut bundle = alone;
    bundle.push(new_with_old.der);
    assert!(accepted_roots(&trusted, &bundle, NOW + Duration::days(60)).is_empty());
}
