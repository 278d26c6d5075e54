//! The CoAP front end: what it is built from and its bounds. Its tasks are
//! the DTLS endpoint (`endpoint.rs`) and the OSCORE listener (`oscore.rs`).

use std::sync::Arc;
use std::time::Duration;

use palisade_control::events::EventBus;
use palisade_control::metrics::Metrics;
use palisade_control::sessions::Sessions;
use palisade_core::Clock;
use palisade_store::Store;

use crate::dtls::SwappableContext;
use crate::exchange::Limits;

/// Bounds on the endpoint's state.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Sessions (handshaking, admitting and live) held at once.
    pub max_peers: usize,
    /// Handshakes in progress from one source address.
    pub max_handshakes_per_ip: usize,
    /// Time allowed for a handshake and admission.
    pub handshake_timeout: Duration,
    /// A session with nothing from the device for this long is dropped
    /// (the device handshakes again; sleepy devices should send a CoAP ping
    /// or a report within it).
    pub idle_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_peers: 100_000,
            max_handshakes_per_ip: 32,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(900),
        }
    }
}

/// What the endpoint is built from.
#[derive(Debug)]
pub struct CoapParts {
    /// The store (certificates and device states at admission).
    pub store: Arc<dyn Store>,
    /// The live-session registry (shared with the MQTT gateway).
    pub sessions: Arc<Sessions>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// Per-device view (security events: OSCORE forgeries and replays).
    pub presence: Arc<palisade_control::presence::Presence>,
    /// The DTLS context (replaced when the CAs change).
    pub dtls: Arc<SwappableContext>,
    /// The server's EDHOC key and credential (the OSCORE listener's).
    pub edhoc: crate::edhoc::ServerIdentity,
    /// The enrolment service (EST over CoAP).
    pub enrollment: Arc<palisade_control::enroll::Enrollment>,
    /// The CAs (EST's `crts`).
    pub pki: Arc<palisade_control::pki::Pki>,
    /// Per-session CoAP limits.
    pub limits: Limits,
    /// Bounds on the endpoint's state.
    pub bounds: Bounds,
    /// This node's name among the nodes.
    pub node: String,
}

/// The CoAP endpoint.
#[derive(Debug)]
pub struct Coap {
    pub(crate) p: CoapParts,
}

impl Coap {
    /// Builds the endpoint; it serves once [`Coap::run`] is spawned.
    pub fn new(p: CoapParts) -> Self {
        Self { p }
    }

    /// The DTLS context in force.
    pub fn dtls(&self) -> &SwappableContext {
        &self.p.dtls
    }
}
