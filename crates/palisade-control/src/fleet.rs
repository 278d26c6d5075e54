//! The fleet service: models, devices, certificates and operator tokens. Every
//! change is committed with its audit entry before the caller is answered.

use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState, ModelId, OperatorName, Role, SupplierName};
use palisade_pki::{CsrLimits, RevocationReason, verify_csr};
use palisade_store::{
    CertFilter, CertRecord, CertStatus, Change, DecommissionRecord, DeviceRecord, ModelRecord,
    Store, TokenRecord,
};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ServiceError, bad};
use crate::events::{Event, EventBus};
use crate::pki::DeviceIssueError;
use crate::pki::Pki;
use crate::tokens::new_token;
use palisade_core::unix_ms;

/// Key types a model may allow.
pub const KNOWN_KEY_TYPES: [&str; 6] = [
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
];
/// Key types a new model allows unless told otherwise.
pub const DEFAULT_KEY_TYPES: [&str; 3] = ["ecdsa-p256", "ecdsa-p384", "ed25519"];

/// What a model decides at enrolment.
#[derive(Debug, Clone, Default)]
pub struct ModelPolicy {
    /// Free text.
    pub description: String,
    /// Operational certificate lifetime (days); the server default if absent.
    pub cert_validity_days: Option<u32>,
    /// Whether each device needs an operator's approval before issuance.
    pub approval_required: bool,
    /// Allowed key types; the defaults if absent.
    pub allowed_key_types: Option<Vec<String>>,
    /// `none` (default) or `tpm` (TPM attestation required).
    pub attestation: Option<String>,
    /// The supplier that builds its firmware.
    pub supplier: Option<SupplierName>,
    /// End of support, Unix ms.
    pub support_until_ms: Option<i64>,
    /// Days after a security release by which every device must run it.
    pub security_update_days: Option<u32>,
}

/// The fleet service.
#[derive(Debug)]
pub struct Fleet {
    sessions: Arc<crate::sessions::Sessions>,
    /// Asks every node to close a session (revocation, decommissioning).
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    clock: Arc<dyn Clock>,
    csr_limits: CsrLimits,
    default_validity_days: u32,
}

impl Fleet {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        pki: Arc<Pki>,
        clock: Arc<dyn Clock>,
        max_csr_bytes: usize,
        default_validity_days: u32,
        sessions: Arc<crate::sessions::Sessions>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            sessions,
            bus,
            store,
            pki,
            clock,
            csr_limits: CsrLimits {
                max_der_len: max_csr_bytes,
                ..CsrLimits::default()
            },
            default_validity_days,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Records a refused, security-relevant request.
    pub async fn audit_denied(&self, actor: &str, action: &str, subject: &str, reason: &str) {
        let entry =
            EntryDraft::denied(actor, action, subject).with_detail(json!({ "reason": reason }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, action, "could not audit a denied request");
        }
    }

    /// Adds a device model.
    pub async fn add_model(
        &self,
        actor: &str,
        id: ModelId,
        policy: ModelPolicy,
    ) -> Result<ModelRecord, ServiceError> {
        let ModelPolicy {
            description,
            cert_validity_days,
            approval_required,
            allowed_key_types,
            attestation,
            supplier,
            support_until_ms,
            security_update_days,
        } = policy;
        if security_update_days.is_some_and(|d| d > 3650) {
            return Err(bad(
                "bad_security_update_days",
                "security_update_days must be between 0 (at once) and 3650",
            ));
        }
        if let Some(s) = &supplier
            && self.store.supplier(s).await?.is_none()
        {
            return Err(ServiceError::NotFound(format!(
                "supplier {s} is not registered (palisade supplier add)"
            )));
        }
        let attestation = attestation.unwrap_or_else(|| "none".into());
        if !matches!(attestation.as_str(), "none" | "tpm") {
            return Err(bad("bad_attestation", "attestation is none or tpm"));
        }
        let allowed_key_types = match allowed_key_types {
            None => DEFAULT_KEY_TYPES.iter().map(|k| (*k).to_owned()).collect(),
            Some(list) => {
                if list.is_empty() {
                    return Err(bad("bad_key_types", "allow at least one key type"));
                }
                for k in &list {
                    if !KNOWN_KEY_TYPES.contains(&k.as_str()) {
                        return Err(bad(
                            "bad_key_types",
                            format!("unknown key type {k:?}: use {}", KNOWN_KEY_TYPES.join(", ")),
                        ));
                    }
                }
                list
            }
        };
        if description.len() > 1024 || description.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad(
                "bad_description",
                "description must be at most 1024 printable characters",
            ));
        }
        let days = cert_validity_days.unwrap_or(self.default_validity_days);
        if days == 0 || days > 3650 {
            return Err(bad(
                "bad_validity",
                "cert_validity_days must be between 1 and 3650",
            ));
        }
        let record = ModelRecord {
            id: id.clone(),
            description,
            cert_validity_days: days,
            policy_version: 1,
            approval_required,
            allowed_key_types: allowed_key_types.clone(),
            attestation: attestation.clone(),
            supplier: supplier.clone(),
            support_until_ms,
            security_update_days,
            created_ms: self.now_ms(),
        };
        self.store
            .commit(
                vec![Change::InsertModel(record.clone())],
                vec![
                    EntryDraft::success(actor, "model.add", id.as_str()).with_detail(json!({
                        "cert_validity_days": days,
                        "approval_required": approval_required,
                        "allowed_key_types": allowed_key_types,
                        "attestation": attestation,
                        "supplier": supplier.as_ref().map(|s| s.as_str()),
                    })),
                ],
            )
            .await?;
        Ok(record)
    }

    /// Registers a device of a known model.
    pub async fn register_device(
        &self,
        actor: &str,
        id: DeviceId,
        model: ModelId,
        hardware_serial: Option<String>,
    ) -> Result<DeviceRecord, ServiceError> {
        if let Some(s) = &hardware_serial
            && (s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control()))
        {
            return Err(bad(
                "bad_hardware_serial",
                "hardware_serial must be 1 to 128 printable characters",
            ));
        }
        if self.store.model(&model).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "model {model} not found: add it first with `palisade model add {model}`"
            )));
        }
        let now = self.now_ms();
        let record = DeviceRecord {
            id: id.clone(),
            model: model.clone(),
            state: DeviceState::Registered,
            hardware_serial,
            created_ms: now,
            updated_ms: now,
            onboarding: Default::default(),
            last_seen_ms: None,
            reported_firmware: None,
            hardware: Default::default(),
        };
        self.store
            .commit(
                vec![Change::InsertDevice(record.clone())],
                vec![
                    EntryDraft::success(actor, "device.register", id.as_str())
                        .with_detail(json!({ "model": model.as_str() })),
                ],
            )
            .await?;
        Ok(record)
    }

    async fn device(&self, id: &DeviceId) -> Result<DeviceRecord, ServiceError> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("device {id} not found")))
    }

    /// Moves a device through its lifecycle. Decommissioning revokes every valid
    /// certificate of the device in the same commit.
    pub async fn set_device_state(
        &self,
        actor: &str,
        id: &DeviceId,
        to: DeviceState,
    ) -> Result<DeviceRecord, ServiceError> {
        let device = self.device(id).await?;
        let next = device
            .state
            .transition(to)
            .map_err(|e| ServiceError::Conflict(format!("device {id}: {e}")))?;
        let now = self.now_ms();
        let mut changes = vec![Change::SetDeviceState {
            id: id.clone(),
            expected: device.state,
            to: next,
            at_ms: now,
        }];
        let mut audit = vec![
            EntryDraft::success(actor, "device.state", id.as_str())
                .with_detail(json!({ "from": device.state.as_str(), "to": next.as_str() })),
        ];
        let mut revoked = 0;
        if next == DeviceState::Decommissioned {
            revoked = self
                .revocations(actor, id, now, &mut changes, &mut audit)
                .await?;
            // The tombstone (refused if a decommissioning, e.g. a pending
            // wipe, is already on record).
            changes.push(Change::RecordDecommission(DecommissionRecord::immediate(
                id,
                actor,
                "state set to decommissioned",
                now,
            )));
        }
        self.store.commit(changes, audit).await?;
        if next == DeviceState::Decommissioned {
            self.retired(id, revoked);
        }
        self.device(id).await
    }

    /// Adds to a commit the revocation of every valid certificate of a
    /// device being decommissioned, with their audit entries; returns how many.
    pub async fn revocations(
        &self,
        actor: &str,
        id: &DeviceId,
        now: i64,
        changes: &mut Vec<Change>,
        audit: &mut Vec<EntryDraft>,
    ) -> Result<usize, ServiceError> {
        let mut revoked = 0;
        for c in self.valid_certs(id).await? {
            changes.push(Change::RevokeCertificate {
                serial: c.serial.clone(),
                reason: RevocationReason::CessationOfOperation.as_str().into(),
                at_ms: now,
            });
            audit.push(
                EntryDraft::success(actor, "cert.revoke", &c.serial).with_detail(json!({
                    "device": id.as_str(),
                    "reason": RevocationReason::CessationOfOperation.as_str()
                })),
            );
            revoked += 1;
        }
        Ok(revoked)
    }

    /// After a decommissioning's commit: a new CRL if anything was revoked,
    /// and the device's sessions closed on every node.
    pub fn retired(&self, id: &DeviceId, revoked: usize) {
        if revoked > 0 {
            self.pki.crl_changed();
        }
        self.sessions.kick_device(id, "device decommissioned");
        self.bus.publish(Event::CloseSession {
            device: Some(id.clone()),
            serial: None,
            reason: "device decommissioned".into(),
        });
    }

    /// The device's valid certificates, newest first.
    pub async fn valid_certificates(&self, id: &DeviceId) -> Result<Vec<CertRecord>, ServiceError> {
        let mut certs = self.valid_certs(id).await?;
        certs.sort_by_key(|c| std::cmp::Reverse(c.not_before_ms));
        Ok(certs)
    }

    async fn valid_certs(&self, id: &DeviceId) -> Result<Vec<CertRecord>, ServiceError> {
        Ok(self
            .store
            .certificates(&CertFilter {
                device: Some(id.clone()),
                status: Some(CertStatus::Valid),
                limit: Some(10_000),
            })
            .await?)
    }

    /// Approves a device for enrolment (models that require approval).
    pub async fn approve_device(
        &self,
        actor: &str,
        id: &DeviceId,
    ) -> Result<DeviceRecord, ServiceError> {
        let device = self.device(id).await?;
        if device.state == DeviceState::Decommissioned {
            return Err(ServiceError::Conflict(format!(
                "device {id} is decommissioned"
            )));
        }
        self.store
            .commit(
                vec![Change::ApproveDevice {
                    id: id.clone(),
                    at_ms: self.now_ms(),
                }],
                vec![EntryDraft::success(actor, "device.approve", id.as_str())],
            )
            .await?;
        self.device(id).await
    }

    /// Issues a device identity certificate from a CSR. Subject and SANs come
    /// from the device's identity, never from the CSR.
    pub async fn issue_device_certificate(
        &self,
        actor: &str,
        id: &DeviceId,
        csr_der: &[u8],
    ) -> Result<CertRecord, ServiceError> {
        let device = self.device(id).await?;
        if !device.state.may_enroll() {
            self.audit_denied(actor, "cert.issue", id.as_str(), device.state.as_str())
                .await;
            return Err(ServiceError::Conflict(format!(
                "device {id} is {}: no certificate is issued to it",
                device.state
            )));
        }
        let csr = match verify_csr(csr_der, &self.csr_limits) {
            Ok(c) => c,
            Err(e) => {
                self.audit_denied(actor, "cert.issue", id.as_str(), &e.to_string())
                    .await;
                return Err(bad("bad_csr", e.to_string()));
            }
        };
        let model =
            self.store.model(&device.model).await?.ok_or_else(|| {
                ServiceError::Internal(format!("model {} vanished", device.model))
            })?;
        let record = match self.pki.issue_device(id, &model, &csr) {
            Ok(r) => r,
            Err(DeviceIssueError::KeyType(reason)) => {
                self.audit_denied(actor, "cert.issue", id.as_str(), &reason)
                    .await;
                return Err(bad("key_type_not_allowed", reason));
            }
            Err(DeviceIssueError::Ca(e)) => return Err(ServiceError::Internal(e.to_string())),
        };
        let now = self.clock.now();
        // The state check above is repeated inside the commit, so a device
        // decommissioned meanwhile gets no certificate; concurrent first
        // issuances both succeed and the device is enrolled once.
        let changes = vec![
            Change::RequireDeviceState {
                id: id.clone(),
                allowed: DeviceState::all_where(DeviceState::may_enroll),
            },
            Change::InsertCertificate(record.clone()),
            Change::AdvanceDeviceState {
                id: id.clone(),
                from: DeviceState::Registered,
                to: DeviceState::Enrolled,
                at_ms: unix_ms(now),
            },
        ];
        self.store
            .commit(
                changes,
                vec![
                    EntryDraft::success(actor, "cert.issue", &record.serial).with_detail(json!({
                        "device": id.as_str(),
                        "profile": "device",
                        "key_type": csr.key_type.to_string(),
                        "not_after_ms": record.not_after_ms,
                    })),
                ],
            )
            .await?;
        Ok(record)
    }

    /// Replaces a device's tags (rollout selectors, console groups); audited.
    pub async fn set_tags(
        &self,
        actor: &str,
        id: &DeviceId,
        tags: Vec<palisade_core::Tag>,
    ) -> Result<(), ServiceError> {
        if tags.len() > 64 {
            return Err(bad("too_many_tags", "at most 64 tags per device"));
        }
        self.device(id).await?;
        self.store
            .commit(
                vec![Change::SetDeviceTags {
                    device: id.clone(),
                    tags: tags.clone(),
                }],
                vec![
                    EntryDraft::success(actor, "device.tags", id.as_str())
                        .with_detail(json!({ "tags": tags })),
                ],
            )
            .await?;
        Ok(())
    }

    /// Revokes every valid certificate of a device (key compromise): its
    /// sessions close and it is refused until it enrols again.
    pub async fn revoke_device(
        &self,
        actor: &str,
        device: &DeviceId,
        why: &str,
    ) -> Result<usize, ServiceError> {
        let certs = self
            .store
            .certificates(&CertFilter {
                device: Some(device.clone()),
                status: Some(CertStatus::Valid),
                limit: None,
            })
            .await?;
        for c in &certs {
            self.revoke_certificate(actor, &c.serial, RevocationReason::KeyCompromise)
                .await?;
        }
        tracing::warn!(%device, revoked = certs.len(), %why, "device certificates revoked");
        Ok(certs.len())
    }

    /// Revokes a certificate.
    pub async fn revoke_certificate(
        &self,
        actor: &str,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<CertRecord, ServiceError> {
        let cert = self
            .store
            .certificate(serial)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("certificate {serial} not found")))?;
        if matches!(cert.profile.as_str(), "root" | "intermediate") {
            return Err(ServiceError::Conflict(format!(
                "certificate {serial} is a CA certificate: CA rotation is not done by revocation here"
            )));
        }
        self.store
            .commit(
                vec![Change::RevokeCertificate {
                    serial: serial.to_owned(),
                    reason: reason.as_str().to_owned(),
                    at_ms: self.now_ms(),
                }],
                vec![
                    EntryDraft::success(actor, "cert.revoke", serial).with_detail(json!({
                        "reason": reason.as_str(),
                        "device": cert.device.as_ref().map(|d| d.as_str()),
                    })),
                ],
            )
            .await?;
        // Close any live session that authenticated with it, then refresh the CRL.
        self.sessions.kick_serial(serial, "certificate revoked");
        self.bus.publish(Event::CloseSession {
            device: None,
            serial: Some(serial.to_owned()),
            reason: "certificate revoked".into(),
        });
        self.pki.crl_changed();
        self.store
            .certificate(serial)
            .await?
            .ok_or_else(|| ServiceError::Internal("revoked certificate vanished".into()))
    }

    /// Creates an operator token; the text is returned once and never stored.
    pub async fn create_token(
        &self,
        actor: &str,
        operator: OperatorName,
        role: Role,
        ttl_days: Option<u32>,
    ) -> Result<(Zeroizing<String>, TokenRecord), ServiceError> {
        let now = self.now_ms();
        let expires = match ttl_days {
            None => None,
            Some(d) if (1..=3650).contains(&d) => Some(now + i64::from(d) * 86_400_000),
            Some(_) => return Err(bad("bad_ttl", "ttl_days must be between 1 and 3650")),
        };
        if role == Role::Supplier {
            let name = SupplierName::parse(operator.as_str()).map_err(|e| {
                bad(
                    "bad_operator",
                    format!("a supplier token is named after the supplier: {e}"),
                )
            })?;
            if self.store.supplier(&name).await?.is_none() {
                return Err(ServiceError::NotFound(format!(
                    "a supplier token's operator name must be a registered supplier; {name} is not"
                )));
            }
        }
        let (text, record) = new_token(operator.clone(), role, now, expires)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.store
            .commit(
                vec![Change::InsertToken(record.clone())],
                vec![
                    EntryDraft::success(actor, "token.create", &record.id).with_detail(json!({
                        "operator": operator.as_str(),
                        "role": role.as_str(),
                        "expires_ms": expires,
                    })),
                ],
            )
            .await?;
        Ok((text, record))
    }

    /// Revokes an operator token.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> Result<(), ServiceError> {
        self.store
            .commit(
                vec![Change::RevokeToken {
                    id: id.to_owned(),
                    at_ms: self.now_ms(),
                }],
                vec![EntryDraft::success(actor, "token.revoke", id)],
            )
            .await?;
        Ok(())
    }
}
