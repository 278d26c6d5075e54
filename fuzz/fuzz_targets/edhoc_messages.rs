//! Any bytes as EDHOC message_1 and message_3 to the server's responder, and
//! as a device's CCS credential: no panic; nothing made up completes a
//! session (the fuzzer cannot forge message_3's MAC), and a refused
//! message_3 leaves no session behind.
#![no_main]
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use palisade_coap::edhoc::{Responder, ServerIdentity, ccs_key};

fn identity() -> &'static ServerIdentity {
    static ID: OnceLock<ServerIdentity> = OnceLock::new();
    ID.get_or_init(|| ServerIdentity::from_secret(&[7; 32], "palisade").expect("a valid scalar"))
}

fuzz_target!(|data: &[u8]| {
    let _ = ccs_key(data);
    let mut r = Responder::new(identity()).expect("responder");
    let _ = r.message_1(data, Instant::now());
    let (c_r, m3) = data.split_at(data.len().min(4));
    if let Ok(claim) = r.message_3(c_r, m3) {
        assert!(claim.finish().is_err(), "a made-up message_3 verified");
    }
    let pending = r.pending();
    let _ = r.message_3(b"none", data);
    assert_eq!(r.pending(), pending);
});
