//! Sign-in, sign-out, who is asking, and the checks every form passes: the
//! session's CSRF token and a same-origin request.

use std::net::{IpAddr, Ipv4Addr};

use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use palisade_control::accounts::{COOKIE, LoginError};
use palisade_core::role::{Access, Role};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::Console;
use crate::chrome::{error_page, render};
use crate::person::Person;

/// The pre-session cookie that carries the sign-in form's CSRF token.
const LOGIN_COOKIE: &str = "palisade_login";

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The peer address the accept loop recorded.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<palisade_http::PeerAddr>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip()),
        ))
    }
}

/// Where to send someone who is not signed in: back here after sign-in, if
/// `here` is a path of ours.
fn to_login(here: &str) -> Response {
    let next: String = here
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/-_.?=&%".contains(*c))
        .take(512)
        .collect();
    let next = if next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/".into()
    };
    Redirect::to(&format!("/login?next={}", encode(&next))).into_response()
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromRequestParts<Console> for Person {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Response> {
        let here = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Some(secret) = cookie(&parts.headers, COOKIE) else {
            return Err(if parts.method == Method::GET {
                to_login(&here)
            } else {
                error_page(StatusCode::FORBIDDEN, "sign in first")
            });
        };
        match c.accounts.session(secret).await {
            Ok(Some(who)) if who.role == Role::Supplier => {
                // A supplier sees its own releases and nothing else.
                match parts.uri.path() {
                    "/releases" | "/logout" => Ok(Person(who)),
                    "/" => Err(Redirect::to("/releases").into_response()),
                    _ => {
                        let person = Person(who);
                        Err(require(c, &person, Access::Read, "read the fleet")
                            .await
                            .err()
                            .unwrap_or_else(|| error_page(StatusCode::FORBIDDEN, "forbidden")))
                    }
                }
            }
            Ok(Some(who)) => Ok(Person(who)),
            Ok(None) => Err(if parts.method == Method::GET {
                to_login(&here)
            } else {
                error_page(
                    StatusCode::FORBIDDEN,
                    "your session has ended: sign in again",
                )
            }),
            Err(e) => Err(crate::chrome::service_error(e)),
        }
    }
}

/// The request comes from our own pages: its `Origin` (if any) is this
/// server, and the browser does not call it cross-site.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(o) => o == format!("https://{host}"),
        None => true,
    };
    let site_ok = match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(s) => s == "same-origin" || s == "none",
        None => true,
    };
    origin_ok && site_ok
}

/// Checks a form's CSRF token against the session's and that it came from our
/// own pages; a refusal is audited.
pub async fn check_form(
    c: &Console,
    who: &Person,
    headers: &HeaderMap,
    token: &str,
) -> Result<(), Response> {
    let good = bool::from(token.as_bytes().ct_eq(who.0.csrf.as_bytes())) && same_origin(headers);
    if good {
        return Ok(());
    }
    c.fleet
        .audit_denied(
            &who.actor(),
            "console.csrf",
            "-",
            "a form without this session's token, or from another origin",
        )
        .await;
    Err(error_page(
        StatusCode::FORBIDDEN,
        "this form did not come from your session's pages: reload the page and try again",
    ))
}

/// Refuses (403, audited) unless the person's role permits `access`.
pub async fn require(
    c: &Console,
    who: &Person,
    access: Access,
    what: &str,
) -> Result<(), Response> {
    if who.may(access) {
        return Ok(());
    }
    c.fleet
        .audit_denied(
            &who.actor(),
            "auth.forbidden",
            what,
            &format!("role {} may not do this", who.0.role),
        )
        .await;
    Err(error_page(
        StatusCode::FORBIDDEN,
        &format!("your role ({}) may not {what}", who.0.role),
    ))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
}

/// Where to go after sign-in.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

fn safe_next(n: Option<&str>) -> String {
    match n {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && p.len() < 512 => p.to_owned(),
        _ => "/".into(),
    }
}

fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 24];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    hex::encode(b)
}

fn login_form(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let token = random_token();
    let page = LoginPage {
        next,
        csrf: &token,
        error,
    };
    let mut r = render(&page);
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/login; Secure; HttpOnly; SameSite=Strict; Max-Age=900"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The sign-in page.
pub async fn login_page(Query(q): Query<Next>) -> Response {
    login_form(&safe_next(q.next.as_deref()), None, StatusCode::OK)
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Signs in: on success a session cookie and a redirect; on failure the form
/// again with one message for every reason.
pub async fn login(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    f: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return login_form(
            "/",
            Some("the sign-in form was incomplete: try again"),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(f.next.as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let token_ok = !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(f.csrf.as_bytes()));
    if !token_ok || !same_origin(&headers) {
        c.fleet
            .audit_denied(
                &format!("anonymous@{}", peer),
                "console.csrf",
                "login",
                "a sign-in form without its token, or from another origin",
            )
            .await;
        return login_form(
            &next,
            Some("the sign-in form expired: try again"),
            StatusCode::FORBIDDEN,
        );
    }
    let password = Zeroizing::new(f.password);
    match c.accounts.login(&f.name, password, peer).await {
        Ok(s) => {
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                s.cookie.as_str(),
                s.max_age_secs
            )) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{LOGIN_COOKIE}=; Path=/login; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
            )) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(LoginError::Throttled(mins)) => login_form(
            &next,
            Some(&format!(
                "too many failed sign-ins: try again in {mins} minutes"
            )),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(LoginError::Refused) => login_form(
            &next,
            Some("wrong name or password"),
            StatusCode::UNAUTHORIZED,
        ),
        Err(LoginError::Internal(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sign-in failed; see the server log",
            )
        }
    }
}

/// A form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// Signs out: the session ends on the server and the cookie is cleared.
pub async fn logout(
    State(c): State<Console>,
    who: Person,
    headers: HeaderMap,
    f: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = f else {
        return error_page(StatusCode::BAD_REQUEST, "the form is malformed");
    };
    if let Err(r) = check_form(&c, &who, &headers, &f.csrf).await {
        return r;
    }
    if let Err(e) = c.accounts.logout(&who.0).await {
        return crate::chrome::service_error(e);
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
