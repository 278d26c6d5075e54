//! An EST request as the server parses it: path, Authorization header, content
//! type and body, then the CSR inside. Nothing may panic; a decoded body is
//! always within the size bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_est::{MAX_BODY, decode_pkcs10_body, parse_basic, parse_path};
use palisade_pki::{CsrLimits, verify_csr};

fuzz_target!(|data: &[u8]| {
    // Split the input into path | header | content type | body on 0xff bytes.
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let path = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("");
    let header = std::str::from_utf8(parts.next().unwrap_or_default()).unwrap_or("");
    let ct = std::str::from_utf8(parts.next().unwrap_or_default()).ok();
    let body = parts.next().unwrap_or_default();
    let _ = parse_path(path);
    let _ = parse_basic(header);
    if let Ok(der) = decode_pkcs10_body(ct, body) {
        assert!(der.len() <= MAX_BODY);
        let _ = verify_csr(&der, &CsrLimits::default());
    }
});
