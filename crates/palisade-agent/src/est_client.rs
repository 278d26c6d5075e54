//! A minimal EST client: `cacerts`, `simpleenroll` (birth certificate or token)
//! and `simplereenroll` (operational certificate) over HTTPS, trusting only the
//! configured Palisade root.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use palisade_core::Signer;
use rustls::pki_types::CertificateDer;

use crate::tls_key::ClientIdentity;

/// Why an EST exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum EstError {
    /// Could not reach the server, or TLS failed (including an untrusted server).
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// Server URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server refused; its reason follows.
    #[error("the server refused ({status}): {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's text.
        reason: String,
    },
    /// The answer was not a certs-only CMS message.
    #[error("the server's answer is malformed: {0}")]
    Malformed(String),
    /// Bad configuration (URL, root file).
    #[error("{0}")]
    Config(String),
}

fn refused(status: StatusCode, body: &[u8]) -> EstError {
    EstError::Refused {
        status: status.as_u16(),
        reason: String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    }
}

/// Largest answer read into memory (certificates, attestation, JSON).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Credentials for an attestation step.
#[derive(Debug, Clone)]
pub enum AttestAuth<'a> {
    /// Before the first enrolment.
    Enroll(&'a EnrollAuth),
    /// At renewal: the current operational certificate and key.
    Operational {
        /// The certificate chain, leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// Its key.
        key: Arc<dyn Signer>,
    },
}

/// How a device authenticates its first enrolment.
#[derive(Debug, Clone)]
pub enum EnrollAuth {
    /// Its birth certificate (and the keystore key for it).
    BirthCertificate {
        /// IDevID chain, leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// The birth key.
        key: Arc<dyn Signer>,
    },
    /// A one-time enrolment token for the device id.
    Token {
        /// Device id (HTTP Basic user name).
        device: String,
        /// The token.
        token: String,
    },
}

/// An EST client for one server.
#[derive(Clone)]
pub struct EstClient {
    url: String,
    host: String,
    port: u16,
    /// The roots given at start (`--ca`), as DER: always trusted.
    base: Arc<Vec<Vec<u8>>>,
    /// What is trusted now: the base roots and those taken on at a root
    /// rollover (see [`EstClient::trust_also`]).
    roots: Arc<std::sync::RwLock<Arc<rustls::RootCertStore>>>,
    label: Option<String>,
    key_protection: Option<&'static str>,
}

impl std::fmt::Debug for EstClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EstClient {
    /// A client for `url` trusting only the CA certificates in `root_pem`.
    pub fn new(url: &str, root_pem: &[u8], label: Option<String>) -> Result<Self, EstError> {
        use rustls::pki_types::pem::PemObject;
        let uri: Uri = url
            .parse()
            .map_err(|_| EstError::Config(format!("{url:?} is not a URL")))?;
        if uri.scheme_str() != Some("https") {
            return Err(EstError::Config(format!("{url:?} must be https://")));
        }
        let host = uri
            .host()
            .ok_or_else(|| EstError::Config(format!("{url:?} has no host")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_owned();
        let mut roots = rustls::RootCertStore::empty();
        let mut base = vec![];
        for c in CertificateDer::pem_slice_iter(root_pem) {
            let c = c.map_err(|e| EstError::Config(format!("root CA file: {e}")))?;
            base.push(c.to_vec());
            roots
                .add(c)
                .map_err(|e| EstError::Config(format!("root CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(EstError::Config(
                "the root CA file holds no certificate".into(),
            ));
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            port: uri.port_u16().unwrap_or(443),
            host,
            base: Arc::new(base),
            roots: Arc::new(std::sync::RwLock::new(Arc::new(roots))),
            label,
            key_protection: None,
        })
    }

    /// The trusted roots (for other connections to the same installation).
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        match self.roots.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The roots given at start, DER.
    pub fn base_roots(&self) -> &[Vec<u8>] {
        &self.base
    }

    /// A client like this one whose trust is its own from now on (an agent
    /// that takes on new roots does not change its clones' trust).
    pub fn with_own_trust(&self) -> Self {
        let mut c = self.clone();
        c.roots = Arc::new(std::sync::RwLock::new(self.roots()));
        c
    }

    /// Trusts `extra` (DER roots) besides the base roots from now on:
    /// replaces any extra roots given before. Unreadable ones are skipped.
    pub fn trust_also(&self, extra: &[Vec<u8>]) {
        let mut roots = rustls::RootCertStore::empty();
        for der in self.base.iter().chain(extra) {
            let _ = roots.add(CertificateDer::from(der.clone()));
        }
        match self.roots.write() {
            Ok(mut r) => *r = Arc::new(roots),
            Err(p) => *p.into_inner() = Arc::new(roots),
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Says how the device's keys are kept (`Palisade-Key-Protection` header on
    /// enrolment), e.g. `secure-element`. A TPM is proven, not said.
    pub fn with_key_protection(mut self, kind: &'static str) -> Self {
        self.key_protection = Some(kind);
        self
    }

    fn path(&self, op: &str) -> String {
        match &self.label {
            Some(l) => format!("/.well-known/est/{l}/{op}"),
            None => format!("/.well-known/est/{op}"),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        op: &str,
        identity: Option<ClientIdentity>,
        basic: Option<(&str, &str)>,
        body: Option<String>,
    ) -> Result<Vec<Vec<u8>>, EstError> {
        let body = body.map(|b| (palisade_est::CT_PKCS10, Bytes::from(b)));
        let (status, bytes) = self
            .send(method, &self.path(op), identity, basic, body)
            .await?;
        if status != StatusCode::OK {
            return Err(refused(status, &bytes));
        }
        palisade_est::decode_certs_only(&bytes).map_err(|e| EstError::Malformed(e.to_string()))
    }

    /// One HTTPS request with the given client identity or HTTP Basic
    /// credentials; the answer is read up to [`MAX_ANSWER_BYTES`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        identity: Option<ClientIdentity>,
        basic: Option<(&str, &str)>,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), EstError> {
        let resp = self.open(method, path, identity, basic, body, None).await?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| EstError::Connect {
                url: self.url.clone(),
                reason: format!("reading the answer: {e}"),
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A request over mutual TLS with the device's operational identity: a JSON
    /// body (or none) and a bounded answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        identity: ClientIdentity,
        json: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), EstError> {
        let body = json.map(|j| ("application/json", Bytes::from(j)));
        self.send(method, path, Some(identity), None, body).await
    }

    /// A GET over mutual TLS whose body the caller streams; `range_from`
    /// asks for the bytes from that offset on (HTTP Range), to resume.
    pub async fn get_stream(
        &self,
        path: &str,
        identity: ClientIdentity,
        range_from: Option<u64>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, EstError> {
        self.open(Method::GET, path, Some(identity), None, None, range_from)
            .await
    }

    async fn open(
        &self,
        method: Method,
        path: &str,
        identity: Option<ClientIdentity>,
        basic: Option<(&str, &str)>,
        body: Option<(&'static str, Bytes)>,
        range_from: Option<u64>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, EstError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EstError::Config(e.to_string()))?
            .with_root_certificates(self.roots());
        let mut cfg = match identity {
            Some(id) => builder.with_client_cert_resolver(Arc::new(id)),
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut req = crate::https::request(method, path, &self.host, self.port);
        if let Some(from) = range_from {
            req = req.header(hyper::header::RANGE, format!("bytes={from}-"));
        }
        if let Some(kind) = self.key_protection {
            req = req.header("palisade-key-protection", kind);
        }
        if let Some((user, pass)) = basic {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Basic {}", B64.encode(format!("{user}:{pass}"))),
            );
        }
        let payload = match body {
            Some((ct, b)) => {
                req = req.header(hyper::header::CONTENT_TYPE, ct);
                b
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| EstError::Config(e.to_string()))?;
        crate::https::send(Arc::new(cfg), &self.host, self.port, req)
            .await
            .map_err(|e| EstError::Connect {
                url: self.url.clone(),
                reason: e.to_string(),
            })
    }

    /// A TPM attestation step (`/attest/v1/{step}`) with a JSON body, as `auth`
    /// (enrolment credentials) or with the current operational certificate.
    pub async fn attest<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        step: &str,
        auth: AttestAuth<'_>,
        body: &T,
    ) -> Result<Option<R>, EstError> {
        let json = serde_json::to_vec(body).map_err(|e| EstError::Config(e.to_string()))?;
        let body = Some(("application/json", Bytes::from(json)));
        let path = format!("/attest/v1/{step}");
        let (status, bytes) = match auth {
            AttestAuth::Enroll(EnrollAuth::BirthCertificate { chain, key }) => {
                let id = ClientIdentity::new(chain.clone(), key.clone());
                self.send(Method::POST, &path, Some(id), None, body).await?
            }
            AttestAuth::Enroll(EnrollAuth::Token { device, token }) => {
                self.send(Method::POST, &path, None, Some((device, token)), body)
                    .await?
            }
            AttestAuth::Operational { chain, key } => {
                let id = ClientIdentity::new(chain, key);
                self.send(Method::POST, &path, Some(id), None, body).await?
            }
        };
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EstError::Malformed(e.to_string())),
            s => Err(refused(s, &bytes)),
        }
    }

    /// The CA certificates (issuing CA and root), DER.
    pub async fn cacerts(&self) -> Result<Vec<Vec<u8>>, EstError> {
        self.exchange(Method::GET, "cacerts", None, None, None)
            .await
    }

    /// First enrolment; returns the operational certificate (DER).
    pub async fn simpleenroll(
        &self,
        auth: &EnrollAuth,
        csr_der: &[u8],
    ) -> Result<Vec<u8>, EstError> {
        let body = Some(B64.encode(csr_der));
        let certs = match auth {
            EnrollAuth::BirthCertificate { chain, key } => {
                let id = ClientIdentity::new(chain.clone(), key.clone());
                self.exchange(Method::POST, "simpleenroll", Some(id), None, body)
                    .await?
            }
            EnrollAuth::Token { device, token } => {
                self.exchange(
                    Method::POST,
                    "simpleenroll",
                    None,
                    Some((device, token)),
                    body,
                )
                .await?
            }
        };
        certs
            .into_iter()
            .next()
            .ok_or_else(|| EstError::Malformed("no certificate".into()))
    }

    /// Renewal with the current operational certificate and key.
    pub async fn simplereenroll(
        &self,
        current: Vec<CertificateDer<'static>>,
        key: Arc<dyn Signer>,
        csr_der: &[u8],
    ) -> Result<Vec<u8>, EstError> {
        let id = ClientIdentity::new(current, key);
        let certs = self
            .exchange(
                Method::POST,
                "simplereenroll",
                Some(id),
                None,
                Some(B64.encode(csr_der)),
            )
            .await?;
        certs
            .into_iter()
            .next()
            .ok_or_else(|| EstError::Malformed("no certificate".into()))
    }
}
