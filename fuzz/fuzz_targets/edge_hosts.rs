//! What an edge reads to find unmanaged hosts (`ip -j neigh` JSON, dnsmasq
//! lease files) and what the server accepts of an edge's report: never a
//! panic, never more than the bound, and every kept address on the site's
//! segments once filtered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_policy::hosts::{self, HostSeen, MAX_HOSTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = hosts::neighbours(data) {
        assert!(h.len() <= MAX_HOSTS);
    }
    let text = String::from_utf8_lossy(data);
    let l = hosts::leases(&text, 1_700_000_000);
    assert!(l.len() <= MAX_HOSTS);
    if let Ok(report) = serde_json::from_slice::<Vec<HostSeen>>(data) {
        for h in report {
            let h = h.checked();
            assert!(h.hostname.as_ref().is_none_or(|n| n.len() <= 63));
        }
    }
});
