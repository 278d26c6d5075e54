//! The overview: the fleet at a glance — devices by state and model, who is
//! connected, posture and its trend, open alerts, rollouts, expiring
//! certificates, devices past support or behind their update target, edges.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use palisade_core::{AlertState, DeviceState, RolloutState};
use palisade_posture::{Framework, Outcome};
use palisade_store::AlertFilter;

use crate::chrome::{Chrome, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// A rollout in progress.
pub struct RolloutLine {
    name: String,
    model: String,
    release: String,
    state: String,
    wave: u32,
}

/// An edge and what it applied.
pub struct EdgeLine {
    device: String,
    site: String,
    applied: u64,
    reported: String,
    error: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Page {
    chrome: Chrome,
    total: u64,
    by_state: Vec<(String, u64)>,
    by_model: Vec<(String, u64)>,
    connected: usize,
    posture: Option<(String, u64)>,
    trend_svg: String,
    alerts: [(&'static str, u64); 4],
    open_alerts: u64,
    rollouts: Vec<RolloutLine>,
    expiring: Vec<(String, String, String)>,
    behind: u64,
    edges: Vec<EdgeLine>,
}

/// `GET /`
pub async fn page(State(c): State<Console>, who: Person) -> Response {
    let now = c.clock.now_ms();
    let counts = match c.store.device_counts().await {
        Ok(x) => x,
        Err(e) => return store_error(e),
    };
    let mut by_state: BTreeMap<usize, (String, u64)> = BTreeMap::new();
    let mut by_model: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for (model, state, n) in counts {
        if state == DeviceState::Decommissioned {
            continue;
        }
        total += n;
        let pos = DeviceState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or(0);
        by_state.entry(pos).or_insert((state.to_string(), 0)).1 += n;
        *by_model.entry(model.to_string()).or_default() += n;
    }
    let latest = c.posture.latest();
    let posture = latest.as_ref().map(|f| {
        let s = f.summary(Framework::Checklist, |_| true);
        (fmt::score(s.fleet.score()), s.devices)
    });
    // ETSI EN 303 645 5.3 is "updated in time, within its support period".
    let behind = latest.as_ref().map_or(0, |f| {
        let pos = Framework::EtsiEn303645
            .controls()
            .iter()
            .position(|c| c.id == "5.3")
            .unwrap_or(0);
        f.devices
            .iter()
            .filter(|d| d.of(Framework::EtsiEn303645).get(pos) == Some(&Outcome::Fail))
            .count() as u64
    });
    let trend = c
        .posture
        .trend(Framework::Checklist, "fleet", 30)
        .await
        .unwrap_or_default();
    let trend_svg = fmt::line_chart(
        "Fleet checklist score, last 30 days",
        &[(
            "checklist score %",
            "#0b57d0",
            trend.iter().map(|(_, s)| s.unwrap_or(0.0)).collect(),
        )],
    );
    let mut alerts = [("critical", 0), ("high", 0), ("medium", 0), ("low", 0)];
    let mut open_alerts = 0;
    for state in [AlertState::Open, AlertState::Acknowledged] {
        let list = match c
            .store
            .alerts(&AlertFilter {
                state: Some(state),
                limit: 100_000,
                ..AlertFilter::default()
            })
            .await
        {
            Ok(l) => l,
            Err(e) => return store_error(e),
        };
        for a in list {
            open_alerts += 1;
            if let Some(slot) = alerts.iter_mut().find(|(s, _)| *s == a.severity) {
                slot.1 += 1;
            }
        }
    }
    let rollouts = match c.store.rollouts().await {
        Ok(l) => l
            .into_iter()
            .filter(|r| matches!(r.state, RolloutState::Running | RolloutState::Paused))
            .map(|r| RolloutLine {
                name: r.name.to_string(),
                model: r.model.to_string(),
                release: r.release_version,
                state: r.state.to_string(),
                wave: r.wave + 1,
            })
            .collect(),
        Err(e) => return store_error(e),
    };
    let expiring = match c
        .store
        .certificates_expiring(now + 7 * 86_400_000, 20)
        .await
    {
        Ok(l) => l
            .into_iter()
            .map(|x| {
                (
                    x.device
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| x.subject.clone()),
                    x.serial,
                    fmt::when(x.not_after_ms),
                )
            })
            .collect(),
        Err(e) => return store_error(e),
    };
    let edges = match c.store.edges(None).await {
        Ok(l) => l
            .into_iter()
            .map(|e| {
                let status: serde_json::Value = serde_json::from_str(&e.status).unwrap_or_default();
                EdgeLine {
                    device: e.device.to_string(),
                    site: e.site.to_string(),
                    applied: e.applied_version,
                    reported: fmt::ago(now, e.updated_ms),
                    error: status["error"].as_str().unwrap_or("").to_owned(),
                }
            })
            .collect(),
        Err(e) => return store_error(e),
    };
    render(&Page {
        chrome: Chrome::new(&who, "Fleet overview", "overview"),
        total,
        by_state: by_state.into_values().collect(),
        by_model: by_model.into_iter().collect(),
        connected: c.sessions.count(),
        posture,
        trend_svg,
        alerts,
        open_alerts,
        rollouts,
        expiring,
        behind,
        edges,
    })
}
