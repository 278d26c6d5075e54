//! Staged rollouts: a release goes to the devices a selector matches, wave by
//! wave. The engine runs on a tick and whenever a device reports: it adds
//! devices that match later, follows each device's reports, pauses the
//! campaign when a wave fails beyond its threshold, advances when enough
//! committed, and issues director assignments within the maintenance window
//! and the concurrency limit — telling each device over its MQTT session.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_audit::EntryDraft;
use palisade_core::{
    Clock, DeviceId, DeviceState, ModelId, RolloutDeviceState, RolloutName, RolloutState, Tag,
};
use palisade_mqtt::{TopicKind, device_topic};
use palisade_release::rollout::{Decision, RolloutSpec, WaveStats, decide, order_key};
use palisade_store::leader::Leadership;
use palisade_store::{
    Change, DeviceFilter, ReleaseRecord, RolloutDeviceRecord, RolloutRecord, Store,
};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::error::ServiceError;
use crate::sessions::{Outbound, Sessions};

/// Most devices one rollout reaches.
pub const MAX_ROLLOUT_DEVICES: u32 = 100_000;
/// How long a director assignment stays valid.
pub const ASSIGNMENT_TTL_MS: i64 = 7 * 86_400_000;

/// The rollout service.
#[derive(Debug)]
pub struct Rollouts {
    store: Arc<dyn Store>,
    tuf: crate::tuf::Repository,
    sessions: Arc<Sessions>,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

/// What the operator asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop issuing assignments.
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Stop for good.
    Cancel,
}

/// Signs and stores the director assignment of `release` for `device` (the
/// device's next counter); the caller commits the returned change.
pub async fn assignment_change(
    store: &dyn Store,
    tuf: &crate::tuf::Repository,
    device: &DeviceId,
    release: &ReleaseRecord,
    now_ms: i64,
) -> Result<(u64, String, Change), ServiceError> {
    let counter = store.assignment(device).await?.map_or(0, |(c, _)| c) + 1;
    let a = palisade_release::director::Assignment {
        device: device.to_string(),
        target: crate::tuf::target_name(release),
        sha256: release.image_sha256.clone(),
        length: release.image_len,
        version: release.version.clone(),
        security_version: release.security_version,
        hardware: release.hardware.clone(),
        expires_ms: now_ms + ASSIGNMENT_TTL_MS,
        counter,
    };
    let signed = tuf
        .sign_assignment(&a)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let text = serde_json::to_string(&signed).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok((
        counter,
        a.target,
        Change::SetAssignment {
            device: device.clone(),
            counter,
            signed: text,
            at_ms: now_ms,
        },
    ))
}

/// Tells a connected device, on its `ota` topic, to check its assignment now
/// (a hint only: the device trusts nothing but the signed assignment).
pub fn notify_device(sessions: &Sessions, device: &DeviceId, counter: u64) -> bool {
    sessions.send(
        device,
        Outbound {
            topic: device_topic(device, TopicKind::Ota),
            payload: Bytes::from(json!({ "assignment": counter }).to_string()),
            command: None,
        },
    )
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::BadRequest {
        code: "bad_rollout",
        message: message.into(),
    }
}

impl Rollouts {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        tuf: crate::tuf::Repository,
        sessions: Arc<Sessions>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            tuf,
            sessions,
            clock,
            wake: Notify::new(),
        }
    }

    /// Asks the engine to run now (a device reported, an operator acted).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Creates a rollout of `version` for `model`'s devices.
    pub async fn create(
        &self,
        actor: &str,
        name: &RolloutName,
        model: &ModelId,
        version: &str,
        spec: RolloutSpec,
    ) -> Result<RolloutRecord, ServiceError> {
        spec.validate().map_err(|e| bad(e.to_string()))?;
        for d in &spec.devices {
            DeviceId::parse(d).map_err(|e| bad(e.to_string()))?;
        }
        for t in &spec.tags {
            Tag::parse(t).map_err(|e| bad(e.to_string()))?;
        }
        self.store
            .model(model)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("model {model} not found")))?;
        if !self
            .store
            .releases(Some(model))
            .await?
            .iter()
            .any(|r| r.version == version)
        {
            return Err(ServiceError::NotFound(format!(
                "model {model} has no release {version} (palisade release list)"
            )));
        }
        let now = self.clock.now_ms();
        let rec = RolloutRecord {
            name: name.clone(),
            model: model.clone(),
            release_version: version.to_string(),
            spec: serde_json::to_string(&spec)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
            state: RolloutState::Running,
            wave: 0,
            reason: String::new(),
            created_by: actor.to_string(),
            created_ms: now,
            updated_ms: now,
        };
        self.store
            .commit(
                vec![Change::InsertRollout(rec.clone())],
                vec![
                    EntryDraft::success(actor, "rollout.create", name.as_str()).with_detail(
                        json!({ "model": model.as_str(), "release": version, "spec": spec }),
                    ),
                ],
            )
            .await?;
        self.wake();
        Ok(rec)
    }

    /// One rollout.
    pub async fn get(&self, name: &RolloutName) -> Result<RolloutRecord, ServiceError> {
        self.store
            .rollouts()
            .await?
            .into_iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| ServiceError::NotFound(format!("rollout {name} not found")))
    }

    /// Pauses, resumes or cancels a rollout.
    pub async fn act(
        &self,
        actor: &str,
        name: &RolloutName,
        action: Action,
    ) -> Result<RolloutRecord, ServiceError> {
        let mut r = self.get(name).await?;
        let (to, verb) = match (action, r.state) {
            (Action::Pause, RolloutState::Running) => (RolloutState::Paused, "rollout.pause"),
            (Action::Resume, RolloutState::Paused) => (RolloutState::Running, "rollout.resume"),
            (
                Action::Cancel,
                RolloutState::Running | RolloutState::Paused | RolloutState::Completed,
            ) => (RolloutState::Cancelled, "rollout.cancel"),
            (a, s) => {
                return Err(ServiceError::Conflict(format!(
                    "rollout {name} is {s}: cannot {}",
                    match a {
                        Action::Pause => "pause it",
                        Action::Resume => "resume it (only a paused rollout resumes)",
                        Action::Cancel => "cancel it",
                    }
                )));
            }
        };
        let now = self.clock.now_ms();
        let reason = match action {
            Action::Resume => String::new(),
            _ => format!("{to} by {actor}"),
        };
        self.store
            .commit(
                vec![Change::SetRolloutState {
                    name: name.clone(),
                    state: to,
                    wave: r.wave,
                    reason: reason.clone(),
                    at_ms: now,
                }],
                vec![EntryDraft::success(actor, verb, name.as_str())],
            )
            .await?;
        r.state = to;
        r.reason = reason;
        r.updated_ms = now;
        self.wake();
        Ok(r)
    }

    /// Puts the failed devices of wave `wave` (1-based) back to pending, so the
    /// engine assigns them the release again (with a new counter); audited.
    pub async fn retry_failed(
        &self,
        actor: &str,
        name: &RolloutName,
        wave: u32,
    ) -> Result<usize, ServiceError> {
        let r = self.get(name).await?;
        if r.state == RolloutState::Cancelled {
            return Err(ServiceError::Conflict(format!(
                "rollout {name} is cancelled: nothing is retried"
            )));
        }
        let index = wave
            .checked_sub(1)
            .ok_or_else(|| bad("waves are numbered from 1"))?;
        let now = self.clock.now_ms();
        let retry: Vec<RolloutDeviceRecord> = self
            .store
            .rollout_devices(name)
            .await?
            .into_iter()
            .filter(|m| m.wave == index && m.state == RolloutDeviceState::Failed)
            .map(|mut m| {
                m.state = RolloutDeviceState::Pending;
                m.detail = format!("retried by {actor} after: {}", m.detail);
                m.updated_ms = now;
                m
            })
            .collect();
        if retry.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "rollout {name} has no failed device in wave {wave}"
            )));
        }
        let n = retry.len();
        let devices: Vec<String> = retry.iter().map(|m| m.device.to_string()).collect();
        self.store
            .commit(
                vec![Change::UpsertRolloutDevices(retry)],
                vec![
                    EntryDraft::success(actor, "rollout.retry", name.as_str())
                        .with_detail(json!({ "wave": wave, "devices": devices })),
                ],
            )
            .await?;
        self.wake();
        Ok(n)
    }

    /// Runs the engine until `stop`: every `every`, and when woken, while this
    /// node leads the rollouts.
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        leader: Arc<Leadership>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            // One node drives the rollouts; the others stand by.
            if leader.is_leader()
                && let Err(e) = self.tick().await
            {
                tracing::error!(error = %e, "rollout engine");
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// One pass over the active rollouts.
    pub async fn tick(&self) -> Result<(), ServiceError> {
        let active: Vec<RolloutRecord> = self
            .store
            .rollouts()
            .await?
            .into_iter()
            .filter(|r| r.state.assigns())
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let updates: HashMap<DeviceId, palisade_store::UpdateRecord> = self
            .store
            .updates(None)
            .await?
            .into_iter()
            .map(|u| (u.device.clone(), u))
            .collect();
        for r in active {
            if let Err(e) = self.step(r, &updates).await {
                tracing::error!(error = %e, "rollout step");
            }
        }
        Ok(())
    }

    async fn matching(
        &self,
        r: &RolloutRecord,
        spec: &RolloutSpec,
    ) -> Result<Vec<DeviceId>, ServiceError> {
        let devices = self
            .store
            .devices(&DeviceFilter {
                model: Some(r.model.clone()),
                state: None,
                limit: Some(MAX_ROLLOUT_DEVICES),
            })
            .await?;
        let listed: HashSet<&str> = spec.devices.iter().map(String::as_str).collect();
        let tagged: Option<HashSet<DeviceId>> = if spec.tags.is_empty() {
            None
        } else {
            let tags: Vec<Tag> = spec
                .tags
                .iter()
                .filter_map(|t| Tag::parse(t).ok())
                .collect();
            Some(
                self.store
                    .devices_tagged(&tags)
                    .await?
                    .into_iter()
                    .collect(),
            )
        };
        Ok(devices
            .into_iter()
            .filter(|d| matches!(d.state, DeviceState::Enrolled | DeviceState::Active))
            .filter(|d| listed.is_empty() || listed.contains(d.id.as_str()))
            .filter(|d| tagged.as_ref().is_none_or(|t| t.contains(&d.id)))
            .map(|d| d.id)
            .collect())
    }

    async fn step(
        &self,
        mut r: RolloutRecord,
        updates: &HashMap<DeviceId, palisade_store::UpdateRecord>,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now_ms();
        let spec: RolloutSpec =
            serde_json::from_str(&r.spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let last_wave = u32::try_from(spec.waves.len().saturating_sub(1)).unwrap_or(0);
        let mut members: HashMap<DeviceId, RolloutDeviceRecord> = self
            .store
            .rollout_devices(&r.name)
            .await?
            .into_iter()
            .map(|m| (m.device.clone(), m))
            .collect();
        let mut changed: Vec<RolloutDeviceRecord> = vec![];

        // Devices that match now: the first pass splits them into waves; later
        // ones join the last wave.
        let mut fresh: Vec<DeviceId> = self
            .matching(&r, &spec)
            .await?
            .into_iter()
            .filter(|d| !members.contains_key(d))
            .collect();
        fresh.sort_by_key(|d| order_key(r.name.as_str(), d.as_str()));
        let ends = members.is_empty().then(|| spec.wave_ends(fresh.len()));
        for (i, d) in fresh.into_iter().enumerate() {
            let wave = match &ends {
                Some(ends) => {
                    u32::try_from(ends.iter().position(|e| i < *e).unwrap_or(0)).unwrap_or(0)
                }
                None => last_wave,
            };
            let m = RolloutDeviceRecord {
                rollout: r.name.clone(),
                device: d.clone(),
                wave,
                state: RolloutDeviceState::Pending,
                counter: 0,
                detail: String::new(),
                updated_ms: now,
            };
            changed.push(m.clone());
            members.insert(d, m);
        }

        // Follow the devices' reports.
        for m in members.values_mut() {
            if m.state != RolloutDeviceState::Assigned {
                continue;
            }
            if let Some(u) = updates.get(&m.device).filter(|u| u.counter == m.counter)
                && let Some(to) = RolloutDeviceState::after(u.state)
            {
                m.state = to;
                m.detail = u.detail.clone();
                m.updated_ms = now;
                changed.push(m.clone());
            }
        }

        // Decide on the current wave (a running rollout).
        let mut audit = vec![];
        let mut state_change = false;
        while r.state == RolloutState::Running {
            let mut s = WaveStats::default();
            for m in members
                .values()
                .filter(|m| m.wave == r.wave && m.state != RolloutDeviceState::Withdrawn)
            {
                s.size += 1;
                match m.state {
                    RolloutDeviceState::Committed => s.committed += 1,
                    RolloutDeviceState::Failed => s.failed += 1,
                    RolloutDeviceState::Pending
                    | RolloutDeviceState::Assigned
                    | RolloutDeviceState::Withdrawn => {}
                }
            }
            match decide(&spec, r.wave as usize, s) {
                Decision::Wait => break,
                Decision::Pause(why) => {
                    audit.push(
                        EntryDraft::denied("rollout-engine", "rollout.pause", r.name.as_str())
                            .with_detail(json!({ "reason": why })),
                    );
                    r.state = RolloutState::Paused;
                    r.reason = why;
                    state_change = true;
                }
                Decision::Advance if r.wave >= last_wave => {
                    audit.push(EntryDraft::success(
                        "rollout-engine",
                        "rollout.complete",
                        r.name.as_str(),
                    ));
                    r.state = RolloutState::Completed;
                    state_change = true;
                }
                Decision::Advance => {
                    r.wave += 1;
                    audit.push(
                        EntryDraft::success("rollout-engine", "rollout.wave", r.name.as_str())
                            .with_detail(json!({ "wave": r.wave + 1 })),
                    );
                    state_change = true;
                }
            }
        }

        // Issue assignments: open waves, inside the window, within the limit.
        let mut assigned = vec![];
        let mut changes = vec![];
        if r.state.assigns() && spec.open_at(now) {
            let in_flight = members
                .values()
                .filter(|m| m.state == RolloutDeviceState::Assigned)
                .count();
            let budget = if spec.max_concurrency == 0 {
                usize::MAX
            } else {
                (spec.max_concurrency as usize).saturating_sub(in_flight)
            };
            let open_wave = if r.state == RolloutState::Completed {
                last_wave
            } else {
                r.wave
            };
            let mut pending: Vec<&mut RolloutDeviceRecord> = members
                .values_mut()
                .filter(|m| m.state == RolloutDeviceState::Pending && m.wave <= open_wave)
                .collect();
            pending.sort_by_key(|m| order_key(r.name.as_str(), m.device.as_str()));
            if !pending.is_empty() {
                let release = self
                    .store
                    .releases(Some(&r.model))
                    .await?
                    .into_iter()
                    .find(|x| x.version == r.release_version)
                    .ok_or_else(|| {
                        ServiceError::NotFound(format!("release {} is gone", r.release_version))
                    })?;
                for m in pending.into_iter().take(budget) {
                    let (counter, target, change) =
                        assignment_change(self.store.as_ref(), &self.tuf, &m.device, &release, now)
                            .await?;
                    changes.push(change);
                    audit.push(
                        EntryDraft::success(
                            format!("rollout:{}", r.name),
                            "director.assign",
                            m.device.as_str(),
                        )
                        .with_detail(json!({ "target": target, "counter": counter })),
                    );
                    m.state = RolloutDeviceState::Assigned;
                    m.counter = counter;
                    m.updated_ms = now;
                    changed.push(m.clone());
                    assigned.push((m.device.clone(), counter));
                }
            }
        }
        if changed.is_empty() && !state_change && changes.is_empty() {
            return Ok(());
        }
        // The latest record of each device wins.
        let mut latest: HashMap<DeviceId, RolloutDeviceRecord> = HashMap::new();
        for m in changed {
            latest.insert(m.device.clone(), m);
        }
        changes.push(Change::UpsertRolloutDevices(latest.into_values().collect()));
        if state_change {
            changes.push(Change::SetRolloutState {
                name: r.name.clone(),
                state: r.state,
                wave: r.wave,
                reason: r.reason.clone(),
                at_ms: now,
            });
        }
        self.store.commit(changes, audit).await?;
        for (d, counter) in assigned {
            notify_device(&self.sessions, &d, counter);
        }
        Ok(())
    }
}
