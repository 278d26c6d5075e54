//! Operator roles and what each may do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An operator's role. Ordered by what it may change; `Auditor` reads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including operator tokens and revocation.
    Admin,
    /// Day-to-day fleet work: models, devices, certificates.
    Operator,
    /// Read-only, including the audit log.
    Auditor,
    /// A supplier's build system: uploads releases for the models it owns and
    /// nothing else. The token's operator name is the supplier's name.
    Supplier,
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use admin, operator, auditor or supplier")]
pub struct RoleError(pub String);

impl Role {
    /// All roles, for help texts.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Supplier];

    /// The role's name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Supplier => "supplier",
        }
    }

    /// Whether a holder of `self` may act where `needed` is required.
    ///
    /// Admin implies operator; auditor is separate (read-only access everywhere,
    /// write access nowhere). A supplier may only upload releases (and the API
    /// refuses it every other path, reads included).
    pub fn permits(self, needed: Access) -> bool {
        match needed {
            Access::Read => self != Role::Supplier,
            Access::Write => matches!(self, Role::Admin | Role::Operator),
            Access::Admin => self == Role::Admin,
            Access::Release => matches!(self, Role::Admin | Role::Operator | Role::Supplier),
        }
    }
}

/// The kind of access an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read inventory, certificates, the audit log, metrics.
    Read,
    /// Change models, devices and certificates.
    Write,
    /// Manage operator tokens.
    Admin,
    /// Upload firmware releases.
    Release,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, RoleError> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "supplier" => Ok(Role::Supplier),
            other => Err(RoleError(other.chars().take(40).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditor_reads_but_never_writes() {
        assert!(Role::Auditor.permits(Access::Read));
        assert!(!Role::Auditor.permits(Access::Write));
        assert!(!Role::Auditor.permits(Access::Admin));
        assert!(Role::Operator.permits(Access::Write));
        assert!(!Role::Operator.permits(Access::Admin));
        assert!(Role::Admin.permits(Access::Admin));
    }
}
