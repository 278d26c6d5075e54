//! A supplier's VEX document (CSAF 2.0 VEX or CycloneDX VEX): any bytes are
//! statements within bounds or a clear refusal, never a panic; a
//! `not_affected` statement always carries its justification.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_advisory::vex::{MAX_STATEMENTS, Status, parse};

fuzz_target!(|data: &[u8]| {
    let sbom = palisade_advisory::components(
        br#"{"bomFormat":"CycloneDX","components":[{"bom-ref":"r","name":"a","purl":"pkg:pypi/a@1"}]}"#,
    )
    .unwrap_or_default();
    if let Ok(list) = parse(data, &sbom) {
        assert!(list.len() <= MAX_STATEMENTS);
        for s in &list {
            assert!(s.status != Status::NotAffected || s.justification.is_some());
        }
    }
});
