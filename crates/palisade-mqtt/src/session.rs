//! One device's MQTT session at the gateway, as pure code: MQTT 3.1.1 and 5
//! packets (rmqtt-codec's types) translated into one protocol-neutral view, the
//! CONNECT checks (identity from the certificate, the will's topic), and the
//! session state — rate limits, QoS 1 in flight, packet ids, whether the device
//! has subscribed — with every decision returned as a [`Reaction`] for the
//! gateway's I/O loop to carry out. Time is passed in; nothing here reads a
//! socket or a clock, so the gateway's fuzz target drives this very code.
//!
//! MQTT 3.1.1 cannot say "not authorised" for a PUBLISH, so a refused publish
//! closes a 3.1.1 connection (MQTT-3.3.5-2); MQTT 5 gets PUBACK 0x87. QoS 2 is
//! refused; retained messages are kept by the gateway, never fanned out.

use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;
use palisade_core::DeviceId;
use rmqtt_codec::types::QoS;
use rmqtt_codec::version::ProtocolVersion;
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};

use crate::{Denial, Grant, Limits, TokenBucket, TopicKind, check_publish, check_subscribe};

/// The protocol version a client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 3.1.1.
    V3,
    /// MQTT 5.
    V5,
}

impl Proto {
    /// The protocol the version probe found, if it is one we speak.
    pub fn from_probe(p: &MqttPacket) -> Option<Self> {
        match p {
            MqttPacket::Version(v) => Self::from_version(*v),
            _ => None,
        }
    }

    /// The protocol of a probed version, if it is one we speak.
    pub fn from_version(v: ProtocolVersion) -> Option<Self> {
        match v {
            ProtocolVersion::MQTT3 => Some(Proto::V3),
            ProtocolVersion::MQTT5 => Some(Proto::V5),
        }
    }

    /// The codec for this protocol, bounded to `max_packet_bytes`.
    pub fn codec(self, max_packet_bytes: u32) -> MqttCodec {
        match self {
            Proto::V3 => MqttCodec::V3(v3::Codec::new(max_packet_bytes)),
            Proto::V5 => MqttCodec::V5(v5::Codec::new(max_packet_bytes, max_packet_bytes)),
        }
    }
}

/// A protocol-neutral view of what a client sent.
#[derive(Debug)]
pub enum In {
    /// CONNECT.
    Connect(Connect),
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: ByteString,
        /// Payload.
        payload: Bytes,
        /// QoS.
        qos: QoS,
        /// Retain flag.
        retain: bool,
        /// Packet id (QoS 1 and 2).
        packet_id: Option<NonZeroU16>,
    },
    /// PUBACK.
    PubAck {
        /// Packet id of the acknowledged PUBLISH.
        packet_id: NonZeroU16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Filters and requested QoS.
        filters: Vec<(ByteString, QoS)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// How many filters.
        count: usize,
    },
    /// PINGREQ.
    Ping,
    /// DISCONNECT.
    Disconnect,
    /// Anything a client may not send, or that we do not support.
    Unexpected,
}

/// What a CONNECT asked for.
#[derive(Debug)]
pub struct Connect {
    /// Client id.
    pub client_id: ByteString,
    /// Keep-alive seconds.
    pub keep_alive: u16,
    /// Will topic and message.
    pub will: Option<(ByteString, Bytes)>,
    /// Whether the session is clean (3.1.1 clean session; 5: clean start or no
    /// session expiry).
    pub clean: bool,
}

/// Translates a decoded packet into the protocol-neutral view.
pub fn incoming(p: MqttPacket) -> In {
    match p {
        MqttPacket::V3(p) => match p {
            v3::Packet::Connect(c) => In::Connect(Connect {
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                will: c.last_will.map(|w| (w.topic, w.message)),
                clean: c.clean_session,
            }),
            v3::Packet::Publish(p) => In::Publish {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                packet_id: p.packet_id,
            },
            v3::Packet::PublishAck { packet_id } => In::PubAck { packet_id },
            v3::Packet::Subscribe {
                packet_id,
                topic_filters,
            } => In::Subscribe {
                packet_id,
                filters: topic_filters,
            },
            v3::Packet::Unsubscribe {
                packet_id,
                topic_filters,
            } => In::Unsubscribe {
                packet_id,
                count: topic_filters.len(),
            },
            v3::Packet::PingRequest => In::Ping,
            v3::Packet::Disconnect => In::Disconnect,
            _ => In::Unexpected,
        },
        MqttPacket::V5(p) => match p {
            v5::Packet::Connect(c) => In::Connect(Connect {
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                will: c.last_will.map(|w| (w.topic, w.message)),
                clean: c.clean_start || c.session_expiry_interval_secs == 0,
            }),
            v5::Packet::Publish(p) => In::Publish {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                packet_id: p.packet_id,
            },
            v5::Packet::PublishAck(a) => In::PubAck {
                packet_id: a.packet_id,
            },
            v5::Packet::Subscribe(s) => In::Subscribe {
                packet_id: s.packet_id,
                filters: s
                    .topic_filters
                    .into_iter()
                    .map(|(t, o)| (t, o.qos))
                    .collect(),
            },
            v5::Packet::Unsubscribe(u) => In::Unsubscribe {
                packet_id: u.packet_id,
                count: u.topic_filters.len(),
            },
            v5::Packet::PingRequest => In::Ping,
            v5::Packet::Disconnect(_) => In::Disconnect,
            _ => In::Unexpected,
        },
        MqttPacket::Version(_) => In::Unexpected,
    }
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// The client id is not the identity in the certificate.
    ClientId,
    /// Not allowed (a will outside the device's topics, a refused credential).
    NotAuthorized,
}

/// A CONNECT that passed the checks.
#[derive(Debug)]
pub struct Accepted {
    /// The device: its certificate's identity, which the client id equals.
    pub device: DeviceId,
    /// The will, on one of the device's own upward topics.
    pub will: Option<(TopicKind, Bytes)>,
}

/// A refused CONNECT: the CONNACK's reason, and what to count and log.
#[derive(Debug)]
pub struct Refused {
    /// The CONNACK's reason.
    pub refusal: ConnectRefusal,
    /// The device, if the identity was established.
    pub device: Option<DeviceId>,
    /// A refused will: its topic and why.
    pub will_denied: Option<(String, Denial)>,
}

/// Checks a CONNECT against the certificate's identity (`cert_cn`): the client
/// id must equal it, and a will may only speak on the device's own upward
/// topics.
pub fn check_connect(cert_cn: Option<&str>, c: &Connect) -> Result<Accepted, Refused> {
    let device = match cert_cn.map(DeviceId::parse) {
        Some(Ok(d)) if d.as_str() == &*c.client_id => d,
        _ => {
            return Err(Refused {
                refusal: ConnectRefusal::ClientId,
                device: None,
                will_denied: None,
            });
        }
    };
    let will = match &c.will {
        Some((topic, payload)) => match check_publish(&device, topic) {
            Ok(kind) => Some((kind, payload.clone())),
            Err(denial) => {
                return Err(Refused {
                    refusal: ConnectRefusal::NotAuthorized,
                    device: Some(device),
                    will_denied: Some((topic.to_string(), denial)),
                });
            }
        },
        None => None,
    };
    Ok(Accepted { device, will })
}

/// The CONNACK: accepted (with `session_present`), or refused.
pub fn connack(proto: Proto, refusal: Option<ConnectRefusal>, session_present: bool) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
            session_present,
            return_code: match refusal {
                None => v3::ConnectAckReason::ConnectionAccepted,
                Some(ConnectRefusal::ClientId) => v3::ConnectAckReason::IdentifierRejected,
                Some(ConnectRefusal::NotAuthorized) => v3::ConnectAckReason::NotAuthorized,
            },
        })),
        Proto::V5 => {
            let mut ack = v5::ConnectAck {
                session_present,
                reason_code: match refusal {
                    None => v5::ConnectAckReason::Success,
                    Some(ConnectRefusal::ClientId) => {
                        v5::ConnectAckReason::ClientIdentifierNotValid
                    }
                    Some(ConnectRefusal::NotAuthorized) => v5::ConnectAckReason::NotAuthorized,
                },
                ..v5::ConnectAck::default()
            };
            ack.max_qos = QoS::AtLeastOnce;
            ack.retain_available = false;
            ack.shared_subscription_available = false;
            ack.subscription_identifiers_available = false;
            MqttPacket::V5(v5::Packet::ConnectAck(Box::new(ack)))
        }
    }
}

fn puback(proto: Proto, packet_id: NonZeroU16, denied: bool) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::PublishAck { packet_id }),
        Proto::V5 => MqttPacket::V5(v5::Packet::PublishAck(v5::PublishAck {
            packet_id,
            reason_code: if denied {
                v5::PublishAckReason::NotAuthorized
            } else {
                v5::PublishAckReason::Success
            },
            properties: Default::default(),
            reason_string: None,
        })),
    }
}

fn suback(proto: Proto, packet_id: NonZeroU16, grants: &[Option<QoS>]) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::SubscribeAck {
            packet_id,
            status: grants
                .iter()
                .map(|g| match g {
                    Some(q) => v3::SubscribeReturnCode::Success(*q),
                    None => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        }),
        Proto::V5 => MqttPacket::V5(v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: grants
                .iter()
                .map(|g| match g {
                    Some(QoS::AtMostOnce) => v5::SubscribeAckReason::GrantedQos0,
                    Some(_) => v5::SubscribeAckReason::GrantedQos1,
                    None => v5::SubscribeAckReason::NotAuthorized,
                })
                .collect(),
        })),
    }
}

fn unsuback(proto: Proto, packet_id: NonZeroU16, count: usize) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::UnsubscribeAck { packet_id }),
        Proto::V5 => MqttPacket::V5(v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Default::default(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::Success; count],
        })),
    }
}

fn pingresp(proto: Proto) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::PingResponse),
        Proto::V5 => MqttPacket::V5(v5::Packet::PingResponse),
    }
}

/// The server's DISCONNECT with `reason` (MQTT 5); MQTT 3.1.1 has none: the
/// server just closes.
pub fn disconnect(proto: Proto, reason: v5::DisconnectReasonCode) -> Option<MqttPacket> {
    match proto {
        Proto::V3 => None,
        Proto::V5 => Some(MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
            reason_code: reason,
            ..v5::Disconnect::default()
        }))),
    }
}

/// Why the gateway closes a session (also the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT (a clean close: no will).
    Disconnect,
    /// Over the message or byte rate.
    RateLimited,
    /// QoS 2 is not supported.
    Qos2,
    /// A refused PUBLISH on MQTT 3.1.1, which cannot say so otherwise.
    AclDenied,
    /// A packet a client may not send here.
    ProtocolError,
}

impl Close {
    /// The metric label of a refusal (`None` for a clean DISCONNECT or an ACL
    /// refusal, which is counted as such).
    pub fn refusal_label(self) -> Option<&'static str> {
        match self {
            Close::RateLimited => Some("rate_limited"),
            Close::Qos2 => Some("qos2"),
            Close::ProtocolError => Some("protocol_error"),
            Close::Disconnect | Close::AclDenied => None,
        }
    }
}

/// What the gateway is to do about one packet from the device.
#[derive(Debug)]
pub enum Reaction {
    /// Nothing.
    None,
    /// The device acknowledged (PUBACK) the message sent with this packet id.
    Delivered {
        /// The packet id [`Session::send`] gave it.
        packet_id: u16,
    },
    /// Send this packet.
    Reply(MqttPacket),
    /// A publish on the device's own `kind` topic: hand it on (and keep it, if
    /// `retain` names its topic), then send `ack` if there is one.
    Publish {
        /// Which of the device's topics.
        kind: TopicKind,
        /// The payload.
        payload: Bytes,
        /// The topic, when the message is to be retained (an empty payload
        /// clears).
        retain: Option<String>,
        /// The PUBACK (QoS 1).
        ack: Option<MqttPacket>,
    },
    /// A publish the ACL refused: log it, then send `reply` (MQTT 5 PUBACK
    /// 0x87), or close the connection when `close` (MQTT 3.1.1).
    PublishDenied {
        /// The topic (for the log).
        topic: ByteString,
        /// Why.
        denial: Denial,
        /// The answer, if the protocol has one.
        reply: Option<MqttPacket>,
        /// Whether the connection must close.
        close: bool,
    },
    /// A SUBSCRIBE: log the refused filters, tell the bus when the device now
    /// receives its commands, send its retained messages when it subscribed to
    /// its whole namespace, then send the SUBACK.
    Subscribed {
        /// The SUBACK.
        reply: MqttPacket,
        /// Whether a granted filter covers the commands topic.
        commands: bool,
        /// Whether a granted filter covers the whole own namespace.
        retained: bool,
        /// Refused filters and why.
        denied: Vec<(ByteString, Denial)>,
    },
    /// Close the connection, after sending `last` if there is one.
    Close {
        /// Why.
        why: Close,
        /// The last packet (MQTT 5 DISCONNECT).
        last: Option<MqttPacket>,
    },
}

/// The state of one device's session.
#[derive(Debug)]
pub struct Session {
    device: DeviceId,
    proto: Proto,
    limits: Limits,
    msgs: TokenBucket,
    bytes: TokenBucket,
    next_pid: u16,
    /// Packet ids sent and not yet acknowledged (at most `max_inflight`).
    inflight: Vec<u16>,
    subscribed: bool,
}

impl Session {
    /// A session of `device` opened at `now_ms`; `resubscribed` when a
    /// persistent session resumed that had subscribed to its commands.
    pub fn new(
        device: DeviceId,
        proto: Proto,
        limits: Limits,
        resubscribed: bool,
        now_ms: i64,
    ) -> Self {
        Self {
            device,
            proto,
            msgs: TokenBucket::new(
                limits.messages_per_sec,
                limits.messages_per_sec.saturating_mul(2),
                now_ms,
            ),
            bytes: TokenBucket::new(
                limits.bytes_per_sec,
                limits.bytes_per_sec.saturating_mul(2),
                now_ms,
            ),
            limits,
            next_pid: 1,
            inflight: Vec::new(),
            subscribed: resubscribed,
        }
    }

    /// The device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// The protocol.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Whether the device has subscribed (to anything of its own).
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// QoS 1 messages sent and not yet acknowledged.
    pub fn inflight(&self) -> u16 {
        u16::try_from(self.inflight.len()).unwrap_or(u16::MAX)
    }

    /// Whether a message for the device may be sent now: it has subscribed,
    /// and fewer than `max_inflight` are unacknowledged.
    pub fn may_send(&self) -> bool {
        self.subscribed && self.inflight() < self.limits.max_inflight
    }

    /// A QoS 1 PUBLISH of a message for the device, counted in flight until
    /// its PUBACK; returns its packet id with it.
    pub fn send(&mut self, topic: String, payload: Bytes) -> (u16, MqttPacket) {
        let pid = NonZeroU16::new(self.next_pid).unwrap_or(NonZeroU16::MIN);
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        self.inflight.push(pid.get());
        let p = rmqtt_codec::types::Publish {
            dup: false,
            retain: false,
            qos: QoS::AtLeastOnce,
            topic: ByteString::from(topic),
            packet_id: Some(pid),
            payload,
            properties: match self.proto {
                Proto::V3 => None,
                Proto::V5 => Some(Default::default()),
            },
        };
        let packet = match self.proto {
            Proto::V3 => MqttPacket::V3(v3::Packet::Publish(Box::new(p))),
            Proto::V5 => MqttPacket::V5(v5::Packet::Publish(Box::new(p))),
        };
        (pid.get(), packet)
    }

    /// The last word when the session is closed from our side (revocation,
    /// decommissioning, a takeover).
    pub fn kicked(&self) -> Option<MqttPacket> {
        disconnect(self.proto, v5::DisconnectReasonCode::NotAuthorized)
    }

    /// The last word when this node drains: MQTT 5 clients are told to use
    /// another server (`server_reference`, when the operator named one) or
    /// that the server is shutting down; MQTT 3.1.1 has no such word.
    pub fn moved(&self, server_reference: Option<&str>) -> Option<MqttPacket> {
        match (self.proto, server_reference) {
            (Proto::V5, Some(r)) => Some(MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
                reason_code: v5::DisconnectReasonCode::UseAnotherServer,
                server_reference: Some(r.into()),
                ..v5::Disconnect::default()
            }))),
            _ => disconnect(self.proto, v5::DisconnectReasonCode::ServerShuttingDown),
        }
    }

    /// The last word after a packet that does not decode.
    pub fn malformed(&self) -> Option<MqttPacket> {
        disconnect(self.proto, v5::DisconnectReasonCode::MalformedPacket)
    }

    fn close(&self, why: Close, reason: v5::DisconnectReasonCode) -> Reaction {
        Reaction::Close {
            why,
            last: disconnect(self.proto, reason),
        }
    }

    /// Decides what to do about one packet from the device at `now_ms`.
    pub fn handle(&mut self, packet: MqttPacket, now_ms: i64) -> Reaction {
        match incoming(packet) {
            In::Publish {
                topic,
                payload,
                qos,
                retain,
                packet_id,
            } => self.publish(topic, payload, qos, retain, packet_id, now_ms),
            In::Subscribe { packet_id, filters } => self.subscribe(packet_id, &filters),
            In::Unsubscribe { packet_id, count } => {
                Reaction::Reply(unsuback(self.proto, packet_id, count))
            }
            In::Ping => Reaction::Reply(pingresp(self.proto)),
            In::PubAck { packet_id } => {
                // A PUBACK for nothing in flight is ignored, not counted.
                match self.inflight.iter().position(|p| *p == packet_id.get()) {
                    Some(i) => {
                        self.inflight.swap_remove(i);
                        Reaction::Delivered {
                            packet_id: packet_id.get(),
                        }
                    }
                    None => Reaction::None,
                }
            }
            In::Disconnect => Reaction::Close {
                why: Close::Disconnect,
                last: None,
            },
            In::Connect(_) | In::Unexpected => self.close(
                Close::ProtocolError,
                v5::DisconnectReasonCode::ProtocolError,
            ),
        }
    }

    fn publish(
        &mut self,
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        packet_id: Option<NonZeroU16>,
        now_ms: i64,
    ) -> Reaction {
        let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        if !self.msgs.take(1, now_ms) || !self.bytes.take(size, now_ms) {
            return self.close(
                Close::RateLimited,
                v5::DisconnectReasonCode::MessageRateTooHigh,
            );
        }
        if qos == QoS::ExactlyOnce {
            return self.close(Close::Qos2, v5::DisconnectReasonCode::QosNotSupported);
        }
        match check_publish(&self.device, &topic) {
            Ok(kind) => Reaction::Publish {
                kind,
                payload,
                retain: retain.then(|| topic.to_string()),
                ack: packet_id.map(|pid| puback(self.proto, pid, false)),
            },
            Err(denial) => {
                let (reply, close) = match (self.proto, packet_id) {
                    (Proto::V5, Some(pid)) => (Some(puback(self.proto, pid, true)), false),
                    (Proto::V5, None) => (None, false),
                    (Proto::V3, _) => (None, true),
                };
                Reaction::PublishDenied {
                    topic,
                    denial,
                    reply,
                    close,
                }
            }
        }
    }

    fn subscribe(&mut self, packet_id: NonZeroU16, filters: &[(ByteString, QoS)]) -> Reaction {
        let mut grants = Vec::with_capacity(filters.len());
        let (mut commands, mut retained) = (false, false);
        let mut denied = Vec::new();
        for (f, q) in filters {
            match check_subscribe(&self.device, f) {
                Ok(grant) => {
                    commands |= matches!(
                        grant,
                        Grant::OwnNamespace | Grant::Topic(TopicKind::Commands)
                    );
                    retained |= grant == Grant::OwnNamespace;
                    self.subscribed = true;
                    grants.push(Some(if *q == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    }));
                }
                Err(denial) => {
                    denied.push((f.clone(), denial));
                    grants.push(None);
                }
            }
        }
        Reaction::Subscribed {
            reply: suback(self.proto, packet_id, &grants),
            commands,
            retained,
            denied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    fn dev() -> DeviceId {
        DeviceId::parse("dev-1").unwrap()
    }

    fn pid(n: u16) -> NonZeroU16 {
        NonZeroU16::new(n).unwrap()
    }

    fn publish_v3(topic: &str, qos: QoS, packet_id: Option<u16>) -> MqttPacket {
        MqttPacket::V3(v3::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
            dup: false,
            retain: false,
            qos,
            topic: ByteString::from(topic),
            packet_id: packet_id.map(pid),
            payload: Bytes::from_static(b"{}"),
            properties: None,
        })))
    }

    fn publish_v5(topic: &str, packet_id: Option<u16>) -> MqttPacket {
        MqttPacket::V5(v5::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
            dup: false,
            retain: false,
            qos: if packet_id.is_some() {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            topic: ByteString::from(topic),
            packet_id: packet_id.map(pid),
            payload: Bytes::from_static(b"{}"),
            properties: Some(Default::default()),
        })))
    }

    fn session(proto: Proto) -> Session {
        Session::new(dev(), proto, Limits::default(), false, 0)
    }

    #[test]
    fn own_telemetry_is_handed_on_and_acknowledged() {
        let mut s = session(Proto::V3);
        match s.handle(
            publish_v3("palisade/d/dev-1/telemetry", QoS::AtLeastOnce, Some(7)),
            0,
        ) {
            Reaction::Publish {
                kind, ack, retain, ..
            } => {
                assert_eq!(kind, TopicKind::Telemetry);
                assert!(retain.is_none());
                assert!(
                    matches!(ack, Some(MqttPacket::V3(v3::Packet::PublishAck { packet_id })) if packet_id.get() == 7)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_devices_topic_closes_v3_and_is_refused_with_a_reason_code_on_v5() {
        let mut s = session(Proto::V3);
        assert!(matches!(
            s.handle(
                publish_v3("palisade/d/dev-2/telemetry", QoS::AtLeastOnce, Some(1)),
                0
            ),
            Reaction::PublishDenied {
                denial: Denial::OtherNamespace,
                close: true,
                reply: None,
                ..
            }
        ));
        let mut s = session(Proto::V5);
        match s.handle(publish_v5("palisade/d/dev-2/telemetry", Some(1)), 0) {
            Reaction::PublishDenied {
                close: false,
                reply: Some(MqttPacket::V5(v5::Packet::PublishAck(a))),
                ..
            } => {
                assert_eq!(a.reason_code, v5::PublishAckReason::NotAuthorized);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qos2_and_floods_close_the_session() {
        let mut s = session(Proto::V5);
        assert!(matches!(
            s.handle(
                publish_v3("palisade/d/dev-1/telemetry", QoS::ExactlyOnce, Some(1)),
                0
            ),
            Reaction::Close {
                why: Close::Qos2,
                ..
            }
        ));
        let mut s = session(Proto::V3);
        let burst = Limits::default().messages_per_sec * 2;
        for _ in 0..burst {
            assert!(matches!(
                s.handle(
                    publish_v3("palisade/d/dev-1/events", QoS::AtMostOnce, None),
                    0
                ),
                Reaction::Publish { .. }
            ));
        }
        assert!(matches!(
            s.handle(
                publish_v3("palisade/d/dev-1/events", QoS::AtMostOnce, None),
                0
            ),
            Reaction::Close {
                why: Close::RateLimited,
                ..
            }
        ));
    }

    #[test]
    fn subscriptions_are_granted_only_in_the_own_namespace() {
        let mut s = session(Proto::V3);
        assert!(!s.may_send());
        let sub = MqttPacket::V3(v3::Packet::Subscribe {
            packet_id: pid(3),
            topic_filters: vec![
                (
                    ByteString::from("palisade/d/dev-1/commands"),
                    QoS::AtLeastOnce,
                ),
                (ByteString::from("palisade/d/+/commands"), QoS::AtLeastOnce),
                (ByteString::from("#"), QoS::AtMostOnce),
            ],
        });
        match s.handle(sub, 0) {
            Reaction::Subscribed {
                reply,
                commands,
                retained,
                denied,
            } => {
                assert!(commands && !retained);
                assert_eq!(denied.len(), 2);
                match reply {
                    MqttPacket::V3(v3::Packet::SubscribeAck { status, .. }) => assert_eq!(
                        status,
                        vec![
                            v3::SubscribeReturnCode::Success(QoS::AtLeastOnce),
                            v3::SubscribeReturnCode::Failure,
                            v3::SubscribeReturnCode::Failure
                        ]
                    ),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(s.may_send());
    }

    #[test]
    fn inflight_messages_are_bounded_and_released_by_pubacks() {
        let limits = Limits {
            max_inflight: 2,
            ..Limits::default()
        };
        let mut s = Session::new(dev(), Proto::V5, limits, true, 0);
        let (ida, a) = s.send("palisade/d/dev-1/commands".into(), Bytes::new());
        let (idb, b) = s.send("palisade/d/dev-1/commands".into(), Bytes::new());
        assert!(!s.may_send());
        let ids: Vec<u16> = [a, b]
            .iter()
            .map(|p| match p {
                MqttPacket::V5(v5::Packet::Publish(p)) => p.packet_id.unwrap().get(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!((ida, idb), (1, 2));
        let ack = |id: u16| {
            MqttPacket::V5(v5::Packet::PublishAck(v5::PublishAck {
                packet_id: pid(id),
                reason_code: v5::PublishAckReason::Success,
                properties: Default::default(),
                reason_string: None,
            }))
        };
        // An acknowledgement of nothing in flight frees nothing.
        assert!(matches!(s.handle(ack(9), 0), Reaction::None));
        assert!(!s.may_send());
        assert!(matches!(
            s.handle(ack(1), 0),
            Reaction::Delivered { packet_id: 1 }
        ));
        assert!(s.may_send());
        // The same acknowledgement twice counts once.
        assert!(matches!(s.handle(ack(1), 0), Reaction::None));
        assert_eq!(s.inflight(), 1);
    }

    #[test]
    fn connect_identity_must_match_the_certificate_and_wills_stay_in_the_namespace() {
        let connect = |id: &str, will: Option<&str>| Connect {
            client_id: ByteString::from(id),
            keep_alive: 30,
            will: will.map(|t| (ByteString::from(t), Bytes::from_static(b"gone"))),
            clean: true,
        };
        let ok = check_connect(
            Some("dev-1"),
            &connect("dev-1", Some("palisade/d/dev-1/events")),
        )
        .unwrap();
        assert_eq!(ok.device, dev());
        assert_eq!(ok.will.map(|w| w.0), Some(TopicKind::Events));
        let wrong = check_connect(Some("dev-1"), &connect("dev-2", None)).unwrap_err();
        assert_eq!(wrong.refusal, ConnectRefusal::ClientId);
        assert!(check_connect(None, &connect("dev-1", None)).is_err());
        let will = check_connect(
            Some("dev-1"),
            &connect("dev-1", Some("palisade/d/dev-1/commands")),
        )
        .unwrap_err();
        assert_eq!(will.refusal, ConnectRefusal::NotAuthorized);
        assert_eq!(will.will_denied.map(|w| w.1), Some(Denial::NotPermitted));
    }

    #[test]
    fn a_v5_connect_round_trips_through_the_codec_into_the_neutral_view() {
        let mut codec = Proto::V5.codec(65536);
        let c = v5::Connect {
            client_id: ByteString::from("dev-1"),
            keep_alive: 60,
            clean_start: false,
            session_expiry_interval_secs: 3600,
            ..v5::Connect::default()
        };
        let mut buf = BytesMut::new();
        codec
            .encode(MqttPacket::V5(v5::Packet::Connect(Box::new(c))), &mut buf)
            .unwrap();
        let mut probe = rmqtt_codec::version::VersionCodec;
        let mut peek = buf.clone();
        let v = probe.decode(&mut peek).unwrap().unwrap();
        assert_eq!(Proto::from_version(v), Some(Proto::V5));
        let (p, _) = codec.decode(&mut buf).unwrap().unwrap();
        match incoming(p) {
            In::Connect(c) => {
                assert_eq!(&*c.client_id, "dev-1");
                assert!(!c.clean);
                assert_eq!(c.keep_alive, 60);
            }
            other => panic!("{other:?}"),
        }
    }
}
