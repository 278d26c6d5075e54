//! `pkcs11:` URIs from configuration and agent flags: the parser must never
//! panic; what it accepts prints without the PIN and parses back to the same
//! token, object and module.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_keystore::pkcs11::Pkcs11Uri;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = Pkcs11Uri::parse(text) {
        let shown = uri.to_string();
        // Values are percent-encoded, so `pin-value=` can only be the real key.
        assert!(!shown.contains("pin-value=") || shown.contains("pin-value=(hidden)"));
        if shown.len() > palisade_keystore::pkcs11::MAX_URI_LEN {
            return;
        }
        let back = Pkcs11Uri::parse(&shown).expect("display output parses");
        assert_eq!(back.token, uri.token);
        assert_eq!(back.serial, uri.serial);
        assert_eq!(back.slot_id, uri.slot_id);
        assert_eq!(back.object, uri.object);
        assert_eq!(back.id, uri.id);
        assert_eq!(back.module_path, uri.module_path);
        assert_eq!(back.pin_source, uri.pin_source);
    }
});
