//! The MQTT device gateway: MQTT 3.1.1 and 5 over TLS with a client certificate
//! chained to Palisade's issuing CA. The device's identity is the certificate's
//! CN; the CONNECT client id must equal it. A device may only use its own topic
//! namespace (see `palisade_mqtt`). Revoking a certificate or decommissioning a
//! device closes its live session at once, and the CRL in the TLS verifier is
//! swapped so new handshakes fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use palisade_control::events::{DeviceEvent, Event, EventBus, Subscription};
use palisade_control::metrics::Metrics;
use palisade_control::presence::Presence;
use palisade_control::proxy::{ProxySettings, peer_address};
use palisade_control::sessions::{Outbound, Sessions, admit};
use palisade_control::tls::SwappableConfig;
use palisade_core::{Clock, DeviceId, Transport};
use palisade_detect::detect::AuthPlace;
use palisade_mqtt::session::{
    Accepted, Close, ConnectRefusal, In, Proto, Reaction, Session, check_connect, connack, incoming,
};
use palisade_mqtt::{Denial, Limits};
use palisade_pki::inspect_certificate;
use palisade_store::{Change, Store};
use rmqtt_codec::version::VersionCodec;
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

/// The gateway's shared state.
#[derive(Debug)]
pub struct Gateway {
    store: Arc<dyn Store>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Device messages, subscriptions, sessions and refused credentials are
    /// published here (presence, commands, attestation and monitoring follow).
    bus: Arc<dyn EventBus>,
    tls: Arc<SwappableConfig>,
    handshake_timeout: Duration,
    /// Set behind a TCP balancer that sends the PROXY protocol v2 header.
    proxy: Option<ProxySettings>,
    /// Where MQTT 5 clients are told to go when this node drains.
    server_reference: Option<String>,
    /// This node's name among the nodes.
    node: String,
    /// Per-device view, including security events.
    presence: Arc<Presence>,
    /// Each device's last source address, session number and whether it is live.
    peers: Mutex<HashMap<DeviceId, (std::net::IpAddr, u64, bool)>>,
    /// Session numbers.
    next_session: std::sync::atomic::AtomicU64,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent DISCONNECT (a clean close: no will).
    Disconnect,
    /// Lost, or closed by the gateway for what the device sent (the will is
    /// published).
    Lost,
    /// Closed at the platform's request: revoked, decommissioned, taken over
    /// (the will is published; the reason is the timeline's).
    Closed(&'static str),
    /// This node drains and sent the device elsewhere (no will).
    Moved,
}

/// What the gateway is built from.
#[derive(Debug)]
pub struct GatewayParts {
    /// The store (certificates and device states at CONNECT).
    pub store: Arc<dyn Store>,
    /// The live-session registry it registers sessions in.
    pub sessions: Arc<Sessions>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Packet, rate and keepalive limits.
    pub limits: Limits,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The TLS configuration (swapped when the CRL changes).
    pub tls: Arc<SwappableConfig>,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// What devices last said (retained messages live there).
    pub presence: Arc<Presence>,
    /// Set behind a TCP balancer that sends the PROXY protocol v2 header: the
    /// devices' addresses are read from it.
    pub proxy: Option<ProxySettings>,
    /// Where MQTT 5 clients are told to go when this node drains (the
    /// balancer's `host:port`).
    pub server_reference: Option<String>,
    /// This node's name among the nodes (unique per process).
    pub node: String,
}

impl Gateway {
    /// Builds the gateway; it accepts connections once [`Gateway::run`] is
    /// spawned.
    pub fn new(p: GatewayParts) -> Self {
        Self {
            store: p.store,
            sessions: p.sessions,
            metrics: p.metrics,
            clock: p.clock,
            limits: p.limits,
            bus: p.bus,
            tls: p.tls,
            handshake_timeout: p.handshake_timeout,
            presence: p.presence,
            proxy: p.proxy,
            server_reference: p.server_reference,
            node: p.node,
            peers: Mutex::default(),
            next_session: Default::default(),
        }
    }

    /// The TLS configuration in force (replaced when the CRL changes).
    pub fn tls(&self) -> &SwappableConfig {
        &self.tls
    }
}

impl Gateway {
    /// Accepts device connections until `shutdown` is set; then tells every
    /// session to move (see [`Session::moved`]), keeps their persistent state,
    /// and returns when they have ended or `grace` has passed.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                a = listener.accept() => a,
            };
            while conns.try_join_next().is_some() {}
            let Ok((tcp, peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            conns.spawn(self.clone().connection(tcp, peer, shutdown.clone()));
        }
        drop(listener);
        let open = conns.len();
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        match drained {
            Ok(()) => tracing::info!(sessions = open, "MQTT gateway drained"),
            Err(_) => tracing::warn!(
                left = conns.len(),
                ?grace,
                "MQTT sessions still open when the drain time ran out"
            ),
        }
    }

    fn refuse(&self, reason: &'static str) {
        self.metrics.mqtt_refused(reason);
    }

    /// A refused credential: counted, and observed as a failed login.
    fn auth_failed(&self, device: Option<&DeviceId>, peer: SocketAddr, reason: &'static str) {
        self.refuse(reason);
        self.bus.publish(Event::CredentialRefused {
            device: device.map(|d| d.to_string()),
            peer: Some(peer.ip()),
            place: AuthPlace::Gateway,
            reason: reason.to_owned(),
            at_ms: self.clock.now_ms(),
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
        let at_ms = self.clock.now_ms();
        if let Some(from) = takeover {
            self.bus.publish(Event::Takeover {
                device: device.clone(),
                from,
                to: ip,
                at_ms,
            });
        }
        // A node holding an older session of the device closes it.
        self.bus.publish(Event::SessionClaimed {
            device: device.clone(),
            address: ip,
            node: self.node.clone(),
            at_ms,
        });
        self.bus.publish(Event::SessionUp {
            device: device.clone(),
            address: ip,
            previous: before.map(|b| b.0),
            takeover,
            at_ms,
        });
        n
    }

    /// Follows the other nodes' claims: a session this node holds for a
    /// device that connected elsewhere is closed (one session per device),
    /// and if the new one came from another address the takeover is reported.
    pub async fn follow_claims(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            let Ok(Event::SessionClaimed {
                device,
                address,
                node,
                at_ms,
            }) = e
            else {
                continue;
            };
            if node == self.node {
                continue;
            }
            let live = self
                .peers
                .lock()
                .ok()
                .and_then(|m| m.get(&device).filter(|p| p.2).map(|p| p.0));
            let Some(from) = live else {
                continue;
            };
            if self
                .sessions
                .kick_device(&device, "session taken over on another node")
                && from != address
            {
                self.bus.publish(Event::Takeover {
                    device,
                    from,
                    to: address,
                    at_ms,
                });
            }
        }
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
        self.bus.publish(Event::SessionDown {
            device: device.clone(),
            reason: why.to_owned(),
            at_ms: self.clock.now_ms(),
        });
    }

    async fn connection(
        self: Arc<Self>,
        mut tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        self.metrics.mqtt_connect_attempt();
        let peer =
            match peer_address(&mut tcp, peer, self.proxy.as_ref(), self.handshake_timeout).await {
                Ok(a) => a,
                Err(e) => {
                    self.refuse("proxy_header");
                    tracing::info!(%peer, error = %e, "MQTT connection refused before TLS");
                    return;
                }
            };
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
            Ok(Some(Ok((p, _)))) => match Proto::from_probe(&p) {
                Some(proto) => proto,
                None => {
                    self.refuse("bad_protocol");
                    return;
                }
            },
            Ok(_) => {
                self.refuse("bad_protocol");
                return;
            }
            Err(_) => {
                self.refuse("connect_timeout");
                return;
            }
        };
        *framed.codec_mut() = proto.codec(self.limits.max_packet_bytes);
        let connect = match tokio::time::timeout_at(deadline, framed.next()).await {
            Ok(Some(Ok((p, _)))) => match incoming(p) {
                In::Connect(c) => c,
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
        // Identity comes from the certificate; the client id must match it, and
        // a will may only speak on the device's own upward topics.
        let Accepted { device, will } = match check_connect(info.common_name.as_deref(), &connect) {
            Ok(a) => a,
            Err(refused) => {
                match (&refused.device, &refused.will_denied) {
                    (Some(device), Some((topic, denial))) => {
                        self.acl_denied(device, "will", topic, *denial);
                    }
                    _ => self.auth_failed(None, peer, "client_id_mismatch"),
                }
                let _ = framed
                    .send(connack(proto, Some(refused.refusal), false))
                    .await;
                // Close cleanly (TLS close_notify) so the client reads the CONNACK.
                let _ = framed.close().await;
                return;
            }
        };
        if let Err(reason) = admit(
            &*self.store,
            &*self.clock,
            &device,
            &info.serial_hex,
            "mqtt",
        )
        .await
        {
            self.auth_failed(Some(&device), peer, reason);
            let _ = framed
                .send(connack(proto, Some(ConnectRefusal::NotAuthorized), false))
                .await;
            return;
        }
        let (sid, mut kill, mut outbox) =
            self.sessions
                .register(&device, &info.serial_hex, Transport::MqttTls);
        // Noted before anything awaits: a session this one took over is still
        // live now, which is what tells a takeover (a cloned identity) apart
        // from a reconnection.
        let session_no = self.session_up(&device, peer);
        let resumed = self.resume(&device, connect.clean).await;
        if framed
            .send(connack(proto, None, resumed.is_some()))
            .await
            .is_err()
        {
            self.sessions.unregister(&device, sid);
            self.session_down(&device, session_no, "connection lost");
            return;
        }
        self.metrics.mqtt_connected(self.sessions.count());
        tracing::debug!(%device, %peer, "device connected");
        let resubscribed = resumed.unwrap_or(false);
        if resubscribed {
            self.bus.publish(Event::CommandsSubscribed {
                device: device.clone(),
            });
        }
        let mut session = Session::new(
            device.clone(),
            proto,
            self.limits,
            resubscribed,
            self.clock.now_ms(),
        );
        let end = self
            .session(
                &mut session,
                connect.keep_alive,
                &mut framed,
                &mut kill,
                &mut outbox,
                drain,
            )
            .await;
        self.sessions.unregister(&device, sid);
        self.session_down(
            &device,
            session_no,
            match end {
                End::Disconnect => "disconnect",
                End::Lost => "connection lost",
                End::Closed(why) => why,
                End::Moved => "node draining",
            },
        );
        if !connect.clean {
            self.set_session(&device, Some(session.subscribed())).await;
        }
        // The will is published when the session ends without a DISCONNECT
        // (not when this node sends the device to another).
        if matches!(end, End::Lost | End::Closed(_))
            && let Some((kind, payload)) = will
        {
            self.bus.publish(Event::Message(DeviceEvent {
                device: device.clone(),
                kind,
                payload,
                at_ms: self.clock.now_ms(),
            }));
        }
        self.metrics.mqtt_connected(self.sessions.count());
        tracing::debug!(%device, "device disconnected");
    }

    /// The device's persistent session from the store, for a non-clean
    /// CONNECT (`Some(subscribed)`: the session is present); a clean CONNECT
    /// discards it. Kept in the store, a session survives a restart and
    /// follows the device to another node.
    async fn resume(&self, device: &DeviceId, clean: bool) -> Option<bool> {
        let stored = match self.store.mqtt_session(device).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%device, error = %e, "could not read the device's persistent session");
                None
            }
        };
        if !clean {
            return stored;
        }
        if stored.is_some() {
            self.set_session(device, None).await;
        }
        None
    }

    /// Keeps (`Some(subscribed)`) or discards (`None`) a device's persistent
    /// session in the store.
    async fn set_session(&self, device: &DeviceId, subscribed: Option<bool>) {
        let change = Change::SetMqttSession {
            device: device.clone(),
            subscribed,
            at_ms: self.clock.now_ms(),
        };
        if let Err(e) = self.store.commit(vec![change], vec![]).await {
            tracing::warn!(%device, error = %e, "could not store the device's persistent session");
        }
    }

    /// Keeps (or, with an empty payload, clears) a device's retained message,
    /// in the store before the publish is acknowledged.
    async fn retain(&self, device: &DeviceId, topic: String, payload: &[u8], at_ms: i64) {
        let change = Change::SetRetained {
            device: device.clone(),
            topic,
            payload: payload.to_vec(),
            at_ms,
        };
        if let Err(e) = self.store.commit(vec![change], vec![]).await {
            tracing::warn!(%device, error = %e, "could not store a retained message");
        }
    }

    /// Runs an established session until it ends; returns how.
    async fn session<T>(
        &self,
        session: &mut Session,
        keep_alive: u16,
        framed: &mut Framed<T, MqttCodec>,
        kill: &mut oneshot::Receiver<&'static str>,
        outbox: &mut mpsc::Receiver<Outbound>,
        mut drain: watch::Receiver<bool>,
    ) -> End
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let idle = self.limits.keepalive_deadline(keep_alive);
        let device = session.device().clone();
        // Commands sent and not yet acknowledged, by packet id (at most
        // max_inflight): their PUBACK confirms their delivery.
        let mut awaiting: HashMap<u16, String> = HashMap::new();
        loop {
            tokio::select! {
                // (A dropped sender is no drain: the session goes on.)
                () = async {
                    if drain.wait_for(|d| *d).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    if let Some(d) = session.moved(self.server_reference.as_deref()) {
                        let _ = framed.send(d).await;
                    }
                    let _ = framed.close().await;
                    return End::Moved;
                }
                reason = &mut *kill => {
                    let reason = reason.unwrap_or("closed");
                    tracing::info!(%device, reason, "closing the device's session");
                    if let Some(d) = session.kicked() {
                        let _ = framed.send(d).await;
                    }
                    let _ = framed.close().await;
                    return End::Closed(reason);
                }
                Some(msg) = outbox.recv(), if session.may_send() => {
                    self.metrics.mqtt_out(msg.payload.len());
                    let (packet_id, packet) = session.send(msg.topic, msg.payload);
                    if let Some(id) = msg.command {
                        awaiting.insert(packet_id, id);
                    }
                    if framed.send(packet).await.is_err() {
                        return End::Lost;
                    }
                }
                next = tokio::time::timeout(idle, framed.next()) => {
                    let packet = match next {
                        Err(_) => { self.refuse("keepalive_timeout"); return End::Lost; }
                        Ok(None) => return End::Lost,
                        Ok(Some(Err(e))) => {
                            tracing::debug!(%device, error = %e, "malformed packet; closing");
                            self.refuse("malformed_packet");
                            if let Some(d) = session.malformed() {
                                let _ = framed.send(d).await;
                            }
                            return End::Lost;
                        }
                        Ok(Some(Ok((p, _)))) => p,
                    };
                    if let MqttPacket::V3(v3::Packet::Publish(p)) | MqttPacket::V5(v5::Packet::Publish(p)) = &packet {
                        self.metrics.mqtt_message_size(p.payload.len());
                    }
                    let now = self.clock.now_ms();
                    let reply = match session.handle(packet, now) {
                        Reaction::None => None,
                        Reaction::Delivered { packet_id } => {
                            if let Some(id) = awaiting.remove(&packet_id) {
                                self.bus.publish(Event::CommandDelivered { device: device.clone(), id, at_ms: now });
                            }
                            None
                        }
                        Reaction::Reply(p) => Some(p),
                        Reaction::Publish { kind, payload, retain, ack } => {
                            self.metrics.mqtt_in(payload.len());
                            if let Some(topic) = retain {
                                self.retain(&device, topic, &payload, now).await;
                            }
                            self.bus.publish(Event::Message(DeviceEvent { device: device.clone(), kind, payload, at_ms: now }));
                            ack
                        }
                        Reaction::PublishDenied { topic, denial, reply, close } => {
                            self.acl_denied(&device, "publish", &topic, denial);
                            if close {
                                return End::Lost;
                            }
                            reply
                        }
                        Reaction::Subscribed { reply, commands, retained, denied } => {
                            for (filter, denial) in &denied {
                                self.acl_denied(&device, "subscribe", filter, *denial);
                            }
                            if commands {
                                self.bus.publish(Event::CommandsSubscribed { device: device.clone() });
                            }
                            if retained {
                                // Its own retained messages, after the SUBACK.
                                match self.store.retained(&device).await {
                                    Ok(list) => {
                                        for (topic, payload) in list {
                                            let payload = bytes::Bytes::from(payload);
                                            let _ = self.sessions.send(&device, Outbound { topic, payload, command: None });
                                        }
                                    }
                                    Err(e) => tracing::warn!(%device, error = %e, "could not read retained messages"),
                                }
                            }
                            Some(reply)
                        }
                        Reaction::Close { why, last } => {
                            if let Some(label) = why.refusal_label() {
                                if why == Close::ProtocolError {
                                    tracing::debug!(%device, "protocol error: unexpected packet");
                                }
                                self.refuse(label);
                            }
                            if let Some(p) = last {
                                let _ = framed.send(p).await;
                            }
                            return if why == Close::Disconnect { End::Disconnect } else { End::Lost };
                        }
                    };
                    if let Some(p) = reply
                        && framed.send(p).await.is_err()
                    {
                        return End::Lost;
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
