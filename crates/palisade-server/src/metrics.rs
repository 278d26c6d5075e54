//! Prometheus metrics for the control plane.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    code: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    auth_failures: Family<Reason, Counter>,
    responses: Family<Status, Counter>,
    tls_handshake_failures: Counter,
    connections_refused: Counter,
    enrollments_refused: Counter,
    audit_size: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let auth_failures = Family::<Reason, Counter>::default();
        let responses = Family::<Status, Counter>::default();
        let tls_handshake_failures = Counter::default();
        let connections_refused = Counter::default();
        let audit_size = Gauge::default();
        let enrollments_refused = Counter::default();
        registry.register(
            "est_enrollments_refused",
            "EST enrolment and re-enrolment requests refused",
            enrollments_refused.clone(),
        );
        registry.register(
            "api_auth_failures",
            "Operator API requests refused by authentication or role, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "api_responses",
            "Operator API responses by status code",
            responses.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused because the connection limit was reached",
            connections_refused.clone(),
        );
        registry.register(
            "audit_log_entries",
            "Entries in the audit log covered by the newest signed checkpoint",
            audit_size.clone(),
        );
        Self {
            registry,
            auth_failures,
            responses,
            tls_handshake_failures,
            connections_refused,
            enrollments_refused,
            audit_size,
        }
    }
}

impl Metrics {
    /// Counts an authentication or authorisation failure.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a response.
    pub fn response(&self, code: u16) {
        self.responses
            .get_or_create(&Status {
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Counts a refused connection.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a refused enrolment.
    pub fn enrollment_refused(&self) {
        self.enrollments_refused.inc();
    }

    /// Renders the text exposition format, with the audit size as of now.
    pub fn render(&self, audit_size: u64) -> String {
        self.audit_size
            .set(i64::try_from(audit_size).unwrap_or(i64::MAX));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
