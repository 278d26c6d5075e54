//! The image repository in TUF format (tough, AWS's maintained implementation).
//!
//! * **root** and **targets** are signed *offline* with threshold keys from the
//!   key ceremony (`palisade keys …`): the server only checks them.
//! * **snapshot** and **timestamp** are signed *online* by keys the server keeps
//!   in `tuf/online/` (PKCS#8, 0600), with short expiries (7 days and 1 day);
//!   one node at a time (the `tuf-signing` lead) re-signs them before they
//!   expire ([`Repository::refresh`]).
//!
//! The metadata lives in the database (signed documents named `tuf/…`), so
//! every node serves the same versions; a new version is stored only if the
//! version it replaces is still the stored one, so two nodes never publish two
//! different "next" versions.
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

use palisade_store::{Change, ReleaseRecord, Store};
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
    /// The database refused or could not be reached (a concurrent change on
    /// another node is a conflict: read again and retry).
    #[error("TUF repository: {0}")]
    Store(#[from] palisade_store::StoreError),
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

/// An expiry in whole seconds (as the TUF specification writes them), for
/// callers outside this module.
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

/// Where the repository's metadata is stored: one signed document per file.
const DOCUMENT_PREFIX: &str = "tuf/";
/// A snapshot is re-signed when less than this is left of its 7 days.
const SNAPSHOT_RENEW_MS: i64 = 3 * DAY_MS;
/// A timestamp is re-signed when less than this is left of its day.
const TIMESTAMP_RENEW_MS: i64 = DAY_MS - 3_600_000;

/// A metadata file as stored: its version and bytes.
struct Stored {
    version: u64,
    body: Vec<u8>,
}

/// The metadata files one change publishes, committed together.
#[derive(Default)]
struct Publication(Vec<Change>);

impl Publication {
    fn put(&mut self, name: &str, version: u64, replaces: Option<u64>, body: &[u8], now_ms: i64) {
        self.0.push(Change::PutDocument {
            name: format!("{DOCUMENT_PREFIX}{name}"),
            version,
            replaces,
            body: body.to_vec(),
            at_ms: now_ms,
        });
    }
}

/// The TUF public keys of the snapshot and timestamp key files `paths`.
async fn keys_json(paths: &[PathBuf]) -> Result<Value, TufError> {
    let (sid, skey) = public_key(&paths[0]).await?;
    let (tid, tkey) = public_key(&paths[1]).await?;
    Ok(json!({
        "snapshot": { "keyid": sid, "key": skey },
        "timestamp": { "keyid": tid, "key": tkey },
    }))
}

/// The repository: online keys in `dir` (`online/`), metadata in the store.
#[derive(Debug, Clone)]
pub struct Repository {
    dir: PathBuf,
    store: Arc<dyn Store>,
    lock: Arc<Mutex<()>>,
}

impl Repository {
    /// Opens (and on first use creates, with fresh online keys) the
    /// repository. Metadata that earlier versions kept in `dir/metadata/` is
    /// moved into the store once, if the store has none.
    pub async fn open(dir: &Path, store: Arc<dyn Store>, now_ms: i64) -> Result<Self, TufError> {
        for role in ["snapshot", "timestamp", "director"] {
            let p = dir.join("online").join(format!("{role}.pk8"));
            if !p.exists() {
                generate_key(&p)?;
            }
        }
        let repo = Self {
            dir: dir.to_path_buf(),
            store,
            lock: Arc::default(),
        };
        repo.import_files(now_ms).await?;
        Ok(repo)
    }

    /// Moves metadata files from `metadata/` into the store (once: when the
    /// store has no root yet), then renames the directory so nobody edits a
    /// copy that is no longer served.
    async fn import_files(&self, now_ms: i64) -> Result<(), TufError> {
        let old = self.dir.join("metadata");
        if !old.join("root.json").exists() || self.stored("root.json").await?.is_some() {
            return Ok(());
        }
        let mut p = Publication::default();
        for entry in std::fs::read_dir(&old).map_err(internal)? {
            let entry = entry.map_err(internal)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_metadata_name(&name) {
                continue;
            }
            let body = std::fs::read(entry.path()).map_err(internal)?;
            let version = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["signed"]["version"].as_u64())
                .ok_or_else(|| internal(format!("{}: no version", entry.path().display())))?;
            p.put(&name, version, None, &body, now_ms);
        }
        match self.store.commit(p.0, vec![]).await {
            Ok(_) => {}
            // Another node imported its copy first.
            Err(e @ palisade_store::StoreError::Conflict { .. }) => {
                tracing::warn!(error = %e, "another node moved its TUF metadata into the database first");
            }
            Err(e) => return Err(e.into()),
        }
        let moved = self.dir.join("metadata.in-database");
        std::fs::rename(&old, &moved).map_err(internal)?;
        tracing::info!(from = %old.display(), to = %moved.display(), "TUF metadata now served from the database");
        Ok(())
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

    /// Signs a wipe command with the director's online key (the key devices
    /// pinned; the domain tag keeps it from passing for an assignment).
    pub fn sign_wipe(
        &self,
        c: &palisade_core::wipe::WipeCommand,
    ) -> Result<palisade_core::signed::Signed, TufError> {
        palisade_core::signed::seal(
            palisade_core::wipe::COMMAND_DOMAIN,
            c,
            &self.director_key()?,
        )
        .map_err(|e| internal(e.to_string()))
    }

    /// A metadata file the repository serves (`root.json`, `3.root.json`,
    /// `targets.json`, …); `None` if there is no such file.
    pub async fn metadata(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        if !is_metadata_name(name) {
            return Ok(None);
        }
        Ok(self.stored(name).await?.map(|s| s.body))
    }

    /// The online keys' TUF public keys, for the key ceremony.
    pub async fn online_keys(&self) -> Result<Value, TufError> {
        keys_json(&self.online()).await
    }

    /// The next online keys (made on first ask, 0600): a root naming them
    /// puts them in service when it is installed, and the current ones
    /// retire. This is how the online keys are rotated, e.g. after they
    /// leaked and were used for a fast-forward attack: clients delete their
    /// trusted timestamp and snapshot when a new root rotates those keys.
    pub async fn next_online_keys(&self) -> Result<Value, TufError> {
        let next = self.next();
        for p in &next {
            if !p.exists() {
                std::fs::create_dir_all(self.dir.join("online/next")).map_err(internal)?;
                generate_key(p)?;
            }
        }
        keys_json(&next).await
    }

    fn next(&self) -> Vec<PathBuf> {
        ["snapshot", "timestamp"]
            .iter()
            .map(|r| self.dir.join("online/next").join(format!("{r}.pk8")))
            .collect()
    }

    async fn stored(&self, name: &str) -> Result<Option<Stored>, TufError> {
        Ok(self
            .store
            .document(&format!("{DOCUMENT_PREFIX}{name}"))
            .await?
            .map(|d| Stored {
                version: d.version,
                body: d.body,
            }))
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<(Stored, T)>, TufError> {
        match self.stored(name).await? {
            Some(s) => {
                let t = serde_json::from_slice(&s.body)
                    .map_err(|e| internal(format!("stored {name}: {e}")))?;
                Ok(Some((s, t)))
            }
            None => Ok(None),
        }
    }

    /// The trusted root.
    pub async fn root(&self) -> Result<Signed<Root>, TufError> {
        Ok(self.read("root.json").await?.ok_or(TufError::NoRoot)?.1)
    }

    /// Installs a root signed in a key ceremony: it must meet its own threshold,
    /// name this server's online keys for snapshot and timestamp, and — when it
    /// replaces a root — be the next version and meet the old root's threshold.
    pub async fn set_root(&self, bytes: &[u8], now_ms: i64) -> Result<u64, TufError> {
        let _g = self.lock.lock().await;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(TufError::Refused("root metadata is too large".into()));
        }
        let new: Signed<Root> = serde_json::from_slice(bytes)
            .map_err(|e| TufError::Refused(format!("not TUF root metadata: {e}")))?;
        new.signed.verify_role(&new).map_err(|e| {
            TufError::Refused(format!("the root does not meet its own threshold: {e}"))
        })?;
        let old = self.read::<Signed<Root>>("root.json").await?;
        if let Some((_, old)) = &old {
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
        // Each online role must be signed by a key this server holds: the
        // current one, or the next one (a rotation).
        let mut promote = vec![];
        for (role, path) in [(RoleType::Snapshot, 0), (RoleType::Timestamp, 1)] {
            let listed = |id: &str| {
                new.signed
                    .roles
                    .get(&role)
                    .is_some_and(|k| k.keyids.iter().any(|k| hex::encode(&**k) == id))
            };
            let (id, _) = public_key(&self.online()[path]).await?;
            if listed(&id) {
                continue;
            }
            let next = &self.next()[path];
            let next_id = match next.exists() {
                true => Some(public_key(next).await?.0),
                false => None,
            };
            if next_id.as_deref().is_some_and(listed) {
                promote.push(path);
                continue;
            }
            return Err(TufError::Refused(format!(
                "the root does not name this server's online {role} key {id}, nor its next one (palisade tuf online-keys [--next])"
            )));
        }
        let v = new.signed.version.get();
        let mut p = Publication::default();
        p.put(&format!("{v}.root.json"), v, None, bytes, now_ms);
        p.put("root.json", v, old.map(|(s, _)| s.version), bytes, now_ms);
        self.store.commit(p.0, vec![]).await?;
        if !promote.is_empty() {
            // The next keys go into service, the old ones retire (kept, not
            // used), and the online roles are signed again at once with the
            // new keys, so clients meet the rotation on their next refresh.
            let retired = self.dir.join("online/retired");
            std::fs::create_dir_all(&retired).map_err(internal)?;
            for path in promote {
                let current = &self.online()[path];
                let name = current
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                std::fs::rename(current, retired.join(format!("root-{v}-{name}")))
                    .map_err(internal)?;
                std::fs::rename(&self.next()[path], current).map_err(internal)?;
            }
            tracing::warn!(
                root = v,
                "TUF online keys rotated: copy the data directory's tuf/online/ to every other node"
            );
            if let Some(targets) = self.stored("targets.json").await? {
                let tv =
                    NonZeroU64::new(targets.version).ok_or_else(|| internal("targets version"))?;
                let mut p = Publication::default();
                self.sign_snapshot(&mut p, &new.signed, &targets.body, tv, now_ms)
                    .await?;
                self.store.commit(p.0, vec![]).await?;
            }
        }
        Ok(v)
    }

    /// The targets role to sign offline next: every accepted release.
    pub async fn targets_draft(
        &self,
        releases: &[ReleaseRecord],
        now_ms: i64,
        expires_days: u32,
    ) -> Result<Targets, TufError> {
        let current = self.stored("targets.json").await?.map_or(0, |t| t.version);
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
        let root = self.root().await?;
        let targets: Signed<Targets> = serde_json::from_slice(bytes)
            .map_err(|e| TufError::Refused(format!("not TUF targets metadata: {e}")))?;
        root.signed.verify_role(&targets).map_err(|e| {
            TufError::Refused(format!(
                "the targets role is not signed by a threshold of the root's targets keys: {e}"
            ))
        })?;
        let current = self.stored("targets.json").await?.map(|t| t.version);
        if targets.signed.version.get() <= current.unwrap_or(0) {
            return Err(TufError::Refused(format!(
                "targets version {} is not newer than the published {}",
                targets.signed.version,
                current.unwrap_or(0)
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
        let mut p = Publication::default();
        let v = targets.signed.version;
        p.put("targets.json", v.get(), current, bytes, now_ms);
        self.sign_snapshot(&mut p, &root.signed, bytes, v, now_ms)
            .await?;
        self.store.commit(p.0, vec![]).await?;
        Ok(v.get())
    }

    /// Adds a new snapshot over `targets_buf`, and a timestamp over it, to `p`.
    async fn sign_snapshot(
        &self,
        p: &mut Publication,
        root: &Root,
        targets_buf: &[u8],
        targets_version: NonZeroU64,
        now_ms: i64,
    ) -> Result<(), TufError> {
        let current = self.stored("snapshot.json").await?.map(|s| s.version);
        let version =
            NonZeroU64::new(current.unwrap_or(0) + 1).ok_or_else(|| internal("version"))?;
        let mut snapshot = Snapshot::new(SPEC_VERSION.into(), version, ts(now_ms + 7 * DAY_MS)?);
        snapshot
            .meta
            .insert("targets.json".into(), meta(targets_buf, targets_version));
        let snap_buf = sign_role(snapshot, root, &self.online()).await?;
        p.put("snapshot.json", version.get(), current, &snap_buf, now_ms);
        self.sign_timestamp(p, root, &snap_buf, version, now_ms)
            .await
    }

    /// Adds a new timestamp over `snap_buf` to `p`.
    async fn sign_timestamp(
        &self,
        p: &mut Publication,
        root: &Root,
        snap_buf: &[u8],
        snapshot_version: NonZeroU64,
        now_ms: i64,
    ) -> Result<(), TufError> {
        let current = self.stored("timestamp.json").await?.map(|s| s.version);
        let version =
            NonZeroU64::new(current.unwrap_or(0) + 1).ok_or_else(|| internal("version"))?;
        let mut ts_role = Timestamp::new(SPEC_VERSION.into(), version, ts(now_ms + DAY_MS)?);
        ts_role
            .meta
            .insert("snapshot.json".into(), meta(snap_buf, snapshot_version));
        let buf = sign_role(ts_role, root, &self.online()).await?;
        p.put("timestamp.json", version.get(), current, &buf, now_ms);
        Ok(())
    }

    /// Keeps the online roles fresh: re-signs the snapshot when less than
    /// three of its seven days are left, and the timestamp when it is more
    /// than an hour old (it is valid a day). Returns what it re-signed. One
    /// node at a time does this (the `tuf-signing` lead); if another node
    /// published meanwhile, the stored versions win and this is a conflict.
    pub async fn refresh(&self, now_ms: i64) -> Result<Refreshed, TufError> {
        let _g = self.lock.lock().await;
        let root = match self.root().await {
            Ok(r) => r,
            Err(TufError::NoRoot) => return Ok(Refreshed::Nothing),
            Err(e) => return Err(e),
        };
        let Some((snap, snapshot)) = self.read::<Signed<Snapshot>>("snapshot.json").await? else {
            return Ok(Refreshed::Nothing);
        };
        let expires = |t: &jiff::Timestamp| t.as_millisecond();
        let mut p = Publication::default();
        let what = if expires(&snapshot.signed.expires) - now_ms < SNAPSHOT_RENEW_MS {
            let Some(targets) = self.stored("targets.json").await? else {
                return Ok(Refreshed::Nothing);
            };
            let tv = NonZeroU64::new(targets.version).ok_or_else(|| internal("targets version"))?;
            self.sign_snapshot(&mut p, &root.signed, &targets.body, tv, now_ms)
                .await?;
            Refreshed::SnapshotAndTimestamp
        } else {
            let due = match self.read::<Signed<Timestamp>>("timestamp.json").await? {
                Some((_, t)) => expires(&t.signed.expires) - now_ms < TIMESTAMP_RENEW_MS,
                None => true,
            };
            if !due {
                return Ok(Refreshed::Nothing);
            }
            self.sign_timestamp(
                &mut p,
                &root.signed,
                &snap.body,
                snapshot.signed.version,
                now_ms,
            )
            .await?;
            Refreshed::Timestamp
        };
        self.store.commit(p.0, vec![]).await?;
        Ok(what)
    }
}

/// What [`Repository::refresh`] re-signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// Nothing was due (or there is nothing to sign yet).
    Nothing,
    /// A new timestamp.
    Timestamp,
    /// A new snapshot and a timestamp over it.
    SnapshotAndTimestamp,
}

/// Whether `name` is a metadata file the repository serves.
fn is_metadata_name(name: &str) -> bool {
    matches!(
        name,
        "root.json" | "targets.json" | "snapshot.json" | "timestamp.json"
    ) || name
        .strip_suffix(".root.json")
        .is_some_and(|v| !v.is_empty() && v.len() < 10 && v.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use palisade_core::KeyAlgorithm;
    use palisade_core::clock::FixedClock;
    use palisade_keystore::SoftwareKey;
    use palisade_store::{AuditConfig, SqlStore};
    use tough::schema::RoleKeys;
    use tough::schema::key::Key;

    const NOW: i64 = 1_800_000_000_000;

    async fn store(dir: &Path) -> Arc<dyn Store> {
        let (key, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "audit").unwrap();
        let audit = AuditConfig {
            origin: "test.invalid/audit".into(),
            key_name: "test.invalid/audit".into(),
            signer: Arc::new(key),
        };
        Arc::new(
            SqlStore::open(
                &dir.join("p.db"),
                audit,
                Arc::new(FixedClock(
                    time::OffsetDateTime::from_unix_timestamp(NOW / 1000).unwrap(),
                )),
            )
            .await
            .unwrap(),
        )
    }

    /// A root (one offline key for root and targets) naming `repo`'s online
    /// keys, installed, and targets over no release, published.
    async fn ceremony(repo: &Repository, offline: &Path) -> Signed<Root> {
        generate_key(offline).unwrap();
        let (oid, okey) = public_key(offline).await.unwrap();
        let online = repo.online_keys().await.unwrap();
        let mut keys = HashMap::new();
        let mut roles = HashMap::new();
        for (role, (expected, key)) in [
            (RoleType::Root, (oid.clone(), okey.clone())),
            (RoleType::Targets, (oid, okey)),
            (
                RoleType::Snapshot,
                (
                    online["snapshot"]["keyid"].as_str().unwrap().to_owned(),
                    online["snapshot"]["key"].clone(),
                ),
            ),
            (
                RoleType::Timestamp,
                (
                    online["timestamp"]["keyid"].as_str().unwrap().to_owned(),
                    online["timestamp"]["key"].clone(),
                ),
            ),
        ] {
            let key: Key = serde_json::from_value(key).unwrap();
            let id = key.key_id().unwrap();
            assert_eq!(hex::encode(&*id), expected);
            roles.insert(
                role,
                RoleKeys {
                    keyids: vec![id.clone()],
                    threshold: NonZeroU64::new(1).unwrap(),
                    _extra: HashMap::new(),
                },
            );
            keys.insert(id, key);
        }
        let root = Root {
            spec_version: SPEC_VERSION.into(),
            consistent_snapshot: false,
            version: NonZeroU64::new(1).unwrap(),
            expires: ts(NOW + 365 * DAY_MS).unwrap(),
            keys,
            roles,
            _extra: HashMap::new(),
        };
        let buf = sign_role(root.clone(), &root, &[offline.to_path_buf()])
            .await
            .unwrap();
        assert_eq!(repo.set_root(&buf, NOW).await.unwrap(), 1);
        let draft = repo.targets_draft(&[], NOW, 30).await.unwrap();
        let targets = sign_role(draft, &root, &[offline.to_path_buf()])
            .await
            .unwrap();
        assert_eq!(repo.publish_targets(&targets, &[], NOW).await.unwrap(), 1);
        serde_json::from_slice(&buf).unwrap()
    }

    async fn version(repo: &Repository, name: &str) -> u64 {
        let body = repo.metadata(name).await.unwrap().unwrap();
        serde_json::from_slice::<Value>(&body).unwrap()["signed"]["version"]
            .as_u64()
            .unwrap()
    }

    #[tokio::test]
    async fn the_online_roles_are_re_signed_before_they_expire_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(&dir.path().join("tuf"), store(dir.path()).await, NOW)
            .await
            .unwrap();
        assert_eq!(repo.refresh(NOW).await.unwrap(), Refreshed::Nothing);
        ceremony(&repo, &dir.path().join("offline.pk8")).await;
        assert_eq!(
            (
                version(&repo, "snapshot.json").await,
                version(&repo, "timestamp.json").await
            ),
            (1, 1)
        );
        // Fresh: nothing to do.
        assert_eq!(
            repo.refresh(NOW + 60_000).await.unwrap(),
            Refreshed::Nothing
        );
        // An hour on, the timestamp (valid a day) is renewed over the same snapshot.
        let hour = 3_600_000;
        assert_eq!(
            repo.refresh(NOW + hour + 1).await.unwrap(),
            Refreshed::Timestamp
        );
        assert_eq!(version(&repo, "timestamp.json").await, 2);
        assert_eq!(version(&repo, "snapshot.json").await, 1);
        // Four days on, less than three of the snapshot's seven days are left.
        assert_eq!(
            repo.refresh(NOW + 4 * DAY_MS + 1).await.unwrap(),
            Refreshed::SnapshotAndTimestamp
        );
        assert_eq!(
            (
                version(&repo, "snapshot.json").await,
                version(&repo, "timestamp.json").await
            ),
            (2, 3)
        );
        // The new snapshot still lists the published targets.
        let snap: Signed<Snapshot> =
            serde_json::from_slice(&repo.metadata("snapshot.json").await.unwrap().unwrap())
                .unwrap();
        assert_eq!(snap.signed.meta["targets.json"].version.get(), 1);
        assert_eq!(version(&repo, "1.root.json").await, 1);
        assert_eq!(repo.metadata("../p.db").await.unwrap(), None);
    }

    #[tokio::test]
    async fn two_nodes_on_one_database_serve_one_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let a = Repository::open(&dir.path().join("tuf"), store.clone(), NOW)
            .await
            .unwrap();
        // The second node has a copy of the first's data directory (its keys).
        let b = Repository::open(&dir.path().join("tuf"), store, NOW)
            .await
            .unwrap();
        ceremony(&a, &dir.path().join("offline.pk8")).await;
        for name in [
            "root.json",
            "targets.json",
            "snapshot.json",
            "timestamp.json",
        ] {
            assert_eq!(
                a.metadata(name).await.unwrap(),
                b.metadata(name).await.unwrap(),
                "{name}"
            );
        }
        // A node that signed over versions it read before another node
        // published is refused, and the published versions stay.
        let root = b.root().await.unwrap();
        let snap = b.stored("snapshot.json").await.unwrap().unwrap();
        let mut stale = Publication::default();
        b.sign_timestamp(
            &mut stale,
            &root.signed,
            &snap.body,
            NonZeroU64::new(1).unwrap(),
            NOW,
        )
        .await
        .unwrap();
        assert_eq!(
            a.refresh(NOW + DAY_MS / 2).await.unwrap(),
            Refreshed::Timestamp
        );
        let published = a.metadata("timestamp.json").await.unwrap();
        let err = b.store.commit(stale.0, vec![]).await.unwrap_err();
        assert!(
            matches!(err, palisade_store::StoreError::Conflict { .. }),
            "{err}"
        );
        assert_eq!(b.metadata("timestamp.json").await.unwrap(), published);
    }

    #[tokio::test]
    async fn metadata_files_of_an_earlier_version_move_into_the_database_once() {
        let dir = tempfile::tempdir().unwrap();
        let tuf = dir.path().join("tuf");
        let store = store(dir.path()).await;
        {
            let a = Repository::open(&tuf, store.clone(), NOW).await.unwrap();
            ceremony(&a, &dir.path().join("offline.pk8")).await;
        }
        // Put the metadata where earlier versions kept it, in a fresh database.
        let old = tuf.join("metadata");
        std::fs::create_dir_all(&old).unwrap();
        let a = Repository::open(&tuf, store, NOW).await.unwrap();
        let mut files = Vec::new();
        for name in [
            "root.json",
            "1.root.json",
            "targets.json",
            "snapshot.json",
            "timestamp.json",
        ] {
            let body = a.metadata(name).await.unwrap().unwrap();
            std::fs::write(old.join(name), &body).unwrap();
            files.push((name, body));
        }
        let fresh = tempfile::tempdir().unwrap();
        let b = Repository::open(&tuf, self::store(fresh.path()).await, NOW)
            .await
            .unwrap();
        for (name, body) in files {
            assert_eq!(b.metadata(name).await.unwrap(), Some(body), "{name}");
        }
        assert!(!old.exists());
        assert!(tuf.join("metadata.in-database/root.json").exists());
    }
}
