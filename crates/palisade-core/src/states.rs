//! The states that both sides of a protocol or both ends of the store name:
//! an update as a device reports it, a staged rollout and each device's part in
//! it, an alert's lifecycle. Each is parsed and printed only at the wire and at
//! the database; everywhere else it is this type, so a typo does not compile.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A state name that is not one of the type's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be one of {allowed}, not {given:?}")]
pub struct UnknownState {
    /// Which kind of state.
    pub what: &'static str,
    /// The names it accepts.
    pub allowed: String,
    /// What was given (at most 64 characters of it).
    pub given: String,
}

macro_rules! named_states {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every state, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses a name as stored and sent.
            pub fn parse(s: &str) -> Result<Self, UnknownState> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownState {
                        what: $what,
                        allowed: Self::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        given: s.chars().take(64).collect(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                Self::parse(s)
            }
        }
    };
}

named_states! {
    /// Where an update stands, as the device reports it to the director.
    UpdateState, "an update state" {
        /// Fetching the image (or a delta).
        Downloading => "downloading",
        /// Written to the inactive slot and verified; the trial boot is armed.
        Installed => "installed",
        /// Booted the new image on trial.
        Trial => "trial",
        /// The trial passed: the new image is the device's.
        Committed => "committed",
        /// The trial failed and the device went back to its previous image.
        RolledBack => "rolled-back",
        /// The device refused the assignment (signatures, hash, version, hardware).
        Refused => "refused",
        /// Something else went wrong.
        Failed => "failed",
    }
}

impl UpdateState {
    /// Whether the update is over, one way or the other.
    pub fn is_end(self) -> bool {
        matches!(
            self,
            UpdateState::Committed
                | UpdateState::RolledBack
                | UpdateState::Refused
                | UpdateState::Failed
        )
    }

    /// Whether the update is over and did not succeed.
    pub fn is_failure(self) -> bool {
        self.is_end() && self != UpdateState::Committed
    }
}

named_states! {
    /// Where a staged rollout stands.
    RolloutState, "a rollout state" {
        /// Assigning wave after wave.
        Running => "running",
        /// Stopped by its failure threshold or an operator.
        Paused => "paused",
        /// Every wave reached its success threshold; newcomers still join.
        Completed => "completed",
        /// Stopped for good by an operator.
        Cancelled => "cancelled",
    }
}

impl RolloutState {
    /// Whether the rollout still assigns its release to devices (a completed
    /// rollout keeps serving devices that match it later).
    pub fn assigns(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Completed)
    }
}

named_states! {
    /// A device's part in a rollout.
    RolloutDeviceState, "a rollout device state" {
        /// In a wave not opened yet.
        Pending => "pending",
        /// Assigned the release; its update is under way.
        Assigned => "assigned",
        /// Runs the release.
        Committed => "committed",
        /// Its update failed (refused, rolled back or failed).
        Failed => "failed",
        /// Left the rollout without an outcome (decommissioned): counts
        /// neither for nor against its wave.
        Withdrawn => "withdrawn",
    }
}

impl RolloutDeviceState {
    /// What a device's update report means for its part in a rollout: an end
    /// state settles it, anything else leaves it as it was.
    pub fn after(update: UpdateState) -> Option<Self> {
        match update {
            UpdateState::Committed => Some(RolloutDeviceState::Committed),
            s if s.is_failure() => Some(RolloutDeviceState::Failed),
            _ => None,
        }
    }
}

named_states! {
    /// Where a model stands against its support-end policy (ETSI EN 303 645
    /// 5.3-13; CRA support period): each stage is entered on its date and
    /// audited; an extension brings a model back, except from `retired`.
    SupportStage, "a support stage" {
        /// Before the notice period.
        Supported => "supported",
        /// Within the notice period before the support end: alerted.
        Notified => "notified",
        /// Past the restriction date: the edges confine its devices to the
        /// control plane and update traffic.
        Restricted => "restricted",
        /// Past the retirement date: its devices were decommissioned.
        Retired => "retired",
    }
}

named_states! {
    /// An alert's lifecycle.
    AlertState, "an alert state" {
        /// Raised, nobody has looked yet.
        Open => "open",
        /// An operator is on it.
        Acknowledged => "acknowledged",
        /// Closed.
        Resolved => "resolved",
    }
}

named_states! {
    /// What the operator decided about an address that is no enrolled device.
    UnmanagedState, "an unmanaged host's state" {
        /// Seen, not decided yet.
        Seen => "seen",
        /// Cut off by the site's edge.
        Blocked => "blocked",
        /// Registered as a device (it still has to enrol).
        Adopted => "adopted",
    }
}

impl AlertState {
    /// Whether the alert still counts repeats (open or acknowledged).
    pub fn is_unresolved(self) -> bool {
        self != AlertState::Resolved
    }
}

/// How a device's live session reaches the control plane: the evidence for
/// "encrypted protocols suited to the device class".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// MQTT over mutually authenticated TLS (the gateway).
    MqttTls,
    /// CoAP over DTLS 1.2 with certificates.
    CoapDtls,
    /// CoAP protected with OSCORE, its keys from EDHOC.
    CoapOscore,
}

impl Transport {
    /// The name as shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::MqttTls => "mqtt-tls",
            Transport::CoapDtls => "coap-dtls",
            Transport::CoapOscore => "coap-oscore",
        }
    }

    /// What it is, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::MqttTls => "MQTT over mutually authenticated TLS",
            Transport::CoapDtls => "CoAP over DTLS 1.2 with certificates",
            Transport::CoapOscore => "CoAP protected end to end with OSCORE, keyed by EDHOC",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for s in UpdateState::ALL {
            assert_eq!(UpdateState::parse(s.as_str()), Ok(*s));
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        for s in RolloutState::ALL {
            assert_eq!(RolloutState::parse(s.as_str()), Ok(*s));
        }
        for s in RolloutDeviceState::ALL {
            assert_eq!(RolloutDeviceState::parse(s.as_str()), Ok(*s));
        }
        for s in AlertState::ALL {
            assert_eq!(AlertState::parse(s.as_str()), Ok(*s));
        }
        assert_eq!(UpdateState::RolledBack.as_str(), "rolled-back");
    }

    #[test]
    fn unknown_names_are_refused_with_the_allowed_ones() {
        let e = UpdateState::parse("comitted").unwrap_err();
        assert!(e.to_string().contains("committed"), "{e}");
        assert!(AlertState::parse("").is_err());
        assert!(serde_json::from_str::<RolloutState>("\"done\"").is_err());
    }

    #[test]
    fn update_reports_settle_a_rollout_device_only_at_their_end() {
        use RolloutDeviceState as R;
        use UpdateState as U;
        assert_eq!(R::after(U::Committed), Some(R::Committed));
        for failed in [U::Refused, U::Failed, U::RolledBack] {
            assert_eq!(R::after(failed), Some(R::Failed));
        }
        for ongoing in [U::Downloading, U::Installed, U::Trial] {
            assert_eq!(R::after(ongoing), None);
            assert!(!ongoing.is_end());
        }
    }
}
