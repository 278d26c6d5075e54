//! Presence: what the fleet knows of each device from its messages (last seen,
//! reported firmware, message and security-event counts), kept in memory and
//! flushed to the store every few seconds. (Retained messages are in the store:
//! the gateway writes and reads them there.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::DeviceId;
use palisade_mqtt::TopicKind;
use palisade_store::{Change, Store};
use tokio::sync::watch;

use crate::events::{DeviceEvent, Event, Missed, Subscription};

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

    /// Follows device messages on the bus until it closes.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            match e {
                Ok(Event::Message(e)) => self.record(&e),
                Ok(_) => {}
                Err(Missed(n)) => {
                    tracing::warn!(missed = n, "presence fell behind the device bus");
                }
            }
        }
    }
}
