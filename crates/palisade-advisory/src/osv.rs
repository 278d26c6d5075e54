//! OSV records (<https://ossf.github.io/osv-schema/>), as published by OSV.dev
//! and the databases it gathers (GitHub, PyPI, RustSec, Go, Debian, …). Only
//! the fields matching needs are read; unknown fields are ignored, as the
//! schema asks. A record is refused when it is too large or has more entries
//! than any real record does.

use serde::{Deserialize, Serialize};

/// Largest record accepted (the largest real records are a few hundred KiB:
/// Debian's, with long `versions` lists).
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// Most `affected` entries in a record.
pub const MAX_AFFECTED: usize = 4096;
/// Most events in a range, and ranges in an entry.
pub const MAX_EVENTS: usize = 4096;
/// Most versions listed in an entry.
pub const MAX_VERSIONS: usize = 100_000;
/// Longest id, alias, package name or version.
pub const MAX_FIELD: usize = 512;

/// A record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvisoryError {
    /// Not an OSV record.
    #[error("not an OSV record: {0}")]
    Malformed(String),
    /// Over a bound.
    #[error("OSV record {id}: {what}")]
    TooLarge {
        /// The record's id, if read.
        id: String,
        /// Which bound.
        what: String,
    },
}

/// An OSV vulnerability record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its id (`GHSA-…`, `PYSEC-…`, `RUSTSEC-…`, `DSA-…`, `GO-…`, `CVE-…`).
    pub id: String,
    /// When it last changed (RFC 3339).
    pub modified: String,
    /// When it was published.
    #[serde(default)]
    pub published: Option<String>,
    /// Set when the record was withdrawn: it then affects nothing.
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// Other ids of the same vulnerability (CVE ↔ GHSA …).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line.
    #[serde(default)]
    pub summary: Option<String>,
    /// What it affects.
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// Severity scores.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Source-specific fields (GitHub's `severity`, …).
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// A severity score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Severity {
    /// `CVSS_V3`, `CVSS_V4`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The vector.
    pub score: String,
}

/// One affected package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    /// The package (absent for records that name only commits).
    #[serde(default)]
    pub package: Option<PackageRef>,
    /// Version ranges.
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Versions listed one by one.
    #[serde(default)]
    pub versions: Vec<String>,
}

/// The package an entry names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// `crates.io`, `PyPI`, `npm`, `Go`, `Debian:12`, …
    pub ecosystem: String,
    /// Its name in that ecosystem.
    pub name: String,
    /// Its package URL, if given.
    #[serde(default)]
    pub purl: Option<String>,
}

/// A range of affected versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// `SEMVER`, `ECOSYSTEM` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its events, in the order given.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One event of a range: exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event {
    /// Affected from this version on (`"0"`: from the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    /// Not affected from this version on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Affected up to and including this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    /// Not affected from here on (an upper bound on the search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// Reads one OSV record.
pub fn parse_record(bytes: &[u8]) -> Result<Record, AdvisoryError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(AdvisoryError::TooLarge {
            id: String::new(),
            what: format!("{} bytes, over {MAX_RECORD_BYTES}", bytes.len()),
        });
    }
    let r: Record =
        serde_json::from_slice(bytes).map_err(|e| AdvisoryError::Malformed(e.to_string()))?;
    check(&r)?;
    Ok(r)
}

fn check(r: &Record) -> Result<(), AdvisoryError> {
    let too = |what: String| AdvisoryError::TooLarge {
        id: r.id.chars().take(64).collect(),
        what,
    };
    if r.id.is_empty() || r.id.len() > MAX_FIELD || r.id.chars().any(char::is_control) {
        return Err(AdvisoryError::Malformed(
            "the id is empty, too long or has control characters".into(),
        ));
    }
    if r.aliases.len() > MAX_AFFECTED || r.aliases.iter().any(|a| a.len() > MAX_FIELD) {
        return Err(too("too many or too long aliases".into()));
    }
    if r.affected.len() > MAX_AFFECTED {
        return Err(too(format!("{} affected entries", r.affected.len())));
    }
    for a in &r.affected {
        if let Some(p) = &a.package
            && (p.name.len() > MAX_FIELD || p.ecosystem.len() > MAX_FIELD)
        {
            return Err(too("a package name or ecosystem is too long".into()));
        }
        if a.ranges.len() > MAX_EVENTS || a.ranges.iter().any(|g| g.events.len() > MAX_EVENTS) {
            return Err(too("too many ranges or events".into()));
        }
        if a.versions.len() > MAX_VERSIONS || a.versions.iter().any(|v| v.len() > MAX_FIELD) {
            return Err(too("too many or too long versions".into()));
        }
        for e in a.ranges.iter().flat_map(|g| &g.events) {
            let set = [&e.introduced, &e.fixed, &e.last_affected, &e.limit]
                .iter()
                .filter(|f| f.is_some())
                .count();
            if set != 1 {
                return Err(AdvisoryError::Malformed(format!(
                    "record {}: a range event must have exactly one of introduced, fixed, last_affected, limit",
                    r.id
                )));
            }
            let v = e
                .introduced
                .as_ref()
                .or(e.fixed.as_ref())
                .or(e.last_affected.as_ref())
                .or(e.limit.as_ref());
            if v.is_some_and(|v| v.len() > MAX_FIELD) {
                return Err(too("a range version is too long".into()));
            }
        }
    }
    Ok(())
}

impl Record {
    /// Every id this record is known by: its own and its aliases.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Whether `id` names it (its id or an alias), ignoring case.
    pub fn is_named(&self, id: &str) -> bool {
        self.ids().any(|i| i.eq_ignore_ascii_case(id))
    }

    /// The severity its source gave (`CRITICAL`, `HIGH`, …), if any.
    pub fn severity_label(&self) -> Option<String> {
        self.database_specific
            .as_ref()
            .and_then(|d| d.get("severity"))
            .and_then(|s| s.as_str())
            .map(str::to_uppercase)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_and_bad_ones_refused() {
        let r = parse_record(
            br#"{"id":"GHSA-x","modified":"2024-01-01T00:00:00Z","aliases":["CVE-2024-1"],
                "affected":[{"package":{"ecosystem":"crates.io","name":"regex"},
                  "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.5.5"}]}]}],
                "database_specific":{"severity":"high"},"future_field":1}"#,
        )
        .unwrap();
        assert!(r.is_named("cve-2024-1") && r.is_named("GHSA-x"));
        assert_eq!(r.severity_label().as_deref(), Some("HIGH"));
        for bad in [
            &b"{"[..],
            br#"{"id":"","modified":"x"}"#,
            br#"{"id":"a","modified":"x","affected":[{"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1"}]}]}]}"#,
            br#"{"id":"a","modified":"x","affected":[{"ranges":[{"type":"SEMVER","events":[{}]}]}]}"#,
        ] {
            assert!(matches!(parse_record(bad), Err(AdvisoryError::Malformed(_))));
        }
        let huge = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            parse_record(&huge),
            Err(AdvisoryError::TooLarge { .. })
        ));
    }
}
