//! The Palisade device agent, as a library the `palisade-agent` binary and the
//! fleet simulator share: a keystore, EST enrolment (birth identity or token),
//! and renewal at about two thirds of the certificate's lifetime.
//!
//! It depends on no server crate: only the pure crates and the keystore.

pub mod est_client;
pub mod https;
pub mod keystore;
pub mod metrics;
pub mod ota;
pub mod schedule;
pub mod session;
pub mod state;
pub mod tls_key;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod vault;
pub mod wipe;

pub use est_client::{EnrollAuth, EstClient, EstError};
pub use keystore::{Attester, Keystore, Pkcs11Keystore, SoftwareKeystore};
pub use state::{Agent, AgentError, Identity};

/// The device's system clock (the workspace's one reader, from `palisade-core`).
pub use palisade_core::SystemClock;
