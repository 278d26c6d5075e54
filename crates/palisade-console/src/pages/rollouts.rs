//! Rollouts: every campaign with its progress, and one campaign's waves, its
//! devices and what each reported; pause, resume, cancel (confirmed) and
//! retrying a wave's failed devices.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_control::rollouts::Action;
use palisade_core::RolloutDeviceState;
use palisade_core::RolloutName;
use palisade_core::role::Access;
use serde::Deserialize;

use crate::auth::{check_form, encode, require};
use crate::chrome::{Chrome, error_page, render, service_error, store_error};
use crate::fmt;
use crate::{Console, Person};

/// A rollout line.
pub struct Line {
    name: String,
    model: String,
    release: String,
    state: String,
    wave: u32,
    waves: usize,
    created: String,
    by: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "rollouts.html")]
struct List {
    chrome: Chrome,
    lines: Vec<Line>,
}

/// The waves in a stored spec: their cumulative sizes, for people.
fn wave_sizes(spec: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
    v["waves"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|x| {
                    if let Some(p) = x["percent"].as_u64() {
                        format!("{p} % of the devices")
                    } else if let Some(n) = x["count"].as_u64() {
                        format!("{n} devices")
                    } else {
                        x.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /rollouts`
pub async fn list(State(c): State<Console>, who: Person) -> Response {
    let mut rollouts = match c.store.rollouts().await {
        Ok(l) => l,
        Err(e) => return store_error(e),
    };
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    let lines = rollouts
        .into_iter()
        .map(|r| Line {
            waves: wave_sizes(&r.spec).len(),
            name: r.name.to_string(),
            model: r.model.to_string(),
            release: r.release_version,
            state: r.state.to_string(),
            wave: r.wave + 1,
            created: fmt::when(r.created_ms),
            by: r.created_by,
            reason: r.reason,
        })
        .collect();
    render(&List {
        chrome: Chrome::new(&who, "Rollouts", "rollouts"),
        lines,
    })
}

/// One wave's progress.
pub struct WaveLine {
    number: u32,
    size: String,
    devices: usize,
    committed: usize,
    failed: usize,
    active: usize,
    current: bool,
}

/// One device in the campaign.
pub struct DeviceLine {
    device: String,
    wave: u32,
    state: String,
    counter: u64,
    detail: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "rollout.html")]
struct Page {
    chrome: Chrome,
    name: String,
    model: String,
    release: String,
    state: String,
    reason: String,
    created: String,
    by: String,
    spec: String,
    waves: Vec<WaveLine>,
    devices: Vec<DeviceLine>,
    confirm_cancel: bool,
    can_pause: bool,
    can_resume: bool,
    can_cancel: bool,
}

/// Page options.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    confirm: Option<String>,
}

fn rollout_name(raw: &str) -> Result<RolloutName, Response> {
    RolloutName::parse(raw).map_err(|e| error_page(StatusCode::BAD_REQUEST, &e.to_string()))
}

/// `GET /rollouts/{name}`
pub async fn page(
    State(c): State<Console>,
    who: Person,
    Path(raw): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(StatusCode::BAD_REQUEST, "the query is malformed");
    };
    let name = match rollout_name(&raw) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let r = match c.rollouts.get(&name).await {
        Ok(r) => r,
        Err(e) => return service_error(e),
    };
    let members = match c.store.rollout_devices(&name).await {
        Ok(m) => m,
        Err(e) => return store_error(e),
    };
    let sizes = wave_sizes(&r.spec);
    let mut waves: BTreeMap<u32, WaveLine> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            (
                i,
                WaveLine {
                    number: i + 1,
                    size: s.clone(),
                    devices: 0,
                    committed: 0,
                    failed: 0,
                    active: 0,
                    current: i == r.wave,
                },
            )
        })
        .collect();
    let mut devices = Vec::with_capacity(members.len());
    for m in &members {
        let w = waves.entry(m.wave).or_insert_with(|| WaveLine {
            number: m.wave + 1,
            size: "–".into(),
            devices: 0,
            committed: 0,
            failed: 0,
            active: 0,
            current: m.wave == r.wave,
        });
        w.devices += 1;
        match m.state {
            RolloutDeviceState::Committed => w.committed += 1,
            RolloutDeviceState::Failed => w.failed += 1,
            RolloutDeviceState::Assigned => w.active += 1,
            _ => {}
        }
        devices.push(DeviceLine {
            device: m.device.to_string(),
            wave: m.wave + 1,
            state: m.state.to_string(),
            counter: m.counter,
            detail: m.detail.clone(),
            updated: fmt::when(m.updated_ms),
        });
    }
    // Failures first, then the wave in progress, so the operator sees what
    // needs them.
    devices.sort_by_key(|d| (d.state != "failed", d.wave, d.device.clone()));
    use palisade_core::RolloutState as S;
    render(&Page {
        chrome: Chrome::new(&who, format!("Rollout {name}"), "rollouts"),
        name: name.to_string(),
        model: r.model.to_string(),
        release: r.release_version.clone(),
        state: r.state.to_string(),
        reason: r.reason.clone(),
        created: fmt::when(r.created_ms),
        by: r.created_by.clone(),
        spec: serde_json::from_str::<serde_json::Value>(&r.spec)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(r.spec.clone()),
        waves: waves.into_values().collect(),
        devices,
        confirm_cancel: q.confirm.as_deref() == Some("cancel"),
        can_pause: r.state == S::Running,
        can_resume: r.state == S::Paused,
        can_cancel: matches!(r.state, S::Running | S::Paused | S::Completed),
    })
}

/// A rollout action's form.
#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    wave: Option<u32>,
}

/// `POST /rollouts/{name}/{pause|resume|cancel|retry}`
pub async fn act(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    Path((raw, action)): Path<(String, String)>,
    f: Result<Form<ActForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(StatusCode::BAD_REQUEST, "the form is malformed");
    };
    if let Err(r) = check_form(&c, &who, &headers, &f.csrf).await {
        return r;
    }
    let name = match rollout_name(&raw) {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(r) = require(&c, &who, Access::Write, "steer rollouts").await {
        return r;
    }
    let actor = who.actor();
    let done = match action.as_str() {
        "pause" => c
            .rollouts
            .act(&actor, &name, Action::Pause)
            .await
            .map(|_| ()),
        "resume" => c
            .rollouts
            .act(&actor, &name, Action::Resume)
            .await
            .map(|_| ()),
        "cancel" => c
            .rollouts
            .act(&actor, &name, Action::Cancel)
            .await
            .map(|_| ()),
        "retry" => {
            let Some(wave) = f.wave else {
                return error_page(StatusCode::BAD_REQUEST, "say which wave to retry");
            };
            c.rollouts
                .retry_failed(&actor, &name, wave)
                .await
                .map(|_| ())
        }
        _ => return error_page(StatusCode::NOT_FOUND, "no such rollout action"),
    };
    match done {
        Ok(()) => Redirect::to(&format!("/rollouts/{}", encode(name.as_str()))).into_response(),
        Err(e) => service_error(e),
    }
}
