//! An OSV record from an advisory feed: any bytes are a bounded record or a
//! clear refusal; an accepted record is evaluated against a package without
//! panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_advisory::osv::{MAX_AFFECTED, parse_record};
use palisade_advisory::{Package, affected_by};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_record(data) {
        assert!(r.affected.len() <= MAX_AFFECTED && !r.id.is_empty());
        for a in r.affected.iter().take(8) {
            if let Some(p) = &a.package {
                let pkg = Package::from_osv(p);
                for v in ["0", "1.0.0", "1:2.3-4", "1.0rc1"] {
                    let _ = affected_by(&r, &pkg, v);
                }
            }
        }
    }
});
