//! What the fleet knows about one device, gathered by the control plane from
//! its inventory, certificates, attestation, releases, update reports, network
//! placement, edges, sessions, alerts and suppliers. The posture engine judges
//! only this: nothing here is fetched, and every time is passed in.

use palisade_core::{DeviceState, KeyProtection, UpdateState};
use serde::{Deserialize, Serialize};

/// Everything the engine may use about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvidence {
    /// The device.
    pub device: String,
    /// Its model.
    pub model: String,
    /// Its site, if placed.
    pub site: Option<String>,
    /// Lifecycle state.
    pub state: Option<DeviceState>,
    /// Where its identity key is kept, as recorded at enrolment.
    pub key_protection: Option<KeyProtection>,
    /// The newest attestation result, if it was ever attested.
    pub attestation: Option<Attested>,
    /// Whether its model requires TPM attestation.
    pub attestation_required: bool,
    /// How it enrolled.
    pub enrolment: Enrolment,
    /// Its newest valid operational certificate, if any.
    pub certificate: Option<Certificate>,
    /// What it runs and how its updates go.
    pub firmware: Firmware,
    /// Its model's support period and update cadence.
    pub support: Support,
    /// Its network placement and the policy in force for it.
    pub network: Network,
    /// Its sessions and telemetry.
    pub activity: Activity,
    /// Unresolved alerts about it, by severity.
    pub open_alerts: AlertCounts,
    /// Its model's supplier and what the operator requires of them.
    pub supplier: Option<Supplier>,
    /// Audit entries (indices) that evidence its enrolment and lifecycle, newest last.
    pub audit: Vec<AuditRef>,
}

/// An attestation result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    /// Whether the quote (or the enrolment proof) verified.
    pub ok: bool,
    /// What was checked or why it failed.
    pub detail: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// How a device came by its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// It has been issued an operational certificate at all.
    pub enrolled: bool,
    /// Zero-touch with a birth identity (IDevID) from an imported batch.
    pub birth_identity: bool,
    /// With a one-time enrolment token.
    pub token: bool,
    /// Approved by an operator, Unix ms (models that require approval).
    pub approved_ms: Option<i64>,
}

/// An operational certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Serial (hex).
    pub serial: String,
    /// Not valid before, Unix ms.
    pub not_before_ms: i64,
    /// Not valid after, Unix ms.
    pub not_after_ms: i64,
    /// Its key type (`ecdsa-p256`, `ed25519`, `rsa-2048`, ...), when known.
    pub key_type: Option<String>,
}

/// A release as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Version.
    pub version: String,
    /// Security version (the anti-rollback floor it sets).
    pub security_version: u64,
    /// Accepted through the supply-chain gate: signed by a registered supplier
    /// key, with a CycloneDX SBOM and SLSA provenance.
    pub gated: bool,
    /// When it was accepted, Unix ms.
    pub created_ms: i64,
}

/// Firmware and updates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// The version it reports in telemetry.
    pub reported_version: Option<String>,
    /// The accepted release that version is, if it is one.
    pub running: Option<Release>,
    /// The model's newest release by security version.
    pub newest: Option<Release>,
    /// Its last update report.
    pub last_update: Option<(UpdateState, i64)>,
}

/// The model's support period and update cadence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Support {
    /// End of support, Unix ms.
    pub until_ms: Option<i64>,
    /// Days after a security release by which every device must run it.
    pub security_update_days: Option<u32>,
}

/// Placement and network policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Placed at a site, with an address.
    pub placed: bool,
    /// When its placement last changed, Unix ms.
    pub placed_ms: Option<i64>,
    /// Its model has a network policy (from MUD).
    pub model_policy: bool,
    /// That policy was allowed to open everything (an audited override).
    pub open_override: bool,
    /// The bundle version the site's edge last applied, and when it reported.
    pub edge_applied: Option<(u64, i64)>,
    /// The edge's counters of denied traffic (out and in) at its last report.
    pub denied_packets: Option<u64>,
    /// Its site runs the legacy plaintext MQTT bridge and the device's sessions
    /// arrive through it.
    pub legacy_bridge: bool,
}

/// Sessions and telemetry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Connected to a gateway now.
    pub connected: bool,
    /// Last message, Unix ms.
    pub last_seen_ms: Option<i64>,
    /// How its live session reaches the control plane, when connected.
    #[serde(default)]
    pub transport: Option<palisade_core::Transport>,
}

/// Unresolved alerts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCounts {
    /// Critical.
    pub critical: u32,
    /// High.
    pub high: u32,
    /// Medium.
    pub medium: u32,
    /// Low.
    pub low: u32,
}

/// The model's supplier and what the operator requires of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supplier {
    /// Name.
    pub name: String,
    /// Release-signing keys registered.
    pub signing_keys: u32,
    /// A vulnerability disclosure contact on record.
    pub disclosure_contact: Option<String>,
}

/// An audit entry that evidences something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRef {
    /// Its index in the log.
    pub index: u64,
    /// Its action (`est.enroll`, ...).
    pub action: String,
    /// When, Unix ms.
    pub at_ms: i64,
}
