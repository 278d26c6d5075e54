//! Site bundles as they travel: the bundle's JSON exactly as signed (base64)
//! and an Ed25519 signature over a domain tag and those bytes, by the control
//! plane's online policy key. An edge applies a bundle only if the signature
//! verifies with the key it pinned, the bundle is for its site, and it is
//! newer than the one it runs.

use palisade_core::signed::{EnvelopeError, open, seal};

use crate::site::SiteBundle;

const DOMAIN: &[u8] = b"palisade-site-bundle-v1\n";
/// Largest signed bundle accepted (100 000 devices with small policies).
pub const MAX_SIGNED_BYTES: usize = 64 << 20;

/// A bundle with its signature: the signed-payload envelope every online
/// signature of the control plane uses (`palisade_core::signed`).
pub type SignedBundle = palisade_core::signed::Signed;

/// Why an edge ignores a bundle (it keeps the last good one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle.
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    /// Not signed by the pinned policy key.
    #[error("bundle signature does not verify with the pinned policy key")]
    BadSignature,
    /// For another site.
    #[error("bundle is for site {0}, not this edge's")]
    OtherSite(String),
    /// Not newer than what runs (a replay or rollback).
    #[error("bundle version {got} is not newer than the applied {have}")]
    NotNewer {
        /// Received.
        got: u64,
        /// Applied.
        have: u64,
    },
}

impl From<EnvelopeError> for BundleError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Key(e) => BundleError::Malformed(format!("policy key: {e}")),
            EnvelopeError::Malformed(m) => BundleError::Malformed(m),
            EnvelopeError::BadSignature => BundleError::BadSignature,
        }
    }
}

/// Signs `b` with the policy key (PKCS#8 Ed25519).
pub fn sign(b: &SiteBundle, pkcs8: &[u8]) -> Result<SignedBundle, BundleError> {
    Ok(seal(DOMAIN, b, pkcs8)?)
}

/// The edge's check: signature, site, and newer than `applied`.
pub fn verify(
    s: &SignedBundle,
    public: &[u8],
    site: &str,
    applied: u64,
) -> Result<SiteBundle, BundleError> {
    let b: SiteBundle = open(DOMAIN, s, public, MAX_SIGNED_BYTES)?;
    if b.site != site {
        return Err(BundleError::OtherSite(b.site));
    }
    if b.version <= applied {
        return Err(BundleError::NotNewer {
            got: b.version,
            have: applied,
        });
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SiteSpec;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn bundle(site: &str, version: u64) -> SiteBundle {
        SiteBundle {
            site: site.into(),
            version,
            issued_ms: 0,
            spec: SiteSpec::new("10.0.0.1".parse().unwrap(), vec![], vec![]),
            blocked: vec![],
            devices: vec![],
        }
    }

    fn key() -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        (pkcs8.as_ref().to_vec(), kp.public_key().as_ref().to_vec())
    }

    #[test]
    fn an_edge_takes_only_newer_bundles_for_its_site_signed_by_the_pinned_key() {
        let (sk, pk) = key();
        let s = sign(&bundle("lab", 5), &sk).unwrap();
        assert_eq!(verify(&s, &pk, "lab", 4).unwrap().version, 5);
        assert_eq!(
            verify(&s, &pk, "lab", 5),
            Err(BundleError::NotNewer { got: 5, have: 5 })
        );
        assert_eq!(
            verify(&s, &pk, "plant", 0),
            Err(BundleError::OtherSite("lab".into()))
        );
        let (other, _) = key();
        let forged = sign(&bundle("lab", 9), &other).unwrap();
        assert_eq!(
            verify(&forged, &pk, "lab", 0),
            Err(BundleError::BadSignature)
        );
        // A payload swapped under a genuine signature.
        let swapped = SignedBundle {
            payload: sign(&bundle("lab", 99), &sk).unwrap().payload,
            signature: s.signature.clone(),
        };
        assert_eq!(
            verify(&swapped, &pk, "lab", 0),
            Err(BundleError::BadSignature)
        );
    }
}
