//! One device: identity and certificates, key protection and attestation,
//! firmware and updates, placement and policy, flow volume, alerts, the
//! forensic timeline and its posture per framework — and the actions on it,
//! each after a confirmation page.

use askama::Template;
use axum::Form;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_core::role::Access;
use palisade_core::{DeviceId, DeviceState};
use palisade_posture::DeviceResult;
use palisade_store::{AlertFilter, CertFilter, DevicePageQuery, DeviceRecord};
use serde::Deserialize;

use crate::auth::{check_form, encode, require};
use crate::chrome::{Chrome, error_page, render, service_error, store_error};
use crate::fmt;
use crate::{Console, Person};

fn device_id(raw: &str) -> Result<DeviceId, Response> {
    DeviceId::parse(raw)
        .map_err(|e| error_page(StatusCode::BAD_REQUEST, &format!("device id: {e}")))
}

async fn load(c: &Console, id: &DeviceId) -> Result<DeviceRecord, Response> {
    match c.store.device(id).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(error_page(
            StatusCode::NOT_FOUND,
            &format!("no device {id}"),
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// A certificate line.
pub struct CertLine {
    serial: String,
    status: String,
    from: String,
    until: String,
    revoked: String,
}

/// A timeline line.
pub struct Moment {
    at: String,
    source: &'static str,
    kind: String,
    summary: String,
}

/// An alert line.
pub struct AlertLine {
    id: String,
    severity: String,
    state: String,
    summary: String,
    last: String,
}

/// A control's result line.
pub struct ControlLine {
    id: String,
    title: String,
    outcome: &'static str,
    reason: String,
    facts: Vec<String>,
}

/// A framework's results.
pub struct FrameworkLines {
    title: String,
    score: String,
    controls: Vec<ControlLine>,
}

#[derive(Template)]
#[template(path = "device.html")]
struct Page {
    chrome: Chrome,
    id: String,
    facts: Vec<(&'static str, String)>,
    trust: Vec<(&'static str, String)>,
    firmware: Vec<(&'static str, String)>,
    network: Vec<(&'static str, String)>,
    certs: Vec<CertLine>,
    chain: Vec<String>,
    chart: String,
    telemetry_chart: String,
    alerts: Vec<AlertLine>,
    timeline: Vec<Moment>,
    posture: Vec<FrameworkLines>,
    actions: Vec<(&'static str, &'static str)>,
}

fn framework_lines(r: &DeviceResult) -> FrameworkLines {
    FrameworkLines {
        title: r.framework.title().to_owned(),
        score: fmt::score(r.score()),
        controls: r
            .controls
            .iter()
            .map(|c| ControlLine {
                id: c.control.clone(),
                title: c.title.clone(),
                outcome: c.outcome.as_str(),
                reason: c.reason.clone(),
                facts: c
                    .checks
                    .iter()
                    .flat_map(|(_, f)| f.facts.iter())
                    .map(|f| {
                        let mut s = format!("{}: {}", f.name, f.value);
                        if let Some(at) = f.at_ms {
                            s.push_str(&format!(" ({})", fmt::when(at)));
                        }
                        if let Some(i) = f.audit_index {
                            s.push_str(&format!(" [audit #{i}]"));
                        }
                        s
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `GET /devices/{id}`
pub async fn page(State(c): State<Console>, who: Person, Path(raw): Path<String>) -> Response {
    let id = match device_id(&raw) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let d = match load(&c, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = c.clock.now_ms();
    let connected = c.sessions.is_connected(&id);
    let o = &d.onboarding;
    let model = match c.store.model(&d.model).await {
        Ok(m) => m,
        Err(e) => return store_error(e),
    };
    let decommissioned = match c.decommissioning.get(&id).await {
        Ok(r) => r,
        Err(e) => return service_error(e),
    };
    let mut facts = vec![
        (
            "Model",
            match model.as_ref().map(|m| m.description.as_str()) {
                Some(desc) if !desc.is_empty() => format!("{} — {desc}", d.model),
                _ => d.model.to_string(),
            },
        ),
        ("State", d.state.to_string()),
        (
            "Connected",
            if connected { "yes".into() } else { "no".into() },
        ),
        (
            "Last message",
            d.last_seen_ms
                .map_or_else(|| "never".into(), |t| fmt::ago(now, t)),
        ),
        (
            "Hardware serial",
            d.hardware_serial.clone().unwrap_or_else(|| "–".into()),
        ),
        ("Registered", fmt::when(d.created_ms)),
        (
            "Supplier",
            o.supplier
                .as_ref()
                .map_or_else(|| "–".into(), ToString::to_string),
        ),
        ("Batch", o.batch_id.clone().unwrap_or_else(|| "–".into())),
        (
            "Enrolment",
            if o.birth_cert_sha256.is_some() {
                "zero-touch with a birth identity (IDevID)".into()
            } else if d.state == DeviceState::Registered {
                "not enrolled yet".into()
            } else {
                "with an enrolment token or issued by an operator".into()
            },
        ),
        ("Approved", fmt::when_opt(o.approved_ms)),
    ];
    if let Some(r) = decommissioned {
        facts.insert(
            2,
            (
                "Decommissioning",
                format!(
                    "by {} {}: {} — wipe: {}{}",
                    r.actor,
                    fmt::when(r.requested_ms),
                    r.reason,
                    r.wipe.as_str().replace('_', " "),
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    }
                ),
            ),
        );
    }
    let hw = &d.hardware;
    let trust = vec![
        (
            "Key protection",
            hw.key_protection
                .map_or_else(|| "–".into(), |k| k.as_str().to_owned()),
        ),
        (
            "Attestation",
            match (&hw.attestation_status, hw.attested_ms) {
                (Some(s), Some(at)) => format!("{s} {}", fmt::ago(now, at)),
                _ => "never attested".into(),
            },
        ),
        (
            "Attestation detail",
            hw.attestation_detail.clone().unwrap_or_else(|| "–".into()),
        ),
        (
            "EK certificate (SHA-256)",
            hw.ek_sha256.clone().unwrap_or_else(|| "–".into()),
        ),
        (
            "Enrolled key (SHA-256)",
            o.enrolled_key_sha256.clone().unwrap_or_else(|| "–".into()),
        ),
    ];
    let updates = c.store.updates(Some(&id)).await.unwrap_or_default();
    let assignment = c.store.assignment(&id).await.ok().flatten();
    let firmware = vec![
        (
            "Reported firmware",
            d.reported_firmware.clone().unwrap_or_else(|| "–".into()),
        ),
        (
            "Last update report",
            updates.first().map_or_else(
                || "–".into(),
                |u| {
                    format!(
                        "{} {} ({}) {}",
                        u.target,
                        u.state,
                        fmt::ago(now, u.updated_ms),
                        u.detail
                    )
                },
            ),
        ),
        (
            "Director assignment",
            assignment.map_or_else(|| "–".into(), |(counter, _)| format!("counter {counter}")),
        ),
    ];
    let placed = c
        .store
        .device_page(&DevicePageQuery {
            only: Some(vec![id.to_string()]),
            limit: 1,
            ..DevicePageQuery::default()
        })
        .await
        .ok()
        .and_then(|p| p.rows.into_iter().next());
    let policy = c.store.model_policy(&d.model).await.ok().flatten();
    let network = vec![
        (
            "Site",
            placed
                .as_ref()
                .and_then(|p| p.site.clone())
                .unwrap_or_else(|| "not placed".into()),
        ),
        (
            "Address",
            placed
                .as_ref()
                .and_then(|p| p.address.clone())
                .unwrap_or_else(|| "–".into()),
        ),
        (
            "Model policy",
            policy.as_ref().map_or_else(
                || "none (no MUD file)".into(),
                |p| {
                    format!(
                        "{}{}",
                        p.mud_url,
                        if p.open_override {
                            " — opens everything (override)"
                        } else {
                            ""
                        }
                    )
                },
            ),
        ),
    ];
    let certs = c
        .store
        .certificates(&CertFilter {
            device: Some(id.clone()),
            status: None,
            limit: Some(50),
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|x| CertLine {
            serial: x.serial,
            status: x.status.as_str().to_owned(),
            from: fmt::when(x.not_before_ms),
            until: fmt::when(x.not_after_ms),
            revoked: x
                .revoked_ms
                .map(|t| format!("{} ({})", fmt::when(t), x.reason.unwrap_or_default()))
                .unwrap_or_default(),
        })
        .collect();
    let cas = c.pki.cas();
    let chain = [&cas.issuing().ca, &cas.root().ca]
        .iter()
        .map(|ca| ca.info().subject.clone())
        .collect();
    let flows = c
        .store
        .device_events(id.as_str(), now - 86_400_000, now, 5000)
        .await
        .unwrap_or_default();
    let (mut out, mut inn) = (vec![], vec![]);
    for e in flows.iter().filter(|e| e.kind == "flows") {
        let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        out.push(v["bytes_out"].as_f64().unwrap_or(0.0));
        inn.push(v["bytes_in"].as_f64().unwrap_or(0.0));
    }
    let chart = if out.is_empty() {
        String::new()
    } else {
        fmt::line_chart(
            "Flow volume per minute, last 24 hours (bytes)",
            &[("bytes out", "#b3261e", out), ("bytes in", "#0b57d0", inn)],
        )
    };
    let (mut conns, mut ports, mut procs) = (vec![], vec![], vec![]);
    for e in flows.iter().filter(|e| e.kind == "telemetry") {
        let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
        conns.push(v["established"].as_f64().unwrap_or(0.0));
        ports.push(v["listening"].as_f64().unwrap_or(0.0));
        procs.push(v["processes"].as_f64().unwrap_or(0.0));
    }
    let telemetry_chart = if conns.is_empty() {
        String::new()
    } else {
        fmt::line_chart(
            "Security telemetry, last 24 hours (a sample every 10 minutes)",
            &[
                ("connections", "#0b57d0", conns),
                ("listening ports", "#b3261e", ports),
                ("processes", "#1b7f3b", procs),
            ],
        )
    };
    let alerts = c
        .store
        .alerts(&AlertFilter {
            device: Some(id.to_string()),
            limit: 50,
            ..AlertFilter::default()
        })
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|a| AlertLine {
            id: a.id,
            severity: a.severity,
            state: a.state.to_string(),
            summary: a.summary,
            last: fmt::ago(now, a.last_ms),
        })
        .collect();
    let mut timeline: Vec<(i64, Moment)> = flows
        .iter()
        .rev()
        .take(100)
        .map(|e| {
            (
                e.at_ms,
                Moment {
                    at: fmt::when(e.at_ms),
                    source: "event",
                    kind: e.kind.clone(),
                    summary: e.summary.clone(),
                },
            )
        })
        .collect();
    for e in c
        .store
        .audit_entries_about(id.as_str(), 200)
        .await
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take(100)
    {
        let en = e.entry;
        timeline.push((
            en.time_ms,
            Moment {
                at: fmt::when(en.time_ms),
                source: "audit",
                kind: en.action.clone(),
                summary: format!("{} by {} ({})", en.action, en.actor, en.outcome),
            },
        ));
    }
    timeline.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    timeline.truncate(100);
    // A decommissioned device is out of the fleet's posture (as in the
    // fleet figures): judging it would only list failures nobody must fix.
    let posture = if d.state == DeviceState::Decommissioned {
        vec![]
    } else {
        match c.posture.device(&id).await {
            Ok(rs) => rs.iter().map(framework_lines).collect(),
            Err(e) => return service_error(e),
        }
    };
    let mut actions = vec![];
    if who.may(Access::Write) {
        match d.state {
            DeviceState::Enrolled | DeviceState::Active => {
                actions.push(("quarantine", "Quarantine"))
            }
            DeviceState::Quarantined => actions.push(("release", "Release from quarantine")),
            _ => {}
        }
        if d.state != DeviceState::Decommissioned {
            actions.push(("revoke", "Revoke its certificates"));
            actions.push(("decommission", "Decommission"));
            if d.state.may_connect() {
                actions.push(("decommission-wipe", "Decommission and wipe"));
            }
        }
    }
    render(&Page {
        chrome: Chrome::new(&who, format!("Device {id}"), "devices"),
        id: id.to_string(),
        facts,
        trust,
        firmware,
        network,
        certs,
        chain,
        chart,
        telemetry_chart,
        alerts,
        timeline: timeline.into_iter().map(|(_, m)| m).collect(),
        posture,
        actions,
    })
}

/// What a confirmation asks about.
#[derive(Debug, Deserialize)]
pub struct ConfirmQuery {
    action: String,
    name: Option<String>,
    args: Option<String>,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct Confirm {
    chrome: Chrome,
    id: String,
    action: String,
    what: String,
    name: String,
    args: String,
}

fn describe(action: &str, id: &DeviceId, name: &str, args: &str) -> Option<String> {
    Some(match action {
        "quarantine" => {
            format!("Quarantine {id}: its edge cuts it off from everything but the control plane.")
        }
        "release" => {
            format!("Release {id} from quarantine: its normal network policy applies again.")
        }
        "revoke" => format!(
            "Revoke every certificate of {id} (key compromise): its sessions close at once and it is refused until it enrols again."
        ),
        "decommission" => format!(
            "Decommission {id}: its certificates are revoked, it leaves its site's policy and its rollouts, and it is refused everywhere until an admin reinstates it."
        ),
        "decommission-wipe" => format!(
            "Decommission {id} with a verified wipe: it is quarantined and sent a signed wipe command; it destroys its data key and identity and answers with a signed receipt (wipe: verified), or is decommissioned at the deadline all the same (wipe: unconfirmed)."
        ),
        "command" => format!("Send the command {name:?} with arguments {args:?} to {id}."),
        _ => return None,
    })
}

/// `GET /devices/{id}/confirm?action=…`
pub async fn confirm(
    State(c): State<Console>,
    who: Person,
    Path(raw): Path<String>,
    q: Result<Query<ConfirmQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "the confirmation's query is malformed",
        );
    };
    let id = match device_id(&raw) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = require(&c, &who, Access::Write, "act on devices").await {
        return r;
    }
    let name = q.name.unwrap_or_default();
    let args = q.args.unwrap_or_default();
    let Some(what) = describe(&q.action, &id, &name, &args) else {
        return error_page(StatusCode::BAD_REQUEST, "unknown action");
    };
    render(&Confirm {
        chrome: Chrome::new(&who, "Confirm", "devices"),
        id: id.to_string(),
        action: q.action,
        what,
        name,
        args,
    })
}

/// A confirmed action.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: String,
}

/// `POST /devices/{id}/action`
pub async fn act(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    Path(raw): Path<String>,
    f: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(StatusCode::BAD_REQUEST, "the form is malformed");
    };
    if let Err(r) = check_form(&c, &who, &headers, &f.csrf).await {
        return r;
    }
    let id = match device_id(&raw) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = require(&c, &who, Access::Write, "act on devices").await {
        return r;
    }
    let actor = who.actor();
    let done = match f.action.as_str() {
        "quarantine" => c
            .fleet
            .set_device_state(&actor, &id, DeviceState::Quarantined)
            .await
            .map(|_| ()),
        "release" => c
            .fleet
            .set_device_state(&actor, &id, DeviceState::Active)
            .await
            .map(|_| ()),
        "decommission" | "decommission-wipe" => c
            .decommissioning
            .decommission(
                &actor,
                &id,
                "decommissioned from the console",
                f.action == "decommission-wipe",
            )
            .await
            .map(|_| ()),
        "revoke" => c
            .fleet
            .revoke_device(&actor, &id, "revoked from the console")
            .await
            .map(|_| ()),
        "command" => {
            let args: Vec<String> = f.args.split_whitespace().map(str::to_owned).collect();
            c.commands
                .send(&actor, &id, f.name.trim(), args)
                .await
                .map(|_| ())
        }
        _ => return error_page(StatusCode::BAD_REQUEST, "unknown action"),
    };
    match done {
        Ok(()) => Redirect::to(&format!("/devices/{}", encode(id.as_str()))).into_response(),
        Err(e) => service_error(e),
    }
}

/// `GET /devices/{id}/timeline.json`: the forensic timeline bundle, with an
/// inclusion proof for every audit entry (`palisade audit verify-timeline`
/// checks it).
pub async fn timeline(State(c): State<Console>, who: Person, Path(raw): Path<String>) -> Response {
    let id = match device_id(&raw) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = require(&c, &who, Access::Read, "read device timelines").await {
        return r;
    }
    match palisade_http::operator::monitoring::timeline(&c, &id, None, None, true).await {
        Ok(t) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"timeline-{id}.json\""),
                ),
            ],
            serde_json::to_string_pretty(&t).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => error_page(e.status, &e.message),
    }
}
