//! Checkpoint notes and verifier keys from a server or a file: parsing and
//! verification must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_audit::NoteVerifier;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = NoteVerifier::parse(text);
    if let Ok(key) = NoteVerifier::new("fuzz.example/log", &[7u8; 32]) {
        let _ = key.verify(text, Some("fuzz.example/log"));
    }
});
