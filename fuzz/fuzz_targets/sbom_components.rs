//! A release's CycloneDX SBOM as the matcher reads it: any bytes give the
//! components (bounded in number and depth) or a clear refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_advisory::sbom::{MAX_COMPONENTS, components};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = components(data) {
        assert!(list.len() <= MAX_COMPONENTS);
    }
});
