//! MQTT decisions for the device gateway, with no I/O and no clock of its own:
//!
//! - the per-device topic namespace `palisade/d/{device}/{kind}`;
//! - ACLs bound to the identity in the device's certificate: a device publishes
//!   only its own telemetry, events and command acknowledgements, and subscribes
//!   only to its own commands and OTA topics;
//! - typed limits with documented defaults;
//! - token-bucket rate limiting with time passed in;
//! - with the `session` feature, the gateway's per-connection session state
//!   over rmqtt-codec's MQTT 3.1.1 and 5 packets ([`session`]).

pub mod bridge;
#[cfg(feature = "session")]
pub mod session;

use std::time::Duration;

use palisade_core::DeviceId;

/// Root of every device's namespace.
pub const PREFIX: &str = "palisade/d/";
/// Longest topic name or filter accepted.
pub const MAX_TOPIC_LEN: usize = 256;

/// The topics of a device's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicKind {
    /// Device → server: periodic telemetry.
    Telemetry,
    /// Device → server: events.
    Events,
    /// Device → server: command acknowledgements.
    Acks,
    /// Server → device: commands.
    Commands,
    /// Server → device: update notices.
    Ota,
}

impl TopicKind {
    /// The last topic level.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Telemetry => "telemetry",
            TopicKind::Events => "events",
            TopicKind::Acks => "acks",
            TopicKind::Commands => "commands",
            TopicKind::Ota => "ota",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            TopicKind::Telemetry,
            TopicKind::Events,
            TopicKind::Acks,
            TopicKind::Commands,
            TopicKind::Ota,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether the device sends on this topic (otherwise it receives on it).
    pub fn device_publishes(self) -> bool {
        matches!(
            self,
            TopicKind::Telemetry | TopicKind::Events | TopicKind::Acks
        )
    }
}

/// A device's topic.
pub fn device_topic(device: &DeviceId, kind: TopicKind) -> String {
    format!("{PREFIX}{device}/{}", kind.as_str())
}

/// Why an ACL check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Empty, too long, or containing NUL.
    #[error("malformed topic")]
    Malformed,
    /// Wildcards in a PUBLISH topic name.
    #[error("wildcards are not allowed in a topic name")]
    WildcardInTopic,
    /// Another device's namespace, or a filter that reaches beyond the device's own.
    #[error("outside the device's own namespace")]
    OtherNamespace,
    /// Its own namespace, but not a topic it may use this way.
    #[error("not a topic the device may use this way")]
    NotPermitted,
}

impl Denial {
    /// Short name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Denial::Malformed => "malformed_topic",
            Denial::WildcardInTopic => "wildcard_in_topic",
            Denial::OtherNamespace => "other_namespace",
            Denial::NotPermitted => "not_permitted",
        }
    }
}

fn well_formed(t: &str) -> Result<(), Denial> {
    if t.is_empty() || t.len() > MAX_TOPIC_LEN || t.contains('\0') {
        return Err(Denial::Malformed);
    }
    Ok(())
}

fn own_rest<'a>(device: &DeviceId, t: &'a str) -> Result<&'a str, Denial> {
    t.strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix(device.as_str()))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(Denial::OtherNamespace)
}

/// May `device` publish on `topic`? Only its own telemetry, events and acks.
pub fn check_publish(device: &DeviceId, topic: &str) -> Result<TopicKind, Denial> {
    well_formed(topic)?;
    if topic.contains(['+', '#']) {
        return Err(Denial::WildcardInTopic);
    }
    let rest = own_rest(device, topic)?;
    match TopicKind::parse(rest) {
        Some(k) if k.device_publishes() => Ok(k),
        _ => Err(Denial::NotPermitted),
    }
}

/// What a granted subscription covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// One topic.
    Topic(TopicKind),
    /// The device's whole own namespace (`…/{device}/#` or `…/{device}/+`).
    OwnNamespace,
}

/// May `device` subscribe to `filter`? Its own commands or OTA topic, or a
/// wildcard that cannot reach beyond its own namespace.
pub fn check_subscribe(device: &DeviceId, filter: &str) -> Result<Grant, Denial> {
    well_formed(filter)?;
    let rest = own_rest(device, filter)?;
    match rest {
        "#" | "+" => Ok(Grant::OwnNamespace),
        _ if rest.contains(['+', '#']) => Err(Denial::OtherNamespace),
        _ => match TopicKind::parse(rest) {
            Some(k) if !k.device_publishes() => Ok(Grant::Topic(k)),
            _ => Err(Denial::NotPermitted),
        },
    }
}

/// Limits on one device connection. Defaults suit a sensor-class device.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest packet accepted or sent (bytes). Default 64 KiB.
    pub max_packet_bytes: u32,
    /// QoS 1 messages in flight to the device. Default 32.
    pub max_inflight: u16,
    /// Messages queued for an offline persistent session. Default 1000.
    pub max_queued: usize,
    /// Sustained publish rate (messages per second). Default 100.
    pub messages_per_sec: u32,
    /// Sustained publish volume (bytes per second). Default 256 KiB.
    pub bytes_per_sec: u32,
    /// Time between the TLS handshake and CONNECT. Default 10 s.
    pub connect_timeout: Duration,
    /// Longest keepalive a client may ask for (seconds); 0 is raised to it. Default 300.
    pub max_keepalive_secs: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: 64 * 1024,
            max_inflight: 32,
            max_queued: 1000,
            messages_per_sec: 100,
            bytes_per_sec: 256 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_keepalive_secs: 300,
        }
    }
}

impl Limits {
    /// The keepalive actually enforced for a client's request (MQTT: 1.5 × keepalive).
    pub fn keepalive_deadline(&self, requested_secs: u16) -> Duration {
        let k = if requested_secs == 0 {
            self.max_keepalive_secs
        } else {
            requested_secs.min(self.max_keepalive_secs)
        };
        Duration::from_millis(u64::from(k) * 1500)
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(rate: u32, burst: u32, now_ms: i64) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last_ms: now_ms,
        }
    }

    /// Takes `cost` tokens at `now_ms` if there are enough.
    pub fn take(&mut self, cost: u32, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let c = f64::from(cost);
        if self.tokens >= c {
            self.tokens -= c;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn a_device_publishes_only_on_its_own_upward_topics() {
        let me = d("cam-1");
        assert_eq!(
            check_publish(&me, "palisade/d/cam-1/telemetry"),
            Ok(TopicKind::Telemetry)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-1/acks"),
            Ok(TopicKind::Acks)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-2/telemetry"),
            Err(Denial::OtherNamespace)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-10/telemetry"),
            Err(Denial::OtherNamespace)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-1/commands"),
            Err(Denial::NotPermitted)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-1/telemetry/x"),
            Err(Denial::NotPermitted)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/+/telemetry"),
            Err(Denial::WildcardInTopic)
        );
        assert_eq!(
            check_publish(&me, "palisade/d/cam-1/#"),
            Err(Denial::WildcardInTopic)
        );
        assert_eq!(check_publish(&me, ""), Err(Denial::Malformed));
        assert_eq!(check_publish(&me, &"a".repeat(300)), Err(Denial::Malformed));
    }

    #[test]
    fn subscriptions_cannot_reach_other_devices() {
        let me = d("cam-1");
        assert_eq!(
            check_subscribe(&me, "palisade/d/cam-1/commands"),
            Ok(Grant::Topic(TopicKind::Commands))
        );
        assert_eq!(
            check_subscribe(&me, "palisade/d/cam-1/#"),
            Ok(Grant::OwnNamespace)
        );
        for bad in [
            "#",
            "+/#",
            "palisade/#",
            "palisade/d/#",
            "palisade/d/+/commands",
            "palisade/d/cam-2/commands",
            "palisade/d/cam-1/+/x",
            "$SYS/#",
        ] {
            assert!(check_subscribe(&me, bad).is_err(), "{bad} was granted");
        }
        assert_eq!(
            check_subscribe(&me, "palisade/d/cam-1/telemetry"),
            Err(Denial::NotPermitted)
        );
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(10, 10, 0);
        assert_eq!((0..20).filter(|_| b.take(1, 0)).count(), 10);
        assert!(!b.take(1, 50));
        assert!(b.take(1, 100));
        assert!(b.take(5, 1000));
        // A clock that steps back does not mint tokens.
        let before = b.clone();
        let _ = b.take(0, 0);
        assert!(b.tokens <= before.tokens + f64::EPSILON);
    }

    #[test]
    fn keepalive_is_capped_and_zero_means_the_cap() {
        let l = Limits::default();
        assert_eq!(l.keepalive_deadline(60), Duration::from_secs(90));
        assert_eq!(l.keepalive_deadline(0), Duration::from_secs(450));
        assert_eq!(l.keepalive_deadline(60000), Duration::from_secs(450));
    }
}
