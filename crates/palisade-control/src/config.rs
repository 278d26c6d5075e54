//! Configuration: defaults, then a TOML file, then `PALISADE_*` environment
//! variables and flags (the binary merges those two). Everything is checked by
//! [`Config::validate`] before a port is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Certificate authority settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Root CA lifetime (days).
    pub root_validity_days: u32,
    /// Issuing (intermediate) CA lifetime (days).
    pub intermediate_validity_days: u32,
    /// The server's own TLS certificate lifetime (days).
    pub server_cert_validity_days: u32,
    /// Default device certificate lifetime for new models (days).
    pub device_cert_validity_days: u32,
    /// How long a published CRL is valid (hours); it is re-signed at half-life.
    pub crl_validity_hours: u32,
    /// Where the issuing CA's private key lives: absent for a software key file
    /// (`ca/intermediate.key`, 0600), or an RFC 7512 `pkcs11:` URI naming a key
    /// on an HSM (`pkcs11:token=T;object=K?module-path=…&pin-source=FILE`). The
    /// key is generated on the token, non-extractable, on first start.
    pub issuing_key: Option<String>,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            root_validity_days: 3650,
            intermediate_validity_days: 1825,
            server_cert_validity_days: 365,
            device_cert_validity_days: 30,
            crl_validity_hours: 24,
            issuing_key: None,
        }
    }
}

/// Limits on untrusted input and connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Largest CSR (DER bytes).
    pub max_csr_bytes: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake (seconds).
    pub handshake_timeout_secs: u64,
    /// Time allowed for one request (seconds).
    pub request_timeout_secs: u64,
    /// Audit entries per second for failed logins and denied requests; more are
    /// only counted in metrics, so a flood cannot fill the durable log.
    pub auth_failure_audit_per_sec: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_csr_bytes: 8 * 1024,
            max_connections: 1024,
            handshake_timeout_secs: 10,
            request_timeout_secs: 30,
            auth_failure_audit_per_sec: 20,
        }
    }
}

/// The MQTT device gateway's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Largest MQTT packet (bytes).
    pub max_packet_bytes: u32,
    /// Sustained publishes per second per device (bursts of twice that).
    pub messages_per_sec: u32,
    /// Sustained payload bytes per second per device.
    pub bytes_per_sec: u32,
    /// Time allowed between the TLS handshake and CONNECT (seconds).
    pub connect_timeout_secs: u64,
    /// Longest keepalive a device may ask for (seconds).
    pub max_keepalive_secs: u16,
}

impl Default for MqttConfig {
    fn default() -> Self {
        let l = palisade_mqtt::Limits::default();
        Self {
            max_packet_bytes: l.max_packet_bytes,
            messages_per_sec: l.messages_per_sec,
            bytes_per_sec: l.bytes_per_sec,
            connect_timeout_secs: l.connect_timeout.as_secs(),
            max_keepalive_secs: l.max_keepalive_secs,
        }
    }
}

impl MqttConfig {
    /// As the gateway's typed limits.
    pub fn limits(&self) -> palisade_mqtt::Limits {
        palisade_mqtt::Limits {
            max_packet_bytes: self.max_packet_bytes,
            messages_per_sec: self.messages_per_sec,
            bytes_per_sec: self.bytes_per_sec,
            connect_timeout: std::time::Duration::from_secs(self.connect_timeout_secs),
            max_keepalive_secs: self.max_keepalive_secs,
            ..palisade_mqtt::Limits::default()
        }
    }
}

/// The CoAP endpoint's limits (over DTLS and over OSCORE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoapConfig {
    /// Telemetry, events and answers per second per device (bursts of four
    /// times that); above it a device is told 4.29 with Max-Age.
    pub messages_per_sec: u32,
    /// Largest request body, assembled from Block1 blocks (bytes).
    pub max_body_bytes: u32,
    /// A session or OSCORE context with nothing from its device for this
    /// long is dropped (seconds).
    pub idle_timeout_secs: u64,
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            messages_per_sec: 50,
            max_body_bytes: 65_536,
            idle_timeout_secs: 900,
        }
    }
}

/// The whole configuration of `palisade serve`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where state lives (database, CA, keys, admin token).
    pub data_dir: PathBuf,
    /// HTTPS listener (API, EST; later the dashboard).
    pub listen: SocketAddr,
    /// MQTT over TLS listener for devices; `None` turns the gateway off.
    pub mqtt_listen: Option<SocketAddr>,
    /// CoAP over DTLS listener (UDP) for constrained devices; `None` turns
    /// the endpoint off.
    pub coap_listen: Option<SocketAddr>,
    /// CoAP on plain UDP for OSCORE-protected requests and EDHOC; `None`
    /// turns the listener off.
    pub oscore_listen: Option<SocketAddr>,
    /// DNS names and IP addresses in the server's TLS certificate.
    pub server_names: Vec<String>,
    /// Organisation name in every certificate subject.
    pub organization: String,
    /// Base URL devices and operators use to reach this server (CRL distribution
    /// point); default `https://<first server name>:<port>`.
    pub public_url: Option<String>,
    /// Whether `/metrics` is readable without a token (for a scraper on a trusted
    /// network). Default false: any valid token may read it.
    pub metrics_public: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// CA settings.
    pub ca: CaConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// MQTT gateway limits.
    pub mqtt: MqttConfig,
    /// The CoAP endpoint's limits.
    pub coap: CoapConfig,
    /// TPM attestation.
    pub attestation: AttestationConfig,
    /// Firmware updates.
    pub ota: OtaConfig,
    /// Vulnerability advisories.
    pub advisories: AdvisoriesConfig,
    /// Decommissioning and verified wipes.
    pub decommission: DecommissionConfig,
    /// Support-end enforcement.
    pub support: SupportConfig,
    /// Monitoring: flow collector, detectors, alerts and their delivery.
    pub monitoring: MonitoringConfig,
    /// Posture evaluation.
    pub posture: PostureConfig,
    /// The web console.
    pub console: ConsoleConfig,
    /// The database.
    pub store: StoreConfig,
    /// PROXY protocol v2 from a TCP balancer, per listener.
    pub proxy_protocol: ProxyProtocolConfig,
    /// What the node does on SIGTERM before it exits.
    pub drain: DrainConfig,
    /// Where firmware images, deltas and SBOMs live.
    pub blobs: BlobsConfig,
}

/// Blob storage (`[blobs]`): files under the data directory, or with
/// `[blobs.s3]` an S3-compatible bucket the nodes of a cluster share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// The S3-compatible store; absent, files under `<data>/blobs`.
    pub s3: Option<S3Config>,
    /// Seconds to connect to the store and for each answer to start.
    /// Default 30.
    pub timeout_secs: u64,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            s3: None,
            timeout_secs: 30,
        }
    }
}

/// An S3-compatible bucket (`[blobs.s3]`). The secret key is never in the
/// file: it comes from `PALISADE_S3_SECRET_ACCESS_KEY` (or
/// `AWS_SECRET_ACCESS_KEY`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio.internal:9000`.
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region. Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style URLs (`endpoint/bucket/key`). Default true (MinIO, Ceph and
    /// most S3-compatible servers); false for virtual-host style.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// A prefix for every key (`palisade/`). Default none.
    #[serde(default)]
    pub prefix: String,
    /// The access key id; or `PALISADE_S3_ACCESS_KEY_ID` / `AWS_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key, from the environment only.
    #[serde(skip)]
    pub secret_access_key: Option<zeroize::Zeroizing<String>>,
    /// Extra CA certificates (PEM) to trust for the endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

/// Never prints the secret key.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(set)"),
            )
            .finish_non_exhaustive()
    }
}

impl BlobsConfig {
    /// The S3 store's settings, if one is configured.
    pub fn s3_settings(&self) -> Result<Option<crate::blobs::s3::S3Settings>, ConfigError> {
        let Some(s3) = &self.s3 else {
            return Ok(None);
        };
        let endpoint: url::Url = s3.endpoint.parse().map_err(|e| {
            invalid(
                "blobs.s3.endpoint",
                format!("{:?} is not a URL: {e}", s3.endpoint),
            )
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(invalid(
                "blobs.s3.endpoint",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if s3.bucket.is_empty() {
            return Err(invalid("blobs.s3.bucket", "must name the bucket"));
        }
        let access_key_id = s3.access_key_id.clone().ok_or_else(|| {
            invalid(
                "blobs.s3.access_key_id",
                "set it, or PALISADE_S3_ACCESS_KEY_ID / AWS_ACCESS_KEY_ID",
            )
        })?;
        let secret_access_key = s3.secret_access_key.clone().ok_or_else(|| {
            invalid(
                "blobs.s3",
                "the secret key comes from PALISADE_S3_SECRET_ACCESS_KEY or AWS_SECRET_ACCESS_KEY, which is not set",
            )
        })?;
        if self.timeout_secs == 0 {
            return Err(invalid("blobs.timeout_secs", "must be at least 1"));
        }
        Ok(Some(crate::blobs::s3::S3Settings {
            endpoint,
            bucket: s3.bucket.clone(),
            region: s3.region.clone(),
            path_style: s3.path_style,
            prefix: s3.prefix.clone(),
            access_key_id,
            secret_access_key,
            ca_file: s3.ca_file.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        }))
    }
}

/// Draining on SIGTERM (`[drain]`): the node first reports not ready (so a
/// balancer's health check moves new connections elsewhere), then stops
/// accepting, tells its MQTT clients to move, and lets in-flight requests
/// finish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Seconds `/readyz` answers 503 before the listeners close: at least the
    /// balancer's health-check interval times its fall count. Default 0 (no
    /// balancer).
    pub announce_secs: u64,
    /// `host:port` MQTT 5 clients are told to use instead (DISCONNECT "use
    /// another server" with this server reference): the balancer's address.
    /// Without it they are told the server is shutting down. MQTT 3.1.1
    /// clients are disconnected.
    pub server_reference: Option<String>,
    /// Seconds in-flight requests and closing sessions get before the
    /// process exits anyway. Default 10.
    pub timeout_secs: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            announce_secs: 0,
            server_reference: None,
            timeout_secs: 10,
        }
    }
}

/// PROXY protocol settings (`[proxy_protocol]`): a listener behind a TCP
/// balancer (HAProxy `send-proxy-v2`) learns each connection's real source
/// from the header the balancer sends first. A listener that expects the
/// header refuses connections without one, so turn it on only behind a
/// balancer that sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// The HTTPS listener expects the header.
    pub https: bool,
    /// The MQTT listener expects the header.
    pub mqtt: bool,
    /// The balancers' addresses (prefixes such as `10.0.0.0/24`) whose headers
    /// are believed; a connection from elsewhere is refused. Empty: any.
    pub from: Vec<String>,
}

impl ProxyProtocolConfig {
    /// What a listener with the header turned on (`on`) needs to know.
    pub fn listener(&self, on: bool) -> Option<crate::proxy::ProxySettings> {
        on.then(|| crate::proxy::ProxySettings {
            from: self.from.iter().filter_map(|p| p.parse().ok()).collect(),
        })
    }
}

/// Database settings (`[store]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database` for PostgreSQL; absent,
    /// the SQLite file `palisade.db` in the data directory.
    pub url: Option<String>,
    /// Connections in the read pool (the writer holds one more). Default 8.
    pub max_connections: u32,
    /// Seconds a connection attempt or a read waits for the database before
    /// it fails. Default 5.
    pub acquire_timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            acquire_timeout_secs: 5,
        }
    }
}

impl StoreConfig {
    /// Where the store lives: the URL, or the SQLite file in `data_dir`.
    pub fn database(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<palisade_store::Database, ConfigError> {
        match &self.url {
            Some(u) => u
                .parse()
                .map_err(|e: palisade_store::StoreError| invalid("store.url", e.to_string())),
            None => Ok(palisade_store::Database::Sqlite(
                data_dir.join("palisade.db"),
            )),
        }
    }

    /// The pool settings.
    pub fn pool(&self) -> palisade_store::PoolSettings {
        palisade_store::PoolSettings {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_secs(self.acquire_timeout_secs),
        }
    }
}

/// Never prints the database password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field(
                "url",
                &self.url.as_ref().map(|u| {
                    u.parse::<palisade_store::Database>()
                        .map_or_else(|_| "(invalid)".to_owned(), |d| d.redacted())
                }),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish()
    }
}

/// Web console settings (`[console]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console at `/` on the HTTPS listener. Default true.
    pub enabled: bool,
    /// A session unused this long ends (minutes). Default 30.
    pub session_idle_minutes: u32,
    /// A session ends this long after sign-in, however used (hours). Default 12.
    pub session_max_hours: u32,
    /// The device list calls a device offline after this long without a
    /// message (minutes). Default 15.
    pub offline_after_minutes: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_minutes: 30,
            session_max_hours: 12,
            offline_after_minutes: 15,
        }
    }
}

/// Posture settings (`[posture]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostureConfig {
    /// Seconds between evaluations of the whole fleet (each also records the
    /// day's snapshot). Default 600.
    pub interval_secs: u64,
    /// The checks' thresholds.
    pub thresholds: palisade_posture::Thresholds,
}

impl Default for PostureConfig {
    fn default() -> Self {
        Self {
            interval_secs: 600,
            thresholds: palisade_posture::Thresholds::default(),
        }
    }
}

/// Monitoring settings (`[monitoring]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// The IPFIX / NetFlow v9 collector (UDP); `None` turns it off.
    pub flow_listen: Option<SocketAddr>,
    /// Exporters accepted, as address prefixes (`10.0.0.0/8`); empty: any.
    pub flow_exporters: Vec<String>,
    /// Days of timeline events and resolved alerts kept.
    pub retention_days: u32,
    /// Seconds between per-device flow summaries in the timeline.
    pub flow_summary_secs: u64,
    /// Detector thresholds.
    pub detectors: palisade_detect::detect::Config,
    /// Detectors turned off, by name (`fleet_outlier`, ...).
    pub disabled: Vec<String>,
    /// New alerts per device (or peer) and detector per minute; more are
    /// counted and dropped.
    pub alerts_per_device_per_min: u32,
    /// New alerts per minute over the whole fleet.
    pub alerts_per_min: u32,
    /// Automatic responses (off by default; every one taken is audited).
    pub respond: RespondConfig,
    /// Webhooks that receive alert events, signed with HMAC-SHA256.
    pub webhooks: Vec<WebhookConfig>,
    /// A syslog collector that receives alert events (RFC 5424 over TLS, RFC 5425).
    pub syslog: Option<SyslogConfig>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            flow_listen: Some(SocketAddr::from(([127, 0, 0, 1], 4739))),
            flow_exporters: vec![],
            retention_days: 30,
            flow_summary_secs: 60,
            detectors: palisade_detect::detect::Config::default(),
            disabled: vec![],
            alerts_per_device_per_min: 10,
            alerts_per_min: 300,
            respond: RespondConfig::default(),
            webhooks: vec![],
            syslog: None,
        }
    }
}

/// Which detectors' alerts trigger which automatic response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    /// Detectors whose new alerts quarantine the device.
    pub quarantine: Vec<String>,
    /// Detectors whose new alerts revoke the device's certificates.
    pub revoke: Vec<String>,
}

/// A webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// File holding the HMAC secret (mode 0600).
    pub secret_file: PathBuf,
    /// CA certificates (PEM) that sign the receiver's certificate (https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A syslog collector over TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` (6514 is the registered port).
    pub address: String,
    /// The name in the collector's certificate.
    pub server_name: String,
    /// CA certificates (PEM) that sign the collector's certificate.
    pub ca_file: PathBuf,
    /// APP-NAME in each message.
    #[serde(default = "default_app_name")]
    pub app_name: String,
}

fn default_app_name() -> String {
    "palisade".into()
}

impl MonitoringConfig {
    /// Checks names, URLs and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use palisade_detect::detect::Detector;
        for (key, names) in [
            ("monitoring.disabled", &self.disabled),
            ("monitoring.respond.quarantine", &self.respond.quarantine),
            ("monitoring.respond.revoke", &self.respond.revoke),
        ] {
            if let Some(n) = names.iter().find(|n| Detector::parse(n).is_none()) {
                let known: Vec<&str> = Detector::ALL.iter().map(|d| d.as_str()).collect();
                return Err(invalid(
                    key,
                    format!("unknown detector {n:?}; known: {}", known.join(", ")),
                ));
            }
        }
        for p in &self.flow_exporters {
            p.parse::<palisade_policy::Prefix>().map_err(|e| {
                invalid(
                    "monitoring.flow_exporters",
                    format!("{p:?} is not an address prefix: {e}"),
                )
            })?;
        }
        if self.retention_days == 0 {
            return Err(invalid("monitoring.retention_days", "must be at least 1"));
        }
        if self.alerts_per_device_per_min == 0 || self.alerts_per_min == 0 {
            return Err(invalid(
                "monitoring.alerts_per_min",
                "alert rate limits must be at least 1",
            ));
        }
        for w in &self.webhooks {
            let u = url::Url::parse(&w.url)
                .map_err(|e| invalid("monitoring.webhooks.url", format!("{}: {e}", w.url)))?;
            match u.scheme() {
                "http" => {}
                "https" if w.ca_file.is_some() => {}
                "https" => {
                    return Err(invalid(
                        "monitoring.webhooks.ca_file",
                        format!(
                            "{} is https: name the CA file that signs its certificate",
                            w.url
                        ),
                    ));
                }
                s => {
                    return Err(invalid(
                        "monitoring.webhooks.url",
                        format!("{}: scheme {s} is not http or https", w.url),
                    ));
                }
            }
        }
        if let Some(s) = &self.syslog
            && !s.address.contains(':')
        {
            return Err(invalid(
                "monitoring.syslog.address",
                format!(
                    "{:?} must be host:port (6514 is syslog over TLS)",
                    s.address
                ),
            ));
        }
        Ok(())
    }
}

/// Firmware update settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    /// Largest firmware image accepted (bytes).
    pub max_image_bytes: u64,
    /// Milliseconds between passes of the rollout engine (it also runs when a
    /// device reports).
    pub rollout_tick_ms: u64,
}

impl Default for OtaConfig {
    fn default() -> Self {
        Self {
            max_image_bytes: 256 * 1024 * 1024,
            rollout_tick_ms: 5_000,
        }
    }
}

/// Vulnerability advisory settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvisoriesConfig {
    /// An imported advisory that hits firmware devices run raises an alert if
    /// it was published (or, without a date, last changed) within this many
    /// days; older ones (a backfill of a whole database) are reported by the
    /// import and `advisories list --exposed`, without an alert each.
    pub alert_within_days: u32,
}

impl Default for AdvisoriesConfig {
    fn default() -> Self {
        Self {
            alert_within_days: 30,
        }
    }
}

/// Decommissioning settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecommissionConfig {
    /// How long a device has to answer a wipe command with its signed
    /// receipt; after that it is decommissioned with `wipe: unconfirmed`.
    pub wipe_timeout_s: u64,
}

impl Default for DecommissionConfig {
    fn default() -> Self {
        Self {
            wipe_timeout_s: 72 * 3600,
        }
    }
}

/// Support-end enforcement settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Seconds between checks of the models' support-end dates.
    pub check_every_s: u64,
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self { check_every_s: 60 }
    }
}

/// TPM attestation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// Seconds between quote challenges to each connected TPM device (one is
    /// also sent when the device connects); an unanswered challenge fails the
    /// device after the same time.
    pub interval_secs: u64,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("palisade-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            mqtt_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8883))),
            coap_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5684))),
            oscore_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5683))),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            organization: "Palisade".into(),
            public_url: None,
            metrics_public: false,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            ca: CaConfig::default(),
            limits: LimitsConfig::default(),
            mqtt: MqttConfig::default(),
            coap: CoapConfig::default(),
            attestation: AttestationConfig::default(),
            ota: OtaConfig::default(),
            advisories: AdvisoriesConfig::default(),
            decommission: DecommissionConfig::default(),
            support: SupportConfig::default(),
            monitoring: MonitoringConfig::default(),
            posture: PostureConfig::default(),
            console: ConsoleConfig::default(),
            store: StoreConfig::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
            drain: DrainConfig::default(),
            blobs: BlobsConfig::default(),
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The URL of this server as others reach it.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = self
                    .server_names
                    .first()
                    .map_or("localhost".to_owned(), |h| match h.parse::<IpAddr>() {
                        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                        _ => h.clone(),
                    });
                format!("https://{host}:{}", self.listen.port())
            }
        }
    }

    /// Checks every setting; the error names the setting and what to do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.monitoring.validate()?;
        self.store.database(&self.data_dir)?;
        if self
            .drain
            .server_reference
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > 255 || r.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "drain.server_reference",
                "must be a host name and port such as mqtt.example.com:8883",
            ));
        }
        self.blobs.s3_settings()?;
        if self.drain.timeout_secs == 0 {
            return Err(invalid("drain.timeout_secs", "must be at least 1"));
        }
        for p in &self.proxy_protocol.from {
            p.parse::<palisade_policy::Prefix>().map_err(|e| {
                invalid(
                    "proxy_protocol.from",
                    format!("{p:?} is not an address prefix: {e}"),
                )
            })?;
        }
        if self.store.max_connections == 0 || self.store.acquire_timeout_secs == 0 {
            return Err(invalid(
                "store",
                "max_connections and acquire_timeout_secs must be at least 1",
            ));
        }
        if self.console.session_idle_minutes == 0
            || self.console.session_max_hours == 0
            || u64::from(self.console.session_idle_minutes)
                > u64::from(self.console.session_max_hours) * 60
        {
            return Err(invalid(
                "console.session_idle_minutes",
                "sessions need an idle timeout of at least a minute, no longer than their maximum life",
            ));
        }
        if self.posture.interval_secs < 10 {
            return Err(invalid(
                "posture.interval_secs",
                "evaluate the fleet at most every 10 seconds",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.server_names.is_empty() {
            return Err(invalid(
                "server_names",
                "list at least one DNS name or IP address for the TLS certificate",
            ));
        }
        for n in &self.server_names {
            if n.parse::<IpAddr>().is_err() && !valid_dns_name(n) {
                return Err(invalid(
                    "server_names",
                    format!("{n:?} is neither an IP address nor a valid DNS name"),
                ));
            }
        }
        if self.organization.is_empty()
            || self.organization.len() > 64
            || self.organization.chars().any(char::is_control)
        {
            return Err(invalid(
                "organization",
                "must be 1 to 64 printable characters",
            ));
        }
        if let Some(u) = &self.public_url
            && (!u.starts_with("https://") || u.len() > 200 || u.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "public_url",
                "must be an https:// URL without spaces",
            ));
        }
        let ca = &self.ca;
        if ca.root_validity_days == 0 || ca.root_validity_days > 36500 {
            return Err(invalid("ca.root_validity_days", "must be 1..=36500"));
        }
        if ca.intermediate_validity_days == 0
            || ca.intermediate_validity_days > ca.root_validity_days
        {
            return Err(invalid(
                "ca.intermediate_validity_days",
                "must be at least 1 and no longer than ca.root_validity_days",
            ));
        }
        if ca.server_cert_validity_days == 0 || ca.server_cert_validity_days > 825 {
            return Err(invalid("ca.server_cert_validity_days", "must be 1..=825"));
        }
        if ca.device_cert_validity_days == 0 || ca.device_cert_validity_days > 3650 {
            return Err(invalid("ca.device_cert_validity_days", "must be 1..=3650"));
        }
        if !(2..=24 * 31).contains(&ca.crl_validity_hours) {
            return Err(invalid("ca.crl_validity_hours", "must be 2..=744"));
        }
        if !(1..=7 * 24 * 3600).contains(&self.attestation.interval_secs) {
            return Err(invalid(
                "attestation.interval_secs",
                "must be 1..=604800 (a week)",
            ));
        }
        if !(100..=3_600_000).contains(&self.ota.rollout_tick_ms) {
            return Err(invalid("ota.rollout_tick_ms", "must be 100..=3600000"));
        }
        if !(1024..=16 * 1024 * 1024 * 1024).contains(&self.ota.max_image_bytes) {
            return Err(invalid("ota.max_image_bytes", "must be 1 KiB..=16 GiB"));
        }
        if let Some(uri) = &ca.issuing_key {
            let parsed = palisade_keystore::pkcs11::Pkcs11Uri::parse(uri)
                .map_err(|e| invalid("ca.issuing_key", e.to_string()))?;
            if parsed.module_path.is_none() || parsed.object.is_none() {
                return Err(invalid(
                    "ca.issuing_key",
                    "a pkcs11: URI with ;object=LABEL and ?module-path=MODULE",
                ));
            }
        }
        let l = &self.limits;
        if !(1024..=16 * 1024 * 1024).contains(&l.max_body_bytes) {
            return Err(invalid("limits.max_body_bytes", "must be 1 KiB..=16 MiB"));
        }
        if !(512..=64 * 1024).contains(&l.max_csr_bytes) {
            return Err(invalid("limits.max_csr_bytes", "must be 512..=65536"));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if l.handshake_timeout_secs == 0 || l.request_timeout_secs == 0 {
            return Err(invalid(
                "limits.handshake_timeout_secs",
                "timeouts must be at least 1 second",
            ));
        }
        let m = &self.mqtt;
        if !(1024..=16 * 1024 * 1024).contains(&m.max_packet_bytes) {
            return Err(invalid("mqtt.max_packet_bytes", "must be 1 KiB..=16 MiB"));
        }
        if m.messages_per_sec == 0 || m.bytes_per_sec == 0 || m.connect_timeout_secs == 0 {
            return Err(invalid(
                "mqtt",
                "messages_per_sec, bytes_per_sec and connect_timeout_secs must be at least 1",
            ));
        }
        if self.coap.messages_per_sec == 0
            || self.coap.max_body_bytes < 16
            || self.coap.idle_timeout_secs == 0
        {
            return Err(invalid(
                "coap",
                "messages_per_sec and idle_timeout_secs must be at least 1, max_body_bytes at least 16",
            ));
        }
        if self
            .mqtt_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return Err(invalid("mqtt_listen", "must differ from listen"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            invalid(
                "log_level",
                format!("{e}: use a filter such as \"info\" or \"palisade=debug\""),
            )
        })?;
        Ok(())
    }
}

fn valid_dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bind_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.public_url(), "https://localhost:8443");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<Config>("listen_port = 1").is_err());
        let c: Config = toml::from_str("server_names = [\"bad name\"]").unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "server_names",
                ..
            })
        ));
        let c: Config = toml::from_str("[ca]\nintermediate_validity_days = 99999").unwrap();
        assert!(c.validate().is_err());
    }
}
