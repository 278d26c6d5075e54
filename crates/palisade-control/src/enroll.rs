//! The enrolment service behind EST: zero-touch with a birth identity (IDevID),
//! one-time enrolment tokens, and re-enrolment with the current operational
//! certificate. Every outcome, granted or refused, is audited; refusals carry a
//! reason the EST layer returns to the client.

use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState, KeyProtection, ModelId, SupplierName};
use palisade_pki::{
    CsrLimits, VerifiedCsr, inspect_certificate, sha256_hex, verify_csr, verify_manifest,
};
use palisade_store::{
    BatchRecord, CertRecord, CertStatus, Change, DeviceRecord, EnrollmentTokenRecord,
    FirmwareRecord, ModelRecord, Onboarding, Store, SupplierRecord, TpmVendorRecord,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::json;
use zeroize::Zeroizing;

use crate::attestation::{Attestation, ProvenKey};
use crate::error::{EnrollError, ServiceError};
use crate::events::{Event, EventBus};
use crate::identity::{Credential, Identified};
use crate::pki::{DeviceIssueError, Pki, check_key_type};
use crate::tokens::{new_secret, parse_prefixed, secret_matches_hash};

/// Seconds a device awaiting approval is asked to wait before retrying.
pub const APPROVAL_RETRY_AFTER: u32 = 60;

/// Reads a CA certificate registered by an admin (`what`: whose it is).
fn ca_certificate(der: &[u8], what: &str) -> Result<palisade_pki::CertInfo, ServiceError> {
    let bad = |message: String| ServiceError::BadRequest {
        code: "bad_ca",
        message,
    };
    let info = inspect_certificate(der).map_err(|e| bad(e.to_string()))?;
    if !info.is_ca {
        return Err(bad(format!(
            "the {what} certificate is not a CA certificate"
        )));
    }
    Ok(info)
}

/// The enrolment service.
#[derive(Debug)]
pub struct Enrollment {
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    clock: Arc<dyn Clock>,
    csr_limits: CsrLimits,
    attestation: Arc<Attestation>,
    /// Refusals are told here (failed-login bursts at EST, replayed or cloned
    /// enrolments are the detectors' business).
    bus: Arc<dyn EventBus>,
}

/// Where the device says its key is kept (`Palisade-Key-Protection` header):
/// `secure-element` is recorded as reported; anything else as `software`. A
/// TPM is never taken on the device's word: only attestation records `tpm`.
pub fn claimed_protection(header: Option<&str>) -> KeyProtection {
    match header.map(str::trim).and_then(KeyProtection::parse) {
        Some(KeyProtection::SecureElement) => KeyProtection::SecureElement,
        _ => KeyProtection::Software,
    }
}

/// How a device's key is protected, decided at (re-)enrolment.
struct Protection {
    kind: KeyProtection,
    proven: Option<ProvenKey>,
}

fn policy_json(model: &ModelRecord, csr: &VerifiedCsr, protection: &Protection) -> String {
    json!({
        "model": model.id.as_str(),
        "policy_version": model.policy_version,
        "cert_validity_days": model.cert_validity_days,
        "key_type": csr.key_type.to_string(),
        "key_protection": protection.kind,
        "hardware_attested": protection.proven.is_some(),
    })
    .to_string()
}

fn protection_change(device: &DeviceId, p: &Protection) -> Change {
    Change::RecordKeyProtection {
        id: device.clone(),
        key_protection: p.kind,
        ak_public: p.proven.as_ref().map(|k| k.ak_public.clone()),
        ek_sha256: p.proven.as_ref().map(|k| k.ek_sha256.clone()),
    }
}

impl Enrollment {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        pki: Arc<Pki>,
        clock: Arc<dyn Clock>,
        max_csr_bytes: usize,
        attestation: Arc<Attestation>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            store,
            pki,
            clock,
            csr_limits: CsrLimits {
                max_der_len: max_csr_bytes,
                ..CsrLimits::default()
            },
            attestation,
            bus,
        }
    }

    /// Decides how the key being certified is protected: proven TPM-resident
    /// (the attestation service holds a proof for exactly this key), or as the
    /// device claims. A `tpm` model without that proof is refused.
    async fn protection(
        &self,
        actor: &str,
        action: &str,
        device: &DeviceId,
        model: &ModelRecord,
        key_sha: &str,
        claim: KeyProtection,
    ) -> Result<Protection, EnrollError> {
        let proven = self.attestation.take_proven(device, key_sha);
        if model.attestation == "tpm" && proven.is_none() {
            return Err(self
                .deny(
                    actor,
                    action,
                    device.as_str(),
                    EnrollError::Forbidden(format!(
                        "model {} requires TPM attestation: this CSR's key was not certified by \
                         the device's TPM (POST /attest/v1/challenge and /attest/v1/evidence first)",
                        model.id
                    )),
                )
                .await);
        }
        Ok(Protection {
            kind: if proven.is_some() {
                KeyProtection::Tpm
            } else {
                claim
            },
            proven,
        })
    }

    /// Identifies a device for the attestation steps: by birth certificate,
    /// operational certificate, or enrolment token (checked, not consumed).
    pub async fn identify(&self, cred: Credential<'_>) -> Result<Identified, EnrollError> {
        let action = "attest.identify";
        match cred {
            Credential::ClientCert(chain) => {
                let leaf_sha = chain.first().map(|c| sha256_hex(c)).unwrap_or_default();
                let actor = format!("cert:{}", leaf_sha.get(..16).unwrap_or(""));
                let suppliers = self.store.suppliers().await?;
                let anchors: Vec<Vec<u8>> = suppliers.iter().map(|s| s.ca_der.clone()).collect();
                if self.chain_ok(chain, &anchors).is_ok() {
                    return match self.store.device_by_birth_cert(&leaf_sha).await? {
                        Some(d) => Ok(Identified {
                            actor: format!("device:{}", d.id),
                            device: d.id.clone(),
                            existing: Some(d),
                        }),
                        None => Err(self
                            .deny(&actor, action, &leaf_sha, EnrollError::Forbidden(
                                "this birth certificate's serial is in no imported batch manifest".into(),
                            ))
                            .await),
                    };
                }
                let (full, roots) = self.pki.chain_and_roots(chain);
                let device = match (self.chain_ok(&full, &roots), chain.first()) {
                    (Ok(()), Some(leaf)) => {
                        let serial = inspect_certificate(leaf)
                            .map_err(|e| EnrollError::BadRequest(e.to_string()))?
                            .serial_hex;
                        match self.store.certificate(&serial).await? {
                            Some(c) if c.status != CertStatus::Revoked => c.device,
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let Some(device) = device else {
                    return Err(self
                        .deny(&actor, action, &leaf_sha, EnrollError::Unauthorized(
                            "the client certificate is neither a registered birth identity nor a valid Palisade device certificate".into(),
                        ))
                        .await);
                };
                let existing = self.store.device(&device).await?;
                Ok(Identified {
                    actor: format!("device:{device}"),
                    device,
                    existing,
                })
            }
            Credential::Token { device, token } => {
                let actor = format!("enrollment-token:{}", token.get(4..20).unwrap_or("?"));
                let record = match parse_prefixed("pet", token) {
                    Some((id, secret)) => self
                        .store
                        .enrollment_token(id)
                        .await?
                        .filter(|r| secret_matches_hash(secret, &r.secret_hash)),
                    None => None,
                };
                let now = self.clock.now_ms();
                let ok = record.as_ref().is_some_and(|r| {
                    r.expires_ms > now
                        && r.used_device.as_deref().is_none_or(|d| d == device)
                });
                let id = DeviceId::parse(device).ok();
                let (true, Some(id)) = (ok, id) else {
                    return Err(self
                        .deny(&actor, action, &device.chars().take(64).collect::<String>(),
                            EnrollError::Unauthorized("unknown, wrong, used or expired enrolment token, or a bad device id".into()))
                        .await);
                };
                let existing = self.store.device(&id).await?;
                Ok(Identified {
                    actor,
                    device: id,
                    existing,
                })
            }
            Credential::None => Err(EnrollError::Unauthorized(
                "attestation needs a birth certificate, an operational certificate or an enrolment token".into(),
            )),
        }
    }

    async fn deny(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        err: EnrollError,
    ) -> EnrollError {
        let entry = EntryDraft::denied(actor, action, subject)
            .with_detail(json!({ "reason": err.to_string() }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused enrolment");
        }
        let reason = err.to_string();
        let device = DeviceId::parse(subject).ok().map(|d| d.to_string());
        let at_ms = self.clock.now_ms();
        let replay = action == "est.clone_suspected" || reason.contains("already been used");
        self.bus.publish(match device {
            Some(device) if replay => Event::EnrolmentReplayed {
                device,
                reason: reason.chars().take(200).collect(),
                at_ms,
            },
            device => Event::CredentialRefused {
                device,
                peer: None,
                place: palisade_detect::detect::AuthPlace::Est,
                reason: action.to_owned(),
                at_ms,
            },
        });
        err
    }

    fn now_unix(&self) -> UnixTime {
        let secs = self.clock.now().unix_timestamp();
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(secs).unwrap_or(0),
        ))
    }

    /// Validates a client chain against trust anchors for TLS client use.
    fn chain_ok(
        &self,
        chain: &[CertificateDer<'static>],
        anchors_der: &[Vec<u8>],
    ) -> Result<(), String> {
        let Some((leaf, rest)) = chain.split_first() else {
            return Err("no client certificate".into());
        };
        let anchor_ders: Vec<CertificateDer<'_>> = anchors_der
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let anchors: Vec<_> = anchor_ders
            .iter()
            .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
            .collect();
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            rest,
            self.now_unix(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
    }

    async fn model_for(&self, label: Option<&str>) -> Result<Option<ModelRecord>, EnrollError> {
        let Some(label) = label else { return Ok(None) };
        let id = ModelId::parse(label)
            .map_err(|e| EnrollError::NotFound(format!("unknown EST label: {e}")))?;
        match self.store.model(&id).await? {
            Some(m) => Ok(Some(m)),
            None => Err(EnrollError::NotFound(format!(
                "no device model {id} for this EST label"
            ))),
        }
    }

    /// Loads `model` and checks it against the EST label, if one was given; a
    /// mismatch is refused (403) and audited with the message `mismatch` builds.
    async fn model_checked(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        model: &ModelId,
        label: Option<&str>,
        mismatch: impl FnOnce(&ModelId) -> String,
    ) -> Result<ModelRecord, EnrollError> {
        let m = self
            .store
            .model(model)
            .await?
            .ok_or_else(|| EnrollError::Internal("model vanished".into()))?;
        if let Some(l) = self.model_for(label).await?
            && l.id != *model
        {
            return Err(self
                .deny(
                    actor,
                    action,
                    subject,
                    EnrollError::Forbidden(mismatch(&l.id)),
                )
                .await);
        }
        Ok(m)
    }

    fn check_csr(&self, csr_der: &[u8], model: &ModelRecord) -> Result<VerifiedCsr, EnrollError> {
        let csr = verify_csr(csr_der, &self.csr_limits)
            .map_err(|e| EnrollError::BadRequest(e.to_string()))?;
        // Refuse a key type the model does not allow before anything is committed.
        check_key_type(model, &csr).map_err(EnrollError::BadRequest)?;
        Ok(csr)
    }

    fn sign(
        &self,
        device: &DeviceId,
        model: &ModelRecord,
        csr: &VerifiedCsr,
    ) -> Result<CertRecord, EnrollError> {
        self.pki
            .issue_device(device, model, csr)
            .map_err(|e| match e {
                DeviceIssueError::KeyType(m) => EnrollError::BadRequest(m),
                DeviceIssueError::Ca(e) => EnrollError::Internal(e.to_string()),
            })
    }

    /// `simpleenroll`: a birth identity or an enrolment token.
    pub async fn enroll(
        &self,
        label: Option<&str>,
        cred: Credential<'_>,
        csr_der: &[u8],
        claim: KeyProtection,
    ) -> Result<CertRecord, EnrollError> {
        match cred {
            Credential::ClientCert(chain) => {
                self.enroll_idevid(label, chain, csr_der, claim).await
            }
            Credential::Token { device, token } => {
                self.enroll_token(label, device, token, csr_der, claim)
                    .await
            }
            Credential::None => Err(EnrollError::Unauthorized(
                "enrolment needs a birth certificate (TLS client certificate) or an enrolment token (HTTP Basic)".into(),
            )),
        }
    }

    async fn enroll_idevid(
        &self,
        label: Option<&str>,
        chain: &[CertificateDer<'static>],
        csr_der: &[u8],
        claim: KeyProtection,
    ) -> Result<CertRecord, EnrollError> {
        let leaf_sha = chain.first().map(|c| sha256_hex(c)).unwrap_or_default();
        let actor = format!("idevid:{}", &leaf_sha.get(..16).unwrap_or(""));
        let suppliers = self.store.suppliers().await?;
        let anchors: Vec<Vec<u8>> = suppliers.iter().map(|s| s.ca_der.clone()).collect();
        if let Err(reason) = self.chain_ok(chain, &anchors) {
            return Err(self
                .deny(&actor, "est.enroll", &leaf_sha, EnrollError::Unauthorized(format!(
                    "the birth certificate is not from a registered manufacturer CA or is not valid now: {reason}"
                )))
                .await);
        }
        let Some(device) = self.store.device_by_birth_cert(&leaf_sha).await? else {
            return Err(self
                .deny(
                    &actor,
                    "est.enroll",
                    &leaf_sha,
                    EnrollError::Forbidden(
                        "this birth certificate's serial is in no imported batch manifest".into(),
                    ),
                )
                .await);
        };
        let actor = format!("device:{}", device.id);
        let model = self
            .model_checked(
                &actor,
                "est.enroll",
                device.id.as_str(),
                &device.model,
                label,
                |other| {
                    format!(
                        "device {} is a {}, not a {}",
                        device.id, device.model, other
                    )
                },
            )
            .await?;
        if !device.state.may_enroll() {
            return Err(self
                .deny(
                    &actor,
                    "est.enroll",
                    device.id.as_str(),
                    EnrollError::Forbidden(format!("device {} is {}", device.id, device.state)),
                )
                .await);
        }
        let csr = match self.check_csr(csr_der, &model) {
            Ok(c) => c,
            Err(e) => return Err(self.deny(&actor, "est.enroll", device.id.as_str(), e).await),
        };
        let key_sha = sha256_hex(&csr.spki_der);
        if let Some(prev) = &device.onboarding.enrolled_key_sha256
            && *prev != key_sha
        {
            // The same birth identity enrolling a second key: a cloned device.
            tracing::warn!(device = %device.id, "possible cloned birth identity: second key refused");
            return Err(self
                .deny(&actor, "est.clone_suspected", device.id.as_str(), EnrollError::Forbidden(format!(
                    "device {} is already enrolled with another key: refused as a possible clone", device.id
                )))
                .await);
        }
        self.commit_enrollment(
            &actor,
            &device,
            &model,
            &csr,
            key_sha,
            vec![],
            ("idevid", claim),
        )
        .await
    }

    async fn enroll_token(
        &self,
        label: Option<&str>,
        device: &str,
        token: &str,
        csr_der: &[u8],
        claim: KeyProtection,
    ) -> Result<CertRecord, EnrollError> {
        let actor = format!("enrollment-token:{}", token.get(4..20).unwrap_or("?"));
        let Some((id, secret)) = parse_prefixed("pet", token) else {
            return Err(self
                .deny(
                    &actor,
                    "est.enroll",
                    device,
                    EnrollError::Unauthorized(
                        "the enrolment token is malformed: it should look like pet_<id>_<secret>"
                            .into(),
                    ),
                )
                .await);
        };
        let record = self.store.enrollment_token(id).await?;
        let now = self.clock.now_ms();
        let existing = match DeviceId::parse(device) {
            Ok(d) => self.store.device(&d).await?,
            Err(_) => None,
        };
        // A device that used this token and is waiting for approval may come back
        // with it: the token is bound to that device from its first use.
        let resumed = matches!((&record, &existing), (Some(r), Some(d))
            if r.used_device.as_deref() == Some(d.id.as_str())
                && d.state == DeviceState::Registered
                && d.onboarding.pending_since_ms.is_some());
        let refusal = match &record {
            None => Some("unknown enrolment token"),
            Some(r) if !secret_matches_hash(secret, &r.secret_hash) => {
                Some("wrong enrolment token")
            }
            Some(_) if resumed => None,
            Some(r) if r.used_ms.is_some() => Some("the enrolment token has already been used"),
            Some(r) if r.expires_ms <= now => Some("the enrolment token has expired"),
            _ => None,
        };
        if let Some(reason) = refusal {
            return Err(self
                .deny(
                    &actor,
                    "est.enroll",
                    device,
                    EnrollError::Unauthorized(reason.into()),
                )
                .await);
        }
        let Some(record) = record else {
            return Err(EnrollError::Internal("token vanished".into()));
        };
        let model = self
            .model_checked(
                &actor,
                "est.enroll",
                device,
                &record.model,
                label,
                |other| {
                    format!(
                        "this enrolment token is for model {}, not {}",
                        record.model, other
                    )
                },
            )
            .await?;
        let device_id = match DeviceId::parse(device) {
            Ok(d) => d,
            Err(e) => {
                return Err(self
                    .deny(
                        &actor,
                        "est.enroll",
                        &device.chars().take(64).collect::<String>(),
                        EnrollError::BadRequest(format!(
                            "the HTTP Basic user name must be the device id: {e}"
                        )),
                    )
                    .await);
            }
        };
        let mut changes = Vec::new();
        if !resumed {
            changes.push(Change::ConsumeEnrollmentToken {
                id: record.id.clone(),
                device: device_id.clone(),
                at_ms: now,
            });
        }
        let device = match existing {
            Some(d) if d.state == DeviceState::Decommissioned => {
                return Err(self
                    .deny(
                        &actor,
                        "est.enroll",
                        device_id.as_str(),
                        EnrollError::Forbidden(format!(
                            "device {device_id} is decommissioned: its id is a tombstone until an admin reinstates it (palisade device reinstate)"
                        )),
                    )
                    .await);
            }
            Some(d) => {
                if !resumed
                    && (d.model != record.model
                        || d.state != DeviceState::Registered
                        || d.onboarding.birth_cert_sha256.is_some())
                {
                    return Err(self
                        .deny(&actor, "est.enroll", device_id.as_str(), EnrollError::Forbidden(format!(
                            "device {device_id} already exists and cannot be enrolled with this token"
                        )))
                        .await);
                }
                d
            }
            None => {
                let d = DeviceRecord {
                    id: device_id.clone(),
                    model: record.model.clone(),
                    state: DeviceState::Registered,
                    hardware_serial: None,
                    created_ms: now,
                    updated_ms: now,
                    onboarding: Onboarding::default(),
                    last_seen_ms: None,
                    reported_firmware: None,
                    hardware: Default::default(),
                };
                changes.push(Change::InsertDevice(d.clone()));
                d
            }
        };
        let csr = match self.check_csr(csr_der, &model) {
            Ok(c) => c,
            Err(e) => return Err(self.deny(&actor, "est.enroll", device_id.as_str(), e).await),
        };
        let key_sha = sha256_hex(&csr.spki_der);
        self.commit_enrollment(
            &actor,
            &device,
            &model,
            &csr,
            key_sha,
            changes,
            ("token", claim),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_enrollment(
        &self,
        actor: &str,
        device: &DeviceRecord,
        model: &ModelRecord,
        csr: &VerifiedCsr,
        key_sha: String,
        mut changes: Vec<Change>,
        (method, claim): (&str, KeyProtection),
    ) -> Result<CertRecord, EnrollError> {
        if model.approval_required && device.onboarding.approved_ms.is_none() {
            let now = self.clock.now_ms();
            changes.push(Change::MarkPending {
                id: device.id.clone(),
                at_ms: now,
            });
            let audit = vec![
                EntryDraft::denied(actor, "est.enroll.pending", device.id.as_str())
                    .with_detail(json!({ "method": method, "model": model.id.as_str(),
                    "reason": "awaiting operator approval" })),
            ];
            self.store.commit(changes, audit).await?;
            return Err(EnrollError::Pending {
                retry_after: APPROVAL_RETRY_AFTER,
                message: format!(
                    "device {} awaits an operator's approval (`palisade device approve {}`); retry later",
                    device.id, device.id
                ),
            });
        }
        let protection = self
            .protection(actor, "est.enroll", &device.id, model, &key_sha, claim)
            .await?;
        let cert = self.sign(&device.id, model, csr)?;
        let now = self.clock.now_ms();
        changes.extend([
            Change::RequireDeviceState {
                id: device.id.clone(),
                allowed: DeviceState::all_where(DeviceState::may_enroll),
            },
            Change::InsertCertificate(cert.clone()),
            Change::AdvanceDeviceState {
                id: device.id.clone(),
                from: DeviceState::Registered,
                to: DeviceState::Enrolled,
                at_ms: now,
            },
            Change::RecordEnrollment {
                id: device.id.clone(),
                key_sha256: key_sha,
                attached_policy: policy_json(model, csr, &protection),
                at_ms: now,
            },
            protection_change(&device.id, &protection),
        ]);
        let audit = vec![
            EntryDraft::success(actor, "est.enroll", device.id.as_str()).with_detail(json!({
                "method": method,
                "serial": cert.serial,
                "model": model.id.as_str(),
                "policy_version": model.policy_version,
                "key_type": csr.key_type.to_string(),
                "key_protection": protection.kind,
                "not_after_ms": cert.not_after_ms,
            })),
        ];
        match self.store.commit(changes, audit).await {
            Ok(_) => Ok(cert),
            Err(e) => {
                let err = EnrollError::from(e);
                Err(self
                    .deny(actor, "est.enroll", device.id.as_str(), err)
                    .await)
            }
        }
    }

    /// `simplereenroll`: authenticated by a valid operational certificate.
    pub async fn reenroll(
        &self,
        label: Option<&str>,
        chain: &[CertificateDer<'static>],
        csr_der: &[u8],
        claim: KeyProtection,
    ) -> Result<CertRecord, EnrollError> {
        let Some(leaf) = chain.first() else {
            return Err(EnrollError::Unauthorized(
                "re-enrolment needs the current operational certificate as the TLS client certificate".into(),
            ));
        };
        let (full, anchors) = self.pki.chain_and_roots(chain);
        let info = inspect_certificate(leaf).map_err(|e| EnrollError::BadRequest(e.to_string()))?;
        let actor = format!("cert:{}", info.serial_hex);
        if let Err(reason) = self.chain_ok(&full, &anchors) {
            return Err(self
                .deny(&actor, "est.reenroll", &info.serial_hex, EnrollError::Unauthorized(format!(
                    "the client certificate is not a valid Palisade operational certificate: {reason}"
                )))
                .await);
        }
        let Some(cert) = self.store.certificate(&info.serial_hex).await? else {
            return Err(self
                .deny(
                    &actor,
                    "est.reenroll",
                    &info.serial_hex,
                    EnrollError::Unauthorized(
                        "the client certificate is not in the inventory".into(),
                    ),
                )
                .await);
        };
        if cert.status == CertStatus::Revoked {
            return Err(self
                .deny(
                    &actor,
                    "est.reenroll",
                    &info.serial_hex,
                    EnrollError::Forbidden("the client certificate has been revoked".into()),
                )
                .await);
        }
        let Some(device_id) = cert.device.clone() else {
            return Err(self
                .deny(
                    &actor,
                    "est.reenroll",
                    &info.serial_hex,
                    EnrollError::Forbidden(
                        "the client certificate is not a device certificate".into(),
                    ),
                )
                .await);
        };
        let device = self
            .store
            .device(&device_id)
            .await?
            .ok_or_else(|| EnrollError::Internal("device vanished".into()))?;
        let actor = format!("device:{device_id}");
        if !device.state.may_reenroll() {
            return Err(self
                .deny(
                    &actor,
                    "est.reenroll",
                    device_id.as_str(),
                    EnrollError::Forbidden(format!(
                        "device {device_id} is {}: re-enrolment refused",
                        device.state
                    )),
                )
                .await);
        }
        let model = self
            .model_checked(
                &actor,
                "est.reenroll",
                device_id.as_str(),
                &device.model,
                label,
                |other| format!("device {device_id} is a {}, not a {}", device.model, other),
            )
            .await?;
        let csr = match self.check_csr(csr_der, &model) {
            Ok(c) => c,
            Err(e) => {
                return Err(self
                    .deny(&actor, "est.reenroll", device_id.as_str(), e)
                    .await);
            }
        };
        let key_sha = sha256_hex(&csr.spki_der);
        let protection = self
            .protection(&actor, "est.reenroll", &device_id, &model, &key_sha, claim)
            .await?;
        let new = self.sign(&device_id, &model, &csr)?;
        let now = self.clock.now_ms();
        let changes = vec![
            Change::RequireDeviceState {
                id: device_id.clone(),
                allowed: DeviceState::all_where(DeviceState::may_reenroll),
            },
            Change::InsertCertificate(new.clone()),
            Change::RecordEnrollment {
                id: device_id.clone(),
                key_sha256: key_sha,
                attached_policy: policy_json(&model, &csr, &protection),
                at_ms: now,
            },
            protection_change(&device_id, &protection),
        ];
        let audit = vec![EntryDraft::success(&actor, "est.reenroll", device_id.as_str()).with_detail(json!({
            "serial": new.serial,
            "previous_serial": cert.serial,
            "rekey": device.onboarding.enrolled_key_sha256.as_deref() != Some(sha256_hex(&csr.spki_der).as_str()),
            "not_after_ms": new.not_after_ms,
        }))];
        match self.store.commit(changes, audit).await {
            Ok(_) => Ok(new),
            Err(e) => Err(self
                .deny(&actor, "est.reenroll", device_id.as_str(), e.into())
                .await),
        }
    }

    /// Registers a supplier's manufacturer CA (admin), with its vulnerability
    /// disclosure contact if given.
    pub async fn add_supplier(
        &self,
        actor: &str,
        name: SupplierName,
        ca_der: Vec<u8>,
        disclosure_contact: Option<String>,
    ) -> Result<SupplierRecord, ServiceError> {
        let info = ca_certificate(&ca_der, "manufacturer")?;
        let disclosure_contact = disclosure_contact
            .map(|c| check_disclosure_contact(&c))
            .transpose()?;
        let record = SupplierRecord {
            name: name.clone(),
            ca_sha256: sha256_hex(&ca_der),
            ca_der,
            disclosure_contact,
            created_ms: self.clock.now_ms(),
        };
        self.store
            .commit(
                vec![Change::InsertSupplier(record.clone())],
                vec![
                    EntryDraft::success(actor, "supplier.add", name.as_str()).with_detail(json!({
                        "ca_sha256": record.ca_sha256, "ca_subject": info.subject,
                        "ca_not_after": info.not_after.unix_timestamp(),
                    })),
                ],
            )
            .await?;
        Ok(record)
    }

    /// Records (or, with `None`, clears) where a supplier takes vulnerability
    /// reports (admin); audited.
    pub async fn set_supplier_contact(
        &self,
        actor: &str,
        name: &SupplierName,
        contact: Option<String>,
    ) -> Result<SupplierRecord, ServiceError> {
        let contact = contact.map(|c| check_disclosure_contact(&c)).transpose()?;
        self.store
            .commit(
                vec![Change::SetSupplierContact {
                    name: name.clone(),
                    contact: contact.clone(),
                }],
                vec![
                    EntryDraft::success(actor, "supplier.contact", name.as_str())
                        .with_detail(json!({ "disclosure_contact": contact })),
                ],
            )
            .await?;
        self.store
            .supplier(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("supplier {name} not found")))
    }

    /// Registers a TPM vendor CA (admin): EK certificates must chain to one.
    pub async fn add_tpm_vendor(
        &self,
        actor: &str,
        ca_der: Vec<u8>,
    ) -> Result<TpmVendorRecord, ServiceError> {
        let info = ca_certificate(&ca_der, "TPM vendor")?;
        let record = TpmVendorRecord {
            sha256: sha256_hex(&ca_der),
            subject: info.subject.clone(),
            ca_der,
            created_ms: self.clock.now_ms(),
        };
        self.store
            .commit(
                vec![Change::InsertTpmVendor(record.clone())],
                vec![
                    EntryDraft::success(actor, "tpm_vendor.add", &record.sha256).with_detail(
                        json!({ "subject": info.subject, "not_after": info.not_after.unix_timestamp() }),
                    ),
                ],
            )
            .await?;
        Ok(record)
    }

    /// Approves a firmware image for a model (operator): what measured boot
    /// must show on its TPM devices.
    pub async fn add_firmware(
        &self,
        actor: &str,
        model: &ModelId,
        version: &str,
        sha256: &str,
    ) -> Result<FirmwareRecord, ServiceError> {
        let bad = |m: &str| ServiceError::BadRequest {
            code: "bad_firmware",
            message: m.into(),
        };
        if version.is_empty()
            || version.len() > 64
            || version.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(bad(
                "version is 1 to 64 printable characters without spaces",
            ));
        }
        let sha = sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("sha256 is 64 hex digits"));
        }
        if self.store.model(model).await?.is_none() {
            return Err(ServiceError::NotFound(format!("model {model} not found")));
        }
        let record = FirmwareRecord {
            model: model.clone(),
            version: version.to_string(),
            sha256: sha,
            created_ms: self.clock.now_ms(),
        };
        self.store
            .commit(
                vec![Change::InsertFirmware(record.clone())],
                vec![
                    EntryDraft::success(actor, "firmware.approve", model.as_str())
                        .with_detail(json!({ "version": record.version, "sha256": record.sha256 })),
                ],
            )
            .await?;
        Ok(record)
    }

    /// Imports a signed batch manifest: verifies signature and chain, registers
    /// every device with its model, in one commit.
    pub async fn import_batch(
        &self,
        actor: &str,
        file: &[u8],
    ) -> Result<BatchRecord, ServiceError> {
        let bad = |code: &'static str, message: String| ServiceError::BadRequest { code, message };
        // Which supplier? Read the (not yet trusted) payload only to pick the CA.
        let env: palisade_pki::SignedManifest = serde_json::from_slice(file)
            .map_err(|e| bad("bad_manifest", format!("manifest is malformed: {e}")))?;
        let payload = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            env.payload.trim(),
        )
        .map_err(|_| bad("bad_manifest", "manifest payload is not base64".into()))?;
        let claimed: palisade_pki::ManifestBody =
            serde_json::from_slice(&payload).map_err(|e| {
                bad(
                    "bad_manifest",
                    format!("manifest payload is malformed: {e}"),
                )
            })?;
        let supplier_name = SupplierName::parse(&claimed.supplier)
            .map_err(|e| bad("bad_manifest", e.to_string()))?;
        let Some(supplier) = self.store.supplier(&supplier_name).await? else {
            return Err(ServiceError::NotFound(format!(
                "supplier {supplier_name} is not registered: `palisade supplier add {supplier_name} --ca-cert FILE` first"
            )));
        };
        let verified = match verify_manifest(
            file,
            supplier_name.as_str(),
            &supplier.ca_der,
            self.clock.now(),
        ) {
            Ok(v) => v,
            Err(e) => {
                let entry = EntryDraft::denied(actor, "batch.import", supplier_name.as_str())
                    .with_detail(json!({ "reason": e.to_string() }));
                let _ = self.store.commit(vec![], vec![entry]).await;
                return Err(bad("bad_manifest", e.to_string()));
            }
        };
        let model =
            ModelId::parse(&verified.body.model).map_err(|e| bad("bad_manifest", e.to_string()))?;
        if self.store.model(&model).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "model {model} not found: add it first with `palisade model add {model}`"
            )));
        }
        let now = self.clock.now_ms();
        let batch = BatchRecord {
            id: verified.id.clone(),
            supplier: supplier_name.clone(),
            model: model.clone(),
            device_count: u32::try_from(verified.devices.len()).unwrap_or(u32::MAX),
            imported_ms: now,
        };
        let mut changes = vec![Change::InsertBatch(batch.clone())];
        for d in &verified.devices {
            let id = DeviceId::parse(&d.serial.to_ascii_lowercase()).map_err(|e| {
                bad(
                    "bad_manifest",
                    format!("serial {:?} cannot be a device id: {e}", d.serial),
                )
            })?;
            changes.push(Change::InsertDevice(DeviceRecord {
                id,
                model: model.clone(),
                state: DeviceState::Registered,
                hardware_serial: Some(d.serial.clone()),
                created_ms: now,
                updated_ms: now,
                onboarding: Onboarding {
                    supplier: Some(supplier_name.clone()),
                    batch_id: Some(verified.id.clone()),
                    birth_cert_sha256: Some(d.cert_sha256.clone()),
                    ..Onboarding::default()
                },
                last_seen_ms: None,
                reported_firmware: None,
                hardware: Default::default(),
            }));
        }
        self.store
            .commit(
                changes,
                vec![EntryDraft::success(actor, "batch.import", &verified.id).with_detail(json!({
                    "supplier": supplier_name.as_str(),
                    "model": model.as_str(),
                    "devices": verified.devices.iter().map(|d| d.serial.as_str()).collect::<Vec<_>>(),
                }))],
            )
            .await?;
        Ok(batch)
    }

    /// Creates a one-time enrolment token for a model; the text is shown once.
    pub async fn create_enrollment_token(
        &self,
        actor: &str,
        model: ModelId,
        ttl_secs: u64,
    ) -> Result<(Zeroizing<String>, EnrollmentTokenRecord), ServiceError> {
        if !(60..=30 * 86_400).contains(&ttl_secs) {
            return Err(ServiceError::BadRequest {
                code: "bad_ttl",
                message: "an enrolment token lives between 1 minute and 30 days".into(),
            });
        }
        if self.store.model(&model).await?.is_none() {
            return Err(ServiceError::NotFound(format!("model {model} not found")));
        }
        let (id, secret, hash) = new_secret().map_err(|e| ServiceError::Internal(e.to_string()))?;
        let now = self.clock.now_ms();
        let record = EnrollmentTokenRecord {
            id: id.clone(),
            model: model.clone(),
            secret_hash: hash,
            created_ms: now,
            expires_ms: now + i64::try_from(ttl_secs).unwrap_or(0) * 1000,
            used_ms: None,
            used_device: None,
        };
        self.store
            .commit(
                vec![Change::InsertEnrollmentToken(record.clone())],
                vec![
                    EntryDraft::success(actor, "enrollment_token.create", &id).with_detail(json!({
                        "model": model.as_str(), "expires_ms": record.expires_ms,
                    })),
                ],
            )
            .await?;
        Ok((
            Zeroizing::new(format!("pet_{id}_{}", secret.as_str())),
            record,
        ))
    }
}

/// A vulnerability disclosure contact: a `mailto:` or `https:` URI of at most
/// 256 printable characters.
pub fn check_disclosure_contact(c: &str) -> Result<String, ServiceError> {
    let c = c.trim();
    let scheme_ok = c.starts_with("mailto:") || c.starts_with("https://");
    if !scheme_ok
        || c.len() > 256
        || c.len() < 10
        || c.chars().any(|ch| ch.is_control() || ch.is_whitespace())
    {
        return Err(ServiceError::BadRequest {
            code: "bad_disclosure_contact",
            message: format!(
                "the disclosure contact must be a mailto: or https:// address of at most 256 characters without spaces, not {:?}",
                c.chars().take(64).collect::<String>()
            ),
        });
    }
    Ok(c.to_owned())
}
