//! Row decoding: every stored record is read back through one function here,
//! and a value that does not parse (an unknown state, a malformed id) is
//! `StoreError::Corrupt`, never a panic or a silently wrong value.

use std::str::FromStr;

use palisade_audit::{Digest32, Entry};
use palisade_core::{DeviceId, DeviceState, Role, SupplierName};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{
    AccountRecord, DecommissionRecord, DeviceGroupRecord, SessionRecord, SupportPolicyRecord,
    VexRecord, WipeStatus,
};
use crate::{
    AlertRecord, AuditRefRecord, BatchRecord, CertRecord, CertStatus, CommandRecord,
    DeviceEventRecord, DeviceRecord, EdgeRecord, EnrollmentTokenRecord, FirmwareRecord,
    HardwareTrust, ModelPolicyRecord, ModelRecord, Onboarding, PlacementRecord,
    PostureSnapshotRecord, ReleaseRecord, RolloutDeviceRecord, RolloutRecord, SiteRecord,
    StoreError, StoredEntry, SupplierKeyRecord, SupplierRecord, TokenRecord, TpmVendorRecord,
    UnmanagedRecord, UpdateRecord,
};
use palisade_core::SupportStage;

pub(super) fn entry_from_row(r: &AnyRow) -> Result<StoredEntry, StoreError> {
    let digest: Vec<u8> = r.try_get("digest")?;
    let recorded_digest: Digest32 = digest.try_into().map_err(|_| StoreError::Corrupt {
        what: "audit entry",
        detail: "digest is not 32 bytes".into(),
    })?;
    Ok(StoredEntry {
        entry: Entry {
            index: u64::try_from(r.try_get::<i64, _>("seq")?).unwrap_or(u64::MAX),
            time_ms: r.try_get("time_ms")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            subject: r.try_get("subject")?,
            outcome: r.try_get("outcome")?,
            detail: r.try_get("detail")?,
        },
        recorded_digest,
    })
}

/// A name column (`DeviceId`, `ModelId`, ...) parsed into its type.
pub(super) fn name<T: std::str::FromStr>(
    r: &AnyRow,
    column: &str,
    what: &'static str,
) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let text: String = r.try_get(column)?;
    text.parse().map_err(|e: T::Err| corrupt(what, e))
}

/// A non-negative integer column in its unsigned type.
pub(super) fn unsigned<T: TryFrom<i64>>(
    r: &AnyRow,
    column: &str,
    what: &'static str,
) -> Result<T, StoreError>
where
    T::Error: std::fmt::Display,
{
    let v: i64 = r.try_get(column)?;
    T::try_from(v).map_err(|e| corrupt(what, e))
}

/// A state column, parsed into its type (`corrupt` if the name is unknown).
pub(super) fn state<T: std::str::FromStr<Err = palisade_core::UnknownState>>(
    r: &AnyRow,
    column: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    text.parse()
        .map_err(|e: palisade_core::UnknownState| corrupt(what, e))
}

pub(super) fn alert_from_row(r: &AnyRow) -> Result<AlertRecord, StoreError> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        detector: r.try_get("detector")?,
        severity: r.try_get("severity")?,
        device: r.try_get("device_id")?,
        peer: r.try_get("peer")?,
        state: state(r, "state", "alert")?,
        summary: r.try_get("summary")?,
        evidence: r.try_get("evidence")?,
        last_evidence: r.try_get("last_evidence")?,
        count: unsigned(r, "count", "alert")?,
        first_ms: r.try_get("first_ms")?,
        last_ms: r.try_get("last_ms")?,
        acked_by: r.try_get("acked_by")?,
        acked_ms: r.try_get("acked_ms")?,
        resolved_by: r.try_get("resolved_by")?,
        resolved_ms: r.try_get("resolved_ms")?,
        note: r.try_get("note")?,
        responses: r.try_get("responses")?,
    })
}

pub(super) fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

pub(super) fn model_from_row(r: &AnyRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: name(r, "id", "model")?,
        description: r.try_get("description")?,
        cert_validity_days: unsigned(r, "cert_validity_days", "model")?,
        policy_version: unsigned(r, "policy_version", "model")?,
        approval_required: r.try_get::<i64, _>("approval_required")? != 0,
        allowed_key_types: r
            .try_get::<String, _>("allowed_key_types")?
            .split(',')
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        attestation: r.try_get("attestation")?,
        supplier: r
            .try_get::<Option<String>, _>("supplier")?
            .map(|s| SupplierName::parse(&s))
            .transpose()
            .map_err(|e| corrupt("model", e))?,
        support_until_ms: r.try_get("support_until_ms")?,
        security_update_days: r
            .try_get::<Option<i64>, _>("security_update_days")?
            .map(|d| u32::try_from(d).map_err(|e| corrupt("model", e)))
            .transpose()?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn device_from_row(r: &AnyRow) -> Result<DeviceRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(DeviceRecord {
        id: name(r, "id", "device")?,
        model: name(r, "model_id", "device")?,
        state: DeviceState::parse(&state).ok_or_else(|| corrupt("device", &state))?,
        hardware_serial: r.try_get("hardware_serial")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        onboarding: Onboarding {
            supplier: r
                .try_get::<Option<String>, _>("supplier")?
                .map(|s| SupplierName::parse(&s))
                .transpose()
                .map_err(|e| corrupt("device", e))?,
            batch_id: r.try_get("batch_id")?,
            birth_cert_sha256: r.try_get("birth_cert_sha256")?,
            enrolled_key_sha256: r.try_get("enrolled_key_sha256")?,
            attached_policy: r.try_get("attached_policy")?,
            pending_since_ms: r.try_get("pending_since_ms")?,
            approved_ms: r.try_get("approved_ms")?,
        },
        last_seen_ms: r.try_get("last_seen_ms")?,
        reported_firmware: r.try_get("reported_firmware")?,
        hardware: HardwareTrust {
            key_protection: r
                .try_get::<Option<String>, _>("key_protection")?
                .map(|k| {
                    palisade_core::KeyProtection::parse(&k)
                        .ok_or_else(|| corrupt("device key protection", k))
                })
                .transpose()?,
            ak_public: r.try_get("ak_public")?,
            ek_sha256: r.try_get("ek_sha256")?,
            attestation_status: r.try_get("attestation_status")?,
            attestation_detail: r.try_get("attestation_detail")?,
            attested_ms: r.try_get("attested_ms")?,
        },
    })
}

pub(super) fn tpm_vendor_from_row(r: &AnyRow) -> Result<TpmVendorRecord, StoreError> {
    Ok(TpmVendorRecord {
        sha256: r.try_get("sha256")?,
        subject: r.try_get("subject")?,
        ca_der: r.try_get("ca_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn supplier_key_from_row(r: &AnyRow) -> Result<SupplierKeyRecord, StoreError> {
    Ok(SupplierKeyRecord {
        keyid: r.try_get("keyid")?,
        supplier: name(r, "supplier", "supplier key")?,
        spki_der: r.try_get("spki_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn release_from_row(r: &AnyRow) -> Result<ReleaseRecord, StoreError> {
    Ok(ReleaseRecord {
        model: name(r, "model_id", "release")?,
        version: r.try_get("version")?,
        security_version: unsigned(r, "security_version", "release")?,
        hardware: r
            .try_get::<String, _>("hardware")?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        image_sha256: r.try_get("image_sha256")?,
        image_len: unsigned(r, "image_len", "release")?,
        sbom_sha256: r.try_get("sbom_sha256")?,
        provenance_sha256: r.try_get("provenance_sha256")?,
        signed_by: r.try_get("signed_by")?,
        builder_id: r.try_get("builder_id")?,
        uploaded_by: r.try_get("uploaded_by")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn firmware_from_row(r: &AnyRow) -> Result<FirmwareRecord, StoreError> {
    Ok(FirmwareRecord {
        model: name(r, "model_id", "firmware")?,
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn command_from_row(r: &AnyRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        id: r.try_get("id")?,
        device: name(r, "device_id", "command")?,
        name: r.try_get("name")?,
        args: r.try_get("args")?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        acked_ms: r.try_get("acked_ms")?,
        result: r.try_get("result")?,
    })
}

pub(super) fn vex_from_row(r: &AnyRow) -> Result<VexRecord, StoreError> {
    let component: String = r.try_get("component")?;
    Ok(VexRecord {
        model: name(r, "model_id", "VEX statement")?,
        version: r.try_get("version")?,
        vulnerability: r.try_get("vulnerability")?,
        component: (!component.is_empty()).then_some(component),
        status: r.try_get("status")?,
        justification: r.try_get("justification")?,
        detail: r.try_get("detail")?,
        supplier: r.try_get("supplier")?,
        document_sha256: r.try_get("document_sha256")?,
        uploaded_ms: r.try_get("uploaded_ms")?,
    })
}

pub(super) fn support_policy_from_row(r: &AnyRow) -> Result<SupportPolicyRecord, StoreError> {
    let stage: String = r.try_get("stage")?;
    let days: i64 = r.try_get("notify_days")?;
    Ok(SupportPolicyRecord {
        model: name(r, "model_id", "support policy")?,
        notify_days: u32::try_from(days).map_err(|e| corrupt("support policy", e))?,
        restrict_ms: r.try_get("restrict_ms")?,
        retire_ms: r.try_get("retire_ms")?,
        retire_wipe: r.try_get::<i64, _>("retire_wipe")? != 0,
        stage: SupportStage::parse(&stage).map_err(|e| corrupt("support policy", e))?,

        stage_ms: r.try_get("stage_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn decommission_from_row(r: &AnyRow) -> Result<DecommissionRecord, StoreError> {
    let wipe: String = r.try_get("wipe")?;
    let destroyed: String = r.try_get("destroyed")?;
    Ok(DecommissionRecord {
        device: name(r, "device_id", "decommission")?,
        actor: r.try_get("actor")?,
        reason: r.try_get("reason")?,
        requested_ms: r.try_get("requested_ms")?,
        wipe: WipeStatus::parse(&wipe)
            .ok_or_else(|| corrupt("decommission", format!("wipe state {wipe:?}")))?,
        nonce: r.try_get("nonce")?,
        serial: r.try_get("serial")?,
        deadline_ms: r.try_get("deadline_ms")?,
        completed_ms: r.try_get("completed_ms")?,
        receipt: r.try_get("receipt")?,
        destroyed: serde_json::from_str(&destroyed).map_err(|e| corrupt("decommission", e))?,
        detail: r.try_get("detail")?,
    })
}

pub(super) fn supplier_from_row(r: &AnyRow) -> Result<SupplierRecord, StoreError> {
    Ok(SupplierRecord {
        name: name(r, "name", "supplier")?,
        ca_der: r.try_get("ca_der")?,
        ca_sha256: r.try_get("ca_sha256")?,
        disclosure_contact: r.try_get("disclosure_contact")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn enrollment_token_from_row(r: &AnyRow) -> Result<EnrollmentTokenRecord, StoreError> {
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(EnrollmentTokenRecord {
        id: r.try_get("id")?,
        model: name(r, "model_id", "enrolment token")?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("enrolment token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        used_ms: r.try_get("used_ms")?,
        used_device: r.try_get("used_device")?,
    })
}

pub(super) fn cert_from_row(r: &AnyRow) -> Result<CertRecord, StoreError> {
    let status: String = r.try_get("status")?;
    let device: Option<String> = r.try_get("device_id")?;
    Ok(CertRecord {
        serial: r.try_get("serial")?,
        profile: r.try_get("profile")?,
        subject: r.try_get("subject")?,
        device: device
            .map(|d| DeviceId::parse(&d))
            .transpose()
            .map_err(|e| corrupt("certificate", e))?,
        not_before_ms: r.try_get("not_before_ms")?,
        not_after_ms: r.try_get("not_after_ms")?,
        status: match status.as_str() {
            "valid" => CertStatus::Valid,
            "revoked" => CertStatus::Revoked,
            other => return Err(corrupt("certificate", other)),
        },
        revoked_ms: r.try_get("revoked_ms")?,
        reason: r.try_get("reason")?,
        der: r.try_get("der")?,
        issued_ms: r.try_get("issued_ms")?,
        issuer: r.try_get("issuer")?,
    })
}

pub(super) fn token_from_row(r: &AnyRow) -> Result<TokenRecord, StoreError> {
    let role: String = r.try_get("role")?;
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        operator: name(r, "operator", "token")?,
        role: Role::from_str(&role).map_err(|e| corrupt("token", e))?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

pub(super) fn model_policy_from_row(r: &AnyRow) -> Result<ModelPolicyRecord, StoreError> {
    Ok(ModelPolicyRecord {
        model: name(r, "model_id", "model policy")?,
        mud_url: r.try_get("mud_url")?,
        mud: r.try_get("mud")?,
        policy: r.try_get("policy")?,
        signed_by: r.try_get("signed_by")?,
        open_override: r.try_get::<i64, _>("open_override")? != 0,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn site_from_row(r: &AnyRow) -> Result<SiteRecord, StoreError> {
    Ok(SiteRecord {
        name: name(r, "name", "site")?,
        spec: r.try_get("spec")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn placement_from_row(r: &AnyRow) -> Result<PlacementRecord, StoreError> {
    Ok(PlacementRecord {
        device: name(r, "device_id", "placement")?,
        site: name(r, "site", "placement")?,
        segment: r.try_get("segment")?,
        address: r.try_get("address")?,
        overrides: r.try_get("overrides")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn edge_from_row(r: &AnyRow) -> Result<EdgeRecord, StoreError> {
    Ok(EdgeRecord {
        device: name(r, "device_id", "edge")?,
        site: name(r, "site", "edge")?,
        applied_version: unsigned(r, "applied_version", "edge")?,
        status: r.try_get("status")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn unmanaged_from_row(r: &AnyRow) -> Result<UnmanagedRecord, StoreError> {
    let sources: String = r.try_get("sources")?;
    let device: Option<String> = r.try_get("device_id")?;
    let decided_by: Option<String> = r.try_get("decided_by")?;
    let decided_ms: Option<i64> = r.try_get("decided_ms")?;
    Ok(UnmanagedRecord {
        site: name(r, "site", "unmanaged host")?,
        address: r.try_get("address")?,
        mac: r.try_get("mac")?,
        hostname: r.try_get("hostname")?,
        sources: sources
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        first_ms: r.try_get("first_ms")?,
        last_ms: r.try_get("last_ms")?,
        bytes: unsigned(r, "bytes", "unmanaged host")?,
        state: state(r, "state", "unmanaged host")?,
        device: device
            .map(|d| {
                d.parse()
                    .map_err(|e: palisade_core::IdError| corrupt("unmanaged host", e))
            })
            .transpose()?,
        decided: decided_by.zip(decided_ms),
    })
}

pub(super) fn rollout_from_row(r: &AnyRow) -> Result<RolloutRecord, StoreError> {
    Ok(RolloutRecord {
        name: name(r, "name", "rollout")?,
        model: name(r, "model_id", "rollout")?,
        release_version: r.try_get("release_version")?,
        spec: r.try_get("spec")?,
        state: state(r, "state", "rollout")?,
        wave: unsigned(r, "wave", "rollout")?,
        reason: r.try_get("reason")?,
        created_by: r.try_get("created_by")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn rollout_device_from_row(r: &AnyRow) -> Result<RolloutDeviceRecord, StoreError> {
    Ok(RolloutDeviceRecord {
        rollout: name(r, "rollout", "rollout device")?,
        device: name(r, "device_id", "rollout device")?,
        wave: unsigned(r, "wave", "rollout device")?,
        state: state(r, "state", "rollout device")?,
        counter: unsigned(r, "counter", "rollout device")?,
        detail: r.try_get("detail")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn update_from_row(r: &AnyRow) -> Result<UpdateRecord, StoreError> {
    Ok(UpdateRecord {
        device: name(r, "device_id", "update")?,
        counter: unsigned(r, "counter", "update")?,
        target: r.try_get("target")?,
        state: state(r, "state", "update")?,
        detail: r.try_get("detail")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

pub(super) fn batch_from_row(r: &AnyRow) -> Result<BatchRecord, StoreError> {
    Ok(BatchRecord {
        id: r.try_get("id")?,
        supplier: name(r, "supplier", "batch")?,
        model: name(r, "model_id", "batch")?,
        device_count: unsigned(r, "device_count", "batch")?,
        imported_ms: r.try_get("imported_ms")?,
    })
}

pub(super) fn device_event_from_row(r: &AnyRow) -> Result<DeviceEventRecord, StoreError> {
    Ok(DeviceEventRecord {
        device: r.try_get("device_id")?,
        at_ms: r.try_get("at_ms")?,
        kind: r.try_get("kind")?,
        summary: r.try_get("summary")?,
        detail: r.try_get("detail")?,
    })
}

pub(super) fn posture_snapshot_from_row(r: &AnyRow) -> Result<PostureSnapshotRecord, StoreError> {
    Ok(PostureSnapshotRecord {
        day: r.try_get("day")?,
        framework: r.try_get("framework")?,
        scope: r.try_get("scope")?,
        pass: unsigned(r, "pass", "posture snapshot")?,
        fail: unsigned(r, "fail", "posture snapshot")?,
        unknown: unsigned(r, "unknown", "posture snapshot")?,
        not_assessable: unsigned(r, "not_assessable", "posture snapshot")?,
        devices: unsigned(r, "devices", "posture snapshot")?,
    })
}

pub(super) fn audit_ref_from_row(r: &AnyRow) -> Result<AuditRefRecord, StoreError> {
    Ok(AuditRefRecord {
        index: unsigned(r, "seq", "audit entry")?,
        subject: r.try_get("subject")?,
        action: r.try_get("action")?,
        time_ms: r.try_get("time_ms")?,
        detail: r.try_get("detail")?,
    })
}

pub(super) fn account_from_row(r: &AnyRow) -> Result<AccountRecord, StoreError> {
    Ok(AccountRecord {
        name: name(r, "name", "account")?,
        role: name(r, "role", "account")?,
        password_hash: r.try_get("password_hash")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        disabled_ms: r.try_get("disabled_ms")?,
    })
}

pub(super) fn session_from_row(r: &AnyRow) -> Result<SessionRecord, StoreError> {
    let id: Vec<u8> = r.try_get("id_hash")?;
    Ok(SessionRecord {
        id_hash: id
            .try_into()
            .map_err(|_| corrupt("session", "id hash is not 32 bytes"))?,
        operator: name(r, "operator", "session")?,
        csrf: r.try_get("csrf")?,
        address: r.try_get("address")?,
        created_ms: r.try_get("created_ms")?,
        last_seen_ms: r.try_get("last_seen_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

pub(super) fn device_group_from_row(r: &AnyRow) -> Result<DeviceGroupRecord, StoreError> {
    Ok(DeviceGroupRecord {
        name: r.try_get("name")?,
        query: r.try_get("query")?,
        created_by: r.try_get("created_by")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn advisory_from_row(
    r: &AnyRow,
    with_body: bool,
) -> Result<crate::AdvisoryRecord, StoreError> {
    Ok(crate::AdvisoryRecord {
        id: r.try_get("id")?,
        modified: r.try_get("modified")?,
        withdrawn: r.try_get("withdrawn")?,
        summary: r.try_get("summary")?,
        severity: r.try_get("severity")?,
        body: if with_body {
            r.try_get("body")?
        } else {
            Vec::new()
        },
        first_seen_ms: r.try_get("first_seen_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}
