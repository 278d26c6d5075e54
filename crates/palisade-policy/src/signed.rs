//! Site bundles as they travel: the bundle's JSON exactly as signed (base64)
//! and an Ed25519 signature over a domain tag and those bytes, by the control
//! plane's online policy key. An edge applies a bundle only if the signature
//! verifies with the key it pinned, the bundle is for its site, and it is
//! newer than the one it runs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::site::SiteBundle;

const DOMAIN: &[u8] = b"palisade-site-bundle-v1\n";
/// Largest signed bundle accepted (100 000 devices with small policies).
pub const MAX_SIGNED_BYTES: usize = 64 << 20;

/// A bundle with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// The bundle's JSON, base64.
    pub payload: String,
    /// Ed25519 over the domain tag and the payload bytes, base64.
    pub signature: String,
}

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

/// Signs `b` with the policy key (PKCS#8 Ed25519).
pub fn sign(b: &SiteBundle, pkcs8: &[u8]) -> Result<SignedBundle, BundleError> {
    let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|e| BundleError::Malformed(format!("policy key: {e}")))?;
    let payload = serde_json::to_vec(b).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&payload);
    Ok(SignedBundle {
        payload: STANDARD.encode(&payload),
        signature: STANDARD.encode(key.sign(&msg).as_ref()),
    })
}

/// The edge's check: signature, site, and newer than `applied`.
pub fn verify(
    s: &SignedBundle,
    public: &[u8],
    site: &str,
    applied: u64,
) -> Result<SiteBundle, BundleError> {
    if s.payload.len() + s.signature.len() > MAX_SIGNED_BYTES {
        return Err(BundleError::Malformed("too large".into()));
    }
    let payload = STANDARD
        .decode(&s.payload)
        .map_err(|_| BundleError::Malformed("payload is not base64".into()))?;
    let sig = STANDARD
        .decode(&s.signature)
        .map_err(|_| BundleError::Malformed("signature is not base64".into()))?;
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&payload);
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&msg, &sig)
        .map_err(|_| BundleError::BadSignature)?;
    let b: SiteBundle =
        serde_json::from_slice(&payload).map_err(|e| BundleError::Malformed(e.to_string()))?;
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
    use ring::signature::KeyPair;

    fn bundle(site: &str, version: u64) -> SiteBundle {
        SiteBundle {
            site: site.into(),
            version,
            issued_ms: 0,
            spec: SiteSpec::new("10.0.0.1".parse().unwrap(), vec![], vec![]),
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
