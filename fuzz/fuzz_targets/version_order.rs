//! Version strings in each scheme (SemVer, PEP 440, dpkg, apk): parsing never
//! panics, and the order is consistent: antisymmetric, and equal to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_advisory::version::Scheme;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, "1.0"));
    for s in [
        Scheme::Semver,
        Scheme::Pep440,
        Scheme::Debian,
        Scheme::Alpine,
    ] {
        if let (Ok(x), Ok(y)) = (s.compare(a, b), s.compare(b, a)) {
            assert_eq!(x, y.reverse(), "{s:?}: {a:?} vs {b:?}");
        }
        if let Ok(o) = s.compare(a, a) {
            assert_eq!(o, std::cmp::Ordering::Equal);
        }
    }
    let _ = palisade_advisory::Package::from_purl(text);
});
