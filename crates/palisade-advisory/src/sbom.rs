//! The components a CycloneDX SBOM (JSON) lists, nested ones included: what
//! an advisory is matched against. The release gate has already checked the
//! SBOM against the schema (`cyclonedx-bom`); here only the package URL and
//! version of each component are read, within bounds.

use serde_json::Value;

/// Most components read from one SBOM.
pub const MAX_COMPONENTS: usize = 100_000;
/// Deepest nesting of components followed.
pub const MAX_DEPTH: usize = 16;

/// A component an SBOM lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its name.
    pub name: String,
    /// Its version, if given.
    pub version: Option<String>,
    /// Its package URL, if given.
    pub purl: Option<String>,
    /// Its `bom-ref` (what a VEX statement's `affects` names), if given.
    pub bom_ref: Option<String>,
    /// The source commit it was built from, if the SBOM says: the first of
    /// `pedigree.commits[].uid`, or a version that is a full commit hash.
    pub commit: Option<String>,
}

/// Whether `s` looks like a git commit id (7 to 64 hex digits).
pub fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SBOM could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SbomError {
    /// Not JSON, or not a CycloneDX document.
    #[error("not a CycloneDX JSON SBOM: {0}")]
    Malformed(String),
    /// Over a bound.
    #[error("the SBOM lists more than {MAX_COMPONENTS} components")]
    TooMany,
}

/// Every component of a CycloneDX JSON SBOM, depth first.
pub fn components(sbom: &[u8]) -> Result<Vec<Component>, SbomError> {
    let doc: Value =
        serde_json::from_slice(sbom).map_err(|e| SbomError::Malformed(e.to_string()))?;
    if doc.get("bomFormat").and_then(Value::as_str) != Some("CycloneDX") {
        return Err(SbomError::Malformed("bomFormat is not CycloneDX".into()));
    }
    let mut out = Vec::new();
    if let Some(list) = doc.get("components") {
        walk(list, 0, &mut out)?;
    }
    Ok(out)
}

fn walk(list: &Value, depth: usize, out: &mut Vec<Component>) -> Result<(), SbomError> {
    let Some(items) = list.as_array() else {
        return Err(SbomError::Malformed("components is not a list".into()));
    };
    if depth > MAX_DEPTH {
        return Err(SbomError::Malformed(format!(
            "components nested deeper than {MAX_DEPTH}"
        )));
    }
    for c in items {
        if out.len() >= MAX_COMPONENTS {
            return Err(SbomError::TooMany);
        }
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
        out.push(Component {
            name: text("name").unwrap_or_default(),
            version: text("version"),
            purl: text("purl"),
            bom_ref: text("bom-ref"),
            commit: c
                .pointer("/pedigree/commits/0/uid")
                .and_then(Value::as_str)
                .filter(|u| is_commit(u))
                .or_else(|| {
                    c.get("version")
                        .and_then(Value::as_str)
                        .filter(|v| v.len() >= 40 && is_commit(v))
                })
                .map(str::to_ascii_lowercase),
        });
        if let Some(nested) = c.get("components") {
            walk(nested, depth + 1, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_components_are_read_and_other_documents_refused() {
        let c = components(
            br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[
                {"type":"library","name":"regex","version":"1.5.4","purl":"pkg:cargo/regex@1.5.4",
                 "components":[{"type":"library","name":"inner","version":"1"}]},
                {"type":"library","name":"zlib"}]}"#,
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].purl.as_deref(), Some("pkg:cargo/regex@1.5.4"));
        assert_eq!(c[1].name, "inner");
        assert!(components(br#"{"spdxVersion":"SPDX-2.3"}"#).is_err());
        let built = components(
            br#"{"bomFormat":"CycloneDX","components":[
                {"name":"a","version":"1.0","pedigree":{"commits":[{"uid":"ABCDEF1234567"}]}},
                {"name":"b","version":"0123456789abcdef0123456789abcdef01234567"},
                {"name":"c","version":"cafe"}]}"#,
        )
        .unwrap();
        assert_eq!(built[0].commit.as_deref(), Some("abcdef1234567"));
        assert_eq!(
            built[1].commit.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(built[2].commit, None, "a short hex version is not a commit");
        assert!(components(br#"{"bomFormat":"CycloneDX","components":{}}"#).is_err());
    }
}
