//! Signed site bundles as an edge receives them: the check must never panic
//! and never accept one the policy key did not sign.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_policy::signed::{SignedBundle, verify};

fuzz_target!(|data: &[u8]| {
    let key = [0x33u8; 32]; // nobody holds its private half
    if let Ok(s) = serde_json::from_slice::<SignedBundle>(data) {
        assert!(verify(&s, &key, "s", 0).is_err());
    }
});
