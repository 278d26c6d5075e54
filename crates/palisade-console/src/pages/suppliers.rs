//! Suppliers: what the operator requires of each (signed releases, an SBOM
//! and provenance with each, a vulnerability disclosure contact, a declared
//! support period for each model) and whether the evidence is there. The same
//! evidence feeds the posture's supplier controls (checklist CL7, ETSI 5.2).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::chrome::{Chrome, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// One requirement and its evidence.
pub struct Requirement {
    what: &'static str,
    met: bool,
    evidence: String,
}

/// A supplier and its standing.
pub struct SupplierLine {
    name: String,
    models: Vec<(String, u64)>,
    requirements: Vec<Requirement>,
    met: usize,
}

#[derive(Template)]
#[template(path = "suppliers.html")]
struct Page {
    chrome: Chrome,
    suppliers: Vec<SupplierLine>,
    orphans: Vec<(String, u64)>,
}

/// `GET /suppliers`
pub async fn list(State(c): State<Console>, who: Person) -> Response {
    let now = c.clock.now_ms();
    let (suppliers, models, releases, counts) = match tokio::try_join!(
        c.store.suppliers(),
        c.store.models(),
        c.store.releases(None),
        c.store.device_counts()
    ) {
        Ok(x) => x,
        Err(e) => return store_error(e),
    };
    let mut devices: BTreeMap<String, u64> = BTreeMap::new();
    for (model, state, n) in counts {
        if state != palisade_core::DeviceState::Decommissioned {
            *devices.entry(model.to_string()).or_default() += n;
        }
    }
    let mut lines = Vec::with_capacity(suppliers.len());
    for s in suppliers {
        let keys = match c.store.supplier_keys(&s.name).await {
            Ok(k) => k.len(),
            Err(e) => return store_error(e),
        };
        let own: Vec<_> = models
            .iter()
            .filter(|m| m.supplier.as_ref() == Some(&s.name))
            .collect();
        let own_releases: Vec<_> = releases
            .iter()
            .filter(|r| own.iter().any(|m| m.id == r.model))
            .collect();
        let n = own_releases.len();
        let signed = own_releases
            .iter()
            .filter(|r| !r.signed_by.is_empty())
            .count();
        let sbom = own_releases
            .iter()
            .filter(|r| !r.sbom_sha256.is_empty())
            .count();
        let prov = own_releases
            .iter()
            .filter(|r| !r.provenance_sha256.is_empty())
            .count();
        let of = |k: usize| {
            if n == 0 {
                "no release yet".to_owned()
            } else {
                format!("{k} of {n} releases")
            }
        };
        let supported: Vec<_> = own.iter().filter_map(|m| m.support_until_ms).collect();
        let support_ok = !own.is_empty() && supported.len() == own.len();
        let support_evidence = if own.is_empty() {
            "it supplies no model yet".to_owned()
        } else if !support_ok {
            let missing: Vec<String> = own
                .iter()
                .filter(|m| m.support_until_ms.is_none())
                .map(|m| m.id.to_string())
                .collect();
            format!("no support end declared for {}", missing.join(", "))
        } else {
            let first = supported.iter().min().copied().unwrap_or(0);
            if first < now {
                format!("support ended {} for one of its models", fmt::when(first))
            } else {
                format!("every model supported; the first ends {}", fmt::when(first))
            }
        };
        let requirements = vec![
            Requirement {
                what: "Signed releases (a registered release-signing key)",
                met: keys > 0 && n > 0 && signed == n,
                evidence: format!("{keys} key(s) registered; {} signed", of(signed)),
            },
            Requirement {
                what: "An SBOM with every release",
                met: n > 0 && sbom == n,
                evidence: format!("{} carry an SBOM", of(sbom)),
            },
            Requirement {
                what: "Build provenance (SLSA) with every release",
                met: n > 0 && prov == n,
                evidence: format!("{} carry signed provenance", of(prov)),
            },
            Requirement {
                what: "A vulnerability disclosure contact",
                met: s.disclosure_contact.is_some(),
                evidence: s.disclosure_contact.clone().unwrap_or_else(|| {
                    format!("none on record (palisade supplier contact {} URI)", s.name)
                }),
            },
            Requirement {
                what: "A declared support period for each model",
                met: support_ok && supported.iter().all(|t| *t >= now),
                evidence: support_evidence,
            },
        ];
        lines.push(SupplierLine {
            name: s.name.to_string(),
            models: own
                .iter()
                .map(|m| {
                    (
                        m.id.to_string(),
                        devices.get(m.id.as_str()).copied().unwrap_or(0),
                    )
                })
                .collect(),
            met: requirements.iter().filter(|r| r.met).count(),
            requirements,
        });
    }
    let orphans = models
        .iter()
        .filter(|m| m.supplier.is_none())
        .map(|m| {
            (
                m.id.to_string(),
                devices.get(m.id.as_str()).copied().unwrap_or(0),
            )
        })
        .collect();
    render(&Page {
        chrome: Chrome::new(&who, "Suppliers", "suppliers"),
        suppliers: lines,
        orphans,
    })
}
