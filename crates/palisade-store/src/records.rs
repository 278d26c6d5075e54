//! The records the store keeps, and the changes a commit may make.

use palisade_audit::{Digest32, Entry};
use palisade_core::{
    AlertState, DeviceId, DeviceState, KeyProtection, ModelId, OperatorName, Role,
    RolloutDeviceState, RolloutName, RolloutState, SiteName, SupplierName, SupportStage, Tag,
    UnmanagedState, UpdateState,
};
use serde::Serialize;

/// A device model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelRecord {
    /// Model id.
    pub id: ModelId,
    /// Free text.
    pub description: String,
    /// Lifetime of operational certificates for devices of this model.
    pub cert_validity_days: u32,
    /// Version of the model's policy, attached to devices at enrolment.
    pub policy_version: u32,
    /// Whether an operator must approve each device before it is issued a certificate.
    pub approval_required: bool,
    /// Key types devices of this model may certify (`ecdsa-p256`, `ecdsa-p384`,
    /// `ed25519`, `rsa-2048`…).
    pub allowed_key_types: Vec<String>,
    /// `none`, or `tpm`: identity keys must be proven TPM-resident at enrolment
    /// and the booted firmware is checked by TPM quotes.
    pub attestation: String,
    /// The supplier that builds its firmware (whose keys sign its releases).
    pub supplier: Option<SupplierName>,
    /// End of support, Unix ms.
    pub support_until_ms: Option<i64>,
    /// Days after a security release by which every device must run it.
    pub security_update_days: Option<u32>,
    /// Created, Unix ms.
    pub created_ms: i64,
}

/// A device in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    /// Device id (certificate CN).
    pub id: DeviceId,
    /// Its model.
    pub model: ModelId,
    /// Lifecycle state.
    pub state: DeviceState,
    /// The manufacturer's serial number, if known.
    pub hardware_serial: Option<String>,
    /// Registered, Unix ms.
    pub created_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
    /// Birth identity and what was attached at enrolment.
    pub onboarding: Onboarding,
    /// Last message over the gateway, Unix ms (flushed periodically).
    pub last_seen_ms: Option<i64>,
    /// Firmware version last reported in telemetry.
    pub reported_firmware: Option<String>,
    /// Where its key is kept and what attestation showed.
    pub hardware: HardwareTrust,
}

/// Where a device's identity key lives, and the last word of its TPM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HardwareTrust {
    /// `software`, `secure-element` (reported by the agent) or `tpm` (proven by
    /// EK/AK attestation at enrolment).
    pub key_protection: Option<KeyProtection>,
    /// The attestation key's `TPMT_PUBLIC` (TPM devices).
    #[serde(skip)]
    pub ak_public: Option<Vec<u8>>,
    /// SHA-256 (hex) of the EK certificate (TPM devices).
    pub ek_sha256: Option<String>,
    /// Last quote check: `ok` or `failed`.
    pub attestation_status: Option<String>,
    /// What it found (the firmware, or why it failed).
    pub attestation_detail: Option<String>,
    /// When, Unix ms.
    pub attested_ms: Option<i64>,
}

/// A registered TPM vendor CA: EK certificates must chain to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TpmVendorRecord {
    /// SHA-256 (hex) of the CA certificate.
    pub sha256: String,
    /// Its subject.
    pub subject: String,
    /// The CA certificate, DER.
    #[serde(skip)]
    pub ca_der: Vec<u8>,
    /// Registered, Unix ms.
    pub created_ms: i64,
}

/// A supplier's release-signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupplierKeyRecord {
    /// SHA-256 (hex) of the SubjectPublicKeyInfo.
    pub keyid: String,
    /// The supplier.
    pub supplier: SupplierName,
    /// The SubjectPublicKeyInfo, DER.
    #[serde(skip)]
    pub spki_der: Vec<u8>,
    /// Registered, Unix ms.
    pub created_ms: i64,
}

/// A firmware release that passed the supply-chain gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseRecord {
    /// The model.
    pub model: ModelId,
    /// Version string.
    pub version: String,
    /// Anti-rollback floor: devices never install a lower one.
    pub security_version: u64,
    /// Hardware revisions it runs on (empty: all of the model's).
    pub hardware: Vec<String>,
    /// SHA-256 (hex) of the image.
    pub image_sha256: String,
    /// Image length in bytes.
    pub image_len: u64,
    /// SHA-256 (hex) of the CycloneDX SBOM.
    pub sbom_sha256: String,
    /// SHA-256 (hex) of the DSSE provenance envelope.
    pub provenance_sha256: String,
    /// The supplier key that signed the provenance.
    pub signed_by: String,
    /// The SLSA builder id.
    pub builder_id: String,
    /// Who uploaded it.
    pub uploaded_by: String,
    /// Accepted, Unix ms.
    pub created_ms: i64,
}

/// A model's network policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelPolicyRecord {
    /// The model.
    pub model: ModelId,
    /// The MUD file's URL.
    pub mud_url: String,
    /// The MUD file as uploaded.
    pub mud: String,
    /// The compiled policy (JSON `palisade_policy::Policy`).
    pub policy: String,
    /// The supplier key that signed the MUD file ('' when unsigned).
    pub signed_by: String,
    /// The operator accepted a policy that opens everything.
    pub open_override: bool,
    /// Set, Unix ms.
    pub updated_ms: i64,
}

/// A site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRecord {
    /// Its name.
    pub name: SiteName,
    /// JSON: resolver, control plane, controllers, segments.
    pub spec: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Changed, Unix ms.
    pub updated_ms: i64,
}

/// Where a device sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementRecord {
    /// The device.
    pub device: DeviceId,
    /// The site.
    pub site: SiteName,
    /// The segment.
    pub segment: String,
    /// Its address there.
    pub address: String,
    /// JSON `palisade_policy::Policy` added to the model's.
    pub overrides: String,
    /// Changed, Unix ms.
    pub updated_ms: i64,
}

/// One sighting of an address that maps to no enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmanagedSighting {
    /// The site.
    pub site: SiteName,
    /// The address.
    pub address: String,
    /// Its link-layer address, if seen.
    pub mac: Option<String>,
    /// Its DHCP host name, if any.
    pub hostname: Option<String>,
    /// `flows`, `neighbours` or `leases`.
    pub source: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// Bytes seen in flows.
    pub bytes: u64,
}

/// An address at a site that maps to no enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmanagedRecord {
    /// The site.
    pub site: SiteName,
    /// The address.
    pub address: String,
    /// Its link-layer address, if seen.
    pub mac: Option<String>,
    /// Its DHCP host name, if any.
    pub hostname: Option<String>,
    /// Where it was seen (`flows`, `neighbours`, `leases`).
    pub sources: Vec<String>,
    /// First seen, Unix ms.
    pub first_ms: i64,
    /// Last seen, Unix ms.
    pub last_ms: i64,
    /// Bytes seen in flows.
    pub bytes: u64,
    /// What the operator decided.
    pub state: UnmanagedState,
    /// The device it was adopted as.
    pub device: Option<DeviceId>,
    /// Who decided, and when (Unix ms).
    pub decided: Option<(String, i64)>,
}

/// An edge gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRecord {
    /// Its identity.
    pub device: DeviceId,
    /// Its site.
    pub site: SiteName,
    /// The bundle version it last applied.
    pub applied_version: u64,
    /// JSON status it reported (counters, errors).
    pub status: String,
    /// Reported, Unix ms.
    pub updated_ms: i64,
}

/// A staged rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutRecord {
    /// Its name.
    pub name: RolloutName,
    /// The model.
    pub model: ModelId,
    /// The release installed.
    pub release_version: String,
    /// The specification (JSON `palisade_release::rollout::RolloutSpec`).
    pub spec: String,
    /// `running`, `paused`, `cancelled` or `completed`.
    pub state: RolloutState,
    /// Current wave (0-based).
    pub wave: u32,
    /// Why it paused.
    pub reason: String,
    /// Who created it.
    pub created_by: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
}

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutDeviceRecord {
    /// The rollout.
    pub rollout: RolloutName,
    /// The device.
    pub device: DeviceId,
    /// Its wave (0-based).
    pub wave: u32,
    /// `pending`, `assigned`, `committed` or `failed`.
    pub state: RolloutDeviceState,
    /// The director assignment's counter, once assigned.
    pub counter: u64,
    /// Why it failed, or the last report.
    pub detail: String,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
}

/// What a device last reported about an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateRecord {
    /// The device.
    pub device: DeviceId,
    /// The director assignment's counter the report is about.
    pub counter: u64,
    /// The TUF target.
    pub target: String,
    /// `downloading`, `installed`, `trial`, `committed`, `rolled-back`,
    /// `refused` or `failed`.
    pub state: UpdateState,
    /// Why (refusals and failures) or what (progress).
    pub detail: String,
    /// Reported, Unix ms.
    pub updated_ms: i64,
}

/// A firmware image approved for a model: what measured boot must show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareRecord {
    /// The model.
    pub model: ModelId,
    /// Version string as the device reports it.
    pub version: String,
    /// SHA-256 (hex) of the image.
    pub sha256: String,
    /// Registered, Unix ms.
    pub created_ms: i64,
}

/// How a device came into the fleet and what it was given at enrolment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Onboarding {
    /// The supplier whose batch listed it.
    pub supplier: Option<SupplierName>,
    /// The batch that listed it.
    pub batch_id: Option<String>,
    /// SHA-256 (hex) of its IDevID certificate.
    pub birth_cert_sha256: Option<String>,
    /// SHA-256 (hex) of the SubjectPublicKeyInfo it enrolled with.
    pub enrolled_key_sha256: Option<String>,
    /// JSON of the policy attached at enrolment.
    pub attached_policy: Option<String>,
    /// When it first asked to enrol while awaiting approval, Unix ms.
    pub pending_since_ms: Option<i64>,
    /// When an operator approved it, Unix ms.
    pub approved_ms: Option<i64>,
}

/// A supplier and its manufacturer CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupplierRecord {
    /// Supplier name.
    pub name: SupplierName,
    /// Manufacturer CA certificate, DER.
    #[serde(skip)]
    pub ca_der: Vec<u8>,
    /// SHA-256 (hex) of the CA certificate.
    pub ca_sha256: String,
    /// Where it takes vulnerability reports (`mailto:` or `https:`), if on record.
    pub disclosure_contact: Option<String>,
    /// Registered, Unix ms.
    pub created_ms: i64,
}

/// An imported batch manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchRecord {
    /// Batch id (SHA-256 hex of the manifest payload).
    pub id: String,
    /// Supplier.
    pub supplier: SupplierName,
    /// Model of every device in it.
    pub model: ModelId,
    /// Number of devices.
    pub device_count: u32,
    /// Imported, Unix ms.
    pub imported_ms: i64,
}

/// A one-time enrolment token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrollmentTokenRecord {
    /// Public id.
    pub id: String,
    /// The model it enrols into.
    pub model: ModelId,
    /// SHA-256 of the secret part.
    #[serde(skip)]
    pub secret_hash: Digest32,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expires, Unix ms.
    pub expires_ms: i64,
    /// Used, Unix ms.
    pub used_ms: Option<i64>,
    /// The device it enrolled.
    pub used_device: Option<String>,
}

/// Devices an advisory exposed on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvisoryExposureRecord {
    /// The advisory.
    pub advisory: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Devices running a release it hits (VEX suppressions left out).
    pub devices: u64,
}

/// When the manufacturer became aware an advisory's vulnerability is
/// actively exploited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExploitationRecord {
    /// The advisory.
    pub advisory: String,
    /// Aware since, Unix ms (starts the CRA Article 14 clock).
    pub aware_ms: i64,
    /// Who recorded it.
    pub actor: String,
    /// Their note (the evidence of exploitation).
    pub note: String,
    /// Recorded, Unix ms.
    pub recorded_ms: i64,
}

/// One VEX statement a release's supplier made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VexRecord {
    /// The release's model.
    pub model: ModelId,
    /// The release.
    pub version: String,
    /// The vulnerability as the supplier names it (upper case).
    pub vulnerability: String,
    /// The component's package URL; `None`: the whole firmware.
    pub component: Option<String>,
    /// `not_affected`, `affected`, `fixed` or `under_investigation`.
    pub status: String,
    /// Why not affected.
    pub justification: Option<String>,
    /// The supplier's words.
    pub detail: String,
    /// The supplier whose key signed the document.
    pub supplier: String,
    /// SHA-256 (hex) of the document.
    pub document_sha256: String,
    /// Uploaded, Unix ms.
    pub uploaded_ms: i64,
}

/// A model's support-end policy and the stage it has reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupportPolicyRecord {
    /// The model.
    pub model: ModelId,
    /// Alert this many days before the model's support end.
    pub notify_days: u32,
    /// Confine its devices from then, Unix ms.
    pub restrict_ms: Option<i64>,
    /// Decommission its devices then, Unix ms.
    pub retire_ms: Option<i64>,
    /// Retire with a verified wipe.
    pub retire_wipe: bool,
    /// The stage reached.
    pub stage: SupportStage,
    /// When it was reached, Unix ms.
    pub stage_ms: Option<i64>,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
}

/// What is known of a decommissioned device's wipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WipeStatus {
    /// Decommissioned without a wipe.
    NotRequested,
    /// The signed wipe command is out; waiting for the receipt or the deadline.
    Pending,
    /// The device's signed receipt verified against its certificate.
    Verified,
    /// No valid receipt by the deadline (or the device never held an identity).
    Unconfirmed,
}

impl WipeStatus {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            WipeStatus::NotRequested => "not_requested",
            WipeStatus::Pending => "pending",
            WipeStatus::Verified => "verified",
            WipeStatus::Unconfirmed => "unconfirmed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            WipeStatus::NotRequested,
            WipeStatus::Pending,
            WipeStatus::Verified,
            WipeStatus::Unconfirmed,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
    }
}

/// A device's decommissioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecommissionRecord {
    /// The device.
    pub device: DeviceId,
    /// Who asked.
    pub actor: String,
    /// Why (the operator's words).
    pub reason: String,
    /// When, Unix ms.
    pub requested_ms: i64,
    /// The wipe's state.
    pub wipe: WipeStatus,
    /// The wipe command's nonce.
    pub nonce: Option<String>,
    /// The certificate serial the wipe command was for.
    pub serial: Option<String>,
    /// No receipt by then: `unconfirmed`, Unix ms.
    pub deadline_ms: Option<i64>,
    /// When the wipe was closed, Unix ms.
    pub completed_ms: Option<i64>,
    /// The signed receipt as received.
    pub receipt: Option<String>,
    /// What the device says it destroyed.
    pub destroyed: Vec<String>,
    /// Why, in words (e.g. why unconfirmed).
    pub detail: String,
}

impl DecommissionRecord {
    /// A decommissioning done at once, without a wipe.
    pub fn immediate(device: &DeviceId, actor: &str, reason: &str, at_ms: i64) -> Self {
        Self {
            device: device.clone(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            requested_ms: at_ms,
            wipe: WipeStatus::NotRequested,
            nonce: None,
            serial: None,
            deadline_ms: None,
            completed_ms: Some(at_ms),
            receipt: None,
            destroyed: vec![],
            detail: String::new(),
        }
    }
}

/// A command for a device, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRecord {
    /// Command id (hex).
    pub id: String,
    /// Target device.
    pub device: DeviceId,
    /// Command name.
    pub name: String,
    /// Arguments (JSON array text).
    pub args: String,
    /// `queued`, `sent`, `acked` or `failed`.
    pub status: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Delivered to the device's session, Unix ms.
    pub sent_ms: Option<i64>,
    /// Acknowledged by the device, Unix ms.
    pub acked_ms: Option<i64>,
    /// The device's result text.
    pub result: Option<String>,
}

/// Whether a certificate is still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// Not revoked (it may still have expired: compare `not_after_ms`).
    Valid,
    /// Revoked.
    Revoked,
}

impl CertStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
        }
    }
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRecord {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Profile name (`device`, `server`, `edge`, `intermediate`).
    pub profile: String,
    /// Subject DN.
    pub subject: String,
    /// The device it identifies, if any.
    pub device: Option<DeviceId>,
    /// Validity start, Unix ms.
    pub not_before_ms: i64,
    /// Validity end, Unix ms.
    pub not_after_ms: i64,
    /// Valid or revoked.
    pub status: CertStatus,
    /// When revoked, Unix ms.
    pub revoked_ms: Option<i64>,
    /// Why revoked.
    pub reason: Option<String>,
    /// DER encoding.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// Issued, Unix ms.
    pub issued_ms: i64,
    /// The serial of the CA certificate that issued it; empty for a
    /// self-signed root and for certificates recorded before CA rotation
    /// existed (all from the first issuing CA).
    pub issuer: String,
}

/// An operator API token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Public id, part of the token text.
    pub id: String,
    /// The operator it belongs to.
    pub operator: OperatorName,
    /// The role it grants.
    pub role: Role,
    /// SHA-256 of the secret part.
    #[serde(skip)]
    pub secret_hash: Digest32,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expires, Unix ms.
    pub expires_ms: Option<i64>,
    /// Revoked, Unix ms.
    pub revoked_ms: Option<i64>,
}

/// An audit entry with the digest recorded when it was appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry.
    pub entry: Entry,
    /// Its digest as recorded at append time.
    pub recorded_digest: Digest32,
}

/// Which devices to list.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only this model.
    pub model: Option<ModelId>,
    /// Only this state.
    pub state: Option<DeviceState>,
    /// At most this many (default 1000).
    pub limit: Option<u32>,
}

/// Which certificates to list.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Only this device's.
    pub device: Option<DeviceId>,
    /// Only this status.
    pub status: Option<CertStatus>,
    /// At most this many (default 1000).
    pub limit: Option<u32>,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    /// Its id (`al-` and 16 hex digits).
    pub id: String,
    /// Findings with this key are this alert.
    pub dedup_key: String,
    /// The detector's name.
    pub detector: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// The device, when known.
    pub device: Option<String>,
    /// The network peer, when no device is known.
    pub peer: Option<String>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: AlertState,
    /// One line for people.
    pub summary: String,
    /// The first finding's evidence (JSON).
    pub evidence: String,
    /// The latest finding's evidence (JSON).
    pub last_evidence: String,
    /// Findings merged into it.
    pub count: u64,
    /// First finding, Unix ms.
    pub first_ms: i64,
    /// Latest finding, Unix ms.
    pub last_ms: i64,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When.
    pub acked_ms: Option<i64>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// When.
    pub resolved_ms: Option<i64>,
    /// The operator's note.
    pub note: String,
    /// Automatic responses taken (JSON list).
    pub responses: String,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only in this state.
    pub state: Option<AlertState>,
    /// Only about this device.
    pub device: Option<String>,
    /// Only with findings at or after this time.
    pub since_ms: Option<i64>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// One event in a device's timeline (besides audit entries and alerts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceEventRecord {
    /// The device.
    pub device: String,
    /// When, Unix ms.
    pub at_ms: i64,
    /// `connected`, `disconnected`, `firmware`, `flows`, `telemetry_refused`.
    pub kind: String,
    /// One line.
    pub summary: String,
    /// Details (JSON).
    pub detail: String,
}

/// One change a commit may make.
#[derive(Debug, Clone)]
// Changes are built, committed and dropped; boxing the device record would only
// add noise at every call site.
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// Add a model (conflict if it exists).
    InsertModel(ModelRecord),
    /// Add a device (conflict if it exists; the model must exist).
    InsertDevice(DeviceRecord),
    /// Move a device between states, if it is still in `expected`.
    SetDeviceState {
        /// Which device.
        id: DeviceId,
        /// The state the caller decided from.
        expected: DeviceState,
        /// The new state.
        to: DeviceState,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Fail the commit unless the device is in one of `allowed` (a guard that
    /// makes a decision taken on an earlier read hold at commit time).
    RequireDeviceState {
        /// Which device.
        id: DeviceId,
        /// States the commit may proceed in.
        allowed: Vec<DeviceState>,
    },
    /// Move a device from `from` to `to` if it is in `from`; otherwise do nothing.
    AdvanceDeviceState {
        /// Which device.
        id: DeviceId,
        /// The state to leave.
        from: DeviceState,
        /// The state to enter.
        to: DeviceState,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record an issued certificate.
    InsertCertificate(CertRecord),
    /// Revoke a valid certificate.
    RevokeCertificate {
        /// Serial, lower-case hex.
        serial: String,
        /// Reason name.
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Add an API token.
    InsertToken(TokenRecord),
    /// Revoke an API token.
    RevokeToken {
        /// Token id.
        id: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Register a supplier's manufacturer CA.
    InsertSupplier(SupplierRecord),
    /// Record (or clear) a supplier's vulnerability disclosure contact.
    SetSupplierContact {
        /// The supplier.
        name: SupplierName,
        /// The contact, or none.
        contact: Option<String>,
    },
    /// Record an imported batch (its devices are `InsertDevice` changes).
    InsertBatch(BatchRecord),
    /// Add a one-time enrolment token.
    InsertEnrollmentToken(EnrollmentTokenRecord),
    /// Use an enrolment token: fails unless it is unused and unexpired at `at_ms`.
    ConsumeEnrollmentToken {
        /// Token id.
        id: String,
        /// The device it enrols.
        device: DeviceId,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record the key a device enrolled with and the policy attached to it.
    RecordEnrollment {
        /// Which device.
        id: DeviceId,
        /// SHA-256 (hex) of the enrolled SubjectPublicKeyInfo.
        key_sha256: String,
        /// JSON of the attached policy.
        attached_policy: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Note that a device asked to enrol and awaits approval (first time only).
    MarkPending {
        /// Which device.
        id: DeviceId,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Approve a device for enrolment; fails if already approved.
    ApproveDevice {
        /// Which device.
        id: DeviceId,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Keep a device's persistent MQTT session while it is offline (whether
    /// it had subscribed to its commands); `None` ends the session.
    SetMqttSession {
        /// The device.
        device: DeviceId,
        /// `Some(subscribed)` keeps it; `None` discards it.
        subscribed: Option<bool>,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Keep (or, with an empty payload, clear) a device's retained message.
    SetRetained {
        /// The device.
        device: DeviceId,
        /// Its topic (in the device's own namespace).
        topic: String,
        /// The payload; empty clears it.
        payload: Vec<u8>,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record a new command (status `queued`).
    InsertCommand(CommandRecord),
    /// Mark a command delivered to the device's session.
    CommandSent {
        /// Command id.
        id: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record the device's acknowledgement of its own command.
    CommandAcked {
        /// Command id.
        id: String,
        /// The acknowledging device (must be the target).
        device: DeviceId,
        /// Whether it succeeded.
        ok: bool,
        /// Its result text.
        result: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record when devices were last seen and what firmware they report (no audit:
    /// operational data, flushed in batches).
    RecordPresence(Vec<(DeviceId, i64, Option<String>)>),
    /// Record a device's decommissioning (refused if one is on record).
    RecordDecommission(DecommissionRecord),
    /// Close a pending wipe (compare-and-set on `pending` and the nonce).
    CompleteWipe {
        /// The device.
        device: DeviceId,
        /// The wipe command's nonce.
        nonce: String,
        /// `verified` or `unconfirmed`.
        wipe: WipeStatus,
        /// The signed receipt as received (verified ones).
        receipt: Option<String>,
        /// What the receipt lists as destroyed.
        destroyed: Vec<String>,
        /// Why, in words.
        detail: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Set a model's support end and what it does (the stage reached is kept).
    SetSupportPolicy {
        /// The model.
        model: ModelId,
        /// End of support, Unix ms (`None`: none declared).
        support_until_ms: Option<i64>,
        /// Alert this many days before the support end.
        notify_days: u32,
        /// Confine its devices from then, Unix ms.
        restrict_ms: Option<i64>,
        /// Decommission its devices then, Unix ms.
        retire_ms: Option<i64>,
        /// Retire with a verified wipe.
        retire_wipe: bool,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Move a model to another support stage (compare-and-set).
    SetSupportStage {
        /// The model.
        model: ModelId,
        /// The stage it must be in.
        expected: SupportStage,
        /// The new stage.
        to: SupportStage,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record how many devices advisories expose on a day (upsert).
    RecordAdvisoryExposure(Vec<AdvisoryExposureRecord>),
    /// Record that the manufacturer is aware an advisory's vulnerability is
    /// actively exploited (upsert: the operator may correct the time).
    MarkExploited(ExploitationRecord),
    /// Replace a release's supplier VEX statements.
    SetReleaseVex {
        /// The release's model.
        model: ModelId,
        /// The release.
        version: String,
        /// The statements (each naming the same release).
        statements: Vec<VexRecord>,
    },
    /// Lift a decommissioning's tombstone (an audited admin action).
    ClearDecommission {
        /// The device.
        device: DeviceId,
    },
    /// Open a new alert.
    OpenAlert(AlertRecord),
    /// Merge findings into an unresolved alert.
    BumpAlert {
        /// The alert.
        id: String,
        /// Findings merged.
        count: u64,
        /// The latest finding's time.
        last_ms: i64,
        /// Its evidence (JSON).
        last_evidence: String,
    },
    /// Acknowledge or resolve an alert (compare-and-set on its state).
    SetAlertState {
        /// The alert.
        id: String,
        /// States it may be in.
        from: Vec<AlertState>,
        /// `acknowledged` or `resolved`.
        to: AlertState,
        /// Who.
        by: String,
        /// When.
        at_ms: i64,
        /// Their note (appended).
        note: String,
    },
    /// Record automatic responses taken for an alert (JSON list).
    SetAlertResponses {
        /// The alert.
        id: String,
        /// The list.
        responses: String,
    },
    /// Append timeline events.
    RecordDeviceEvents(Vec<DeviceEventRecord>),
    /// Record (or replace) posture snapshots of a day.
    RecordPostureSnapshots(Vec<PostureSnapshotRecord>),
    /// Add a console account (conflict if the name exists).
    InsertAccount(AccountRecord),
    /// Replace an account's password hash (and role, if given).
    UpdateAccount {
        /// The account.
        name: OperatorName,
        /// The new hash, if it changes.
        password_hash: Option<String>,
        /// The new role, if it changes.
        role: Option<Role>,
        /// When.
        at_ms: i64,
    },
    /// Disable an account and revoke its sessions (conflict if unknown or disabled).
    DisableAccount {
        /// The account.
        name: OperatorName,
        /// When.
        at_ms: i64,
    },
    /// Open a console session.
    InsertSession(SessionRecord),
    /// Note a session's last request.
    TouchSession {
        /// The session.
        id_hash: Digest32,
        /// When.
        at_ms: i64,
    },
    /// End a session (sign-out).
    RevokeSession {
        /// The session.
        id_hash: Digest32,
        /// When.
        at_ms: i64,
    },
    /// Save (or replace) a named device filter.
    SaveDeviceGroup(DeviceGroupRecord),
    /// Drop timeline events and resolved alerts older than this.
    PruneMonitoring {
        /// Unix ms.
        before_ms: i64,
    },
    /// Record devices' fleet features over a window this node closed (each
    /// device's replaces its previous one).
    RecordFleetWindows(Vec<FleetWindowRecord>),
    /// Store an advisory (new, or a newer version of one: its first-seen
    /// time is kept), the ids it is known by and the packages it names.
    UpsertAdvisory {
        /// The advisory.
        record: AdvisoryRecord,
        /// Every id it is known by (its own and its aliases).
        ids: Vec<String>,
        /// The packages it names: (OSV ecosystem, normalised name).
        packages: Vec<(String, String)>,
    },
    /// Replace an advisory's matches against the accepted releases.
    SetAdvisoryMatches {
        /// The advisory.
        advisory: String,
        /// Its matches.
        matches: Vec<AdvisoryMatchRecord>,
    },
    /// Replace a release's matches against the stored advisories.
    SetReleaseMatches {
        /// The model.
        model: ModelId,
        /// The release's version.
        version: String,
        /// Its matches.
        matches: Vec<AdvisoryMatchRecord>,
    },
    /// Register a TPM vendor CA.
    InsertTpmVendor(TpmVendorRecord),
    /// Approve a firmware image for a model.
    InsertFirmware(FirmwareRecord),
    /// Register a supplier's release-signing key.
    InsertSupplierKey(SupplierKeyRecord),
    /// Store a device's new signed director assignment; `counter` must be above
    /// the stored one.
    SetAssignment {
        /// The device.
        device: DeviceId,
        /// The assignment's counter.
        counter: u64,
        /// The signed assignment (JSON).
        signed: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Record an accepted release; its security version may not be below any
    /// earlier release of the model.
    InsertRelease(ReleaseRecord),
    /// Record what a device reports about its update (replaces its previous
    /// report; a report for an older counter than the stored one is ignored).
    RecordUpdate(UpdateRecord),
    /// Set a model's network policy (replacing the previous one).
    SetModelPolicy(ModelPolicyRecord),
    /// Create a site or replace its specification.
    UpsertSite(SiteRecord),
    /// Place a device at a site (replacing its previous placement).
    SetPlacement(PlacementRecord),
    /// Register an edge gateway for a site.
    SetEdge {
        /// The edge's identity.
        device: DeviceId,
        /// Its site.
        site: SiteName,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Addresses seen at sites that map to no enrolled device: each sighting
    /// merges into its (site, address) row (first and last seen, traffic,
    /// link-layer address, host name, sources).
    RecordUnmanaged(Vec<UnmanagedSighting>),
    /// The operator's decision about an unmanaged address.
    SetUnmanagedState {
        /// The site.
        site: SiteName,
        /// The address.
        address: String,
        /// Blocked, adopted, or back to seen.
        state: UnmanagedState,
        /// The device it was adopted as.
        device: Option<DeviceId>,
        /// Who decided.
        actor: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// What an edge reports: the bundle version it applied and its counters.
    RecordEdgeStatus {
        /// The edge.
        device: DeviceId,
        /// Applied bundle version.
        applied_version: u64,
        /// JSON status.
        status: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Replace a device's tags.
    SetDeviceTags {
        /// The device.
        device: DeviceId,
        /// Its tags.
        tags: Vec<Tag>,
    },
    /// Create a rollout (its name must be new).
    InsertRollout(RolloutRecord),
    /// Change a rollout's state, wave and reason.
    SetRolloutState {
        /// The rollout.
        name: RolloutName,
        /// `running`, `paused`, `cancelled` or `completed`.
        state: RolloutState,
        /// Current wave (0-based).
        wave: u32,
        /// Why (pauses).
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Add or update devices of a rollout.
    UpsertRolloutDevices(Vec<RolloutDeviceRecord>),
    /// Record where a device's key lives (at enrolment and renewal).
    RecordKeyProtection {
        /// Which device.
        id: DeviceId,
        /// `software`, `secure-element` or `tpm`.
        key_protection: KeyProtection,
        /// The attestation key (TPM devices).
        ak_public: Option<Vec<u8>>,
        /// The EK certificate's SHA-256 (TPM devices).
        ek_sha256: Option<String>,
    },
    /// Record the result of a quote check.
    RecordAttestation {
        /// Which device.
        id: DeviceId,
        /// `ok` or `failed`.
        status: String,
        /// What was found.
        detail: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Increment a named counter (the CRL number); the new value is in the receipt.
    BumpCounter {
        /// Counter name.
        name: &'static str,
    },
    /// Publish a version of a signed document (TUF metadata, the CRL): stored
    /// only if the stored version is still `replaces` (`None`: no document of
    /// that name yet); otherwise a conflict, and nothing is written.
    PutDocument {
        /// The document's name (`crl`, `tuf/timestamp.json`, …).
        name: String,
        /// Its new version.
        version: u64,
        /// The version it replaces.
        replaces: Option<u64>,
        /// The signed bytes.
        body: Vec<u8>,
        /// When, Unix ms.
        at_ms: i64,
    },
}

/// A vulnerability advisory as imported (an OSV record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvisoryRecord {
    /// Its id.
    pub id: String,
    /// When its source last changed it (RFC 3339, as the record says).
    pub modified: String,
    /// When it was withdrawn, if it was.
    pub withdrawn: Option<String>,
    /// One line.
    pub summary: String,
    /// The severity its source gave (`CRITICAL`, `HIGH`, …).
    pub severity: Option<String>,
    /// The record (OSV JSON); empty in lists.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// When this platform first imported it, Unix ms.
    pub first_seen_ms: i64,
    /// When it was last imported changed, Unix ms.
    pub updated_ms: i64,
}

/// An advisory that hits a component of an accepted release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdvisoryMatchRecord {
    /// The advisory.
    pub advisory: String,
    /// The release's model.
    pub model: ModelId,
    /// The release's version.
    pub version: String,
    /// The component (its package URL).
    pub component: String,
    /// The component's version.
    pub component_version: String,
    /// Which rule matched (`listed`, `>= 0, < 1.5.5`).
    pub why: String,
    /// The component version that fixes it, if the advisory says.
    pub fixed: Option<String>,
}

/// One device's fleet features over a closed window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetWindowRecord {
    /// The device.
    pub device: DeviceId,
    /// Its model.
    pub model: ModelId,
    /// When the window closed, Unix ms.
    pub closed_ms: i64,
    /// Distinct destinations.
    pub dests: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// The node that observed it.
    pub node: String,
}

/// A stored signed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    /// Its version.
    pub version: u64,
    /// The signed bytes.
    pub body: Vec<u8>,
    /// When it was stored, Unix ms.
    pub updated_ms: i64,
}

/// How the console's device list sorts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceSort {
    /// By id.
    #[default]
    Id,
    /// By model, then id.
    Model,
    /// By lifecycle state, then id.
    State,
    /// By last message, newest first on descending.
    LastSeen,
    /// By reported firmware, then id.
    Firmware,
    /// By site, then id.
    Site,
}

/// One page of the device list: filters, sort, and the page.
#[derive(Debug, Clone, Default)]
pub struct DevicePageQuery {
    /// A substring of the id or the hardware serial (case-insensitive).
    pub search: Option<String>,
    /// Only this model.
    pub model: Option<ModelId>,
    /// Only this state.
    pub state: Option<DeviceState>,
    /// Only this site (`Some("")`: not placed).
    pub site: Option<String>,
    /// Only this reported firmware version.
    pub firmware: Option<String>,
    /// Only devices heard from since (`Some(true)`) or not since (`Some(false)`)
    /// this time, Unix ms.
    pub seen_since: Option<(bool, i64)>,
    /// Only these devices (a selection made elsewhere, e.g. by posture).
    pub only: Option<Vec<String>>,
    /// Sort key.
    pub sort: DeviceSort,
    /// Descending.
    pub descending: bool,
    /// Rows skipped.
    pub offset: u64,
    /// Rows returned, at most.
    pub limit: u32,
}

/// A device with where it is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    /// The device.
    pub device: DeviceRecord,
    /// Its site, if placed.
    pub site: Option<String>,
    /// Its address there.
    pub address: Option<String>,
}

/// A page of devices and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePage {
    /// The page.
    pub rows: Vec<DeviceRow>,
    /// Devices matching the filters.
    pub total: u64,
}

/// A person's account for the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRecord {
    /// The operator's name (also their audit actor name).
    pub name: OperatorName,
    /// Their role.
    pub role: Role,
    /// argon2id PHC string; never shown.
    #[serde(skip)]
    pub password_hash: String,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Last changed, Unix ms.
    pub updated_ms: i64,
    /// Disabled, Unix ms.
    pub disabled_ms: Option<i64>,
}

/// A console session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRecord {
    /// SHA-256 of the cookie's secret.
    #[serde(skip)]
    pub id_hash: Digest32,
    /// Who.
    pub operator: OperatorName,
    /// The session's CSRF token (every form carries it).
    #[serde(skip)]
    pub csrf: String,
    /// Where it signed in from.
    pub address: String,
    /// Signed in, Unix ms.
    pub created_ms: i64,
    /// Last request, Unix ms (updated at most once a minute).
    pub last_seen_ms: i64,
    /// Absolute expiry, Unix ms.
    pub expires_ms: i64,
    /// Signed out or cut off, Unix ms.
    pub revoked_ms: Option<i64>,
}

/// A saved device filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceGroupRecord {
    /// Its name.
    pub name: String,
    /// The filter, as the device list's query string.
    pub query: String,
    /// Who saved it.
    pub created_by: String,
    /// When, Unix ms.
    pub created_ms: i64,
}

/// A day's posture for one framework and scope: the outcome counts of that
/// day's last evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostureSnapshotRecord {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// The framework (`checklist`, ...).
    pub framework: String,
    /// `fleet`, `model:M` or `site:S`.
    pub scope: String,
    /// Controls passed, summed over the devices.
    pub pass: u64,
    /// Failed.
    pub fail: u64,
    /// Unknown.
    pub unknown: u64,
    /// Not assessable from fleet evidence.
    pub not_assessable: u64,
    /// Devices evaluated.
    pub devices: u64,
}

/// An audit entry as the posture engine reads it: which subject, what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRefRecord {
    /// Its index in the log.
    pub index: u64,
    /// Its subject (a device id for device entries).
    pub subject: String,
    /// Its action.
    pub action: String,
    /// When, Unix ms.
    pub time_ms: i64,
    /// Its detail (JSON).
    pub detail: String,
}

/// The part of the model a [`Change`] belongs to. Each backend applies one
/// family's changes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeFamily {
    /// Devices and models: inventory, lifecycle, enrolment, hardware trust, tags, presence.
    Fleet,
    /// Certificates, revocation, API tokens, counters, published signed documents.
    Credentials,
    /// Suppliers and their keys, batches, enrolment tokens, TPM vendors, firmware.
    Onboarding,
    /// Releases, assignments, update reports, rollouts.
    Ota,
    /// Model policies, sites, placements, edges.
    Network,
    /// Commands to devices.
    Commands,
    /// Alerts, timeline events, pruning.
    Monitoring,
    /// Console accounts, sessions, saved device groups.
    Console,
    /// Vulnerability advisories and their matches against releases.
    Advisories,
}

impl Change {
    /// The family this change belongs to.
    pub fn family(&self) -> ChangeFamily {
        match self {
            Change::InsertModel { .. }
            | Change::InsertDevice { .. }
            | Change::SetDeviceState { .. }
            | Change::RequireDeviceState { .. }
            | Change::AdvanceDeviceState { .. }
            | Change::RecordEnrollment { .. }
            | Change::RecordKeyProtection { .. }
            | Change::RecordAttestation { .. }
            | Change::MarkPending { .. }
            | Change::ApproveDevice { .. }
            | Change::SetDeviceTags { .. }
            | Change::RecordPresence { .. }
            | Change::RecordDecommission(_)
            | Change::CompleteWipe { .. }
            | Change::ClearDecommission { .. }
            | Change::SetSupportPolicy { .. }
            | Change::SetSupportStage { .. } => ChangeFamily::Fleet,
            Change::InsertCertificate { .. }
            | Change::RevokeCertificate { .. }
            | Change::InsertToken { .. }
            | Change::RevokeToken { .. }
            | Change::BumpCounter { .. }
            | Change::PutDocument { .. } => ChangeFamily::Credentials,
            Change::InsertSupplier { .. }
            | Change::SetSupplierContact { .. }
            | Change::InsertBatch { .. }
            | Change::InsertEnrollmentToken { .. }
            | Change::ConsumeEnrollmentToken { .. }
            | Change::InsertTpmVendor { .. }
            | Change::InsertFirmware { .. }
            | Change::InsertSupplierKey { .. } => ChangeFamily::Onboarding,
            Change::InsertRelease { .. }
            | Change::SetAssignment { .. }
            | Change::RecordUpdate { .. }
            | Change::InsertRollout { .. }
            | Change::SetRolloutState { .. }
            | Change::UpsertRolloutDevices { .. } => ChangeFamily::Ota,
            Change::SetModelPolicy { .. }
            | Change::UpsertSite { .. }
            | Change::SetPlacement { .. }
            | Change::SetEdge { .. }
            | Change::RecordEdgeStatus { .. }
            | Change::RecordUnmanaged(_)
            | Change::SetUnmanagedState { .. } => ChangeFamily::Network,
            Change::InsertCommand { .. }
            | Change::SetMqttSession { .. }
            | Change::SetRetained { .. }
            | Change::CommandSent { .. }
            | Change::CommandAcked { .. } => ChangeFamily::Commands,
            Change::OpenAlert { .. }
            | Change::BumpAlert { .. }
            | Change::SetAlertState { .. }
            | Change::SetAlertResponses { .. }
            | Change::RecordDeviceEvents { .. }
            | Change::RecordPostureSnapshots { .. }
            | Change::PruneMonitoring { .. }
            | Change::RecordFleetWindows(_) => ChangeFamily::Monitoring,
            Change::UpsertAdvisory { .. }
            | Change::SetAdvisoryMatches { .. }
            | Change::SetReleaseMatches { .. }
            | Change::SetReleaseVex { .. }
            | Change::RecordAdvisoryExposure(_)
            | Change::MarkExploited(_) => ChangeFamily::Advisories,
            Change::InsertAccount { .. }
            | Change::UpdateAccount { .. }
            | Change::DisableAccount { .. }
            | Change::InsertSession { .. }
            | Change::TouchSession { .. }
            | Change::RevokeSession { .. }
            | Change::SaveDeviceGroup { .. } => ChangeFamily::Console,
        }
    }
}
