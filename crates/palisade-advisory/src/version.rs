//! Each ecosystem's own version order: SemVer 2.0 (crates.io, npm, Go and
//! OSV's `SEMVER` ranges; the `semver` crate), PEP 440 (PyPI; `pep440_rs`,
//! maintained by Astral for uv) and dpkg's order (Debian; written here: the
//! algorithm is dpkg's `verrevcmp`, a page long, and the Rust ports are
//! GPL-licensed or unmaintained; checked against `dpkg --compare-versions`).

use std::cmp::Ordering;

use crate::package::Ecosystem;

/// Longest version accepted.
pub const MAX_VERSION: usize = 256;

/// A version string that does not parse in its ecosystem.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{version:?} is not a {scheme} version: {reason}")]
pub struct VersionError {
    /// The version.
    pub version: String,
    /// Which scheme.
    pub scheme: &'static str,
    /// Why.
    pub reason: String,
}

/// How versions of a package compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// SemVer 2.0 (a leading `v` is ignored, as Go and npm write it).
    Semver,
    /// PEP 440.
    Pep440,
    /// dpkg.
    Debian,
    /// apk (Alpine).
    Alpine,
}

impl Scheme {
    /// The scheme of an ecosystem's `ECOSYSTEM` ranges, if we know it.
    pub fn of(e: &Ecosystem) -> Option<Scheme> {
        match e {
            Ecosystem::CratesIo | Ecosystem::Npm | Ecosystem::Go => Some(Scheme::Semver),
            Ecosystem::PyPi => Some(Scheme::Pep440),
            Ecosystem::Debian(_) => Some(Scheme::Debian),
            Ecosystem::Alpine(_) => Some(Scheme::Alpine),
            Ecosystem::Other(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Semver => "SemVer",
            Scheme::Pep440 => "PEP 440",
            Scheme::Debian => "Debian",
            Scheme::Alpine => "Alpine",
        }
    }

    /// Parses `v` in this scheme.
    pub fn parse(self, v: &str) -> Result<Version, VersionError> {
        let err = |reason: String| VersionError {
            version: v.chars().take(MAX_VERSION).collect(),
            scheme: self.name(),
            reason,
        };
        if v.len() > MAX_VERSION {
            return Err(err(format!("longer than {MAX_VERSION} bytes")));
        }
        match self {
            Scheme::Semver => {
                let t = v.trim();
                let t = t.strip_prefix('v').unwrap_or(t);
                semver::Version::parse(t)
                    .map(Version::Semver)
                    .map_err(|e| err(e.to_string()))
            }
            Scheme::Pep440 => v
                .trim()
                .parse::<pep440_rs::Version>()
                .map(Version::Pep440)
                .map_err(|e| err(e.to_string())),
            Scheme::Debian => DebVersion::parse(v).map(Version::Debian).map_err(err),
            Scheme::Alpine => {
                let t = v.trim();
                if crate::alpine::valid(t) {
                    Ok(Version::Alpine(t.to_owned()))
                } else {
                    Err(err("not an apk version (1.2.3[a][_suffixN]...[-rN])".into()))
                }
            }
        }
    }

    /// Compares two versions in this scheme.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        let (a, b) = (self.parse(a)?, self.parse(b)?);
        a.partial_cmp(&b).ok_or_else(|| VersionError {
            version: String::new(),
            scheme: self.name(),
            reason: "versions of different schemes".into(),
        })
    }
}

/// A parsed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// SemVer.
    Semver(semver::Version),
    /// PEP 440.
    Pep440(pep440_rs::Version),
    /// dpkg.
    Debian(DebVersion),
    /// apk, checked by [`crate::alpine::valid`].
    Alpine(String),
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            // SemVer 2.0 precedence ignores build metadata.
            (Version::Semver(a), Version::Semver(b)) => Some(
                (a.major, a.minor, a.patch)
                    .cmp(&(b.major, b.minor, b.patch))
                    .then_with(|| match (a.pre.is_empty(), b.pre.is_empty()) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        (false, false) => a.pre.cmp(&b.pre),
                    }),
            ),
            (Version::Pep440(a), Version::Pep440(b)) => Some(a.cmp(b)),
            (Version::Debian(a), Version::Debian(b)) => Some(a.cmp(b)),
            (Version::Alpine(a), Version::Alpine(b)) => Some(crate::alpine::compare(a, b)),
            _ => None,
        }
    }
}

/// A Debian version: `[epoch:]upstream[-revision]` (deb-version(7)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebVersion {
    epoch: u64,
    upstream: String,
    revision: String,
}

impl DebVersion {
    /// Parses a Debian version as dpkg does (refusing what dpkg refuses:
    /// an empty version, a bad epoch, characters outside the allowed set).
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if v.is_empty() {
            return Err("empty".into());
        }
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("the epoch is not a number".into());
                }
                (
                    e.parse::<u64>().map_err(|_| "the epoch is too large")?,
                    rest,
                )
            }
            None => (0, v),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err("empty upstream version".into());
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err("the upstream version must start with a digit".into());
        }
        let ok = |s: &str, extra: &[u8]| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"~+.".contains(&b) || extra.contains(&b))
        };
        if !ok(upstream, b"-:") || !ok(revision, b"") {
            return Err("a character outside [A-Za-z0-9.+~-:]".into());
        }
        Ok(Self {
            epoch,
            upstream: upstream.into(),
            revision: revision.into(),
        })
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// dpkg's weight of a non-digit character: `~` sorts before everything, even
/// the end of the string; letters before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and digit runs.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_orders_its_own_way() {
        let lt = |s: Scheme, a: &str, b: &str| {
            assert_eq!(s.compare(a, b).unwrap(), Ordering::Less, "{a} < {b}");
            assert_eq!(s.compare(b, a).unwrap(), Ordering::Greater, "{b} > {a}");
        };
        lt(Scheme::Semver, "1.5.4", "1.5.5");
        lt(Scheme::Semver, "1.0.0-rc.1", "1.0.0");
        lt(Scheme::Semver, "v0.9.0", "v0.10.0");
        assert_eq!(
            Scheme::Semver.compare("1.0.0+a", "1.0.0+b").unwrap(),
            Ordering::Equal
        );
        lt(Scheme::Pep440, "1.0rc1", "1.0");
        lt(Scheme::Pep440, "1.0", "1.0.post1");
        lt(Scheme::Pep440, "1.0.dev1", "1.0a1");
        assert_eq!(
            Scheme::Pep440.compare("1.0", "1.0.0").unwrap(),
            Ordering::Equal
        );
        lt(Scheme::Debian, "1.0~rc1", "1.0");
        lt(Scheme::Debian, "1.0", "1.0+b1");
        lt(Scheme::Debian, "9.9", "1:0.1");
        lt(Scheme::Debian, "2.7.4-1", "2.7.4-1+deb12u1");
        assert_eq!(
            Scheme::Debian.compare("1.0-0", "1.0").unwrap(),
            Ordering::Equal
        );
        for bad in ["", "a1", "1:", "x:1", "1.0 beta"] {
            assert!(Scheme::Debian.parse(bad).is_err(), "{bad}");
        }
        assert!(Scheme::Semver.parse("1.0").is_err());
        assert!(Scheme::Pep440.parse(&"1".repeat(MAX_VERSION + 1)).is_err());
    }
}
