//! The core of Palisade's control plane: the services (fleet, enrolment,
//! attestation, commands, releases and TUF, rollouts, network policy,
//! monitoring, alerts and their delivery) and the vocabulary they share.
//!
//! Layers, each depending only on those above it in this list:
//! 1. vocabulary — [`error`], [`events`] (the event bus), [`sessions`],
//!    [`presence`], [`identity`], [`config`], [`metrics`], [`tls`], [`files`],
//!    [`tokens`], [`blobs`], [`pki`], [`lifecycle`];
//! 2. services — [`accounts`], [`fleet`], [`network`], [`releases`], [`tuf`], [`commands`],
//!    [`attestation`], [`rollouts`], [`alerts`], [`deliver`];
//! 3. services that build on others — [`enroll`] (attestation), [`monitor`]
//!    (alerts, network; it follows the bus), [`posture`] (reads everything,
//!    judges with `palisade-posture`), [`unmanaged`] (monitor, network),
//!    [`advisories`] (releases' SBOMs, alerts).
//!
//! No service calls one above it: what flows upward (a device's messages and
//! sessions, refused credentials, failed attestations) is published on the
//! [`events::EventBus`]. The front ends (the MQTT gateway and the HTTP surface,
//! crates of their own) call into these services; `palisade-server` composes
//! them.

pub mod accounts;
pub mod advisories;
pub mod alerts;
pub mod attestation;
pub mod blobs;
pub mod ca;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod cra;
pub mod decommission;
pub mod deliver;
pub mod enroll;
pub mod error;
pub mod events;
pub mod files;
pub mod fleet;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod pki;
pub mod posture;
pub mod presence;
pub mod proxy;
pub mod releases;
pub mod rollouts;
pub mod sessions;
pub mod support;
pub mod tls;
pub mod tokens;
pub mod tuf;
pub mod unmanaged;
pub mod vex;

pub use error::{EnrollError, ServiceError};
pub use events::{Event, EventBus, LocalBus};
