//! `palisade serve`: configuration from file, environment and flags; logging;
//! build, bind, spawn; stop on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use palisade_server::config::LogFormat;
use palisade_server::{Config, Server, SystemClock};
use tracing_subscriber::EnvFilter;

use crate::Global;
use crate::output::say;

/// Options of `palisade serve`; each may also come from the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see README, "Configuration").
    #[arg(long, env = "PALISADE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the HTTPS listener [default: 127.0.0.1:8443].
    #[arg(long, env = "PALISADE_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Address of the MQTT-over-TLS device gateway [default: 127.0.0.1:8883].
    #[arg(long, env = "PALISADE_MQTT_LISTEN", value_name = "ADDR:PORT")]
    mqtt_listen: Option<SocketAddr>,
    /// Address of the CoAP-over-DTLS device endpoint (UDP) [default: 127.0.0.1:5684].
    #[arg(long, env = "PALISADE_COAP_LISTEN", value_name = "ADDR:PORT")]
    coap_listen: Option<SocketAddr>,
    /// Address of the CoAP listener for OSCORE and EDHOC (plain UDP) [default: 127.0.0.1:5683].
    #[arg(long, env = "PALISADE_OSCORE_LISTEN", value_name = "ADDR:PORT")]
    oscore_listen: Option<SocketAddr>,
    /// Address of the IPFIX / NetFlow v9 collector (UDP) [default: 127.0.0.1:4739].
    #[arg(long, env = "PALISADE_FLOW_LISTEN", value_name = "ADDR:PORT")]
    flow_listen: Option<SocketAddr>,
    /// Names in the server certificate (repeat, or comma-separated in the environment)
    /// [default: localhost, 127.0.0.1, ::1].
    #[arg(
        long = "server-name",
        env = "PALISADE_SERVER_NAMES",
        value_delimiter = ','
    )]
    server_names: Vec<String>,
    /// Organisation name in certificate subjects [default: Palisade].
    #[arg(long, env = "PALISADE_ORGANIZATION")]
    organization: Option<String>,
    /// URL devices and operators use to reach this server (CRL distribution point).
    #[arg(long, env = "PALISADE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter, e.g. info or palisade_gateway=debug [default: info].
    #[arg(long, env = "PALISADE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Serve /metrics without a token (for a scraper on a trusted network).
    #[arg(long, env = "PALISADE_METRICS_PUBLIC")]
    metrics_public: bool,
    /// The issuing CA key on an HSM: an RFC 7512 `pkcs11:` URI
    /// (`pkcs11:token=T;object=K?module-path=MODULE&pin-source=FILE`).
    #[arg(long, env = "PALISADE_CA_ISSUING_KEY", value_name = "PKCS11_URI")]
    ca_issuing_key: Option<String>,
    /// The database: `postgres://user:password@host:port/database` for
    /// PostgreSQL [default: the SQLite file palisade.db in the data directory].
    #[arg(
        long,
        env = "PALISADE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Seconds between TPM quote challenges to each connected TPM device.
    #[arg(long, env = "PALISADE_ATTESTATION_INTERVAL", value_name = "SECS")]
    attestation_interval: Option<u64>,
}

/// Merges file, environment and flags over the defaults.
fn load_config(global: &Global, args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(d) = &global.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(l) = args.listen {
        c.listen = l;
    }
    if let Some(m) = args.mqtt_listen {
        c.mqtt_listen = Some(m);
    }
    if let Some(a) = args.coap_listen {
        c.coap_listen = Some(a);
    }
    if let Some(a) = args.oscore_listen {
        c.oscore_listen = Some(a);
    }
    if let Some(f) = args.flow_listen {
        c.monitoring.flow_listen = Some(f);
    }
    if !args.server_names.is_empty() {
        c.server_names = args.server_names.clone();
    }
    if let Some(o) = &args.organization {
        c.organization = o.clone();
    }
    if let Some(u) = &args.public_url {
        c.public_url = Some(u.clone());
    }
    if let Some(f) = &args.log_format {
        c.log_format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
    }
    if let Some(l) = &args.log_level {
        c.log_level = l.clone();
    }
    if args.metrics_public {
        c.metrics_public = true;
    }
    if let Some(k) = &args.ca_issuing_key {
        c.ca.issuing_key = Some(k.clone());
    }
    if let Some(d) = &args.database {
        c.store.url = Some(d.clone());
    }
    if let Some(i) = args.attestation_interval {
        c.attestation.interval_secs = i;
    }
    if let Some(s3) = c.blobs.s3.as_mut() {
        let env = |names: [&str; 2]| names.iter().find_map(|n| std::env::var(n).ok());
        if let Some(id) = env(["PALISADE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]) {
            s3.access_key_id = Some(id);
        }
        s3.secret_access_key = env(["PALISADE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"])
            .map(zeroize::Zeroizing::new);
    }
    c.validate()?;
    Ok(c)
}

/// Starts logging as the configuration says.
pub fn init_logging(c: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&c.log_level).context("log_level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match c.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// A running server: its handle, URL and data directory.
#[derive(Debug)]
pub struct Started {
    /// Stops it.
    pub handle: palisade_server::Handle,
    /// `https://HOST:PORT`.
    pub url: String,
    /// Its data directory.
    pub dir: std::path::PathBuf,
    /// The root CA certificate file.
    pub root_cert: std::path::PathBuf,
}

/// Builds, binds and spawns the server; writes the files the CLI and
/// simulators find it by (`url`, `mqtt`, `coap`, `oscore`, `flows` in the
/// data directory).
pub async fn start(config: Config) -> anyhow::Result<Started> {
    let server = Server::build(config, Arc::new(SystemClock)).await?;
    let dir = server.data_dir().clone();
    let listeners = server.bind().await?;
    let addr = listeners.https.local_addr()?;
    if let Some(m) = &listeners.mqtt {
        let m = m.local_addr()?;
        std::fs::write(dir.0.join("mqtt"), format!("{m}\n"))
            .with_context(|| format!("writing {}", dir.0.join("mqtt").display()))?;
    }
    if let Some(o) = &listeners.oscore {
        let o = o.local_addr()?;
        std::fs::write(dir.0.join("oscore"), format!("{o}\n"))
            .with_context(|| format!("writing {}", dir.0.join("oscore").display()))?;
    }
    if let Some(c) = &listeners.coap {
        let c = c.local_addr()?;
        std::fs::write(dir.0.join("coap"), format!("{c}\n"))
            .with_context(|| format!("writing {}", dir.0.join("coap").display()))?;
    }
    if let Some(f) = &listeners.flows {
        let f = f.local_addr()?;
        tracing::info!(addr = %f, "listening (IPFIX / NetFlow v9)");
        std::fs::write(dir.0.join("flows"), format!("{f}\n"))
            .with_context(|| format!("writing {}", dir.0.join("flows").display()))?;
    }
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("https://{host}:{}", addr.port());
    std::fs::write(dir.0.join("url"), format!("{url}\n"))
        .with_context(|| format!("writing {}", dir.0.join("url").display()))?;
    if let Some(p) = server.created_admin_token() {
        say(format!(
            "Created the first admin API token in {} (mode 0600). Keep it secret.",
            p.display()
        ));
    }
    let handle = server.spawn(listeners)?;
    Ok(Started {
        handle,
        url,
        root_cert: dir.root_cert(),
        dir: dir.0.clone(),
    })
}

/// Runs the server until a signal.
pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global, &args)?;
    init_logging(&config)?;
    let s = start(config).await?;
    say(format!(
        "Palisade is serving on {url}\n  root CA: {}\n  try:     curl --cacert {} {url}/healthz",
        s.root_cert.display(),
        s.root_cert.display(),
        url = s.url,
    ));
    wait_for_signal().await?;
    say("draining, then shutting down");
    s.handle.drain().await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
