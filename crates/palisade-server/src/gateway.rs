//! The MQTT device gateway: MQTT 3.1.1 and 5 over TLS with a client certificate
//! chained to Palisade's issuing CA. The device's identity is the certificate's
//! CN; the CONNECT client id must equal it. A device may only use its own topic
//! namespace (see `palisade_mqtt`). Revoking a certificate or decommissioning a
//! device closes its live session at once, and the CRL in the TLS verifier is
//! swapped so new handshakes fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState};
use palisade_mqtt::{Denial, Limits, TokenBucket, TopicKind, check_publish, check_subscribe};
use palisade_pki::inspect_certificate;
use palisade_store::{CertStatus, Change, Store};
use rmqtt_codec::types::QoS;
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::metrics::Metrics;
use crate::pki::{Pki, unix_ms};
use crate::tls::SwappableConfig;

/// A message a device sent on one of its topics.
#[derive(Debug, Clone)]
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

/// A message for a connected device.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Topic (in the device's namespace).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
}

struct Live {
    id: u64,
    serial: String,
    kill: Option<oneshot::Sender<&'static str>>,
    outbox: mpsc::Sender<Outbound>,
}

/// The live sessions, by device: one per device (a new CONNECT takes over).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<DeviceId, Live>>,
    /// Persistent (non-clean) sessions of devices that are offline: whether they
    /// had subscribed to their commands. Queued commands themselves are durable in
    /// the store and delivered when the session resumes.
    offline: Mutex<HashMap<DeviceId, bool>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("connected", &self.count())
            .finish()
    }
}

impl Sessions {
    fn register(
        &self,
        device: &DeviceId,
        serial: &str,
    ) -> (
        u64,
        oneshot::Receiver<&'static str>,
        mpsc::Receiver<Outbound>,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (kill, kill_rx) = oneshot::channel();
        let (outbox, outbox_rx) = mpsc::channel(64);
        if let Ok(mut live) = self.live.lock()
            && let Some(mut old) = live.insert(
                device.clone(),
                Live {
                    id,
                    serial: serial.to_owned(),
                    kill: Some(kill),
                    outbox,
                },
            )
            && let Some(k) = old.kill.take()
        {
            let _ = k.send("session taken over by a new connection");
        }
        (id, kill_rx, outbox_rx)
    }

    fn unregister(&self, device: &DeviceId, id: u64) {
        if let Ok(mut live) = self.live.lock()
            && live.get(device).is_some_and(|l| l.id == id)
        {
            live.remove(device);
        }
    }

    /// Takes a device's persisted session state (for a non-clean CONNECT), or
    /// discards it (clean). Returns `Some(subscribed)` if one existed.
    fn resume(&self, device: &DeviceId, clean: bool) -> Option<bool> {
        let mut offline = self.offline.lock().ok()?;
        let state = offline.remove(device);
        if clean { None } else { state }
    }

    fn persist(&self, device: &DeviceId, subscribed: bool) {
        if let Ok(mut offline) = self.offline.lock() {
            offline.insert(device.clone(), subscribed);
        }
    }

    /// Closes the device's live session; returns whether there was one.
    pub fn kick_device(&self, device: &DeviceId, reason: &'static str) -> bool {
        let Ok(mut live) = self.live.lock() else {
            return false;
        };
        match live.get_mut(device).and_then(|l| l.kill.take()) {
            Some(k) => {
                let _ = k.send(reason);
                true
            }
            None => false,
        }
    }

    /// Closes any live session authenticated with certificate `serial`.
    pub fn kick_serial(&self, serial: &str, reason: &'static str) -> bool {
        let Ok(mut live) = self.live.lock() else {
            return false;
        };
        let mut kicked = false;
        for l in live.values_mut().filter(|l| l.serial == serial) {
            if let Some(k) = l.kill.take() {
                let _ = k.send(reason);
                kicked = true;
            }
        }
        kicked
    }

    /// Queues a message for a connected device; false if it is not connected or
    /// its queue is full.
    pub fn send(&self, device: &DeviceId, msg: Outbound) -> bool {
        let Ok(live) = self.live.lock() else {
            return false;
        };
        live.get(device)
            .is_some_and(|l| l.outbox.try_send(msg).is_ok())
    }

    /// Connected devices.
    pub fn count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Whether a device is connected.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.live
            .lock()
            .map(|l| l.contains_key(device))
            .unwrap_or(false)
    }
}

/// Builds the gateway's TLS configuration: client certificates required and
/// chained to Palisade's CAs, with the current CRL.
pub fn tls_config(
    pki: &Pki,
    crl_der: Option<Vec<u8>>,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(
        pki.issuing().certificate_der().to_vec(),
    ))?;
    roots.add(CertificateDer::from(pki.root().certificate_der().to_vec()))?;
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if let Some(crl) = crl_der {
        builder = builder
            .with_crls(vec![CertificateRevocationListDer::from(crl)])
            .only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .context("building the client certificate verifier")?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert_path)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key_path)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    Ok(cfg)
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) bus: broadcast::Sender<DeviceEvent>,
    pub(crate) tls: Arc<SwappableConfig>,
    pub(crate) handshake_timeout: Duration,
    /// Per-device view, including security events.
    pub(crate) presence: Arc<Presence>,
    /// Devices that just subscribed to their commands (queued ones are delivered).
    pub(crate) subscribed: mpsc::UnboundedSender<DeviceId>,
    /// Monitoring: sessions, addresses and refusals go to the detectors and
    /// the device timeline.
    pub(crate) monitor: Arc<crate::monitor::Monitor>,
    /// Each device's last source address, session number and whether it is live.
    pub(crate) peers: Mutex<HashMap<DeviceId, (std::net::IpAddr, u64, bool)>>,
    /// Session numbers.
    pub(crate) next_session: std::sync::atomic::AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    V3,
    V5,
}

/// A protocol-neutral view of what a client sent.
enum In {
    Connect {
        client_id: String,
        keep_alive: u16,
        will: Option<(String, Bytes)>,
        clean: bool,
    },
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        packet_id: Option<std::num::NonZeroU16>,
    },
    PubAck,
    Subscribe {
        packet_id: std::num::NonZeroU16,
        filters: Vec<(String, QoS)>,
    },
    Unsubscribe {
        packet_id: std::num::NonZeroU16,
        count: usize,
    },
    Ping,
    Disconnect,
    Unexpected,
}

fn incoming(p: MqttPacket) -> In {
    match p {
        MqttPacket::V3(p) => match p {
            v3::Packet::Connect(c) => In::Connect {
                client_id: c.client_id.to_string(),
                keep_alive: c.keep_alive,
                will: c.last_will.map(|w| (w.topic.to_string(), w.message)),
                clean: c.clean_session,
            },
            v3::Packet::Publish(p) => In::Publish {
                topic: p.topic.to_string(),
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                packet_id: p.packet_id,
            },
            v3::Packet::PublishAck { .. } => In::PubAck,
            v3::Packet::Subscribe {
                packet_id,
                topic_filters,
            } => In::Subscribe {
                packet_id,
                filters: topic_filters
                    .into_iter()
                    .map(|(t, q)| (t.to_string(), q))
                    .collect(),
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
            v5::Packet::Connect(c) => In::Connect {
                client_id: c.client_id.to_string(),
                keep_alive: c.keep_alive,
                will: c.last_will.map(|w| (w.topic.to_string(), w.message)),
                clean: c.clean_start || c.session_expiry_interval_secs == 0,
            },
            v5::Packet::Publish(p) => In::Publish {
                topic: p.topic.to_string(),
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                packet_id: p.packet_id,
            },
            v5::Packet::PublishAck(_) => In::PubAck,
            v5::Packet::Subscribe(s) => In::Subscribe {
                packet_id: s.packet_id,
                filters: s
                    .topic_filters
                    .into_iter()
                    .map(|(t, o)| (t.to_string(), o.qos))
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
#[derive(Clone, Copy)]
enum Refusal {
    ClientId,
    NotAuthorized,
}

fn connack(proto: Proto, refusal: Option<Refusal>) -> MqttPacket {
    connack_with(proto, refusal, false)
}

fn connack_with(proto: Proto, refusal: Option<Refusal>, session_present: bool) -> MqttPacket {
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::ConnectAck(v3::ConnectAck {
            session_present,
            return_code: match refusal {
                None => v3::ConnectAckReason::ConnectionAccepted,
                Some(Refusal::ClientId) => v3::ConnectAckReason::IdentifierRejected,
                Some(Refusal::NotAuthorized) => v3::ConnectAckReason::NotAuthorized,
            },
        })),
        Proto::V5 => {
            let mut ack = v5::ConnectAck {
                session_present,
                reason_code: match refusal {
                    None => v5::ConnectAckReason::Success,
                    Some(Refusal::ClientId) => v5::ConnectAckReason::ClientIdentifierNotValid,
                    Some(Refusal::NotAuthorized) => v5::ConnectAckReason::NotAuthorized,
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

fn puback(proto: Proto, packet_id: std::num::NonZeroU16, denied: bool) -> MqttPacket {
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

fn suback(proto: Proto, packet_id: std::num::NonZeroU16, grants: &[Option<QoS>]) -> MqttPacket {
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

fn unsuback(proto: Proto, packet_id: std::num::NonZeroU16, count: usize) -> MqttPacket {
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

fn disconnect(proto: Proto, reason: v5::DisconnectReasonCode) -> Option<MqttPacket> {
    match proto {
        // MQTT 3.1.1 has no server DISCONNECT: the server just closes.
        Proto::V3 => None,
        Proto::V5 => Some(MqttPacket::V5(v5::Packet::Disconnect(v5::Disconnect {
            reason_code: reason,
            ..v5::Disconnect::default()
        }))),
    }
}

fn publish(proto: Proto, msg: Outbound, packet_id: std::num::NonZeroU16) -> MqttPacket {
    let p = rmqtt_codec::types::Publish {
        dup: false,
        retain: false,
        qos: QoS::AtLeastOnce,
        topic: ByteString::from(msg.topic),
        packet_id: Some(packet_id),
        payload: msg.payload,
        properties: match proto {
            Proto::V3 => None,
            Proto::V5 => Some(Default::default()),
        },
    };
    match proto {
        Proto::V3 => MqttPacket::V3(v3::Packet::Publish(Box::new(p))),
        Proto::V5 => MqttPacket::V5(v5::Packet::Publish(Box::new(p))),
    }
}

impl Gateway {
    /// Accepts device connections until `shutdown` changes.
    pub async fn run(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                a = listener.accept() => a,
            };
            let Ok((tcp, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let gw = self.clone();
            tokio::spawn(async move {
                gw.connection(tcp, peer).await;
            });
        }
    }

    fn refuse(&self, reason: &'static str) {
        self.metrics.mqtt_refused(reason);
    }

    /// A refused credential: counted, and observed as a failed login.
    fn auth_failed(&self, device: Option<&DeviceId>, peer: SocketAddr, reason: &'static str) {
        self.refuse(reason);
        self.monitor
            .observe(palisade_detect::detect::Observation::AuthFailure {
                device: device.map(|d| d.to_string()),
                peer: Some(peer.ip()),
                place: palisade_detect::detect::AuthPlace::Gateway,
                reason: reason.to_owned(),
                at_ms: unix_ms(self.clock.now()),
            });
    }

    /// A session came up: source address changes and takeovers are noted.
    fn session_up(&self, device: &DeviceId, peer: SocketAddr) -> u64 {
        let n = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ip = peer.ip();
        let before = self.peers.lock().ok().and_then(|mut m| {
            if m.len() > 1_000_000 {
                m.retain(|_, v| v.2);
            }
            m.insert(device.clone(), (ip, n, true))
        });
        let takeover = before.filter(|b| b.2 && b.0 != ip).map(|b| b.0);
        let moved = before.is_some_and(|b| b.0 != ip);
        if moved {
            self.metrics.mqtt_address_change();
        }
        self.monitor.event(
            device.as_str(),
            "connected",
            match (takeover, before) {
                (Some(old), _) => format!("connected from {ip} while still connected from {old}"),
                (None, Some(b)) if moved => format!("connected from {ip} (before: {})", b.0),
                _ => format!("connected from {ip}"),
            },
            serde_json::json!({ "address": ip, "previous": before.map(|b| b.0), "takeover": takeover.is_some() }),
        );
        self.monitor
            .observe(palisade_detect::detect::Observation::Connected {
                device: device.to_string(),
                peer: ip,
                takeover,
                at_ms: unix_ms(self.clock.now()),
            });
        n
    }

    /// A session ended.
    fn session_down(&self, device: &DeviceId, n: u64, why: &str) {
        if let Ok(mut m) = self.peers.lock()
            && let Some(e) = m.get_mut(device)
            && e.1 == n
        {
            e.2 = false;
        }
        self.metrics.mqtt_disconnect(why);
        self.monitor.event(
            device.as_str(),
            "disconnected",
            format!("disconnected ({why})"),
            serde_json::json!({ "reason": why }),
        );
    }

    async fn connection(self: Arc<Self>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        self.metrics.mqtt_connect_attempt();
        let Some(cfg) = self.tls.current() else {
            return;
        };
        let tls =
            match tokio::time::timeout(self.handshake_timeout, TlsAcceptor::from(cfg).accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.metrics.handshake_failed();
                    self.auth_failed(None, peer, "tls");
                    tracing::debug!(%peer, error = %e, "MQTT TLS handshake refused");
                    return;
                }
                Err(_) => {
                    self.metrics.handshake_failed();
                    self.refuse("handshake_timeout");
                    return;
                }
            };
        self.metrics.mqtt_handshake();
        let Some(leaf) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
        else {
            self.auth_failed(None, peer, "no_certificate");
            return;
        };
        let Ok(info) = inspect_certificate(&leaf) else {
            self.auth_failed(None, peer, "bad_certificate");
            return;
        };
        // A small initial read buffer: idle devices are the common case, and the
        // buffer grows when a larger packet arrives.
        let mut framed = Framed::with_capacity(tls, MqttCodec::Version(VersionCodec), 1024);
        let deadline = tokio::time::Instant::now() + self.limits.connect_timeout;
        let proto = match tokio::time::timeout_at(deadline, framed.next()).await {
            Ok(Some(Ok((MqttPacket::Version(ProtocolVersion::MQTT3), _)))) => Proto::V3,
            Ok(Some(Ok((MqttPacket::Version(ProtocolVersion::MQTT5), _)))) => Proto::V5,
            Ok(_) => {
                self.refuse("bad_protocol");
                return;
            }
            Err(_) => {
                self.refuse("connect_timeout");
                return;
            }
        };
        let max = self.limits.max_packet_bytes;
        *framed.codec_mut() = match proto {
            Proto::V3 => MqttCodec::V3(v3::Codec::new(max)),
            Proto::V5 => MqttCodec::V5(v5::Codec::new(max, max)),
        };
        let (client_id, keep_alive, will, clean) =
            match tokio::time::timeout_at(deadline, framed.next()).await {
                Ok(Some(Ok((p, _)))) => match incoming(p) {
                    In::Connect {
                        client_id,
                        keep_alive,
                        will,
                        clean,
                    } => (client_id, keep_alive, will, clean),
                    _ => {
                        self.refuse("no_connect");
                        return;
                    }
                },
                Ok(_) => {
                    self.refuse("malformed_connect");
                    return;
                }
                Err(_) => {
                    self.refuse("connect_timeout");
                    return;
                }
            };
        // Identity comes from the certificate; the client id must match it.
        let device = match info.common_name.as_deref().map(DeviceId::parse) {
            Some(Ok(d)) if d.as_str() == client_id => d,
            _ => {
                self.auth_failed(None, peer, "client_id_mismatch");
                let _ = framed.send(connack(proto, Some(Refusal::ClientId))).await;
                // Close cleanly (TLS close_notify) so the client reads the CONNACK.
                let _ = framed.close().await;
                return;
            }
        };
        // A will may only speak on the device's own upward topics.
        let will = match will {
            Some((topic, payload)) => match check_publish(&device, &topic) {
                Ok(kind) => Some((kind, payload)),
                Err(denial) => {
                    self.acl_denied(&device, "will", &topic, denial);
                    let _ = framed
                        .send(connack(proto, Some(Refusal::NotAuthorized)))
                        .await;
                    let _ = framed.close().await;
                    return;
                }
            },
            None => None,
        };
        if let Err(reason) = self.admit(&device, &info.serial_hex).await {
            self.auth_failed(Some(&device), peer, reason);
            let _ = framed
                .send(connack(proto, Some(Refusal::NotAuthorized)))
                .await;
            return;
        }
        let (sid, mut kill, mut outbox) = self.sessions.register(&device, &info.serial_hex);
        let resumed = self.sessions.resume(&device, clean);
        if framed
            .send(connack_with(proto, None, resumed.is_some()))
            .await
            .is_err()
        {
            self.sessions.unregister(&device, sid);
            return;
        }
        self.metrics.mqtt_connected(self.sessions.count());
        tracing::debug!(%device, %peer, "device connected");
        let session_no = self.session_up(&device, peer);
        let resubscribed = resumed.unwrap_or(false);
        if resubscribed {
            let _ = self.subscribed.send(device.clone());
        }
        let (clean_close, subscribed) = self
            .session(
                &device,
                proto,
                keep_alive,
                resubscribed,
                &mut framed,
                &mut kill,
                &mut outbox,
            )
            .await;
        self.sessions.unregister(&device, sid);
        self.session_down(
            &device,
            session_no,
            if clean_close {
                "disconnect"
            } else {
                "connection lost"
            },
        );
        if !clean {
            self.sessions.persist(&device, subscribed);
        }
        // The will is published when the session ends without a DISCONNECT.
        if !clean_close && let Some((kind, payload)) = will {
            let _ = self.bus.send(DeviceEvent {
                device: device.clone(),
                kind,
                payload,
                at_ms: unix_ms(self.clock.now()),
            });
        }
        self.metrics.mqtt_connected(self.sessions.count());
        tracing::debug!(%device, "device disconnected");
    }

    /// The certificate must be in the inventory and valid, and the device in a
    /// state that may connect; a first connection makes an enrolled device active.
    async fn admit(&self, device: &DeviceId, serial: &str) -> Result<(), &'static str> {
        match self.store.certificate(serial).await {
            Ok(Some(c)) if c.status == CertStatus::Valid && c.device.as_ref() == Some(device) => {}
            Ok(Some(c)) if c.status == CertStatus::Revoked => return Err("revoked"),
            Ok(_) => return Err("unknown_certificate"),
            Err(_) => return Err("store"),
        }
        let state = match self.store.device(device).await {
            Ok(Some(d)) => d.state,
            _ => return Err("unknown_device"),
        };
        match state {
            DeviceState::Enrolled => {
                let at = unix_ms(self.clock.now());
                let _ = self
                    .store
                    .commit(
                        vec![Change::AdvanceDeviceState {
                            id: device.clone(),
                            from: DeviceState::Enrolled,
                            to: DeviceState::Active,
                            at_ms: at,
                        }],
                        vec![
                            EntryDraft::success(
                                format!("device:{device}"),
                                "device.active",
                                device.as_str(),
                            )
                            .with_detail(serde_json::json!({ "via": "mqtt" })),
                        ],
                    )
                    .await;
                Ok(())
            }
            DeviceState::Active | DeviceState::Quarantined => Ok(()),
            DeviceState::Registered => Err("not_enrolled"),
            DeviceState::Decommissioned => Err("decommissioned"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn session<T>(
        &self,
        device: &DeviceId,
        proto: Proto,
        keep_alive: u16,
        resubscribed: bool,
        framed: &mut Framed<T, MqttCodec>,
        kill: &mut oneshot::Receiver<&'static str>,
        outbox: &mut mpsc::Receiver<Outbound>,
    ) -> (bool, bool)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let idle = self.limits.keepalive_deadline(keep_alive);
        let now = unix_ms(self.clock.now());
        let mut msgs = TokenBucket::new(
            self.limits.messages_per_sec,
            self.limits.messages_per_sec.saturating_mul(2),
            now,
        );
        let mut bytes = TokenBucket::new(
            self.limits.bytes_per_sec,
            self.limits.bytes_per_sec.saturating_mul(2),
            now,
        );
        let mut next_pid: u16 = 1;
        let mut subscribed = resubscribed;
        let mut inflight: u16 = 0;
        loop {
            tokio::select! {
                reason = &mut *kill => {
                    let reason = reason.unwrap_or("closed");
                    tracing::info!(%device, reason, "closing the device's session");
                    if let Some(d) = disconnect(proto, v5::DisconnectReasonCode::NotAuthorized) {
                        let _ = framed.send(d).await;
                    }
                    let _ = framed.close().await;
                    return (false, subscribed);
                }
                Some(msg) = outbox.recv(), if subscribed && inflight < self.limits.max_inflight => {
                    inflight += 1;
                    let pid = std::num::NonZeroU16::new(next_pid).unwrap_or(std::num::NonZeroU16::MIN);
                    next_pid = next_pid.checked_add(1).unwrap_or(1);
                    self.metrics.mqtt_out(msg.payload.len());
                    if framed.send(publish(proto, msg, pid)).await.is_err() {
                        return (false, subscribed);
                    }
                }
                next = tokio::time::timeout(idle, framed.next()) => {
                    let packet = match next {
                        Err(_) => { self.refuse("keepalive_timeout"); return (false, subscribed); }
                        Ok(None) => return (false, subscribed),
                        Ok(Some(Err(e))) => {
                            tracing::debug!(%device, error = %e, "malformed packet; closing");
                            self.refuse("malformed_packet");
                            if let Some(d) = disconnect(proto, v5::DisconnectReasonCode::MalformedPacket) {
                                let _ = framed.send(d).await;
                            }
                            return (false, subscribed);
                        }
                        Ok(Some(Ok((p, _)))) => p,
                    };
                    match incoming(packet) {
                        In::Publish { topic, payload, qos, retain, packet_id } => {
                            let now = unix_ms(self.clock.now());
                            let size = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                            self.metrics.mqtt_message_size(payload.len());
                            if !msgs.take(1, now) || !bytes.take(size, now) {
                                self.refuse("rate_limited");
                                if let Some(d) = disconnect(proto, v5::DisconnectReasonCode::MessageRateTooHigh) {
                                    let _ = framed.send(d).await;
                                }
                                return (false, subscribed);
                            }
                            if qos == QoS::ExactlyOnce {
                                self.refuse("qos2");
                                if let Some(d) = disconnect(proto, v5::DisconnectReasonCode::QosNotSupported) {
                                    let _ = framed.send(d).await;
                                }
                                return (false, subscribed);
                            }
                            match check_publish(device, &topic) {
                                Ok(kind) => {
                                    self.metrics.mqtt_in(payload.len());
                                    if retain {
                                        self.presence.retain(device, &topic, payload.clone());
                                    }
                                    let _ = self.bus.send(DeviceEvent { device: device.clone(), kind, payload, at_ms: now });
                                    if let Some(pid) = packet_id
                                        && framed.send(puback(proto, pid, false)).await.is_err()
                                    {
                                        return (false, subscribed);
                                    }
                                }
                                Err(denial) => {
                                    self.acl_denied(device, "publish", &topic, denial);
                                    match (proto, packet_id) {
                                        // MQTT 5 says why; 3.1.1 has no way to, so the
                                        // connection is closed (MQTT-3.3.5-2).
                                        (Proto::V5, Some(pid)) => {
                                            if framed.send(puback(proto, pid, true)).await.is_err() {
                                                return (false, subscribed);
                                            }
                                        }
                                        (Proto::V5, None) => {}
                                        (Proto::V3, _) => return (false, subscribed),
                                    }
                                }
                            }
                        }
                        In::Subscribe { packet_id, filters } => {
                            let mut grants = Vec::with_capacity(filters.len());
                            for (f, q) in &filters {
                                match check_subscribe(device, f) {
                                    Ok(grant) => {
                                        if matches!(grant, palisade_mqtt::Grant::OwnNamespace | palisade_mqtt::Grant::Topic(TopicKind::Commands)) {
                                            let _ = self.subscribed.send(device.clone());
                                        }
                                        if grant == palisade_mqtt::Grant::OwnNamespace {
                                            // Its own retained messages, after the SUBACK.
                                            for (topic, payload) in self.presence.retained(device) {
                                                let _ = self.sessions.send(device, Outbound { topic, payload });
                                            }
                                        }
                                        subscribed = true;
                                        grants.push(Some(if *q == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce }));
                                    }
                                    Err(denial) => {
                                        self.acl_denied(device, "subscribe", f, denial);
                                        grants.push(None);
                                    }
                                }
                            }
                            if framed.send(suback(proto, packet_id, &grants)).await.is_err() {
                                return (false, subscribed);
                            }
                        }
                        In::Unsubscribe { packet_id, count } => {
                            if framed.send(unsuback(proto, packet_id, count)).await.is_err() {
                                return (false, subscribed);
                            }
                        }
                        In::Ping => {
                            if framed.send(pingresp(proto)).await.is_err() {
                                return (false, subscribed);
                            }
                        }
                        In::PubAck => inflight = inflight.saturating_sub(1),
                        In::Disconnect => return (true, subscribed),
                        In::Connect { .. } | In::Unexpected => {
                            tracing::debug!(%device, "protocol error: unexpected packet");
                            self.refuse("protocol_error");
                            if let Some(d) = disconnect(proto, v5::DisconnectReasonCode::ProtocolError) {
                                let _ = framed.send(d).await;
                            }
                            return (false, subscribed);
                        }
                    }
                }
            }
        }
    }

    fn acl_denied(&self, device: &DeviceId, what: &'static str, topic: &str, denial: Denial) {
        self.metrics.mqtt_acl_denied(denial.label());
        self.presence.security_event(device);
        tracing::warn!(%device, what, topic = %topic.chars().take(128).collect::<String>(), reason = %denial, "MQTT access refused");
    }
}

/// What the fleet knows of a device from its messages (kept in memory).
#[derive(Debug, Default)]
pub struct Presence {
    seen: Mutex<HashMap<DeviceId, Seen>>,
    /// Devices heard from since the last flush to the store.
    dirty: Mutex<std::collections::HashSet<DeviceId>>,
}

/// The last word from a device.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Last message, Unix ms.
    pub last_seen_ms: i64,
    /// Firmware version it reported in telemetry.
    pub firmware: Option<String>,
    /// Messages received.
    pub messages: u64,
    /// Refused publishes and subscriptions (security events).
    pub security_events: u64,
    /// Retained messages on its own topics (empty payload clears).
    pub retained: HashMap<String, Bytes>,
}

impl Presence {
    /// Records an event.
    pub fn record(&self, e: &DeviceEvent) {
        let firmware = if e.kind == TopicKind::Telemetry {
            serde_json::from_slice::<serde_json::Value>(&e.payload)
                .ok()
                .and_then(|v| {
                    v.get("firmware")
                        .and_then(|f| f.as_str())
                        .map(|s| s.chars().take(64).collect())
                })
        } else {
            None
        };
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(e.device.clone());
        }
        if let Ok(mut m) = self.seen.lock() {
            let s = m.entry(e.device.clone()).or_default();
            s.last_seen_ms = e.at_ms;
            s.messages += 1;
            if firmware.is_some() {
                s.firmware = firmware;
            }
        }
    }

    /// Keeps (or, with an empty payload, clears) a retained message of a device.
    pub fn retain(&self, d: &DeviceId, topic: &str, payload: Bytes) {
        if let Ok(mut m) = self.seen.lock() {
            let r = &mut m.entry(d.clone()).or_default().retained;
            if payload.is_empty() {
                r.remove(topic);
            } else {
                r.insert(topic.to_owned(), payload);
            }
        }
    }

    /// A device's retained messages.
    pub fn retained(&self, d: &DeviceId) -> Vec<(String, Bytes)> {
        self.seen
            .lock()
            .ok()
            .and_then(|m| {
                m.get(d).map(|s| {
                    s.retained
                        .iter()
                        .map(|(t, p)| (t.clone(), p.clone()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Counts a security event (an ACL refusal) against a device.
    pub fn security_event(&self, d: &DeviceId) {
        if let Ok(mut m) = self.seen.lock() {
            m.entry(d.clone()).or_default().security_events += 1;
        }
    }

    /// The last word from a device.
    pub fn get(&self, d: &DeviceId) -> Option<Seen> {
        self.seen.lock().ok().and_then(|m| m.get(d).cloned())
    }

    /// Writes last-seen times and reported firmware to the store (one commit).
    pub async fn flush(&self, store: &dyn Store) {
        let devices: Vec<DeviceId> = match self.dirty.lock() {
            Ok(mut d) => d.drain().collect(),
            Err(_) => return,
        };
        if devices.is_empty() {
            return;
        }
        let batch: Vec<(DeviceId, i64, Option<String>)> = devices
            .into_iter()
            .filter_map(|d| self.get(&d).map(|s| (d, s.last_seen_ms, s.firmware)))
            .collect();
        if let Err(e) = store
            .commit(vec![Change::RecordPresence(batch)], vec![])
            .await
        {
            tracing::warn!(error = %e, "could not record device presence");
        }
    }

    /// Flushes to the store every `every` until `shutdown`, and once more at the end.
    pub async fn flush_every(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&*store).await,
                _ = shutdown.changed() => {
                    self.flush(&*store).await;
                    return;
                }
            }
        }
    }

    /// Consumes the bus until it closes.
    pub async fn follow(self: Arc<Self>, mut rx: broadcast::Receiver<DeviceEvent>) {
        loop {
            match rx.recv().await {
                Ok(e) => self.record(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "presence fell behind the device bus");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
