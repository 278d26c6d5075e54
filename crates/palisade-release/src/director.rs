//! The Uptane-style director: a per-device assignment signed online by the
//! server ("device D installs target T, with this hash and length, by this
//! time"), which a device accepts only when it agrees with the TUF image
//! repository. Pure: signing and the device-side checks.
//!
//! The signature covers a domain tag and the assignment's JSON exactly as
//! carried (`payload`), so reformatting cannot change what was signed.

use palisade_core::signed::{EnvelopeError, open, seal};
use serde::{Deserialize, Serialize};

/// Domain separation for director signatures.
const DOMAIN: &[u8] = b"palisade-director-v1\n";
/// Largest signed assignment accepted.
pub const MAX_ASSIGNMENT_BYTES: usize = 16 * 1024;

/// What the director tells one device to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The device.
    pub device: String,
    /// TUF target name (`MODEL/VERSION.img`).
    pub target: String,
    /// SHA-256 (hex) of the image.
    pub sha256: String,
    /// Image length in bytes.
    pub length: u64,
    /// Release version.
    pub version: String,
    /// Its security version (the anti-rollback floor after install).
    pub security_version: u64,
    /// Hardware revisions it runs on (empty: all).
    pub hardware: Vec<String>,
    /// Not valid after, Unix ms.
    pub expires_ms: i64,
    /// Strictly increasing per device: a replayed assignment is refused.
    pub counter: u64,
}

/// An assignment with the director's signature: the signed-payload envelope
/// every online signature of the control plane uses (`palisade_core::signed`).
pub type SignedAssignment = palisade_core::signed::Signed;

/// What the device knows of the image repository's entry for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryTarget {
    /// TUF target name.
    pub name: String,
    /// SHA-256 (hex) from the signed targets role.
    pub sha256: String,
    /// Length from the signed targets role.
    pub length: u64,
    /// `custom.security_version`.
    pub security_version: u64,
    /// `custom.hardware`.
    pub hardware: Vec<String>,
}

/// Why a device refuses an assignment. Each variant is one of the attacks the
/// director and repository together must defeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectorError {
    /// Malformed.
    #[error("assignment is malformed: {0}")]
    Malformed(String),
    /// Not signed by the director key (arbitrary software).
    #[error("assignment is not signed by the director key")]
    BadSignature,
    /// For another device.
    #[error("assignment is for device {0}, not this one")]
    OtherDevice(String),
    /// Expired (indefinite freeze).
    #[error("assignment expired")]
    Expired,
    /// Counter not above the last one seen (replay).
    #[error("assignment counter {got} is not above the last accepted {last} (replayed)")]
    Replayed {
        /// Received.
        got: u64,
        /// Last accepted.
        last: u64,
    },
    /// The repository says something else (mix-and-match, disagreement).
    #[error("director and image repository disagree on {0}")]
    Disagreement(&'static str),
    /// Lower than the device's floor (rollback).
    #[error("security version {got} is below this device's floor {floor} (rollback)")]
    Rollback {
        /// Offered.
        got: u64,
        /// The device's floor.
        floor: u64,
    },
    /// Not for this hardware.
    #[error("the image is not for hardware {0}")]
    WrongHardware(String),
}

impl From<EnvelopeError> for DirectorError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Key(e) => DirectorError::Malformed(format!("director key: {e}")),
            EnvelopeError::Malformed(m) => DirectorError::Malformed(m),
            EnvelopeError::BadSignature => DirectorError::BadSignature,
        }
    }
}

/// Signs `a` with the director's Ed25519 key (PKCS#8).
pub fn sign_assignment(a: &Assignment, pkcs8: &[u8]) -> Result<SignedAssignment, DirectorError> {
    Ok(seal(DOMAIN, a, pkcs8)?)
}

/// The device-side check of a signed assignment against the director's public
/// key, this device's id, the time, and the last counter it accepted.
pub fn verify_assignment(
    signed: &SignedAssignment,
    director_public: &[u8],
    device: &str,
    now_ms: i64,
    last_counter: u64,
) -> Result<Assignment, DirectorError> {
    let a: Assignment = open(DOMAIN, signed, director_public, MAX_ASSIGNMENT_BYTES)?;
    if a.device != device {
        return Err(DirectorError::OtherDevice(a.device));
    }
    if a.expires_ms <= now_ms {
        return Err(DirectorError::Expired);
    }
    if a.counter <= last_counter {
        return Err(DirectorError::Replayed {
            got: a.counter,
            last: last_counter,
        });
    }
    Ok(a)
}

/// A device installs only when director and repository agree, the image is
/// not below its floor, and it is for its hardware.
pub fn agree(
    a: &Assignment,
    repo: &RepositoryTarget,
    hardware: &str,
    floor: u64,
) -> Result<(), DirectorError> {
    if a.target != repo.name {
        return Err(DirectorError::Disagreement("the target name"));
    }
    if !a.sha256.eq_ignore_ascii_case(&repo.sha256) {
        return Err(DirectorError::Disagreement("the image hash"));
    }
    if a.length != repo.length {
        return Err(DirectorError::Disagreement("the image length"));
    }
    if a.security_version != repo.security_version || a.hardware != repo.hardware {
        return Err(DirectorError::Disagreement(
            "the release's security version or hardware",
        ));
    }
    if a.security_version < floor {
        return Err(DirectorError::Rollback {
            got: a.security_version,
            floor,
        });
    }
    if !a.hardware.is_empty() && !a.hardware.iter().any(|h| h == hardware) {
        return Err(DirectorError::WrongHardware(hardware.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn keys() -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        (pkcs8.as_ref().to_vec(), kp.public_key().as_ref().to_vec())
    }

    fn assignment() -> Assignment {
        Assignment {
            device: "cam-1".into(),
            target: "cam/2.0.img".into(),
            sha256: "ab".repeat(32),
            length: 1000,
            version: "2.0".into(),
            security_version: 5,
            hardware: vec!["rev-b".into()],
            expires_ms: 2_000,
            counter: 7,
        }
    }

    fn repo() -> RepositoryTarget {
        RepositoryTarget {
            name: "cam/2.0.img".into(),
            sha256: "ab".repeat(32),
            length: 1000,
            security_version: 5,
            hardware: vec!["rev-b".into()],
        }
    }

    #[test]
    fn a_signed_agreeing_assignment_is_accepted() {
        let (sk, pk) = keys();
        let s = sign_assignment(&assignment(), &sk).unwrap();
        let a = verify_assignment(&s, &pk, "cam-1", 1_000, 6).unwrap();
        agree(&a, &repo(), "rev-b", 5).unwrap();
    }

    fn verified() -> (Assignment, Vec<u8>, Vec<u8>) {
        let (sk, pk) = keys();
        let s = sign_assignment(&assignment(), &sk).unwrap();
        (
            verify_assignment(&s, &pk, "cam-1", 1_000, 0).unwrap(),
            sk,
            pk,
        )
    }

    #[test]
    fn arbitrary_software() {
        let (_, pk) = keys();
        let (other_sk, _) = keys();
        let forged = sign_assignment(&assignment(), &other_sk).unwrap();
        assert_eq!(
            verify_assignment(&forged, &pk, "cam-1", 1_000, 0),
            Err(DirectorError::BadSignature)
        );
        let (sk, pk) = keys();
        let good = sign_assignment(&assignment(), &sk).unwrap();
        let mut changed = assignment();
        changed.sha256 = "cd".repeat(32);
        let tampered = SignedAssignment {
            payload: STANDARD.encode(serde_json::to_vec(&changed).unwrap()),
            signature: good.signature,
        };
        assert_eq!(
            verify_assignment(&tampered, &pk, "cam-1", 1_000, 0),
            Err(DirectorError::BadSignature)
        );
    }

    #[test]
    fn replayed_director_assignment() {
        let (sk, pk) = keys();
        let good = sign_assignment(&assignment(), &sk).unwrap();
        assert!(matches!(
            verify_assignment(&good, &pk, "cam-1", 1_000, 7),
            Err(DirectorError::Replayed { got: 7, last: 7 })
        ));
        assert!(matches!(
            verify_assignment(&good, &pk, "cam-2", 1_000, 0),
            Err(DirectorError::OtherDevice(_))
        ));
    }

    #[test]
    fn indefinite_freeze() {
        let (sk, pk) = keys();
        let good = sign_assignment(&assignment(), &sk).unwrap();
        assert_eq!(
            verify_assignment(&good, &pk, "cam-1", 2_000, 0),
            Err(DirectorError::Expired)
        );
    }

    #[test]
    fn director_repository_disagreement() {
        let (a, _, _) = verified();
        let mut r = repo();
        r.sha256 = "00".repeat(32);
        assert_eq!(
            agree(&a, &r, "rev-b", 0),
            Err(DirectorError::Disagreement("the image hash"))
        );
    }

    #[test]
    fn mix_and_match() {
        let (a, _, _) = verified();
        let mut r = repo();
        r.name = "cam/1.0.img".into();
        assert_eq!(
            agree(&a, &r, "rev-b", 0),
            Err(DirectorError::Disagreement("the target name"))
        );
        let mut r = repo();
        r.security_version = 4;
        assert!(agree(&a, &r, "rev-b", 0).is_err());
    }

    #[test]
    fn endless_data() {
        let (a, _, _) = verified();
        let mut r = repo();
        r.length = 10_000;
        assert_eq!(
            agree(&a, &r, "rev-b", 0),
            Err(DirectorError::Disagreement("the image length"))
        );
    }

    #[test]
    fn rollback() {
        let (a, _, _) = verified();
        assert!(matches!(
            agree(&a, &repo(), "rev-b", 6),
            Err(DirectorError::Rollback { got: 5, floor: 6 })
        ));
    }

    #[test]
    fn wrong_hardware() {
        let (a, _, _) = verified();
        assert!(matches!(
            agree(&a, &repo(), "rev-a", 0),
            Err(DirectorError::WrongHardware(_))
        ));
    }
}
