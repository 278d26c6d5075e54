//! Identifiers that reach certificate subjects, SANs, topics and file names.
//!
//! Each is a newtype that only its parser builds, so no code behind the boundary can
//! hold a name that could inject into an X.509 subject (`,`, `=`, `+`, quotes), a
//! topic (`/`, `+`, `#`) or a path (`..`, `/`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What kind of name.
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// What kind of name.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside `[a-z0-9._-]` or starts with a non-alphanumeric.
    #[error(
        "{kind} {shown:?} is not allowed: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    BadCharacter {
        /// What kind of name.
        kind: &'static str,
        /// The name, escaped for display.
        shown: String,
    },
}

fn check(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    let bytes = s.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !first_ok || !rest_ok || s.contains("..") {
        let shown: String = s.chars().take(80).collect();
        return Err(IdError::BadCharacter { kind, shown });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;

            /// Parses and checks a name.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s, Self::MAX_LEN)?;
                Ok(Self(s.to_owned()))
            }

            /// The checked name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A device's identity: the certificate CN and the `{device}` of its topics.
    DeviceId,
    "device id",
    64
);
name_type!(
    /// A device model: selects certificate profile and policy.
    ModelId,
    "model id",
    64
);
name_type!(
    /// A staged rollout (campaign).
    RolloutName,
    "rollout name",
    64
);
name_type!(
    /// A site (a place with an edge gateway and network segments).
    SiteName,
    "site name",
    64
);
name_type!(
    /// A device tag (rollout selectors).
    Tag,
    "tag",
    64
);
name_type!(
    /// A supplier (manufacturer) registered with its manufacturer CA.
    SupplierName,
    "supplier name",
    64
);
name_type!(
    /// The name of an operator (the holder of an API token).
    OperatorName,
    "operator name",
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["sensor-0001", "a", "cam.lobby_2", "0abc"] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_could_inject_into_subjects_topics_or_paths() {
        for bad in [
            "",
            "Dev",
            "dev,CN=admin",
            "dev/+",
            "dev#",
            "a..b",
            "-lead",
            ".hidden",
            "dev\nx",
            "dev=1",
            "dév",
            "a b",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = "a".repeat(65);
        assert!(matches!(
            DeviceId::parse(&long),
            Err(IdError::TooLong { len: 65, .. })
        ));
    }

    #[test]
    fn deserialising_runs_the_parser() {
        let r: Result<DeviceId, _> = serde_json::from_str("\"x,O=evil\"");
        assert!(r.is_err());
    }
}
