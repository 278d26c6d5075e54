//! A device's end: `palisade device decommission D [--wipe] [--reason R]`.
//!
//! Without a wipe, one commit decommissions the device: every certificate
//! revoked, the decommissioning (the tombstone) recorded, its rollout places
//! withdrawn; then its sessions close on every node, a new CRL follows, and
//! the next site bundle leaves it out (the edges drop its allowlist).
//!
//! With a wipe, the device first goes to quarantine (control plane only, no
//! re-enrolment) and the director signs a wipe command for it (device,
//! certificate serial, nonce, deadline; `palisade_core::wipe`), queued on its
//! commands topic like any command. Its answer closes the wipe:
//! * a receipt signed with the key of the certificate the command named, for
//!   the nonce sent: the device is decommissioned with `wipe: verified` and
//!   the receipt is kept;
//! * a refusal or a receipt that does not verify is audited as denied and
//!   changes nothing: the wipe stays pending;
//! * no valid receipt by the deadline (`[decommission] wipe_timeout_s`): the
//!   device is decommissioned with `wipe: unconfirmed`.
//!
//! Either way the id is a tombstone: it cannot enrol, connect or be
//! registered again, until an admin reinstates it (audited, with a reason),
//! which brings it back as `registered` with no credentials.

use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::wipe::{self, WipeCommand};
use palisade_core::{Clock, DeviceId, DeviceState, RolloutDeviceState, RolloutState};
use palisade_mqtt::TopicKind;
use palisade_store::{
    Change, DecommissionRecord, DeviceRecord, RolloutDeviceRecord, Store, WipeStatus,
};
use ring::rand::SecureRandom;
use serde_json::json;

use crate::commands::Commands;
use crate::error::ServiceError;
use crate::events::{DeviceEvent, Event, Missed, Subscription};
use crate::fleet::Fleet;

/// Longest reason accepted.
pub const MAX_REASON: usize = 500;

/// The decommissioning service.
#[derive(Debug)]
pub struct Decommissioning {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    commands: Arc<Commands>,
    tuf: crate::tuf::Repository,
    clock: Arc<dyn Clock>,
    wipe_timeout_ms: i64,
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code: "bad_decommission",
        message: message.into(),
    }
}

fn check_reason(reason: &str) -> Result<(), ServiceError> {
    if reason.trim().is_empty()
        || reason.chars().count() > MAX_REASON
        || reason.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "a reason is 1 to {MAX_REASON} printable characters"
        )));
    }
    Ok(())
}

impl Decommissioning {
    /// Composes the service; a device has `wipe_timeout_s` to answer a wipe.
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        commands: Arc<Commands>,
        tuf: crate::tuf::Repository,
        clock: Arc<dyn Clock>,
        wipe_timeout_s: u64,
    ) -> Self {
        Self {
            store,
            fleet,
            commands,
            tuf,
            clock,
            wipe_timeout_ms: i64::try_from(wipe_timeout_s.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }

    async fn device(&self, id: &DeviceId) -> Result<DeviceRecord, ServiceError> {
        self.store
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("device {id} not found")))
    }

    /// The device's decommissioning, if any.
    pub async fn get(&self, id: &DeviceId) -> Result<Option<DecommissionRecord>, ServiceError> {
        Ok(self.store.decommission(id).await?)
    }

    /// Its rollout places not settled yet, withdrawn.
    async fn withdraw(
        &self,
        actor: &str,
        id: &DeviceId,
        now: i64,
    ) -> Result<Vec<RolloutDeviceRecord>, ServiceError> {
        let mut out = vec![];
        for r in self.store.rollouts().await? {
            if r.state == RolloutState::Cancelled {
                continue;
            }
            for mut m in self.store.rollout_devices(&r.name).await? {
                if &m.device == id
                    && matches!(
                        m.state,
                        RolloutDeviceState::Pending | RolloutDeviceState::Assigned
                    )
                {
                    m.state = RolloutDeviceState::Withdrawn;
                    m.detail = format!("withdrawn: decommissioned by {actor}");
                    m.updated_ms = now;
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Decommissions a device, with a verified wipe if asked (see the module
    /// documentation); returns the decommissioning as recorded.
    pub async fn decommission(
        &self,
        actor: &str,
        id: &DeviceId,
        reason: &str,
        wipe: bool,
    ) -> Result<DecommissionRecord, ServiceError> {
        check_reason(reason)?;
        let device = self.device(id).await?;
        if let Some(d) = self.store.decommission(id).await? {
            return Err(ServiceError::Conflict(format!(
                "device {id} is already being decommissioned or decommissioned (wipe: {})",
                d.wipe.as_str()
            )));
        }
        if device.state == DeviceState::Decommissioned {
            return Err(ServiceError::Conflict(format!(
                "device {id} is already decommissioned"
            )));
        }
        let now = self.clock.now_ms();
        let withdrawn = self.withdraw(actor, id, now).await?;
        let certs = self.fleet.valid_certificates(id).await?;
        let current = certs.first().filter(|_| device.state.may_connect());
        let mut record = DecommissionRecord::immediate(id, actor, reason, now);
        let mut audit = vec![
            EntryDraft::success(actor, "device.decommission", id.as_str()).with_detail(json!({
                "reason": reason, "wipe": wipe, "rollouts_withdrawn": withdrawn.len(),
            })),
        ];
        let mut changes = vec![];
        if !withdrawn.is_empty() {
            changes.push(Change::UpsertRolloutDevices(withdrawn));
        }
        let (Some(cert), true) = (current, wipe) else {
            // Decommissioned at once.
            if wipe {
                record.wipe = WipeStatus::Unconfirmed;
                record.detail = format!(
                    "no wipe was sent: the device is {} and holds no valid certificate to answer with",
                    device.state
                );
            }
            changes.push(Change::RecordDecommission(record.clone()));
            self.end(actor, id, device.state, now, changes, audit)
                .await?;
            return Ok(record);
        };
        let mut raw = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| ServiceError::Internal("random number generator failed".into()))?;
        let cmd = WipeCommand {
            device: id.to_string(),
            serial: cert.serial.clone(),
            nonce: hex::encode(raw),
            issued_ms: now,
            expires_ms: now.saturating_add(self.wipe_timeout_ms),
        };
        let signed = self
            .tuf
            .sign_wipe(&cmd)
            .map_err(|e| ServiceError::Internal(format!("signing the wipe command: {e}")))?;
        let command = Commands::new_record(
            id,
            wipe::ID_PREFIX,
            wipe::COMMAND_NAME,
            &wipe::command_args(&signed),
            now,
        )?;
        record.wipe = WipeStatus::Pending;
        record.nonce = Some(cmd.nonce.clone());
        record.serial = Some(cmd.serial.clone());
        record.deadline_ms = Some(cmd.expires_ms);
        record.completed_ms = None;
        if device.state != DeviceState::Quarantined {
            changes.push(Change::SetDeviceState {
                id: id.clone(),
                expected: device.state,
                to: DeviceState::Quarantined,
                at_ms: now,
            });
            audit.push(
                EntryDraft::success(actor, "device.state", id.as_str()).with_detail(json!({
                    "from": device.state.as_str(), "to": "quarantined",
                    "why": "wipe pending",
                })),
            );
        }
        changes.push(Change::RecordDecommission(record.clone()));
        changes.push(Change::InsertCommand(command.clone()));
        audit.push(
            EntryDraft::success(actor, "device.wipe.send", id.as_str()).with_detail(json!({
                "command": command.id, "nonce": cmd.nonce, "serial": cmd.serial,
                "deadline_ms": cmd.expires_ms,
            })),
        );
        self.store.commit(changes, audit).await?;
        self.commands.dispatch(&command).await;
        Ok(record)
    }

    /// Closes a pending wipe and decommissions the device (one commit:
    /// state, revocations, the wipe's outcome; compare-and-set on both).
    async fn close(
        &self,
        actor: &str,
        rec: &DecommissionRecord,
        wipe: WipeStatus,
        receipt: Option<String>,
        destroyed: Vec<String>,
        detail: String,
    ) -> Result<(), ServiceError> {
        let id = &rec.device;
        let device = self.device(id).await?;
        let now = self.clock.now_ms();
        let changes = vec![Change::CompleteWipe {
            device: id.clone(),
            nonce: rec.nonce.clone().unwrap_or_default(),
            wipe,
            receipt,
            destroyed: destroyed.clone(),
            detail: detail.clone(),
            at_ms: now,
        }];
        let audit = vec![
            EntryDraft::success(actor, "device.wipe", id.as_str()).with_detail(json!({
                "wipe": wipe.as_str(), "detail": detail, "destroyed": destroyed,
            })),
        ];
        self.end(actor, id, device.state, now, changes, audit).await
    }

    /// Commits `changes` with the device's move from `from` to
    /// decommissioned and the revocation of its certificates, then closes its
    /// sessions and renews the CRL.
    async fn end(
        &self,
        actor: &str,
        id: &DeviceId,
        from: DeviceState,
        now: i64,
        mut changes: Vec<Change>,
        mut audit: Vec<EntryDraft>,
    ) -> Result<(), ServiceError> {
        if from != DeviceState::Decommissioned {
            changes.push(Change::SetDeviceState {
                id: id.clone(),
                expected: from,
                to: DeviceState::Decommissioned,
                at_ms: now,
            });
            audit.push(
                EntryDraft::success(actor, "device.state", id.as_str())
                    .with_detail(json!({ "from": from.as_str(), "to": "decommissioned" })),
            );
        }
        let revoked = self
            .fleet
            .revocations(actor, id, now, &mut changes, &mut audit)
            .await?;
        self.store.commit(changes, audit).await?;
        self.fleet.retired(id, revoked);
        Ok(())
    }

    /// A device's answer to its wipe command.
    async fn answer(&self, e: &DeviceEvent) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) else {
            return;
        };
        let Some(cmd_id) = v.get("id").and_then(|i| i.as_str()) else {
            return;
        };
        if !cmd_id.starts_with(wipe::ID_PREFIX) {
            return;
        }
        let actor = format!("device:{}", e.device);
        let rec = match self.store.decommission(&e.device).await {
            Ok(Some(r)) if r.wipe == WipeStatus::Pending => r,
            Ok(_) => {
                self.deny(
                    &actor,
                    &e.device,
                    "a wipe answer arrived but no wipe is pending",
                )
                .await;
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, device = %e.device, "could not read the decommissioning");
                return;
            }
        };
        let ok = v.get("ok").and_then(|o| o.as_bool()).unwrap_or(false);
        let result = v.get("result").cloned().unwrap_or_default();
        if !ok {
            let why: String = result
                .as_str()
                .unwrap_or("refused without a reason")
                .chars()
                .take(500)
                .collect();
            self.deny(
                &actor,
                &e.device,
                &format!("the device did not wipe: {why}"),
            )
            .await;
            return;
        }
        match self.verify(&rec, &result).await {
            Ok((destroyed, receipt)) => {
                let serial = rec.serial.clone().unwrap_or_default();
                let detail = format!("receipt signed with the key of certificate {serial}");
                if let Err(err) = self
                    .close(
                        &actor,
                        &rec,
                        WipeStatus::Verified,
                        Some(receipt),
                        destroyed,
                        detail,
                    )
                    .await
                {
                    tracing::warn!(error = %err, device = %e.device, "could not record the verified wipe");
                } else {
                    tracing::info!(device = %e.device, "wipe verified; device decommissioned");
                }
            }
            Err(why) => {
                self.deny(&actor, &e.device, &format!("wipe receipt refused: {why}"))
                    .await;
            }
        }
    }

    /// Checks a receipt against the certificate the command named.
    async fn verify(
        &self,
        rec: &DecommissionRecord,
        result: &serde_json::Value,
    ) -> Result<(Vec<String>, String), String> {
        let (receipt, payload, signature) =
            wipe::parse_receipt(result).map_err(|e| e.to_string())?;
        let serial = rec.serial.as_deref().unwrap_or_default();
        let cert = self
            .store
            .certificate(serial)
            .await
            .map_err(|e| e.to_string())?
            .filter(|c| c.device.as_ref() == Some(&rec.device))
            .ok_or_else(|| format!("certificate {serial} of the device is not on record"))?;
        let public = palisade_pki::public_key_raw_of(&cert.der).map_err(|e| e.to_string())?;
        wipe::verify_receipt(
            &receipt,
            &payload,
            &signature,
            &public,
            rec.device.as_str(),
            serial,
            rec.nonce.as_deref().unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
        Ok((receipt.destroyed, result.to_string()))
    }

    async fn deny(&self, actor: &str, device: &DeviceId, reason: &str) {
        tracing::warn!(%device, reason, "wipe answer refused");
        let entry = EntryDraft::denied(actor, "device.wipe", device.as_str())
            .with_detail(json!({ "reason": reason }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused wipe answer");
        }
    }

    /// Decommissions, with `wipe: unconfirmed`, every device whose wipe is
    /// still pending past its deadline; returns how many.
    pub async fn sweep(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now_ms();
        let mut n = 0;
        for rec in self.store.decommissions(Some(WipeStatus::Pending)).await? {
            if rec.deadline_ms.is_some_and(|d| d <= now) {
                let detail = "no valid receipt by the deadline".to_owned();
                match self
                    .close(
                        "wipe-deadline",
                        &rec,
                        WipeStatus::Unconfirmed,
                        None,
                        vec![],
                        detail,
                    )
                    .await
                {
                    Ok(()) => n += 1,
                    // Another node closed it first.
                    Err(ServiceError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// Lifts a decommissioning's tombstone: the device comes back as
    /// `registered`, with no credentials, to enrol afresh (an admin action,
    /// audited with its reason).
    pub async fn reinstate(
        &self,
        actor: &str,
        id: &DeviceId,
        reason: &str,
    ) -> Result<DeviceRecord, ServiceError> {
        check_reason(reason)?;
        let device = self.device(id).await?;
        let rec = self.store.decommission(id).await?;
        if device.state != DeviceState::Decommissioned
            || rec.as_ref().is_some_and(|r| r.wipe == WipeStatus::Pending)
        {
            return Err(ServiceError::Conflict(format!(
                "device {id} is {}{}: only a decommissioned device is reinstated",
                device.state,
                if rec.is_some() {
                    " with a wipe pending"
                } else {
                    ""
                }
            )));
        }
        let now = self.clock.now_ms();
        self.store
            .commit(
                vec![
                    Change::ClearDecommission { device: id.clone() },
                    Change::SetDeviceState {
                        id: id.clone(),
                        expected: DeviceState::Decommissioned,
                        to: DeviceState::Registered,
                        at_ms: now,
                    },
                ],
                vec![
                    EntryDraft::success(actor, "device.reinstate", id.as_str()).with_detail(
                        json!({
                            "reason": reason,
                            "was": rec.map(|r| json!({
                                "decommissioned_by": r.actor, "reason": r.reason,
                                "wipe": r.wipe.as_str(),
                            })),
                        }),
                    ),
                ],
            )
            .await?;
        self.device(id).await
    }

    /// Follows the device bus for answers to wipe commands, and closes
    /// overdue wipes every `sweep_every`.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription, sweep_every: std::time::Duration) {
        let mut tick = tokio::time::interval(sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = bus.recv() => match e {
                    Some(Ok(Event::Message(e))) if e.kind == TopicKind::Acks => self.answer(&e).await,
                    Some(Ok(_)) => {}
                    Some(Err(Missed(n))) => {
                        tracing::warn!(missed = n, "the decommissioning service fell behind the device bus; a wipe answer may be lost (the deadline closes it)");
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if let Err(e) = self.sweep().await {
                        tracing::warn!(error = %e, "could not close overdue wipes");
                    }
                }
            }
        }
    }
}
