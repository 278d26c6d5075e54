//! The PKI service: the CAs in service (see [`crate::ca`]), serials, and each
//! issuing CA's published CRL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_core::{Clock, DeviceId, unix_ms};
use palisade_pki::{
    CaError, CertificateAuthority, CrlEntry, IssueRequest, Issued, Profile, RevocationReason, San,
    Serial,
};
use rustls::pki_types::CertificateDer;

use crate::ca::{self, CaFiles, CaPolicy, CaSet, CaSetError, IssuingCa};
use palisade_store::{CertRecord, Change, Store, StoreError};
use ring::rand::SystemRandom;
use time::{Duration, OffsetDateTime};

#[derive(Debug)]
struct CachedCrl {
    der: Vec<u8>,
    this_update: OffsetDateTime,
    generation: u64,
}

/// The CAs and what they publish.
#[derive(Debug)]
pub struct Pki {
    /// The CAs in service; replaced whole by a rotation.
    cas: std::sync::RwLock<Arc<CaSet>>,
    /// The original root and issuing CA (their own files).
    first: (Arc<CertificateAuthority>, Arc<CertificateAuthority>),
    files: CaFiles,
    policy: CaPolicy,
    public_url: String,
    crl_validity: Duration,
    rng: SystemRandom,
    clock: Arc<dyn Clock>,
    /// The current CRL of each issuing CA, by its serial.
    crl: tokio::sync::Mutex<HashMap<String, CachedCrl>>,
    /// Held while deciding whether to re-sign and re-signing, and while rotating.
    sign_lock: tokio::sync::Mutex<()>,
    /// The lead this node must hold to re-sign the CRL.
    signing: std::sync::OnceLock<Arc<palisade_store::leader::Leadership>>,
    /// Bumped by every revocation; a cached CRL of an older generation is stale.
    generation: Mutex<u64>,
    /// Tells listeners (the MQTT gateway's verifier) that the CRL changed.
    changed: tokio::sync::watch::Sender<u64>,
    /// The number of the last CRL this node published.
    published: tokio::sync::watch::Sender<u64>,
    /// Bumped when the CAs in service change (the server's certificate is
    /// then re-issued and the listeners take the new chains).
    rotated: tokio::sync::watch::Sender<u64>,
}

/// Whether the model allows the CSR's key type; the error says which it allows.
pub fn check_key_type(
    model: &palisade_store::ModelRecord,
    csr: &palisade_pki::VerifiedCsr,
) -> Result<(), String> {
    let kt = csr.key_type.to_string();
    if model.allowed_key_types.contains(&kt) {
        Ok(())
    } else {
        Err(format!(
            "key type {kt} is not allowed for model {}: use one of {}",
            model.id,
            model.allowed_key_types.join(", ")
        ))
    }
}

/// A device certificate was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DeviceIssueError {
    /// The model does not allow the CSR's key type (the requester's fault).
    #[error("{0}")]
    KeyType(String),
    /// Signing failed (ours).
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// Building or publishing a CRL failed.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Signing failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Pki {
    /// Wraps the loaded CAs; `first` are the original root and issuing CA.
    pub fn new(
        cas: CaSet,
        first: (Arc<CertificateAuthority>, Arc<CertificateAuthority>),
        files: CaFiles,
        policy: CaPolicy,
        public_url: &str,
        crl_validity: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            cas: std::sync::RwLock::new(Arc::new(cas)),
            first,
            files,
            policy,
            public_url: public_url.trim_end_matches('/').to_owned(),
            crl_validity,
            rng: SystemRandom::new(),
            clock,
            crl: tokio::sync::Mutex::new(HashMap::new()),
            sign_lock: tokio::sync::Mutex::new(()),
            signing: std::sync::OnceLock::new(),
            generation: Mutex::new(0),
            changed: tokio::sync::watch::channel(0).0,
            published: tokio::sync::watch::channel(0).0,
            rotated: tokio::sync::watch::channel(0).0,
        }
    }

    /// The CAs in service now.
    pub fn cas(&self) -> Arc<CaSet> {
        match self.cas.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn replace_cas(&self, cas: CaSet) {
        match self.cas.write() {
            Ok(mut c) => *c = Arc::new(cas),
            Err(p) => *p.into_inner() = Arc::new(cas),
        }
        self.rotated.send_modify(|n| *n += 1);
        self.bump_generation();
    }

    /// Notified when the CAs in service change.
    pub fn watch_rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotated.subscribe()
    }

    /// Every CA certificate a client needs, current issuing CA first, PEM
    /// (`/ca/chain.pem`, `ca/chain.pem`).
    pub fn chain_pem(&self) -> String {
        self.cas().bundle_pem()
    }

    /// Issues a certificate from the current issuing CA with a fresh random
    /// serial; the record names that CA.
    pub fn issue(
        &self,
        profile: Profile,
        common_name: &str,
        sans: Vec<San>,
        spki_der: &[u8],
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let serial = Serial::random(&self.rng)?;
        let cas = self.cas();
        let issuing = cas.issuing();
        issuing.ca.issue(
            &IssueRequest {
                profile,
                common_name,
                sans,
                spki_der,
                validity,
                crl_url: Some(format!("{}{}", self.public_url, issuing.crl_path())),
            },
            &self.policy.organization,
            &serial,
            self.clock.now(),
        )
    }

    /// `chain` (leaf first, as a client sent it) completed with every
    /// intermediate in service, and the roots in service: what a chain check
    /// of a certificate this installation issued takes.
    pub fn chain_and_roots(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> (Vec<CertificateDer<'static>>, Vec<Vec<u8>>) {
        let cas = self.cas();
        let mut full = chain.to_vec();
        full.extend(
            cas.intermediates()
                .into_iter()
                .map(|c| CertificateDer::from(c.to_vec())),
        );
        let roots = cas.root_certs().into_iter().map(<[u8]>::to_vec).collect();
        (full, roots)
    }

    /// Rotates the issuing CA: a new one under the current root (its key a
    /// software file, or on the HSM `hsm` names) takes over issuance; the
    /// old one stays trusted while a certificate it issued is unexpired.
    pub async fn rotate_issuing(
        &self,
        store: &dyn Store,
        actor: &str,
        hsm: Option<&str>,
    ) -> Result<Arc<CaSet>, CaSetError> {
        self.rotate(store, actor, hsm, false).await
    }

    /// Rotates the root: a new root cross-certified by the current one, the
    /// issuing CAs in service cross-certified by it, and a new issuing CA
    /// under it. Both roots stay trusted until the old one is retired.
    pub async fn rotate_root(
        &self,
        store: &dyn Store,
        actor: &str,
        hsm: Option<&str>,
    ) -> Result<Arc<CaSet>, CaSetError> {
        self.rotate(store, actor, hsm, true).await
    }

    async fn rotate(
        &self,
        store: &dyn Store,
        actor: &str,
        hsm: Option<&str>,
        root: bool,
    ) -> Result<Arc<CaSet>, CaSetError> {
        let _one = self.sign_lock.lock().await;
        let maker = self.maker(self.clock.now());
        let (made, action) = if root {
            (
                maker.rotate_root(store, &self.cas(), hsm).await?,
                "ca.rotate-root",
            )
        } else {
            let made = maker.rotate_issuing(store, &self.cas(), hsm).await?;
            (made, "ca.rotate-issuing")
        };
        self.put_in_service(store, actor, action, made).await
    }

    fn maker(&self, now: OffsetDateTime) -> ca::Maker<'_> {
        ca::Maker {
            files: &self.files,
            policy: &self.policy,
            rng: &self.rng,
            now,
        }
    }

    /// Retires a CA that is not current (see [`ca::check_retire`]).
    pub async fn retire(
        &self,
        store: &dyn Store,
        actor: &str,
        serial: &str,
        force: bool,
    ) -> Result<Arc<CaSet>, CaSetError> {
        let _one = self.sign_lock.lock().await;
        let now_ms = unix_ms(self.clock.now());
        let record = ca::check_retire(store, &self.cas(), serial, force, now_ms).await?;
        store
            .commit(
                vec![Change::RevokeCertificate {
                    serial: record.serial.clone(),
                    reason: RevocationReason::CessationOfOperation.as_str().into(),
                    at_ms: now_ms,
                }],
                vec![
                    palisade_audit::EntryDraft::success(actor, "ca.retire", &record.serial)
                        .with_detail(serde_json::json!({
                            "subject": record.subject, "profile": record.profile, "force": force,
                        })),
                ],
            )
            .await?;
        self.reload(store).await
    }

    async fn put_in_service(
        &self,
        store: &dyn Store,
        actor: &str,
        action: &str,
        made: ca::Rotation,
    ) -> Result<Arc<CaSet>, CaSetError> {
        let detail: Vec<serde_json::Value> = made
            .records
            .iter()
            .map(|r| serde_json::json!({ "serial": r.serial, "profile": r.profile, "subject": r.subject }))
            .collect();
        let subject = made
            .records
            .first()
            .map(|r| r.serial.clone())
            .unwrap_or_default();
        store
            .commit(
                made.records
                    .into_iter()
                    .map(Change::InsertCertificate)
                    .collect(),
                vec![
                    palisade_audit::EntryDraft::success(actor, action, &subject)
                        .with_detail(serde_json::json!({ "certificates": detail })),
                ],
            )
            .await?;
        self.reload(store).await
    }

    /// Reloads the CAs in service from the inventory (after a rotation or a
    /// retirement, and periodically: an old issuing CA whose last
    /// certificate expired leaves service).
    pub async fn reload(&self, store: &dyn Store) -> Result<Arc<CaSet>, CaSetError> {
        let fresh = ca::load(
            store,
            &self.files,
            self.first.0.clone(),
            self.first.1.clone(),
            Some(&self.cas()),
            unix_ms(self.clock.now()),
        )
        .await?;
        if fresh.fingerprint() != self.cas().fingerprint() {
            tracing::info!(
                roots = fresh.roots().len(),
                issuing = fresh.issuers().len(),
                current = %fresh.issuing().serial(),
                "the CAs in service changed"
            );
            self.replace_cas(fresh);
        }
        Ok(self.cas())
    }

    /// Issues a device's operational certificate under its model's policy (lifetime,
    /// allowed key types); returns the inventory record. The one path every device
    /// certificate takes, whether an operator or EST asked for it.
    pub fn issue_device(
        &self,
        device: &DeviceId,
        model: &palisade_store::ModelRecord,
        csr: &palisade_pki::VerifiedCsr,
    ) -> Result<CertRecord, DeviceIssueError> {
        check_key_type(model, csr).map_err(DeviceIssueError::KeyType)?;
        let issued = self.issue(
            Profile::DeviceIdentity,
            device.as_str(),
            vec![Self::device_uri(device)],
            &csr.spki_der,
            Duration::days(i64::from(model.cert_validity_days)),
        )?;
        Ok(cert_record(
            &issued,
            Profile::DeviceIdentity,
            Some(device.clone()),
            self.clock.now(),
        ))
    }

    /// The SAN that names a device.
    pub fn device_uri(device: &DeviceId) -> San {
        San::Uri(format!("urn:palisade:device:{device}"))
    }

    /// Marks the published CRL stale (after a revocation, or when another
    /// node published a new one) and tells the listeners.
    pub fn crl_changed(&self) {
        self.bump_generation();
    }

    fn bump_generation(&self) -> u64 {
        match self.generation.lock() {
            Ok(mut g) => {
                *g += 1;
                self.changed.send_replace(*g);
                *g
            }
            Err(_) => u64::MAX,
        }
    }

    /// Notified after each revocation.
    pub fn watch_crl(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The number of each CRL this node publishes (for the other nodes).
    pub fn watch_published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Re-signs the CRL only while holding `lead` (the `crl-signing`
    /// singleton); without one (a single process) this node always signs.
    pub fn sign_crl_on_lead(&self, lead: Arc<palisade_store::leader::Leadership>) {
        let _ = self.signing.set(lead);
    }

    fn signs_crl(&self) -> bool {
        self.signing.get().is_none_or(|l| l.is_leader())
    }

    /// The cached CRL of issuing CA `issuer`, if nothing was revoked or
    /// published since it was read and less than half its validity has passed.
    async fn fresh_crl(&self, issuer: &str) -> Option<Vec<u8>> {
        let generation = self.generation.lock().map(|g| *g).unwrap_or(u64::MAX);
        let cached = self.crl.lock().await;
        cached
            .get(issuer)
            .filter(|c| {
                c.generation == generation
                    && self.clock.now() < c.this_update + self.crl_validity / 2
            })
            .map(|c| c.der.clone())
    }

    /// The CRL of `issuer` to serve (DER): the one published in the store,
    /// read again after a revocation or another node's publication, and when
    /// half its validity has passed. The node that signs (see
    /// [`Pki::sign_crl_on_lead`]) first re-signs it if it is due; another
    /// node signs only the very first.
    async fn crl_of(&self, store: &dyn Store, issuer: &IssuingCa) -> Result<Vec<u8>, CrlError> {
        if let Some(der) = self.fresh_crl(issuer.serial()).await {
            return Ok(der);
        }
        if self.signs_crl()
            && self.publish_crl_if_due(store).await?.is_some()
            && let Some(der) = self.fresh_crl(issuer.serial()).await
        {
            return Ok(der);
        }
        self.published_crl(store, issuer).await
    }

    /// The CRL at `/crl`: the first issuing CA's while it is in service (its
    /// certificates name that URL), else the current issuing CA's.
    pub async fn crl(&self, store: &dyn Store) -> Result<Vec<u8>, CrlError> {
        let cas = self.cas();
        let issuer = cas
            .issuers()
            .iter()
            .find(|i| i.first)
            .unwrap_or(cas.issuing());
        self.crl_of(store, issuer).await
    }

    /// The CRL of the issuing CA with this serial, if it is in service
    /// (`/crl/{serial}`).
    pub async fn crl_by_serial(
        &self,
        store: &dyn Store,
        serial: &str,
    ) -> Result<Option<Vec<u8>>, CrlError> {
        let cas = self.cas();
        match cas.issuer(serial) {
            Some(i) => Ok(Some(self.crl_of(store, i).await?)),
            None => Ok(None),
        }
    }

    /// The CRLs of every issuing CA in service (the gateway's verifier
    /// checks each certificate against its issuer's).
    pub async fn crls(&self, store: &dyn Store) -> Result<Vec<Vec<u8>>, CrlError> {
        let cas = self.cas();
        let mut out = vec![];
        for i in cas.issuers() {
            out.push(self.crl_of(store, i).await?);
        }
        Ok(out)
    }

    /// The CRL of `issuer` published in the store (signing the very first if
    /// there is none), kept as this node's current one.
    async fn published_crl(
        &self,
        store: &dyn Store,
        issuer: &IssuingCa,
    ) -> Result<Vec<u8>, CrlError> {
        let generation = self.generation.lock().map(|g| *g).unwrap_or(u64::MAX);
        let Some(d) = store.document(&issuer.crl_document()).await? else {
            return Ok(self.publish_crl(store, issuer, None).await?.1);
        };
        let now = self.clock.now();
        self.crl.lock().await.insert(
            issuer.serial().to_owned(),
            CachedCrl {
                der: d.body.clone(),
                this_update: from_ms(d.updated_ms, now),
                generation,
            },
        );
        Ok(d.body)
    }

    /// The CRLs of every issuing CA in service as published (signing the
    /// very first of each), for the gateway at start.
    pub async fn published_crls(&self, store: &dyn Store) -> Result<Vec<Vec<u8>>, CrlError> {
        let cas = self.cas();
        let mut out = vec![];
        for i in cas.issuers() {
            out.push(self.published_crl(store, i).await?);
        }
        Ok(out)
    }

    /// Re-signs and publishes each issuing CA's CRL when it is due: none is
    /// published yet, half its validity has passed, or a certificate of that
    /// CA was revoked at or after it was signed. The `crl-signing` lead
    /// calls this after every revocation and periodically; returns the last
    /// new CRL number if it published one.
    pub async fn publish_crl_if_due(&self, store: &dyn Store) -> Result<Option<u64>, CrlError> {
        // One check-and-sign at a time on this node.
        let _signing = self.sign_lock.lock().await;
        let now_ms = unix_ms(self.clock.now());
        let revoked = store.revoked_unexpired(now_ms).await?;
        let cas = self.cas();
        let mut last = None;
        for issuer in cas.issuers() {
            let stored = store.document(&issuer.crl_document()).await?;
            let due = match &stored {
                None => true,
                Some(d) => {
                    now_ms
                        >= d.updated_ms
                            + i64::try_from(self.crl_validity.whole_milliseconds() / 2)
                                .unwrap_or(i64::MAX)
                        || revoked.iter().any(|r| {
                            issuer.issued(r) && r.revoked_ms.unwrap_or(i64::MAX) >= d.updated_ms
                        })
                }
            };
            if due {
                let (number, _) = self
                    .publish_crl(store, issuer, stored.map(|d| d.version))
                    .await?;
                last = Some(number);
            }
        }
        Ok(last)
    }

    /// Signs `issuer`'s CRL over the certificates it issued that are revoked
    /// now and publishes it in place of CRL number `replaces`. Each CRL
    /// number is committed (and audited) before the CRL is signed; if
    /// another node published first, its CRL is the one kept and returned.
    async fn publish_crl(
        &self,
        store: &dyn Store,
        issuer: &IssuingCa,
        replaces: Option<u64>,
    ) -> Result<(u64, Vec<u8>), CrlError> {
        let mut cached = self.crl.lock().await;
        let now = self.clock.now();
        let revoked = store.revoked_unexpired(unix_ms(now)).await?;
        let entries: Vec<CrlEntry> = revoked
            .iter()
            .filter(|r| {
                issuer.issued(r) && !matches!(r.profile.as_str(), "root" | "intermediate" | "cross")
            })
            .map(|r| CrlEntry {
                serial_hex: r.serial.clone(),
                revoked_at: from_ms(r.revoked_ms.unwrap_or(0), now),
                reason: r
                    .reason
                    .as_deref()
                    .and_then(RevocationReason::parse)
                    .unwrap_or(RevocationReason::Unspecified),
            })
            .collect();
        let document = issuer.crl_document();
        let receipt = store
            .commit(
                vec![Change::BumpCounter { name: "crl_number" }],
                vec![
                    palisade_audit::EntryDraft::success("system", "crl.publish", issuer.serial())
                        .with_detail(
                            serde_json::json!({ "revoked": entries.len(), "document": document }),
                        ),
                ],
            )
            .await?;
        let number = u64::try_from(receipt.counters.first().copied().unwrap_or(1)).unwrap_or(1);
        let der = issuer
            .ca
            .crl(&entries, number, now, now + self.crl_validity)?;
        let published = store
            .commit(
                vec![Change::PutDocument {
                    name: document.clone(),
                    version: number,
                    replaces,
                    body: der.clone(),
                    at_ms: unix_ms(now),
                }],
                vec![],
            )
            .await;
        let (number, der, this_update) = match published {
            Ok(_) => {
                self.published.send_replace(number);
                (number, der, now)
            }
            Err(e @ StoreError::Conflict { .. }) => match store.document(&document).await? {
                Some(d) => (d.version, d.body, from_ms(d.updated_ms, now)),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        // This node's listeners (its gateway's verifier) take the new CRL.
        let generation = self.bump_generation();
        cached.insert(
            issuer.serial().to_owned(),
            CachedCrl {
                der: der.clone(),
                this_update,
                generation,
            },
        );
        Ok((number, der))
    }
}

fn from_ms(ms: i64, fallback: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(fallback)
}

/// The inventory record for an issued certificate.
pub fn cert_record(
    issued: &Issued,
    profile: Profile,
    device: Option<DeviceId>,
    now: OffsetDateTime,
) -> CertRecord {
    CertRecord {
        device,
        ..ca::record(issued, profile.as_str(), now)
    }
}
