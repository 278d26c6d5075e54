//! What every page shows around its content (the signed-in person, the
//! navigation, the CSRF token forms carry), and the error page.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use palisade_core::role::Access;

use crate::person::Person;

/// The page's frame.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The page title.
    pub title: String,
    /// The navigation entry to mark current.
    pub active: &'static str,
    /// Who is signed in.
    pub who: String,
    /// Their role.
    pub role: String,
    /// The session's CSRF token, for forms.
    pub csrf: String,
    /// Whether they may change anything (auditors may not).
    pub can_write: bool,
}

impl Chrome {
    /// The frame for `person` on page `active`.
    pub fn new(person: &Person, title: impl Into<String>, active: &'static str) -> Self {
        Self {
            title: title.into(),
            active,
            who: person.0.operator.to_string(),
            role: person.0.role.to_string(),
            csrf: person.0.csrf.clone(),
            can_write: person.0.role.permits(Access::Write),
        }
    }

    /// The navigation: (path, label, key).
    pub fn nav(&self) -> [(&'static str, &'static str, &'static str); 11] {
        [
            ("/", "Overview", "overview"),
            ("/devices", "Devices", "devices"),
            ("/alerts", "Alerts", "alerts"),
            ("/rollouts", "Rollouts", "rollouts"),
            ("/releases", "Releases", "releases"),
            ("/sites", "Sites and edges", "sites"),
            ("/suppliers", "Suppliers", "suppliers"),
            ("/certificates", "Certificates", "certificates"),
            ("/posture", "Posture", "posture"),
            ("/audit", "Audit log", "audit"),
            ("/devices?conn=offline", "Offline", "offline"),
        ]
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page's template rendered, or an error page if rendering failed.
pub fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown",
            )
        }
    }
}

/// An error page: the status and a message for people, never a stack trace.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{} {}", status.as_u16(), message));
    (status, Html(body)).into_response()
}

/// A service error as an error page.
pub fn service_error(e: palisade_control::ServiceError) -> Response {
    use palisade_control::ServiceError as E;
    let (status, msg) = match &e {
        E::BadRequest { message, .. } => (StatusCode::BAD_REQUEST, message.clone()),
        E::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
        E::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
        E::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        E::Internal(m) => {
            tracing::error!(error = %m, "console request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong on the server; see its log".to_owned(),
            )
        }
        E::Unavailable(m) => {
            tracing::warn!(error = %m, "console request: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again shortly".to_owned(),
            )
        }
        E::BlobsUnavailable(m) => {
            tracing::warn!(error = %m, "console request: blob store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the blob store is unavailable; try again shortly".to_owned(),
            )
        }
    };
    error_page(status, &msg)
}

/// A store error as an error page.
pub fn store_error(e: palisade_store::StoreError) -> Response {
    service_error(e.into())
}
