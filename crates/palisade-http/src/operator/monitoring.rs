//! Alerts (list, show, acknowledge, resolve, live stream) and the per-device
//! forensic timeline with its audit inclusion proofs.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use palisade_core::role::Access;
use palisade_core::{AlertState, DeviceId};
use palisade_store::AlertFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::parse_id;
use crate::error::ApiError;
use crate::error::Body;
use crate::state::OperatorApi;
use crate::views::{AuditEntryView, InclusionView, TimelineItem, TimelineView};
use palisade_control::alerts::AlertView;

/// Alert list filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `open`, `acknowledged` or `resolved`.
    state: Option<String>,
    /// Only this device's.
    device: Option<String>,
    /// Only alerts with findings at or after this time (Unix ms).
    since_ms: Option<i64>,
    /// At most this many, newest first (default 100, at most 10 000).
    limit: Option<u32>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "monitoring", params(AlertQuery),
    responses((status = 200, body = Vec<AlertView>)))]
pub async fn list_alerts(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    c.require(&s, Access::Read, "list alerts").await?;
    let state = match &q.state {
        Some(st) => Some(AlertState::parse(st).map_err(|_| {
            ApiError::bad_request(
                "bad_state",
                format!("state {st:?}: open, acknowledged or resolved"),
            )
        })?),
        None => None,
    };
    let device = match &q.device {
        Some(d) => Some(
            parse_id::<DeviceId>(&s, &c, "alert.read", d)
                .await?
                .to_string(),
        ),
        None => None,
    };
    let list = s
        .store
        .alerts(&AlertFilter {
            state,
            device,
            since_ms: q.since_ms,
            limit: q.limit.unwrap_or(100).clamp(1, 10_000),
        })
        .await?;
    Ok(Json(list.iter().map(AlertView::from).collect()))
}

fn check_alert_id(id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() == 19 && id.starts_with("al-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no alert {:?}: ids look like al-0123456789abcdef",
            id.chars().take(40).collect::<String>()
        )))
    }
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "monitoring", params(("id" = String, Path)),
    responses((status = 200, body = AlertView), (status = 404)))]
pub async fn get_alert(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<AlertView>, ApiError> {
    c.require(&s, Access::Read, "read alerts").await?;
    check_alert_id(&id)?;
    let a = s
        .store
        .alert(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("alert {id} not found")))?;
    Ok(Json((&a).into()))
}

/// An operator's note with an acknowledgement or resolution.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertNote {
    /// Why (kept with the alert and in the audit log).
    #[serde(default)]
    note: String,
}

/// Acknowledge (`ack`) or resolve (`resolve`) an alert; audited.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/{action}", tag = "monitoring",
    params(("id" = String, Path), ("action" = String, Path)), request_body = AlertNote,
    responses((status = 200, body = AlertView), (status = 404), (status = 409)))]
pub async fn alert_action(
    State(s): State<OperatorApi>,
    c: Caller,
    Path((id, action)): Path<(String, String)>,
    Body(req): Body<AlertNote>,
) -> Result<Json<AlertView>, ApiError> {
    c.require(&s, Access::Write, "change alerts").await?;
    check_alert_id(&id)?;
    let to = match action.as_str() {
        "ack" => AlertState::Acknowledged,
        "resolve" => AlertState::Resolved,
        _ => {
            return Err(ApiError::not_found(format!(
                "no alert action {:?}: ack or resolve",
                action.chars().take(40).collect::<String>()
            )));
        }
    };
    Ok(Json(
        s.alerts.set_state(&c.actor(), &id, to, &req.note).await?,
    ))
}

/// Alert events as they happen (server-sent events: `opened`, `updated`,
/// `acknowledged`, `resolved`; data is the event's JSON).
#[utoipa::path(get, path = "/api/v1/alerts/stream", tag = "monitoring",
    responses((status = 200, description = "text/event-stream")))]
pub async fn alert_stream(
    State(s): State<OperatorApi>,
    c: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    c.require(&s, Access::Read, "stream alerts").await?;
    let rx = s.alerts.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(e) => {
                let data = serde_json::to_string(&e).unwrap_or_default();
                Event::default().event(e.event).data(data)
            }
            // A slow reader is told how much it missed.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(json!({ "missed": n }).to_string()),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Timeline range and options.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    /// From (Unix ms; default: a week ago).
    since_ms: Option<i64>,
    /// To (Unix ms; default: now).
    until_ms: Option<i64>,
    /// Include audit inclusion proofs (the exportable bundle).
    #[serde(default)]
    proofs: bool,
}

/// Most items in one timeline.
const MAX_ITEMS: u32 = 20_000;

/// A device's timeline.
#[utoipa::path(get, path = "/api/v1/devices/{id}/timeline", tag = "monitoring",
    params(("id" = String, Path), TimelineQuery), responses((status = 200, body = TimelineView), (status = 404)))]
pub async fn device_timeline(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<TimelineView>, ApiError> {
    c.require(&s, Access::Read, "read device timelines").await?;
    let id: DeviceId = parse_id(&s, &c, "device.timeline", &id).await?;
    Ok(Json(
        timeline(&s, &id, q.since_ms, q.until_ms, q.proofs).await?,
    ))
}

/// A device's timeline from `since_ms` (default: a week before `until_ms`) to
/// `until_ms` (default: now), with inclusion proofs of its audit entries when
/// `with_proofs`: what the API exports and the console downloads.
pub async fn timeline(
    s: &crate::state::Services,
    id: &DeviceId,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    with_proofs: bool,
) -> Result<TimelineView, ApiError> {
    let now = s.clock.now_ms();
    let until = until_ms.unwrap_or(now);
    let since = since_ms.unwrap_or(until - 7 * 86_400_000);
    let mut items = Vec::new();
    let mut proofs = Vec::new();
    for e in s.store.audit_entries_about(id.as_str(), MAX_ITEMS).await? {
        let en = &e.entry;
        if en.time_ms < since || en.time_ms > until {
            continue;
        }
        items.push(TimelineItem {
            at_ms: en.time_ms,
            source: "audit".into(),
            kind: en.action.clone(),
            summary: format!(
                "{} {} by {} ({})",
                en.action, en.subject, en.actor, en.outcome
            ),
            detail: serde_json::from_str(&en.detail).unwrap_or(Value::Null),
            audit_index: Some(en.index),
        });
        if with_proofs {
            let p = s.store.inclusion_proof(en.index).await?;
            proofs.push(InclusionView {
                entry: AuditEntryView::from(&p.entry),
                path: p.path.iter().map(hex::encode).collect(),
                checkpoint: p.head.note,
            });
        }
    }
    let alerts = s
        .store
        .alerts(&AlertFilter {
            device: Some(id.to_string()),
            since_ms: Some(since),
            limit: MAX_ITEMS,
            ..AlertFilter::default()
        })
        .await?;
    for a in alerts.iter().filter(|a| a.first_ms <= until) {
        items.push(TimelineItem {
            at_ms: a.first_ms,
            source: "alert".into(),
            kind: a.detector.clone(),
            summary: format!("[{}] {} ({}, {}×)", a.severity, a.summary, a.state, a.count),
            detail: serde_json::to_value(AlertView::from(a)).unwrap_or(Value::Null),
            audit_index: None,
        });
    }
    for e in s
        .store
        .device_events(id.as_str(), since, until, MAX_ITEMS)
        .await?
    {
        items.push(TimelineItem {
            at_ms: e.at_ms,
            source: "event".into(),
            kind: e.kind,
            summary: e.summary,
            detail: serde_json::from_str(&e.detail).unwrap_or(Value::Null),
            audit_index: None,
        });
    }
    items.sort_by_key(|i| (i.at_ms, i.audit_index.unwrap_or(u64::MAX)));
    Ok(TimelineView {
        device: id.to_string(),
        generated_ms: now,
        since_ms: since,
        until_ms: until,
        items,
        proofs,
        log_key: s.audit_vkey.to_string(),
    })
}
