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

fn reason(r: &str) -> Reason {
    Reason {
        reason: r.to_owned(),
    }
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
    monitoring: MonitoringMetrics,
    coap: CoapMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    detector: String,
    outcome: String,
}

/// Monitoring and cloud-side device metrics.
#[derive(Debug)]
struct MonitoringMetrics {
    flow_datagrams: Counter,
    flow_records: Counter,
    flow_problems: Family<Reason, Counter>,
    flows_unmapped: Counter,
    telemetry_refused: Family<Reason, Counter>,
    dropped: Family<Reason, Counter>,
    findings: Family<Outcome, Counter>,
    mqtt_connect_attempts: Counter,
    mqtt_disconnects: Family<Reason, Counter>,
    mqtt_address_changes: Counter,
    mqtt_message_bytes: prometheus_client::metrics::histogram::Histogram,
    est_refusals: Family<Reason, Counter>,
}

impl MonitoringMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            flow_datagrams: Counter::default(),
            flow_records: Counter::default(),
            flow_problems: Family::default(),
            flows_unmapped: Counter::default(),
            telemetry_refused: Family::default(),
            dropped: Family::default(),
            findings: Family::default(),
            mqtt_connect_attempts: Counter::default(),
            mqtt_disconnects: Family::default(),
            mqtt_address_changes: Counter::default(),
            mqtt_message_bytes: prometheus_client::metrics::histogram::Histogram::new([
                64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
            ]),
            est_refusals: Family::default(),
        };
        r.register(
            "flow_datagrams",
            "IPFIX/NetFlow datagrams received",
            m.flow_datagrams.clone(),
        );
        r.register(
            "flow_records",
            "Flow records decoded",
            m.flow_records.clone(),
        );
        r.register(
            "flow_problems",
            "Flow datagrams or records refused or lost, by reason (malformed, unknown_template, sequence_lost, refused_exporter, oversized, incomplete)",
            m.flow_problems.clone(),
        );
        r.register(
            "flows_unmapped",
            "Flow records that matched no placed device",
            m.flows_unmapped.clone(),
        );
        r.register(
            "telemetry_refused",
            "Device telemetry messages refused, by reason",
            m.telemetry_refused.clone(),
        );
        r.register(
            "monitor_dropped",
            "Observations or timeline events dropped because the monitor was behind",
            m.dropped.clone(),
        );
        r.register(
            "alert_findings",
            "Detector findings by detector and what became of them (opened, merged, rate_limited)",
            m.findings.clone(),
        );
        r.register(
            "mqtt_connect_attempts",
            "MQTT connections accepted for a TLS handshake",
            m.mqtt_connect_attempts.clone(),
        );
        r.register(
            "mqtt_disconnects",
            "Device sessions ended, by reason",
            m.mqtt_disconnects.clone(),
        );
        r.register(
            "mqtt_source_address_changes",
            "Device sessions from an address other than the device's previous one",
            m.mqtt_address_changes.clone(),
        );
        r.register(
            "mqtt_message_bytes",
            "Sizes of messages devices publish",
            m.mqtt_message_bytes.clone(),
        );
        r.register(
            "est_refusals",
            "EST requests refused, by reason",
            m.est_refusals.clone(),
        );
        m
    }
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
        let monitoring = MonitoringMetrics::register(&mut registry);
        let coap = CoapMetrics::register(&mut registry);
        Self {
            monitoring,
            coap,
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

    /// Counts what happened to a detector's finding.
    pub fn alert_finding(&self, detector: &str, outcome: &str) {
        self.monitoring
            .findings
            .get_or_create(&Outcome {
                detector: detector.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts something the monitor dropped.
    pub fn monitor_dropped(&self, what: &str) {
        self.monitoring.dropped.get_or_create(&reason(what)).inc();
    }

    /// Counts a refused telemetry message.
    pub fn telemetry_refused(&self, why: &str) {
        self.monitoring
            .telemetry_refused
            .get_or_create(&reason(why))
            .inc();
    }

    /// Adds the collector's counters' growth since `before`.
    pub fn flow_stats(
        &self,
        before: &palisade_detect::flow::CollectorStats,
        now: &palisade_detect::flow::CollectorStats,
    ) {
        let m = &self.monitoring;
        m.flow_datagrams
            .inc_by(now.datagrams.saturating_sub(before.datagrams));
        m.flow_records
            .inc_by(now.records.saturating_sub(before.records));
        for (why, a, b) in [
            ("malformed", before.malformed, now.malformed),
            (
                "unknown_template",
                before.unknown_template,
                now.unknown_template,
            ),
            ("sequence_lost", before.sequence_lost, now.sequence_lost),
            (
                "sequence_reset",
                before.sequence_resets,
                now.sequence_resets,
            ),
            ("incomplete", before.incomplete, now.incomplete),
            ("refused_exporter", before.refused, now.refused),
            ("oversized", before.oversized, now.oversized),
        ] {
            if b > a {
                m.flow_problems.get_or_create(&reason(why)).inc_by(b - a);
            }
        }
    }

    /// Counts a flow record that matched no device.
    pub fn flow_mapped(&self, mapped: bool) {
        if !mapped {
            self.monitoring.flows_unmapped.inc();
        }
    }

    /// The CoAP endpoint's counters.
    pub fn coap(&self) -> &CoapMetrics {
        &self.coap
    }

    /// Counts a device connection attempt at the gateway.
    pub fn mqtt_connect_attempt(&self) {
        self.monitoring.mqtt_connect_attempts.inc();
    }

    /// Counts an ended device session.
    pub fn mqtt_disconnect(&self, why: &str) {
        self.monitoring
            .mqtt_disconnects
            .get_or_create(&reason(why))
            .inc();
    }

    /// Counts a session from a new source address.
    pub fn mqtt_address_change(&self) {
        self.monitoring.mqtt_address_changes.inc();
    }

    /// Records the size of a published message.
    pub fn mqtt_message_size(&self, bytes: usize) {
        self.monitoring.mqtt_message_bytes.observe(bytes as f64);
    }

    /// Counts a refused EST request by reason.
    pub fn est_refused(&self, why: &str) {
        self.monitoring
            .est_refusals
            .get_or_create(&reason(why))
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

/// The CoAP endpoint's counters: DTLS handshakes and sessions, requests by
/// response class, notifications and their retransmissions, refusals by
/// reason (spoofed-source hellos answered statelessly count as `no_cookie`).
#[derive(Debug)]
pub struct CoapMetrics {
    refusals: Family<Reason, Counter>,
    handshakes: Counter,
    sessions: Gauge,
    peers: Gauge,
    contexts: Gauge,
    edhoc: Counter,
    requests: Family<Status, Counter>,
    notifications: Counter,
    retransmissions: Counter,
}

impl CoapMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            refusals: Family::default(),
            handshakes: Counter::default(),
            sessions: Gauge::default(),
            peers: Gauge::default(),
            contexts: Gauge::default(),
            edhoc: Counter::default(),
            requests: Family::default(),
            notifications: Counter::default(),
            retransmissions: Counter::default(),
        };
        r.register(
            "coap_refusals",
            "CoAP datagrams, handshakes and sessions refused or closed, by reason",
            m.refusals.clone(),
        );
        r.register(
            "coap_handshakes",
            "Completed DTLS handshakes with a device certificate",
            m.handshakes.clone(),
        );
        r.register(
            "coap_sessions",
            "Devices with a live CoAP session",
            m.sessions.clone(),
        );
        r.register(
            "coap_oscore_contexts",
            "OSCORE security contexts held (one per device that ran EDHOC)",
            m.contexts.clone(),
        );
        r.register(
            "coap_edhoc_completed",
            "EDHOC runs that ended in an OSCORE context for an admitted device",
            m.edhoc.clone(),
        );
        r.register(
            "coap_peers_held",
            "DTLS sessions the endpoint holds state for (handshaking, being admitted or live); a ClientHello without a valid cookie adds none",
            m.peers.clone(),
        );
        r.register(
            "coap_requests",
            "CoAP requests answered, by response code",
            m.requests.clone(),
        );
        r.register(
            "coap_notifications",
            "Observe notifications sent to devices (commands, update notices)",
            m.notifications.clone(),
        );
        r.register(
            "coap_retransmissions",
            "Confirmable messages sent again for want of an acknowledgement",
            m.retransmissions.clone(),
        );
        m
    }

    /// Counts something refused or closed.
    pub fn refused(&self, why: &str) {
        self.refusals.get_or_create(&reason(why)).inc();
    }

    /// Counts a completed handshake.
    pub fn handshake(&self) {
        self.handshakes.inc();
    }

    /// A live DTLS session began.
    pub fn session_opened(&self) {
        self.sessions.inc();
    }

    /// A live DTLS session ended (closed, revoked, idle, shut down).
    pub fn session_closed(&self) {
        self.sessions.dec();
    }

    /// Sets the number of OSCORE contexts held.
    pub fn contexts(&self, n: usize) {
        self.contexts.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts an EDHOC run that ended in a context.
    pub fn edhoc(&self) {
        self.edhoc.inc();
    }

    /// Sets the number of DTLS sessions held in any phase.
    pub fn peers_held(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts an answered request by its response code (`2.05`, `4.04`, ...).
    pub fn answered(&self, code: &str) {
        self.requests
            .get_or_create(&Status {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Counts a notification sent.
    pub fn notification(&self) {
        self.notifications.inc();
    }

    /// Counts a retransmission.
    pub fn retransmission(&self) {
        self.retransmissions.inc();
    }
}
