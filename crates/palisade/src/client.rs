//! The CLI's HTTPS client for the operator API: one TLS stack (rustls), the
//! server authenticated by Palisade's root CA, the operator by a bearer token.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use palisade_agent::https::HttpsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where and how to reach the server.
pub struct Client {
    url: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The server's message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// Builds a client for `url` trusting the CA certificates in `ca_file`.
    pub fn new(url: &str, ca_file: &Path, token: Option<String>) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL; expected https://HOST:PORT"))?;
        if uri.scheme_str() != Some("https") {
            bail!("{url:?} must be an https:// URL: Palisade has no plaintext listener");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .with_context(|| {
                format!(
                    "cannot read the CA certificate {}: set PALISADE_CA or --ca to Palisade's root CA (palisade-data/ca/root.pem)",
                    ca_file.display()
                )
            })?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading certificates from {}", ca_file.display()))?;
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("adding the CA in {}", ca_file.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid server name"))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            tls: Arc::new(cfg),
            token,
        })
    }

    /// Sends a request with an optional JSON body; returns status and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let payload = match body {
            Some(v) => Some(("application/json", Bytes::from(serde_json::to_vec(v)?))),
            None => None,
        };
        self.send_bytes(method, path, payload).await
    }

    /// Sends a request with an optional raw body of the given content type.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req = palisade_agent::https::request(method, path, &self.host, self.port);
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.header(hyper::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let resp = palisade_agent::https::send(
            self.tls.clone(),
            &self.host,
            self.port,
            req.body(Full::new(payload))?,
        )
        .await
        .map_err(|e| match e {
            HttpsError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => anyhow!(
                "connection refused: is `palisade serve` running on {}? (set PALISADE_URL or --url to reach another server)",
                self.url
            ),
            HttpsError::Connect(e) => anyhow!("cannot connect to {}: {e}", self.url),
            e @ (HttpsError::Tls(_) | HttpsError::ServerName(_)) => anyhow!(e).context(format!(
                "TLS handshake with {} failed: is PALISADE_CA the root CA of this server?",
                self.url
            )),
            e => anyhow!(e).context(format!("request to {}{path} failed", self.url)),
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok((status, bytes))
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request and decodes a successful JSON answer; API errors become
    /// [`ApiFailure`] with the server's message.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            let hint = match status {
                StatusCode::UNAUTHORIZED => {
                    " — set PALISADE_TOKEN or --token (the first admin token is in palisade-data/admin-token)"
                }
                _ => "",
            };
            return Err(ApiFailure {
                status,
                message: format!("{message}{hint}"),
            }
            .into());
        }
        if bytes.is_empty() {
            return serde_json::from_value(Value::Null).context("empty response");
        }
        serde_json::from_slice(&bytes).context("the server's answer is not the JSON expected")
    }
}
