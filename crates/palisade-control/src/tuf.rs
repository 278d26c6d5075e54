//! The image repository in TUF format (tough, AWS's maintained implementation).
//!
//! * **root** and **targets** are signed *offline* with threshold keys from the
//!   key ceremony (`palisade keys …`): the server only checks them.
//! * **snapshot** and **timestamp** are signed *online* by keys the server keeps
//!   in `tuf/online/` (PKCS#8, 0600), with short expiries (7 days and 1 day); the
//!   timestamp is re-signed periodically.
//!
//! Publishing: the server drafts the targets role from the accepted releases
//! (`GET /api/v1/tuf/targets-draft`); the targets key holders sign it offline;
//! the signed role is uploaded (`PUT /api/v1/tuf/targets`), checked against the
//! root's threshold, and a new snapshot and timestamp are signed over it.
//! Metadata is served at `/tuf/metadata/`, images at `/tuf/targets/`.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_store::ReleaseRecord;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tough::TargetName;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::decoded::Decoded;
use tough::schema::{
    Hashes, KeyHolder, Metafile, RoleType, Root, Signed, Snapshot, Target, Targets, Timestamp,
};

/// TUF specification version written in new metadata.
pub const SPEC_VERSION: &str = "1.0.0";
/// Largest metadata document accepted.
pub const MAX_METADATA_BYTES: usize = 4 << 20;
const DAY_MS: i64 = 86_400_000;

/// A TUF operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TufError {
    /// The input is not acceptable; the message says why.
    #[error("{0}")]
    Refused(String),
    /// No root has been installed yet.
    #[error(
        "the TUF repository has no root yet: sign one in a key ceremony and install it with `palisade tuf set-root`"
    )]
    NoRoot,
    /// Our fault.
    #[error("TUF repository: {0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> TufError {
    TufError::Internal(e.to_string())
}

/// The name of a release's image in the repository.
pub fn target_name(r: &ReleaseRecord) -> String {
    format!("{}/{}.img", r.model, r.version)
}

/// Creates an Ed25519 signing key as PKCS#8 DER (the form tough reads), 0600
/// (online and ceremony keys).
pub fn generate_key(path: &Path) -> Result<(), TufError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| internal("random number generator failed"))?;
    let der = zeroize::Zeroizing::new(pkcs8.as_ref().to_vec());
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(internal)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| internal(format!("creating {}: {e}", path.display())))?;
    f.write_all(&der).map_err(internal)?;
    f.sync_all().map_err(internal)
}

/// The TUF public key (and its key id) of a key file.
pub async fn public_key(path: &Path) -> Result<(String, Value), TufError> {
    let src = LocalKeySource {
        path: path.to_path_buf(),
    };
    let sign = src
        .as_sign()
        .await
        .map_err(|e| internal(format!("{}: {e}", path.display())))?;
    let key = sign.tuf_key();
    let id = key.key_id().map_err(internal)?;
    Ok((
        hex::encode(&*id),
        serde_json::to_value(&key).map_err(internal)?,
    ))
}

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

/// Signs `role` with whichever of `keys` the root lists for it.
pub async fn sign_role<T: tough::schema::Role + serde::Serialize>(
    role: T,
    root: &Root,
    keys: &[PathBuf],
) -> Result<Vec<u8>, TufError> {
    let signed = SignedRole::new(
        role,
        &KeyHolder::Root(root.clone()),
        &sources(keys),
        // tough signs through aws-lc-rs and takes its RNG.
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .map_err(|e| TufError::Refused(format!("signing failed: {e}")))?;
    Ok(signed.buffer().clone())
}

/// An expiry in whole seconds: the TUF specification writes them as
/// `YYYY-MM-DDTHH:MM:SSZ`, and clients (python-tuf) refuse fractions.
fn ts(ms: i64) -> Result<jiff::Timestamp, TufError> {
    jiff::Timestamp::from_second(ms.div_euclid(1000)).map_err(internal)
}

/// [`ts`] for callers outside this module.
pub fn expiry(ms: i64) -> Result<jiff::Timestamp, TufError> {
    ts(ms)
}

fn meta(buf: &[u8], version: NonZeroU64) -> Metafile {
    Metafile {
        length: Some(buf.len() as u64),
        hashes: Some(Hashes {
            sha256: Decoded::from(
                ring::digest::digest(&ring::digest::SHA256, buf)
                    .as_ref()
                    .to_vec(),
            ),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

/// The repository kept in `dir` (`online/`, `metadata/`).
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Repository {
    /// Opens (and on first use creates, with fresh online keys) the repository.
    pub fn open(dir: &Path) -> Result<Self, TufError> {
        std::fs::create_dir_all(dir.join("metadata")).map_err(internal)?;
        for role in ["snapshot", "timestamp", "director"] {
            let p = dir.join("online").join(format!("{role}.pk8"));
            if !p.exists() {
                generate_key(&p)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            lock: Arc::default(),
        })
    }

    fn online(&self) -> Vec<PathBuf> {
        ["snapshot", "timestamp"]
            .iter()
            .map(|r| self.dir.join("online").join(format!("{r}.pk8")))
            .collect()
    }

    fn director_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, TufError> {
        let p = self.dir.join("online/director.pk8");
        std::fs::read(&p)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| internal(format!("{}: {e}", p.display())))
    }

    /// The director's Ed25519 public key (32 bytes): devices verify
    /// assignments with it.
    pub fn director_public(&self) -> Result<Vec<u8>, TufError> {
        use ring::signature::KeyPair;
        let key = self.director_key()?;
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key)
            .map_err(|e| internal(format!("director key: {e}")))?;
        Ok(kp.public_key().as_ref().to_vec())
    }

    /// Signs a device's assignment with the director's online key.
    pub fn sign_assignment(
        &self,
        a: &palisade_release::director::Assignment,
    ) -> Result<palisade_release::director::SignedAssignment, TufError> {
        palisade_release::director::sign_assignment(a, &self.director_key()?)
            .map_err(|e| internal(e.to_string()))
    }

    /// A metadata file's path, if `name` is one the repository serves.
    pub fn metadata_path(&self, name: &str) -> Option<PathBuf> {
        let ok = matches!(
            name,
            "root.json" | "targets.json" | "snapshot.json" | "timestamp.json"
        ) || name.strip_suffix(".root.json").is_some_and(|v| {
            !v.is_empty() && v.len() < 10 && v.bytes().all(|b| b.is_ascii_digit())
        });
        ok.then(|| self.dir.join("metadata").join(name))
    }

    /// The online keys' TUF public keys, for the key ceremony.
    pub async fn online_keys(&self) -> Result<Value, TufError> {
        let (sid, skey) = public_key(&self.online()[0]).await?;
        let (tid, tkey) = public_key(&self.online()[1]).await?;
        Ok(json!({
            "snapshot": { "keyid": sid, "key": skey },
            "timestamp": { "keyid": tid, "key": tkey },
        }))
    }

    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, TufError> {
        match std::fs::read(self.dir.join("metadata").join(name)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(internal),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal(e)),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TufError> {
        crate::files::write_atomic(&self.dir.join("metadata").join(name), bytes, 0o644)
            .map_err(|e| internal(format!("{e:#}")))
    }

    /// The trusted root.
    pub fn root(&self) -> Result<Signed<Root>, TufError> {
        self.read("root.json")?.ok_or(TufError::NoRoot)
    }

    /// Installs a root signed in a key ceremony: it must meet its own threshold,
    /// name this server's online keys for snapshot and timestamp, and — when it
    /// replaces a root — be the next version and meet the old root's threshold.
    pub async fn set_root(&self, bytes: &[u8]) -> Result<u64, TufError> {
        let _g = self.lock.lock().await;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(TufError::Refused("root metadata is too large".into()));
        }
        let new: Signed<Root> = serde_json::from_slice(bytes)
            .map_err(|e| TufError::Refused(format!("not TUF root metadata: {e}")))?;
        new.signed.verify_role(&new).map_err(|e| {
            TufError::Refused(format!("the root does not meet its own threshold: {e}"))
        })?;
        if let Some(old) = self.read::<Signed<Root>>("root.json")? {
            if new.signed.version.get() != old.signed.version.get() + 1 {
                return Err(TufError::Refused(format!(
                    "a new root must be version {}, not {}",
                    old.signed.version.get() + 1,
                    new.signed.version
                )));
            }
            old.signed.verify_role(&new).map_err(|e| {
                TufError::Refused(format!(
                    "the new root is not signed by the current root's keys: {e}"
                ))
            })?;
        }
        for (role, path) in [(RoleType::Snapshot, 0), (RoleType::Timestamp, 1)] {
            let (id, _) = public_key(&self.online()[path]).await?;
            let listed = new
                .signed
                .roles
                .get(&role)
                .is_some_and(|k| k.keyids.iter().any(|k| hex::encode(&**k) == id));
            if !listed {
                return Err(TufError::Refused(format!(
                    "the root does not name this server's online {role} key {id} (palisade tuf online-keys)"
                )));
            }
        }
        let v = new.signed.version.get();
        self.write(&format!("{v}.root.json"), bytes)?;
        self.write("root.json", bytes)?;
        Ok(v)
    }

    /// The targets role to sign offline next: every accepted release.
    pub fn targets_draft(
        &self,
        releases: &[ReleaseRecord],
        now_ms: i64,
        expires_days: u32,
    ) -> Result<Targets, TufError> {
        let current = self
            .read::<Signed<Targets>>("targets.json")?
            .map_or(0, |t| t.signed.version.get());
        let version = NonZeroU64::new(current + 1).ok_or_else(|| internal("version"))?;
        let mut t = Targets::new(
            SPEC_VERSION.into(),
            version,
            ts(now_ms + i64::from(expires_days) * DAY_MS)?,
        );
        for r in releases {
            let name = TargetName::new(target_name(r)).map_err(internal)?;
            let mut custom = HashMap::new();
            custom.insert("model".into(), json!(r.model.as_str()));
            custom.insert("version".into(), json!(r.version));
            custom.insert("security_version".into(), json!(r.security_version));
            custom.insert("hardware".into(), json!(r.hardware));
            let sha = hex::decode(&r.image_sha256).map_err(internal)?;
            t.targets.insert(
                name,
                Target {
                    length: r.image_len,
                    hashes: Hashes {
                        sha256: Decoded::from(sha),
                        _extra: HashMap::new(),
                    },
                    custom,
                    _extra: HashMap::new(),
                },
            );
        }
        Ok(t)
    }

    /// Publishes offline-signed targets: checks them against the root and the
    /// accepted releases, then signs a new snapshot and timestamp.
    pub async fn publish_targets(
        &self,
        bytes: &[u8],
        releases: &[ReleaseRecord],
        now_ms: i64,
    ) -> Result<u64, TufError> {
        let _g = self.lock.lock().await;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(TufError::Refused("targets metadata is too large".into()));
        }
        let root = self.root()?;
        let targets: Signed<Targets> = serde_json::from_slice(bytes)
            .map_err(|e| TufError::Refused(format!("not TUF targets metadata: {e}")))?;
        root.signed.verify_role(&targets).map_err(|e| {
            TufError::Refused(format!(
                "the targets role is not signed by a threshold of the root's targets keys: {e}"
            ))
        })?;
        let current = self
            .read::<Signed<Targets>>("targets.json")?
            .map_or(0, |t| t.signed.version.get());
        if targets.signed.version.get() <= current {
            return Err(TufError::Refused(format!(
                "targets version {} is not newer than the published {current}",
                targets.signed.version
            )));
        }
        if targets.signed.expires <= ts(now_ms)? {
            return Err(TufError::Refused(
                "the targets role has already expired".into(),
            ));
        }
        // Every target must be an accepted release with the same hash and length.
        for (name, t) in &targets.signed.targets {
            let ok = releases.iter().any(|r| {
                target_name(r) == name.raw()
                    && r.image_len == t.length
                    && hex::encode(&*t.hashes.sha256) == r.image_sha256
            });
            if !ok {
                return Err(TufError::Refused(format!(
                    "target {} is not an accepted release (or its hash or length differ)",
                    name.raw()
                )));
            }
        }
        self.write("targets.json", bytes)?;
        self.sign_snapshot_and_timestamp(&root.signed, bytes, targets.signed.version, now_ms)
            .await?;
        Ok(targets.signed.version.get())
    }

    async fn sign_snapshot_and_timestamp(
        &self,
        root: &Root,
        targets_buf: &[u8],
        targets_version: NonZeroU64,
        now_ms: i64,
    ) -> Result<(), TufError> {
        let next = |name: &str| -> Result<NonZeroU64, TufError> {
            let v = self
                .read::<Value>(name)?
                .and_then(|v| v["signed"]["version"].as_u64())
                .unwrap_or(0);
            NonZeroU64::new(v + 1).ok_or_else(|| internal("version"))
        };
        let snapshot_version = next("snapshot.json")?;
        let mut snapshot = Snapshot::new(
            SPEC_VERSION.into(),
            snapshot_version,
            ts(now_ms + 7 * DAY_MS)?,
        );
        snapshot
            .meta
            .insert("targets.json".into(), meta(targets_buf, targets_version));
        let snap_buf = sign_role(snapshot, root, &self.online()).await?;
        self.write("snapshot.json", &snap_buf)?;
        self.sign_timestamp_over(root, &snap_buf, snapshot_version, now_ms)
            .await
    }

    async fn sign_timestamp_over(
        &self,
        root: &Root,
        snap_buf: &[u8],
        snapshot_version: NonZeroU64,
        now_ms: i64,
    ) -> Result<(), TufError> {
        let v = self
            .read::<Value>("timestamp.json")?
            .and_then(|v| v["signed"]["version"].as_u64())
            .unwrap_or(0);
        let version = NonZeroU64::new(v + 1).ok_or_else(|| internal("version"))?;
        let mut ts_role = Timestamp::new(SPEC_VERSION.into(), version, ts(now_ms + DAY_MS)?);
        ts_role
            .meta
            .insert("snapshot.json".into(), meta(snap_buf, snapshot_version));
        let buf = sign_role(ts_role, root, &self.online()).await?;
        self.write("timestamp.json", &buf)
    }

    /// Re-signs the timestamp (freshness), if a snapshot exists.
    pub async fn refresh_timestamp(&self, now_ms: i64) -> Result<(), TufError> {
        let _g = self.lock.lock().await;
        let root = self.root()?;
        let Ok(snap_buf) = std::fs::read(self.dir.join("metadata/snapshot.json")) else {
            return Ok(());
        };
        let snap: Signed<Snapshot> = serde_json::from_slice(&snap_buf).map_err(internal)?;
        self.sign_timestamp_over(&root.signed, &snap_buf, snap.signed.version, now_ms)
            .await
    }
}
