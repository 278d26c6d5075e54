//! What the nodes of a cluster tell each other (through PostgreSQL
//! `NOTIFY`): the wire form of the events another node must act on. A payload
//! is JSON, `{"node": SENDER, "event": {"event": KIND, …}}`, at most
//! [`MAX_NOTIFY_BYTES`]; anything longer, malformed or of an unknown kind is
//! refused here with a clear error, never a panic.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// PostgreSQL's limit on a notification payload (8 000 bytes, less one).
pub const MAX_NOTIFY_BYTES: usize = 7_999;

/// An event that crosses nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// Close a device's session wherever it is connected (a revoked
    /// certificate names its `serial`, a decommissioned device its `device`).
    CloseSession {
        /// The device.
        device: Option<DeviceId>,
        /// The certificate serial (hex).
        serial: Option<String>,
        /// Why.
        reason: String,
    },
    /// A command was queued for a device another node may hold.
    CommandQueued {
        /// The device.
        device: DeviceId,
    },
    /// A node took a device's session.
    SessionClaimed {
        /// The device.
        device: DeviceId,
        /// The new session's source address.
        address: IpAddr,
        /// The node that took it.
        node: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// A live session was taken over from another address.
    Takeover {
        /// The device.
        device: DeviceId,
        /// The live session's address.
        from: IpAddr,
        /// The new session's address.
        to: IpAddr,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// An alert changed on the sending node.
    AlertChanged {
        /// The alert.
        id: String,
        /// `opened`, `updated`, `acknowledged` or `resolved`.
        change: String,
    },
    /// Sites, placements, edges or model policies changed.
    NetworkChanged,
    /// The sending node published a new CRL.
    CrlPublished {
        /// Its CRL number.
        number: u64,
    },
}

/// A cross-node event and the node that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's node id.
    pub node: String,
    /// The event.
    pub event: ClusterEvent,
}

/// A payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Longer than a notification may be.
    #[error("a cross-node event of {0} bytes is over the limit of {MAX_NOTIFY_BYTES}")]
    TooLong(usize),
    /// Not a cross-node event (bad JSON, an unknown kind, a bad field).
    #[error("not a cross-node event: {0}")]
    Malformed(String),
}

/// Reads a payload another node sent.
pub fn decode(payload: &str) -> Result<Envelope, WireError> {
    if payload.len() > MAX_NOTIFY_BYTES {
        return Err(WireError::TooLong(payload.len()));
    }
    serde_json::from_str(payload).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Writes a payload for the other nodes.
pub fn encode(envelope: &Envelope) -> Result<String, WireError> {
    let text = serde_json::to_string(envelope).map_err(|e| WireError::Malformed(e.to_string()))?;
    if text.len() > MAX_NOTIFY_BYTES {
        return Err(WireError::TooLong(text.len()));
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let env = Envelope {
            node: "a1".into(),
            event: ClusterEvent::SessionClaimed {
                device: DeviceId::parse("cam-1").unwrap(),
                address: "127.0.0.2".parse().unwrap(),
                node: "a1".into(),
                at_ms: 5,
            },
        };
        let text = encode(&env).unwrap();
        assert_eq!(
            text,
            r#"{"node":"a1","event":{"event":"session_claimed","device":"cam-1","address":"127.0.0.2","node":"a1","at_ms":5}}"#
        );
        assert_eq!(decode(&text).unwrap(), env);
        assert_eq!(
            decode(r#"{"node":"b","event":{"event":"network_changed"}}"#)
                .unwrap()
                .event,
            ClusterEvent::NetworkChanged
        );
        for bad in [
            "{not json",
            r#"{"node":"b","event":{"event":"no_such_event"}}"#,
            r#"{"node":"b","event":{"event":"command_queued","device":"../etc"}}"#,
            r#"{"node":"b","event":{"event":"crl_published","number":-1}}"#,
        ] {
            assert!(matches!(decode(bad), Err(WireError::Malformed(_))), "{bad}");
        }
        let long = format!(
            r#"{{"node":"b","event":{{"event":"alert_changed","id":"{}","change":"opened"}}}}"#,
            "x".repeat(MAX_NOTIFY_BYTES)
        );
        assert_eq!(decode(&long), Err(WireError::TooLong(long.len())));
        let too_long = Envelope {
            node: "b".into(),
            event: ClusterEvent::AlertChanged {
                id: "x".repeat(MAX_NOTIFY_BYTES),
                change: "opened".into(),
            },
        };
        assert!(matches!(encode(&too_long), Err(WireError::TooLong(_))));
    }
}
