//! Firmware releases through the supply-chain gate: a release names an image
//! blob already uploaded, carries its CycloneDX SBOM and a DSSE-signed in-toto
//! SLSA provenance, and is accepted only when the provenance is signed by a key
//! registered for the model's supplier and attests exactly that image. A
//! supplier's token may release only for the models it owns. Every outcome is
//! audited; nothing is recorded for a refused release.

use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, ModelId, Role, SupplierName};
use palisade_release::{GateError, SupplierKey, check_release};
use palisade_store::{Change, ReleaseRecord, Store, SupplierKeyRecord};
use serde_json::json;

use crate::blobs::{BlobStore, put_bytes};
use crate::error::ServiceError;

/// A release as uploaded.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// The model.
    pub model: ModelId,
    /// Version string.
    pub version: String,
    /// Anti-rollback floor.
    pub security_version: u64,
    /// Hardware revisions (empty: all).
    pub hardware: Vec<String>,
    /// SHA-256 (hex) of the uploaded image blob.
    pub image_sha256: String,
    /// The CycloneDX SBOM (JSON bytes).
    pub sbom: Vec<u8>,
    /// The DSSE provenance envelope (JSON bytes).
    pub provenance: Vec<u8>,
}

/// The release service.
#[derive(Debug)]
pub struct Releases {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    /// Deltas made so far: (from, to) image SHA-256 → the delta blob's. The
    /// lock also makes one delta at a time (CPU-bound).
    deltas: tokio::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

/// Images above this size get a faster, larger delta (zstd level 9, not 19).
const DELTA_FAST_ABOVE: usize = 64 << 20;

fn bad(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code,
        message: message.into(),
    }
}

fn label_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

impl Releases {
    /// Composes the service.
    pub fn new(store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            blobs,
            clock,
            deltas: tokio::sync::Mutex::default(),
        }
    }

    /// The delta from release `from`'s image to `to`'s (zstd with the old
    /// image as reference), stored as a blob and made on first request;
    /// returns the delta blob's SHA-256.
    pub async fn delta(
        &self,
        from: &ReleaseRecord,
        to: &ReleaseRecord,
    ) -> Result<String, ServiceError> {
        let key = (from.image_sha256.clone(), to.image_sha256.clone());
        let mut made = self.deltas.lock().await;
        if let Some(sha) = made.get(&key)
            && self.blobs.len(sha).await?.is_some()
        {
            return Ok(sha.clone());
        }
        let read = |sha: String| async move {
            self.blobs
                .read(&sha, None)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("image {sha} is missing")))?
                .bytes()
                .await
                .map_err(ServiceError::from)
        };
        let (old, new) = (read(key.0.clone()).await?, read(key.1.clone()).await?);
        let d = tokio::task::spawn_blocking(move || {
            let level = if new.len() > DELTA_FAST_ABOVE { 9 } else { 19 };
            palisade_release::delta::make(&old, &new, level)
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let (sha, _) = put_bytes(self.blobs.as_ref(), &d).await?;
        made.insert(key, sha.clone());
        Ok(sha)
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// Registers a supplier's release-signing public key (PEM; admin).
    pub async fn add_key(
        &self,
        actor: &str,
        supplier: &SupplierName,
        pem: &str,
    ) -> Result<SupplierKeyRecord, ServiceError> {
        if self.store.supplier(supplier).await?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "supplier {supplier} is not registered"
            )));
        }
        let key = SupplierKey::from_pem(pem).map_err(|e| bad("bad_key", e.to_string()))?;
        let record = SupplierKeyRecord {
            keyid: key.keyid.clone(),
            supplier: supplier.clone(),
            spki_der: key.spki_der,
            created_ms: self.clock.now_ms(),
        };
        self.store
            .commit(
                vec![Change::InsertSupplierKey(record.clone())],
                vec![
                    EntryDraft::success(actor, "supplier.key.add", supplier.as_str())
                        .with_detail(json!({ "keyid": record.keyid })),
                ],
            )
            .await?;
        Ok(record)
    }

    async fn refuse(&self, actor: &str, subject: &str, err: ServiceError) -> ServiceError {
        let entry = EntryDraft::denied(actor, "release.upload", subject)
            .with_detail(json!({ "reason": err.to_string() }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused release");
        }
        err
    }

    /// Runs the gate and records the release.
    pub async fn create(
        &self,
        actor: &str,
        caller_role: Role,
        caller_name: &str,
        r: NewRelease,
    ) -> Result<ReleaseRecord, ServiceError> {
        let subject = format!(
            "{}/{}",
            r.model,
            r.version.chars().take(64).collect::<String>()
        );
        match self.gate(caller_role, caller_name, &r).await {
            Ok((verified, sbom_sha, prov_sha, image_len)) => {
                let record = ReleaseRecord {
                    model: r.model.clone(),
                    version: r.version.clone(),
                    security_version: r.security_version,
                    hardware: r.hardware.clone(),
                    image_sha256: r.image_sha256.clone(),
                    image_len,
                    sbom_sha256: sbom_sha,
                    provenance_sha256: prov_sha,
                    signed_by: verified.signed_by.clone(),
                    builder_id: verified.builder_id.clone(),
                    uploaded_by: actor.to_string(),
                    created_ms: self.clock.now_ms(),
                };
                let audit = EntryDraft::success(actor, "release.upload", &subject).with_detail(json!({
                    "image_sha256": record.image_sha256,
                    "security_version": record.security_version,
                    "signed_by": record.signed_by,
                    "builder_id": record.builder_id,
                    "build_type": verified.build_type,
                    "sbom": { "spec": verified.sbom_spec, "components": verified.sbom_components },
                }));
                match self
                    .store
                    .commit(vec![Change::InsertRelease(record.clone())], vec![audit])
                    .await
                {
                    Ok(_) => Ok(record),
                    Err(e) => Err(self.refuse(actor, &subject, e.into()).await),
                }
            }
            Err(e) => Err(self.refuse(actor, &subject, e).await),
        }
    }

    async fn gate(
        &self,
        caller_role: Role,
        caller_name: &str,
        r: &NewRelease,
    ) -> Result<(palisade_release::Verified, String, String, u64), ServiceError> {
        if !label_ok(&r.version, 64) {
            return Err(bad(
                "bad_version",
                "a version is 1 to 64 of [A-Za-z0-9._+-]",
            ));
        }
        if r.hardware.len() > 64 || !r.hardware.iter().all(|h| label_ok(h, 64)) {
            return Err(bad(
                "bad_hardware",
                "hardware revisions are at most 64 names of [A-Za-z0-9._+-]",
            ));
        }
        let model = self
            .store
            .model(&r.model)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model {} not found", r.model)))?;
        let Some(owner) = model.supplier else {
            return Err(ServiceError::Conflict(format!(
                "model {} has no supplier, so no key can sign its releases: add the model with --supplier",
                r.model
            )));
        };
        if caller_role == Role::Supplier && caller_name != owner.as_str() {
            return Err(ServiceError::Forbidden(format!(
                "supplier {caller_name} may not release firmware for model {} (it belongs to {owner})",
                r.model
            )));
        }
        let image_len = self.blobs.len(&r.image_sha256).await?.ok_or_else(|| {
            bad(
                "no_image",
                format!(
                    "no uploaded image has sha256 {}: PUT it to /api/v1/blobs first",
                    r.image_sha256
                ),
            )
        })?;
        let keys = supplier_keys(&*self.store, &owner).await?;
        let verified = check_release(
            &r.image_sha256,
            &r.sbom,
            &r.provenance,
            &keys,
            owner.as_str(),
        )
        .map_err(|e| match e {
            GateError::Unsigned { .. } => ServiceError::Forbidden(e.to_string()),
            other => bad("release_refused", other.to_string()),
        })?;
        let (sbom_sha, _) = put_bytes(&*self.blobs, &r.sbom).await?;
        let (prov_sha, _) = put_bytes(&*self.blobs, &r.provenance).await?;
        Ok((verified, sbom_sha, prov_sha, image_len))
    }
}

/// A supplier's registered signing keys (those that no longer parse are
/// left out).
pub(crate) async fn supplier_keys(
    store: &dyn Store,
    supplier: &palisade_core::SupplierName,
) -> Result<Vec<SupplierKey>, ServiceError> {
    Ok(store
        .supplier_keys(supplier)
        .await?
        .iter()
        .filter_map(|k| SupplierKey::from_spki_der(&k.spki_der).ok())
        .collect())
}
