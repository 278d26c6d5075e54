//! What the handlers reach: the control plane's [`Services`], and one state type
//! per trust zone ([`PublicApi`], [`OperatorApi`], [`DeviceApi`]) wrapping them.
//! The zone types are what make "the operator API never trusts a client
//! certificate, the device API never trusts a token" a matter of types: the
//! operator's credential (`operator::Caller`) can only be extracted in a
//! handler whose state is `OperatorApi`, a device's
//! (`device::AuthenticatedDevice`) only where it is `DeviceApi`, and a public
//! handler has neither.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_control::fleet::Fleet;
use palisade_control::metrics::Metrics;
use palisade_control::pki::Pki;

use palisade_core::Clock;
use palisade_store::Store;

/// The services and settings every handler reaches, whatever its trust zone.
#[derive(Debug)]
pub struct Services {
    /// Alerts.
    pub alerts: Arc<palisade_control::alerts::Alerts>,
    /// Monitoring (observations and timeline events).
    pub monitor: Arc<palisade_control::monitor::Monitor>,
    /// The fleet service.
    pub fleet: Arc<Fleet>,
    /// The enrolment service (EST, suppliers, batches, enrolment tokens).
    pub enrollment: Arc<palisade_control::enroll::Enrollment>,
    /// The store (reads).
    pub store: Arc<dyn Store>,
    /// The CAs.
    pub pki: Arc<Pki>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Live MQTT sessions.
    pub sessions: Arc<palisade_control::sessions::Sessions>,
    /// What devices last said.
    pub presence: Arc<palisade_control::presence::Presence>,
    /// Commands to devices.
    pub commands: Arc<palisade_control::commands::Commands>,
    /// TPM attestation.
    pub attestation: Arc<palisade_control::attestation::Attestation>,
    /// Firmware releases.
    pub releases: Arc<palisade_control::releases::Releases>,
    /// Vulnerability advisories.
    pub advisories: Arc<palisade_control::advisories::Advisories>,
    /// Decommissioning and verified wipes.
    pub decommissioning: Arc<palisade_control::decommission::Decommissioning>,
    /// Support-end enforcement.
    pub support: Arc<palisade_control::support::SupportEnd>,
    /// Largest firmware image accepted.
    pub max_image_bytes: u64,
    /// The TUF image repository.
    pub tuf: palisade_control::tuf::Repository,
    /// Staged rollouts.
    pub rollouts: Arc<palisade_control::rollouts::Rollouts>,
    /// People's accounts and console sessions.
    pub accounts: Arc<palisade_control::accounts::Accounts>,
    /// Posture against the baselines.
    pub posture: Arc<palisade_control::posture::Posture>,
    /// Network policy: MUD, sites, placements, edge bundles.
    pub network: Arc<palisade_control::network::Network>,
    /// Addresses at sites that are no enrolled device.
    pub unmanaged: Arc<palisade_control::unmanaged::Unmanaged>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Rate limit for auditing auth failures.
    pub audit_limiter: Arc<AuditLimiter>,
    /// The audit verifier key text.
    pub audit_vkey: Arc<str>,
    /// Whether `/metrics` is public.
    pub metrics_public: bool,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Set when the node drains (SIGTERM): `/readyz` answers 503.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

macro_rules! zone {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub(crate) Arc<Services>);

        impl Deref for $name {
            type Target = Services;
            fn deref(&self) -> &Services {
                &self.0
            }
        }
    };
}

zone! {
    /// The anonymous zone: what a protocol needs before any credential (health,
    /// the CRL and CA chain, EST `cacerts`/`csrattrs`, TUF metadata and images).
    PublicApi
}
zone! {
    /// The operator zone: `/api/v1/…`, `/metrics`, the OpenAPI document; bearer
    /// tokens with a role, never a client certificate.
    OperatorApi
}
zone! {
    /// The device zone: EST enrolment, attestation, the director, edges; a client
    /// certificate (or, to enrol, an enrolment token), never an operator token.
    DeviceApi
}

/// Bounds how many auth failures per second reach the audit log.
#[derive(Debug)]
pub struct AuditLimiter {
    per_sec: u32,
    window: Mutex<(i64, u32)>,
}

impl AuditLimiter {
    /// A limiter allowing `per_sec` entries a second.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            window: Mutex::new((0, 0)),
        }
    }

    /// Whether one more entry may be written now.
    pub fn allow(&self, now_ms: i64) -> bool {
        let sec = now_ms / 1000;
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        if w.0 != sec {
            *w = (sec, 0);
        }
        if w.1 < self.per_sec {
            w.1 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_bounded_number_per_second() {
        let l = AuditLimiter::new(3);
        let allowed = (0..10).filter(|_| l.allow(5_000)).count();
        assert_eq!(allowed, 3);
        assert!(l.allow(6_000));
    }
}
