//! Palisade's value types, built only by parsers at the trust boundary, plus the
//! device lifecycle rules, the states both ends of a protocol name, operator
//! roles, the `Clock` and the `Signer` traits.
//!
//! This crate is pure: no I/O, no async runtime, and no ambient clock: the one
//! system-clock reader, [`SystemClock`], is defined here for the binaries to
//! construct and is never called from library code.

pub mod clock;
pub mod cluster;
pub mod ids;
pub mod lifecycle;
pub mod proxy;
pub mod role;
pub mod signed;
pub mod signer;
pub mod states;
pub mod wipe;

pub use clock::{Clock, SystemClock, rfc3339_ms, unix_ms};
pub use ids::{DeviceId, IdError, ModelId, OperatorName, RolloutName, SiteName, SupplierName, Tag};
pub use lifecycle::{DeviceState, TransitionError};
pub use role::{Role, RoleError};
pub use signer::{KeyAlgorithm, KeyProtection, Signer, SignerError, ecdsa_fixed_to_der, spki_der};
pub use states::{
    AlertState, RolloutDeviceState, RolloutState, SupportStage, Transport, UnknownState,
    UnmanagedState, UpdateState,
};

/// The protocol command by which the control plane asks an agent to renew
/// its operational certificate now (after a CA rotation). Its one argument is
/// a number of seconds: the agent renews at a random moment within them, so
/// a fleet does not renew at once. Like `attest`, it is not subject to the
/// agent's command allowlist: renewing is what the agent does anyway.
pub const RENEW_COMMAND: &str = "renew";
