//! Packages as the two sides name them: an SBOM by package URL
//! (`pkg:cargo/regex@1.5.4`, read with the `purl` crate that `cyclonedx-bom`
//! already brings), an OSV record by ecosystem and name. Both are brought to
//! one [`Package`]: the ecosystem and the name as that ecosystem compares
//! names (PyPI's normalised form, npm's `@scope/name`, Go's module path,
//! Debian's source package).

use std::str::FromStr;

use crate::osv::PackageRef;

/// An ecosystem that OSV names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    /// Rust crates.
    CratesIo,
    /// npm.
    Npm,
    /// Go modules.
    Go,
    /// Python packages.
    PyPi,
    /// Debian, with its release number if named (`Debian:12`).
    Debian(Option<String>),
    /// Alpine, with its release if named (`Alpine:v3.18`).
    Alpine(Option<String>),
    /// Any other, by its OSV name (versions are then matched only by the
    /// record's `versions` list, never by ranges).
    Other(String),
}

impl Ecosystem {
    /// The ecosystem of an OSV `ecosystem` string.
    pub fn from_osv(s: &str) -> Self {
        let (base, release) = match s.split_once(':') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        match base {
            "crates.io" => Ecosystem::CratesIo,
            "npm" => Ecosystem::Npm,
            "Go" => Ecosystem::Go,
            "PyPI" => Ecosystem::PyPi,
            "Debian" => Ecosystem::Debian(release.map(str::to_owned)),
            "Alpine" => Ecosystem::Alpine(release.map(alpine_release)),
            _ => Ecosystem::Other(s.to_owned()),
        }
    }

    /// Whether a record's ecosystem covers a component's: the same, and for
    /// Debian the same release when both name one.
    pub fn covers(&self, component: &Ecosystem) -> bool {
        match (self, component) {
            (Ecosystem::Debian(r), Ecosystem::Debian(c))
            | (Ecosystem::Alpine(r), Ecosystem::Alpine(c)) => match (r, c) {
                (Some(r), Some(c)) => r == c,
                _ => true,
            },
            (a, b) => a == b,
        }
    }
}

/// A package: its ecosystem and its name as the ecosystem compares names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Package {
    /// The ecosystem.
    pub ecosystem: Ecosystem,
    /// The normalised name.
    pub name: String,
}

/// Debian releases by code name, as SBOM tools write `distro=`.
/// An Alpine release as OSV names it (`v3.18`), from `v3.18`, `3.18` or `3.18.4`.
fn alpine_release(r: &str) -> String {
    let r = r.trim_start_matches('v');
    let mut parts = r.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("v{a}.{b}"),
        _ => format!("v{r}"),
    }
}

const DEBIAN_RELEASES: &[(&str, &str)] = &[
    ("buster", "10"),
    ("bullseye", "11"),
    ("bookworm", "12"),
    ("trixie", "13"),
    ("forky", "14"),
];

fn normalise(e: &Ecosystem, name: &str) -> String {
    match e {
        // PEP 503: lower case, runs of `-`, `_`, `.` are one `-`.
        Ecosystem::PyPi => {
            let mut out = String::with_capacity(name.len());
            let mut sep = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    sep = true;
                } else {
                    if sep && !out.is_empty() {
                        out.push('-');
                    }
                    sep = false;
                    out.extend(c.to_lowercase());
                }
            }
            out
        }
        Ecosystem::CratesIo | Ecosystem::Npm | Ecosystem::Debian(_) | Ecosystem::Alpine(_) => {
            name.to_lowercase()
        }
        Ecosystem::Go | Ecosystem::Other(_) => name.to_owned(),
    }
}

impl Package {
    /// The package an OSV entry names.
    pub fn from_osv(p: &PackageRef) -> Self {
        let ecosystem = Ecosystem::from_osv(&p.ecosystem);
        let name = normalise(&ecosystem, &p.name);
        Self { ecosystem, name }
    }

    /// The package (and version, if given) of a package URL; `None` for a
    /// type no OSV ecosystem matches, or a URL that does not parse.
    pub fn from_purl(purl: &str) -> Option<(Self, Option<String>)> {
        if purl.len() > 2048 {
            return None;
        }
        let p = purl::GenericPurl::<String>::from_str(purl).ok()?;
        let ns = p.namespace();
        let (ecosystem, name) = match p.package_type().to_ascii_lowercase().as_str() {
            "cargo" => (Ecosystem::CratesIo, p.name().to_owned()),
            "npm" => (
                Ecosystem::Npm,
                match ns {
                    Some(scope) => format!("{scope}/{}", p.name()),
                    None => p.name().to_owned(),
                },
            ),
            "golang" => (
                Ecosystem::Go,
                match ns {
                    Some(path) => format!("{path}/{}", p.name()),
                    None => p.name().to_owned(),
                },
            ),
            "pypi" => (Ecosystem::PyPi, p.name().to_owned()),
            "deb" if ns.is_none_or(|n| n.eq_ignore_ascii_case("debian")) => {
                let release = p.qualifiers().get("distro").map(|d| {
                    let d = d.trim_start_matches("debian-");
                    DEBIAN_RELEASES
                        .iter()
                        .find(|(code, _)| *code == d)
                        .map_or(d, |(_, n)| n)
                        .split('.')
                        .next()
                        .unwrap_or(d)
                        .to_owned()
                });
                // OSV's Debian records name source packages; SBOM tools
                // give the source as `upstream=` when it differs.
                let name = p
                    .qualifiers()
                    .get("upstream")
                    .map(|u| u.split(['@', ' ']).next().unwrap_or(u).to_owned())
                    .unwrap_or_else(|| p.name().to_owned());
                (Ecosystem::Debian(release), name)
            }
            "apk" if ns.is_none_or(|n| n.eq_ignore_ascii_case("alpine")) => {
                // `distro=alpine-3.18.4` or `3.18.4`: OSV names `v3.18`.
                let release = p
                    .qualifiers()
                    .get("distro")
                    .map(|d| alpine_release(d.trim_start_matches("alpine-")));
                (Ecosystem::Alpine(release), p.name().to_owned())
            }
            _ => return None,
        };
        let name = normalise(&ecosystem, &name);
        Some((Self { ecosystem, name }, p.version().map(str::to_owned)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn package_urls_and_osv_names_meet() {
        let (p, v) = Package::from_purl("pkg:pypi/Django_REST.framework@3.14.0").unwrap();
        assert_eq!(p.name, "django-rest-framework");
        assert_eq!(v.as_deref(), Some("3.14.0"));
        assert_eq!(
            p,
            Package::from_osv(&PackageRef {
                ecosystem: "PyPI".into(),
                name: "django-rest.Framework".into(),
                purl: None
            })
        );
        let (p, _) = Package::from_purl("pkg:npm/%40angular/core@12.3.1").unwrap();
        assert_eq!(
            (p.ecosystem, p.name.as_str()),
            (Ecosystem::Npm, "@angular/core")
        );
        let (p, _) = Package::from_purl("pkg:golang/golang.org/x/net@v0.7.0").unwrap();
        assert_eq!(p.name, "golang.org/x/net");
        let (p, v) = Package::from_purl(
            "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12&upstream=openssl",
        )
        .unwrap();
        assert_eq!(p.ecosystem, Ecosystem::Debian(Some("12".into())));
        assert_eq!(
            (p.name.as_str(), v.as_deref()),
            ("openssl", Some("3.0.11-1~deb12u2"))
        );
        assert!(Ecosystem::from_osv("Debian:12").covers(&p.ecosystem));
        assert!(!Ecosystem::from_osv("Debian:11").covers(&p.ecosystem));
        assert!(Package::from_purl("pkg:maven/org.apache/log4j@2.0").is_none());
        assert!(Package::from_purl("not a purl").is_none());
    }
}
