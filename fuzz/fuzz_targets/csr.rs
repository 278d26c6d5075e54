//! CSR bytes from the network: verify_csr must never panic, and anything it
//! accepts must be within the limits and of an accepted key type.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_pki::{CsrLimits, KeyType, verify_csr};

fuzz_target!(|data: &[u8]| {
    let limits = CsrLimits::default();
    if let Ok(csr) = verify_csr(data, &limits) {
        assert!(data.len() <= limits.max_der_len);
        if let KeyType::Rsa(bits) = csr.key_type {
            assert!((limits.min_rsa_bits..=limits.max_rsa_bits).contains(&bits));
        }
    }
});
