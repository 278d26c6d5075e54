//! Palisade's HTTP surface over the control plane's services, split by trust
//! zone, each with its own router and its own credential:
//!
//! - [`public`]: anonymous (health, CRL, CA chain, EST `cacerts`/`csrattrs`,
//!   TUF metadata and images);
//! - [`operator`]: bearer tokens with a role (`/api/v1/…`, `/metrics`, the
//!   OpenAPI document) — a client certificate is never looked at;
//! - [`device`]: client certificates (EST enrolment, attestation, director,
//!   edges) — an operator token is never looked at.
//!
//! [`serve`] is the HTTPS accept loop that feeds them.

mod device;
pub mod error;
mod est;
pub mod html;
mod listener;
pub mod operator;
mod public;
pub mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use listener::{Listener, serve};
pub use state::Services;

use crate::error::ApiError;
use crate::state::{DeviceApi, OperatorApi, PublicApi};

/// The TLS client certificate chain of the connection (leaf first), inserted by
/// the accept loop when the client presented one. Only possession of the leaf's
/// key is proven by the handshake; who trusts it is decided per use (EST).
#[derive(Debug, Clone)]
pub struct ClientCertChain(pub std::sync::Arc<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// The peer address of the connection, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The routes of every zone, with the request bounds (body size, time) and
/// response counting every request gets. `people` are the routes for people
/// in a browser (the console), merged before the API's fallback.
pub fn router(services: Arc<Services>, max_body_bytes: usize, people: Router) -> Router {
    Router::new()
        .merge(people)
        .merge(public::router(PublicApi(services.clone())))
        .merge(operator::router(OperatorApi(services.clone())))
        .merge(device::router(DeviceApi(services.clone())))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(services, observe))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/openapi.json")
}

/// Counts responses and bounds request time.
async fn observe(State(state): State<Arc<Services>>, req: Request, next: Next) -> Response {
    let resp = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: "the request took too long; retry".into(),
        }
        .into_response(),
    };
    state.metrics.response(resp.status().as_u16());
    resp
}
