//! Signed director assignments as a device receives them: the check must never
//! panic and never accept one the director key did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_release::director::{SignedAssignment, verify_assignment};

fuzz_target!(|data: &[u8]| {
    // A public key nobody holds the private half of.
    let director = [0x22u8; 32];
    if let Ok(s) = serde_json::from_slice::<SignedAssignment>(data) {
        assert!(verify_assignment(&s, &director, "cam-1", 0, 0).is_err());
    }
});
