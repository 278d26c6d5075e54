//! A payload another node sent through PostgreSQL NOTIFY: any bytes are a
//! cross-node event or a clear refusal, never a panic; what is accepted is
//! within the limit and reads back the same after writing it again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_core::cluster::{MAX_NOTIFY_BYTES, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(env) = decode(text) {
        assert!(text.len() <= MAX_NOTIFY_BYTES);
        if let Ok(again) = encode(&env) {
            assert_eq!(decode(&again).ok(), Some(env));
        }
    }
});
