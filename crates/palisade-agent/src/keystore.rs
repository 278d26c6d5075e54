//! Where the agent's private keys live. The software backend keeps PKCS#8 files
//! (0600) in the state directory and says so: posture reports software keys as
//! such. TPM and PKCS#11 backends plug in behind the same trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_core::{KeyAlgorithm, KeyProtection, Signer};
use palisade_keystore::SoftwareKey;

/// A place that makes and keeps signing keys.
pub trait Keystore: Send + Sync + std::fmt::Debug {
    /// The named key, created on first use.
    fn key(&self, name: &str) -> anyhow::Result<Arc<dyn Signer>>;
    /// A new key under `name`, replacing any old one only when `commit` is called.
    fn fresh_key(&self, name: &str) -> anyhow::Result<(Arc<dyn Signer>, PendingKey)>;
    /// How keys are protected.
    fn protection(&self) -> KeyProtection;
}

/// A freshly generated key not yet in service.
#[derive(Debug)]
pub struct PendingKey {
    from: PathBuf,
    to: PathBuf,
}

impl PendingKey {
    /// Puts the new key in place of the old one.
    pub fn commit(self) -> anyhow::Result<()> {
        std::fs::rename(&self.from, &self.to)?;
        Ok(())
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
        Ok((
            Arc::new(k),
            PendingKey {
                from: tmp,
                to: self.path(name),
            },
        ))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::Software
    }
}
