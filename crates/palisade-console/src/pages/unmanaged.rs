//! Unmanaged devices of a site: addresses the edges see (neighbour table,
//! DHCP leases) and flow records name that map to no enrolled device, with
//! first and last seen, traffic and where they were seen, undecided first;
//! an operator blocks one at the edges or adopts it (registers it to a model
//! and places it at its address). The same service and audit entries as
//! `palisade site unmanaged` and the API.

use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_core::role::Access;
use palisade_core::{DeviceId, ModelId, SiteName, UnmanagedState};
use serde::Deserialize;

use crate::auth::{check_form, require};
use crate::chrome::{Chrome, error_page, render, service_error, store_error};
use crate::fmt;
use crate::{Console, Person};

/// One unmanaged host.
pub struct Line {
    address: String,
    mac: String,
    hostname: String,
    sources: String,
    first: String,
    last: String,
    bytes: String,
    undecided: bool,
    blocked: bool,
    device: String,
    decided: String,
}

#[derive(Template)]
#[template(path = "unmanaged.html")]
struct Page {
    chrome: Chrome,
    site: String,
    lines: Vec<Line>,
    undecided: usize,
    models: Vec<String>,
}

fn site_name(raw: &str) -> Result<SiteName, Response> {
    raw.parse()
        .map_err(|_| error_page(StatusCode::NOT_FOUND, "no such site"))
}

/// `GET /sites/{name}/unmanaged`
pub async fn page(State(c): State<Console>, who: Person, Path(name): Path<String>) -> Response {
    let site = match site_name(&name) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let hosts = match c.unmanaged.list(Some(&site)).await {
        Ok(h) => h,
        Err(e) => return service_error(e),
    };
    let models = match c.store.models().await {
        Ok(m) => m.into_iter().map(|m| m.id.to_string()).collect(),
        Err(e) => return store_error(e),
    };
    let now = c.clock.now_ms();
    let lines: Vec<Line> = hosts
        .iter()
        .map(|h| Line {
            address: h.address.clone(),
            mac: h.mac.clone().unwrap_or_default(),
            hostname: h.hostname.clone().unwrap_or_default(),
            sources: h.sources.join(", "),
            first: fmt::when(h.first_ms),
            last: fmt::ago(now, h.last_ms),
            bytes: fmt::bytes(h.bytes),
            undecided: h.state == UnmanagedState::Seen,
            blocked: h.state == UnmanagedState::Blocked,
            device: h
                .device
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            decided: h
                .decided
                .as_ref()
                .map(|(by, at)| format!("by {by}, {}", fmt::ago(now, *at)))
                .unwrap_or_default(),
        })
        .collect();
    render(&Page {
        chrome: Chrome::new(&who, format!("Unmanaged devices at {site}"), "sites"),
        undecided: lines.iter().filter(|l| l.undecided).count(),
        site: site.to_string(),
        lines,
        models,
    })
}

/// What a block, unblock or adopt form sends.
#[derive(Debug, Deserialize)]
pub struct ActForm {
    csrf: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    model: String,
}

/// `POST /sites/{name}/unmanaged/{address}/{action}` (`block`, `unblock`, `adopt`)
pub async fn act(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    Path((name, address, action)): Path<(String, String, String)>,
    f: Result<Form<ActForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(StatusCode::BAD_REQUEST, "the form is malformed");
    };
    if let Err(r) = check_form(&c, &who, &headers, &f.csrf).await {
        return r;
    }
    if let Err(r) = require(&c, &who, Access::Write, "decide about unmanaged devices").await {
        return r;
    }
    let site = match site_name(&name) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(addr) = address.parse::<std::net::IpAddr>() else {
        return error_page(StatusCode::BAD_REQUEST, "not an IP address");
    };
    let actor = who.actor();
    let done = match action.as_str() {
        "block" => c.unmanaged.block(&actor, &site, addr, true).await,
        "unblock" => c.unmanaged.block(&actor, &site, addr, false).await,
        "adopt" => {
            let Ok(device) = f.device.trim().parse::<DeviceId>() else {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "give the device an id (letters, digits, '-', '_', '.')",
                );
            };
            let Ok(model) = f.model.parse::<ModelId>() else {
                return error_page(StatusCode::BAD_REQUEST, "choose a model");
            };
            c.unmanaged.adopt(&actor, &site, addr, device, model).await
        }
        _ => return error_page(StatusCode::NOT_FOUND, "no such action"),
    };
    match done {
        Ok(_) => Redirect::to(&format!("/sites/{site}/unmanaged")).into_response(),
        Err(e) => service_error(e),
    }
}
