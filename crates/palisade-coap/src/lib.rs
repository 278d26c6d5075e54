//! The CoAP device endpoint: CoAP (RFC 7252) over DTLS 1.2 on UDP, with the
//! same fleet semantics as the MQTT gateway. A device's identity is the CN of
//! the certificate it presents in the DTLS handshake; it is admitted by the
//! same rules ([`palisade_control::sessions::admit`]), registers in the same
//! session registry (one live session per device, whichever protocol), posts
//! telemetry, events and command answers that reach the bus as MQTT
//! publishes would, and observes its commands, which arrive as confirmable
//! notifications whose ACK confirms delivery. Revoking its certificate or
//! decommissioning it closes the DTLS session at once.
//!
//! One task owns the socket and every peer's state: OpenSSL sessions are fed
//! one datagram at a time ([`dtls`]), the CoAP layer is a state machine with
//! time passed in ([`exchange`]); only admission (store reads) runs apart.
//!
//! Without the default `endpoint` feature the crate is only the CoAP layer
//! ([`exchange`], [`block`]): no I/O, no OpenSSL (the fuzz targets use it so).

pub mod block;
#[cfg(feature = "endpoint")]
pub mod dtls;
pub mod edhoc;
#[cfg(feature = "endpoint")]
mod endpoint;
#[cfg(feature = "endpoint")]
mod est;
pub mod exchange;
#[cfg(feature = "endpoint")]
mod fleet;
#[cfg(feature = "endpoint")]
mod oscore;
#[cfg(feature = "endpoint")]
mod server;

#[cfg(feature = "endpoint")]
pub use server::{Bounds, Coap, CoapParts};
