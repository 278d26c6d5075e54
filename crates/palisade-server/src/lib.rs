//! The Palisade control plane: configuration, bootstrap of the data directory,
//! the services, and the HTTPS listener, composed in one place ([`Server`]).
//!
//! Startup is config → build → spawn: [`Server::build`] reads and checks
//! everything and opens the store, binding nothing; [`Server::spawn`] takes an
//! already-bound listener and returns a [`Handle`] that shuts the server down.
//! Tests therefore run the whole platform in-process on an ephemeral port.

pub mod alerts;
pub mod api;
pub mod attestation;
pub mod blobs;
pub mod bootstrap;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod enroll;
pub mod est;
mod files;
pub mod fleet;
pub mod gateway;
pub mod lifecycle;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod pki;
pub mod releases;
pub mod rollouts;
pub mod tls;
pub mod tokens;
pub mod tuf;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use palisade_core::Clock;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::auth::{AuditLimiter, ClientCertChain, PeerAddr};
use crate::api::{AppState, router};
pub use crate::bootstrap::DataDir;
pub use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::tls::SwappableConfig;

/// The system clock: the one place the process reads the time of day.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}

/// A built server: state loaded, nothing bound yet.
#[derive(Debug)]
pub struct Server {
    config: Config,
    boot: bootstrap::Bootstrapped,
    state: AppState,
    tls: Arc<SwappableConfig>,
    gateway: Arc<gateway::Gateway>,
    subscribed:
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<palisade_core::DeviceId>>>,
}

/// The bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// HTTPS (API, EST).
    pub https: TcpListener,
    /// MQTT over TLS (devices), if enabled.
    pub mqtt: Option<TcpListener>,
    /// The IPFIX / NetFlow collector (UDP), if enabled.
    pub flows: Option<tokio::net::UdpSocket>,
}

/// A running server.
#[derive(Debug)]
pub struct Handle {
    /// The bound HTTPS address.
    pub addr: SocketAddr,
    /// The bound MQTT address, if the gateway is on.
    pub mqtt_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Tasks that must finish their last write before the process exits.
    flushers: Vec<tokio::task::JoinHandle<()>>,
}

impl Handle {
    /// Stops accepting, lets connections finish (up to 10 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        for f in self.flushers {
            let _ = tokio::time::timeout(Duration::from_secs(10), f).await;
        }
    }
}

impl Server {
    /// Checks the configuration and loads or creates all state.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        let boot = bootstrap::bootstrap(&config, clock.clone()).await?;
        let tls = tls::server_config(&boot.dir.tls_cert(), &boot.dir.tls_key())?;
        let sessions = Arc::new(gateway::Sessions::default());
        let fleet = Arc::new(Fleet::new(
            boot.store.clone(),
            boot.pki.clone(),
            clock.clone(),
            config.limits.max_csr_bytes,
            config.ca.device_cert_validity_days,
            sessions.clone(),
        ));
        let crl = boot
            .pki
            .crl(&*boot.store)
            .await
            .context("publishing the first CRL")?;
        let mqtt_tls = gateway::tls_config(
            &boot.pki,
            Some(crl),
            &boot.dir.tls_cert(),
            &boot.dir.tls_key(),
        )?;
        let (bus, _) = tokio::sync::broadcast::channel(4096);
        let (subscribed_tx, subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
        let commands = Arc::new(commands::Commands::new(
            boot.store.clone(),
            sessions.clone(),
            clock.clone(),
        ));
        let presence = Arc::new(gateway::Presence::default());
        let metrics = Arc::new(Metrics::default());
        let monitor = Arc::new(monitor::Monitor::new(metrics.clone(), clock.clone()));
        let attestation = Arc::new(attestation::Attestation::new(
            boot.store.clone(),
            sessions.clone(),
            clock.clone(),
            metrics.clone(),
            Duration::from_secs(config.attestation.interval_secs),
            Arc::new(monitor::AttestationFailures(monitor.clone())),
        ));
        let enrollment = Arc::new(
            crate::enroll::Enrollment::new(
                boot.store.clone(),
                boot.pki.clone(),
                clock.clone(),
                config.limits.max_csr_bytes,
                attestation.clone(),
            )
            .with_monitor(monitor.clone()),
        );
        let blobs = blobs::FsBlobStore::new(&boot.dir.blobs())
            .with_context(|| format!("opening the blob store {}", boot.dir.blobs().display()))?;
        let releases = Arc::new(releases::Releases::new(
            boot.store.clone(),
            Arc::new(blobs),
            clock.clone(),
        ));
        let tuf = tuf::Repository::open(&boot.dir.tuf())
            .with_context(|| format!("opening the TUF repository {}", boot.dir.tuf().display()))?;
        let rollouts = Arc::new(rollouts::Rollouts::new(
            boot.store.clone(),
            tuf.clone(),
            sessions.clone(),
            clock.clone(),
        ));
        let network = Arc::new(
            network::Network::new(boot.store.clone(), clock.clone(), boot.dir.policy_key())
                .map_err(|e| anyhow::anyhow!("the policy signing key: {e}"))?,
        );
        let alerts = Arc::new(alerts::Alerts::new(
            boot.store.clone(),
            fleet.clone(),
            clock.clone(),
            metrics.clone(),
            config.monitoring.clone(),
        ));
        alerts
            .load()
            .await
            .context("loading the unresolved alerts")?;
        let state = AppState {
            alerts,
            monitor: monitor.clone(),
            tuf,
            network,
            rollouts,
            releases,
            max_image_bytes: config.ota.max_image_bytes,
            fleet,
            enrollment,
            store: boot.store.clone(),
            pki: boot.pki.clone(),
            metrics,
            sessions: sessions.clone(),
            presence: presence.clone(),
            commands: commands.clone(),
            attestation,
            bus: bus.clone(),
            clock,
            audit_limiter: Arc::new(AuditLimiter::new(config.limits.auth_failure_audit_per_sec)),
            audit_vkey: boot.audit.verifier()?.to_vkey().into(),
            metrics_public: config.metrics_public,
            request_timeout: Duration::from_secs(config.limits.request_timeout_secs),
        };
        let gateway = Arc::new(gateway::Gateway {
            store: boot.store.clone(),
            sessions,
            metrics: state.metrics.clone(),
            clock: state.clock.clone(),
            limits: config.mqtt.limits(),
            bus,
            tls: Arc::new(SwappableConfig::new(mqtt_tls)),
            handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
            subscribed: subscribed_tx,
            presence: presence.clone(),
            monitor,
            peers: Default::default(),
            next_session: Default::default(),
        });
        Ok(Self {
            config,
            boot,
            state,
            tls: Arc::new(SwappableConfig::new(tls)),
            gateway,
            subscribed: std::sync::Mutex::new(Some(subscribed_rx)),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.boot.dir
    }

    /// The admin token file, if this run created it.
    pub fn created_admin_token(&self) -> Option<&PathBuf> {
        self.boot.created_admin_token.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the configured listeners.
    pub async fn bind(&self) -> anyhow::Result<Listeners> {
        let https = TcpListener::bind(self.config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another server using the port? Choose another with --listen",
                self.config.listen
            )
        })?;
        let mqtt = match self.config.mqtt_listen {
            Some(a) => Some(TcpListener::bind(a).await.with_context(|| {
                format!(
                    "cannot listen for MQTT on {a}: is another broker using the port? Choose another with --mqtt-listen"
                )
            })?),
            None => None,
        };
        let flows = match self.config.monitoring.flow_listen {
            Some(a) => Some(monitor::bind_flows(a).await?),
            None => None,
        };
        Ok(Listeners { https, mqtt, flows })
    }

    /// Serves until the handle is shut down.
    pub fn spawn(self, listeners: Listeners) -> anyhow::Result<Handle> {
        let addr = listeners.https.local_addr()?;
        let mqtt_addr = listeners
            .mqtt
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let (tx, rx) = watch::channel(false);
        let rx_shutdown = rx.clone();
        // Device messages feed the inventory's presence view.
        tokio::spawn(
            self.state
                .presence
                .clone()
                .follow(self.gateway.bus.subscribe()),
        );
        let presence_flush = tokio::spawn(self.state.presence.clone().flush_every(
            self.boot.store.clone(),
            Duration::from_secs(5),
            rx.clone(),
        ));
        if let Some(mut rx) = self.subscribed.lock().ok().and_then(|mut s| s.take()) {
            // A device subscribing to its commands gets its queued commands and,
            // if it has a TPM, an attestation challenge.
            let (to_commands, commands_rx) = tokio::sync::mpsc::unbounded_channel();
            let (to_attest, attest_rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    let _ = to_commands.send(d.clone());
                    let _ = to_attest.send(d);
                }
            });
            tokio::spawn(
                self.state
                    .commands
                    .clone()
                    .follow(self.gateway.bus.subscribe(), commands_rx),
            );
            tokio::spawn(self.state.attestation.clone().follow(
                self.gateway.bus.subscribe(),
                attest_rx,
                rx_shutdown.clone(),
            ));
        }
        let monitoring = monitor::MonitorDeps {
            monitor: self.state.monitor.clone(),
            store: self.boot.store.clone(),
            network: self.state.network.clone(),
            alerts: self.state.alerts.clone(),
            metrics: self.state.metrics.clone(),
            config: self.config.monitoring.clone(),
        }
        .spawn(self.gateway.bus.subscribe(), listeners.flows, rx.clone());
        crate::deliver::spawn(&self.state.alerts, &self.config.monitoring, rx.clone());
        tokio::spawn(self.state.rollouts.clone().run(
            Duration::from_millis(self.config.ota.rollout_tick_ms),
            rx.clone(),
        ));
        // TUF freshness: the timestamp (valid a day) is re-signed every hour.
        {
            let tuf = self.state.tuf.clone();
            let clock = self.state.clock.clone();
            let mut stop = rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tick.tick() => {
                            match tuf.refresh_timestamp(pki::unix_ms(clock.now())).await {
                                Ok(()) | Err(tuf::TufError::NoRoot) => {}
                                Err(e) => tracing::error!(error = %e, "could not re-sign the TUF timestamp"),
                            }
                        }
                    }
                }
            });
        }
        if let Some(mqtt) = listeners.mqtt {
            tracing::info!(addr = %mqtt_addr.map(|a| a.to_string()).unwrap_or_default(), "listening (MQTT over TLS)");
            tokio::spawn(self.gateway.clone().run(mqtt, rx.clone()));
            tokio::spawn(refresh_gateway_crl(
                self.gateway.clone(),
                self.boot.pki.clone(),
                self.boot.store.clone(),
                self.boot.dir.clone(),
                rx.clone(),
            ));
        }
        let task = tokio::spawn(self.accept_loop(listeners.https, rx));
        Ok(Handle {
            addr,
            mqtt_addr,
            shutdown: tx,
            task,
            flushers: std::iter::once(presence_flush).chain(monitoring).collect(),
        })
    }

    async fn accept_loop(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let app = router(self.state.clone(), self.config.limits.max_body_bytes);
        let slots = Arc::new(Semaphore::new(self.config.limits.max_connections));
        let handshake_timeout = Duration::from_secs(self.config.limits.handshake_timeout_secs);
        let metrics = self.state.metrics.clone();
        let mut conns = JoinSet::new();
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening (HTTPS)");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
                a = listener.accept() => a,
            };
            // Reap finished connections so the set does not grow.
            while conns.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.connection_refused();
                drop(tcp);
                continue;
            };
            let Some(cfg) = self.tls.current() else {
                continue;
            };
            let app = app.clone();
            let metrics = metrics.clone();
            let mut conn_shutdown = shutdown.clone();
            conns.spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(
                    handshake_timeout,
                    TlsAcceptor::from(cfg).accept(tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        metrics.handshake_failed();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.handshake_failed();
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let chain = tls.get_ref().1.peer_certificates().map(|c| {
                    ClientCertChain(Arc::new(c.iter().map(|d| d.clone().into_owned()).collect()))
                });
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        if let Some(c) = &chain {
                            req.extensions_mut().insert(c.clone());
                        }
                        app.clone().oneshot(req.map(axum::body::Body::new))
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    }
                    _ = conn_shutdown.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                    }
                }
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        tracing::info!("server stopped");
        drop(self.boot.lock);
    }
}

/// Rebuilds the gateway's TLS verifier with the new CRL after each revocation, so
/// new handshakes with a revoked certificate fail without a restart.
async fn refresh_gateway_crl(
    gw: Arc<gateway::Gateway>,
    pki: Arc<pki::Pki>,
    store: Arc<dyn palisade_store::Store>,
    dir: DataDir,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = pki.watch_crl();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        let built = match pki.crl(&*store).await {
            Ok(crl) => gateway::tls_config(&pki, Some(crl), &dir.tls_cert(), &dir.tls_key()),
            Err(e) => Err(anyhow::anyhow!(e)),
        };
        match built {
            Ok(cfg) => gw.tls.replace(cfg),
            Err(e) => tracing::error!(error = %e, "could not refresh the gateway's CRL"),
        }
    }
}
