//! The device lifecycle and the one place where its transitions are decided.
//!
//! `registered → enrolled → active → quarantined → decommissioned`; a quarantined
//! device may be released back to `active`; any state may be decommissioned, and
//! decommissioned is final.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Known to the fleet, no operational certificate yet.
    Registered,
    /// Holds an operational certificate, not yet seen online.
    Enrolled,
    /// Enrolled and in service.
    Active,
    /// Cut off from everything but the control plane.
    Quarantined,
    /// Retired: credentials revoked, refused everywhere. Final.
    Decommissioned,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a device cannot go from {from} to {to}{hint}")]
pub struct TransitionError {
    /// Current state.
    pub from: DeviceState,
    /// Requested state.
    pub to: DeviceState,
    /// What to do instead, if anything.
    pub hint: &'static str,
}

impl DeviceState {
    /// All states in lifecycle order.
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Registered,
        DeviceState::Enrolled,
        DeviceState::Active,
        DeviceState::Quarantined,
        DeviceState::Decommissioned,
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Registered => "registered",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Active => "active",
            DeviceState::Quarantined => "quarantined",
            DeviceState::Decommissioned => "decommissioned",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Decides a transition: the only place the lifecycle rules live.
    pub fn transition(self, to: DeviceState) -> Result<DeviceState, TransitionError> {
        use DeviceState::*;
        let ok = match (self, to) {
            (Decommissioned, _) => false,
            (_, Decommissioned) => true,
            (Registered, Enrolled) => true,
            (Enrolled, Active) => true,
            (Enrolled | Active, Quarantined) => true,
            (Quarantined, Active) => true,
            _ => false,
        };
        if ok {
            Ok(to)
        } else {
            let hint = match self {
                Decommissioned => ": decommissioning is final; register a new device instead",
                _ => "",
            };
            Err(TransitionError {
                from: self,
                to,
                hint,
            })
        }
    }

    /// Whether a device in this state may hold or obtain valid credentials.
    pub fn may_hold_credentials(self) -> bool {
        !matches!(self, DeviceState::Decommissioned)
    }

    /// Whether a device in this state may be issued its first (or a new)
    /// operational certificate from a birth identity, a token or an operator:
    /// not while quarantined, never once decommissioned.
    pub fn may_enroll(self) -> bool {
        matches!(
            self,
            DeviceState::Registered | DeviceState::Enrolled | DeviceState::Active
        )
    }

    /// Whether a device in this state may renew with its operational
    /// certificate: it must have one, and not be quarantined.
    pub fn may_reenroll(self) -> bool {
        matches!(self, DeviceState::Enrolled | DeviceState::Active)
    }

    /// Whether a device in this state may open a session at a gateway
    /// (quarantined devices keep the control plane).
    pub fn may_connect(self) -> bool {
        matches!(
            self,
            DeviceState::Enrolled | DeviceState::Active | DeviceState::Quarantined
        )
    }

    /// The states satisfying `rule`, in lifecycle order (for the store's
    /// in-transaction re-check).
    pub fn all_where(rule: fn(DeviceState) -> bool) -> Vec<DeviceState> {
        Self::ALL.into_iter().filter(|s| rule(*s)).collect()
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceState::*;

    #[test]
    fn follows_the_lifecycle_forward() {
        assert_eq!(Registered.transition(Enrolled), Ok(Enrolled));
        assert_eq!(Enrolled.transition(Active), Ok(Active));
        assert_eq!(Active.transition(Quarantined), Ok(Quarantined));
        assert_eq!(Quarantined.transition(Active), Ok(Active));
        assert_eq!(Quarantined.transition(Decommissioned), Ok(Decommissioned));
    }

    #[test]
    fn who_may_enrol_renew_and_connect() {
        use super::DeviceState;
        assert_eq!(
            DeviceState::all_where(DeviceState::may_enroll),
            [Registered, Enrolled, Active]
        );
        assert_eq!(
            DeviceState::all_where(DeviceState::may_reenroll),
            [Enrolled, Active]
        );
        assert_eq!(
            DeviceState::all_where(DeviceState::may_connect),
            [Enrolled, Active, Quarantined]
        );
    }

    #[test]
    fn decommissioned_is_final() {
        for to in super::DeviceState::ALL {
            assert!(Decommissioned.transition(to).is_err());
        }
    }

    #[test]
    fn refuses_skipping_enrolment() {
        assert!(Registered.transition(Active).is_err());
        assert!(Registered.transition(Quarantined).is_err());
        assert!(Active.transition(Registered).is_err());
    }
}
