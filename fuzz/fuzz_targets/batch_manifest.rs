//! Batch manifest files as `palisade batch import` reads them: any bytes, checked
//! against a fixed manufacturer CA, must be refused or verified without panicking.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_pki::verify_manifest;
use time::macros::datetime;

/// A fixed, syntactically valid CA certificate (DER, P-256, self-signed) so the
/// fuzzer reaches past the envelope into signature and entry checks.
fn ca() -> &'static [u8] {
    static CA: OnceLock<Vec<u8>> = OnceLock::new();
    CA.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("ca").der().to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = verify_manifest(data, "acme", ca(), datetime!(2026-11-26 12:00 UTC));
});
