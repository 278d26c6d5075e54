//! Supplier VEX: what a firmware's supplier says about a vulnerability in its
//! release, read from a CSAF 2.0 VEX document (`document.category:
//! csaf_vex`) or a CycloneDX VEX (a BOM whose `vulnerabilities` carry an
//! `analysis`). Each becomes [`Statement`]s: a vulnerability id, the
//! component it concerns (a package URL, or none: the whole firmware), the
//! status and, for `not_affected`, the justification.
//!
//! Bounded: 4 MiB a document, 10 000 statements, product trees 16 deep.

use std::collections::HashMap;

use serde_json::Value;

use crate::sbom::Component;

/// Largest VEX document read.
pub const MAX_VEX_BYTES: usize = 4 << 20;
/// Most statements one document gives.
pub const MAX_STATEMENTS: usize = 10_000;
const MAX_DEPTH: usize = 16;

/// What a supplier says of a vulnerability in a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The component is not affected (a match is suppressed, with the
    /// justification).
    NotAffected,
    /// Affected.
    Affected,
    /// Fixed in this release.
    Fixed,
    /// Being looked at.
    UnderInvestigation,
}

impl Status {
    /// The name as OpenVEX, CSAF and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotAffected => "not_affected",
            Status::Affected => "affected",
            Status::Fixed => "fixed",
            Status::UnderInvestigation => "under_investigation",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::NotAffected,
            Status::Affected,
            Status::Fixed,
            Status::UnderInvestigation,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The vulnerability (CVE, GHSA, OSV id, ...).
    pub vulnerability: String,
    /// The component's package URL; `None`: the whole firmware.
    pub component: Option<String>,
    /// The status.
    pub status: Status,
    /// Why not affected (CSAF flag label or CycloneDX justification).
    pub justification: Option<String>,
    /// The supplier's words.
    pub detail: String,
}

/// A VEX document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VexError {
    /// Not JSON, not a VEX document, or over a bound.
    #[error("not a VEX document: {0}")]
    Malformed(String),
    /// A `not_affected` statement without a justification: a supplier must
    /// say why (CISA's minimum requirements for VEX).
    #[error("vulnerability {0} is declared not affected without a justification")]
    Unjustified(String),
}

fn bad(m: impl Into<String>) -> VexError {
    VexError::Malformed(m.into())
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(|s| s.chars().take(2048).collect())
}

/// Reads a CSAF 2.0 VEX or CycloneDX VEX document; `sbom` is the release's
/// own SBOM, in which a CycloneDX `affects` reference by `bom-ref` is looked
/// up when the VEX does not list the component itself.
pub fn parse(doc: &[u8], sbom: &[Component]) -> Result<Vec<Statement>, VexError> {
    if doc.len() > MAX_VEX_BYTES {
        return Err(bad(format!("larger than {MAX_VEX_BYTES} bytes")));
    }
    let v: Value = serde_json::from_slice(doc).map_err(|e| bad(e.to_string()))?;
    let out = if v.pointer("/document/csaf_version").is_some() {
        if v.pointer("/document/category").and_then(Value::as_str) != Some("csaf_vex") {
            return Err(bad("a CSAF document whose category is not csaf_vex"));
        }
        csaf(&v)?
    } else if v.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        cyclonedx(&v, sbom)?
    } else {
        return Err(bad(
            "neither CSAF 2.0 (document.csaf_version) nor CycloneDX (bomFormat)",
        ));
    };
    if out.len() > MAX_STATEMENTS {
        return Err(bad(format!("more than {MAX_STATEMENTS} statements")));
    }
    if let Some(s) = out
        .iter()
        .find(|s| s.status == Status::NotAffected && s.justification.is_none())
    {
        return Err(VexError::Unjustified(s.vulnerability.clone()));
    }
    Ok(out)
}

/// CycloneDX 1.4–1.6 `vulnerabilities[].analysis`.
fn cyclonedx(v: &Value, sbom: &[Component]) -> Result<Vec<Statement>, VexError> {
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut own = vec![];
    if let Some(list) = v.get("components") {
        own = crate::sbom::components(
            &serde_json::to_vec(&serde_json::json!({"bomFormat": "CycloneDX", "components": list}))
                .map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
    }
    for c in own.iter().chain(sbom) {
        if let (Some(r), Some(p)) = (&c.bom_ref, &c.purl) {
            refs.entry(r.clone()).or_insert_with(|| p.clone());
        }
    }
    let Some(vulns) = v.get("vulnerabilities").and_then(Value::as_array) else {
        return Err(bad(
            "a CycloneDX document without vulnerabilities is no VEX",
        ));
    };
    let mut out = vec![];
    for x in vulns {
        let id = text(x, "id").ok_or_else(|| bad("a vulnerability without an id"))?;
        let Some(a) = x.get("analysis") else {
            continue; // no statement made
        };
        let state = text(a, "state").unwrap_or_default();
        let status = match state.as_str() {
            "not_affected" | "false_positive" => Status::NotAffected,
            "exploitable" => Status::Affected,
            "resolved" | "resolved_with_pedigree" => Status::Fixed,
            "in_triage" => Status::UnderInvestigation,
            other => return Err(bad(format!("{id}: unknown analysis state {other:?}"))),
        };
        let justification = text(a, "justification")
            .or_else(|| (state == "false_positive").then(|| "false_positive".to_owned()));
        let detail = text(a, "detail").unwrap_or_default();
        let affects = x
            .get("affects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if affects.is_empty() {
            out.push(Statement {
                vulnerability: id.clone(),
                component: None,
                status,
                justification: justification.clone(),
                detail: detail.clone(),
            });
        }
        for r in affects.iter().take(MAX_STATEMENTS) {
            let r =
                text(r, "ref").ok_or_else(|| bad(format!("{id}: an affects entry without ref")))?;
            // A package URL, a bom-ref, or a BOM-Link (`urn:cdx:…#bom-ref`).
            let component = if r.starts_with("pkg:") {
                r.clone()
            } else {
                let key = r.rsplit_once('#').map_or(r.as_str(), |(_, f)| f);
                refs.get(key).cloned().ok_or_else(|| {
                    bad(format!(
                        "{id}: affects {r:?}, which names no component with a package URL"
                    ))
                })?
            };
            out.push(Statement {
                vulnerability: id.clone(),
                component: Some(component),
                status,
                justification: justification.clone(),
                detail: detail.clone(),
            });
        }
    }
    Ok(out)
}

/// Every product id of a CSAF product tree with its package URL, if any.
fn products(
    v: &Value,
    depth: usize,
    out: &mut HashMap<String, Option<String>>,
) -> Result<(), VexError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("product tree nested deeper than {MAX_DEPTH}")));
    }
    let mut add = |p: &Value| {
        if let Some(id) = text(p, "product_id") {
            let purl = p
                .pointer("/product_identification_helper/purl")
                .and_then(Value::as_str);
            out.insert(id, purl.map(str::to_owned));
        }
    };
    if let Some(p) = v.get("product") {
        add(p);
    }
    for p in v
        .get("full_product_names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(p);
    }
    for b in v
        .get("branches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        products(b, depth + 1, out)?;
    }
    if out.len() > MAX_STATEMENTS {
        return Err(bad(format!("more than {MAX_STATEMENTS} products")));
    }
    Ok(())
}

/// CSAF 2.0 `vulnerabilities[].product_status` with `flags` and `threats`.
fn csaf(v: &Value) -> Result<Vec<Statement>, VexError> {
    let mut ids: HashMap<String, Option<String>> = HashMap::new();
    if let Some(tree) = v.get("product_tree") {
        products(tree, 0, &mut ids)?;
        // "component X of product Y": the statement is about component X.
        for r in tree
            .get("relationships")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(comp), Some(id)) = (
                text(r, "product_reference"),
                r.pointer("/full_product_name/product_id")
                    .and_then(Value::as_str),
            ) {
                let purl = r
                    .pointer("/full_product_name/product_identification_helper/purl")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| ids.get(&comp).cloned().flatten());
                ids.insert(id.to_owned(), purl);
            }
        }
    }
    let Some(vulns) = v.get("vulnerabilities").and_then(Value::as_array) else {
        return Err(bad("a CSAF VEX without vulnerabilities"));
    };
    let mut out = vec![];
    for x in vulns {
        let id = text(x, "cve")
            .or_else(|| {
                x.pointer("/ids/0/text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| bad("a vulnerability without cve or ids"))?;
        // Per product: the flag (justification) and the impact statement.
        let mut why: HashMap<String, String> = HashMap::new();
        for f in x
            .get("flags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let label = text(f, "label").unwrap_or_default();
            for p in f
                .get("product_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(p) = p.as_str() {
                    why.insert(p.to_owned(), label.clone());
                }
            }
        }
        let mut impact: HashMap<String, String> = HashMap::new();
        for t in x
            .get("threats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if text(t, "category").as_deref() == Some("impact") {
                let d = text(t, "details").unwrap_or_default();
                for p in t
                    .get("product_ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(p) = p.as_str() {
                        impact.insert(p.to_owned(), d.clone());
                    }
                }
            }
        }
        for (key, status) in [
            ("known_not_affected", Status::NotAffected),
            ("known_affected", Status::Affected),
            ("fixed", Status::Fixed),
            ("first_fixed", Status::Fixed),
            ("under_investigation", Status::UnderInvestigation),
        ] {
            let list = x
                .pointer(&format!("/product_status/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for p in list {
                let p = p
                    .as_str()
                    .ok_or_else(|| bad(format!("{id}: a product id that is not a string")))?;
                let component = match ids.get(p) {
                    Some(purl) => purl.clone(),
                    None => {
                        return Err(bad(format!(
                            "{id}: product {p:?} is not in the product tree"
                        )));
                    }
                };
                // A justification from a flag, else the impact statement
                // (CSAF requires one of the two for known_not_affected).
                let justification = why
                    .get(p)
                    .cloned()
                    .or_else(|| impact.get(p).map(|_| "impact_statement".to_owned()));
                out.push(Statement {
                    vulnerability: id.clone(),
                    component,
                    status,
                    justification: if status == Status::NotAffected {
                        justification
                    } else {
                        None
                    },
                    detail: impact.get(p).cloned().unwrap_or_default(),
                });
                if out.len() > MAX_STATEMENTS {
                    return Err(bad(format!("more than {MAX_STATEMENTS} statements")));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cyclonedx_vex_names_components_by_purl_bom_ref_or_bom_link() {
        let sbom = crate::sbom::components(
            br#"{"bomFormat":"CycloneDX","components":[{"bom-ref":"req","name":"requests","version":"2.31.0","purl":"pkg:pypi/requests@2.31.0"}]}"#,
        )
        .unwrap();
        let doc = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"vulnerabilities":[
          {"id":"CVE-2024-35195","analysis":{"state":"not_affected","justification":"code_not_reachable","detail":"verify=False is never used"},
           "affects":[{"ref":"urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#req"}]},
          {"id":"GHSA-9wx4-h78v-vm56","analysis":{"state":"exploitable"},"affects":[{"ref":"pkg:pypi/requests@2.31.0"}]},
          {"id":"CVE-2000-0001","analysis":{"state":"resolved"}}]}"#;
        let s = parse(doc, &sbom).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].component.as_deref(), Some("pkg:pypi/requests@2.31.0"));
        assert_eq!(
            (s[0].status, s[0].justification.as_deref()),
            (Status::NotAffected, Some("code_not_reachable"))
        );
        assert_eq!(s[1].status, Status::Affected);
        assert_eq!(
            (s[2].component.as_ref(), s[2].status),
            (None, Status::Fixed)
        );
        let unjustified = br#"{"bomFormat":"CycloneDX","vulnerabilities":[{"id":"CVE-1","analysis":{"state":"not_affected"}}]}"#;
        assert_eq!(
            parse(unjustified, &[]),
            Err(VexError::Unjustified("CVE-1".into()))
        );
        let dangling = br#"{"bomFormat":"CycloneDX","vulnerabilities":[{"id":"CVE-1","analysis":{"state":"exploitable"},"affects":[{"ref":"nowhere"}]}]}"#;
        assert!(parse(dangling, &[]).is_err());
    }

    #[test]
    fn csaf_vex_resolves_products_and_relationships() {
        let doc = br#"{"document":{"category":"csaf_vex","csaf_version":"2.0","title":"t",
            "publisher":{"category":"vendor","name":"Acme","namespace":"https://acme.example"},
            "tracking":{"id":"ACME-VEX-1","status":"final","version":"1","initial_release_date":"2026-01-01T00:00:00Z","current_release_date":"2026-01-01T00:00:00Z","revision_history":[{"date":"2026-01-01T00:00:00Z","number":"1","summary":"first"}]}},
          "product_tree":{"branches":[{"category":"vendor","name":"Acme","branches":[{"category":"product_version","name":"cam 2.0",
              "product":{"product_id":"CAM-2.0","name":"cam firmware 2.0"}}]}],
            "full_product_names":[{"product_id":"URLLIB3","name":"urllib3 2.0.6","product_identification_helper":{"purl":"pkg:pypi/urllib3@2.0.6"}}],
            "relationships":[{"category":"default_component_of","product_reference":"URLLIB3","relates_to_product_reference":"CAM-2.0",
              "full_product_name":{"product_id":"CAM-2.0:URLLIB3","name":"urllib3 in cam 2.0"}}]},
          "vulnerabilities":[{"cve":"CVE-2023-45803","product_status":{"known_not_affected":["CAM-2.0:URLLIB3"],"known_affected":["CAM-2.0"]},
            "flags":[{"label":"vulnerable_code_not_in_execute_path","product_ids":["CAM-2.0:URLLIB3"]}],
            "threats":[{"category":"impact","details":"redirects are never followed","product_ids":["CAM-2.0:URLLIB3"]}]}]}"#;
        let s = parse(doc, &[]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].component.as_deref(), Some("pkg:pypi/urllib3@2.0.6"));
        assert_eq!(
            s[0].justification.as_deref(),
            Some("vulnerable_code_not_in_execute_path")
        );
        assert_eq!(s[0].detail, "redirects are never followed");
        assert_eq!(
            (s[1].component.as_ref(), s[1].status),
            (None, Status::Affected)
        );
        let unknown = br#"{"document":{"category":"csaf_vex","csaf_version":"2.0"},"vulnerabilities":[{"cve":"CVE-1","product_status":{"fixed":["X"]}}]}"#;
        assert!(parse(unknown, &[]).is_err());
        let advisory =
            br#"{"document":{"category":"csaf_security_advisory","csaf_version":"2.0"}}"#;
        assert!(parse(advisory, &[]).is_err());
    }
}
