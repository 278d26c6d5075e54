//! Names from API bodies and paths: whatever a parser accepts must be safe to put
//! into a certificate subject, a topic and a file name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_core::{DeviceId, ModelId, OperatorName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for accepted in [
        DeviceId::parse(text).map(|i| i.to_string()),
        ModelId::parse(text).map(|i| i.to_string()),
        OperatorName::parse(text).map(|i| i.to_string()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!accepted.is_empty() && accepted.len() <= 64);
        assert!(!accepted.contains(".."));
        assert!(accepted.bytes().all(|b| b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'.' | b'_' | b'-')));
    }
});
