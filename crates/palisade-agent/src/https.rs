//! One HTTPS request on a fresh connection, the way every Palisade client
//! talks to the control plane (the agent's EST, director and TUF calls, the
//! edge's, the operator CLI's): TCP, TLS with rustls (the caller's
//! configuration: its roots, its client identity if any), HTTP/1.1 with hyper,
//! and the `Host` header. Callers add their own headers and credentials and
//! turn [`HttpsError`] into their own errors with their own advice.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Which step of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The TCP connection (refused, unreachable, ...).
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    /// The TLS handshake (an untrusted server, a refused client certificate).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The request could not be built.
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    /// HTTP on the established connection.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// A request builder for `method path` on `host:port`, with its `Host` header.
pub fn request(method: Method, path: &str, host: &str, port: u16) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
}

/// Connects to `host:port` with `tls`, sends `req` and returns the response
/// head; the body streams as the caller reads it.
pub async fn send(
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, HttpsError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(HttpsError::Connect)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| HttpsError::ServerName(host.to_owned()))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(HttpsError::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
