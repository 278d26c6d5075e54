//! What both CoAP transports (DTLS and OSCORE) do the same way for the
//! fleet: a session's life on the bus and in the session registry, and the
//! CoAP layer's requests carried out as the MQTT gateway's would be.

use std::net::SocketAddr;

use palisade_control::events::{DeviceEvent, Event};
use palisade_control::sessions::Outbound;
use palisade_core::DeviceId;
use palisade_detect::detect::AuthPlace;
use tokio::sync::{mpsc, oneshot};

use crate::exchange::Act;
use crate::server::Coap;

/// What the session registry asks of a registered session.
pub(crate) enum Link {
    /// A message for the device.
    Notice(Outbound),
    /// Close it (revoked, decommissioned, taken over).
    Kill(&'static str),
}

impl Coap {
    /// A session came up: claimed across nodes, and on the bus.
    pub(crate) fn session_up(&self, device: &DeviceId, addr: SocketAddr, via: &'static str) {
        let at_ms = self.p.clock.now_ms();
        self.p.bus.publish(Event::SessionClaimed {
            device: device.clone(),
            address: addr.ip(),
            node: self.p.node.clone(),
            at_ms,
        });
        self.p.bus.publish(Event::SessionUp {
            device: device.clone(),
            address: addr.ip(),
            previous: None,
            takeover: None,
            at_ms,
        });
        tracing::debug!(%device, peer = %addr, via, "device connected over CoAP");
    }

    /// A session ended: out of the registry, and on the bus.
    pub(crate) fn session_down(&self, device: &DeviceId, sid: u64, why: &str) {
        self.p.sessions.unregister(device, sid);
        self.p.bus.publish(Event::SessionDown {
            device: device.clone(),
            reason: why.to_owned(),
            at_ms: self.p.clock.now_ms(),
        });
        tracing::debug!(%device, why, "CoAP session ended");
    }

    /// A refused credential, observed as a failed login.
    pub(crate) fn credential_refused(&self, device: Option<&str>, peer: SocketAddr, reason: &str) {
        self.p.bus.publish(Event::CredentialRefused {
            device: device.map(str::to_owned),
            peer: Some(peer.ip()),
            place: AuthPlace::Gateway,
            reason: reason.to_owned(),
            at_ms: self.p.clock.now_ms(),
        });
    }

    /// Carries out one of the CoAP layer's acts for `device`; a message to
    /// send is handed back (the transport protects it).
    pub(crate) fn act(&self, device: &DeviceId, a: Act) -> Option<Vec<u8>> {
        let m = self.p.metrics.coap();
        let at_ms = self.p.clock.now_ms();
        match a {
            Act::Send(bytes) => return Some(bytes),
            Act::Publish { kind, payload } => {
                self.p.metrics.mqtt_message_size(payload.len());
                self.p.bus.publish(Event::Message(DeviceEvent {
                    device: device.clone(),
                    kind,
                    payload,
                    at_ms,
                }));
            }
            Act::CommandsObserved => self.p.bus.publish(Event::CommandsSubscribed {
                device: device.clone(),
            }),
            Act::Delivered(id) => self.p.bus.publish(Event::CommandDelivered {
                device: device.clone(),
                id,
                at_ms,
            }),
            Act::Notified => m.notification(),
            Act::Retransmitted => m.retransmission(),
            Act::Refused(why) => m.refused(why),
            Act::Answered(code) => m.answered(&code),
            // Only a DTLS session makes these, and its task answers them.
            Act::Est(_) => {}
        }
        None
    }
}

/// Forwards a registered session's kill and outbox to the endpoint's task
/// (the registry hands each session a channel pair; an endpoint owns all its
/// peers in one task). `wrap` makes the task's message.
pub(crate) fn forward<C: Send + 'static>(
    mut kill: oneshot::Receiver<&'static str>,
    mut outbox: mpsc::Receiver<Outbound>,
    ctl: mpsc::Sender<C>,
    wrap: impl Fn(Link) -> C + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = &mut kill => {
                    // A dropped sender means the session was unregistered.
                    if let Ok(reason) = r {
                        let _ = ctl.send(wrap(Link::Kill(reason))).await;
                    }
                    return;
                }
                m = outbox.recv() => match m {
                    Some(msg) => {
                        if ctl.send(wrap(Link::Notice(msg))).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    });
}

/// Sends datagrams to one peer.
pub(crate) async fn send_all(socket: &tokio::net::UdpSocket, to: SocketAddr, out: Vec<Vec<u8>>) {
    for d in out {
        let _ = socket.send_to(&d, to).await;
    }
}
