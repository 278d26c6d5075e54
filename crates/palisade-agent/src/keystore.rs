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
    /// The data key the agent's vaults encrypt under, made on
    /// first use when `create`; `None` when there is none (never made, or
    /// destroyed by a wipe).
    fn data_key(&self, create: bool) -> anyhow::Result<Option<DataKey>>;
    /// Destroys the data key, so that everything encrypted under it is gone
    /// for good; returns what was destroyed.
    fn destroy_data_key(&self) -> anyhow::Result<Vec<String>>;
    /// The identity keys [`Keystore::destroy_identity`] would destroy.
    fn identity_items(&self) -> anyhow::Result<Vec<String>>;
    /// Destroys every key this keystore holds for the device (operational,
    /// birth, attestation) and what else it keeps of the device (a TPM's NV
    /// indices); returns what was destroyed.
    fn destroy_identity(&self) -> anyhow::Result<Vec<String>>;
}

/// A 256-bit data key in memory (zeroized on drop).
pub type DataKey = zeroize::Zeroizing<[u8; 32]>;

/// A fresh random data key.
pub fn random_data_key() -> anyhow::Result<DataKey> {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), k.as_mut())
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(k)
}

/// Overwrites a file with zeros, syncs it and unlinks it (no error if absent).
/// On flash with wear levelling the old blocks may survive: the point of
/// the data key is that what survives is ciphertext.
pub fn shred(path: &Path) -> anyhow::Result<bool> {
    use std::io::Write;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| anyhow::Error::new(e).context(format!("opening {}", path.display())))?;
    let zeros = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(4096)).unwrap_or(4096);
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(path)
        .map_err(|e| anyhow::Error::new(e).context(format!("removing {}", path.display())))?;
    Ok(true)
}

/// Writes a private file (0600) atomically: a temporary file, synced, renamed.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The files in `dir` whose name ends with `suffix`, sorted.
pub(crate) fn files_ending(dir: &Path, suffix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![];
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let p = e?.path();
                if p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
                {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::Error::new(e).context(format!("listing {}", dir.display()))),
    }
    out.sort();
    Ok(out)
}

/// The file name of `p`, for receipts.
pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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

    fn data_key(&self, create: bool) -> anyhow::Result<Option<DataKey>> {
        let path = self.dir.join(DATA_KEY_FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                let b = zeroize::Zeroizing::new(b);
                let k: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{} is not a 32-byte key: restore it or re-provision",
                        path.display()
                    )
                })?;
                Ok(Some(zeroize::Zeroizing::new(k)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let k = random_data_key()?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| {
                        anyhow::Error::new(e).context(format!("creating {}", path.display()))
                    })?;
                f.write_all(k.as_ref())?;
                f.sync_all()?;
                Ok(Some(k))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn destroy_data_key(&self) -> anyhow::Result<Vec<String>> {
        let path = self.dir.join(DATA_KEY_FILE);
        Ok(if shred(&path)? {
            vec![format!(
                "data key (software key file {DATA_KEY_FILE}, overwritten and unlinked)"
            )]
        } else {
            vec![]
        })
    }

    fn identity_items(&self) -> anyhow::Result<Vec<String>> {
        Ok(files_ending(&self.dir, ".key")?
            .iter()
            .chain(files_ending(&self.dir, ".key.new")?.iter())
            .filter(|p| file_name(p) != DATA_KEY_FILE)
            .map(|p| {
                format!(
                    "identity key (software key file {}, overwritten and unlinked)",
                    file_name(p)
                )
            })
            .collect())
    }

    fn destroy_identity(&self) -> anyhow::Result<Vec<String>> {
        let items = self.identity_items()?;
        for p in files_ending(&self.dir, ".key")?
            .into_iter()
            .chain(files_ending(&self.dir, ".key.new")?)
        {
            if file_name(&p) != DATA_KEY_FILE {
                shred(&p)?;
            }
        }
        Ok(items)
    }
}

/// The software keystore's data key file (32 bytes, 0600).
pub const DATA_KEY_FILE: &str = "data.key";
/// The PKCS#11 keystore's data key, wrapped by the token's AES key.
pub const SEALED_DATA_KEY_FILE: &str = "data.key.sealed";
/// Label of the token's AES key that wraps the data key.
const TOKEN_DATA_KEY: &str = "palisade-data";
/// What the wrapped data key's AES-GCM authenticates besides itself.
const DATA_KEY_AAD: &[u8] = b"palisade-agent data key v1";

/// Keys on a PKCS#11 token, labelled `palisade-<name>`; the token generates
/// them and never lets them out.
#[derive(Debug, Clone)]
pub struct Pkcs11Keystore {
    token: Pkcs11Token,
    /// The state directory (holds the wrapped data key).
    dir: PathBuf,
}

impl Pkcs11Keystore {
    /// Opens the token of `uri` (its `object`, if any, is ignored); the
    /// wrapped data key is kept in `dir`.
    pub fn open(uri: &str, dir: &Path) -> anyhow::Result<Self> {
        let uri = Pkcs11Uri::parse(uri)?;
        Ok(Self {
            token: Pkcs11Token::open(&uri)?,
            dir: dir.to_path_buf(),
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

    fn data_key(&self, create: bool) -> anyhow::Result<Option<DataKey>> {
        let path = self.dir.join(SEALED_DATA_KEY_FILE);
        match std::fs::read(&path) {
            Ok(sealed) => {
                let Some(plain) = self
                    .token
                    .open_sealed(TOKEN_DATA_KEY, &sealed, DATA_KEY_AAD)?
                else {
                    return Ok(None); // the token's key is gone: so is the data
                };
                let k: [u8; 32] = plain.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!("{} does not hold a 32-byte key", path.display())
                })?;
                Ok(Some(zeroize::Zeroizing::new(k)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let k = random_data_key()?;
                let sealed = self.token.seal(TOKEN_DATA_KEY, k.as_ref(), DATA_KEY_AAD)?;
                write_private(&path, &sealed)?;
                Ok(Some(k))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }

    fn destroy_data_key(&self) -> anyhow::Result<Vec<String>> {
        let mut out = vec![];
        if self
            .token
            .labels(TOKEN_DATA_KEY)?
            .iter()
            .any(|l| l == TOKEN_DATA_KEY)
        {
            self.token.destroy(TOKEN_DATA_KEY)?;
            out.push(format!(
                "data key (token AES key {TOKEN_DATA_KEY}, C_DestroyObject)"
            ));
        }
        if shred(&self.dir.join(SEALED_DATA_KEY_FILE))? {
            out.push(format!(
                "wrapped data key ({SEALED_DATA_KEY_FILE}, overwritten and unlinked)"
            ));
        }
        Ok(out)
    }

    fn identity_items(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .token
            .labels("palisade-")?
            .into_iter()
            .filter(|l| l != TOKEN_DATA_KEY)
            .map(|l| format!("identity key (token object {l}, C_DestroyObject)"))
            .collect())
    }

    fn destroy_identity(&self) -> anyhow::Result<Vec<String>> {
        let items = self.identity_items()?;
        for l in self.token.labels("palisade-")? {
            self.token.destroy(&l)?;
        }
        Ok(items)
    }
}
