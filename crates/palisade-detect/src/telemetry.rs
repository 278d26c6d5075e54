//! The device security metrics an agent reports in its telemetry (at least what
//! AWS IoT Device Defender's device-side metrics covered), and their bounded
//! decoding on the server. Everything a device says is untrusted: sizes, list
//! lengths and values are checked, and a message that breaks a bound is refused
//! whole with the reason.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Largest telemetry message accepted.
pub const MAX_TELEMETRY_BYTES: usize = 64 * 1024;
/// Most listening sockets one message may list.
pub const MAX_LISTENING: usize = 512;
/// Most remote endpoints one message may list.
pub const MAX_REMOTES: usize = 256;

/// One telemetry message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Seconds since the agent started.
    #[serde(default)]
    pub uptime_s: u64,
    /// The firmware version the device says it runs.
    #[serde(default)]
    pub firmware: Option<String>,
    /// Security metrics (absent from agents that do not collect them).
    #[serde(default)]
    pub metrics: Option<SecurityMetrics>,
}

/// A listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Listener {
    /// `6` TCP or `17` UDP.
    pub protocol: u8,
    /// The port.
    pub port: u16,
}

/// A remote endpoint of an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Remote {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// `6` TCP or `17` UDP.
    pub protocol: u8,
}

/// What the device measured about itself. Counters are cumulative since boot
/// (or since the agent started, for `failed_logins`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityMetrics {
    /// Bytes received on all interfaces but loopback.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes sent.
    #[serde(default)]
    pub bytes_out: u64,
    /// Packets received.
    #[serde(default)]
    pub packets_in: u64,
    /// Packets sent.
    #[serde(default)]
    pub packets_out: u64,
    /// Listening TCP and UDP sockets (not loopback-only ones).
    #[serde(default)]
    pub listening: Vec<Listener>,
    /// Established TCP connections.
    #[serde(default)]
    pub established: u32,
    /// Remote endpoints of established connections.
    #[serde(default)]
    pub remotes: Vec<Remote>,
    /// Failed local logins seen in the device's auth log, if it has one.
    #[serde(default)]
    pub failed_logins: Option<u64>,
    /// SHA-256 (hex) of the running firmware image, if the agent knows it.
    #[serde(default)]
    pub firmware_sha256: Option<String>,
    /// Running processes.
    #[serde(default)]
    pub processes: u32,
}

/// Why a telemetry message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TelemetryError {
    /// Larger than [`MAX_TELEMETRY_BYTES`].
    #[error("telemetry message of {0} bytes is over the {MAX_TELEMETRY_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not the expected JSON.
    #[error("telemetry message is not valid: {0}")]
    Malformed(String),
    /// A list longer than its bound.
    #[error("telemetry lists {count} {what}, more than the {max} accepted")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// How many it had.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A value no real device can have.
    #[error("telemetry value {what} = {value} is not plausible")]
    Absurd {
        /// Which value.
        what: &'static str,
        /// Its text.
        value: String,
    },
}

/// Decodes and checks one telemetry payload.
pub fn decode(payload: &[u8]) -> Result<Telemetry, TelemetryError> {
    if payload.len() > MAX_TELEMETRY_BYTES {
        return Err(TelemetryError::TooLarge(payload.len()));
    }
    let t: Telemetry =
        serde_json::from_slice(payload).map_err(|e| TelemetryError::Malformed(e.to_string()))?;
    if t.firmware.as_ref().is_some_and(|f| f.len() > 64) {
        return Err(TelemetryError::Absurd {
            what: "firmware",
            value: "(longer than 64 bytes)".into(),
        });
    }
    if let Some(m) = &t.metrics {
        m.check()?;
    }
    Ok(t)
}

/// No counter a device reports in one boot reaches this (2^53: also the
/// largest integer every JSON reader keeps exactly).
const COUNTER_MAX: u64 = 1 << 53;

impl SecurityMetrics {
    /// Checks bounds and plausibility.
    pub fn check(&self) -> Result<(), TelemetryError> {
        let many = |what, count, max| {
            if count > max {
                Err(TelemetryError::TooMany { what, count, max })
            } else {
                Ok(())
            }
        };
        many("listening sockets", self.listening.len(), MAX_LISTENING)?;
        many("remote endpoints", self.remotes.len(), MAX_REMOTES)?;
        let absurd = |what: &'static str, v: u64, max: u64| {
            if v > max {
                Err(TelemetryError::Absurd {
                    what,
                    value: v.to_string(),
                })
            } else {
                Ok(())
            }
        };
        absurd("bytes_in", self.bytes_in, COUNTER_MAX)?;
        absurd("bytes_out", self.bytes_out, COUNTER_MAX)?;
        absurd("packets_in", self.packets_in, COUNTER_MAX)?;
        absurd("packets_out", self.packets_out, COUNTER_MAX)?;
        absurd(
            "failed_logins",
            self.failed_logins.unwrap_or(0),
            COUNTER_MAX,
        )?;
        // Linux's PID_MAX_LIMIT.
        absurd("processes", u64::from(self.processes), 4_194_304)?;
        // One address has 64k ports per peer; a device with more than a
        // million established connections is lying.
        absurd("established", u64::from(self.established), 1_000_000)?;
        for l in &self.listening {
            if !matches!(l.protocol, 6 | 17) {
                return Err(TelemetryError::Absurd {
                    what: "listening protocol",
                    value: l.protocol.to_string(),
                });
            }
        }
        if let Some(h) = &self.firmware_sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(TelemetryError::Absurd {
                what: "firmware_sha256",
                value: h.chars().take(80).collect(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_message_decodes() {
        let t = decode(
            br#"{"uptime_s":5,"firmware":"1.2.0","metrics":{"bytes_in":10,"bytes_out":20,
            "packets_in":1,"packets_out":2,"listening":[{"protocol":6,"port":22}],"established":1,
            "remotes":[{"address":"192.0.2.1","port":8883,"protocol":6}],"failed_logins":3,
            "firmware_sha256":"00000000000000000000000000000000000000000000000000000000000000ff",
            "processes":40}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = t.metrics.unwrap_or_default();
        assert_eq!(
            m.listening,
            vec![Listener {
                protocol: 6,
                port: 22
            }]
        );
        assert_eq!(m.failed_logins, Some(3));
        // Older agents send an empty object.
        assert!(decode(br#"{"uptime_s":1,"firmware":"x","metrics":{}}"#).is_ok());
    }

    #[test]
    fn bad_messages_are_refused_with_the_reason() {
        let big = vec![b' '; MAX_TELEMETRY_BYTES + 1];
        assert!(matches!(decode(&big), Err(TelemetryError::TooLarge(_))));
        assert!(matches!(decode(b"{"), Err(TelemetryError::Malformed(_))));
        let many = format!(
            r#"{{"metrics":{{"listening":[{}]}}}}"#,
            vec![r#"{"protocol":6,"port":1}"#; MAX_LISTENING + 1].join(",")
        );
        assert!(matches!(
            decode(many.as_bytes()),
            Err(TelemetryError::TooMany { .. })
        ));
        for bad in [
            r#"{"metrics":{"processes":99999999}}"#,
            r#"{"metrics":{"bytes_out":18446744073709551615}}"#,
            r#"{"metrics":{"firmware_sha256":"zz"}}"#,
            r#"{"metrics":{"listening":[{"protocol":1,"port":1}]}}"#,
        ] {
            assert!(
                matches!(decode(bad.as_bytes()), Err(TelemetryError::Absurd { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            decode(br#"{"metrics":{"surprise":1}}"#),
            Err(TelemetryError::Malformed(_))
        ));
    }
}
