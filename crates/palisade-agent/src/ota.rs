//! The installer: fetches this device's director assignment, checks it against
//! the TUF image repository (tough), downloads the image over mutual TLS with
//! resume into the inactive A/B slot while hashing it, and records boot control
//! in the U-Boot environment so the next boot is a trial that commits after a
//! health check or falls back on its own.
//!
//! Crash safety rests on three rules: the slot being written is never the one
//! the environment boots (its recorded hash is cleared first); the environment
//! changes only by whole redundant-copy writes; and the trial is started in
//! one environment write after the image is on storage and verified.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use palisade_bootenv::{BootEnv, EnvError, EnvLocation, Layout, Slot};
use palisade_core::Signer;
use palisade_core::UpdateState;
use palisade_release::director::{self, RepositoryTarget, SignedAssignment};
use ring::digest::{Context, SHA256};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::EstClient;
use crate::tls_key::ClientIdentity;

/// Why an update cycle could not run (refusals are an [`Outcome`], not errors).
#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    /// Boot control (the U-Boot environment) could not be read or written.
    #[error("U-Boot environment: {0}")]
    Env(String),
    /// A slot or state file failed.
    #[error("{path}: {reason}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The server could not be reached or answered badly (retry later).
    #[error("server: {0}")]
    Server(String),
    /// The TUF repository could not be loaded (retry later, or refused if it
    /// persists: tough's reason follows).
    #[error("TUF repository: {0}")]
    Tuf(String),
    /// The anti-rollback floor (TPM NV counter) could not be read or raised.
    #[error("anti-rollback floor: {0}")]
    Floor(String),
    /// The download stopped short; the next cycle resumes it.
    #[error("download interrupted at {got} of {want} bytes; it resumes next time")]
    Interrupted {
        /// Bytes on storage.
        got: u64,
        /// Image length.
        want: u64,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> OtaError {
    OtaError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// What one update cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do.
    Idle,
    /// A new image is in the inactive slot and its trial boot is armed: reboot.
    RebootRequired,
    /// The trial boot passed its health check and was committed.
    Committed(String),
    /// The trial failed (health check or U-Boot's boot limit): back on the old slot.
    RolledBack(String),
    /// The assignment was refused: why.
    Refused(String),
}

/// Where the device keeps its slots and boot control.
#[derive(Debug, Clone)]
pub struct OtaConfig {
    /// libubootenv's `fw_env.config` naming the environment copies.
    pub fw_env_config: PathBuf,
    /// Slot A (file or block device).
    pub slot_a: PathBuf,
    /// Slot B.
    pub slot_b: PathBuf,
    /// This device's hardware revision (matched against releases).
    pub hardware: String,
    /// Trial boots before U-Boot falls back.
    pub bootlimit: u32,
    /// A provisioned TUF root (trusted); without it the root is fetched once
    /// from the Palisade server over TLS pinned to the Palisade root CA.
    pub tuf_root: Option<PathBuf>,
    /// A command run during the trial boot; failure rolls back.
    pub health_command: Option<String>,
    /// Ask for a delta from the running image first (full download if none).
    pub deltas: bool,
}

/// The U-Boot environment on storage, as `fw_env.config` places it.
#[derive(Debug, Clone)]
pub struct BootControl {
    locs: Vec<EnvLocation>,
    layout: Layout,
}

impl BootControl {
    /// Reads `fw_env.config`.
    pub fn open(config: &Path) -> Result<Self, OtaError> {
        let text = std::fs::read_to_string(config).map_err(|e| io_err(config, e))?;
        let (locs, layout) = palisade_bootenv::parse_fw_env_config(&text)
            .map_err(|e| OtaError::Env(e.to_string()))?;
        Ok(Self { locs, layout })
    }

    fn read_copy(&self, loc: &EnvLocation) -> Vec<u8> {
        // A missing or short copy reads as zeros: its CRC fails and the other
        // copy is used.
        let mut buf = vec![0u8; self.layout.size];
        if let Ok(mut f) = std::fs::File::open(&loc.device)
            && f.seek(SeekFrom::Start(loc.offset)).is_ok()
        {
            let mut got = 0;
            while got < buf.len() {
                match f.read(&mut buf[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        }
        buf
    }

    /// The environment; a device with no valid copy has U-Boot's empty default.
    pub fn read(&self) -> Result<BootEnv, OtaError> {
        let copies: Vec<Vec<u8>> = self.locs.iter().map(|l| self.read_copy(l)).collect();
        let refs: Vec<&[u8]> = copies.iter().map(Vec::as_slice).collect();
        match BootEnv::parse(&refs, self.layout) {
            Ok(env) => Ok(env),
            Err(EnvError::NoValidCopy) => {
                BootEnv::empty(self.layout).map_err(|e| OtaError::Env(e.to_string()))
            }
            Err(e) => Err(OtaError::Env(e.to_string())),
        }
    }

    /// Writes `env` to the copy that is not current (in place, then synced).
    pub fn write(&self, env: &mut BootEnv) -> Result<(), OtaError> {
        let (i, bytes) = env.next_write().map_err(|e| OtaError::Env(e.to_string()))?;
        let loc = &self.locs[i.min(self.locs.len() - 1)];
        let path = Path::new(&loc.device);
        let mut f = open_in_place(path).map_err(|e| io_err(path, e))?;
        f.seek(SeekFrom::Start(loc.offset))
            .and_then(|_| f.write_all(&bytes))
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err(path, e))?;
        env.written();
        Ok(())
    }
}

/// What the environment records about the image in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotImage {
    /// SHA-256 (hex).
    pub sha256: String,
    /// Bytes.
    pub length: u64,
    /// Release version.
    pub version: String,
    /// Its security version.
    pub security_version: u64,
}

fn var(slot: Slot, name: &str) -> String {
    format!("slot_{}_{name}", slot.as_str())
}

/// The image recorded for `slot`, if any.
pub fn slot_image(env: &BootEnv, slot: Slot) -> Option<SlotImage> {
    Some(SlotImage {
        sha256: env.get(&var(slot, "sha256"))?.to_string(),
        length: env.get(&var(slot, "length"))?.parse().ok()?,
        version: env.get(&var(slot, "version")).unwrap_or("").to_string(),
        security_version: env
            .get(&var(slot, "secver"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// Records (or with `None` clears) the image in `slot`.
pub fn set_slot_image(
    env: &mut BootEnv,
    slot: Slot,
    img: Option<&SlotImage>,
) -> Result<(), OtaError> {
    let e = |e: EnvError| OtaError::Env(e.to_string());
    match img {
        Some(i) => {
            env.set(&var(slot, "sha256"), &i.sha256).map_err(e)?;
            env.set(&var(slot, "length"), &i.length.to_string())
                .map_err(e)?;
            env.set(&var(slot, "version"), &i.version).map_err(e)?;
            env.set(&var(slot, "secver"), &i.security_version.to_string())
                .map_err(e)?;
        }
        None => {
            for n in ["sha256", "length", "version", "secver"] {
                env.set(&var(slot, n), "").map_err(e)?;
            }
        }
    }
    Ok(())
}

/// SHA-256 (hex) of the first `len` bytes of `path`.
pub fn hash_prefix(path: &Path, len: u64) -> Result<(Context, u64), OtaError> {
    let mut ctx = Context::new(&SHA256);
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f.take(len));
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(|e| io_err(path, e))?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((ctx, n))
}

/// Whether the image in `path` is the one recorded (what a verified boot checks).
pub fn slot_verifies(path: &Path, img: &SlotImage) -> bool {
    match hash_prefix(path, img.length) {
        Ok((ctx, n)) => n == img.length && hex(ctx.finish().as_ref()) == img.sha256,
        Err(_) => false,
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// One boot as U-Boot with `bootcount` decides it, with a verified boot: a
/// trial slot whose image does not verify counts as a failed boot. Returns the
/// slot booted, or an error when no slot can boot (a bricked device).
pub fn boot(ctl: &BootControl, cfg: &OtaConfig) -> Result<(Slot, SlotImage), OtaError> {
    let mut env = ctl.read()?;
    for _ in 0..=16 {
        let (slot, _fell_back) = env.boot().map_err(|e| OtaError::Env(e.to_string()))?;
        ctl.write(&mut env)?;
        let path = slot_path(cfg, slot);
        match slot_image(&env, slot) {
            Some(img) if slot_verifies(path, &img) => return Ok((slot, img)),
            _ if env.in_trial() => continue, // a failed boot: count it
            _ => {
                return Err(OtaError::Env(format!(
                    "slot {} does not hold a verified image: the device cannot boot",
                    slot.as_str()
                )));
            }
        }
    }
    Err(OtaError::Env("no bootable slot".into()))
}

fn slot_path(cfg: &OtaConfig, slot: Slot) -> &Path {
    match slot {
        Slot::A => &cfg.slot_a,
        Slot::B => &cfg.slot_b,
    }
}

/// Factory step: writes `image` into slot A and records it as the booted slot.
pub fn init_slot(cfg: &OtaConfig, image: &Path, version: &str) -> Result<SlotImage, OtaError> {
    let bytes = std::fs::read(image).map_err(|e| io_err(image, e))?;
    write_file_synced(&cfg.slot_a, &bytes)?;
    let ctl = BootControl::open(&cfg.fw_env_config)?;
    let mut env = ctl.read()?;
    let img = SlotImage {
        sha256: hex(ring::digest::digest(&SHA256, &bytes).as_ref()),
        length: bytes.len() as u64,
        version: version.to_string(),
        security_version: 0,
    };
    env.set("boot_slot", "a")
        .map_err(|e| OtaError::Env(e.to_string()))?;
    set_slot_image(&mut env, Slot::A, Some(&img))?;
    ctl.write(&mut env)?;
    Ok(img)
}

fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<(), OtaError> {
    let mut f = open_in_place(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(|e| io_err(path, e))
}

/// Opens a slot or environment device for writing in place: created if it is
/// a missing file, never truncated (a block device cannot be, and a copy of
/// the environment must keep its size).
fn open_in_place(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// A small state file written whole: to a temporary name, synced, renamed.
fn write_state(path: &Path, bytes: &[u8]) -> Result<(), OtaError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The anti-rollback floor: the lowest security version this device installs.
/// It only ever goes up.
pub trait Floor: Send + Sync + std::fmt::Debug {
    /// The current floor.
    fn get(&self) -> Result<u64, OtaError>;
    /// Raises the floor to `v` (a lower `v` leaves it unchanged).
    fn raise(&self, v: u64) -> Result<(), OtaError>;
}

/// The floor in a file (devices without a TPM).
#[derive(Debug)]
pub struct FileFloor(pub PathBuf);

impl Floor for FileFloor {
    fn get(&self) -> Result<u64, OtaError> {
        match std::fs::read_to_string(&self.0) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| io_err(&self.0, "not a number: the floor file is corrupt")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&self.0, e)),
        }
    }

    fn raise(&self, v: u64) -> Result<(), OtaError> {
        if v > self.get()? {
            write_state(&self.0, v.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// A download in progress, so an interrupted one resumes.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    counter: u64,
    sha256: String,
    slot: String,
    offset: u64,
}

/// How often the download is synced and its progress recorded.
const SYNC_EVERY: u64 = 1 << 20;

/// The installer for one enrolled device.
#[derive(Clone)]
pub struct Installer {
    cfg: OtaConfig,
    dir: PathBuf,
    est: EstClient,
    device: String,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn Signer>,
    floor: Arc<dyn Floor>,
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installer")
            .field("device", &self.device)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// TUF metadata over mutual TLS, for tough. It notes whether the network
/// failed, so a verification failure (which tough also reports as a transport
/// error when a hash or size does not match) is told apart from an outage.
#[derive(Clone)]
struct MtlsTransport {
    est: EstClient,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn Signer>,
    network_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl MtlsTransport {
    fn failed(&self) {
        self.network_failed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for MtlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MtlsTransport")
    }
}

#[tough::async_trait]
impl tough::Transport for MtlsTransport {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let id = ClientIdentity::new(self.chain.clone(), self.key.clone());
        let resp = self
            .est
            .get_stream(url.path(), id, None)
            .await
            .map_err(|e| {
                self.failed();
                TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
            })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(TransportError::new(
                    TransportErrorKind::FileNotFound,
                    url.as_str(),
                ));
            }
            s => {
                self.failed();
                return Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    url.as_str(),
                    OtaError::Server(format!("HTTP {s}")),
                ));
            }
        }
        let u = url.to_string();
        let body = resp.into_body();
        let flag = self.network_failed.clone();
        let stream = futures_util::stream::unfold(Some(body), move |body| {
            let u = u.clone();
            let flag = flag.clone();
            async move {
                let mut body = body?;
                loop {
                    match body.frame().await {
                        None => return None,
                        Some(Err(e)) => {
                            flag.store(true, std::sync::atomic::Ordering::SeqCst);
                            return Some((
                                Err(TransportError::new_with_cause(
                                    TransportErrorKind::Other,
                                    u.as_str(),
                                    e,
                                )),
                                None,
                            ));
                        }
                        Some(Ok(f)) => {
                            if let Ok(data) = f.into_data() {
                                return Some((Ok(data), Some(body)));
                            }
                        }
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

/// The director's Ed25519 key, pinned in `dir/director.pub` on first use
/// (fetched over TLS pinned to the Palisade root, with the device's
/// certificate). Director assignments and wipe commands are checked with it.
pub async fn director_key(
    est: &EstClient,
    identity: ClientIdentity,
    dir: &Path,
) -> Result<Vec<u8>, OtaError> {
    let p = dir.join("director.pub");
    if let Ok(k) = std::fs::read(&p) {
        return Ok(k);
    }
    let (status, body) = est
        .call(Method::GET, "/director/v1/key", identity, None)
        .await
        .map_err(|e| OtaError::Server(e.to_string()))?;
    if status != StatusCode::OK {
        return Err(OtaError::Server(format!("director key: HTTP {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| OtaError::Server(e.to_string()))?;
    let k = v["ed25519_public"]
        .as_str()
        .and_then(|s| palisade_attest::unb64("director key", s, 64).ok())
        .filter(|k| k.len() == 32)
        .ok_or_else(|| OtaError::Server("the director key is malformed".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    write_state(&p, &k)?;
    Ok(k)
}

impl Installer {
    /// An installer for the device with this operational identity; its state
    /// (pinned director key, TUF metadata, counters, progress) lives in `dir`.
    pub fn new(
        cfg: OtaConfig,
        dir: &Path,
        est: EstClient,
        device: &str,
        chain: Vec<CertificateDer<'static>>,
        key: Arc<dyn Signer>,
        floor: Option<Arc<dyn Floor>>,
    ) -> Result<Self, OtaError> {
        std::fs::create_dir_all(dir.join("tuf")).map_err(|e| io_err(dir, e))?;
        let floor = floor.unwrap_or_else(|| Arc::new(FileFloor(dir.join("floor"))));
        Ok(Self {
            cfg,
            dir: dir.to_path_buf(),
            est,
            device: device.to_string(),
            chain,
            key,
            floor,
        })
    }

    fn identity(&self) -> ClientIdentity {
        ClientIdentity::new(self.chain.clone(), self.key.clone())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::body::Bytes), OtaError> {
        self.est
            .call(method, path, self.identity(), json)
            .await
            .map_err(|e| OtaError::Server(e.to_string()))
    }

    /// Reports a state to the server (best effort: a failure is logged).
    pub async fn report(
        &self,
        counter: u64,
        target: &str,
        state: UpdateState,
        detail: &str,
    ) -> bool {
        let body = serde_json::json!({
            "counter": counter, "target": target, "state": state.as_str(),
            "detail": detail.chars().take(2000).collect::<String>(),
        });
        match self
            .call(
                Method::POST,
                "/director/v1/report",
                Some(body.to_string().into_bytes()),
            )
            .await
        {
            Ok((StatusCode::NO_CONTENT, _)) => true,
            Ok((s, b)) => {
                tracing::warn!(status = %s, body = %String::from_utf8_lossy(&b), "update report refused");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not report the update state");
                false
            }
        }
    }

    fn last_counter(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("counter"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn done(&self, counter: u64) -> Result<(), OtaError> {
        if counter > self.last_counter() {
            write_state(&self.dir.join("counter"), counter.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// The director's key, pinned on first use (fetched over TLS pinned to
    /// the Palisade root, with this device's certificate).
    async fn director_key(&self) -> Result<Vec<u8>, OtaError> {
        director_key(&self.est, self.identity(), &self.dir).await
    }

    /// The trusted TUF root: provisioned, or pinned on first use.
    async fn tuf_root(&self) -> Result<Vec<u8>, OtaError> {
        let p = self.dir.join("tuf/root.json");
        if let Ok(r) = std::fs::read(&p) {
            return Ok(r);
        }
        let root = match &self.cfg.tuf_root {
            Some(src) => std::fs::read(src).map_err(|e| io_err(src, e))?,
            None => {
                let (status, body) = self
                    .call(Method::GET, "/tuf/metadata/1.root.json", None)
                    .await?;
                if status != StatusCode::OK {
                    return Err(OtaError::Tuf(format!(
                        "the repository has no root yet (HTTP {status})"
                    )));
                }
                body.to_vec()
            }
        };
        write_state(&p, &root)?;
        Ok(root)
    }

    async fn repository_target(
        &self,
        name: &str,
    ) -> Result<Result<RepositoryTarget, String>, OtaError> {
        let root = self.tuf_root().await?;
        let base = format!("https://{}:{}/tuf/", self.est.host(), self.est.port());
        let meta = url::Url::parse(&format!("{base}metadata/"))
            .map_err(|e| OtaError::Tuf(e.to_string()))?;
        let targets = url::Url::parse(&format!("{base}targets/"))
            .map_err(|e| OtaError::Tuf(e.to_string()))?;
        let store = self.dir.join("tuf/datastore");
        std::fs::create_dir_all(&store).map_err(|e| io_err(&store, e))?;
        let network_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let repo = tough::RepositoryLoader::new(&root, meta, targets)
            .transport(MtlsTransport {
                est: self.est.clone(),
                chain: self.chain.clone(),
                key: self.key.clone(),
                network_failed: network_failed.clone(),
            })
            .datastore(store)
            .load()
            .await;
        let repo = match repo {
            Ok(r) => r,
            Err(e) => {
                let text = error_chain(&e);
                // Network failures are retried; anything else is the
                // repository failing verification.
                if network_failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(OtaError::Tuf(text));
                }
                return Ok(Err(format!(
                    "the TUF repository failed verification: {text}"
                )));
            }
        };
        let Ok(tn) = tough::TargetName::new(name) else {
            return Ok(Err(format!("target name {name:?} is not valid")));
        };
        let Some(t) = repo.targets().signed.targets.get(&tn) else {
            return Ok(Err(format!(
                "director and image repository disagree: target {name} is not in the signed targets"
            )));
        };
        Ok(Ok(RepositoryTarget {
            name: name.to_string(),
            sha256: hex(&t.hashes.sha256),
            length: t.length,
            security_version: t
                .custom
                .get("security_version")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            hardware: t
                .custom
                .get("hardware")
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    /// One cycle: finish a trial boot, notice a fallback, or act on the
    /// director's assignment.
    pub async fn cycle(&self, now_ms: i64) -> Result<Outcome, OtaError> {
        let ctl = BootControl::open(&self.cfg.fw_env_config)?;
        let mut env = ctl.read()?;
        let trial_counter: u64 = env
            .get("palisade_trial")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let trial_target = env.get("palisade_target").unwrap_or("").to_string();
        if env.in_trial() {
            return self
                .finish_trial(&ctl, env, trial_counter, &trial_target)
                .await;
        }
        if trial_counter != 0 {
            // U-Boot ended the trial (boot limit): the old slot runs again.
            let why = "the new image did not boot within the boot limit; back on the previous slot";
            self.report(trial_counter, &trial_target, UpdateState::RolledBack, why)
                .await;
            env.set("palisade_trial", "")
                .map_err(|e| OtaError::Env(e.to_string()))?;
            env.set("palisade_target", "")
                .map_err(|e| OtaError::Env(e.to_string()))?;
            ctl.write(&mut env)?;
            self.done(trial_counter)?;
            return Ok(Outcome::RolledBack(why.into()));
        }
        self.assignment(&ctl, env, now_ms).await
    }

    async fn finish_trial(
        &self,
        ctl: &BootControl,
        mut env: BootEnv,
        counter: u64,
        target: &str,
    ) -> Result<Outcome, OtaError> {
        let envf = |e: EnvError| OtaError::Env(e.to_string());
        let slot = env.active_slot();
        let img = slot_image(&env, slot);
        // The health check: the device reaches the control plane again with
        // its identity, and the operator's check (if any) passes.
        let mut failure = None;
        if !self
            .report(counter, target, UpdateState::Trial, "booted the new image")
            .await
        {
            failure = Some("the control plane could not be reached from the new image".to_string());
        } else if let Some(cmd) = &self.cfg.health_command {
            let version = img.as_ref().map(|i| i.version.as_str()).unwrap_or("");
            match std::process::Command::new("/bin/sh")
                .args(["-c", cmd])
                .env("PALISADE_TRIAL_VERSION", version)
                .status()
            {
                Ok(s) if s.success() => {}
                Ok(s) => failure = Some(format!("the health check `{cmd}` failed ({s})")),
                Err(e) => failure = Some(format!("the health check `{cmd}` could not run: {e}")),
            }
        }
        match failure {
            None => {
                env.commit().map_err(envf)?;
                env.set("palisade_trial", "").map_err(envf)?;
                env.set("palisade_target", "").map_err(envf)?;
                ctl.write(&mut env)?;
                if let Some(i) = &img {
                    self.floor.raise(i.security_version)?;
                }
                self.done(counter)?;
                let version = img.map(|i| i.version).unwrap_or_default();
                self.report(counter, target, UpdateState::Committed, &version)
                    .await;
                Ok(Outcome::Committed(version))
            }
            Some(why) => {
                // Fall back now rather than waiting for the boot limit.
                let alt = env
                    .get("alt_slot")
                    .and_then(Slot::parse)
                    .unwrap_or(slot.other());
                env.set("boot_slot", alt.as_str()).map_err(envf)?;
                env.set("upgrade_available", "0").map_err(envf)?;
                env.set("bootcount", "0").map_err(envf)?;
                env.set("palisade_trial", "").map_err(envf)?;
                env.set("palisade_target", "").map_err(envf)?;
                ctl.write(&mut env)?;
                self.done(counter)?;
                self.report(counter, target, UpdateState::RolledBack, &why)
                    .await;
                Ok(Outcome::RolledBack(why))
            }
        }
    }

    async fn refuse(&self, counter: u64, target: &str, why: String) -> Result<Outcome, OtaError> {
        tracing::warn!(counter, target, reason = %why, "update refused");
        let _ = std::fs::remove_file(self.dir.join("progress.json"));
        self.done(counter)?;
        self.report(counter, target, UpdateState::Refused, &why)
            .await;
        Ok(Outcome::Refused(why))
    }

    async fn assignment(
        &self,
        ctl: &BootControl,
        mut env: BootEnv,
        now_ms: i64,
    ) -> Result<Outcome, OtaError> {
        let (status, body) = self
            .call(Method::GET, "/director/v1/assignment", None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Outcome::Idle);
        }
        if status != StatusCode::OK {
            return Err(OtaError::Server(format!("assignment: HTTP {status}")));
        }
        let last = self.last_counter();
        let signed: SignedAssignment = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .refuse(last, "", format!("the assignment is malformed: {e}"))
                    .await;
            }
        };
        let key = self.director_key().await?;
        let a = match director::verify_assignment(&signed, &key, &self.device, now_ms, last) {
            Ok(a) => a,
            Err(director::DirectorError::Replayed { got, last: l }) if got == l => {
                return Ok(Outcome::Idle); // already handled
            }
            Err(e) => return self.refuse(last, "", e.to_string()).await,
        };
        let active = env.active_slot();
        if slot_image(&env, active).is_some_and(|i| i.sha256.eq_ignore_ascii_case(&a.sha256)) {
            self.done(a.counter)?;
            self.report(
                a.counter,
                &a.target,
                UpdateState::Committed,
                "already running this image",
            )
            .await;
            return Ok(Outcome::Idle);
        }
        let repo = match self.repository_target(&a.target).await? {
            Ok(r) => r,
            Err(why) => return self.refuse(a.counter, &a.target, why).await,
        };
        let floor = self.floor.get()?;
        if let Err(e) = director::agree(&a, &repo, &self.cfg.hardware, floor) {
            return self.refuse(a.counter, &a.target, e.to_string()).await;
        }
        self.report(a.counter, &a.target, UpdateState::Downloading, &a.version)
            .await;
        let inactive = active.other();
        if slot_image(&env, inactive).is_some() {
            // The slot is about to change: it must not be bootable meanwhile.
            set_slot_image(&mut env, inactive, None)?;
            ctl.write(&mut env)?;
        }
        let path = slot_path(&self.cfg, inactive).to_path_buf();
        let running = slot_image(&env, active);
        let by_delta = match running {
            Some(cur) if self.cfg.deltas => {
                self.install_delta(&a, &cur, slot_path(&self.cfg, active), &path)
                    .await
            }
            _ => false,
        };
        if !by_delta {
            match self.download(&a, inactive, &path).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return self.refuse(a.counter, &a.target, why).await,
                Err(e) => {
                    // Interrupted or unreachable: the operator sees why it is
                    // still downloading; the next cycle resumes.
                    self.report(
                        a.counter,
                        &a.target,
                        UpdateState::Downloading,
                        &e.to_string(),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
        let envf = |e: EnvError| OtaError::Env(e.to_string());
        set_slot_image(
            &mut env,
            inactive,
            Some(&SlotImage {
                sha256: a.sha256.to_ascii_lowercase(),
                length: a.length,
                version: a.version.clone(),
                security_version: a.security_version,
            }),
        )?;
        env.set("palisade_trial", &a.counter.to_string())
            .map_err(envf)?;
        env.set("palisade_target", &a.target).map_err(envf)?;
        env.begin_trial(inactive, self.cfg.bootlimit)
            .map_err(envf)?;
        ctl.write(&mut env)?;
        let _ = std::fs::remove_file(self.dir.join("progress.json"));
        self.report(
            a.counter,
            &a.target,
            UpdateState::Installed,
            "trial boot armed",
        )
        .await;
        Ok(Outcome::RebootRequired)
    }

    /// Rebuilds the assigned image in `path` from the running image and a
    /// delta, and checks it against the signed hash and length. Any failure
    /// (no delta, too large, corrupt, not the signed image) means a full
    /// download instead.
    async fn install_delta(
        &self,
        a: &director::Assignment,
        cur: &SlotImage,
        active: &Path,
        path: &Path,
    ) -> bool {
        // A resumable full download would otherwise continue over bytes the
        // delta wrote.
        let _ = std::fs::remove_file(self.dir.join("progress.json"));
        let resp = match self
            .est
            .get_stream(
                &format!("/tuf/deltas/{}?from={}", a.target, cur.sha256),
                self.identity(),
                None,
            )
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                tracing::info!(status = %r.status(), "no delta offered; downloading in full");
                return false;
            }
            Err(e) => {
                tracing::info!(error = %e, "no delta; downloading in full");
                return false;
            }
        };
        // A delta larger than the image is no delta.
        let limit = usize::try_from(a.length)
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024);
        let delta = match http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tracing::warn!(error = %e, "the delta could not be read; downloading in full");
                return false;
            }
        };
        let (a2, cur2, active, path) = (a.clone(), cur.clone(), active.to_owned(), path.to_owned());
        let dlen = delta.len();
        let rebuilt = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let old = std::fs::read(&active).map_err(|e| e.to_string())?;
            let old = old
                .get(..usize::try_from(cur2.length).unwrap_or(usize::MAX))
                .ok_or("the running slot is short")?;
            if hex(ring::digest::digest(&SHA256, old).as_ref()) != cur2.sha256 {
                return Err("the running slot does not hold its recorded image".into());
            }
            let mut f = open_in_place(&path).map_err(|e| e.to_string())?;
            let mut ctx = Context::new(&SHA256);
            let n = palisade_release::delta::apply(old, &delta[..], a2.length, |chunk| {
                ctx.update(chunk);
                f.write_all(chunk)
            })
            .map_err(|e| e.to_string())?;
            f.sync_data().map_err(|e| e.to_string())?;
            let got = hex(ctx.finish().as_ref());
            if n != a2.length || !got.eq_ignore_ascii_case(&a2.sha256) {
                return Err(format!(
                    "the rebuilt image ({n} bytes, SHA-256 {got}) is not the signed one"
                ));
            }
            Ok(())
        })
        .await;
        match rebuilt {
            Ok(Ok(())) => {
                tracing::info!(
                    delta_bytes = dlen,
                    image_bytes = a.length,
                    "installed from a delta"
                );
                true
            }
            Ok(Err(why)) => {
                tracing::warn!(reason = %why, "the delta failed; downloading in full");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the delta failed; downloading in full");
                false
            }
        }
    }

    /// Streams the image into `path`, hashing as it goes; resumes a download
    /// of the same image into the same slot. `Ok(Err(why))` is a refusal.
    async fn download(
        &self,
        a: &director::Assignment,
        slot: Slot,
        path: &Path,
    ) -> Result<Result<(), String>, OtaError> {
        let progress_path = self.dir.join("progress.json");
        let resume = std::fs::read(&progress_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Progress>(&b).ok())
            .filter(|p| p.sha256 == a.sha256 && p.slot == slot.as_str() && p.offset <= a.length);
        let (mut ctx, mut offset) = match resume {
            Some(p) if p.offset > 0 => {
                tracing::info!(offset = p.offset, length = a.length, target = %a.target, "resuming the download");
                let (ctx, n) = hash_prefix(path, p.offset)?;
                if n == p.offset {
                    (ctx, n)
                } else {
                    (Context::new(&SHA256), 0)
                }
            }
            _ => (Context::new(&SHA256), 0),
        };
        let resp = self
            .est
            .get_stream(
                &format!("/tuf/targets/{}", a.target),
                self.identity(),
                (offset > 0 && offset < a.length).then_some(offset),
            )
            .await
            .map_err(|e| OtaError::Server(e.to_string()))?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                ctx = Context::new(&SHA256);
                offset = 0;
            }
            s => return Err(OtaError::Server(format!("image download: HTTP {s}"))),
        }
        let mut file = open_in_place(path).map_err(|e| io_err(path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io_err(path, e))?;
        let mut body = resp.into_body();
        let mut since_sync = 0u64;
        let save = |offset: u64| {
            let p = Progress {
                counter: a.counter,
                sha256: a.sha256.clone(),
                slot: slot.as_str().into(),
                offset,
            };
            write_state(&progress_path, &serde_json::to_vec(&p).unwrap_or_default())
        };
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame
                .map_err(|e| OtaError::Server(e.to_string()))?
                .into_data()
            else {
                continue;
            };
            if offset + data.len() as u64 > a.length {
                return Ok(Err(format!(
                    "endless data: the server sent more than the {} bytes the signed metadata allow",
                    a.length
                )));
            }
            file.write_all(&data).map_err(|e| io_err(path, e))?;
            ctx.update(&data);
            offset += data.len() as u64;
            since_sync += data.len() as u64;
            if since_sync >= SYNC_EVERY {
                file.sync_data().map_err(|e| io_err(path, e))?;
                save(offset)?;
                since_sync = 0;
            }
        }
        file.sync_data().map_err(|e| io_err(path, e))?;
        if offset < a.length {
            save(offset)?;
            return Err(OtaError::Interrupted {
                got: offset,
                want: a.length,
            });
        }
        let got = hex(ctx.finish().as_ref());
        if !got.eq_ignore_ascii_case(&a.sha256) {
            return Ok(Err(format!(
                "the image's SHA-256 {got} is not the signed {} (swapped or corrupt): not installed",
                a.sha256
            )));
        }
        Ok(Ok(()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
