//! The API's CSR field: PEM text then DER, as the issuance endpoint parses it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_pki::{CsrLimits, pem_to_der, verify_csr};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(der) = pem_to_der(text, "CERTIFICATE REQUEST")
    {
        let _ = verify_csr(&der, &CsrLimits::default());
    }
});
