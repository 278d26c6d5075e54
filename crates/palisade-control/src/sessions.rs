//! The live device sessions, whichever gateway holds them: one per device (a new
//! connection takes over), each with an outbox for messages to the device and a
//! way to close it at once (revocation, decommissioning). Services send to devices
//! and close sessions through this registry; the MQTT gateway registers them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState, Transport};
use palisade_store::{CertStatus, Change, Store};

use crate::events::{Event, Subscription};

/// A message for a connected device.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Topic (in the device's namespace).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// The command whose delivery the device's acknowledgement (PUBACK) of
    /// this message confirms, if it carries one.
    pub command: Option<String>,
}

struct Live {
    id: u64,
    serial: String,
    transport: Transport,
    kill: Option<oneshot::Sender<&'static str>>,
    outbox: mpsc::Sender<Outbound>,
}

/// The live sessions, by device: one per device (a new CONNECT takes over).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<DeviceId, Live>>,
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
    /// Registers a new live session of `device` (authenticated with certificate
    /// `serial`, reached over `transport`), closing the one it takes over;
    /// returns the session number, the receiver of a kick and the session's
    /// outbox.
    pub fn register(
        &self,
        device: &DeviceId,
        serial: &str,
        transport: Transport,
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
                    transport,
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

    /// Removes session `id` of `device`, unless a newer one took over.
    pub fn unregister(&self, device: &DeviceId, id: u64) {
        if let Ok(mut live) = self.live.lock()
            && live.get(device).is_some_and(|l| l.id == id)
        {
            live.remove(device);
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

    /// Closes the sessions the bus asks to close (this node's requests and,
    /// on a cluster bus, every other node's).
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            let Ok(Event::CloseSession {
                device,
                serial,
                reason,
            }) = e
            else {
                continue;
            };
            let why = match reason.as_str() {
                "certificate revoked" => "certificate revoked",
                "device decommissioned" => "device decommissioned",
                _ => "closed by another node",
            };
            if let Some(d) = device {
                self.kick_device(&d, why);
            }
            if let Some(s) = serial {
                self.kick_serial(&s, why);
            }
        }
    }

    /// The id of the device's live session, if it is connected.
    pub fn live_id(&self, device: &DeviceId) -> Option<u64> {
        self.live.lock().ok()?.get(device).map(|l| l.id)
    }

    /// Connected devices.
    pub fn count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// How a connected device's session reaches the control plane.
    pub fn transport(&self, device: &DeviceId) -> Option<Transport> {
        self.live
            .lock()
            .ok()
            .and_then(|l| l.get(device).map(|s| s.transport))
    }

    /// Whether a device is connected.
    pub fn is_connected(&self, device: &DeviceId) -> bool {
        self.live
            .lock()
            .map(|l| l.contains_key(device))
            .unwrap_or(false)
    }
}

/// Admits a device to a session (MQTT or CoAP: `via`, recorded in the audit
/// entry): the certificate must be in the inventory and valid, and the device
/// in a state that may connect; a first connection makes an enrolled device
/// active.
pub async fn admit(
    store: &dyn Store,
    clock: &dyn Clock,
    device: &DeviceId,
    serial: &str,
    via: &'static str,
) -> Result<(), &'static str> {
    match store.certificate(serial).await {
        Ok(Some(c)) if c.status == CertStatus::Valid && c.device.as_ref() == Some(device) => {}
        Ok(Some(c)) if c.status == CertStatus::Revoked => return Err("revoked"),
        Ok(_) => return Err("unknown_certificate"),
        Err(_) => return Err("store"),
    }
    let state = match store.device(device).await {
        Ok(Some(d)) => d.state,
        _ => return Err("unknown_device"),
    };
    if !state.may_connect() {
        return Err(match state {
            DeviceState::Decommissioned => "decommissioned",
            _ => "not_enrolled",
        });
    }
    if state != DeviceState::Enrolled {
        return Ok(());
    }
    // A first connection makes the device active (compare-and-set, audited).
    let activated = store
        .commit(
            vec![Change::AdvanceDeviceState {
                id: device.clone(),
                from: DeviceState::Enrolled,
                to: DeviceState::Active,
                at_ms: clock.now_ms(),
            }],
            vec![
                EntryDraft::success(format!("device:{device}"), "device.active", device.as_str())
                    .with_detail(serde_json::json!({ "via": via })),
            ],
        )
        .await;
    match activated {
        Ok(_) => Ok(()),
        Err(e) => {
            // Another session may have activated it first; a device that
            // left the connectable states meanwhile (decommissioned) or a
            // store that cannot answer is refused.
            match store.device(device).await {
                Ok(Some(d)) if d.state.may_connect() => Ok(()),
                Ok(Some(d)) if d.state == DeviceState::Decommissioned => Err("decommissioned"),
                _ => {
                    tracing::warn!(%device, error = %e, "could not record the device's first connection");
                    Err("store")
                }
            }
        }
    }
}
