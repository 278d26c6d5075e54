//! Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...),
//! shared by every node: `<prefix>sha256/<hex>`. Requests are signed by the
//! `rusty-s3` crate (AWS Signature V4, presigned URLs) and sent over hyper
//! with rustls, a connection per request (blob traffic is a few large
//! transfers, not many small ones).
//!
//! Writing spools the blob to a local temporary file while hashing it, then
//! uploads it under its hash: in one PUT up to [`PART_BYTES`], else as a
//! multipart upload of [`PART_BYTES`] parts read one at a time (memory stays
//! at one part). An object under a hash is therefore always complete, and a
//! blob already present is not uploaded again. Reads stream the object's
//! body (or a byte range of it) as it arrives.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use super::{
    BlobError, BlobRead, BlobStore, BlobWriter, Publish, Spool, SpoolWriter, spool_dir, valid_sha,
};

/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// The largest answer document read (upload ids, listings, errors).
const ANSWER_BYTES: usize = 1024 * 1024;
/// How much of an error answer is kept for the message.
const ERROR_BYTES: usize = 512;
/// How long a successful readiness check is trusted.
const CHECK_TTL: Duration = Duration::from_secs(5);

/// Where the S3 store is and how to reach it.
#[derive(Clone)]
pub struct S3Settings {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio.internal:9000`, ...
    pub endpoint: url::Url,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`, what MinIO and most
    /// S3-compatible servers want) rather than virtual-host style.
    pub path_style: bool,
    /// A prefix for every key (`palisade/`), or empty.
    pub prefix: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Time allowed to connect and for each answer to start.
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Blobs in an S3 bucket.
#[derive(Clone)]
pub struct S3BlobStore {
    bucket: Arc<Bucket>,
    creds: Arc<Credentials>,
    prefix: String,
    transport: Transport,
    spool: PathBuf,
    checked: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// The store `s`, spooling uploads under `spool` (a local directory).
    pub fn new(s: &S3Settings, spool: &Path) -> Result<Self, BlobError> {
        let bad =
            |m: String| BlobError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
        let style = if s.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            s.endpoint.clone(),
            style,
            s.bucket.clone(),
            s.region.clone(),
        )
        .map_err(|e| bad(format!("S3 bucket {:?} at {}: {e}", s.bucket, s.endpoint)))?;
        let tls = match s.endpoint.scheme() {
            "https" => Some(Arc::new(client_tls(s.ca_file.as_deref())?)),
            "http" => None,
            other => return Err(bad(format!("S3 endpoint scheme {other:?}: http or https"))),
        };
        Ok(Self {
            bucket: Arc::new(bucket),
            creds: Arc::new(Credentials::new(
                s.access_key_id.clone(),
                s.secret_access_key.as_str().to_owned(),
            )),
            prefix: s.prefix.clone(),
            transport: Transport {
                tls,
                timeout: s.timeout,
            },
            spool: spool_dir(spool)?,
            checked: Arc::default(),
        })
    }

    fn key(&self, sha: &str) -> String {
        format!("{}sha256/{sha}", self.prefix)
    }

    async fn put_file(&self, key: &str, spool: &Spool) -> Result<(), BlobError> {
        let mut file = tokio::fs::File::open(&spool.tmp).await?;
        if spool.n <= PART_BYTES as u64 {
            let mut body = Vec::with_capacity(usize::try_from(spool.n).unwrap_or(0));
            file.read_to_end(&mut body).await?;
            let url = self
                .bucket
                .put_object(Some(&self.creds), key)
                .sign(SIGNED_FOR);
            let r = self
                .transport
                .send(Method::PUT, &url, None, body.into())
                .await?;
            return expect_ok(r, &format!("PUT {key}")).await.map(|_| ());
        }
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.creds), key)
            .sign(SIGNED_FOR);
        let r = self
            .transport
            .send(Method::POST, &url, None, Bytes::new())
            .await?;
        let text = expect_ok(r, &format!("starting the upload of {key}")).await?;
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(
            std::str::from_utf8(&text).unwrap_or_default(),
        )
        .map_err(|e| BlobError::Refused {
            what: format!("starting the upload of {key}"),
            status: 200,
            message: format!("unreadable answer: {e}"),
        })?;
        let upload_id = created.upload_id().to_owned();
        match self.upload_parts(key, &upload_id, &mut file).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let url = self
                    .bucket
                    .abort_multipart_upload(Some(&self.creds), key, &upload_id)
                    .sign(SIGNED_FOR);
                if let Err(a) = self
                    .transport
                    .send(Method::DELETE, &url, None, Bytes::new())
                    .await
                {
                    tracing::warn!(key, error = %a, "could not abort a failed multipart upload; the bucket's lifecycle rules must remove it");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &mut tokio::fs::File,
    ) -> Result<(), BlobError> {
        let mut etags = Vec::new();
        let mut part = vec![0u8; PART_BYTES];
        for number in 1u16.. {
            let mut filled = 0;
            while filled < PART_BYTES {
                let n = file.read(&mut part[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let url = self
                .bucket
                .upload_part(Some(&self.creds), key, number, upload_id)
                .sign(SIGNED_FOR);
            let body = Bytes::copy_from_slice(&part[..filled]);
            let r = self.transport.send(Method::PUT, &url, None, body).await?;
            let etag = r
                .headers()
                .get(hyper::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            expect_ok(r, &format!("part {number} of {key}")).await?;
            etags.push(etag.ok_or_else(|| BlobError::Refused {
                what: format!("part {number} of {key}"),
                status: 200,
                message: "no ETag in the answer".into(),
            })?);
            if filled < PART_BYTES {
                break;
            }
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNED_FOR);
        let body = Bytes::from(complete.body());
        let r = self.transport.send(Method::POST, &url, None, body).await?;
        let text = expect_ok(r, &format!("completing the upload of {key}")).await?;
        // S3 may answer 200 with an error document for a failed completion.
        if String::from_utf8_lossy(&text).contains("<Error>") {
            return Err(BlobError::Refused {
                what: format!("completing the upload of {key}"),
                status: 200,
                message: bounded(&text),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Publish for S3BlobStore {
    async fn publish(&self, sha: &str, spool: &Spool) -> Result<(), BlobError> {
        if self.len(sha).await?.is_none() {
            self.put_file(&self.key(sha), spool).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn writer(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(SpoolWriter {
            spool: Spool::create(&self.spool)?,
            to: self.clone(),
        }))
    }

    async fn read(
        &self,
        sha256: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobRead>, BlobError> {
        if !valid_sha(sha256) {
            return Ok(None);
        }
        let key = self.key(sha256);
        let url = self
            .bucket
            .get_object(Some(&self.creds), &key)
            .sign(SIGNED_FOR);
        let header = range.map(|(s, e)| format!("bytes={s}-{e}"));
        let r = self
            .transport
            .send(Method::GET, &url, header.as_deref(), Bytes::new())
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::OK if range.is_none() => {}
            StatusCode::PARTIAL_CONTENT if range.is_some() => {}
            _ => {
                expect_ok(r, &format!("GET {key}")).await?;
                return Err(BlobError::Refused {
                    what: format!("GET {key}"),
                    status: 200,
                    message: "a range was not honoured".into(),
                });
            }
        }
        let len = content_length(&r).ok_or_else(|| BlobError::Refused {
            what: format!("GET {key}"),
            status: r.status().as_u16(),
            message: "no Content-Length".into(),
        })?;
        let body = r.into_body().map_err(std::io::Error::other).boxed_unsync();
        Ok(Some(BlobRead { len, body }))
    }

    async fn len(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        if !valid_sha(sha256) {
            return Ok(None);
        }
        let key = self.key(sha256);
        let url = self
            .bucket
            .head_object(Some(&self.creds), &key)
            .sign(SIGNED_FOR);
        let r = self
            .transport
            .send(Method::HEAD, &url, None, Bytes::new())
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let len = content_length(&r);
        expect_ok(r, &format!("HEAD {key}")).await?;
        Ok(len)
    }

    async fn check(&self) -> Result<(), BlobError> {
        if let Ok(c) = self.checked.lock()
            && c.is_some_and(|t| t.elapsed() < CHECK_TTL)
        {
            return Ok(());
        }
        let mut list = self.bucket.list_objects_v2(Some(&self.creds));
        list.query_mut().insert("max-keys", "1");
        list.query_mut().insert("prefix", self.prefix.clone());
        let url = list.sign(SIGNED_FOR);
        let r = self
            .transport
            .send(Method::GET, &url, None, Bytes::new())
            .await?;
        expect_ok(r, &format!("listing bucket {}", self.bucket.name())).await?;
        if let Ok(mut c) = self.checked.lock() {
            *c = Some(Instant::now());
        }
        Ok(())
    }
}

/// An answer's Content-Length.
fn content_length(r: &Response<Incoming>) -> Option<u64> {
    r.headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A successful answer's body (at most [`ANSWER_BYTES`]: these are the
/// store's XML documents, not blobs), or the error it carries.
async fn expect_ok(r: Response<Incoming>, what: &str) -> Result<Bytes, BlobError> {
    let status = r.status();
    let body = http_body_util::Limited::new(r.into_body(), ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| BlobError::Unavailable(format!("{what}: reading the answer: {e}")))?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(BlobError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            message: bounded(&body),
        })
    }
}

fn bounded(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BYTES)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// rustls with the system's roots and `ca_file`'s.
fn client_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, BlobError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |m: String| BlobError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| bad(format!("reading the S3 CA file {}: {e}", path.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| bad(format!("the S3 CA file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// HTTP/1.1 to the store, over TLS for `https` endpoints.
#[derive(Clone)]
struct Transport {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Transport {
    /// Sends one request on a new connection; the answer's headers arrive
    /// within the timeout, its body streams after.
    async fn send(
        &self,
        method: Method,
        url: &url::Url,
        range: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Incoming>, BlobError> {
        let unavailable =
            |m: String| BlobError::Unavailable(format!("{method} {}: {m}", url.path()));
        let host = url
            .host_str()
            .ok_or_else(|| unavailable("no host in the endpoint".into()))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| unavailable("no port".into()))?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_LENGTH, body.len());
        if let Some(r) = range {
            req = req.header(hyper::header::RANGE, r);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| unavailable(e.to_string()))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
                .await
                .map_err(|e| unavailable(format!("connecting to {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => request(TokioIo::new(tcp), req).await,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::try_from(
                        host.trim_matches(['[', ']']).to_owned(),
                    )
                    .map_err(|e| unavailable(format!("server name {host:?}: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| unavailable(format!("TLS with {host}: {e}")))?;
                    request(TokioIo::new(tls), req).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
    }
}

async fn request<T>(
    io: TokioIo<T>,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, BlobError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| BlobError::Unavailable(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "blob store connection ended with an error");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))
}
