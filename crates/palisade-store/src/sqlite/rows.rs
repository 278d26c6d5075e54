//! Row decoding: every stored record is read back through one function here,
//! and a value that does not parse (an unknown state, a malformed id) is
//! `StoreError::Corrupt`, never a panic or a silently wrong value.

use std::str::FromStr;

use palisade_audit::{Digest32, Entry};
use palisade_core::{DeviceId, DeviceState, ModelId, OperatorName, Role, SupplierName};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{
    AlertRecord, CertRecord, CertStatus, CommandRecord, DeviceRecord, EnrollmentTokenRecord,
    FirmwareRecord, HardwareTrust, ModelRecord, Onboarding, ReleaseRecord, StoreError, StoredEntry,
    SupplierKeyRecord, SupplierRecord, TokenRecord, TpmVendorRecord,
};

pub(super) fn entry_from_row(r: &SqliteRow) -> Result<StoredEntry, StoreError> {
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

pub(super) fn alert_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<AlertRecord, StoreError> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        detector: r.try_get("detector")?,
        severity: r.try_get("severity")?,
        device: r.try_get("device_id")?,
        peer: r.try_get("peer")?,
        state: r.try_get("state")?,
        summary: r.try_get("summary")?,
        evidence: r.try_get("evidence")?,
        last_evidence: r.try_get("last_evidence")?,
        count: u64::try_from(r.try_get::<i64, _>("count")?).map_err(|e| corrupt("alert", e))?,
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

pub(super) fn model_from_row(r: &SqliteRow) -> Result<ModelRecord, StoreError> {
    Ok(ModelRecord {
        id: ModelId::parse(r.try_get("id")?).map_err(|e| corrupt("model", e))?,
        description: r.try_get("description")?,
        cert_validity_days: r.try_get("cert_validity_days")?,
        policy_version: r.try_get("policy_version")?,
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
        security_update_days: r.try_get("security_update_days")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn device_from_row(r: &SqliteRow) -> Result<DeviceRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(DeviceRecord {
        id: DeviceId::parse(r.try_get("id")?).map_err(|e| corrupt("device", e))?,
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("device", e))?,
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
            key_protection: r.try_get("key_protection")?,
            ak_public: r.try_get("ak_public")?,
            ek_sha256: r.try_get("ek_sha256")?,
            attestation_status: r.try_get("attestation_status")?,
            attestation_detail: r.try_get("attestation_detail")?,
            attested_ms: r.try_get("attested_ms")?,
        },
    })
}

pub(super) fn tpm_vendor_from_row(r: &SqliteRow) -> Result<TpmVendorRecord, StoreError> {
    Ok(TpmVendorRecord {
        sha256: r.try_get("sha256")?,
        subject: r.try_get("subject")?,
        ca_der: r.try_get("ca_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn supplier_key_from_row(r: &SqliteRow) -> Result<SupplierKeyRecord, StoreError> {
    Ok(SupplierKeyRecord {
        keyid: r.try_get("keyid")?,
        supplier: SupplierName::parse(r.try_get("supplier")?)
            .map_err(|e| corrupt("supplier key", e))?,
        spki_der: r.try_get("spki_der")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn release_from_row(r: &SqliteRow) -> Result<ReleaseRecord, StoreError> {
    Ok(ReleaseRecord {
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("release", e))?,
        version: r.try_get("version")?,
        security_version: u64::try_from(r.try_get::<i64, _>("security_version")?)
            .map_err(|e| corrupt("release", e))?,
        hardware: r
            .try_get::<String, _>("hardware")?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        image_sha256: r.try_get("image_sha256")?,
        image_len: u64::try_from(r.try_get::<i64, _>("image_len")?)
            .map_err(|e| corrupt("release", e))?,
        sbom_sha256: r.try_get("sbom_sha256")?,
        provenance_sha256: r.try_get("provenance_sha256")?,
        signed_by: r.try_get("signed_by")?,
        builder_id: r.try_get("builder_id")?,
        uploaded_by: r.try_get("uploaded_by")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn firmware_from_row(r: &SqliteRow) -> Result<FirmwareRecord, StoreError> {
    Ok(FirmwareRecord {
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("firmware", e))?,
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn command_from_row(r: &SqliteRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        id: r.try_get("id")?,
        device: DeviceId::parse(r.try_get("device_id")?).map_err(|e| corrupt("command", e))?,
        name: r.try_get("name")?,
        args: r.try_get("args")?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        acked_ms: r.try_get("acked_ms")?,
        result: r.try_get("result")?,
    })
}

pub(super) fn supplier_from_row(r: &SqliteRow) -> Result<SupplierRecord, StoreError> {
    Ok(SupplierRecord {
        name: SupplierName::parse(r.try_get("name")?).map_err(|e| corrupt("supplier", e))?,
        ca_der: r.try_get("ca_der")?,
        ca_sha256: r.try_get("ca_sha256")?,
        created_ms: r.try_get("created_ms")?,
    })
}

pub(super) fn enrollment_token_from_row(
    r: &SqliteRow,
) -> Result<EnrollmentTokenRecord, StoreError> {
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(EnrollmentTokenRecord {
        id: r.try_get("id")?,
        model: ModelId::parse(r.try_get("model_id")?).map_err(|e| corrupt("enrolment token", e))?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("enrolment token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        used_ms: r.try_get("used_ms")?,
        used_device: r.try_get("used_device")?,
    })
}

pub(super) fn cert_from_row(r: &SqliteRow) -> Result<CertRecord, StoreError> {
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
    })
}

pub(super) fn token_from_row(r: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let role: String = r.try_get("role")?;
    let hash: Vec<u8> = r.try_get("secret_hash")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        operator: OperatorName::parse(r.try_get("operator")?).map_err(|e| corrupt("token", e))?,
        role: Role::from_str(&role).map_err(|e| corrupt("token", e))?,
        secret_hash: hash
            .try_into()
            .map_err(|_| corrupt("token", "hash is not 32 bytes"))?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}
