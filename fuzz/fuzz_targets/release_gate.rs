//! Release uploads: DSSE provenance envelopes and CycloneDX SBOMs from
//! suppliers. The gate must never panic and never accept provenance under a
//! key that did not sign it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_release::{SupplierKey, check_provenance, check_sbom};

fuzz_target!(|data: &[u8]| {
    // A fixed Ed25519 key nobody holds the private half of (all-0x11 point).
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&[0x11; 32]);
    let key = SupplierKey::from_spki_der(&spki).expect("fixture key");
    let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
    assert!(check_provenance(data, sha, &[key], "fuzz").is_err());
    let _ = check_sbom(data);
    let _ = SupplierKey::from_spki_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SupplierKey::from_pem(text);
    }
});
