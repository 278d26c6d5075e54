//! Signing-key backends behind [`palisade_core::Signer`].
//!
//! Only the software backend exists so far: PKCS#8 key files written 0600 and
//! refused when group- or world-readable, key bytes zeroized after loading. It is
//! for development and the embedded default and reports itself as
//! [`KeyProtection::Software`]; PKCS#11 and TPM backends come with the hardware
//! roots-of-trust work.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod pkcs11;

use palisade_core::{KeyAlgorithm, KeyProtection, Signer, SignerError};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};
use zeroize::Zeroizing;

/// A key file or key generation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is readable by others.
    #[error(
        "key file {path} has mode {mode:o}; it must not be readable by group or others: run chmod 600 {path}"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file does not hold a key of the expected kind.
    #[error("key file {path} does not hold a {alg} PKCS#8 key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Expected algorithm.
        alg: KeyAlgorithm,
        /// Why.
        reason: String,
    },
    /// The random number generator failed.
    #[error("key generation failed for {0}")]
    Generate(KeyAlgorithm),
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key held in this process's memory, loaded from a 0600 PKCS#8 file.
pub struct SoftwareKey {
    alg: KeyAlgorithm,
    inner: Inner,
    public: Vec<u8>,
    label: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("alg", &self.alg)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SoftwareKey {
    /// Generates a new key in memory; returns it with its PKCS#8 encoding.
    pub fn generate(
        alg: KeyAlgorithm,
        label: &str,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), KeystoreError> {
        let rng = SystemRandom::new();
        let pkcs8 = Zeroizing::new(
            match alg {
                KeyAlgorithm::EcdsaP256 => {
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                }
                KeyAlgorithm::EcdsaP384 => {
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
                }
                KeyAlgorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
            }
            .map_err(|_| KeystoreError::Generate(alg))?
            .as_ref()
            .to_vec(),
        );
        let key = Self::from_pkcs8(alg, &pkcs8, label).map_err(|_| KeystoreError::Generate(alg))?;
        Ok((key, pkcs8))
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8(alg: KeyAlgorithm, der: &[u8], label: &str) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let inner = match alg {
            KeyAlgorithm::EcdsaP256 => Inner::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
                    .map_err(|e| e.to_string())?,
            ),
            KeyAlgorithm::EcdsaP384 => Inner::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, der, &rng)
                    .map_err(|e| e.to_string())?,
            ),
            KeyAlgorithm::Ed25519 => Inner::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?,
            ),
        };
        let public = match &inner {
            Inner::Ecdsa(k) => k.public_key().as_ref().to_vec(),
            Inner::Ed25519(k) => k.public_key().as_ref().to_vec(),
        };
        Ok(Self {
            alg,
            inner,
            public,
            label: label.to_owned(),
            rng,
        })
    }

    /// Loads the key at `path`, or generates one and writes it there (mode 0600,
    /// never overwriting). Returns the key and whether it was created.
    pub fn load_or_create(path: &Path, alg: KeyAlgorithm) -> Result<(Self, bool), KeystoreError> {
        let label = path.display().to_string();
        if path.exists() {
            return Ok((Self::load(path, alg)?, false));
        }
        let io = |source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        };
        let (key, pkcs8) = Self::generate(alg, &label)?;
        let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec())));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok((key, true))
    }

    /// Loads the key at `path`, refusing files readable by group or others.
    pub fn load(path: &Path, alg: KeyAlgorithm) -> Result<Self, KeystoreError> {
        let io = |source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeystoreError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        let bad = |reason: String| KeystoreError::BadKey {
            path: path.to_owned(),
            alg,
            reason,
        };
        let block = pem::parse(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(bad(format!("found a {:?} PEM block", block.tag())));
        }
        let der = Zeroizing::new(block.into_contents());
        Self::from_pkcs8(alg, &der, &path.display().to_string()).map_err(bad)
    }
}

impl Signer for SoftwareKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        match &self.inner {
            Inner::Ecdsa(k) => k
                .sign(&self.rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignerError {
                    key: self.label.clone(),
                    reason: "ECDSA signing failed".into(),
                }),
            Inner::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
        }
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::Software
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};

    #[test]
    fn created_key_file_is_0600_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        let (k1, created) = SoftwareKey::load_or_create(&path, KeyAlgorithm::EcdsaP256).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = SoftwareKey::load_or_create(&path, KeyAlgorithm::EcdsaP256).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key_raw(), k2.public_key_raw());
        let sig = k2.sign(b"hello").unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, k1.public_key_raw())
            .verify(b"hello", &sig)
            .expect("signature verifies");
    }

    #[test]
    fn refuses_a_world_readable_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pem");
        SoftwareKey::load_or_create(&path, KeyAlgorithm::Ed25519).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SoftwareKey::load(&path, KeyAlgorithm::Ed25519).unwrap_err();
        assert!(matches!(
            err,
            KeystoreError::Permissions { mode: 0o644, .. }
        ));
    }

    #[test]
    fn ed25519_signatures_verify() {
        let (k, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "t").unwrap();
        let sig = k.sign(b"m").unwrap();
        assert_eq!(sig.len(), 64);
        UnparsedPublicKey::new(&ED25519, k.public_key_raw())
            .verify(b"m", &sig)
            .unwrap();
    }
}
