//! The CAs in service and their rotation.
//!
//! Trust comes from the inventory, signing from the keys this node holds. Every
//! CA certificate is recorded in the store (profiles `root`, `intermediate` and
//! `cross`); a CA is in service until it is retired (recorded as revoked,
//! `cessation-of-operation`) or, for an issuing CA that is no longer current,
//! until the last certificate it issued has expired. The first root and issuing
//! CA keep their original files (`ca/root.key`, `ca/intermediate.pem` and its
//! key); every CA made by a rotation keeps its key as `ca/keys/SERIAL.key`
//! (0600) or, on an HSM, the key's `pkcs11:` URI in `ca/keys/SERIAL.uri`.
//!
//! - `rotate-issuing`: a new issuing CA under the current root; new
//!   certificates come from it, the old one stays trusted (gateway anchors, its
//!   own CRL) while a certificate it issued is unexpired. An issuing CA is
//!   cross-certified by every other root in service, so its chains reach each.
//! - `rotate-root`: a new root, cross-certified by the old one (new-with-old:
//!   devices that trust only the old root accept the new one from EST
//!   `cacerts`), every issuing CA in service cross-certified by the new root
//!   (old chains reach it), and a new issuing CA under it (cross-certified by
//!   the old root, so new chains reach the old root: the old root's path
//!   length of one leaves no room for a root-to-root link in the chain itself).
//! - `retire`: takes a CA that is not current out of service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_core::{KeyAlgorithm, Signer};
use palisade_keystore::SoftwareKey;
use palisade_keystore::pkcs11::{Pkcs11Key, Pkcs11Uri};
use palisade_pki::{
    CaError, CertificateAuthority, IssueRequest, Issued, Profile, Serial, inspect_certificate,
    public_key_raw_of,
};
use palisade_store::{CertRecord, CertStatus, Store, StoreError};
use time::{Duration, OffsetDateTime};

use crate::files::{ensure_private_dir, pem};

/// Loading, rotating or retiring a CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaSetError {
    /// Signing or encoding failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A CA key file or URI could not be read or made.
    #[error("CA key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A CA in service has no key on this node.
    #[error(
        "the {what} CA {serial} ({subject}) is in service but this node has no key for it \
         (looked for {path}): copy ca/keys/ from the node that made it, then start again"
    )]
    MissingKey {
        /// `root` or `issuing`.
        what: &'static str,
        /// Its serial.
        serial: String,
        /// Its subject.
        subject: String,
        /// Where the key was looked for.
        path: PathBuf,
    },
    /// The request cannot be done (which, and what to do instead).
    #[error("{0}")]
    Refused(String),
}

/// An issuing CA in service: its key and primary certificate, the
/// certificates other roots gave the same key, and where its CRL goes.
#[derive(Debug)]
pub struct IssuingCa {
    /// The CA (primary certificate and key).
    pub ca: Arc<CertificateAuthority>,
    /// Cross-certificates of the same key by the other roots in service.
    pub cross: Vec<Vec<u8>>,
    /// The first issuing CA (`ca/intermediate.pem`): its CRL is `/crl`, and
    /// certificates recorded before rotation existed name no issuer.
    pub first: bool,
}

impl IssuingCa {
    /// Its certificate's serial (hex), as certificates it issued record it.
    pub fn serial(&self) -> &str {
        &self.ca.info().serial_hex
    }

    /// The name of its published CRL among the store's signed documents.
    pub fn crl_document(&self) -> String {
        if self.first {
            "crl".to_owned()
        } else {
            format!("crl/{}", self.serial())
        }
    }

    /// The CRL distribution point of the certificates it issues, below the
    /// public URL.
    pub fn crl_path(&self) -> String {
        format!("/{}", self.crl_document())
    }

    /// Whether it issued a certificate recorded with `issuer`.
    pub fn issued(&self, record: &CertRecord) -> bool {
        record.issuer == self.serial() || (self.first && record.issuer.is_empty())
    }
}

/// A root in service.
#[derive(Debug)]
pub struct RootCa {
    /// The self-signed certificate and the key.
    pub ca: Arc<CertificateAuthority>,
    /// Its key certified by older roots (new-with-old).
    pub cross: Vec<Vec<u8>>,
}

/// The CAs in service, oldest first: the last root and the last issuing CA
/// are current.
#[derive(Debug)]
pub struct CaSet {
    roots: Vec<RootCa>,
    issuers: Vec<IssuingCa>,
}

impl CaSet {
    /// The current root.
    pub fn root(&self) -> &RootCa {
        // Never empty: `load` refuses a set without one.
        &self.roots[self.roots.len() - 1]
    }

    /// The current issuing CA.
    pub fn issuing(&self) -> &IssuingCa {
        &self.issuers[self.issuers.len() - 1]
    }

    /// Every root in service, oldest first.
    pub fn roots(&self) -> &[RootCa] {
        &self.roots
    }

    /// Every issuing CA in service, oldest first.
    pub fn issuers(&self) -> &[IssuingCa] {
        &self.issuers
    }

    /// The serials of every certificate in the set, to tell whether it changed.
    pub fn fingerprint(&self) -> Vec<String> {
        self.bundle()
            .into_iter()
            .map(palisade_pki::sha256_hex)
            .collect()
    }

    /// The root or issuing CA with this serial, if in service.
    fn ca(&self, serial: &str) -> Option<Arc<CertificateAuthority>> {
        self.roots
            .iter()
            .map(|r| &r.ca)
            .chain(self.issuers.iter().map(|i| &i.ca))
            .find(|c| c.info().serial_hex == serial)
            .cloned()
    }

    /// The issuing CA with this serial, if in service.
    pub fn issuer(&self, serial: &str) -> Option<&IssuingCa> {
        self.issuers.iter().find(|i| i.serial() == serial)
    }

    /// What a verifier of device certificates anchors on: every issuing CA
    /// and root in service (a device may present its leaf alone).
    pub fn anchors(&self) -> Vec<&[u8]> {
        self.issuers
            .iter()
            .map(|i| i.ca.certificate_der())
            .chain(self.roots.iter().map(|r| r.ca.certificate_der()))
            .collect()
    }

    /// Every certificate below the roots that a chain may pass through:
    /// issuing CAs (primary and cross) and the roots' cross-certificates.
    pub fn intermediates(&self) -> Vec<&[u8]> {
        let mut out = vec![];
        for i in self.issuers.iter().rev() {
            out.push(i.ca.certificate_der());
            out.extend(i.cross.iter().map(Vec::as_slice));
        }
        for r in self.roots.iter().rev() {
            out.extend(r.cross.iter().map(Vec::as_slice));
        }
        out
    }

    /// The self-signed roots in service, current first.
    pub fn root_certs(&self) -> Vec<&[u8]> {
        self.roots
            .iter()
            .rev()
            .map(|r| r.ca.certificate_der())
            .collect()
    }

    /// Everything a client needs to build and check any chain of this
    /// installation, current issuing CA first (EST `cacerts`, `ca/chain.pem`):
    /// the intermediates, then the roots.
    pub fn bundle(&self) -> Vec<&[u8]> {
        let mut out = self.intermediates();
        out.extend(self.root_certs());
        out
    }

    /// [`CaSet::bundle`] as PEM.
    pub fn bundle_pem(&self) -> String {
        self.bundle()
            .into_iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect()
    }

    /// The roots as PEM (`ca/root.pem`: what clients trust).
    pub fn roots_pem(&self) -> String {
        self.root_certs()
            .into_iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect()
    }

    /// What a server certificate from the current issuing CA is sent with:
    /// that CA's cross-certificates by older roots, then its own certificate,
    /// so clients that trust any root in service build a chain. The older
    /// roots' first: OpenSSL takes the first issuer that matches and does
    /// not backtrack to another untrusted one, and during a root rotation its
    /// clients may trust only the old root (webpki backtracks either way).
    pub fn server_chain(&self) -> Vec<&[u8]> {
        let i = self.issuing();
        i.cross
            .iter()
            .map(Vec::as_slice)
            .chain(std::iter::once(i.ca.certificate_der()))
            .collect()
    }
}

/// The CA key files of a data directory (`ca/`).
#[derive(Debug, Clone)]
pub struct CaFiles {
    dir: PathBuf,
}

impl CaFiles {
    /// The CA directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn key_file(&self, serial: &str) -> PathBuf {
        self.keys().join(format!("{serial}.key"))
    }

    fn uri_file(&self, serial: &str) -> PathBuf {
        self.keys().join(format!("{serial}.uri"))
    }

    /// The signer of the CA with this serial made by a rotation, if this
    /// node holds its key.
    fn signer(&self, serial: &str) -> Result<Option<Arc<dyn Signer>>, CaSetError> {
        let uri_file = self.uri_file(serial);
        if uri_file.exists() {
            let text = std::fs::read_to_string(&uri_file).map_err(|e| key_err(&uri_file, e))?;
            let uri = Pkcs11Uri::parse(text.trim()).map_err(|e| key_err(&uri_file, e))?;
            let (key, _) = Pkcs11Key::open_or_generate(&uri).map_err(|e| key_err(&uri_file, e))?;
            return Ok(Some(Arc::new(key)));
        }
        let file = self.key_file(serial);
        if !file.exists() {
            return Ok(None);
        }
        let (key, _) = SoftwareKey::load_or_create(&file, KeyAlgorithm::EcdsaP256)
            .map_err(|e| key_err(&file, e))?;
        Ok(Some(Arc::new(key)))
    }

    /// A new key for the CA that will have `serial`: a software key file, or
    /// the key an HSM URI names (generated on the token if absent).
    fn new_key(&self, serial: &str, hsm: Option<&str>) -> Result<Arc<dyn Signer>, CaSetError> {
        ensure_private_dir(&self.keys()).map_err(|e| key_err(&self.keys(), e))?;
        match hsm {
            Some(text) => {
                let file = self.uri_file(serial);
                let uri = Pkcs11Uri::parse(text).map_err(|e| key_err(&file, e))?;
                let (key, _) = Pkcs11Key::open_or_generate(&uri).map_err(|e| key_err(&file, e))?;
                crate::files::write_atomic(&file, format!("{uri}\n").as_bytes(), 0o600)
                    .map_err(|e| key_err(&file, e))?;
                Ok(Arc::new(key))
            }
            None => {
                let file = self.key_file(serial);
                let (key, created) = SoftwareKey::load_or_create(&file, KeyAlgorithm::EcdsaP256)
                    .map_err(|e| key_err(&file, e))?;
                if !created {
                    return Err(CaSetError::Refused(format!(
                        "{} already exists: a CA key is never reused",
                        file.display()
                    )));
                }
                Ok(Arc::new(key))
            }
        }
    }
}

fn key_err(path: &Path, e: impl std::fmt::Display) -> CaSetError {
    CaSetError::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn same_key(a: &[u8], b: &[u8]) -> bool {
    matches!((public_key_raw_of(a), public_key_raw_of(b)), (Ok(x), Ok(y)) if x == y)
}

/// When the last valid certificate issued by the issuing CA `serial`
/// expires, if one is unexpired at `now_ms` (the first issuing CA's early
/// certificates name no issuer, and count as its own).
pub async fn last_certificate(
    store: &dyn Store,
    serial: &str,
    first: bool,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let mut last = store.issuer_last_expiry(serial, now_ms).await?;
    if first {
        last = last.max(store.issuer_last_expiry("", now_ms).await?);
    }
    Ok(last)
}

/// Whether a recorded CA certificate is in service at `now_ms`.
fn in_service(r: &CertRecord, now_ms: i64) -> bool {
    r.status == CertStatus::Valid && r.not_after_ms > now_ms
}

/// Loads the CAs in service from the inventory: `first_root` and
/// `first_issuing` are the original CAs (their own files), every other one's
/// key comes from `files`. An issuing CA that is not current leaves service
/// when the last certificate it issued has expired.
pub async fn load(
    store: &dyn Store,
    files: &CaFiles,
    first_root: Arc<CertificateAuthority>,
    first_issuing: Arc<CertificateAuthority>,
    loaded: Option<&CaSet>,
    now_ms: i64,
) -> Result<CaSet, CaSetError> {
    let records = store.certificate_authorities().await?;
    let mut roots: Vec<RootCa> = vec![];
    let mut issuers: Vec<IssuingCa> = vec![];
    let mut cross: Vec<&CertRecord> = vec![];
    for r in &records {
        match r.profile.as_str() {
            "cross" if in_service(r, now_ms) => cross.push(r),
            "root" | "intermediate" => {
                let root = r.profile == "root";
                let first = if root { &first_root } else { &first_issuing };
                let ca = if first.info().serial_hex == r.serial {
                    if r.status != CertStatus::Valid {
                        continue;
                    }
                    first.clone()
                } else {
                    if !in_service(r, now_ms) {
                        continue;
                    }
                    // A CA already loaded keeps its signer: a reload every
                    // minute opens no key file and no token session.
                    if let Some(ca) = loaded.and_then(|s| s.ca(&r.serial)) {
                        ca
                    } else {
                        let signer =
                            files
                                .signer(&r.serial)?
                                .ok_or_else(|| CaSetError::MissingKey {
                                    what: if root { "root" } else { "issuing" },
                                    serial: r.serial.clone(),
                                    subject: r.subject.clone(),
                                    path: files.key_file(&r.serial),
                                })?;
                        Arc::new(CertificateAuthority::from_parts(r.der.clone(), signer)?)
                    }
                };
                if root {
                    roots.push(RootCa { ca, cross: vec![] });
                } else {
                    let first = ca.info().serial_hex == first_issuing.info().serial_hex;
                    issuers.push(IssuingCa {
                        ca,
                        cross: vec![],
                        first,
                    });
                }
            }
            _ => {}
        }
    }
    if roots.is_empty() {
        roots.push(RootCa {
            ca: first_root,
            cross: vec![],
        });
    }
    if issuers.is_empty() {
        issuers.push(IssuingCa {
            ca: first_issuing,
            cross: vec![],
            first: true,
        });
    }
    // An issuing CA that is not current stays while a certificate it issued
    // is unexpired (the first one's early certificates name no issuer).
    let mut kept = vec![];
    let last = issuers.len() - 1;
    for (n, i) in issuers.into_iter().enumerate() {
        let busy = n == last
            || last_certificate(store, i.serial(), i.first, now_ms)
                .await?
                .is_some();
        if busy {
            kept.push(i);
        }
    }
    let mut issuers = kept;
    // Cross-certificates join the CA whose key they certify, while the root
    // that signed them is in service.
    for c in cross {
        let by_root_in_service = roots.iter().any(|r| r.ca.info().serial_hex == c.issuer);
        if !by_root_in_service {
            continue;
        }
        if let Some(i) = issuers
            .iter_mut()
            .find(|i| same_key(i.ca.certificate_der(), &c.der))
        {
            i.cross.push(c.der.clone());
        } else if let Some(r) = roots
            .iter_mut()
            .find(|r| same_key(r.ca.certificate_der(), &c.der))
        {
            r.cross.push(c.der.clone());
        }
    }
    Ok(CaSet { roots, issuers })
}

/// How new CAs are made.
#[derive(Debug, Clone)]
pub struct CaPolicy {
    /// The organisation in every subject.
    pub organization: String,
    /// A new root's lifetime.
    pub root_validity: Duration,
    /// A new issuing CA's lifetime.
    pub issuing_validity: Duration,
}

/// What a rotation made, to record (one commit) and to put in service.
#[derive(Debug, Default)]
pub struct Rotation {
    /// Inventory records: the new CA certificates and cross-certificates.
    pub records: Vec<CertRecord>,
}

/// The inventory record of a certificate made here (no device); its issuer
/// is the CA that signed it (empty for a self-signed root).
pub fn record(issued: &Issued, profile: &str, now: OffsetDateTime) -> CertRecord {
    CertRecord {
        serial: issued.info.serial_hex.clone(),
        profile: profile.to_owned(),
        subject: issued.info.subject.clone(),
        device: None,
        not_before_ms: palisade_core::unix_ms(issued.info.not_before),
        not_after_ms: palisade_core::unix_ms(issued.info.not_after),
        status: CertStatus::Valid,
        revoked_ms: None,
        reason: None,
        der: issued.der.clone(),
        issued_ms: palisade_core::unix_ms(now),
        issuer: issued.issuer_serial.clone(),
    }
}

/// The number the next CA of a kind gets in its name ("Issuing CA 3").
fn next_number(records: &[CertRecord], profile: &str) -> usize {
    records.iter().filter(|r| r.profile == profile).count() + 1
}

/// What makes new CAs: the key files, the policy, randomness and the time.
#[allow(missing_debug_implementations)]
pub struct Maker<'a> {
    /// Where new keys go.
    pub files: &'a CaFiles,
    /// Names and lifetimes.
    pub policy: &'a CaPolicy,
    /// For serials.
    pub rng: &'a (dyn ring::rand::SecureRandom + Sync),
    /// Now.
    pub now: OffsetDateTime,
}

impl Maker<'_> {
    fn serial(&self) -> Result<Serial, CaError> {
        Serial::random(self.rng)
    }

    /// A new issuing CA under `root` (key from the files, or on the HSM
    /// `hsm` names), cross-certified by every root in `others`.
    fn issuing(
        &self,
        root: &CertificateAuthority,
        others: &[&CertificateAuthority],
        number: usize,
        hsm: Option<&str>,
    ) -> Result<Rotation, CaSetError> {
        let serial = self.serial()?;
        let key = self.files.new_key(&serial.to_hex(), hsm)?;
        let issued = root.issue(
            &IssueRequest {
                profile: Profile::Intermediate,
                common_name: &format!("{} Issuing CA {number}", self.policy.organization),
                sans: vec![],
                spki_der: &key.spki_der(),
                validity: self.policy.issuing_validity,
                crl_url: None,
            },
            &self.policy.organization,
            &serial,
            self.now,
        )?;
        let mut out = Rotation::default();
        out.records.push(record(&issued, "intermediate", self.now));
        for other in others {
            let x = other.cross_certify(&issued.der, 0, &self.serial()?, self.now)?;
            out.records.push(record(&x, "cross", self.now));
        }
        Ok(out)
    }

    /// The records of an issuing-CA rotation: a new issuing CA under the
    /// current root, cross-certified by the other roots in service.
    pub async fn rotate_issuing(
        &self,
        store: &dyn Store,
        set: &CaSet,
        hsm: Option<&str>,
    ) -> Result<Rotation, CaSetError> {
        let records = store.certificate_authorities().await?;
        let others: Vec<&CertificateAuthority> = set.roots()[..set.roots().len() - 1]
            .iter()
            .map(|r| &*r.ca)
            .collect();
        self.issuing(
            &set.root().ca,
            &others,
            next_number(&records, "intermediate"),
            hsm,
        )
    }

    /// The records of a root rotation: a new root cross-certified by the
    /// current one, every issuing CA in service cross-certified by the new
    /// root, and a new issuing CA under the new root.
    pub async fn rotate_root(
        &self,
        store: &dyn Store,
        set: &CaSet,
        hsm: Option<&str>,
    ) -> Result<Rotation, CaSetError> {
        let records = store.certificate_authorities().await?;
        let serial = self.serial()?;
        let key = self.files.new_key(&serial.to_hex(), None)?;
        let root = CertificateAuthority::create_root(
            key,
            &self.policy.organization,
            &format!(
                "{} Root CA {}",
                self.policy.organization,
                next_number(&records, "root")
            ),
            self.now,
            self.policy.root_validity,
            &serial,
        )?;
        let self_signed = Issued {
            der: root.certificate_der().to_vec(),
            info: root.info().clone(),
            issuer_serial: String::new(),
        };
        let mut out = Rotation::default();
        out.records.push(record(&self_signed, "root", self.now));
        let old = &set.root().ca;
        let new_with_old =
            old.cross_certify(root.certificate_der(), 1, &self.serial()?, self.now)?;
        out.records.push(record(&new_with_old, "cross", self.now));
        for i in set.issuers() {
            let x = root.cross_certify(i.ca.certificate_der(), 0, &self.serial()?, self.now)?;
            out.records.push(record(&x, "cross", self.now));
        }
        let others: Vec<&CertificateAuthority> = set.roots().iter().map(|r| &*r.ca).collect();
        let issuing = self.issuing(&root, &others, next_number(&records, "intermediate"), hsm)?;
        out.records.extend(issuing.records);
        Ok(out)
    }
}

/// Checks that the CA `serial` may be retired: in service, not current, and
/// (an issuing CA) no unexpired valid certificate of its own left unless
/// `force`; (a root) no issuing CA in service that only it certifies.
pub async fn check_retire(
    store: &dyn Store,
    set: &CaSet,
    serial: &str,
    force: bool,
    now_ms: i64,
) -> Result<CertRecord, CaSetError> {
    let record = store
        .certificate(serial)
        .await?
        .filter(|r| matches!(r.profile.as_str(), "root" | "intermediate"))
        .ok_or_else(|| CaSetError::Refused(format!("{serial} is not a CA certificate of this installation: `palisade ca list` shows them")))?;
    if record.status != CertStatus::Valid {
        return Err(CaSetError::Refused(format!(
            "CA {serial} is already retired"
        )));
    }
    if record.profile == "intermediate" {
        let Some(i) = set.issuer(serial) else {
            return Err(CaSetError::Refused(format!(
                "issuing CA {serial} is no longer in service"
            )));
        };
        if set.issuing().serial() == serial {
            return Err(CaSetError::Refused(format!(
                "issuing CA {serial} is the current one: rotate it first (`palisade ca rotate-issuing`)"
            )));
        }
        let last = last_certificate(store, serial, i.first, now_ms).await?;
        if let (Some(last), false) = (last, force) {
            return Err(CaSetError::Refused(format!(
                "issuing CA {serial} still has valid certificates until {}: renew the fleet first \
                 (`palisade ca renew-fleet`) or pass --force to cut them off",
                palisade_core::rfc3339_ms(last).unwrap_or_default()
            )));
        }
    } else {
        if set.root().ca.info().serial_hex == serial {
            return Err(CaSetError::Refused(format!(
                "root {serial} is the current root: rotate it first (`palisade ca rotate-root`)"
            )));
        }
        if !set.roots().iter().any(|r| r.ca.info().serial_hex == serial) {
            return Err(CaSetError::Refused(format!(
                "root {serial} is no longer in service"
            )));
        }
        let others: Vec<&str> = set
            .roots()
            .iter()
            .filter(|r| r.ca.info().serial_hex != serial)
            .map(|r| r.ca.info().subject.as_str())
            .collect();
        let under = |der: &[u8]| {
            inspect_certificate(der)
                .map(|c| c.issuer)
                .unwrap_or_default()
        };
        let stranded: Vec<&str> = set
            .issuers()
            .iter()
            .filter(|i| {
                !std::iter::once(i.ca.certificate_der())
                    .chain(i.cross.iter().map(Vec::as_slice))
                    .any(|c| others.contains(&under(c).as_str()))
            })
            .map(IssuingCa::serial)
            .collect();
        if !stranded.is_empty() {
            return Err(CaSetError::Refused(format!(
                "root {serial} is the only root of issuing CA {}: retire those first",
                stranded.join(", ")
            )));
        }
    }
    Ok(record)
}
