//! Request and response bodies of the operator API.

use palisade_store::{
    BatchRecord, CertRecord, CommandRecord, DeviceRecord, FirmwareRecord, ModelRecord,
    ReleaseRecord, StoredEntry, SupplierKeyRecord, SupplierRecord, TokenRecord, TpmVendorRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use palisade_control::files::pem;

/// RFC 3339 text for Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A device model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    /// Model id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Lifetime of device certificates (days).
    pub cert_validity_days: u32,
    /// Policy version attached to devices at enrolment.
    pub policy_version: u32,
    /// Whether devices need approval before enrolment.
    pub approval_required: bool,
    /// Allowed key types.
    pub allowed_key_types: Vec<String>,
    /// `none` or `tpm`.
    pub attestation: String,
    /// The supplier that builds its firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// End of support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_until: Option<String>,
    /// Days after a security release by which every device must run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_update_days: Option<u32>,
    /// When added.
    pub created_at: String,
}

impl From<ModelRecord> for ModelView {
    fn from(m: ModelRecord) -> Self {
        Self {
            id: m.id.to_string(),
            description: m.description,
            cert_validity_days: m.cert_validity_days,
            policy_version: m.policy_version,
            approval_required: m.approval_required,
            allowed_key_types: m.allowed_key_types,
            attestation: m.attestation,
            supplier: m.supplier.map(|s| s.to_string()),
            support_until: m.support_until_ms.map(rfc3339),
            security_update_days: m.security_update_days,
            created_at: rfc3339(m.created_ms),
        }
    }
}

/// Adds a model.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddModel {
    /// Model id: lower-case letters, digits, `.`, `_`, `-`.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Device certificate lifetime (days); the server default if absent.
    pub cert_validity_days: Option<u32>,
    /// Whether each device needs an operator's approval before it is issued a
    /// certificate (EST answers 202 + Retry-After until then).
    #[serde(default)]
    pub approval_required: bool,
    /// Allowed key types (default: ecdsa-p256, ecdsa-p384, ed25519).
    pub allowed_key_types: Option<Vec<String>>,
    /// `none` (default) or `tpm`: devices must prove a TPM-resident key at
    /// enrolment, and their booted firmware is checked by TPM quotes.
    pub attestation: Option<String>,
    /// The supplier that builds its firmware (its keys sign the releases).
    pub supplier: Option<String>,
    /// End of support (RFC 3339 date or date-time, e.g. `2030-12-31`).
    pub support_until: Option<String>,
    /// Days after a security release by which every device must run it.
    pub security_update_days: Option<u32>,
}

/// A device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// Device id (certificate CN).
    pub id: String,
    /// Model id.
    pub model: String,
    /// Lifecycle state.
    pub state: String,
    /// Manufacturer serial number.
    pub hardware_serial: Option<String>,
    /// Registered.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
    /// The supplier whose batch listed it (birth identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// The batch that listed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The policy attached at enrolment (model, policy version, lifetime, key type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_policy: Option<serde_json::Value>,
    /// `pending` while awaiting approval, `approved` once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Where its key lives: `software`, `secure-element` (reported) or `tpm`
    /// (hardware-attested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_protection: Option<String>,
    /// The last TPM quote check: `ok` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// What the last quote check found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_detail: Option<String>,
    /// When the last quote was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<String>,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        Self {
            id: d.id.to_string(),
            model: d.model.to_string(),
            state: d.state.to_string(),
            hardware_serial: d.hardware_serial,
            created_at: rfc3339(d.created_ms),
            updated_at: rfc3339(d.updated_ms),
            supplier: d.onboarding.supplier.map(|s| s.to_string()),
            batch: d.onboarding.batch_id,
            attached_policy: d
                .onboarding
                .attached_policy
                .and_then(|p| serde_json::from_str(&p).ok()),
            approval: match (d.onboarding.approved_ms, d.onboarding.pending_since_ms) {
                (Some(_), _) => Some("approved".into()),
                (None, Some(_)) => Some("pending".into()),
                _ => None,
            },
            key_protection: d.hardware.key_protection.map(|k| k.as_str().to_owned()),
            attestation: d.hardware.attestation_status,
            attestation_detail: d.hardware.attestation_detail,
            attested_at: d.hardware.attested_ms.map(rfc3339),
        }
    }
}

/// A device with its certificates.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    /// The device.
    pub device: DeviceView,
    /// Whether it has a live MQTT session.
    #[serde(default)]
    pub connected: bool,
    /// When it last sent a message.
    #[serde(default)]
    pub last_seen: Option<String>,
    /// The firmware version its telemetry reports.
    #[serde(default)]
    pub reported_firmware: Option<String>,
    /// Publishes and subscriptions it was refused (security events) since start.
    #[serde(default)]
    pub security_events: u64,
    /// Its certificates, oldest first.
    pub certificates: Vec<CertView>,
}

/// Registers a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Device id: lower-case letters, digits, `.`, `_`, `-`.
    pub id: String,
    /// Its model.
    pub model: String,
    /// Manufacturer serial number.
    pub hardware_serial: Option<String>,
}

/// Moves a device to another lifecycle state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetState {
    /// `enrolled`, `active`, `quarantined` or `decommissioned`.
    pub state: String,
}

/// Sets a model's support end and what it does.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSupport {
    /// End of support: YYYY-MM-DD (end of that day, UTC) or RFC 3339.
    #[serde(default)]
    pub until: Option<String>,
    /// Alert this many days before the support end.
    #[serde(default)]
    pub notify_days: u32,
    /// Confine the model's devices to the control plane and update traffic from then.
    #[serde(default)]
    pub restrict_at: Option<String>,
    /// Decommission the model's devices then.
    #[serde(default)]
    pub retire_at: Option<String>,
    /// Retire with a verified wipe.
    #[serde(default)]
    pub retire_wipe: bool,
}

/// A model's support-end policy and the stage it has reached.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SupportView {
    /// The model.
    pub model: String,
    /// End of support (RFC 3339).
    pub support_until: Option<String>,
    /// Notice, days before the end.
    pub notify_days: u32,
    /// Confined from (RFC 3339).
    pub restrict_at: Option<String>,
    /// Retired on (RFC 3339).
    pub retire_at: Option<String>,
    /// Retired with a verified wipe.
    pub retire_wipe: bool,
    /// `supported`, `notified`, `restricted` or `retired`.
    pub stage: String,
    /// Since (RFC 3339).
    pub stage_since: Option<String>,
}

/// Decommissions a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decommission {
    /// Why (1 to 500 printable characters; kept and audited).
    pub reason: String,
    /// Send the device a signed wipe command and wait for its receipt.
    #[serde(default)]
    pub wipe: bool,
}

/// Lifts a decommissioning's tombstone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reinstate {
    /// Why (1 to 500 printable characters; audited).
    pub reason: String,
}

/// A device's decommissioning.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecommissionView {
    /// The device.
    pub device: String,
    /// Who decommissioned it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub requested: String,
    /// `not_requested`, `pending`, `verified` or `unconfirmed`.
    pub wipe: String,
    /// The wipe command's nonce.
    pub nonce: Option<String>,
    /// The certificate the wipe command was for.
    pub serial: Option<String>,
    /// A pending wipe becomes `unconfirmed` at (RFC 3339).
    pub deadline: Option<String>,
    /// When the wipe was closed (RFC 3339).
    pub completed: Option<String>,
    /// What the device's receipt says it destroyed.
    pub destroyed: Vec<String>,
    /// The signed receipt as received (JSON text).
    pub receipt: Option<String>,
    /// Why, in words.
    pub detail: String,
}

impl From<palisade_store::DecommissionRecord> for DecommissionView {
    fn from(r: palisade_store::DecommissionRecord) -> Self {
        Self {
            device: r.device.to_string(),
            actor: r.actor,
            reason: r.reason,
            requested: rfc3339(r.requested_ms),
            wipe: r.wipe.as_str().to_owned(),
            nonce: r.nonce,
            serial: r.serial,
            deadline: r.deadline_ms.map(rfc3339),
            completed: r.completed_ms.map(rfc3339),
            destroyed: r.destroyed,
            receipt: r.receipt,
            detail: r.detail,
        }
    }
}

/// Asks for a device certificate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCertificate {
    /// PKCS#10 CSR, PEM. Its subject and extensions are ignored.
    pub csr: String,
}

/// A certificate in the inventory.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertView {
    /// Serial, lower-case hex.
    pub serial: String,
    /// `root`, `intermediate`, `server`, `device` or `edge`.
    pub profile: String,
    /// Subject DN.
    pub subject: String,
    /// The device it identifies.
    pub device: Option<String>,
    /// Validity start.
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// `valid` or `revoked`.
    pub status: String,
    /// When revoked.
    pub revoked_at: Option<String>,
    /// Why revoked.
    pub reason: Option<String>,
    /// The certificate, PEM (on single-certificate responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// Issuing CA then root, PEM (on issuance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

impl CertView {
    /// A list entry (no PEM).
    pub fn summary(c: &CertRecord) -> Self {
        Self {
            serial: c.serial.clone(),
            profile: c.profile.clone(),
            subject: c.subject.clone(),
            device: c.device.as_ref().map(ToString::to_string),
            not_before: rfc3339(c.not_before_ms),
            not_after: rfc3339(c.not_after_ms),
            status: c.status.as_str().to_owned(),
            revoked_at: c.revoked_ms.map(rfc3339),
            reason: c.reason.clone(),
            pem: None,
            chain: None,
        }
    }

    /// With the certificate PEM.
    pub fn full(c: &CertRecord) -> Self {
        Self {
            pem: Some(pem("CERTIFICATE", &c.der)),
            ..Self::summary(c)
        }
    }
}

/// Revokes a certificate.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// RFC 5280 reason: `unspecified`, `key-compromise`, `affiliation-changed`,
    /// `superseded`, `cessation-of-operation`, `privilege-withdrawn`.
    pub reason: Option<String>,
}

/// An operator token (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// Operator name.
    pub operator: String,
    /// `admin`, `operator` or `auditor`.
    pub role: String,
    /// Created.
    pub created_at: String,
    /// Expires.
    pub expires_at: Option<String>,
    /// Revoked.
    pub revoked_at: Option<String>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            operator: t.operator.to_string(),
            role: t.role.to_string(),
            created_at: rfc3339(t.created_ms),
            expires_at: t.expires_ms.map(rfc3339),
            revoked_at: t.revoked_ms.map(rfc3339),
        }
    }
}

/// Creates a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Operator name.
    pub operator: String,
    /// `admin`, `operator` or `auditor`.
    pub role: String,
    /// Lifetime in days; no expiry if absent.
    pub ttl_days: Option<u32>,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token text for `Authorization: Bearer`.
    pub token: String,
    /// Its record.
    #[serde(flatten)]
    pub info: TokenView,
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Operator name.
    pub operator: String,
    /// Role.
    pub role: String,
    /// Token id.
    pub token_id: String,
}

/// An audit entry.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the log.
    pub index: u64,
    /// Unix milliseconds (part of the hashed entry).
    pub time_ms: i64,
    /// RFC 3339.
    pub time: String,
    /// Who acted.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// To what.
    pub subject: String,
    /// `success` or `denied`.
    pub outcome: String,
    /// Extra facts: JSON text exactly as hashed.
    pub detail: String,
    /// The digest recorded when it was appended (hex).
    pub recorded_digest: String,
}

impl From<&StoredEntry> for AuditEntryView {
    fn from(s: &StoredEntry) -> Self {
        let e = &s.entry;
        Self {
            index: e.index,
            time_ms: e.time_ms,
            time: rfc3339(e.time_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            outcome: e.outcome.clone(),
            detail: e.detail.clone(),
            recorded_digest: hex::encode(s.recorded_digest),
        }
    }
}

impl AuditEntryView {
    /// Back to the entry (for verification by clients).
    pub fn to_entry(&self) -> palisade_audit::Entry {
        palisade_audit::Entry {
            index: self.index,
            time_ms: self.time_ms,
            actor: self.actor.clone(),
            action: self.action.clone(),
            subject: self.subject.clone(),
            outcome: self.outcome.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// A stored checkpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointView {
    /// Entries covered.
    pub size: u64,
    /// C2SP signed note.
    pub note: String,
}

/// The newest checkpoint and the key that verifies it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditHeadView {
    /// Entries covered (0 and no note for an empty log).
    pub size: u64,
    /// C2SP signed note.
    pub note: Option<String>,
    /// Verifier key `name+id+key`; pin it out of band (`palisade-data/audit/log.pub`).
    pub verifier_key: String,
}

/// An inclusion proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionView {
    /// The entry.
    pub entry: AuditEntryView,
    /// Audit path, leaf to root (hex).
    pub path: Vec<String>,
    /// Checkpoint the path leads to.
    pub checkpoint: String,
}

/// A consistency proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyView {
    /// Older size.
    pub old_size: u64,
    /// Proof hashes (hex).
    pub path: Vec<String>,
    /// Newest checkpoint.
    pub checkpoint: String,
}

/// A registered supplier.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SupplierView {
    /// Supplier name.
    pub name: String,
    /// SHA-256 (hex) of its manufacturer CA certificate.
    pub ca_sha256: String,
    /// Where it takes vulnerability reports, if on record.
    #[serde(default)]
    pub disclosure_contact: Option<String>,
    /// Registered.
    pub created_at: String,
}

impl From<&SupplierRecord> for SupplierView {
    fn from(s: &SupplierRecord) -> Self {
        Self {
            name: s.name.to_string(),
            ca_sha256: s.ca_sha256.clone(),
            disclosure_contact: s.disclosure_contact.clone(),
            created_at: rfc3339(s.created_ms),
        }
    }
}

/// A supplier's release-signing key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SupplierKeyView {
    /// SHA-256 (hex) of the SubjectPublicKeyInfo.
    pub keyid: String,
    /// The supplier.
    pub supplier: String,
    /// Registered.
    pub created_at: String,
}

impl From<&SupplierKeyRecord> for SupplierKeyView {
    fn from(k: &SupplierKeyRecord) -> Self {
        Self {
            keyid: k.keyid.clone(),
            supplier: k.supplier.to_string(),
            created_at: rfc3339(k.created_ms),
        }
    }
}

/// Registers a supplier's release-signing key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSupplierKey {
    /// The public key, PEM (`PUBLIC KEY`: Ed25519, ECDSA P-256 or P-384).
    pub public_key_pem: String,
}

/// An uploaded blob.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlobView {
    /// SHA-256 (hex).
    pub sha256: String,
    /// Length in bytes.
    pub length: u64,
}

/// A release to submit through the supply-chain gate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReleaseBody {
    /// The model.
    pub model: String,
    /// Version string.
    pub version: String,
    /// Anti-rollback floor (never below an earlier release of the model).
    pub security_version: u64,
    /// Hardware revisions it runs on (absent: all).
    pub hardware: Option<Vec<String>>,
    /// SHA-256 of the image uploaded with `PUT /api/v1/blobs`.
    pub image_sha256: String,
    /// CycloneDX SBOM (JSON).
    #[schema(value_type = Object)]
    pub sbom: serde_json::Value,
    /// DSSE envelope of an in-toto Statement v1 with a SLSA Provenance v1 predicate.
    #[schema(value_type = Object)]
    pub provenance: serde_json::Value,
}

/// An accepted release.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    /// The model.
    pub model: String,
    /// Version.
    pub version: String,
    /// Anti-rollback floor.
    pub security_version: u64,
    /// Hardware revisions (empty: all).
    pub hardware: Vec<String>,
    /// Image SHA-256.
    pub image_sha256: String,
    /// Image length.
    pub image_len: u64,
    /// SBOM SHA-256.
    pub sbom_sha256: String,
    /// Provenance envelope SHA-256.
    pub provenance_sha256: String,
    /// Supplier key that signed the provenance.
    pub signed_by: String,
    /// SLSA builder id.
    pub builder_id: String,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// Accepted.
    pub created_at: String,
}

impl From<&ReleaseRecord> for ReleaseView {
    fn from(r: &ReleaseRecord) -> Self {
        Self {
            model: r.model.to_string(),
            version: r.version.clone(),
            security_version: r.security_version,
            hardware: r.hardware.clone(),
            image_sha256: r.image_sha256.clone(),
            image_len: r.image_len,
            sbom_sha256: r.sbom_sha256.clone(),
            provenance_sha256: r.provenance_sha256.clone(),
            signed_by: r.signed_by.clone(),
            builder_id: r.builder_id.clone(),
            uploaded_by: r.uploaded_by.clone(),
            created_at: rfc3339(r.created_ms),
        }
    }
}

/// A device whose model is past its end of support.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PastSupportView {
    /// Device.
    pub device: String,
    /// Model.
    pub model: String,
    /// When support ended.
    pub support_ended: String,
}

/// A device not running its model's latest security release in time.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BehindTargetView {
    /// Device.
    pub device: String,
    /// Model.
    pub model: String,
    /// Firmware it reports (none if it never reported).
    pub running: Option<String>,
    /// Security version of that firmware, if it is a known release.
    pub running_security_version: Option<u64>,
    /// The security version it must run.
    pub required_security_version: u64,
    /// When it had to run it by.
    pub due: String,
}

/// Devices past support or behind their security-update target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LifecycleView {
    /// Past end of support.
    pub past_support: Vec<PastSupportView>,
    /// Behind the security-update target.
    pub behind_target: Vec<BehindTargetView>,
}

/// Assigns a release to a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRelease {
    /// The release version (of the device's model).
    pub version: String,
}

/// Release list filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    /// Only this model's.
    pub model: Option<String>,
}

/// A registered TPM vendor CA.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TpmVendorView {
    /// SHA-256 (hex) of the CA certificate.
    pub sha256: String,
    /// Its subject.
    pub subject: String,
    /// Registered.
    pub created_at: String,
}

impl From<&TpmVendorRecord> for TpmVendorView {
    fn from(v: &TpmVendorRecord) -> Self {
        Self {
            sha256: v.sha256.clone(),
            subject: v.subject.clone(),
            created_at: rfc3339(v.created_ms),
        }
    }
}

/// Registers a TPM vendor CA.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTpmVendor {
    /// The vendor's EK-issuing CA certificate, PEM.
    pub ca_pem: String,
}

/// An approved firmware image.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FirmwareView {
    /// Model.
    pub model: String,
    /// Version as devices report it.
    pub version: String,
    /// SHA-256 (hex) of the image: what measured boot must show.
    pub sha256: String,
    /// Approved.
    pub created_at: String,
}

impl From<&FirmwareRecord> for FirmwareView {
    fn from(f: &FirmwareRecord) -> Self {
        Self {
            model: f.model.to_string(),
            version: f.version.clone(),
            sha256: f.sha256.clone(),
            created_at: rfc3339(f.created_ms),
        }
    }
}

/// Approves a firmware image for a model.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddFirmware {
    /// Version as devices report it.
    pub version: String,
    /// SHA-256 (hex) of the image.
    pub sha256: String,
}

/// Registers a supplier.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSupplier {
    /// Supplier name.
    pub name: String,
    /// Its manufacturer CA certificate, PEM.
    pub ca_pem: String,
    /// Where it takes vulnerability reports: a `mailto:` or `https://` URI.
    #[serde(default)]
    pub disclosure_contact: Option<String>,
}

/// Sets (or, with null, clears) a supplier's vulnerability disclosure contact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDisclosureContact {
    /// A `mailto:` or `https://` URI, or null.
    pub disclosure_contact: Option<String>,
}

/// An imported batch.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    /// Batch id (SHA-256 of the signed payload).
    pub id: String,
    /// Supplier.
    pub supplier: String,
    /// Model.
    pub model: String,
    /// Devices registered.
    pub device_count: u32,
    /// Imported.
    pub imported_at: String,
}

impl From<&BatchRecord> for BatchView {
    fn from(b: &BatchRecord) -> Self {
        Self {
            id: b.id.clone(),
            supplier: b.supplier.to_string(),
            model: b.model.to_string(),
            device_count: b.device_count,
            imported_at: rfc3339(b.imported_ms),
        }
    }
}

/// Creates an enrolment token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// The model devices enrolled with it join.
    pub model: String,
    /// Lifetime in seconds (default 86400, at most 30 days).
    pub ttl_secs: Option<u64>,
}

/// A new enrolment token: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token, for HTTP Basic as the password (user name = device id).
    pub token: String,
    /// Token id.
    pub id: String,
    /// Model.
    pub model: String,
    /// Expiry.
    pub expires_at: String,
}

/// Sends a command.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCommand {
    /// Command name (`[a-z0-9_-]`, at most 32).
    pub name: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A command and how far it got.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    /// Command id.
    pub id: String,
    /// Target device.
    pub device: String,
    /// Name.
    pub name: String,
    /// Arguments.
    pub args: Vec<String>,
    /// `queued`, `sent`, `acked` or `failed`.
    pub status: String,
    /// Created.
    pub created_at: String,
    /// Delivered to the device.
    pub sent_at: Option<String>,
    /// Acknowledged.
    pub acked_at: Option<String>,
    /// The device's result.
    pub result: Option<String>,
}

impl From<&CommandRecord> for CommandView {
    fn from(c: &CommandRecord) -> Self {
        Self {
            id: c.id.clone(),
            device: c.device.to_string(),
            name: c.name.clone(),
            args: serde_json::from_str(&c.args).unwrap_or_default(),
            status: c.status.clone(),
            created_at: rfc3339(c.created_ms),
            sent_at: c.sent_ms.map(rfc3339),
            acked_at: c.acked_ms.map(rfc3339),
            result: c.result.clone(),
        }
    }
}

/// One item of a device's timeline.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineItem {
    /// When, Unix ms.
    pub at_ms: i64,
    /// `audit`, `alert` or `event`.
    pub source: String,
    /// Audit action, detector, or event kind.
    pub kind: String,
    /// One line.
    pub summary: String,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// For audit items: the entry's index in the log.
    pub audit_index: Option<u64>,
}

/// A device's timeline: audit entries, alerts and events in time order; with
/// `proofs`, each audit entry's inclusion proof against a signed checkpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineView {
    /// The device.
    pub device: String,
    /// When this was made, Unix ms.
    pub generated_ms: i64,
    /// The range covered.
    pub since_ms: i64,
    /// The range covered.
    pub until_ms: i64,
    /// The items, oldest first.
    pub items: Vec<TimelineItem>,
    /// Inclusion proofs of the audit items (when asked for).
    pub proofs: Vec<InclusionView>,
    /// The audit log's checkpoint verifier key (C2SP note key), for reference;
    /// a verifier pins its own copy.
    pub log_key: String,
}

/// A CA certificate of this installation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaView {
    /// Serial, lower-case hex.
    pub serial: String,
    /// `root`, `issuing` or `cross` (a CA's key certified by another root).
    pub kind: String,
    /// Subject DN.
    pub subject: String,
    /// The serial of the CA that signed it (empty for a self-signed root and
    /// for the first issuing CA).
    pub issuer: String,
    /// Validity start.
    pub not_before: String,
    /// Validity end.
    pub not_after: String,
    /// `current` (issues now, or the root new devices get), `in-service`
    /// (still trusted), `retired` or `out-of-service` (expired, or an old
    /// issuing CA whose last certificate expired).
    pub status: String,
    /// For an issuing CA: when the last valid certificate it issued expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_certificate_expires: Option<String>,
    /// The certificate, PEM.
    pub pem: String,
}

/// Rotates the issuing CA or the root.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateCa {
    /// The new issuing CA's key on an HSM (an RFC 7512 `pkcs11:` URI,
    /// generated on the token if absent); default: a software key file
    /// `ca/keys/SERIAL.key`.
    pub key: Option<String>,
}

/// Retires a CA that is not current.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RetireCa {
    /// Retire an issuing CA even though certificates it issued are still
    /// valid (they stop working at once).
    #[serde(default)]
    pub force: bool,
}

/// Asks the devices still on an older issuing CA to renew now.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RenewFleet {
    /// Each device renews at a random moment within this many seconds
    /// (spreads the load on EST); default 0.
    #[serde(default)]
    pub within_s: u32,
}

/// What a fleet renewal queued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenewFleetView {
    /// Devices asked to renew.
    pub queued: usize,
    /// The issuing CA they move to.
    pub issuing: String,
}
