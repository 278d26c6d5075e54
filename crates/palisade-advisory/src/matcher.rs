//! Whether an OSV record affects one version of one package, following the
//! schema's evaluation rules: a withdrawn record affects nothing; a version
//! in the entry's `versions` list is affected; each `SEMVER` or `ECOSYSTEM`
//! range is evaluated over its events sorted in the ecosystem's order
//! (`introduced: "0"` first; `fixed` excludes its version, `last_affected`
//! includes it). `GIT` ranges name commits, which an SBOM version is not, so
//! they are left to the `versions` list (a matcher that reads a `GIT` range
//! with `introduced: "0"` as "every version" over-reports); when the SBOM
//! names the commit a component was built from, [`affected_at_commit`] reads
//! what a range can say without the repository's history: the commit that
//! introduced the flaw or the last affected one is affected, the fixing
//! commit is not, any other is undecided. Ranges of an ecosystem whose order
//! we do not know are skipped, never guessed.

use std::cmp::Ordering;

use crate::osv::{Event, Range, Record};
use crate::package::Package;
use crate::version::{Scheme, Version};

/// Why a version is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The record.
    pub advisory: String,
    /// Which rule matched, in words (`listed`, `>= 0, < 1.5.5`).
    pub why: String,
    /// The first version that fixes it after this one, if a range says.
    pub fixed: Option<String>,
}

/// Whether `record` affects `version` of `package`.
pub fn affected_by(record: &Record, package: &Package, version: &str) -> Option<Hit> {
    if record.withdrawn.is_some() {
        return None;
    }
    for entry in &record.affected {
        let Some(named) = entry.package.as_ref().map(Package::from_osv) else {
            continue;
        };
        if named.name != package.name || !named.ecosystem.covers(&package.ecosystem) {
            continue;
        }
        let scheme = Scheme::of(&package.ecosystem);
        let parsed = scheme.and_then(|s| s.parse(version).ok());
        let listed = entry.versions.iter().any(|v| {
            v == version
                || matches!((scheme, &parsed), (Some(s), Some(p)) if s.parse(v).ok().as_ref() == Some(p))
        });
        if listed {
            return Some(Hit {
                advisory: record.id.clone(),
                why: "listed".into(),
                fixed: None,
            });
        }
        for range in &entry.ranges {
            let scheme = match range.kind.as_str() {
                "SEMVER" => Scheme::Semver,
                "ECOSYSTEM" => match scheme {
                    Some(s) => s,
                    None => continue,
                },
                _ => continue,
            };
            if let Some(hit) = in_range(range, scheme, version) {
                return Some(Hit {
                    advisory: record.id.clone(),
                    why: hit.0,
                    fixed: hit.1,
                });
            }
        }
    }
    None
}

/// Whether `record`'s `GIT` ranges say `commit` of `package` is affected:
/// only commits an event names decide (no history is at hand to place the
/// others between them).
pub fn affected_at_commit(record: &Record, package: &Package, commit: &str) -> Option<Hit> {
    if record.withdrawn.is_some() || !crate::sbom::is_commit(commit) {
        return None;
    }
    let same = |event: &Option<String>| {
        event.as_deref().is_some_and(|e| {
            let (e, c) = (e.to_ascii_lowercase(), commit.to_ascii_lowercase());
            e.len() >= 7 && (e.starts_with(&c) || c.starts_with(&e))
        })
    };
    for entry in &record.affected {
        let Some(named) = entry.package.as_ref().map(Package::from_osv) else {
            continue;
        };
        if named.name != package.name || !named.ecosystem.covers(&package.ecosystem) {
            continue;
        }
        for range in entry.ranges.iter().filter(|r| r.kind == "GIT") {
            if range.events.iter().any(|e| same(&e.fixed)) {
                return None; // the fix itself
            }
            let fixed = range.events.iter().find_map(|e| e.fixed.clone());
            if let Some(e) = range
                .events
                .iter()
                .find(|e| same(&e.introduced) || same(&e.last_affected))
            {
                let how = if same(&e.introduced) {
                    "introduced"
                } else {
                    "last affected"
                };
                return Some(Hit {
                    advisory: record.id.clone(),
                    why: format!("commit {} ({how})", &commit[..commit.len().min(12)]),
                    fixed,
                });
            }
        }
    }
    None
}

/// The range's verdict on `version`: why it is affected and the next fix.
fn in_range(range: &Range, scheme: Scheme, version: &str) -> Option<(String, Option<String>)> {
    let v = scheme.parse(version).ok()?;
    // Each event with its parsed version (`None`: introduced "0", lowest).
    let mut events: Vec<(Option<Version>, &Event)> = Vec::with_capacity(range.events.len());
    for e in &range.events {
        let at = e
            .introduced
            .as_ref()
            .or(e.fixed.as_ref())
            .or(e.last_affected.as_ref())
            .or(e.limit.as_ref())?;
        if e.introduced.as_deref() == Some("0") {
            events.push((None, e));
        } else {
            // An event that does not parse makes the range unreadable.
            events.push((Some(scheme.parse(at).ok()?), e));
        }
    }
    events.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
    });
    let ge = |at: &Option<Version>| {
        at.as_ref()
            .is_none_or(|at| v.partial_cmp(at).is_some_and(|o| o != Ordering::Less))
    };
    let mut affected = false;
    let mut from = String::new();
    for (at, e) in &events {
        if let Some(i) = &e.introduced {
            if ge(at) {
                affected = true;
                from = i.clone();
            }
        } else if e.fixed.is_some() {
            if ge(at) {
                affected = false;
            }
        } else if e.last_affected.is_some()
            && at
                .as_ref()
                .is_some_and(|at| v.partial_cmp(at) == Some(Ordering::Greater))
        {
            affected = false;
        }
    }
    if !affected {
        return None;
    }
    // The bound above `version`, for the words and the fix.
    let upper = events.iter().find_map(|(at, e)| {
        let above = at
            .as_ref()
            .is_some_and(|at| v.partial_cmp(at) != Some(Ordering::Greater));
        if !above {
            return None;
        }
        if let Some(f) = &e.fixed {
            (v.partial_cmp(at.as_ref()?) == Some(Ordering::Less))
                .then(|| (format!("< {f}"), Some(f.clone())))
        } else {
            e.last_affected.as_ref().map(|l| (format!("<= {l}"), None))
        }
    });
    let (bound, fixed) = upper.unwrap_or_else(|| ("no fix yet".into(), None));
    Some((format!(">= {from}, {bound}"), fixed))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::osv::parse_record;

    fn pkg(purl: &str) -> (Package, String) {
        let (p, v) = Package::from_purl(purl).unwrap();
        (p, v.unwrap())
    }

    fn hits(record: &str, purl: &str) -> Option<Hit> {
        let r = parse_record(record.as_bytes()).unwrap();
        let (p, v) = pkg(purl);
        affected_by(&r, &p, &v)
    }

    const FIXED: &str = r#"{"id":"A","modified":"x","affected":[{"package":{"ecosystem":"crates.io","name":"regex"},
        "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.5.5"}]}]}]}"#;
    const LAST: &str = r#"{"id":"B","modified":"x","affected":[{"package":{"ecosystem":"PyPI","name":"Pillow"},
        "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"8.0.0"},{"last_affected":"9.0.0"}]}]}]}"#;

    #[test]
    fn range_edges_follow_the_schema() {
        // fixed excludes, introduced "0" includes the first version.
        assert!(hits(FIXED, "pkg:cargo/regex@1.5.4").is_some());
        assert!(hits(FIXED, "pkg:cargo/regex@0.1.0").is_some());
        assert!(hits(FIXED, "pkg:cargo/regex@1.5.5").is_none());
        assert!(hits(FIXED, "pkg:cargo/regex@1.6.0").is_none());
        let h = hits(FIXED, "pkg:cargo/regex@1.5.4").unwrap();
        assert_eq!(
            (h.why.as_str(), h.fixed.as_deref()),
            (">= 0, < 1.5.5", Some("1.5.5"))
        );
        // last_affected includes its version; introduced is inclusive.
        assert!(hits(LAST, "pkg:pypi/pillow@9.0.0").is_some());
        assert!(hits(LAST, "pkg:pypi/pillow@8.0.0").is_some());
        assert!(hits(LAST, "pkg:pypi/pillow@9.0.0.post1").is_none());
        assert!(hits(LAST, "pkg:pypi/pillow@7.9").is_none());
        // Another package, another ecosystem.
        assert!(hits(FIXED, "pkg:cargo/regex-syntax@0.6.0").is_none());
        assert!(hits(FIXED, "pkg:npm/regex@1.0.0").is_none());
    }

    #[test]
    fn git_ranges_decide_only_the_commits_they_name() {
        let rec = r#"{"id":"G","modified":"x","affected":[{"package":{"ecosystem":"crates.io","name":"tool"},
          "ranges":[{"type":"GIT","repo":"https://example.invalid/tool","events":[
            {"introduced":"1111111111111111111111111111111111111111"},{"fixed":"2222222222222222222222222222222222222222"}]}]}]}"#;
        let r = parse_record(rec.as_bytes()).unwrap();
        let p = pkg("pkg:cargo/tool@0.1.0").0;
        let hit = affected_at_commit(&r, &p, "1111111111111111111111111111111111111111").unwrap();
        assert_eq!(
            hit.fixed.as_deref(),
            Some("2222222222222222222222222222222222222222")
        );
        assert!(hit.why.contains("introduced"));
        assert!(
            affected_at_commit(&r, &p, "1111111").is_some(),
            "an abbreviated id"
        );
        assert!(affected_at_commit(&r, &p, "2222222222222222222222222222222222222222").is_none());
        assert!(affected_at_commit(&r, &p, "3333333333333333333333333333333333333333").is_none());
        assert!(affected_at_commit(&r, &p, "not-hex").is_none());
        let other = pkg("pkg:cargo/other@0.1.0").0;
        assert!(
            affected_at_commit(&r, &other, "1111111111111111111111111111111111111111").is_none()
        );
    }

    #[test]
    fn alpine_components_match_by_release_and_apk_order() {
        let rec = r#"{"id":"ALPINE-CVE-2023-5678","modified":"x","affected":[{"package":{"ecosystem":"Alpine:v3.18","name":"openssl"},
          "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r1"}]}]}]}"#;
        let on = |v: &str, distro: &str| {
            hits(rec, &format!("pkg:apk/alpine/openssl@{v}?distro={distro}"))
        };
        assert!(on("3.1.4-r0", "alpine-3.18.4").is_some());
        assert!(on("3.1.3_p1-r5", "3.18").is_some());
        assert!(on("3.1.4-r1", "alpine-3.18.4").is_none());
        assert!(on("3.1.10-r0", "alpine-3.18.4").is_none());
        // Another Alpine release is another package set.
        assert!(on("3.1.4-r0", "alpine-3.19.0").is_none());
    }

    #[test]
    fn several_ranges_lists_git_and_withdrawn_records() {
        // Two affected spans in one range.
        let two = r#"{"id":"C","modified":"x","affected":[{"package":{"ecosystem":"npm","name":"lodash"},
          "ranges":[{"type":"SEMVER","events":[{"introduced":"1.0.0"},{"fixed":"1.2.0"},{"introduced":"2.0.0"},{"fixed":"2.1.0"}]}]}]}"#;
        assert!(hits(two, "pkg:npm/lodash@1.1.0").is_some());
        assert!(hits(two, "pkg:npm/lodash@1.5.0").is_none());
        assert!(hits(two, "pkg:npm/lodash@2.0.5").is_some());
        assert!(hits(two, "pkg:npm/lodash@2.1.0").is_none());
        // A GIT range from "0" with a versions list: only the listed
        // versions are affected.
        let git = r#"{"id":"D","modified":"x","affected":[{"package":{"ecosystem":"PyPI","name":"tool"},
          "ranges":[{"type":"GIT","repo":"https://example.invalid/tool","events":[{"introduced":"0"},{"fixed":"abc123"}]}],
          "versions":["1.0","1.1"]}]}"#;
        assert_eq!(hits(git, "pkg:pypi/tool@1.1").unwrap().why, "listed");
        assert!(
            hits(git, "pkg:pypi/tool@1.1.0").is_some(),
            "PEP 440: 1.1 == 1.1.0"
        );
        assert!(hits(git, "pkg:pypi/tool@2.0").is_none());
        let withdrawn = FIXED.replace(
            r#""modified":"x""#,
            r#""modified":"x","withdrawn":"2024-01-01T00:00:00Z""#,
        );
        assert!(hits(&withdrawn, "pkg:cargo/regex@1.5.4").is_none());
        // An unknown ecosystem's range is never guessed; its list is used.
        let maven = r#"{"id":"E","modified":"x","affected":[{"package":{"ecosystem":"Maven","name":"x"},
          "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}"#;
        let r = parse_record(maven.as_bytes()).unwrap();
        let p = Package {
            ecosystem: crate::package::Ecosystem::Other("Maven".into()),
            name: "x".into(),
        };
        assert!(affected_by(&r, &p, "1.0").is_none());
        // A version that does not parse in its ecosystem matches no range.
        assert!(hits(FIXED, "pkg:cargo/regex@not-a-version").is_none());
    }
}
