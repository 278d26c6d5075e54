//! The control plane's event bus: typed events that one part publishes and the
//! others follow, so that a lower service never calls an upper one. The MQTT
//! gateway publishes what devices send and how their sessions go, EST and
//! attestation publish refusals; presence, commands, attestation and monitoring
//! subscribe.
//!
//! [`EventBus`] is the seam for a second implementation that carries the same
//! events between nodes (PostgreSQL `LISTEN/NOTIFY` is planned): every event is
//! plain owned data with a serde form, and a subscriber receives through a
//! [`Subscription`] whatever implementation fed it. [`LocalBus`] is the
//! in-process one (a tokio broadcast channel): publishing never blocks, and a
//! subscriber that falls behind is told how many events it missed, so it can
//! catch up from the store where that matters (queued commands).

use std::net::IpAddr;

use bytes::Bytes;
use palisade_core::DeviceId;
use palisade_core::cluster::ClusterEvent;
use palisade_detect::detect::AuthPlace;
use palisade_mqtt::TopicKind;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// A message a device sent on one of its topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// The device.
    pub device: DeviceId,
    /// Which of its topics.
    pub kind: TopicKind,
    /// The payload.
    pub payload: Bytes,
    /// When it arrived, Unix ms.
    pub at_ms: i64,
}

/// Something that happened, told to whoever follows the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A device published on one of its topics (or its will was published).
    Message(DeviceEvent),
    /// A device subscribed to its commands: its queued commands and, with a
    /// TPM, an attestation challenge follow.
    CommandsSubscribed {
        /// The device.
        device: DeviceId,
    },
    /// A device acknowledged (MQTT PUBACK) the message that carried one of
    /// its commands.
    CommandDelivered {
        /// The device.
        device: DeviceId,
        /// The command.
        id: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Close a device's live session wherever it is connected: a revoked
    /// certificate names its `serial`, a decommissioned device its `device`.
    CloseSession {
        /// The device.
        device: Option<DeviceId>,
        /// The certificate serial (hex).
        serial: Option<String>,
        /// Why (`certificate revoked`, `device decommissioned`).
        reason: String,
    },
    /// A command was queued for a device that is not connected to the node
    /// that queued it: the node that holds its session delivers it.
    CommandQueued {
        /// The device.
        device: DeviceId,
    },
    /// A node's gateway took a device's session: a node holding an older
    /// session of the device closes it (one session per device across the
    /// cluster) and, if it came from another address, reports a
    /// [`Event::Takeover`].
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
    /// A new session of a device took over one still live from another
    /// address (on this node or another): what the cloned-identity detector
    /// counts, on the one node that runs it.
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
    /// An alert was opened, updated, acknowledged or resolved on another
    /// node: this node refreshes its view of open alerts and streams it to its
    /// own subscribers. Only other nodes hear it.
    AlertChanged {
        /// The alert.
        id: String,
        /// `opened`, `updated`, `acknowledged` or `resolved`.
        change: String,
    },
    /// Sites, placements, edges or model policies changed on another node:
    /// edges long-polling this node get their new bundles. Only other nodes
    /// hear it.
    NetworkChanged,
    /// Another node published CRL `number` (the `crl-signing` lead): this
    /// node serves it and rebuilds its gateway's verifier with it. Only other
    /// nodes hear it.
    CrlPublished {
        /// The CRL number.
        number: u64,
    },
    /// A device's session came up at a gateway.
    SessionUp {
        /// The device.
        device: DeviceId,
        /// Its source address.
        address: IpAddr,
        /// The address of its previous session, if it had one.
        previous: Option<IpAddr>,
        /// The address of a session still live when this one came up (the
        /// new one took it over).
        takeover: Option<IpAddr>,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// A device's session ended.
    SessionDown {
        /// The device.
        device: DeviceId,
        /// Why (`disconnect`, `connection lost`, ...).
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// A credential was refused (a failed login).
    CredentialRefused {
        /// The device it claimed to be, if known.
        device: Option<String>,
        /// Where it came from, if known.
        peer: Option<IpAddr>,
        /// Where it was refused.
        place: AuthPlace,
        /// Why.
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// An enrolment repeated one already used (a copied birth identity or a
    /// replayed request).
    EnrolmentReplayed {
        /// The device.
        device: String,
        /// What was replayed.
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// A device failed attestation (its status and audit entry are recorded).
    AttestationFailed {
        /// The device.
        device: DeviceId,
        /// Why.
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
}

impl From<ClusterEvent> for Event {
    fn from(e: ClusterEvent) -> Self {
        match e {
            ClusterEvent::CloseSession {
                device,
                serial,
                reason,
            } => Event::CloseSession {
                device,
                serial,
                reason,
            },
            ClusterEvent::CommandQueued { device } => Event::CommandQueued { device },
            ClusterEvent::SessionClaimed {
                device,
                address,
                node,
                at_ms,
            } => Event::SessionClaimed {
                device,
                address,
                node,
                at_ms,
            },
            ClusterEvent::Takeover {
                device,
                from,
                to,
                at_ms,
            } => Event::Takeover {
                device,
                from,
                to,
                at_ms,
            },
            ClusterEvent::AlertChanged { id, change } => Event::AlertChanged { id, change },
            ClusterEvent::NetworkChanged => Event::NetworkChanged,
            ClusterEvent::CrlPublished { number } => Event::CrlPublished { number },
        }
    }
}

/// Events a subscriber missed because it fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed(pub u64);

/// Carries events from publishers to subscribers.
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Tells every current subscriber; never blocks.
    fn publish(&self, event: Event);
    /// A subscription to every event published from now on.
    fn subscribe(&self) -> Subscription;
}

impl Event {
    /// Whether the other nodes must see it (the cluster bus sends these).
    pub fn crosses_nodes(&self) -> bool {
        self.to_cluster().is_some()
    }

    /// Its wire form for the other nodes, if it crosses nodes.
    pub fn to_cluster(&self) -> Option<ClusterEvent> {
        Some(match self.clone() {
            Event::CloseSession {
                device,
                serial,
                reason,
            } => ClusterEvent::CloseSession {
                device,
                serial,
                reason,
            },
            Event::CommandQueued { device } => ClusterEvent::CommandQueued { device },
            Event::SessionClaimed {
                device,
                address,
                node,
                at_ms,
            } => ClusterEvent::SessionClaimed {
                device,
                address,
                node,
                at_ms,
            },
            Event::Takeover {
                device,
                from,
                to,
                at_ms,
            } => ClusterEvent::Takeover {
                device,
                from,
                to,
                at_ms,
            },
            Event::AlertChanged { id, change } => ClusterEvent::AlertChanged { id, change },
            Event::NetworkChanged => ClusterEvent::NetworkChanged,
            Event::CrlPublished { number } => ClusterEvent::CrlPublished { number },
            _ => return None,
        })
    }

    /// Whether only the other nodes hear it (the node that sends it has
    /// already acted); a single node's bus drops it.
    pub fn for_other_nodes_only(&self) -> bool {
        matches!(
            self,
            Event::AlertChanged { .. } | Event::NetworkChanged | Event::CrlPublished { .. }
        )
    }
}

/// One subscriber's view of the bus.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// A subscription fed by `rx` (for bus implementations).
    pub fn new(rx: broadcast::Receiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event, `Err(Missed(n))` after falling `n` events behind, or
    /// `None` once the bus has closed.
    pub async fn recv(&mut self) -> Option<Result<Event, Missed>> {
        match self.rx.recv().await {
            Ok(e) => Some(Ok(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Missed(n))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The in-process bus.
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<Event>,
}

impl LocalBus {
    /// A bus holding at most `capacity` events a slow subscriber has not read.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }
}

impl LocalBus {
    /// Hands an event to this process's subscribers, whatever it is (the
    /// cluster bus delivers other nodes' events with it).
    pub fn deliver(&self, event: Event) {
        // No subscriber is not an error: nobody needed to hear it.
        let _ = self.tx.send(event);
    }
}

impl EventBus for LocalBus {
    fn publish(&self, event: Event) {
        if !event.for_other_nodes_only() {
            self.deliver(event);
        }
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceId {
        DeviceId::parse("dev-1").unwrap()
    }

    fn every_kind() -> Vec<Event> {
        let ip: IpAddr = [127, 0, 0, 1].into();
        vec![
            Event::Message(DeviceEvent {
                device: device(),
                kind: TopicKind::Telemetry,
                payload: Bytes::from_static(b"{\"x\":1}"),
                at_ms: 1,
            }),
            Event::CommandsSubscribed { device: device() },
            Event::CommandDelivered {
                device: device(),
                id: "c-1".into(),
                at_ms: 2,
            },
            Event::CloseSession {
                device: None,
                serial: Some("0a1b".into()),
                reason: "certificate revoked".into(),
            },
            Event::CommandQueued { device: device() },
            Event::AlertChanged {
                id: "a1".into(),
                change: "opened".into(),
            },
            Event::NetworkChanged,
            Event::SessionClaimed {
                device: device(),
                address: ip,
                node: "a1".into(),
                at_ms: 1,
            },
            Event::Takeover {
                device: device(),
                from: ip,
                to: ip,
                at_ms: 1,
            },
            Event::SessionUp {
                device: device(),
                address: ip,
                previous: Some(ip),
                takeover: None,
                at_ms: 2,
            },
            Event::SessionDown {
                device: device(),
                reason: "disconnect".into(),
                at_ms: 3,
            },
            Event::CredentialRefused {
                device: None,
                peer: Some(ip),
                place: AuthPlace::Gateway,
                reason: "tls".into(),
                at_ms: 4,
            },
            Event::EnrolmentReplayed {
                device: "dev-1".into(),
                reason: "token already used".into(),
                at_ms: 5,
            },
            Event::AttestationFailed {
                device: device(),
                reason: "unknown PCR 9".into(),
                at_ms: 6,
            },
        ]
    }

    #[test]
    fn every_event_has_a_wire_form_that_round_trips() {
        for e in every_kind() {
            let text = serde_json::to_string(&e).unwrap();
            let back: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

    #[tokio::test]
    async fn subscribers_each_receive_every_event_in_order() {
        let bus = LocalBus::new(64);
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        for e in every_kind() {
            bus.deliver(e);
        }
        for sub in [&mut a, &mut b] {
            let mut seen = Vec::new();
            for _ in 0..every_kind().len() {
                let e = sub.recv().await.unwrap().unwrap();
                seen.push(serde_json::to_value(e).unwrap()["event"].clone());
            }
            let want: Vec<_> = every_kind()
                .into_iter()
                .map(|e| serde_json::to_value(e).unwrap()["event"].clone())
                .collect();
            assert_eq!(seen, want);
        }
    }

    #[tokio::test]
    async fn what_only_other_nodes_hear_is_not_published_to_this_one() {
        let bus = LocalBus::new(8);
        let mut sub = bus.subscribe();
        bus.publish(Event::NetworkChanged);
        bus.publish(Event::AlertChanged {
            id: "a1".into(),
            change: "opened".into(),
        });
        bus.publish(Event::CommandsSubscribed { device: device() });
        assert!(matches!(
            sub.recv().await,
            Some(Ok(Event::CommandsSubscribed { .. }))
        ));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let bus = LocalBus::new(4);
        let mut slow = bus.subscribe();
        for _ in 0..10 {
            bus.publish(Event::CommandsSubscribed { device: device() });
        }
        assert_eq!(slow.recv().await.unwrap().unwrap_err(), Missed(6));
        assert!(matches!(
            slow.recv().await,
            Some(Ok(Event::CommandsSubscribed { .. }))
        ));
    }
}
