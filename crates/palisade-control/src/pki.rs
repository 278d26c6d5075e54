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
    next_update: OffsetDateTime,
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
    /// Bumped by every revocation; a cached CRL of an older generation is stale.
    generation: Mutex<u64>,
    /// Tells listeners (the MQTT gateway's verifier) that the CRL changed.
    changed: tokio::sync::watch::Sender<u64>,
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
            generation: Mutex::new(0),
            changed: tokio::sync::watch::channel(0).0,
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

    /// Marks the published CRL stale (after a revocation).
    pub fn crl_changed(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
            self.changed.send_replace(*g);
        }
    }

    /// Notified after each revocation.
    pub fn watch_crl(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current CRL (DER), re-signed when something was revoked since, or when
    /// half its validity has passed. Each new CRL number is committed (and audited)
    /// before the CRL is served.
    pub async fn crl(&self, store: &dyn Store) -> Result<Vec<u8>, CrlError> {
        let now = self.clock.now();
        let generation = self.generation.lock().map(|g| *g).unwrap_or(u64::MAX);
        let mut cached = self.crl.lock().await;
        if let Some(c) = cached.as_ref() {
            let half = c.this_update + (c.next_update - c.this_update) / 2;
            if c.generation == generation && now < half {
                return Ok(c.der.clone());
            }
        }
        let revoked = store.revoked_unexpired(unix_ms(now)).await?;
        let entries: Vec<CrlEntry> = revoked
            .iter()
            .map(|r| CrlEntry {
                serial_hex: r.serial.clone(),
                revoked_at: OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(r.revoked_ms.unwrap_or(0)) * 1_000_000,
                )
                .unwrap_or(now),
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
        let number = receipt.counters.first().copied().unwrap_or(1);
        let next_update = now + self.crl_validity;
        let der = self.issuing.crl(
            &entries,
            u64::try_from(number).unwrap_or(1),
            now,
            next_update,
        )?;
        *cached = Some(CachedCrl {
            der: der.clone(),
            this_update: now,
            next_update,
            generation,
        });
        Ok(der)
    }
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
