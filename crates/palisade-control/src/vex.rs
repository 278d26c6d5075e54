//! Supplier VEX: a release's supplier says which vulnerabilities do not
//! affect it, and why. The document (CSAF 2.0 VEX or CycloneDX VEX) comes in
//! a DSSE envelope signed by one of the supplier's registered keys — the
//! supplier of the release's model, no other — and replaces the release's
//! earlier statements. A `not_affected` statement suppresses the matches it
//! covers (the advisory known by that id or alias, in that release, for that
//! component or for the whole firmware): they stay on record and are shown
//! with the supplier's justification, but expose no device and raise no alert.

use palisade_advisory::Package;
use palisade_advisory::vex::{self, Status};
use palisade_audit::EntryDraft;
use palisade_core::{ModelId, Role};
use palisade_release::{Envelope, verify_envelope};
use palisade_store::{Change, VexRecord};
use serde::Serialize;
use serde_json::json;

use crate::advisories::{Advisories, Suppression};
use crate::error::ServiceError;
use crate::releases::supplier_keys;

/// DSSE payload types accepted for VEX documents.
pub const VEX_PAYLOAD_TYPES: [&str; 3] = [
    "application/vnd.cyclonedx+json",
    "application/csaf+json",
    "application/json",
];

/// What an upload stored.
#[derive(Debug, Serialize)]
pub struct VexReport {
    /// The release's model.
    pub model: String,
    /// The release.
    pub version: String,
    /// The supplier whose key signed it.
    pub supplier: String,
    /// Statements stored.
    pub statements: usize,
    /// Of which `not_affected`.
    pub not_affected: usize,
}

impl Advisories {
    /// Every stored `not_affected` statement, resolved to advisory ids.
    pub async fn suppressions(&self) -> Result<Vec<Suppression>, ServiceError> {
        let mut out = vec![];
        let mut named: std::collections::HashMap<String, Vec<String>> = Default::default();
        for s in self.store().vex_statements(None).await? {
            if s.status != Status::NotAffected.as_str() {
                continue;
            }
            if !named.contains_key(&s.vulnerability) {
                let ids = self
                    .store()
                    .advisories_named(&s.vulnerability)
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect();
                named.insert(s.vulnerability.clone(), ids);
            }
            let component = match &s.component {
                None => None,
                Some(purl) => match Package::from_purl(purl) {
                    Some(p) => Some(p),
                    None => continue, // a component we cannot name matches nothing
                },
            };
            for a in named.get(&s.vulnerability).into_iter().flatten() {
                out.push(Suppression {
                    advisory: a.clone(),
                    component: component.clone(),
                    statement: s.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Stores a supplier's VEX for its release, replacing earlier statements.
    pub async fn upload_vex(
        &self,
        actor: &str,
        caller: (Role, &str),
        model: &ModelId,
        version: &str,
        envelope: &Envelope,
    ) -> Result<VexReport, ServiceError> {
        let bad = |m: String| ServiceError::BadRequest {
            code: "vex_refused",
            message: m,
        };
        let release = self
            .store()
            .releases(Some(model))
            .await?
            .into_iter()
            .find(|r| r.version == version)
            .ok_or_else(|| {
                ServiceError::NotFound(format!("release {model} {version} not found"))
            })?;
        let m = self
            .store()
            .model(model)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model {model} not found")))?;
        let Some(owner) = m.supplier else {
            return Err(ServiceError::Conflict(format!(
                "model {model} has no supplier, so no supplier can speak for its releases"
            )));
        };
        if caller.0 == Role::Supplier && caller.1 != owner.as_str() {
            let why = format!(
                "supplier {} may not make statements on a release of {owner}",
                caller.1
            );
            self.deny(actor, model, version, &why).await;
            return Err(ServiceError::Forbidden(why));
        }
        if !VEX_PAYLOAD_TYPES.contains(&envelope.payload_type.as_str()) {
            return Err(bad(format!(
                "payload type {:?} is not a VEX document's: use one of {VEX_PAYLOAD_TYPES:?}",
                envelope.payload_type.chars().take(80).collect::<String>()
            )));
        }
        let own = supplier_keys(&**self.store(), &owner).await?;
        let payload = match verify_envelope(envelope, &own, owner.as_str()) {
            Ok((p, _)) => p,
            Err(_) => {
                // Signed by another supplier's key? Say so: that is an attempt
                // to speak for someone else's firmware.
                let mut other = None;
                for s in self.store().suppliers().await? {
                    if s.name != owner
                        && verify_envelope(
                            envelope,
                            &supplier_keys(&**self.store(), &s.name).await?,
                            s.name.as_str(),
                        )
                        .is_ok()
                    {
                        other = Some(s.name);
                        break;
                    }
                }
                let why = match other {
                    Some(o) => format!(
                        "the VEX is signed by supplier {o}, but release {model} {version} is {owner}'s"
                    ),
                    None => format!("the VEX is not signed by a registered key of {owner}"),
                };
                self.deny(actor, model, version, &why).await;
                return Err(ServiceError::Forbidden(why));
            }
        };
        if payload.len() > vex::MAX_VEX_BYTES {
            return Err(bad(format!("larger than {} bytes", vex::MAX_VEX_BYTES)));
        }
        let sbom = self.sbom_of(&release).await?;
        let statements = vex::parse(&payload, &sbom).map_err(|e| bad(e.to_string()))?;
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &payload));
        let now = self.now_ms();
        let records: Vec<VexRecord> = statements
            .iter()
            .map(|s| VexRecord {
                model: model.clone(),
                version: version.to_owned(),
                vulnerability: s.vulnerability.to_uppercase(),
                component: s.component.clone(),
                status: s.status.as_str().to_owned(),
                justification: s.justification.clone(),
                detail: s.detail.clone(),
                supplier: owner.to_string(),
                document_sha256: sha.clone(),
                uploaded_ms: now,
            })
            .collect();
        let not_affected = statements
            .iter()
            .filter(|s| s.status == Status::NotAffected)
            .count();
        self.store()
            .commit(
                vec![Change::SetReleaseVex {
                    model: model.clone(),
                    version: version.to_owned(),
                    statements: records,
                }],
                vec![
                    EntryDraft::success(actor, "release.vex", format!("{model}/{version}"))
                        .with_detail(json!({
                            "supplier": owner.as_str(), "document_sha256": sha,
                            "statements": statements.len(), "not_affected": not_affected,
                        })),
                ],
            )
            .await?;
        Ok(VexReport {
            model: model.to_string(),
            version: version.to_owned(),
            supplier: owner.to_string(),
            statements: statements.len(),
            not_affected,
        })
    }

    async fn deny(&self, actor: &str, model: &ModelId, version: &str, why: &str) {
        let entry = EntryDraft::denied(actor, "release.vex", format!("{model}/{version}"))
            .with_detail(json!({ "reason": why }));
        if let Err(e) = self.store().commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused VEX");
        }
    }
}
