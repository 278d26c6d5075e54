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
    mqtt_refusals: Family<Reason, Counter>,
    mqtt_acl_denials: Family<Reason, Counter>,
    mqtt_handshakes: Counter,
    mqtt_connected: Gauge,
    mqtt_messages_in: Counter,
    mqtt_bytes_in: Counter,
    mqtt_messages_out: Counter,
    mqtt_bytes_out: Counter,
    attestation: Family<Reason, Counter>,
    ota_reports: Family<Reason, Counter>,
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
        let mqtt_refusals = Family::<Reason, Counter>::default();
        let mqtt_acl_denials = Family::<Reason, Counter>::default();
        let mqtt_handshakes = Counter::default();
        let mqtt_connected = Gauge::default();
        let (mqtt_messages_in, mqtt_bytes_in) = (Counter::default(), Counter::default());
        let (mqtt_messages_out, mqtt_bytes_out) = (Counter::default(), Counter::default());
        registry.register(
            "mqtt_refusals",
            "Device connections refused or closed by the gateway, by reason",
            mqtt_refusals.clone(),
        );
        registry.register(
            "mqtt_acl_denials",
            "Publishes and subscriptions refused by the per-device ACL, by reason",
            mqtt_acl_denials.clone(),
        );
        registry.register(
            "mqtt_handshakes",
            "Completed mutual-TLS handshakes on the gateway",
            mqtt_handshakes.clone(),
        );
        registry.register(
            "mqtt_connected_devices",
            "Devices with a live MQTT session",
            mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_messages_in",
            "Messages accepted from devices",
            mqtt_messages_in.clone(),
        );
        registry.register(
            "mqtt_bytes_in",
            "Payload bytes accepted from devices",
            mqtt_bytes_in.clone(),
        );
        registry.register(
            "mqtt_messages_out",
            "Messages sent to devices",
            mqtt_messages_out.clone(),
        );
        registry.register(
            "mqtt_bytes_out",
            "Payload bytes sent to devices",
            mqtt_bytes_out.clone(),
        );
        let attestation = Family::<Reason, Counter>::default();
        registry.register(
            "attestation_results",
            "TPM attestation outcomes: key_proven, refused, quote_ok, quote_failed",
            attestation.clone(),
        );
        let ota_reports = Family::<Reason, Counter>::default();
        registry.register(
            "ota_reports",
            "Update states reported by devices: downloading, installed, trial, committed, rolled-back, refused, failed",
            ota_reports.clone(),
        );
        Self {
            attestation,
            ota_reports,
            mqtt_refusals,
            mqtt_acl_denials,
            mqtt_handshakes,
            mqtt_connected,
            mqtt_messages_in,
            mqtt_bytes_in,
            mqtt_messages_out,
            mqtt_bytes_out,
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
    pub fn attestation(&self, outcome: &str) {
        self.attestation
            .get_or_create(&Reason {
                reason: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts an update state reported by a device.
    pub fn ota_report(&self, state: &str) {
        self.ota_reports
            .get_or_create(&Reason {
                reason: state.to_owned(),
            })
            .inc();
    }

    /// Counts a refused EST request.
    pub fn enrollment_refused(&self) {
        self.enrollments_refused.inc();
    }

    /// Counts a refused or closed device connection.
    pub fn mqtt_refused(&self, reason: &str) {
        self.mqtt_refusals
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an ACL denial.
    pub fn mqtt_acl_denied(&self, reason: &str) {
        self.mqtt_acl_denials
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a completed gateway handshake.
    pub fn mqtt_handshake(&self) {
        self.mqtt_handshakes.inc();
    }

    /// Sets the number of connected devices.
    pub fn mqtt_connected(&self, n: usize) {
        self.mqtt_connected
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a message from a device.
    pub fn mqtt_in(&self, bytes: usize) {
        self.mqtt_messages_in.inc();
        self.mqtt_bytes_in.inc_by(u64::try_from(bytes).unwrap_or(0));
    }

    /// Counts a message to a device.
    pub fn mqtt_out(&self, bytes: usize) {
        self.mqtt_messages_out.inc();
        self.mqtt_bytes_out
            .inc_by(u64::try_from(bytes).unwrap_or(0));
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
