//! Palisade's web console: the fleet for people, in the browser. Pages are
//! rendered on the server (askama templates, every value escaped), the one
//! stylesheet and the one small script are embedded in the binary, and nothing
//! is fetched from another host. Every read works without JavaScript; every
//! action is a form with a CSRF token and goes through the same services and
//! audit log as the API.
//!
//! People sign in with a console account (`palisade operator add`); the
//! session is a `Secure; HttpOnly; SameSite=Strict` cookie whose secret the
//! server keeps only hashed. Every response carries a strict
//! Content-Security-Policy (no inline script), HSTS, `frame-ancestors 'none'`,
//! `nosniff` and a same-origin referrer policy.

// Page helpers return the error page itself (`Result<_, Response>`): it is
// built once per refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod auth;
mod chrome;
mod fmt;
mod pages;
mod person;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use palisade_http::Services;

pub use person::Person;

/// What the console needs besides the services.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSettings {
    /// A device without a message for this long counts as offline (ms).
    pub offline_after_ms: i64,
}

/// The console's state: the services and its settings.
#[derive(Debug, Clone)]
pub struct Console {
    pub(crate) s: Arc<Services>,
    pub(crate) cfg: ConsoleSettings,
    /// The last verification of the whole audit log run from the console.
    pub(crate) verified: Arc<std::sync::Mutex<Option<pages::audit::Verification>>>,
}

impl std::ops::Deref for Console {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.s
    }
}

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

/// The headers every console response carries.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(
        h,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    r
}

/// The console's routes.
pub fn router(services: Arc<Services>, cfg: ConsoleSettings) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/devices", get(devices::list))
        .route("/devices/bulk", post(devices::bulk))
        .route("/devices/groups", post(devices::save_group))
        .route("/devices/{id}", get(device::page))
        .route("/devices/{id}/confirm", get(device::confirm))
        .route("/devices/{id}/action", post(device::act))
        .route("/devices/{id}/timeline.json", get(device::timeline))
        .route("/alerts", get(alerts::list))
        .route("/alerts/stream", get(alerts::stream))
        .route("/alerts/{id}/{action}", post(alerts::act))
        .route("/rollouts", get(rollouts::list))
        .route("/rollouts/{name}", get(rollouts::page))
        .route("/rollouts/{name}/{action}", post(rollouts::act))
        .route("/releases", get(releases::list))
        .route("/sites", get(sites::list))
        .route("/sites/{name}/unmanaged", get(unmanaged::page))
        .route(
            "/sites/{name}/unmanaged/{address}/{action}",
            post(unmanaged::act),
        )
        .route("/suppliers", get(suppliers::list))
        .route("/certificates", get(certificates::list))
        .route("/audit", get(audit::page))
        .route("/posture", get(posture::page))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Console {
            s: services,
            cfg,
            verified: Arc::default(),
        })
}
