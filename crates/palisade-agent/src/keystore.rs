//! Where the agent's private keys live, chosen in the agent's configuration
//! (`--keystore software|pkcs11|tpm`):
//!
//! * `software`: PKCS#8 files (0600) in the state directory — development and
//!   simulation; posture reports the keys as software keys.
//! * `pkcs11`: keys generated on a PKCS#11 token (secure element, HSM) and
//!   never extractable; reported as a secure element.
//! * `tpm` (feature `tpm`): keys created inside the TPM, proven to the server
//!   by EK/AK attestation ([`Attester`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_attest::{Challenge, ChallengeRequest, KeyEvidence, QuoteEvidence};
use palisade_core::{KeyAlgorithm, KeyProtection, Signer};
use palisade_keystore::SoftwareKey;
use palisade_keystore::pkcs11::{Pkcs11Token, Pkcs11Uri};

/// A place that makes and keeps signing keys.
pub trait Keystore: Send + Sync + std::fmt::Debug {
    /// The named key, created on first use.
    fn key(&self, name: &str) -> anyhow::Result<Arc<dyn Signer>>;
    /// A new key under `name`, replacing any old one only when `commit` is called.
    fn fresh_key(&self, name: &str) -> anyhow::Result<(Arc<dyn Signer>, PendingKey)>;
    /// How keys are protected.
    fn protection(&self) -> KeyProtection;
    /// The TPM attestation this keystore can give, if any.
    fn attester(&self) -> Option<Arc<dyn Attester>> {
        None
    }
    /// Where this keystore keeps the anti-rollback floor, if it can (a TPM's
    /// NV counter); otherwise the installer keeps it in a file.
    fn floor(&self) -> Option<Arc<dyn crate::ota::Floor>> {
        None
    }
}

/// Proves to the server, with the TPM's own signatures, that keys live in it
/// and which firmware it booted.
pub trait Attester: Send + Sync + std::fmt::Debug {
    /// The EK certificate and the attestation key's public area (the AK is
    /// created on first use and kept as a TPM-wrapped blob).
    fn endorsement(&self) -> anyhow::Result<ChallengeRequest>;
    /// Activates the server's credential and has the AK certify the key whose
    /// raw public key is `public_raw`.
    fn prove_key(&self, public_raw: &[u8], challenge: &Challenge) -> anyhow::Result<KeyEvidence>;
    /// A quote over `pcr` with `nonce`, and the boot event log.
    fn quote(&self, nonce: &[u8], pcr: u8) -> anyhow::Result<QuoteEvidence>;
}

/// A freshly generated key not yet in service.
pub struct PendingKey(Box<dyn FnOnce() -> anyhow::Result<()> + Send>);

impl std::fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingKey")
    }
}

impl PendingKey {
    /// A pending key put in service by `commit`.
    pub fn new(commit: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Self {
        Self(Box::new(commit))
    }

    /// Puts the new key in place of the old one.
    pub fn commit(self) -> anyhow::Result<()> {
        (self.0)()
    }
}

/// Keys in files under a directory (development and simulation only).
#[derive(Debug, Clone)]
pub struct SoftwareKeystore {
    dir: PathBuf,
}

impl SoftwareKeystore {
    /// Keys under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The file of a named key.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

impl Keystore for SoftwareKeystore {
    fn key(&self, name: &str) -> anyhow::Result<Arc<dyn Signer>> {
        let (k, _) = SoftwareKey::load_or_create(&self.path(name), KeyAlgorithm::EcdsaP256)?;
        Ok(Arc::new(k))
    }

    fn fresh_key(&self, name: &str) -> anyhow::Result<(Arc<dyn Signer>, PendingKey)> {
        let tmp = self.dir.join(format!("{name}.key.new"));
        let _ = std::fs::remove_file(&tmp);
        let (k, _) = SoftwareKey::load_or_create(&tmp, KeyAlgorithm::EcdsaP256)?;
        let to = self.path(name);
        Ok((
            Arc::new(k),
            PendingKey::new(move || Ok(std::fs::rename(&tmp, &to)?)),
        ))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::Software
    }
}

/// Keys on a PKCS#11 token, labelled `palisade-<name>`; the token generates
/// them and never lets them out.
#[derive(Debug, Clone)]
pub struct Pkcs11Keystore {
    token: Pkcs11Token,
}

impl Pkcs11Keystore {
    /// Opens the token of `uri` (its `object`, if any, is ignored).
    pub fn open(uri: &str) -> anyhow::Result<Self> {
        let uri = Pkcs11Uri::parse(uri)?;
        Ok(Self {
            token: Pkcs11Token::open(&uri)?,
        })
    }

    fn label(name: &str) -> String {
        format!("palisade-{name}")
    }
}

impl Keystore for Pkcs11Keystore {
    fn key(&self, name: &str) -> anyhow::Result<Arc<dyn Signer>> {
        let label = Self::label(name);
        Ok(match self.token.key(&label)? {
            Some(k) => Arc::new(k),
            None => Arc::new(self.token.generate(&label)?),
        })
    }

    fn fresh_key(&self, name: &str) -> anyhow::Result<(Arc<dyn Signer>, PendingKey)> {
        let label = Self::label(name);
        let new = format!("{label}.new");
        self.token.destroy(&new)?;
        let key = self.token.generate(&new)?;
        let token = self.token.clone();
        Ok((
            Arc::new(key),
            PendingKey::new(move || {
                token.destroy(&label)?;
                token.rename(&new, &label)?;
                Ok(())
            }),
        ))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::SecureElement
    }
}
