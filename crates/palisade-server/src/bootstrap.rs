//! First run and every run: the data directory, its lock, keys, CAs, the server's
//! TLS certificate, the store and the first admin token. Idempotent: whatever
//! exists is reused, whatever is missing is created, and every creation is
//! recorded in the inventory and the audit log.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use palisade_audit::EntryDraft;
use palisade_core::{Clock, KeyAlgorithm, OperatorName, Role, Signer};
use palisade_keystore::SoftwareKey;
use palisade_keystore::pkcs11::{Pkcs11Key, Pkcs11Uri};
use palisade_pki::{
    CertificateAuthority, Profile, San, Serial, inspect_certificate, pem_certificates, pem_to_der,
    public_key_raw_of,
};
use palisade_store::{AuditConfig, CertRecord, CertStatus, Change, Database, SqlStore, Store};
use ring::rand::SystemRandom;
use sha2::{Digest, Sha256};
use time::Duration;

use palisade_control::ca::{CaFiles, CaPolicy};
use palisade_control::config::Config;
use palisade_control::files::{ensure_private_dir, pem, write_atomic};
use palisade_control::pki::{Pki, cert_record};
use palisade_control::tokens::new_token;
use palisade_core::unix_ms;

/// The layout of the data directory.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.p("palisade.db")
    }
    /// The TUF image repository (online keys, metadata).
    pub fn tuf(&self) -> PathBuf {
        self.p("tuf")
    }
    /// Content-addressed blobs (firmware images, SBOMs, provenance).
    pub fn blobs(&self) -> PathBuf {
        self.p("blobs")
    }
    /// The online key that signs site policy bundles (PKCS#8 Ed25519, 0600).
    pub fn policy_key(&self) -> PathBuf {
        self.p("policy/policy.pk8")
    }
    /// The root CA certificates in service (PEM) that clients trust.
    pub fn root_cert(&self) -> PathBuf {
        self.p("ca/root.pem")
    }
    /// Every CA certificate in service, current issuing CA first (PEM).
    pub fn chain(&self) -> PathBuf {
        self.p("ca/chain.pem")
    }
    /// The server's TLS chain (leaf, current issuing CA and its
    /// cross-certificates; PEM).
    pub fn tls_cert(&self) -> PathBuf {
        self.p("tls/server.pem")
    }
    /// The server's TLS key (PKCS#8 PEM, 0600).
    pub fn tls_key(&self) -> PathBuf {
        self.p("tls/server.key")
    }
    /// The server's EDHOC private key (a P-256 scalar, 32 bytes, 0600).
    pub fn edhoc_key(&self) -> PathBuf {
        self.p("edhoc/server.key")
    }
    /// The server's EDHOC credential (a CCS, CBOR) that devices are given.
    pub fn edhoc_credential(&self) -> PathBuf {
        self.p("edhoc/credential.cbor")
    }
    /// The audit checkpoint verifier key (`name+id+key`).
    pub fn audit_vkey(&self) -> PathBuf {
        self.p("audit/log.pub")
    }
    /// The first admin token (0600).
    pub fn admin_token(&self) -> PathBuf {
        self.p("admin-token")
    }
    fn lock(&self) -> PathBuf {
        self.p(".lock")
    }
}

/// Everything `serve` needs, loaded and checked.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The data directory.
    pub dir: DataDir,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The CAs.
    pub pki: Arc<Pki>,
    /// Audit sealing configuration.
    pub audit: AuditConfig,
    /// The admin token file, if this run created it.
    pub created_admin_token: Option<PathBuf>,
    /// Held for the life of the process: a second process is refused.
    pub lock: File,
}

fn lock_data_dir(dir: &DataDir) -> anyhow::Result<File> {
    let path = dir.lock();
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another palisade process is already using the data directory {} (it holds {}); \
             stop it first, or give this one its own --data-dir",
            dir.0.display(),
            path.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The audit log's name, derived from its key so it never changes.
fn audit_origin(public: &[u8]) -> String {
    let d = Sha256::digest(public);
    format!("palisade-audit/{}", hex::encode(&d[..8]))
}

fn load_key(path: &Path, alg: KeyAlgorithm) -> anyhow::Result<(Arc<dyn Signer>, bool)> {
    let (k, created) = SoftwareKey::load_or_create(path, alg)
        .with_context(|| format!("loading or creating key {}", path.display()))?;
    Ok((Arc::new(k), created))
}

fn read_cert(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        pem_to_der(&text, "CERTIFICATE").with_context(|| format!("parsing {}", path.display()))?,
    ))
}

/// Records a certificate found on disk in the inventory if it is not there yet
/// (a crash between writing the file and committing leaves this gap).
async fn ensure_recorded(
    store: &dyn Store,
    der: &[u8],
    profile: &str,
    action: &str,
    now_ms: i64,
) -> anyhow::Result<()> {
    let info = inspect_certificate(der)?;
    if store.certificate(&info.serial_hex).await?.is_some() {
        return Ok(());
    }
    let record = CertRecord {
        serial: info.serial_hex.clone(),
        profile: profile.to_owned(),
        subject: info.subject.clone(),
        device: None,
        not_before_ms: unix_ms(info.not_before),
        not_after_ms: unix_ms(info.not_after),
        status: CertStatus::Valid,
        revoked_ms: None,
        reason: None,
        der: der.to_vec(),
        issued_ms: now_ms,
        // Recorded from a file: the first CAs and their early certificates.
        issuer: String::new(),
    };
    store
        .commit(
            vec![Change::InsertCertificate(record)],
            vec![
                EntryDraft::success("system", action, &info.serial_hex).with_detail(
                    serde_json::json!({ "subject": info.subject, "profile": profile,
                        "not_after": info.not_after.unix_timestamp() }),
                ),
            ],
        )
        .await?;
    Ok(())
}

/// Prepares the data directory and loads or creates everything in it.
pub async fn bootstrap(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Bootstrapped> {
    let dir = DataDir(config.data_dir.clone());
    ensure_private_dir(&dir.0)?;
    let lock = lock_data_dir(&dir)?;
    for sub in ["ca", "tls", "audit"] {
        ensure_private_dir(&dir.p(sub))?;
    }

    // The audit key first: nothing may be recorded before the log can be sealed.
    let (audit_key, _) = load_key(&dir.p("audit/log.key"), KeyAlgorithm::Ed25519)?;
    let origin = audit_origin(audit_key.public_key_raw());
    let audit = AuditConfig {
        origin: origin.clone(),
        key_name: origin,
        signer: audit_key,
    };
    let vkey = audit.verifier()?.to_vkey();
    write_atomic(&dir.audit_vkey(), format!("{vkey}\n").as_bytes(), 0o644)?;

    let database = config.store.database(&config.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open_database(&database, config.store.pool(), audit.clone(), clock.clone())
            .await
            .with_context(|| format!("opening the database {database}"))?,
    );
    // The database holds token hashes and the audit trail: owner-only, like the keys.
    if let Database::Sqlite(path) = &database {
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", path.display()));
            if f.exists() {
                fs::set_permissions(&f, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {}", f.display()))?;
            }
        }
    }
    let now = clock.now();
    let now_ms = unix_ms(now);
    let rng = SystemRandom::new();
    let org = config.organization.as_str();

    // The first root CA: its key is ca/root.key; its certificate is the one
    // in the inventory or in ca/root.pem (a bundle of every root in service
    // once the root has been rotated) that holds that key.
    let (root_key, _) = load_key(&dir.p("ca/root.key"), KeyAlgorithm::EcdsaP256)?;
    let mut known: Vec<Vec<u8>> = store
        .certificate_authorities()
        .await?
        .into_iter()
        .filter(|r| r.profile == "root")
        .map(|r| r.der)
        .collect();
    if dir.root_cert().exists() {
        let text = fs::read_to_string(dir.root_cert())
            .with_context(|| format!("reading {}", dir.root_cert().display()))?;
        known.extend(
            pem_certificates(&text)
                .with_context(|| format!("parsing {}", dir.root_cert().display()))?,
        );
    }
    let root = match known
        .into_iter()
        .find(|der| public_key_raw_of(der).is_ok_and(|k| k == root_key.public_key_raw()))
    {
        Some(der) => CertificateAuthority::from_parts(der, root_key)
            .context("the root certificate does not match ca/root.key")?,
        None if dir.root_cert().exists() => bail!(
            "no certificate in {} or the inventory holds the key ca/root.key: \
             restore the data directory's ca/ from a backup",
            dir.root_cert().display()
        ),
        None => {
            let root = CertificateAuthority::create_root(
                root_key,
                org,
                &format!("{org} Root CA"),
                now,
                Duration::days(i64::from(config.ca.root_validity_days)),
                &Serial::random(&rng)?,
            )?;
            write_atomic(
                &dir.root_cert(),
                pem("CERTIFICATE", root.certificate_der()).as_bytes(),
                0o644,
            )?;
            tracing::info!(path = %dir.root_cert().display(), "created root CA");
            root
        }
    };
    ensure_recorded(&*store, root.certificate_der(), "root", "ca.create", now_ms).await?;

    // The first issuing CA.
    let (int_key, where_) = match &config.ca.issuing_key {
        None => (
            load_key(&dir.p("ca/intermediate.key"), KeyAlgorithm::EcdsaP256)?.0,
            "ca/intermediate.key".to_string(),
        ),
        Some(uri) => {
            let uri = Pkcs11Uri::parse(uri).context("ca.issuing_key")?;
            let (key, created) = Pkcs11Key::open_or_generate(&uri)
                .with_context(|| format!("opening the issuing CA key {uri}"))?;
            if created {
                tracing::info!(key = %uri, "generated the issuing CA key on the token");
            }
            (Arc::new(key) as Arc<dyn Signer>, uri.to_string())
        }
    };
    let int_path = dir.p("ca/intermediate.pem");
    let issuing = match read_cert(&int_path)? {
        Some(der) => CertificateAuthority::from_parts(der, int_key).with_context(|| {
            format!(
                "ca/intermediate.pem does not match the issuing key {where_}; \
                 to move the issuing CA to a new key, rotate it on the running \
                 server (`palisade ca rotate-issuing --key URI`)"
            )
        })?,
        None => {
            let spki = int_key.spki_der();
            let issued = root.issue(
                &palisade_pki::IssueRequest {
                    profile: Profile::Intermediate,
                    common_name: &format!("{org} Issuing CA 1"),
                    sans: vec![],
                    spki_der: &spki,
                    validity: Duration::days(i64::from(config.ca.intermediate_validity_days)),
                    crl_url: None,
                },
                org,
                &Serial::random(&rng)?,
                now,
            )?;
            write_atomic(&int_path, pem("CERTIFICATE", &issued.der).as_bytes(), 0o644)?;
            tracing::info!(path = %int_path.display(), "created issuing CA");
            CertificateAuthority::from_parts(issued.der, int_key)?
        }
    };
    ensure_recorded(
        &*store,
        issuing.certificate_der(),
        "intermediate",
        "ca.create",
        now_ms,
    )
    .await?;

    // Every CA in service: the first two and whatever rotations made.
    let first = (Arc::new(root), Arc::new(issuing));
    let files = CaFiles::new(dir.p("ca"));
    let cas = palisade_control::ca::load(
        &*store,
        &files,
        first.0.clone(),
        first.1.clone(),
        None,
        now_ms,
    )
    .await
    .context("loading the CAs in service")?;
    let pki = Arc::new(Pki::new(
        cas,
        first,
        files,
        CaPolicy {
            organization: config.organization.clone(),
            root_validity: Duration::days(i64::from(config.ca.root_validity_days)),
            issuing_validity: Duration::days(i64::from(config.ca.intermediate_validity_days)),
        },
        &config.public_url(),
        Duration::hours(i64::from(config.ca.crl_validity_hours)),
        clock.clone(),
    ));
    write_trust_files(&dir, &pki)?;

    ensure_server_cert(config, &dir, &pki, &*store, now).await?;
    let created_admin_token = ensure_admin_token(&dir, &*store, now_ms).await?;

    Ok(Bootstrapped {
        dir,
        store,
        pki,
        audit,
        created_admin_token,
        lock,
    })
}

/// Writes what clients trust and chain with: `ca/root.pem` (every root in
/// service) and `ca/chain.pem` (every CA certificate in service).
pub fn write_trust_files(dir: &DataDir, pki: &Pki) -> anyhow::Result<()> {
    let cas = pki.cas();
    write_atomic(&dir.root_cert(), cas.roots_pem().as_bytes(), 0o644)?;
    write_atomic(&dir.chain(), cas.bundle_pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Issues the server's TLS certificate when missing, when the configured names
/// changed, when it is not from the current issuing CA, or when less than a
/// third of its lifetime remains.
pub async fn ensure_server_cert(
    config: &Config,
    dir: &DataDir,
    pki: &Pki,
    store: &dyn Store,
    now: time::OffsetDateTime,
) -> anyhow::Result<()> {
    let names_path = dir.p("tls/server.names");
    let wanted = config.server_names.join("\n");
    let current_names = fs::read_to_string(&names_path).unwrap_or_default();
    let (key, created) = load_key(&dir.tls_key(), KeyAlgorithm::EcdsaP256)?;
    let cas = pki.cas();
    if !created
        && current_names == wanted
        && let Some(der) = read_cert(&dir.tls_cert())?
    {
        let info = inspect_certificate(&der)?;
        let life = info.not_after - info.not_before;
        // After a rotation the server moves to the current issuing CA, so that
        // clients trusting only the new root can reach it.
        let from_current = info.issuer == cas.issuing().ca.info().subject;
        if info.not_after - now > life / 3 && from_current {
            // The chain sent with it follows the CAs in service (a root
            // retired takes its cross-certificate out).
            let chain = server_chain_pem(&der, &cas);
            if fs::read_to_string(dir.tls_cert()).ok().as_deref() != Some(chain.as_str()) {
                write_atomic(&dir.tls_cert(), chain.as_bytes(), 0o644)?;
            }
            return ensure_recorded(store, &der, "server", "cert.issue", unix_ms(now)).await;
        }
    }
    let sans = config
        .server_names
        .iter()
        .map(|n| match n.parse() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(n.clone()),
        })
        .collect();
    let spki = key.spki_der();
    let issued = pki.issue(
        Profile::Server,
        config
            .server_names
            .first()
            .map_or("localhost", String::as_str),
        sans,
        &spki,
        Duration::days(i64::from(config.ca.server_cert_validity_days)),
    )?;
    store
        .commit(
            vec![Change::InsertCertificate(cert_record(
                &issued,
                Profile::Server,
                None,
                now,
            ))],
            vec![
                EntryDraft::success("system", "cert.issue", &issued.info.serial_hex).with_detail(
                    serde_json::json!({ "profile": "server", "names": config.server_names }),
                ),
            ],
        )
        .await?;
    let chain = server_chain_pem(&issued.der, &cas);
    write_atomic(&dir.tls_cert(), chain.as_bytes(), 0o644)?;
    write_atomic(&names_path, wanted.as_bytes(), 0o644)?;
    tracing::info!(names = ?config.server_names, "issued the server TLS certificate");
    Ok(())
}

/// The server's certificate and what it is sent with, PEM.
fn server_chain_pem(leaf: &[u8], cas: &palisade_control::ca::CaSet) -> String {
    std::iter::once(leaf)
        .chain(cas.server_chain())
        .map(|c| pem("CERTIFICATE", c))
        .collect()
}

/// On the very first run (no token exists), creates the `admin` token and writes
/// it to `admin-token` (0600).
async fn ensure_admin_token(
    dir: &DataDir,
    store: &dyn Store,
    now_ms: i64,
) -> anyhow::Result<Option<PathBuf>> {
    if !store.tokens().await?.is_empty() {
        return Ok(None);
    }
    let operator = OperatorName::parse("admin")?;
    let (text, record) = new_token(operator, Role::Admin, now_ms, None)?;
    let path = dir.admin_token();
    write_atomic(&path, format!("{}\n", text.as_str()).as_bytes(), 0o600)?;
    store
        .commit(
            vec![Change::InsertToken(record.clone())],
            vec![
                EntryDraft::success("system", "token.create", &record.id)
                    .with_detail(serde_json::json!({ "operator": "admin", "role": "admin" })),
            ],
        )
        .await?;
    Ok(Some(path))
}
