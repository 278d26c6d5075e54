//! The TPM 2.0 building blocks against real `swtpm` instances: the device side
//! (palisade-tpm, through tss-esapi) produces evidence and the server side
//! (palisade-attest, pure Rust) checks it. `tpm2-tools` reads the TPM
//! independently. Every bad-evidence case the server must refuse is shown to
//! be refused here, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_attest::boot::{BootEvent, FIRMWARE_PCR, replay};
use palisade_attest::{
    AttestError, check_ak, make_credential, verify_certify, verify_ek_certificate, verify_quote,
};
use palisade_core::Signer;
use palisade_interop::*;
use palisade_tpm::{Tpm, TpmKey};

fn now() -> i64 {
    palisade_core::Clock::now_ms(&palisade_core::SystemClock) / 1000
}

struct Dev {
    swtpm: Swtpm,
    tpm: Tpm,
    _dir: tempfile::TempDir,
}

fn device() -> Option<Dev> {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path())?;
    let tpm = Tpm::open(&swtpm.tcti()).unwrap();
    Some(Dev {
        swtpm,
        tpm,
        _dir: dir,
    })
}

fn refused(r: Result<impl std::fmt::Debug, AttestError>, needle: &str) {
    let e = r.expect_err("must be refused");
    assert!(e.to_string().contains(needle), "{e} (wanted {needle:?})");
}

#[test]
fn ek_ak_activation_certify_and_quote_verify_end_to_end() {
    let Some(d) = device() else { return };
    let vendor = vec![d.swtpm.vendor_ca_der()];

    // 1. The EK certificate chains to the vendor CA.
    let ek_der = d.tpm.ek_certificate().unwrap();
    let ek = verify_ek_certificate(&ek_der, &vendor, now()).unwrap();
    assert!(ek.issuer.contains("swtpm-localca"), "{}", ek.issuer);

    // 2. The AK is bound to the EK by credential activation.
    let ak_blob = d.tpm.create_attestation_key().unwrap();
    let ak = check_ak(&ak_blob.public).unwrap();
    let cred = make_credential(
        &ek.rsa_pkcs1,
        &ak.name(),
        b"server-chosen-secret-0123456789",
    )
    .unwrap();
    let secret = d
        .tpm
        .activate_credential(&ak_blob, &cred.id_object, &cred.encrypted_secret)
        .unwrap();
    assert_eq!(secret, b"server-chosen-secret-0123456789");

    // 3. The identity key is certified TPM-resident and non-exportable.
    let key_blob = d.tpm.create_signing_key(false).unwrap();
    let nonce = b"nonce-for-certify";
    let (info, sig) = d.tpm.certify(&key_blob, &ak_blob, nonce).unwrap();
    let key = verify_certify(&ak, &key_blob.public, &info, &sig, nonce).unwrap();
    let signer = TpmKey::new(d.tpm.clone(), key_blob.clone(), "identity").unwrap();
    assert_eq!(signer.spki_der(), key.spki_der());
    // The key signs inside the TPM, and ring verifies the signature.
    let msg = b"a TLS handshake transcript";
    let der = signer.sign(msg).unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        signer.public_key_raw(),
    )
    .verify(msg, &der)
    .expect("TPM signature verifies");

    // 4. Measured boot: extend, quote, replay the log.
    let event = BootEvent::firmware(b"firmware image 1.0", "1.0");
    d.tpm
        .extend_pcr(FIRMWARE_PCR, event.digest_bytes().unwrap())
        .unwrap();
    let events = vec![event.clone()];
    // tpm2-tools reads the same PCR value that the log replays to.
    if have("tpm2_pcrread") {
        let o = std::process::Command::new("tpm2_pcrread")
            .args(["-T", &d.swtpm.tcti(), &format!("sha256:{FIRMWARE_PCR}")])
            .output()
            .unwrap();
        let t = text(&o).to_lowercase();
        assert!(o.status.success(), "{t}");
        let want = hex(&replay(&events, FIRMWARE_PCR).unwrap());
        assert!(t.contains(&want), "tpm2_pcrread: {t} (wanted {want})");
    }
    let (quote, qsig) = d.tpm.quote(&ak_blob, b"quote-nonce", FIRMWARE_PCR).unwrap();
    let found = verify_quote(&ak, &quote, &qsig, b"quote-nonce", &events, FIRMWARE_PCR).unwrap();
    assert_eq!(found.firmware, Some(event));
    assert_eq!(
        hex(&d.tpm.read_pcr(FIRMWARE_PCR).unwrap()),
        hex(&replay(&events, FIRMWARE_PCR).unwrap())
    );

    // Bad input, each refused with its reason:
    // a replayed quote (wrong nonce),
    refused(
        verify_quote(&ak, &quote, &qsig, b"another-nonce", &events, FIRMWARE_PCR),
        "nonce",
    );
    // a log that does not match the PCR (the device booted something else),
    let lie = vec![BootEvent::firmware(b"the approved image", "1.0")];
    refused(
        verify_quote(&ak, &quote, &qsig, b"quote-nonce", &lie, FIRMWARE_PCR),
        "does not match the event log",
    );
    // a forged quote (one bit changed),
    let mut forged = quote.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    refused(
        verify_quote(&ak, &forged, &qsig, b"quote-nonce", &events, FIRMWARE_PCR),
        "signature does not verify",
    );
    // a certification replayed for another challenge,
    refused(
        verify_certify(&ak, &key_blob.public, &info, &sig, b"other nonce"),
        "nonce",
    );
    // a certification of a different key than the one presented,
    let other_key = d.tpm.create_signing_key(false).unwrap();
    refused(
        verify_certify(&ak, &other_key.public, &info, &sig, nonce),
        "not the key presented",
    );
    // a TPM2_Certify over an exportable key,
    let exportable = d.tpm.create_signing_key(true).unwrap();
    let (xinfo, xsig) = d.tpm.certify(&exportable, &ak_blob, nonce).unwrap();
    refused(
        verify_certify(&ak, &exportable.public, &xinfo, &xsig, nonce),
        "exportable",
    );
    // an identity key offered as an attestation key.
    refused(check_ak(&key_blob.public), "restricted");
}

#[test]
fn evidence_from_another_tpm_or_an_unknown_vendor_is_refused() {
    let Some(a) = device() else { return };
    let Some(b) = device() else { return };
    let vendor_a = vec![a.swtpm.vendor_ca_der()];

    // An EK certificate from a vendor CA nobody registered.
    let ek_b = b.tpm.ek_certificate().unwrap();
    refused(
        verify_ek_certificate(&ek_b, &vendor_a, now()),
        "not a registered TPM vendor CA",
    );

    // An AK that is not in the TPM of the EK: TPM A's EK, TPM B's AK. Only TPM A
    // can unwrap the credential, and it will not release it to a key it does
    // not hold; TPM B cannot unwrap it at all.
    let ek_a = verify_ek_certificate(&a.tpm.ek_certificate().unwrap(), &vendor_a, now()).unwrap();
    let ak_b_blob = b.tpm.create_attestation_key().unwrap();
    let ak_b = check_ak(&ak_b_blob.public).unwrap();
    let cred = make_credential(&ek_a.rsa_pkcs1, &ak_b.name(), b"secret").unwrap();
    assert!(
        b.tpm
            .activate_credential(&ak_b_blob, &cred.id_object, &cred.encrypted_secret)
            .is_err(),
        "TPM B must not recover a secret wrapped to TPM A's EK"
    );
    let ak_a_blob = a.tpm.create_attestation_key().unwrap();
    assert!(
        a.tpm
            .activate_credential(&ak_a_blob, &cred.id_object, &cred.encrypted_secret)
            .is_err(),
        "TPM A must not release a credential made for another key's name"
    );

    // A quote from another TPM: signed by B's AK, checked against A's.
    let ak_a = check_ak(&ak_a_blob.public).unwrap();
    let (quote, sig) = b.tpm.quote(&ak_b_blob, b"n", FIRMWARE_PCR).unwrap();
    refused(
        verify_quote(&ak_a, &quote, &sig, b"n", &[], FIRMWARE_PCR),
        "signature does not verify",
    );
}

#[test]
fn pcrs_start_from_zero_after_a_power_cycle() {
    let Some(mut d) = device() else { return };
    d.tpm.extend_pcr(FIRMWARE_PCR, [7; 32]).unwrap();
    assert_ne!(d.tpm.read_pcr(FIRMWARE_PCR).unwrap(), [0; 32]);
    drop(d.tpm);
    d.swtpm.power_off();
    d.swtpm.power_on();
    let tpm = Tpm::open(&d.swtpm.tcti()).unwrap();
    assert_eq!(tpm.read_pcr(FIRMWARE_PCR).unwrap(), [0; 32]);
}

/// The installer's anti-rollback floor in the TPM's NV counter: it only goes
/// up, survives a power cycle, and `tpm2_nvread` reads the same value.
#[test]
fn the_anti_rollback_floor_in_an_nv_counter_only_goes_up() {
    use palisade_agent::ota::Floor;
    let Some(mut d) = device() else { return };
    drop(d.tpm);
    let floor = palisade_agent::tpm::TpmFloor::open(&d.swtpm.tcti()).unwrap();
    assert_eq!(floor.get().unwrap(), 0);
    floor.raise(3).unwrap();
    assert_eq!(floor.get().unwrap(), 3);
    floor.raise(2).unwrap(); // never lowered
    assert_eq!(floor.get().unwrap(), 3);
    floor.raise(5).unwrap();
    drop(floor);
    d.swtpm.power_off();
    d.swtpm.power_on();
    let floor = palisade_agent::tpm::TpmFloor::open(&d.swtpm.tcti()).unwrap();
    assert_eq!(floor.get().unwrap(), 5);
    drop(floor);
    if have("tpm2_nvread") {
        let o = std::process::Command::new("tpm2_nvread")
            .args(["-T", &d.swtpm.tcti(), "-C", "o", "-s", "8"])
            .arg(format!("{:#x}", palisade_tpm::FLOOR_NV_INDEX))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(o.stdout, 5u64.to_be_bytes(), "{}", text(&o));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
