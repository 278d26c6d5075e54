//! Operator commands to devices: recorded and audited, delivered over the
//! device's MQTT session (at once, or when it next subscribes), and closed by the
//! device's acknowledgement on its `acks` topic.
//!
//! A command stays `queued` until the device acknowledges (MQTT PUBACK) the
//! message that carried it; only then is it `sent`. A session that ends first,
//! or a server that stops, leaves it queued, and the device's next session
//! (on any node) gets it again. Within one live session a command is handed
//! over once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId, DeviceState};
use palisade_mqtt::{TopicKind, device_topic};
use palisade_store::{Change, CommandRecord, Store};
use ring::rand::SecureRandom;
use serde_json::json;

use crate::error::ServiceError;
use crate::events::{DeviceEvent, Event, EventBus, Missed, Subscription};
use crate::sessions::{Outbound, Sessions};

/// Largest number of arguments of a command.
pub const MAX_ARGS: usize = 16;
/// Largest argument.
pub const MAX_ARG_LEN: usize = 512;

/// The command service.
#[derive(Debug)]
pub struct Commands {
    store: Arc<dyn Store>,
    sessions: Arc<Sessions>,
    clock: Arc<dyn Clock>,
    /// Tells the other nodes about a command for a device not connected here.
    bus: Arc<dyn EventBus>,
    /// Commands handed to a device's live session (by its id) and not yet
    /// acknowledged: not handed to that session again.
    handed: Mutex<HashMap<DeviceId, (u64, HashSet<String>)>>,
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code: "bad_command",
        message: message.into(),
    }
}

impl Commands {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
        clock: Arc<dyn Clock>,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            store,
            sessions,
            clock,
            bus,
            handed: Mutex::default(),
        }
    }

    fn payload(c: &CommandRecord) -> Bytes {
        let args: serde_json::Value = serde_json::from_str(&c.args).unwrap_or(json!([]));
        Bytes::from(json!({ "id": c.id, "name": c.name, "args": args }).to_string())
    }

    /// Hands a command to the device's live session (once per session);
    /// false when there is no session or its outbox is full.
    async fn deliver(&self, c: &CommandRecord) -> bool {
        let Some(sid) = self.sessions.live_id(&c.device) else {
            return false;
        };
        if let Ok(mut handed) = self.handed.lock() {
            let entry = handed
                .entry(c.device.clone())
                .or_insert_with(|| (sid, HashSet::new()));
            if entry.0 != sid {
                *entry = (sid, HashSet::new());
            }
            if entry.1.contains(&c.id) {
                return true;
            }
        }
        let sent = self.sessions.send(
            &c.device,
            Outbound {
                topic: device_topic(&c.device, TopicKind::Commands),
                payload: Self::payload(c),
                command: Some(c.id.clone()),
            },
        );
        if sent
            && let Ok(mut handed) = self.handed.lock()
            && let Some(entry) = handed.get_mut(&c.device).filter(|e| e.0 == sid)
        {
            entry.1.insert(c.id.clone());
        }
        sent
    }

    /// The device acknowledged the message carrying command `id`: it is sent.
    async fn delivered(&self, device: &DeviceId, id: &str, at_ms: i64) {
        if let Ok(mut handed) = self.handed.lock()
            && let Some(entry) = handed.get_mut(device)
        {
            entry.1.remove(id);
            if entry.1.is_empty() {
                handed.remove(device);
            }
        }
        if let Err(e) = self
            .store
            .commit(
                vec![Change::CommandSent {
                    id: id.to_owned(),
                    at_ms,
                }],
                vec![],
            )
            .await
        {
            tracing::warn!(error = %e, command = %id, "could not record delivery");
        }
    }

    /// Records, audits and (if the device is connected) delivers a command.
    pub async fn send(
        &self,
        actor: &str,
        device: &DeviceId,
        name: &str,
        args: Vec<String>,
    ) -> Result<CommandRecord, ServiceError> {
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(bad("a command name is 1 to 32 of [a-z0-9_-]"));
        }
        if args.len() > MAX_ARGS
            || args
                .iter()
                .any(|a| a.len() > MAX_ARG_LEN || a.chars().any(char::is_control))
        {
            return Err(bad(format!(
                "at most {MAX_ARGS} arguments of at most {MAX_ARG_LEN} printable characters"
            )));
        }
        let d = self
            .store
            .device(device)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("device {device} not found")))?;
        if d.state == DeviceState::Decommissioned {
            return Err(ServiceError::Conflict(format!(
                "device {device} is decommissioned"
            )));
        }
        let record = Self::new_record(device, "", name, &args, self.clock.now_ms())?;
        self.store
            .commit(
                vec![Change::InsertCommand(record.clone())],
                vec![
                    EntryDraft::success(actor, "command.send", device.as_str()).with_detail(
                        json!({
                            "command": record.id, "name": name, "args": args,
                        }),
                    ),
                ],
            )
            .await?;
        self.dispatch(&record).await;
        Ok(self
            .store
            .commands(device, false)
            .await?
            .into_iter()
            .find(|c| c.id == record.id)
            .unwrap_or(record))
    }

    /// Queues one protocol command (`name`, made by the server, not an
    /// operator's) for each of `devices`: committed in batches, each batch
    /// audited once with the devices it covers, then delivered to those
    /// connected (the others get it when they next subscribe). Returns how
    /// many were queued.
    pub async fn send_to_many(
        &self,
        actor: &str,
        action: &str,
        devices: &[DeviceId],
        name: &str,
        args: &[String],
    ) -> Result<usize, ServiceError> {
        const BATCH: usize = 500;
        let mut queued = 0;
        for batch in devices.chunks(BATCH) {
            let now = self.clock.now_ms();
            let records = batch
                .iter()
                .map(|d| Self::new_record(d, &format!("{name}-"), name, args, now))
                .collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<&str> = batch.iter().map(DeviceId::as_str).collect();
            self.store
                .commit(
                    records.iter().cloned().map(Change::InsertCommand).collect(),
                    vec![
                        EntryDraft::success(actor, action, format!("{} devices", batch.len()))
                            .with_detail(json!({ "command": name, "args": args, "devices": ids })),
                    ],
                )
                .await?;
            for r in &records {
                self.dispatch(r).await;
            }
            queued += records.len();
        }
        Ok(queued)
    }

    /// A new queued command whose id is `id_prefix` and 8 random bytes (hex),
    /// for the caller to commit (with its own audit) and then [`dispatch`].
    ///
    /// [`dispatch`]: Commands::dispatch
    pub fn new_record(
        device: &DeviceId,
        id_prefix: &str,
        name: &str,
        args: &[String],
        now_ms: i64,
    ) -> Result<CommandRecord, ServiceError> {
        let mut raw = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ServiceError::Internal("random number generator failed".into()))?;
        Ok(CommandRecord {
            id: format!("{id_prefix}{}", hex::encode(raw)),
            device: device.clone(),
            name: name.to_owned(),
            args: serde_json::to_string(args).unwrap_or_else(|_| "[]".into()),
            status: "queued".into(),
            created_ms: now_ms,
            sent_ms: None,
            acked_ms: None,
            result: None,
        })
    }

    /// Delivers a committed command now if its device is connected here,
    /// else tells the node that holds its session.
    pub async fn dispatch(&self, record: &CommandRecord) {
        if !self.deliver(record).await {
            self.bus.publish(Event::CommandQueued {
                device: record.device.clone(),
            });
        }
    }

    /// Delivers the commands queued for `device` (called when it subscribes).
    pub async fn deliver_queued(&self, device: &DeviceId) {
        match self.store.commands(device, true).await {
            Ok(mut queued) => {
                queued.reverse(); // oldest first
                for c in &queued {
                    if !self.deliver(c).await {
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, %device, "could not read queued commands"),
        }
    }

    /// Records acknowledgements from the device bus; delivers queued commands to
    /// devices that subscribe.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            match e {
                Ok(Event::CommandsSubscribed { device }) => self.deliver_queued(&device).await,
                Ok(Event::CommandQueued { device }) if self.sessions.is_connected(&device) => {
                    self.deliver_queued(&device).await;
                }
                Ok(Event::CommandDelivered { device, id, at_ms }) => {
                    self.delivered(&device, &id, at_ms).await;
                }
                Ok(Event::SessionDown { device, .. }) if !self.sessions.is_connected(&device) => {
                    // What was handed to the ended session is queued again.
                    if let Ok(mut handed) = self.handed.lock() {
                        handed.remove(&device);
                    }
                }
                Ok(Event::Message(e)) if e.kind == TopicKind::Acks => self.ack(&e).await,
                Ok(_) => {}
                Err(Missed(n)) => {
                    // A subscription among what was missed must not strand its
                    // device's queued commands: deliver to every connected device.
                    tracing::warn!(
                        missed = n,
                        "commands fell behind the device bus; catching up"
                    );
                    self.deliver_queued_to_connected().await;
                }
            }
        }
    }

    async fn deliver_queued_to_connected(&self) {
        match self.store.queued_command_devices().await {
            Ok(devices) => {
                for d in devices.iter().filter(|d| self.sessions.is_connected(d)) {
                    self.deliver_queued(d).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the devices with queued commands"),
        }
    }

    async fn ack(&self, e: &DeviceEvent) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) else {
            tracing::debug!(device = %e.device, "acknowledgement is not JSON");
            return;
        };
        let (Some(id), ok) = (
            v.get("id").and_then(|i| i.as_str()),
            v.get("ok").and_then(|o| o.as_bool()).unwrap_or(false),
        ) else {
            return;
        };
        if id.starts_with(crate::attestation::QUOTE_ID_PREFIX) {
            return; // a quote: the attestation service's
        }
        let result: String = v
            .get("result")
            .map(|r| r.to_string())
            .unwrap_or_default()
            .chars()
            .take(1024)
            .collect();
        let entry = EntryDraft::success(
            format!("device:{}", e.device),
            "command.ack",
            e.device.as_str(),
        )
        .with_detail(json!({ "command": id, "ok": ok }));
        if let Err(err) = self
            .store
            .commit(
                vec![Change::CommandAcked {
                    id: id.chars().take(32).collect(),
                    device: e.device.clone(),
                    ok,
                    result,
                    at_ms: e.at_ms,
                }],
                vec![entry],
            )
            .await
        {
            tracing::warn!(error = %err, device = %e.device, "acknowledgement refused");
        }
    }
}
