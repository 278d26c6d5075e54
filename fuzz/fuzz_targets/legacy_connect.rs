//! CONNECT packets from legacy (plaintext MQTT) devices at the edge: parsing
//! must never panic, and what parses rewrites into a CONNECT that parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_mqtt::bridge::{parse_connect, upstream_connect};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_connect(data) {
        let up = upstream_connect(&c, "lamp-1");
        assert_eq!(parse_connect(&up[2..]), Ok(c));
    }
});
