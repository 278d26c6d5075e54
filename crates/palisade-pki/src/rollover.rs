//! Root rollover on the device side: which roots offered by the control plane
//! (EST `cacerts`) a device may add to its trust.
//!
//! A device already trusts some roots. The control plane offers a bundle of CA
//! certificates; a self-signed root in it is accepted only if it is already
//! trusted, or if the bundle also holds a certificate of that same root (same
//! subject, same key) signed by a root the device already trusts and valid now
//! — RFC 4210's new-with-old certificate. The bundle itself is not trusted
//! (the TLS session it came over is, but a device does not take on a new root
//! on that alone): a stolen TLS key would not let anyone plant a root.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

fn parse(der: &[u8]) -> Option<X509Certificate<'_>> {
    X509Certificate::from_der(der).ok().map(|(_, c)| c)
}

fn valid_at(c: &X509Certificate<'_>, now: OffsetDateTime) -> bool {
    let v = c.validity();
    v.not_before.to_datetime() <= now && now <= v.not_after.to_datetime()
}

fn self_signed(c: &X509Certificate<'_>) -> bool {
    c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok()
}

/// The roots in `offered` to trust, given the roots `trusted` now: those
/// already trusted and those vouched for by a trusted root (see the module
/// documentation). Anything else offered is ignored.
pub fn accepted_roots(
    trusted: &[Vec<u8>],
    offered: &[Vec<u8>],
    now: OffsetDateTime,
) -> Vec<Vec<u8>> {
    let anchors: Vec<X509Certificate<'_>> = trusted.iter().filter_map(|d| parse(d)).collect();
    // Each offered certificate is parsed once.
    let parsed: Vec<(&Vec<u8>, X509Certificate<'_>)> = offered
        .iter()
        .filter_map(|d| parse(d).map(|c| (d, c)))
        .collect();
    let mut out = vec![];
    for (der, root) in &parsed {
        if !self_signed(root) || !root.is_ca() || !valid_at(root, now) {
            continue;
        }
        if trusted.contains(der) {
            out.push((*der).clone());
            continue;
        }
        let vouched = parsed.iter().any(|(_, cross)| {
            cross.subject().as_raw() == root.subject().as_raw()
                && cross.public_key().raw == root.public_key().raw
                && cross.is_ca()
                && valid_at(cross, now)
                && anchors.iter().any(|a| {
                    cross.issuer().as_raw() == a.subject().as_raw()
                        && valid_at(a, now)
                        && cross.verify_signature(Some(a.public_key())).is_ok()
                })
        });
        if vouched && !out.contains(*der) {
            out.push((*der).clone());
        }
    }
    out
}
