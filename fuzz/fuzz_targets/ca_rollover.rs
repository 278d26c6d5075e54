//! A device taking on roots from an EST `cacerts` bundle: any bytes offered
//! as certificates are parsed without a panic, and no root is ever accepted
//! but the trusted one and a new root whose certificate by the trusted root
//! (made here, with keys made at start) is in the bundle — the fuzzer cannot
//! forge that signature, so nothing it makes up is trusted.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use palisade_core::KeyAlgorithm;
use palisade_keystore::SoftwareKey;
use palisade_pki::{CertificateAuthority, Serial, accepted_roots};
use time::{Duration, OffsetDateTime, macros::datetime};

const NOW: OffsetDateTime = datetime!(2026-12-08 12:00 UTC);

struct Kit {
    old: Vec<u8>,
    new: Vec<u8>,
    cross: Vec<u8>,
}

fn root(cn: &str) -> CertificateAuthority {
    let rng = ring::rand::SystemRandom::new();
    let key = Arc::new(
        SoftwareKey::generate(KeyAlgorithm::EcdsaP256, "fuzz")
            .expect("key")
            .0,
    );
    CertificateAuthority::create_root(
        key,
        "Fuzz",
        cn,
        NOW - Duration::days(1),
        Duration::days(3650),
        &Serial::random(&rng).expect("serial"),
    )
    .expect("root")
}

fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let old = root("Root CA");
        let new = root("Root CA 2");
        let cross = old
            .cross_certify(
                new.certificate_der(),
                1,
                &Serial::random(&rng).expect("serial"),
                NOW,
            )
            .expect("cross");
        Kit {
            old: old.certificate_der().to_vec(),
            new: new.certificate_der().to_vec(),
            cross: cross.der,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let kit = kit();
    let mut offered = vec![];
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 2 && offered.len() < 16 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        offered.push(rest[2..2 + n].to_vec());
        rest = &rest[2 + n..];
    }
    match data.first() {
        Some(1) => offered.push(kit.new.clone()),
        Some(2) => {
            offered.push(kit.new.clone());
            offered.push(kit.cross.clone());
        }
        Some(3) => offered.push(kit.old.clone()),
        _ => {}
    }
    let got = accepted_roots(std::slice::from_ref(&kit.old), &offered, NOW);
    for r in &got {
        assert!(offered.contains(r), "accepted a root that was not offered");
        assert!(
            *r == kit.old || (*r == kit.new && offered.contains(&kit.cross)),
            "accepted a root no trusted root vouches for"
        );
    }
});
