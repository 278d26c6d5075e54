//! Alert delivery to SIEMs: webhooks signed with HMAC-SHA256, and syslog
//! (RFC 5424 messages over TLS with RFC 5425 octet-counting framing). Each
//! destination has its own task and its own bounded subscription: a slow or
//! dead receiver loses events (counted in the log), never slows the rest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::alerts::{AlertEvent, Alerts};
use crate::config::{MonitoringConfig, SyslogConfig, WebhookConfig};

/// Attempts per event before it is given up.
const ATTEMPTS: u32 = 5;

/// Starts one task per configured webhook and syslog collector.
pub fn spawn(alerts: &Arc<Alerts>, cfg: &MonitoringConfig, stop: watch::Receiver<bool>) {
    for w in &cfg.webhooks {
        match Webhook::new(w, alerts.clock()) {
            Ok(h) => {
                tokio::spawn(h.run(alerts.subscribe(), stop.clone()));
            }
            Err(e) => {
                tracing::error!(url = %w.url, error = %format!("{e:#}"), "webhook not started")
            }
        }
    }
    if let Some(s) = &cfg.syslog {
        match Syslog::new(s) {
            Ok(l) => {
                tokio::spawn(l.run(alerts.subscribe(), stop));
            }
            Err(e) => {
                tracing::error!(address = %s.address, error = %format!("{e:#}"), "syslog delivery not started")
            }
        }
    }
}

fn tls_connector(ca_file: &Path) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certificates(&pem)? {
        roots
            .add(c)
            .with_context(|| format!("a certificate in {} is not usable", ca_file.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let blocks = pem::parse_many(pem).context("CA file is not PEM")?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| rustls::pki_types::CertificateDer::from(b.into_contents()))
        .collect())
}

/// Reads a secret file, refusing one others may read.
fn read_secret(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by group or others: chmod 600 it",
            path.display()
        );
    }
    let mut s = Zeroizing::new(std::fs::read(path)?);
    while s.last().is_some_and(|b| b.is_ascii_whitespace()) {
        s.pop();
    }
    if s.len() < 16 {
        bail!("{} holds fewer than 16 bytes of secret", path.display());
    }
    Ok(s)
}

/// Backs off 1, 2, 4, 8 s between attempts, or stops on shutdown.
async fn backoff(attempt: u32, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(Duration::from_secs(1 << attempt.min(3))) => true,
    }
}

async fn next_event(
    rx: &mut broadcast::Receiver<AlertEvent>,
    stop: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<AlertEvent> {
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            e = rx.recv() => match e {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(destination = what, missed = n, "alert delivery fell behind; events lost");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A webhook: each alert event is POSTed as JSON with
/// `X-Palisade-Signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP "." BODY))`
/// and `X-Palisade-Timestamp: TIMESTAMP` (Unix seconds), so the receiver can
/// check both origin and freshness.
struct Webhook {
    url: url::Url,
    key: hmac::Key,
    tls: Option<TlsConnector>,
    clock: Arc<dyn palisade_core::Clock>,
}

impl Webhook {
    fn new(w: &WebhookConfig, clock: Arc<dyn palisade_core::Clock>) -> anyhow::Result<Self> {
        let url = url::Url::parse(&w.url)?;
        let secret = read_secret(&w.secret_file)?;
        let tls = match (url.scheme(), &w.ca_file) {
            ("https", Some(ca)) => Some(tls_connector(ca)?),
            ("https", None) => bail!("https webhook without ca_file"),
            _ => None,
        };
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            url,
            tls,
            clock,
        })
    }

    async fn run(self, mut rx: broadcast::Receiver<AlertEvent>, mut stop: watch::Receiver<bool>) {
        while let Some(e) = next_event(&mut rx, &mut stop, self.url.as_str()).await {
            let body = match serde_json::to_vec(&e) {
                Ok(b) => b,
                Err(_) => continue,
            };
            let mut attempt = 0;
            loop {
                match self.post(&e, &body).await {
                    Ok(()) => break,
                    Err(err) => {
                        attempt += 1;
                        tracing::warn!(url = %self.url, alert = %e.alert.id, attempt, error = %format!("{err:#}"), "webhook delivery failed");
                        if attempt >= ATTEMPTS || !backoff(attempt, &mut stop).await {
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn post(&self, e: &AlertEvent, body: &[u8]) -> anyhow::Result<()> {
        let host = self.url.host_str().context("webhook URL has no host")?;
        let port = self.url.port_or_known_default().unwrap_or(80);
        let ts = self.clock.now().unix_timestamp().to_string();
        let mut signed = ts.clone().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(body);
        let sig = hex::encode(hmac::sign(&self.key, &signed).as_ref());
        let path = match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let req = Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-palisade-event", e.event)
            .header("x-palisade-timestamp", &ts)
            .header("x-palisade-signature", format!("sha256={sig}"))
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))?;
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((host, port)))
            .await
            .context("connect timed out")??;
        let status = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
                let s = tls.connect(name, tcp).await?;
                send(TokioIo::new(s), req).await?
            }
            None => send(TokioIo::new(tcp), req).await?,
        };
        if !status.is_success() {
            bail!("the receiver answered {status}");
        }
        Ok(())
    }
}

async fn send<T>(io: T, req: Request<Full<bytes::Bytes>>) -> anyhow::Result<hyper::StatusCode>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .context("the receiver did not answer within 10 s")??;
    let status = resp.status();
    // Read (and drop) a bounded body so the connection closes cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect()).await;
    driver.abort();
    Ok(status)
}

/// Syslog over TLS: RFC 5424 messages, RFC 5425 framing (`LEN SP MSG`),
/// facility 10 (security/authorization), severity from the alert's.
struct Syslog {
    address: String,
    server_name: String,
    app_name: String,
    tls: TlsConnector,
    hostname: String,
}

impl Syslog {
    fn new(s: &SyslogConfig) -> anyhow::Result<Self> {
        Ok(Self {
            address: s.address.clone(),
            server_name: s.server_name.clone(),
            app_name: s
                .app_name
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(48)
                .collect(),
            tls: tls_connector(&s.ca_file)?,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| {
                    h.trim()
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .take(255)
                        .collect()
                })
                .unwrap_or_else(|_| "-".into()),
        })
    }

    async fn connect(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(self.address.as_str()),
        )
        .await
        .context("connect timed out")??;
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())?;
        Ok(self.tls.connect(name, tcp).await?)
    }

    async fn run(self, mut rx: broadcast::Receiver<AlertEvent>, mut stop: watch::Receiver<bool>) {
        let mut conn = None;
        while let Some(e) = next_event(&mut rx, &mut stop, &self.address).await {
            let msg = format_5424(&self.hostname, &self.app_name, &e);
            let framed = format!("{} {msg}", msg.len());
            let mut attempt = 0;
            loop {
                if conn.is_none() {
                    match self.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(err) => {
                            attempt += 1;
                            tracing::warn!(address = %self.address, attempt, error = %format!("{err:#}"), "syslog connection failed");
                            if attempt >= ATTEMPTS || !backoff(attempt, &mut stop).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { break };
                let sent = async {
                    c.write_all(framed.as_bytes()).await?;
                    c.flush().await
                };
                match tokio::time::timeout(Duration::from_secs(10), sent).await {
                    Ok(Ok(())) => break,
                    _ => {
                        conn = None;
                        attempt += 1;
                        if attempt >= ATTEMPTS || !backoff(attempt, &mut stop).await {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// One RFC 5424 message for an alert event.
pub fn format_5424(hostname: &str, app: &str, e: &AlertEvent) -> String {
    let a = &e.alert;
    let sev = palisade_detect::detect::Severity::parse(&a.severity)
        .map_or(5, |s| s.syslog())
        .max(if e.event == "resolved" { 5 } else { 0 });
    let pri = 10 * 8 + u32::from(sev);
    let ts = palisade_core::rfc3339_ms(a.last_ms).unwrap_or_else(|| "-".into());
    // SD-PARAM values escape '"', '\' and ']' (RFC 5424 6.3.3).
    let esc = |s: &str| -> String {
        s.chars()
            .flat_map(|c| match c {
                '"' | '\\' | ']' => vec!['\\', c],
                c => vec![c],
            })
            .collect()
    };
    format!(
        "<{pri}>1 {ts} {hostname} {app} - {msgid} [alert@32473 id=\"{id}\" event=\"{ev}\" detector=\"{det}\" severity=\"{sevn}\" device=\"{dev}\" state=\"{st}\" count=\"{n}\"] \u{feff}{summary}",
        msgid = match e.event {
            "opened" => "ALERT_OPEN",
            "updated" => "ALERT_UPDATE",
            "acknowledged" => "ALERT_ACK",
            _ => "ALERT_RESOLVE",
        },
        id = esc(&a.id),
        ev = e.event,
        det = esc(&a.detector),
        sevn = esc(&a.severity),
        dev = esc(a.device.as_deref().or(a.peer.as_deref()).unwrap_or("-")),
        st = a.state.as_str(),
        n = a.count,
        summary = a.summary,
    )
}
