//! Data at rest on the device, encrypted under the keystore's data key so that
//! destroying that one key (a wipe) makes all of it unreadable: a
//! crypto-erase, which holds even for blocks a flash translation layer kept.
//!
//! A vault is a directory of files, each `MAGIC || nonce (12) || AES-256-GCM
//! ciphertext and tag`, the file's name authenticated with it (a file renamed
//! or swapped for another does not open). The agent keeps its own records in
//! `vault/` under its state directory (the command journal); an application
//! stores its data through `palisade-agent data put|get` in the directory the
//! agent is told about (`--data-dir`).
//!
//! The data key itself lives in the keystore: a TPM sealed object, a
//! PKCS#11 token's non-extractable AES key wrapping it, or (development) a
//! key file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::keystore::{DataKey, Keystore, write_private};

/// First bytes of every vault file.
pub const MAGIC: &[u8; 8] = b"PALVLT1\n";
/// Largest file a vault holds.
pub const MAX_FILE: usize = 64 * 1024 * 1024;
/// The agent's own vault under its state directory.
pub const STATE_VAULT: &str = "vault";
/// The command journal in the agent's vault.
pub const JOURNAL: &str = "commands.jsonl";
/// Entries the journal keeps (the oldest are dropped).
const JOURNAL_ENTRIES: usize = 256;

/// A directory of files encrypted under the data key.
pub struct Vault {
    dir: PathBuf,
    key: LessSafeKey,
    // Kept so the key bytes are zeroized when the vault goes.
    _raw: DataKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Checks a vault file name: 1 to 128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        bail!(
            "{name:?} is not a vault file name: 1 to 128 of [A-Za-z0-9._-], not starting with '.'"
        );
    }
    Ok(())
}

impl Vault {
    /// The vault in `dir` under the keystore's data key (made on first use
    /// when `create`); `None` when the keystore has no data key (it was
    /// destroyed, or never made).
    pub fn open(keystore: &dyn Keystore, dir: &Path, create: bool) -> anyhow::Result<Option<Self>> {
        let Some(raw) = keystore.data_key(create)? else {
            return Ok(None);
        };
        if create {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, raw.as_ref())
                .map_err(|_| anyhow::anyhow!("the data key is not an AES-256 key"))?,
        );
        Ok(Some(Self {
            dir: dir.to_path_buf(),
            key,
            _raw: raw,
        }))
    }

    /// The vault's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn aad(name: &str) -> Vec<u8> {
        let mut a = MAGIC.to_vec();
        a.extend_from_slice(name.as_bytes());
        a
    }

    /// Encrypts `data` as file `name` (replacing it atomically, 0600).
    pub fn put(&self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        check_name(name)?;
        if data.len() > MAX_FILE {
            bail!(
                "{} bytes is more than a vault file holds ({MAX_FILE})",
                data.len()
            );
        }
        let mut n = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut n)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        let mut buf = data.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(Self::aad(name)),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("encrypting {name}"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 12 + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&n);
        out.extend_from_slice(&buf);
        write_private(&self.dir.join(name), &out)
    }

    /// Decrypts file `name`; `None` when there is no such file.
    pub fn get(&self, name: &str) -> anyhow::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        check_name(name)?;
        let path = self.dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
            }
        };
        self.decrypt(name, &bytes).map(Some)
    }

    /// Decrypts the bytes of a vault file that was called `name`.
    pub fn decrypt(&self, name: &str, bytes: &[u8]) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
        if bytes.len() < MAGIC.len() + 12 + 16 || !bytes.starts_with(MAGIC) {
            bail!("{name} is not a vault file");
        }
        let (n, ct) = bytes[MAGIC.len()..].split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(n)
            .map_err(|_| anyhow::anyhow!("{name}: bad nonce"))?;
        let mut buf = zeroize::Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(name)), &mut buf)
            .map_err(|_| {
                anyhow::anyhow!(
                    "{name} does not decrypt under this device's data key (damaged, renamed, or from another device)"
                )
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// The names of the vault's files.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        let mut out = vec![];
        for p in crate::keystore::files_ending(&self.dir, "")? {
            let name = crate::keystore::file_name(&p);
            if check_name(&name).is_ok() && !name.ends_with(".tmp") {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Appends one JSON line to the journal `name`, keeping the last entries.
    pub fn append_journal(&self, name: &str, entry: &serde_json::Value) -> anyhow::Result<()> {
        let old = self.get(name)?.map(|b| b.to_vec()).unwrap_or_default();
        let text = String::from_utf8_lossy(&old);
        let mut lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(JOURNAL_ENTRIES - 1);
        lines.drain(..skip);
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&entry.to_string());
        out.push('\n');
        self.put(name, out.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::SoftwareKeystore;

    #[test]
    fn files_round_trip_and_die_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ks = SoftwareKeystore::new(dir.path());
        assert!(
            Vault::open(&ks, &dir.path().join("v"), false)
                .unwrap()
                .is_none()
        );
        let v = Vault::open(&ks, &dir.path().join("v"), true)
            .unwrap()
            .unwrap();
        v.put("notes.txt", b"secret").unwrap();
        let raw = std::fs::read(dir.path().join("v/notes.txt")).unwrap();
        assert!(raw.starts_with(MAGIC) && !raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(v.get("notes.txt").unwrap().unwrap().as_slice(), b"secret");
        // A file renamed does not open under its new name.
        std::fs::copy(dir.path().join("v/notes.txt"), dir.path().join("v/other")).unwrap();
        assert!(v.get("other").is_err());
        assert!(v.put("../escape", b"x").is_err());
        for i in 0..300 {
            v.append_journal(JOURNAL, &serde_json::json!({ "i": i }))
                .unwrap();
        }
        let j = v.get(JOURNAL).unwrap().unwrap();
        let text = String::from_utf8_lossy(&j);
        assert_eq!(text.lines().count(), 256);
        assert!(text.ends_with("{\"i\":299}\n"));
        // Destroying the key: the vault no longer opens, and a new key does
        // not read the old files.
        assert!(!ks.destroy_data_key().unwrap().is_empty());
        assert!(
            Vault::open(&ks, &dir.path().join("v"), false)
                .unwrap()
                .is_none()
        );
        let fresh = Vault::open(&ks, &dir.path().join("v"), true)
            .unwrap()
            .unwrap();
        assert!(fresh.get("notes.txt").is_err());
    }
}
