//! Attestation requests and evidence as the server receives them (JSON bodies,
//! base64 TPM structures, EK certificates, boot event logs): every check must
//! refuse garbage without panicking, and never accept a quote or a
//! certification that the fixed attestation key below did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_attest::{
    ChallengeRequest, KeyEvidence, QuoteEvidence, check_ak, make_credential, unb64, verify_certify,
    verify_ek_certificate, verify_quote,
};

/// A well-formed AK public area (restricted ECC P-256 signer) with a point that
/// is not on the curve: no signature can verify under it.
fn ak() -> Vec<u8> {
    let mut v = vec![0x00, 0x23, 0x00, 0x0b];
    v.extend_from_slice(&(0x0005_0072u32).to_be_bytes()); // restricted|sign|fixed*|origin|userWithAuth
    v.extend_from_slice(&[
        0, 0, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b, 0x00, 0x03, 0x00, 0x10,
    ]);
    for c in [[1u8; 32], [2u8; 32]] {
        v.extend_from_slice(&[0, 32]);
        v.extend_from_slice(&c);
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = verify_ek_certificate(data, &[data.to_vec()], 1_800_000_000);
        let _ = make_credential(data, b"\x00\x0bname", b"secret");
        return;
    };
    let ak = check_ak(&ak()).expect("fixture AK");
    if let Ok(req) = serde_json::from_str::<ChallengeRequest>(text) {
        if let Ok(ek) = unb64("ek", &req.ek_certificate, 8192) {
            let _ = verify_ek_certificate(&ek, &[], 1_800_000_000);
        }
        if let Ok(p) = unb64("ak", &req.ak_public, 8192) {
            let _ = check_ak(&p);
        }
    }
    if let Ok(ev) = serde_json::from_str::<KeyEvidence>(text) {
        let f = |s: &str| unb64("f", s, 8192).unwrap_or_default();
        let r = verify_certify(
            &ak,
            &f(&ev.key_public),
            &f(&ev.certify_info),
            &f(&ev.certify_signature),
            b"n",
        );
        assert!(
            r.is_err(),
            "a certification verified under a key that cannot sign"
        );
    }
    if let Ok(ev) = serde_json::from_str::<QuoteEvidence>(text) {
        let f = |s: &str| unb64("f", s, 8192).unwrap_or_default();
        let r = verify_quote(
            &ak,
            &f(&ev.quote),
            &f(&ev.signature),
            &f(&ev.nonce),
            &ev.events,
            9,
        );
        assert!(r.is_err(), "a quote verified under a key that cannot sign");
        let _ = palisade_attest::replay(&ev.events, 9);
    }
});
