//! The PROXY protocol v2 header a balancer sends before each connection: the
//! length announced in the fixed part is bounded before anything more is
//! read, and any bytes parse to an address or a clear refusal, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_core::proxy::{self, FIXED_LEN, MAX_REST, Proxied};

fuzz_target!(|data: &[u8]| {
    if let Some(fixed) = data.get(..FIXED_LEN) {
        let fixed: [u8; FIXED_LEN] = fixed.try_into().unwrap_or([0; FIXED_LEN]);
        if let Ok(n) = proxy::rest_len(&fixed) {
            assert!(n <= MAX_REST);
        }
    }
    if let Ok(Proxied::From(a)) = proxy::parse(data) {
        // A source address only comes from a complete, bounded header.
        assert!(data.len() <= FIXED_LEN + MAX_REST);
        let _ = a.port();
    }
});
