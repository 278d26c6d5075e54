//! TPM structures from devices (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE): the
//! parsers must never panic, and what they accept must be internally sound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_attest::wire::{Attest, Attested, EccPublic, EcdsaSignature};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = EccPublic::parse(data) {
        assert_eq!(p.point.len(), 65);
        assert_eq!(p.point[0], 0x04);
        assert_eq!(p.name().len(), 34);
        assert_eq!(p.bytes, data);
        // A point that parses is checked (not trusted) when a signature is verified.
        let _ = EcdsaSignature {
            hash: 0x000b,
            fixed: vec![1; 64],
        }
        .verify(&p, b"msg");
    }
    if let Ok(a) = Attest::parse(data) {
        assert_eq!(a.bytes, data);
        if let Attested::Quote { selection, .. } = &a.attested {
            assert!(selection.len() <= 16);
            assert!(selection.iter().all(|s| s.pcrs.iter().all(|p| *p < 64)));
        }
    }
    if let Ok(s) = EcdsaSignature::parse(data) {
        assert_eq!(s.fixed.len(), 64);
    }
});
