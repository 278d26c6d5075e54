//! The atomic checks: each judges one property of one device from its
//! evidence, returning pass, fail or unknown with a reason and the facts it
//! used. The frameworks' controls are made of these.

use palisade_core::{DeviceState, KeyProtection, UpdateState};
use serde::{Deserialize, Serialize};

use crate::evidence::DeviceEvidence;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// The thresholds the checks use. The defaults suit a fleet that reports
/// telemetry every few minutes and attests daily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// A device silent for longer is not being monitored (ms). Default 1 h.
    pub telemetry_fresh_ms: i64,
    /// An attestation older than this no longer vouches for the device (ms).
    /// Default 7 days.
    pub attestation_max_age_ms: i64,
    /// A certificate with less than this share of its lifetime left should
    /// have been renewed (the agent renews at 2/3). Default 1/6, in permille.
    pub renewal_overdue_permille: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            telemetry_fresh_ms: HOUR_MS,
            attestation_max_age_ms: 7 * DAY_MS,
            renewal_overdue_permille: 167,
        }
    }
}

/// The result of a check or a control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The evidence shows it holds.
    Pass,
    /// The evidence shows it does not.
    Fail,
    /// The evidence that would decide it is missing (counts against the score:
    /// what cannot be shown is not claimed).
    Unknown,
    /// Fleet evidence cannot judge it at all (excluded from the score).
    NotAssessable,
}

impl Outcome {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
            Outcome::NotAssessable => "not-assessable",
        }
    }
}

/// A piece of evidence a result rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: String,
    /// When it was observed or recorded, Unix ms.
    pub at_ms: Option<i64>,
    /// The audit entry that records it.
    pub audit_index: Option<u64>,
}

fn fact(name: &str, value: impl Into<String>) -> Fact {
    Fact {
        name: name.into(),
        value: value.into(),
        at_ms: None,
        audit_index: None,
    }
}

fn fact_at(name: &str, value: impl Into<String>, at_ms: i64) -> Fact {
    Fact {
        at_ms: Some(at_ms),
        ..fact(name, value)
    }
}

/// A check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Pass, fail, unknown.
    pub outcome: Outcome,
    /// Why, in one sentence.
    pub reason: String,
    /// The evidence used.
    pub facts: Vec<Fact>,
}

fn finding(outcome: Outcome, reason: impl Into<String>, facts: Vec<Fact>) -> Finding {
    Finding {
        outcome,
        reason: reason.into(),
        facts,
    }
}

fn days(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    let d = now_ms - at_ms;
    if d < 2 * HOUR_MS {
        format!("{} min ago", d.max(0) / 60_000)
    } else if d < 2 * DAY_MS {
        format!("{} h ago", d / HOUR_MS)
    } else {
        format!("{} days ago", days(d))
    }
}

/// The atomic checks, by name (the names appear in results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// A unique per-device credential (a certificate), no shared secret.
    UniqueCredentials,
    /// The identity key is in a TPM or secure element.
    HardwareIdentity,
    /// A valid operational certificate, renewed in time.
    CertificateAuth,
    /// Enrolled with no human step (birth identity or one-time token).
    ZeroTouchEnrolment,
    /// Runs firmware shown to be genuine (attested, or an accepted release).
    SoftwareIntegrity,
    /// Runs the model's newest security version, or is within its update window.
    UpdateCurrent,
    /// Its model is within its declared support period.
    Supported,
    /// Placed in a segment whose edge enforces its least-privilege policy.
    Segmented,
    /// Talks to the control plane only over mutually authenticated TLS.
    EncryptedTransport,
    /// Telemetry is fresh: the fleet can see it.
    Monitored,
    /// No unresolved critical or high alert.
    NoSeriousAlerts,
    /// Its firmware comes from a registered supplier through the supply-chain gate.
    SupplierGoverned,
    /// Its supplier has a vulnerability disclosure contact on record.
    DisclosureContact,
    /// Updates install atomically with fallback (shown by an update outcome).
    ResilientUpdates,
    /// Its security-relevant events are in the signed audit log.
    Logged,
    /// Its key and signature algorithms are current best practice.
    StrongCryptography,
}

impl Check {
    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::UniqueCredentials => "unique-credentials",
            Check::HardwareIdentity => "hardware-identity",
            Check::CertificateAuth => "certificate-auth",
            Check::ZeroTouchEnrolment => "zero-touch-enrolment",
            Check::SoftwareIntegrity => "software-integrity",
            Check::UpdateCurrent => "update-current",
            Check::Supported => "supported",
            Check::Segmented => "segmented",
            Check::EncryptedTransport => "encrypted-transport",
            Check::Monitored => "monitored",
            Check::NoSeriousAlerts => "no-serious-alerts",
            Check::SupplierGoverned => "supplier-governed",
            Check::DisclosureContact => "disclosure-contact",
            Check::ResilientUpdates => "resilient-updates",
            Check::Logged => "logged",
            Check::StrongCryptography => "strong-cryptography",
        }
    }

    /// Judges this check for `e` at `now_ms`.
    pub fn judge(self, e: &DeviceEvidence, now_ms: i64, t: &Thresholds) -> Finding {
        match self {
            Check::UniqueCredentials => unique_credentials(e),
            Check::HardwareIdentity => hardware_identity(e),
            Check::CertificateAuth => certificate_auth(e, now_ms, t),
            Check::ZeroTouchEnrolment => zero_touch(e),
            Check::SoftwareIntegrity => software_integrity(e, now_ms, t),
            Check::UpdateCurrent => update_current(e, now_ms),
            Check::Supported => supported(e, now_ms),
            Check::Segmented => segmented(e),
            Check::EncryptedTransport => encrypted_transport(e, now_ms),
            Check::Monitored => monitored(e, now_ms, t),
            Check::NoSeriousAlerts => no_serious_alerts(e),
            Check::SupplierGoverned => supplier_governed(e),
            Check::DisclosureContact => disclosure_contact(e),
            Check::ResilientUpdates => resilient_updates(e),
            Check::Logged => logged(e),
            Check::StrongCryptography => strong_cryptography(e),
        }
    }
}

fn not_enrolled(e: &DeviceEvidence) -> bool {
    !e.enrolment.enrolled && e.certificate.is_none()
}

fn unique_credentials(e: &DeviceEvidence) -> Finding {
    match &e.certificate {
        Some(c) => finding(
            Outcome::Pass,
            "authenticates with its own X.509 certificate; Palisade has no device passwords",
            vec![fact("certificate", &c.serial)],
        ),
        None if not_enrolled(e) => finding(
            Outcome::Unknown,
            "not enrolled yet: it holds no credential",
            vec![],
        ),
        None => finding(
            Outcome::Fail,
            "enrolled, but holds no valid certificate",
            vec![],
        ),
    }
}

fn hardware_identity(e: &DeviceEvidence) -> Finding {
    let mut facts = vec![];
    if let Some(a) = &e.attestation {
        facts.push(fact_at(
            "attestation",
            if a.ok { "verified" } else { "failed" },
            a.at_ms,
        ));
    }
    match e.key_protection {
        Some(KeyProtection::Tpm) => {
            facts.push(fact(
                "key protection",
                "tpm (proven at enrolment by TPM attestation)",
            ));
            match &e.attestation {
                Some(a) if !a.ok => finding(
                    Outcome::Fail,
                    format!("the TPM's latest attestation failed: {}", a.detail),
                    facts,
                ),
                _ => finding(
                    Outcome::Pass,
                    "its identity key was generated in a TPM and proven so by attestation",
                    facts,
                ),
            }
        }
        Some(KeyProtection::SecureElement) => {
            facts.push(fact(
                "key protection",
                "secure-element (as reported by the agent)",
            ));
            finding(
                Outcome::Pass,
                "its identity key is kept in a secure element (PKCS#11), as reported at enrolment",
                facts,
            )
        }
        Some(KeyProtection::Software) => {
            facts.push(fact("key protection", "software"));
            finding(
                Outcome::Fail,
                "its identity key is a file on the device (software keystore, for development only)",
                facts,
            )
        }
        None if not_enrolled(e) => finding(Outcome::Unknown, "not enrolled yet", facts),
        None => finding(
            Outcome::Unknown,
            "no key protection was recorded at enrolment",
            facts,
        ),
    }
}

fn certificate_auth(e: &DeviceEvidence, now_ms: i64, t: &Thresholds) -> Finding {
    let Some(c) = &e.certificate else {
        return if not_enrolled(e) {
            finding(Outcome::Unknown, "not enrolled yet", vec![])
        } else {
            finding(
                Outcome::Fail,
                "no valid operational certificate: it cannot authenticate",
                vec![],
            )
        };
    };
    let facts = vec![
        fact("certificate", &c.serial),
        fact_at("valid from", "", c.not_before_ms),
        fact_at("valid until", "", c.not_after_ms),
    ];
    if now_ms >= c.not_after_ms {
        return finding(Outcome::Fail, "its newest certificate has expired", facts);
    }
    if now_ms < c.not_before_ms {
        return finding(
            Outcome::Fail,
            "its newest certificate is not valid yet",
            facts,
        );
    }
    let life = (c.not_after_ms - c.not_before_ms).max(1);
    let left = c.not_after_ms - now_ms;
    if left * 1000 < life * t.renewal_overdue_permille {
        return finding(
            Outcome::Fail,
            format!(
                "renewal is overdue: {} days of its certificate's {} left",
                days(left),
                days(life)
            ),
            facts,
        );
    }
    finding(
        Outcome::Pass,
        format!(
            "authenticates with a valid certificate ({} days left, renewed in time)",
            days(left)
        ),
        facts,
    )
}

fn zero_touch(e: &DeviceEvidence) -> Finding {
    let audit: Vec<Fact> = e
        .audit
        .iter()
        .filter(|a| a.action.starts_with("est.") || a.action == "cert.issue")
        .map(|a| Fact {
            name: "enrolment".into(),
            value: a.action.clone(),
            at_ms: Some(a.at_ms),
            audit_index: Some(a.index),
        })
        .collect();
    let en = &e.enrolment;
    if en.birth_identity {
        finding(
            Outcome::Pass,
            "enrolled itself zero-touch with its birth identity (IDevID) from an imported batch",
            audit,
        )
    } else if en.token {
        finding(
            Outcome::Pass,
            "enrolled itself with a one-time enrolment token",
            audit,
        )
    } else if en.enrolled || e.certificate.is_some() {
        finding(
            Outcome::Fail,
            "its certificate was issued by hand by an operator",
            audit,
        )
    } else {
        finding(Outcome::Unknown, "not enrolled yet", audit)
    }
}

fn software_integrity(e: &DeviceEvidence, now_ms: i64, t: &Thresholds) -> Finding {
    let mut facts = vec![];
    if let Some(v) = &e.firmware.reported_version {
        facts.push(fact("reported firmware", v));
    }
    if let Some(a) = &e.attestation {
        facts.push(fact_at("measured boot", &a.detail, a.at_ms));
        if !a.ok {
            return finding(
                Outcome::Fail,
                format!("measured boot did not verify: {}", a.detail),
                facts,
            );
        }
        if now_ms - a.at_ms <= t.attestation_max_age_ms {
            return finding(
                Outcome::Pass,
                format!(
                    "measured boot verified {} against an approved image",
                    ago(now_ms, a.at_ms)
                ),
                facts,
            );
        }
    }
    match (&e.firmware.running, &e.firmware.reported_version) {
        (Some(r), _) if r.gated => finding(
            Outcome::Pass,
            format!(
                "runs release {}, accepted through the supply-chain gate (signed, SBOM, provenance)",
                r.version
            ),
            facts,
        ),
        (Some(r), _) => finding(
            Outcome::Fail,
            format!(
                "runs release {}, which lacks signed provenance or an SBOM",
                r.version
            ),
            facts,
        ),
        (None, Some(v)) => finding(
            Outcome::Fail,
            format!("reports firmware {v}, which is no accepted release of its model"),
            facts,
        ),
        (None, None) if e.attestation.is_some() => finding(
            Outcome::Unknown,
            "its last attestation is too old to vouch for what it runs now",
            facts,
        ),
        (None, None) => finding(
            Outcome::Unknown,
            "no attestation and no reported firmware version",
            facts,
        ),
    }
}

fn update_current(e: &DeviceEvidence, now_ms: i64) -> Finding {
    let f = &e.firmware;
    let mut facts = vec![];
    if let Some((state, at)) = f.last_update {
        facts.push(fact_at("last update report", state.as_str(), at));
    }
    let Some(newest) = &f.newest else {
        return finding(
            Outcome::Unknown,
            "no release of its model has been published",
            facts,
        );
    };
    facts.push(fact_at(
        "newest release",
        format!(
            "{} (security version {})",
            newest.version, newest.security_version
        ),
        newest.created_ms,
    ));
    let Some(running) = &f.running else {
        return finding(
            Outcome::Unknown,
            "what it runs is not a known release, so how far behind it is cannot be told",
            facts,
        );
    };
    facts.push(fact(
        "running",
        format!(
            "{} (security version {})",
            running.version, running.security_version
        ),
    ));
    if running.security_version >= newest.security_version {
        return finding(
            Outcome::Pass,
            "runs the newest security version of its model",
            facts,
        );
    }
    match e.support.security_update_days {
        Some(d) => {
            let due = newest.created_ms + i64::from(d) * DAY_MS;
            if now_ms > due {
                finding(
                    Outcome::Fail,
                    format!(
                        "{} days behind its update target ({d} days after release {})",
                        days(now_ms - due).max(1),
                        newest.version
                    ),
                    facts,
                )
            } else {
                finding(
                    Outcome::Pass,
                    format!(
                        "behind release {}, but within its {d}-day update window",
                        newest.version
                    ),
                    facts,
                )
            }
        }
        None => finding(
            Outcome::Fail,
            format!(
                "runs security version {} while {} is released, and its model sets no update window",
                running.security_version, newest.security_version
            ),
            facts,
        ),
    }
}

fn supported(e: &DeviceEvidence, now_ms: i64) -> Finding {
    match e.support.until_ms {
        None => finding(
            Outcome::Fail,
            "its model declares no end of support",
            vec![],
        ),
        Some(until) if until <= now_ms => finding(
            Outcome::Fail,
            format!("its model's support ended {}", ago(now_ms, until)),
            vec![fact_at("support until", "", until)],
        ),
        Some(until) => finding(
            Outcome::Pass,
            format!("supported for {} more days", days(until - now_ms)),
            vec![fact_at("support until", "", until)],
        ),
    }
}

fn segmented(e: &DeviceEvidence) -> Finding {
    let n = &e.network;
    let mut facts = vec![];
    if let Some(site) = &e.site {
        facts.push(fact("site", site));
    }
    if let Some((v, at)) = n.edge_applied {
        facts.push(fact_at("edge applied bundle", v.to_string(), at));
    }
    if let Some(d) = n.denied_packets {
        facts.push(fact("packets denied by the edge", d.to_string()));
    }
    if !n.placed {
        return finding(
            Outcome::Fail,
            "not placed at any site: no edge enforces a policy for it",
            facts,
        );
    }
    if !n.model_policy {
        return finding(
            Outcome::Fail,
            "its model has no network policy (no MUD file): nothing limits what it may reach",
            facts,
        );
    }
    if n.open_override {
        return finding(
            Outcome::Fail,
            "its model's policy allows any address on any port (an audited override)",
            facts,
        );
    }
    match (n.edge_applied, n.placed_ms) {
        (Some((applied, _)), Some(placed)) if applied >= u64::try_from(placed).unwrap_or(0) => {
            finding(
                Outcome::Pass,
                "its segment's edge applied a least-privilege policy that includes it",
                facts,
            )
        }
        (Some(_), _) => finding(
            Outcome::Unknown,
            "its site's edge has not yet applied a bundle that includes its placement",
            facts,
        ),
        (None, _) => finding(
            Outcome::Unknown,
            "no edge of its site has reported applying a policy",
            facts,
        ),
    }
}

fn encrypted_transport(e: &DeviceEvidence, now_ms: i64) -> Finding {
    if e.network.legacy_bridge {
        return finding(
            Outcome::Fail,
            "speaks plaintext MQTT on its segment through the edge's legacy bridge",
            vec![],
        );
    }
    // Every protocol the control plane accepts is encrypted and mutually
    // authenticated; the live session names which one.
    let over = e.activity.transport.map_or_else(
        || {
            "reaches the control plane only over mutually authenticated, encrypted protocols"
                .to_owned()
        },
        |t| format!("reaches the control plane over {}", t.describe()),
    );
    let mut facts: Vec<Fact> = e
        .activity
        .transport
        .map(|t| fact("protocol", t.as_str()))
        .into_iter()
        .collect();
    match e.activity.last_seen_ms {
        Some(at) => {
            facts.push(fact_at("last message", ago(now_ms, at), at));
            finding(Outcome::Pass, over, facts)
        }
        None if e.activity.connected => finding(Outcome::Pass, over, facts),
        None => finding(
            Outcome::Unknown,
            "has never connected, so its protocols are not yet seen",
            vec![],
        ),
    }
}

fn monitored(e: &DeviceEvidence, now_ms: i64, t: &Thresholds) -> Finding {
    match e.activity.last_seen_ms {
        Some(at) if now_ms - at <= t.telemetry_fresh_ms => finding(
            Outcome::Pass,
            format!("its telemetry is fresh (last message {})", ago(now_ms, at)),
            vec![fact_at("last message", "", at)],
        ),
        Some(at) => finding(
            Outcome::Fail,
            format!("silent since {}", ago(now_ms, at)),
            vec![fact_at("last message", "", at)],
        ),
        None if e.state == Some(DeviceState::Registered) => {
            finding(Outcome::Unknown, "not enrolled yet", vec![])
        }
        None => finding(Outcome::Fail, "enrolled, but never heard from", vec![]),
    }
}

fn no_serious_alerts(e: &DeviceEvidence) -> Finding {
    let a = e.open_alerts;
    let facts = vec![fact(
        "open alerts",
        format!(
            "{} critical, {} high, {} medium, {} low",
            a.critical, a.high, a.medium, a.low
        ),
    )];
    if a.critical > 0 {
        finding(
            Outcome::Fail,
            format!("{} unresolved critical alert(s)", a.critical),
            facts,
        )
    } else if a.high > 0 {
        finding(
            Outcome::Fail,
            format!("{} unresolved high alert(s)", a.high),
            facts,
        )
    } else {
        finding(Outcome::Pass, "no unresolved critical or high alert", facts)
    }
}

fn supplier_governed(e: &DeviceEvidence) -> Finding {
    let Some(s) = &e.supplier else {
        return finding(
            Outcome::Fail,
            "its model names no registered supplier",
            vec![],
        );
    };
    let mut facts = vec![fact("supplier", &s.name)];
    facts.push(fact("release-signing keys", s.signing_keys.to_string()));
    if s.signing_keys == 0 {
        return finding(
            Outcome::Fail,
            format!("supplier {} has no release-signing key registered", s.name),
            facts,
        );
    }
    match &e.firmware.newest {
        Some(r) if r.gated => finding(
            Outcome::Pass,
            format!(
                "supplier {} delivers signed releases with SBOM and provenance",
                s.name
            ),
            facts,
        ),
        Some(r) => finding(
            Outcome::Fail,
            format!("release {} lacks signed provenance or an SBOM", r.version),
            facts,
        ),
        None => finding(
            Outcome::Unknown,
            format!("supplier {} has published no release yet", s.name),
            facts,
        ),
    }
}

fn disclosure_contact(e: &DeviceEvidence) -> Finding {
    match &e.supplier {
        Some(s) => match &s.disclosure_contact {
            Some(c) => finding(
                Outcome::Pass,
                format!("supplier {} takes vulnerability reports at {c}", s.name),
                vec![fact("disclosure contact", c)],
            ),
            None => finding(
                Outcome::Fail,
                format!(
                    "no vulnerability disclosure contact is on record for supplier {} (palisade supplier contact)",
                    s.name
                ),
                vec![],
            ),
        },
        None => finding(
            Outcome::Fail,
            "its model names no registered supplier to take vulnerability reports",
            vec![],
        ),
    }
}

fn resilient_updates(e: &DeviceEvidence) -> Finding {
    match e.firmware.last_update {
        Some((s @ (UpdateState::Committed | UpdateState::RolledBack), at)) => finding(
            Outcome::Pass,
            format!(
                "updates install into the inactive slot with trial boot and fallback (last: {s})"
            ),
            vec![fact_at("last update report", s.as_str(), at)],
        ),
        Some((s, at)) => finding(
            Outcome::Unknown,
            format!("its last update ended {s}; no completed A/B install is on record"),
            vec![fact_at("last update report", s.as_str(), at)],
        ),
        None => finding(
            Outcome::Unknown,
            "it has not installed an update through Palisade yet",
            vec![],
        ),
    }
}

fn logged(e: &DeviceEvidence) -> Finding {
    if e.audit.is_empty() {
        return finding(Outcome::Unknown, "no audit entry is about it yet", vec![]);
    }
    let facts = e
        .audit
        .iter()
        .rev()
        .take(5)
        .map(|a| Fact {
            name: "audit entry".into(),
            value: a.action.clone(),
            at_ms: Some(a.at_ms),
            audit_index: Some(a.index),
        })
        .collect();
    finding(
        Outcome::Pass,
        format!(
            "{} security-relevant events about it are in the signed audit log",
            e.audit.len()
        ),
        facts,
    )
}

fn strong_cryptography(e: &DeviceEvidence) -> Finding {
    let Some(c) = &e.certificate else {
        return finding(Outcome::Unknown, "no certificate to judge", vec![]);
    };
    match c.key_type.as_deref() {
        Some(k @ ("ecdsa-p256" | "ecdsa-p384" | "ed25519" | "rsa-3072" | "rsa-4096")) => finding(
            Outcome::Pass,
            format!("its key is {k}, with TLS 1.3 or 1.2 AEAD suites only"),
            vec![fact("key type", k)],
        ),
        Some(k @ "rsa-2048") => finding(
            Outcome::Pass,
            "RSA-2048 is acceptable until 2030 (NIST SP 800-131A)",
            vec![fact("key type", k)],
        ),
        Some(k) => finding(
            Outcome::Fail,
            format!("key type {k} is not a current best practice"),
            vec![fact("key type", k)],
        ),
        None => finding(Outcome::Unknown, "its key type is not recorded", vec![]),
    }
}
