//! The device list: search, filters (model, state, site, posture, firmware,
//! online or offline), sort and pages on the server, saved filters as named
//! groups, bulk actions on a selection, and CSV export of the current view.

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_core::role::Access;
use palisade_core::{DeviceId, DeviceState, ModelId, Tag};
use palisade_posture::Framework;
use palisade_store::{Change, DevicePage, DevicePageQuery, DeviceRow, DeviceSort};
use serde::Deserialize;

use crate::auth::{check_form, encode, require};
use crate::chrome::{Chrome, error_page, render, service_error, store_error};
use crate::fmt;
use crate::{Console, Person};

/// Rows per page unless asked otherwise, and at most.
const PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 500;
/// Longest search accepted.
const MAX_SEARCH: usize = 200;
/// Rows a CSV export holds at most.
const MAX_EXPORT: u64 = 200_000;
/// Devices one bulk action takes at most.
const MAX_BULK: usize = 1000;

/// The list's query string.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    model: Option<String>,
    state: Option<String>,
    site: Option<String>,
    firmware: Option<String>,
    conn: Option<String>,
    posture: Option<String>,
    fw: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<u64>,
    per: Option<u32>,
    format: Option<String>,
}

/// A refusal of the query, for the error page.
fn bad(message: String) -> Response {
    error_page(StatusCode::BAD_REQUEST, &message)
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The store query a list query asks for (or why it is refused).
fn store_query(
    c: &Console,
    q: &ListQuery,
    now_ms: i64,
) -> Result<(DevicePageQuery, Framework), Response> {
    let mut out = DevicePageQuery {
        limit: q.per.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE),
        ..DevicePageQuery::default()
    };
    if let Some(text) = nonempty(&q.q) {
        if text.chars().count() > MAX_SEARCH {
            return Err(bad(format!("a search is at most {MAX_SEARCH} characters")));
        }
        out.search = Some(text.to_owned());
    }
    if let Some(m) = nonempty(&q.model) {
        out.model = Some(ModelId::parse(m).map_err(|e| bad(format!("model: {e}")))?);
    }
    if let Some(s) = nonempty(&q.state) {
        out.state = Some(DeviceState::parse(s).ok_or_else(|| bad(format!("unknown state {s:?}")))?);
    }
    if let Some(site) = q.site.as_deref() {
        if site.len() > 64 {
            return Err(bad("a site name is at most 64 characters".into()));
        }
        out.site = match site.trim() {
            "" => None,
            "-" => Some(String::new()),
            s => Some(s.to_owned()),
        };
    }
    if let Some(f) = nonempty(&q.firmware) {
        if f.len() > 64 {
            return Err(bad("a firmware version is at most 64 characters".into()));
        }
        out.firmware = Some(f.to_owned());
    }
    let since = now_ms - c.cfg.offline_after_ms;
    out.seen_since = match nonempty(&q.conn) {
        None => None,
        Some("online") => Some((true, since)),
        Some("offline") => Some((false, since)),
        Some(o) => return Err(bad(format!("conn is online or offline, not {o:?}"))),
    };
    let fw = match nonempty(&q.fw) {
        None => Framework::Checklist,
        Some(f) => Framework::parse(f).ok_or_else(|| bad(format!("unknown framework {f:?}")))?,
    };
    if let Some(p) = nonempty(&q.posture) {
        let want_fail = match p {
            "fail" => true,
            "pass" => false,
            o => return Err(bad(format!("posture is pass or fail, not {o:?}"))),
        };
        let Some(fleet) = c.posture.latest() else {
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the first posture evaluation is still running: try again shortly",
            ));
        };
        out.only = Some(
            fleet
                .devices
                .iter()
                .filter(|d| {
                    let t = d.tally(fw);
                    let failing = t.fail + t.unknown > 0;
                    failing == want_fail
                })
                .map(|d| d.device.clone())
                .collect(),
        );
    }
    out.sort = match nonempty(&q.sort) {
        None | Some("id") => DeviceSort::Id,
        Some("model") => DeviceSort::Model,
        Some("state") => DeviceSort::State,
        Some("seen") => DeviceSort::LastSeen,
        Some("firmware") => DeviceSort::Firmware,
        Some("site") => DeviceSort::Site,
        Some(o) => {
            return Err(bad(format!(
                "unknown sort key {:?}: id, model, state, seen, firmware or site",
                o.chars().take(32).collect::<String>()
            )));
        }
    };
    out.descending = matches!(nonempty(&q.dir), Some("desc"));
    let page = q.page.unwrap_or(1).max(1);
    out.offset = (page - 1).saturating_mul(u64::from(out.limit));
    Ok((out, fw))
}

/// The query string of a list query, with `page` replaced.
fn query_string(q: &ListQuery, page: Option<u64>, sort: Option<(&str, &str)>) -> String {
    let mut parts = vec![];
    let mut add = |k: &str, v: Option<&str>| {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", encode(v)));
        }
    };
    add("q", q.q.as_deref());
    add("model", q.model.as_deref());
    add("state", q.state.as_deref());
    add("site", q.site.as_deref());
    add("firmware", q.firmware.as_deref());
    add("conn", q.conn.as_deref());
    add("posture", q.posture.as_deref());
    add("fw", q.fw.as_deref());
    match sort {
        Some((s, d)) => {
            add("sort", Some(s));
            add("dir", Some(d));
        }
        None => {
            add("sort", q.sort.as_deref());
            add("dir", q.dir.as_deref());
        }
    }
    if let Some(p) = q.per {
        add("per", Some(&p.to_string()));
    }
    if let Some(p) = page {
        add("page", Some(&p.to_string()));
    }
    parts.join("&")
}

/// A device line as the list shows it.
pub struct Line {
    id: String,
    model: String,
    state: String,
    site: String,
    firmware: String,
    seen: String,
    connected: bool,
    score: String,
}

fn line(
    c: &Console,
    r: &DeviceRow,
    now: i64,
    fw: Framework,
    fleet: Option<&palisade_control::posture::FleetPosture>,
) -> Line {
    let d = &r.device;
    Line {
        id: d.id.to_string(),
        model: d.model.to_string(),
        state: d.state.to_string(),
        site: r.site.clone().unwrap_or_default(),
        firmware: d.reported_firmware.clone().unwrap_or_default(),
        seen: d
            .last_seen_ms
            .map_or_else(|| "never".into(), |t| fmt::ago(now, t)),
        connected: c.sessions.is_connected(&d.id),
        score: fleet
            .and_then(|f| f.get(d.id.as_str()))
            .map_or_else(|| "–".into(), |p| fmt::score(p.tally(fw).score())),
    }
}

#[derive(Template)]
#[template(path = "devices.html")]
struct Page {
    chrome: Chrome,
    lines: Vec<Line>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    csv: String,
    query: String,
    f: Filters,
    sorts: Vec<(&'static str, &'static str, String)>,
    groups: Vec<(String, String)>,
    models: Vec<String>,
    states: Vec<&'static str>,
}

/// The filter values, echoed into the form.
pub struct Filters {
    q: String,
    model: String,
    state: String,
    site: String,
    firmware: String,
    conn: String,
    posture: String,
}

/// `GET /devices`
pub async fn list(
    State(c): State<Console>,
    who: Person,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad("the device list's query is malformed (page and per are numbers)".into());
    };
    let now = c.clock.now_ms();
    let (sq, fw) = match store_query(&c, &q, now) {
        Ok(x) => x,
        Err(r) => return r,
    };
    if nonempty(&q.format) == Some("csv") {
        return export(&c, sq, fw, now).await;
    }
    let DevicePage { rows, total } = match c.store.device_page(&sq).await {
        Ok(p) => p,
        Err(e) => return store_error(e),
    };
    let fleet = c.posture.latest();
    let lines = rows
        .iter()
        .map(|r| line(&c, r, now, fw, fleet.as_deref()))
        .collect();
    let per = u64::from(sq.limit);
    let page = sq.offset / per + 1;
    let pages = total.div_ceil(per).max(1);
    let groups = c
        .store
        .device_groups()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|g| (g.name, g.query))
        .collect();
    let models = c
        .store
        .models()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    let current_sort = nonempty(&q.sort).unwrap_or("id").to_owned();
    let sorts = [
        ("id", "Device"),
        ("model", "Model"),
        ("state", "State"),
        ("site", "Site"),
        ("firmware", "Firmware"),
        ("seen", "Last seen"),
    ]
    .into_iter()
    .map(|(key, label)| {
        let dir = if current_sort == key && nonempty(&q.dir) != Some("desc") {
            "desc"
        } else {
            "asc"
        };
        (key, label, query_string(&q, None, Some((key, dir))))
    })
    .collect();
    render(&Page {
        chrome: Chrome::new(&who, "Devices", "devices"),
        lines,
        total,
        page,
        pages,
        prev: (page > 1).then(|| query_string(&q, Some(page - 1), None)),
        next: (page < pages).then(|| query_string(&q, Some(page + 1), None)),
        csv: {
            let s = query_string(&q, None, None);
            if s.is_empty() {
                "format=csv".into()
            } else {
                format!("{s}&format=csv")
            }
        },
        query: query_string(&q, None, None),
        f: Filters {
            q: q.q.clone().unwrap_or_default(),
            model: q.model.clone().unwrap_or_default(),
            state: q.state.clone().unwrap_or_default(),
            site: q.site.clone().unwrap_or_default(),
            firmware: q.firmware.clone().unwrap_or_default(),
            conn: q.conn.clone().unwrap_or_default(),
            posture: q.posture.clone().unwrap_or_default(),
        },
        sorts,
        groups,
        models,
        states: DeviceState::ALL.iter().map(|s| s.as_str()).collect(),
    })
}

/// A CSV field: quoted, quotes doubled, and a leading `= + - @` neutralised so
/// a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn export(c: &Console, mut q: DevicePageQuery, fw: Framework, now: i64) -> Response {
    let fleet = c.posture.latest();
    let mut out = String::from(
        "device,model,state,site,address,firmware,last_seen,connected,posture_score\r\n",
    );
    q.offset = 0;
    q.limit = 5000;
    loop {
        let page = match c.store.device_page(&q).await {
            Ok(p) => p,
            Err(e) => return store_error(e),
        };
        for r in &page.rows {
            let d = &r.device;
            let score = fleet
                .as_deref()
                .and_then(|f| f.get(d.id.as_str()))
                .and_then(|p| p.tally(fw).score())
                .map_or(String::new(), |s| format!("{s:.1}"));
            let cells = [
                d.id.to_string(),
                d.model.to_string(),
                d.state.to_string(),
                r.site.clone().unwrap_or_default(),
                r.address.clone().unwrap_or_default(),
                d.reported_firmware.clone().unwrap_or_default(),
                d.last_seen_ms.map(fmt::when).unwrap_or_default(),
                c.sessions.is_connected(&d.id).to_string(),
                score,
            ];
            out.push_str(
                &cells
                    .iter()
                    .map(|x| csv_field(x))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push_str("\r\n");
        }
        q.offset += page.rows.len() as u64;
        if page.rows.len() < q.limit as usize || q.offset >= MAX_EXPORT {
            break;
        }
    }
    let _ = now;
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"palisade-devices.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

/// The pairs of a URL-encoded form (repeated keys kept).
fn form_pairs(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .take(MAX_BULK + 16)
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[derive(Template)]
#[template(path = "bulk_confirm.html")]
struct Confirm {
    chrome: Chrome,
    action: String,
    value: String,
    what: String,
    devices: Vec<String>,
}

/// `POST /devices/bulk`: tag, quarantine, or add to a rollout (by its tag)
/// the selected devices — after a confirmation page.
pub async fn bulk(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > 256 * 1024 {
        return bad("the selection is too large".into());
    }
    let pairs = form_pairs(&body);
    if let Err(r) = check_form(&c, &who, &headers, field(&pairs, "csrf").unwrap_or("")).await {
        return r;
    }
    if let Err(r) = require(&c, &who, Access::Write, "act on devices").await {
        return r;
    }
    let mut devices = vec![];
    for (k, v) in &pairs {
        if k == "devices" {
            match DeviceId::parse(v) {
                Ok(d) => devices.push(d),
                Err(e) => {
                    return bad(format!(
                        "device {:?}: {e}",
                        v.chars().take(64).collect::<String>()
                    ));
                }
            }
        }
    }
    if devices.is_empty() {
        return bad("select at least one device".into());
    }
    if devices.len() > MAX_BULK {
        return bad(format!("at most {MAX_BULK} devices at once"));
    }
    let action = field(&pairs, "action").unwrap_or("").to_owned();
    let value = field(&pairs, "value").unwrap_or("").trim().to_owned();
    let what = match action.as_str() {
        "tag" => {
            if let Err(e) = Tag::parse(&value) {
                return bad(format!("the tag to add: {e}"));
            }
            format!("add the tag {value} to")
        }
        "quarantine" => "quarantine".to_owned(),
        "rollout" => format!("add to rollout {value} (by its selector tag)"),
        _ => return bad("choose an action: tag, quarantine or rollout".into()),
    };
    if field(&pairs, "confirm") != Some("yes") {
        return render(&Confirm {
            chrome: Chrome::new(&who, "Confirm a bulk action", "devices"),
            action,
            value,
            what,
            devices: devices.iter().map(ToString::to_string).collect(),
        });
    }
    let actor = who.actor();
    let tag_to_add = match action.as_str() {
        "tag" => Some(value.clone()),
        "rollout" => {
            let name = match palisade_core::RolloutName::parse(&value) {
                Ok(n) => n,
                Err(e) => return bad(format!("rollout: {e}")),
            };
            let r = match c.rollouts.get(&name).await {
                Ok(r) => r,
                Err(e) => return service_error(e),
            };
            let spec: serde_json::Value = serde_json::from_str(&r.spec).unwrap_or_default();
            match spec["tags"]
                .as_array()
                .and_then(|t| t.first())
                .and_then(|t| t.as_str())
            {
                Some(t) => Some(t.to_owned()),
                None => {
                    return error_page(
                        StatusCode::CONFLICT,
                        &format!(
                            "rollout {name} selects devices by list, not by tag: create a rollout with a tag to add devices to it later"
                        ),
                    );
                }
            }
        }
        _ => None,
    };
    for d in &devices {
        let done = match &tag_to_add {
            Some(t) => {
                let mut tags = c.store.device_tags(d).await.unwrap_or_default();
                if let Ok(t) = Tag::parse(t)
                    && !tags.contains(&t)
                {
                    tags.push(t);
                }
                c.fleet.set_tags(&actor, d, tags).await.map(|_| ())
            }
            None => c
                .fleet
                .set_device_state(&actor, d, DeviceState::Quarantined)
                .await
                .map(|_| ()),
        };
        if let Err(e) = done {
            return service_error(e);
        }
    }
    c.rollouts.wake();
    Redirect::to("/devices").into_response()
}

/// `POST /devices/groups`: saves the current filter as a named group.
pub async fn save_group(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > 8 * 1024 {
        return bad("the group is too large".into());
    }
    let pairs = form_pairs(&body);
    if let Err(r) = check_form(&c, &who, &headers, field(&pairs, "csrf").unwrap_or("")).await {
        return r;
    }
    if let Err(r) = require(&c, &who, Access::Write, "save device groups").await {
        return r;
    }
    let name = field(&pairs, "name").unwrap_or("").trim().to_owned();
    let query = field(&pairs, "query").unwrap_or("").to_owned();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return bad("a group name has 1 to 64 printable characters".into());
    }
    if query.len() > 2000 || query.chars().any(char::is_control) {
        return bad("the filter is too long".into());
    }
    let group = palisade_store::DeviceGroupRecord {
        name: name.clone(),
        query,
        created_by: who.0.operator.to_string(),
        created_ms: c.clock.now_ms(),
    };
    let entry = palisade_audit::EntryDraft::success(who.actor(), "console.group", &name);
    if let Err(e) = c
        .store
        .commit(vec![Change::SaveDeviceGroup(group)], vec![entry])
        .await
    {
        return store_error(e);
    }
    Redirect::to("/devices").into_response()
}
