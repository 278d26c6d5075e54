//! The PKI service: the root and issuing CAs, serials, and the published CRL.

use std::sync::{Arc, Mutex};

use palisade_core::{Clock, DeviceId, unix_ms};
use palisade_pki::{
    CaError, CertificateAuthority, CrlEntry, IssueRequest, Issued, Profile, RevocationReason, San,
    Serial,
};
use palisade_store::{CertRecord, CertStatus, Change, Store, StoreError};
use ring::rand::SystemRandom;
use time::{Duration, OffsetDateTime};

use crate::files::pem;

#[derive(Debug)]
struct CachedCrl {
    der: Vec<u8>,
    this_update: OffsetDateTime,
    generation: u64,
}

/// The CAs and what they publish.
#[derive(Debug)]
pub struct Pki {
    root: CertificateAuthority,
    issuing: CertificateAuthority,
    organization: String,
    crl_url: String,
    crl_validity: Duration,
    rng: SystemRandom,
    clock: Arc<dyn Clock>,
    crl: tokio::sync::Mutex<Option<CachedCrl>>,
    /// Held while deciding whether to re-sign and re-signing.
    sign_lock: tokio::sync::Mutex<()>,
    /// The lead this node must hold to re-sign the CRL.
    signing: std::sync::OnceLock<Arc<palisade_store::leader::Leadership>>,
    /// Bumped by every revocation; a cached CRL of an older generation is stale.
    generation: Mutex<u64>,
    /// Tells listeners (the MQTT gateway's verifier) that the CRL changed.
    changed: tokio::sync::watch::Sender<u64>,
    /// The number of the last CRL this node published.
    published: tokio::sync::watch::Sender<u64>,
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
    /// Wraps loaded CAs.
    pub fn new(
        root: CertificateAuthority,
        issuing: CertificateAuthority,
        organization: String,
        public_url: &str,
        crl_validity: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            root,
            issuing,
            organization,
            crl_url: format!("{public_url}/crl"),
            crl_validity,
            rng: SystemRandom::new(),
            clock,
            crl: tokio::sync::Mutex::new(None),
            sign_lock: tokio::sync::Mutex::new(()),
            signing: std::sync::OnceLock::new(),
            generation: Mutex::new(0),
            changed: tokio::sync::watch::channel(0).0,
            published: tokio::sync::watch::channel(0).0,
        }
    }

    /// The issuing CA.
    pub fn issuing(&self) -> &CertificateAuthority {
        &self.issuing
    }

    /// The root CA.
    pub fn root(&self) -> &CertificateAuthority {
        &self.root
    }

    /// The chain clients need above a leaf: issuing CA then root, PEM.
    pub fn chain_pem(&self) -> String {
        format!(
            "{}{}",
            pem("CERTIFICATE", self.issuing.certificate_der()),
            pem("CERTIFICATE", self.root.certificate_der())
        )
    }

    /// Issues a certificate from the issuing CA with a fresh random serial.
    pub fn issue(
        &self,
        profile: Profile,
        common_name: &str,
        sans: Vec<San>,
        spki_der: &[u8],
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let serial = Serial::random(&self.rng)?;
        self.issuing.issue(
            &IssueRequest {
                profile,
                common_name,
                sans,
                spki_der,
                validity,
                crl_url: Some(self.crl_url.clone()),
            },
            &self.organization,
            &serial,
            self.clock.now(),
        )
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

    /// The cached CRL, if nothing was revoked or published since it was
    /// read and less than half its validity has passed.
    async fn fresh_crl(&self) -> Option<Vec<u8>> {
        let generation = self.generation.lock().map(|g| *g).unwrap_or(u64::MAX);
        let cached = self.crl.lock().await;
        cached
            .as_ref()
            .filter(|c| {
                c.generation == generation
                    && self.clock.now() < c.this_update + self.crl_validity / 2
            })
            .map(|c| c.der.clone())
    }

    /// The CRL to serve (DER): the one published in the store, read again
    /// after a revocation or another node's publication, and when half its
    /// validity has passed. The node that signs (see
    /// [`Pki::sign_crl_on_lead`]) first re-signs it if it is due; another node
    /// signs only the very first.
    pub async fn crl(&self, store: &dyn Store) -> Result<Vec<u8>, CrlError> {
        if let Some(der) = self.fresh_crl().await {
            return Ok(der);
        }
        if self.signs_crl()
            && self.publish_crl_if_due(store).await?.is_some()
            && let Some(der) = self.fresh_crl().await
        {
            return Ok(der);
        }
        self.published_crl(store).await
    }

    /// The CRL published in the store (signing the very first if there is
    /// none), kept as this node's current one.
    pub async fn published_crl(&self, store: &dyn Store) -> Result<Vec<u8>, CrlError> {
        let generation = self.generation.lock().map(|g| *g).unwrap_or(u64::MAX);
        let Some(d) = store.document(CRL_DOCUMENT).await? else {
            return Ok(self.publish_crl(store, None).await?.1);
        };
        let now = self.clock.now();
        *self.crl.lock().await = Some(CachedCrl {
            der: d.body.clone(),
            this_update: from_ms(d.updated_ms, now),
            generation,
        });
        Ok(d.body)
    }

    /// Re-signs and publishes the CRL when it is due: none is published yet,
    /// half its validity has passed, or a certificate was revoked at or after
    /// it was signed. The `crl-signing` lead calls this after every
    /// revocation and periodically; returns the new CRL number if it
    /// published one.
    pub async fn publish_crl_if_due(&self, store: &dyn Store) -> Result<Option<u64>, CrlError> {
        // One check-and-sign at a time on this node.
        let _signing = self.sign_lock.lock().await;
        let now_ms = unix_ms(self.clock.now());
        let stored = store.document(CRL_DOCUMENT).await?;
        let due = match &stored {
            None => true,
            Some(d) => {
                now_ms
                    >= d.updated_ms
                        + i64::try_from(self.crl_validity.whole_milliseconds() / 2)
                            .unwrap_or(i64::MAX)
                    || store
                        .revoked_unexpired(now_ms)
                        .await?
                        .iter()
                        .any(|r| r.revoked_ms.unwrap_or(i64::MAX) >= d.updated_ms)
            }
        };
        if !due {
            return Ok(None);
        }
        let (number, _) = self.publish_crl(store, stored.map(|d| d.version)).await?;
        Ok(Some(number))
    }

    /// Signs a CRL over the certificates revoked now and publishes it in
    /// place of CRL number `replaces`. Each CRL number is committed (and
    /// audited) before the CRL is signed; if another node published first,
    /// its CRL is the one kept and returned.
    async fn publish_crl(
        &self,
        store: &dyn Store,
        replaces: Option<u64>,
    ) -> Result<(u64, Vec<u8>), CrlError> {
        let mut cached = self.crl.lock().await;
        let now = self.clock.now();
        let revoked = store.revoked_unexpired(unix_ms(now)).await?;
        let entries: Vec<CrlEntry> = revoked
            .iter()
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
        let receipt = store
            .commit(
                vec![Change::BumpCounter { name: "crl_number" }],
                vec![
                    palisade_audit::EntryDraft::success("system", "crl.publish", "issuing-ca")
                        .with_detail(serde_json::json!({ "revoked": entries.len() })),
                ],
            )
            .await?;
        let number = u64::try_from(receipt.counters.first().copied().unwrap_or(1)).unwrap_or(1);
        let der = self
            .issuing
            .crl(&entries, number, now, now + self.crl_validity)?;
        let published = store
            .commit(
                vec![Change::PutDocument {
                    name: CRL_DOCUMENT.into(),
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
            Err(e @ StoreError::Conflict { .. }) => match store.document(CRL_DOCUMENT).await? {
                Some(d) => (d.version, d.body, from_ms(d.updated_ms, now)),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        // This node's listeners (its gateway's verifier) take the new CRL.
        let generation = self.bump_generation();
        *cached = Some(CachedCrl {
            der: der.clone(),
            this_update,
            generation,
        });
        Ok((number, der))
    }
}

/// The published CRL's name among the store's signed documents.
pub const CRL_DOCUMENT: &str = "crl";

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
        serial: issued.info.serial_hex.clone(),
        profile: profile.as_str().to_owned(),
        subject: issued.info.subject.clone(),
        device,
        not_before_ms: unix_ms(issued.info.not_before),
        not_after_ms: unix_ms(issued.info.not_after),
        status: CertStatus::Valid,
        revoked_ms: None,
        reason: None,
        der: issued.der.clone(),
        issued_ms: unix_ms(now),
    }
}
