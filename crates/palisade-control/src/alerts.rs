//! Alerts: findings de-duplicated into alerts with a lifecycle (open,
//! acknowledged, resolved), rate-limited, audited when opened, acknowledged,
//! resolved or answered automatically, and published to live subscribers
//! (server-sent events, webhooks, syslog).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;

use palisade_audit::EntryDraft;
use palisade_core::{AlertState, Clock, DeviceId, DeviceState};
use palisade_detect::detect::Finding;
use palisade_store::{AlertFilter, AlertRecord, Change, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::config::MonitoringConfig;
use crate::error::ServiceError;
use crate::events::{Event, EventBus, Subscription};
use crate::fleet::Fleet;
use crate::metrics::Metrics;

/// An alert as the API, the stream, webhooks and syslog show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertView {
    /// Id.
    pub id: String,
    /// The detector.
    pub detector: String,
    /// `low`, `medium`, `high`, `critical`.
    pub severity: String,
    /// The device, when known.
    pub device: Option<String>,
    /// The network peer, when no device is known.
    pub peer: Option<String>,
    /// `open`, `acknowledged`, `resolved`.
    #[schema(value_type = String)]
    pub state: AlertState,
    /// One line.
    pub summary: String,
    /// The first finding's evidence.
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// The latest finding's evidence.
    #[schema(value_type = Object)]
    pub last_evidence: Value,
    /// Findings merged into this alert.
    pub count: u64,
    /// First finding, Unix ms.
    pub first_ms: i64,
    /// Latest finding, Unix ms.
    pub last_ms: i64,
    /// Who acknowledged it, when.
    pub acked_by: Option<String>,
    /// When it was acknowledged, Unix ms.
    pub acked_ms: Option<i64>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// When it was resolved, Unix ms.
    pub resolved_ms: Option<i64>,
    /// Operators' notes.
    pub note: String,
    /// Automatic responses taken.
    #[schema(value_type = Vec<Object>)]
    pub responses: Value,
}

impl From<&AlertRecord> for AlertView {
    fn from(a: &AlertRecord) -> Self {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
        Self {
            id: a.id.clone(),
            detector: a.detector.clone(),
            severity: a.severity.clone(),
            device: a.device.clone(),
            peer: a.peer.clone(),
            state: a.state,
            summary: a.summary.clone(),
            evidence: parse(&a.evidence),
            last_evidence: parse(&a.last_evidence),
            count: a.count,
            first_ms: a.first_ms,
            last_ms: a.last_ms,
            acked_by: a.acked_by.clone(),
            acked_ms: a.acked_ms,
            resolved_by: a.resolved_by.clone(),
            resolved_ms: a.resolved_ms,
            note: a.note.clone(),
            responses: parse(&a.responses),
        }
    }
}

/// Something that happened to an alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    /// `opened`, `updated`, `acknowledged` or `resolved`.
    pub event: &'static str,
    /// The alert after it.
    pub alert: AlertView,
}

/// New-alert times per subject, and overall.
type Recent = (HashMap<String, VecDeque<i64>>, VecDeque<i64>);

/// The alert service.
#[derive(Debug)]
pub struct Alerts {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: MonitoringConfig,
    /// Unresolved alerts by de-duplication key → (id, last "updated" event sent).
    open: Mutex<HashMap<String, (String, i64)>>,
    /// New-alert times, per device and overall (rate limits).
    recent: Mutex<Recent>,
    events: broadcast::Sender<AlertEvent>,
    /// Other nodes hear of alert changes here.
    bus: Arc<dyn EventBus>,
}

/// Actor recorded for what the monitor does by itself.
pub const MONITOR_ACTOR: &str = "system:monitor";

impl Alerts {
    /// The service; call [`Alerts::load`] before raising.
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: MonitoringConfig,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            fleet,
            clock,
            metrics,
            config,
            open: Mutex::new(HashMap::new()),
            recent: Mutex::new((HashMap::new(), VecDeque::new())),
            events,
            bus,
        }
    }

    /// Streams an alert event to this node's subscribers and tells the other
    /// nodes.
    fn publish(&self, event: &'static str, alert: AlertView) {
        self.bus.publish(Event::AlertChanged {
            id: alert.id.clone(),
            change: event.to_owned(),
        });
        let _ = self.events.send(AlertEvent { event, alert });
    }

    /// Follows the other nodes' alert changes: this node's view of open
    /// alerts (so a finding here bumps the alert another node opened) and its
    /// subscribers' stream.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some(e) = bus.recv().await {
            let Ok(Event::AlertChanged { id, change }) = e else {
                continue;
            };
            let event = match change.as_str() {
                "opened" => "opened",
                "updated" => "updated",
                "acknowledged" => "acknowledged",
                "resolved" => "resolved",
                _ => continue,
            };
            let a = match self.store.alert(&id).await {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(alert = %id, error = %e, "could not read an alert another node changed");
                    continue;
                }
            };
            if let Ok(mut m) = self.open.lock() {
                if a.state == AlertState::Resolved {
                    m.remove(&a.dedup_key);
                } else {
                    m.entry(a.dedup_key.clone())
                        .or_insert((a.id.clone(), self.clock.now_ms()));
                }
            }
            let _ = self.events.send(AlertEvent {
                event,
                alert: (&a).into(),
            });
        }
    }

    /// Loads the unresolved alerts' keys.
    pub async fn load(&self) -> Result<(), ServiceError> {
        let mut all = Vec::new();
        for state in [AlertState::Open, AlertState::Acknowledged] {
            all.extend(
                self.store
                    .alerts(&AlertFilter {
                        state: Some(state),
                        limit: 1_000_000,
                        ..AlertFilter::default()
                    })
                    .await?,
            );
        }
        if let Ok(mut m) = self.open.lock() {
            for a in all {
                m.insert(a.dedup_key, (a.id, 0));
            }
        }
        Ok(())
    }

    /// Live alert events.
    pub fn subscribe(&self) -> broadcast::Receiver<AlertEvent> {
        self.events.subscribe()
    }

    /// The clock.
    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether a new alert about `subject` fits the rate limits (and counts it).
    fn admit(&self, subject: &str, now: i64) -> bool {
        let Ok(mut r) = self.recent.lock() else {
            return false;
        };
        let (per, all) = &mut *r;
        let minute = now - 60_000;
        while all.front().is_some_and(|&t| t <= minute) {
            all.pop_front();
        }
        if all.len() >= self.config.alerts_per_min as usize {
            return false;
        }
        if per.len() > 100_000 {
            per.retain(|_, v| v.back().is_some_and(|&t| t > minute));
        }
        let mine = per.entry(subject.to_owned()).or_default();
        while mine.front().is_some_and(|&t| t <= minute) {
            mine.pop_front();
        }
        if mine.len() >= self.config.alerts_per_device_per_min as usize {
            return false;
        }
        mine.push_back(now);
        all.push_back(now);
        true
    }

    /// Turns findings into new or updated alerts (one commit), publishes
    /// them, and takes the configured automatic responses for new ones.
    pub async fn raise(&self, findings: Vec<Finding>) {
        let now = self.now_ms();
        let mut changes = Vec::new();
        let mut audit = Vec::new();
        let mut opened: Vec<AlertRecord> = Vec::new();
        let mut updated: Vec<String> = Vec::new();
        // Findings with the same key in this batch fold into one.
        let mut batch: Vec<(Finding, u64)> = Vec::new();
        for f in findings {
            match batch.iter_mut().find(|(b, _)| b.key == f.key) {
                Some((b, n)) => {
                    *n += 1;
                    b.evidence = f.evidence;
                    b.at_ms = f.at_ms;
                }
                None => batch.push((f, 1)),
            }
        }
        for (f, n) in batch {
            let existing = self.open.lock().ok().and_then(|m| m.get(&f.key).cloned());
            if let Some((id, last_sent)) = existing {
                changes.push(Change::BumpAlert {
                    id: id.clone(),
                    count: n,
                    last_ms: f.at_ms,
                    last_evidence: f.evidence.to_string(),
                });
                // Subscribers hear of repeats at most every 10 s per alert.
                if now - last_sent >= 10_000 {
                    if let Ok(mut m) = self.open.lock()
                        && let Some(e) = m.get_mut(&f.key)
                    {
                        e.1 = now;
                    }
                    updated.push(id);
                }
                self.metrics.alert_finding(f.detector.as_str(), "merged");
                continue;
            }
            let subject = f
                .device
                .clone()
                .or_else(|| f.peer.clone())
                .unwrap_or_default();
            // Per subject and detector: a flood of one kind (violations
            // from a scanning device) must not starve another (the scan).
            if !self.admit(&format!("{subject}|{}", f.detector.as_str()), now) {
                self.metrics
                    .alert_finding(f.detector.as_str(), "rate_limited");
                tracing::warn!(detector = f.detector.as_str(), %subject, summary = %f.summary, "alert dropped by the rate limit");
                continue;
            }
            let id = new_id();
            let rec = AlertRecord {
                id: id.clone(),
                dedup_key: f.key.clone(),
                detector: f.detector.as_str().to_owned(),
                severity: f.severity.as_str().to_owned(),
                device: f.device.clone(),
                peer: f.peer.clone(),
                state: AlertState::Open,
                summary: f.summary.chars().take(500).collect(),
                evidence: f.evidence.to_string(),
                last_evidence: f.evidence.to_string(),
                count: n,
                first_ms: f.at_ms,
                last_ms: f.at_ms,
                acked_by: None,
                acked_ms: None,
                resolved_by: None,
                resolved_ms: None,
                note: String::new(),
                responses: "[]".into(),
            };
            audit.push(
                EntryDraft::success(MONITOR_ACTOR, "alert.open", subject.clone()).with_detail(
                    json!({
                        "alert": id, "detector": rec.detector, "severity": rec.severity,
                        "summary": rec.summary,
                    }),
                ),
            );
            changes.push(Change::OpenAlert(rec.clone()));
            if let Ok(mut m) = self.open.lock() {
                m.insert(f.key.clone(), (id, now));
            }
            self.metrics.alert_finding(f.detector.as_str(), "opened");
            tracing::warn!(alert = %rec.id, detector = %rec.detector, severity = %rec.severity, %subject, summary = %rec.summary, security_event = "alert", "alert opened");
            opened.push(rec);
        }
        if changes.is_empty() {
            return;
        }
        if let Err(e) = self.store.commit(changes, audit).await {
            tracing::error!(error = %e, "could not record alerts");
            // Forget what was not stored so the next finding opens it again.
            if let Ok(mut m) = self.open.lock() {
                for a in &opened {
                    m.remove(&a.dedup_key);
                }
            }
            return;
        }
        for a in &opened {
            self.publish("opened", a.into());
        }
        for id in updated {
            if let Ok(Some(a)) = self.store.alert(&id).await {
                self.publish("updated", (&a).into());
            }
        }
        for a in opened {
            self.respond(&a).await;
        }
    }

    /// The automatic responses configured for the alert's detector.
    async fn respond(&self, a: &AlertRecord) {
        let Some(device) = a.device.as_deref().and_then(|d| DeviceId::parse(d).ok()) else {
            return;
        };
        let r = &self.config.respond;
        let mut taken = Vec::new();
        if r.quarantine.contains(&a.detector) {
            let outcome = self
                .fleet
                .set_device_state(MONITOR_ACTOR, &device, DeviceState::Quarantined)
                .await;
            taken.push(json!({ "action": "quarantine", "ok": outcome.is_ok(),
                "error": outcome.err().map(|e| e.to_string()) }));
        }
        if r.revoke.contains(&a.detector) {
            let outcome = self
                .fleet
                .revoke_device(MONITOR_ACTOR, &device, "alert")
                .await;
            taken.push(json!({ "action": "revoke", "ok": outcome.is_ok(),
                "error": outcome.err().map(|e| e.to_string()) }));
        }
        if taken.is_empty() {
            return;
        }
        let audit = vec![
            EntryDraft::success(MONITOR_ACTOR, "alert.respond", device.as_str())
                .with_detail(json!({ "alert": a.id, "detector": a.detector, "responses": taken })),
        ];
        let change = Change::SetAlertResponses {
            id: a.id.clone(),
            responses: Value::from(taken).to_string(),
        };
        if let Err(e) = self.store.commit(vec![change], audit).await {
            tracing::error!(error = %e, alert = %a.id, "could not record the automatic response");
        }
    }

    /// Acknowledges or resolves an alert (audited).
    pub async fn set_state(
        &self,
        actor: &str,
        id: &str,
        to: AlertState,
        note: &str,
    ) -> Result<AlertView, ServiceError> {
        let (from, action, event) = match to {
            AlertState::Acknowledged => (vec![AlertState::Open], "alert.ack", "acknowledged"),
            AlertState::Resolved => (
                vec![AlertState::Open, AlertState::Acknowledged],
                "alert.resolve",
                "resolved",
            ),
            AlertState::Open => {
                return Err(ServiceError::BadRequest {
                    code: "bad_state",
                    message: "an alert cannot be reopened: a new finding opens a new alert".into(),
                });
            }
        };
        if note.len() > 2000 {
            return Err(ServiceError::BadRequest {
                code: "note_too_long",
                message: "the note is at most 2000 bytes".into(),
            });
        }
        let a = self
            .store
            .alert(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("alert {id} not found")))?;
        let subject = a.device.clone().or(a.peer.clone()).unwrap_or_default();
        let audit = vec![
            EntryDraft::success(actor, action, subject)
                .with_detail(json!({ "alert": id, "detector": a.detector, "note": note })),
        ];
        self.store
            .commit(
                vec![Change::SetAlertState {
                    id: id.to_owned(),
                    from,
                    to,
                    by: actor.to_owned(),
                    at_ms: self.now_ms(),
                    note: note.to_owned(),
                }],
                audit,
            )
            .await?;
        if to == AlertState::Resolved
            && let Ok(mut m) = self.open.lock()
        {
            m.remove(&a.dedup_key);
        }
        let after = self
            .store
            .alert(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("alert {id} not found")))?;
        let view = AlertView::from(&after);
        self.publish(event, view.clone());
        Ok(view)
    }
}

fn new_id() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format!("al-{}", hex::encode(b))
}
