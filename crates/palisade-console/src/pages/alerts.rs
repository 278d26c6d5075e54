//! Alerts: the unresolved ones first, acknowledge and resolve with a note,
//! and live changes through the server's event stream.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::Stream;
use palisade_core::AlertState;
use palisade_core::role::Access;
use palisade_store::AlertFilter;
use serde::Deserialize;

use crate::auth::{check_form, require};
use crate::chrome::{Chrome, error_page, render, service_error, store_error};
use crate::fmt;
use crate::{Console, Person};

/// Which alerts.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    state: Option<String>,
}

/// An alert line.
pub struct Line {
    id: String,
    severity: String,
    state: String,
    detector: String,
    subject: String,
    device: bool,
    summary: String,
    count: u64,
    first: String,
    last: String,
    open: bool,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct Page {
    chrome: Chrome,
    lines: Vec<Line>,
    state: String,
}

/// `GET /alerts`
pub async fn list(
    State(c): State<Console>,
    who: Person,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(StatusCode::BAD_REQUEST, "the query is malformed");
    };
    let now = c.clock.now_ms();
    let shown = q.state.clone().unwrap_or_else(|| "unresolved".into());
    let states: Vec<Option<AlertState>> = match shown.as_str() {
        "unresolved" => vec![Some(AlertState::Open), Some(AlertState::Acknowledged)],
        "all" => vec![None],
        s => match AlertState::parse(s) {
            Ok(st) => vec![Some(st)],
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
        },
    };
    let mut lines = vec![];
    for st in states {
        let list = match c
            .store
            .alerts(&AlertFilter {
                state: st,
                limit: 500,
                ..AlertFilter::default()
            })
            .await
        {
            Ok(l) => l,
            Err(e) => return store_error(e),
        };
        for a in list {
            lines.push((
                a.last_ms,
                Line {
                    open: a.state.is_unresolved(),
                    id: a.id,
                    severity: a.severity,
                    state: a.state.to_string(),
                    detector: a.detector,
                    device: a.device.is_some(),
                    subject: a.device.or(a.peer).unwrap_or_default(),
                    summary: a.summary,
                    count: a.count,
                    first: fmt::when(a.first_ms),
                    last: fmt::ago(now, a.last_ms),
                },
            ));
        }
    }
    lines.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    render(&Page {
        chrome: Chrome::new(&who, "Alerts", "alerts"),
        lines: lines.into_iter().map(|(_, l)| l).collect(),
        state: shown,
    })
}

/// An acknowledgement or resolution.
#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    #[serde(default)]
    note: String,
}

/// `POST /alerts/{id}/{ack|resolve}`
pub async fn act(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    f: Result<Form<ActForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(StatusCode::BAD_REQUEST, "the form is malformed");
    };
    if let Err(r) = check_form(&c, &who, &headers, &f.csrf).await {
        return r;
    }
    if let Err(r) = require(&c, &who, Access::Write, "change alerts").await {
        return r;
    }
    let ok_id =
        id.len() == 19 && id.starts_with("al-") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok_id {
        return error_page(StatusCode::BAD_REQUEST, "not an alert id");
    }
    let to = match action.as_str() {
        "ack" => AlertState::Acknowledged,
        "resolve" => AlertState::Resolved,
        _ => return error_page(StatusCode::NOT_FOUND, "no such alert action"),
    };
    match c.alerts.set_state(&who.actor(), &id, to, &f.note).await {
        Ok(_) => Redirect::to("/alerts").into_response(),
        Err(e) => service_error(e),
    }
}

/// `GET /alerts/stream`: alert events as server-sent events.
pub async fn stream(
    State(c): State<Console>,
    _who: Person,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = c.alerts.subscribe();
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(e) => Event::default()
                .event(e.event)
                .data(serde_json::to_string(&e).unwrap_or_default()),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
