//! The Palisade control plane composed in one place ([`Server`]): bootstrap of
//! the data directory, the services (`palisade-control`), the MQTT gateway
//! (`palisade-gateway`) and the HTTP surface (`palisade-http`), wired to one
//! event bus.
//!
//! Startup is config → build → spawn: [`Server::build`] reads and checks
//! everything and opens the store, binding nothing; [`Server::spawn`] takes an
//! already-bound listener and returns a [`Handle`] that shuts the server down.
//! Tests therefore run the whole platform in-process on an ephemeral port.

pub mod bootstrap;

pub use palisade_control::{config, tuf};
pub use palisade_core::SystemClock;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_coap::{Coap, CoapParts};
use palisade_control::cluster::ClusterBus;
use palisade_control::events::{Event, EventBus, LocalBus, Subscription};
use palisade_control::fleet::Fleet;
use palisade_control::metrics::Metrics;
use palisade_control::tls::SwappableConfig;
use palisade_control::{
    alerts, attestation, blobs, commands, deliver, enroll, monitor, network, pki, posture,
    presence, releases, rollouts, sessions, tls, tuf as tuf_repo,
};
use palisade_core::Clock;
use palisade_gateway::{Gateway, GatewayParts};
use palisade_http::state::AuditLimiter;
use palisade_http::{Services, router};
use palisade_store::leader::Leadership;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::bootstrap::DataDir;
pub use palisade_control::config::Config;

/// Events a slow subscriber of the in-process bus may fall behind by before it
/// misses some (and is told so).
const BUS_CAPACITY: usize = 4096;

/// A built server: state loaded, nothing bound yet.
#[derive(Debug)]
pub struct Server {
    config: Config,
    boot: bootstrap::Bootstrapped,
    state: Arc<Services>,
    bus: Arc<dyn EventBus>,
    tls: Arc<SwappableConfig>,
    gateway: Arc<Gateway>,
    coap: Arc<Coap>,
    /// This process's id among the nodes (random per start).
    node: String,
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
    /// CoAP over DTLS (UDP, constrained devices), if enabled.
    pub coap: Option<tokio::net::UdpSocket>,
    /// CoAP with OSCORE and EDHOC (plain UDP), if enabled.
    pub oscore: Option<tokio::net::UdpSocket>,
}

/// A running server.
#[derive(Debug)]
pub struct Handle {
    /// The bound HTTPS address.
    pub addr: SocketAddr,
    /// The bound MQTT address, if the gateway is on.
    pub mqtt_addr: Option<SocketAddr>,
    /// The bound CoAP (DTLS) address, if the endpoint is on.
    pub coap_addr: Option<SocketAddr>,
    /// The bound OSCORE address, if the listener is on.
    pub oscore_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Tasks that must finish their last write before the process exits
    /// (the MQTT gateway's sessions among them).
    flushers: Vec<tokio::task::JoinHandle<()>>,
    /// Set while draining: `/readyz` answers 503.
    draining: Arc<std::sync::atomic::AtomicBool>,
    drain: palisade_control::config::DrainConfig,
}

impl Handle {
    /// Drains (on SIGTERM): reports not ready for `[drain] announce_secs` so
    /// a balancer moves new connections elsewhere, then shuts down: stops
    /// accepting, sends the MQTT sessions elsewhere, finishes in-flight
    /// requests.
    pub async fn drain(self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if self.drain.announce_secs > 0 {
            tracing::info!(
                secs = self.drain.announce_secs,
                "draining: reporting not ready before closing the listeners"
            );
            tokio::time::sleep(Duration::from_secs(self.drain.announce_secs)).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets connections finish (up to 10 s), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let grace = Duration::from_secs(self.drain.timeout_secs.max(10));
        for f in self.flushers {
            let _ = tokio::time::timeout(grace, f).await;
        }
    }
}

/// This process's name among the nodes of a cluster: unique per process.
fn node_id() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| anyhow::anyhow!("the random number generator failed"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// How often sightings of unmanaged hosts are written (and new ones alerted).
const UNMANAGED_FLUSH_SECS: u64 = 5;

impl Server {
    /// Checks the configuration and loads or creates all state.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        let boot = bootstrap::bootstrap(&config, clock.clone()).await?;
        let tls = tls::server_config(&boot.dir.tls_cert(), &boot.dir.tls_key())?;
        // On PostgreSQL the nodes sharing the database share the events they
        // must act on (closing a session, delivering a command) through it.
        let database = config.store.database(&config.data_dir)?;
        let node = node_id()?;
        let bus: Arc<dyn EventBus> = match database.engine() {
            palisade_store::Engine::Sqlite => Arc::new(LocalBus::new(BUS_CAPACITY)),
            palisade_store::Engine::Postgres => {
                ClusterBus::start(&database, node.clone(), BUS_CAPACITY)
                    .await
                    .with_context(|| format!("listening for other nodes' events on {database}"))?
            }
        };
        let sessions = Arc::new(sessions::Sessions::default());
        let fleet = Arc::new(Fleet::new(
            boot.store.clone(),
            boot.pki.clone(),
            clock.clone(),
            config.limits.max_csr_bytes,
            config.ca.device_cert_validity_days,
            sessions.clone(),
            bus.clone(),
        ));
        let crls = boot
            .pki
            .published_crls(&*boot.store)
            .await
            .context("reading the published CRLs (or publishing the first)")?;
        let mqtt_tls =
            tls::gateway_config(&boot.pki, crls, &boot.dir.tls_cert(), &boot.dir.tls_key())?;
        let commands = Arc::new(commands::Commands::new(
            boot.store.clone(),
            sessions.clone(),
            clock.clone(),
            bus.clone(),
        ));
        let presence = Arc::new(presence::Presence::default());
        let metrics = Arc::new(Metrics::default());
        let monitor = Arc::new(monitor::Monitor::new(metrics.clone(), clock.clone()));
        let attestation = Arc::new(attestation::Attestation::new(
            boot.store.clone(),
            sessions.clone(),
            clock.clone(),
            metrics.clone(),
            Duration::from_secs(config.attestation.interval_secs),
            bus.clone(),
        ));
        let enrollment = Arc::new(enroll::Enrollment::new(
            boot.store.clone(),
            boot.pki.clone(),
            clock.clone(),
            config.limits.max_csr_bytes,
            attestation.clone(),
            bus.clone(),
        ));
        let blobs: Arc<dyn blobs::BlobStore> = match config.blobs.s3_settings()? {
            None => Arc::new(blobs::FsBlobStore::new(&boot.dir.blobs()).with_context(|| {
                format!("opening the blob store {}", boot.dir.blobs().display())
            })?),
            Some(s3) => {
                let store = blobs::s3::S3BlobStore::new(&s3, &boot.dir.blobs())
                    .with_context(|| format!("the S3 blob store {}", s3.endpoint))?;
                if let Err(e) = blobs::BlobStore::check(&store).await {
                    tracing::warn!(error = %e, bucket = %s3.bucket, "the S3 blob store does not answer yet; the node reports not ready until it does");
                }
                Arc::new(store)
            }
        };
        let releases = Arc::new(releases::Releases::new(
            boot.store.clone(),
            blobs,
            clock.clone(),
        ));
        let tuf = tuf_repo::Repository::open(&boot.dir.tuf(), boot.store.clone(), clock.now_ms())
            .await
            .with_context(|| format!("opening the TUF repository {}", boot.dir.tuf().display()))?;
        let rollouts = Arc::new(rollouts::Rollouts::new(
            boot.store.clone(),
            tuf.clone(),
            sessions.clone(),
            clock.clone(),
        ));
        let network = Arc::new(
            network::Network::new(
                boot.store.clone(),
                clock.clone(),
                boot.dir.policy_key(),
                bus.clone(),
            )
            .map_err(|e| anyhow::anyhow!("the policy signing key: {e}"))?,
        );
        let alerts = Arc::new(alerts::Alerts::new(
            boot.store.clone(),
            fleet.clone(),
            clock.clone(),
            metrics.clone(),
            config.monitoring.clone(),
            bus.clone(),
        ));
        alerts
            .load()
            .await
            .context("loading the unresolved alerts")?;
        let posture = Arc::new(posture::Posture::new(
            boot.store.clone(),
            sessions.clone(),
            clock.clone(),
            config.posture.thresholds,
        ));
        let accounts = Arc::new(palisade_control::accounts::Accounts::new(
            boot.store.clone(),
            clock.clone(),
            bus.clone(),
            palisade_control::accounts::SessionLimits {
                idle_ms: i64::from(config.console.session_idle_minutes) * 60_000,
                absolute_ms: i64::from(config.console.session_max_hours) * 3_600_000,
            },
        ));
        let unmanaged = Arc::new(palisade_control::unmanaged::Unmanaged::new(
            boot.store.clone(),
            clock.clone(),
            network.clone(),
            monitor.clone(),
        ));
        let advisories = Arc::new(palisade_control::advisories::Advisories::new(
            boot.store.clone(),
            releases.blobs().clone(),
            alerts.clone(),
            clock.clone(),
            config.advisories.alert_within_days,
        ));
        let decommissioning = Arc::new(palisade_control::decommission::Decommissioning::new(
            boot.store.clone(),
            fleet.clone(),
            commands.clone(),
            tuf.clone(),
            clock.clone(),
            config.decommission.wipe_timeout_s,
        ));
        let support = Arc::new(palisade_control::support::SupportEnd::new(
            boot.store.clone(),
            decommissioning.clone(),
            alerts.clone(),
            network.clone(),
            clock.clone(),
        ));
        let state = Arc::new(Services {
            advisories,
            decommissioning,
            support,
            unmanaged,
            alerts,
            accounts,
            posture,
            monitor,
            tuf,
            network,
            rollouts,
            releases,
            max_image_bytes: config.ota.max_image_bytes,
            fleet,
            enrollment,
            store: boot.store.clone(),
            pki: boot.pki.clone(),
            metrics: metrics.clone(),
            sessions: sessions.clone(),
            presence: presence.clone(),
            commands,
            attestation,
            clock: clock.clone(),
            audit_limiter: Arc::new(AuditLimiter::new(config.limits.auth_failure_audit_per_sec)),
            audit_vkey: boot.audit.verifier()?.to_vkey().into(),
            metrics_public: config.metrics_public,
            request_timeout: Duration::from_secs(config.limits.request_timeout_secs),
            draining: Arc::default(),
        });
        let coap = Arc::new(Coap::new(CoapParts {
            store: boot.store.clone(),
            sessions: sessions.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            bus: bus.clone(),
            presence: presence.clone(),
            edhoc: edhoc_identity(&boot.dir)?,
            enrollment: state.enrollment.clone(),
            pki: boot.pki.clone(),
            dtls: Arc::new(palisade_coap::dtls::SwappableContext::new(dtls_context(
                &boot.dir,
                &boot.pki,
                clock.clone(),
            )?)),
            limits: palisade_coap::exchange::Limits {
                max_body: usize::try_from(config.coap.max_body_bytes).unwrap_or(usize::MAX),
                rate: config.coap.messages_per_sec,
                burst: config.coap.messages_per_sec.saturating_mul(4),
                ..palisade_coap::exchange::Limits::default()
            },
            bounds: palisade_coap::Bounds {
                idle_timeout: Duration::from_secs(config.coap.idle_timeout_secs),
                ..palisade_coap::Bounds::default()
            },
            node: node.clone(),
        }));
        let gateway = Arc::new(Gateway::new(GatewayParts {
            store: boot.store.clone(),
            sessions,
            metrics,
            clock,
            limits: config.mqtt.limits(),
            bus: bus.clone(),
            tls: Arc::new(SwappableConfig::new(mqtt_tls)),
            handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
            presence,
            proxy: config.proxy_protocol.listener(config.proxy_protocol.mqtt),
            server_reference: config.drain.server_reference.clone(),
            node: node.clone(),
        }));
        Ok(Self {
            config,
            boot,
            state,
            bus,
            tls: Arc::new(SwappableConfig::new(tls)),
            gateway,
            coap,
            node,
        })
    }

    /// The composed services (for in-process front ends and benchmarks).
    pub fn services(&self) -> Arc<Services> {
        self.state.clone()
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
        let coap = bind_coap(self.config.coap_listen, "CoAP over DTLS", "--coap-listen").await?;
        let oscore = bind_coap(
            self.config.oscore_listen,
            "CoAP with OSCORE",
            "--oscore-listen",
        )
        .await?;
        Ok(Listeners {
            https,
            mqtt,
            flows,
            coap,
            oscore,
        })
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
        let st = &self.state;
        let database = self.config.store.database(&self.config.data_dir)?;
        // The bus's followers: device messages feed the inventory's presence
        // view; a device subscribing to its commands gets its queued commands
        // and, with a TPM, an attestation challenge; monitoring follows it all.
        tokio::spawn(st.presence.clone().follow(self.bus.subscribe()));
        let presence_flush = tokio::spawn(st.presence.clone().flush_every(
            self.boot.store.clone(),
            Duration::from_secs(5),
            rx.clone(),
        ));
        tokio::spawn(st.commands.clone().follow(self.bus.subscribe()));
        // The advisories' exposure, one figure a day per advisory (the CRA
        // report's series); every node may write it (upserts).
        {
            let advisories = st.advisories.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(3600));
                tick.tick().await; // the first comes at once: skip it
                loop {
                    tick.tick().await;
                    if let Err(e) = advisories.record_exposure().await {
                        tracing::warn!(error = %e, "could not record the advisories' exposure");
                    }
                }
            });
        }
        tokio::spawn(st.support.clone().run(Duration::from_secs(
            self.config.support.check_every_s.max(1),
        )));
        // Wipe receipts, and wipes past their deadline (every node may close
        // one: the store's compare-and-set lets only the first through).
        tokio::spawn(st.decommissioning.clone().follow(
            self.bus.subscribe(),
            Duration::from_secs(self.config.decommission.wipe_timeout_s.clamp(1, 30)),
        ));
        // Other nodes' alert and network changes reach this node's alert
        // streams and the edges long-polling it.
        tokio::spawn(st.alerts.clone().follow(self.bus.subscribe()));
        tokio::spawn(st.network.clone().follow(self.bus.subscribe()));
        tokio::spawn(st.sessions.clone().follow(self.bus.subscribe()));
        tokio::spawn(crl_follows_revocations(
            self.bus.subscribe(),
            self.boot.pki.clone(),
        ));
        let crl_lead = Leadership::start(&database, "crl-signing", rx.clone());
        self.boot.pki.sign_crl_on_lead(crl_lead.clone());
        tokio::spawn(publish_crl(
            self.boot.pki.clone(),
            self.boot.store.clone(),
            self.bus.clone(),
            crl_lead,
            rx.clone(),
        ));
        tokio::spawn(
            st.attestation
                .clone()
                .follow(self.bus.subscribe(), rx.clone()),
        );
        let monitoring = monitor::MonitorDeps {
            monitor: st.monitor.clone(),
            store: self.boot.store.clone(),
            network: st.network.clone(),
            alerts: st.alerts.clone(),
            metrics: st.metrics.clone(),
            config: self.config.monitoring.clone(),
            sessions_leader: Leadership::start(&database, "session-detectors", rx.clone()),
            fleet: match database.engine() {
                palisade_store::Engine::Sqlite => monitor::FleetComparison::Local,
                palisade_store::Engine::Postgres => monitor::FleetComparison::Shared {
                    lead: Leadership::start(&database, "fleet-comparison", rx.clone()),
                    node: self.node.clone(),
                },
            },
        }
        .spawn(self.bus.subscribe(), listeners.flows, rx.clone());
        deliver::spawn(&st.alerts, &self.config.monitoring, rx.clone());
        tokio::spawn(
            st.unmanaged
                .clone()
                .run(Duration::from_secs(UNMANAGED_FLUSH_SECS), rx.clone()),
        );
        // Work one node does alone: the node holding the lead does it, and
        // another takes over within seconds when that node stops.
        tokio::spawn(st.rollouts.clone().run(
            Duration::from_millis(self.config.ota.rollout_tick_ms),
            Leadership::start(&database, "rollouts", rx.clone()),
            rx.clone(),
        ));
        tokio::spawn(st.posture.clone().run(
            Duration::from_secs(self.config.posture.interval_secs),
            Leadership::start(&database, "posture-snapshots", rx.clone()),
            rx.clone(),
        ));
        tokio::spawn(refresh_tuf_metadata(
            st.tuf.clone(),
            st.clock.clone(),
            Leadership::start(&database, "tuf-signing", rx.clone()),
            rx.clone(),
        ));
        let mut gateway = None;
        let listeners_had_mqtt = listeners.mqtt.is_some();
        if let Some(mqtt) = listeners.mqtt {
            tracing::info!(addr = %mqtt_addr.map(|a| a.to_string()).unwrap_or_default(), "listening (MQTT over TLS)");
            gateway = Some(tokio::spawn(self.gateway.clone().run(
                mqtt,
                rx.clone(),
                Duration::from_secs(self.config.drain.timeout_secs),
            )));
            tokio::spawn(self.gateway.clone().follow_claims(self.bus.subscribe()));
            tokio::spawn(refresh_gateway_crl(
                self.gateway.clone(),
                self.boot.pki.clone(),
                self.boot.store.clone(),
                self.boot.dir.clone(),
                rx.clone(),
            ));
        }
        let udp_addr =
            |l: &Option<tokio::net::UdpSocket>| l.as_ref().map(|l| l.local_addr()).transpose();
        let coap_addr = udp_addr(&listeners.coap)?;
        let oscore_addr = udp_addr(&listeners.oscore)?;
        if let Some(socket) = listeners.coap {
            tracing::info!(addr = %coap_addr.map(|a| a.to_string()).unwrap_or_default(), "listening (CoAP over DTLS)");
            tokio::spawn(self.coap.clone().run(socket, rx.clone()));
        }
        if let Some(socket) = listeners.oscore {
            tracing::info!(addr = %oscore_addr.map(|a| a.to_string()).unwrap_or_default(), "listening (CoAP with OSCORE and EDHOC)");
            tokio::spawn(self.coap.clone().run_oscore(socket, rx.clone()));
        }
        tokio::spawn(
            CaFollower {
                config: self.config.clone(),
                dir: self.boot.dir.clone(),
                pki: self.boot.pki.clone(),
                store: self.boot.store.clone(),
                https: self.tls.clone(),
                gateway: listeners_had_mqtt.then(|| self.gateway.clone()),
                coap: self.coap.clone(),
                clock: st.clock.clone(),
            }
            .run(rx.clone()),
        );
        let https = palisade_http::Listener {
            tls: self.tls.clone(),
            app: router(
                self.state.clone(),
                self.config.limits.max_body_bytes,
                if self.config.console.enabled {
                    palisade_console::router(
                        self.state.clone(),
                        palisade_console::ConsoleSettings {
                            offline_after_ms: i64::from(self.config.console.offline_after_minutes)
                                * 60_000,
                        },
                    )
                } else {
                    axum::Router::new()
                },
            ),
            max_connections: self.config.limits.max_connections,
            handshake_timeout: Duration::from_secs(self.config.limits.handshake_timeout_secs),
            metrics: self.state.metrics.clone(),
            proxy: self
                .config
                .proxy_protocol
                .listener(self.config.proxy_protocol.https),
        };
        let lock = self.boot.lock;
        let task = tokio::spawn(async move {
            palisade_http::serve(https, listeners.https, rx).await;
            // The data directory stays locked until the listener has stopped.
            drop(lock);
        });
        Ok(Handle {
            addr,
            mqtt_addr,
            coap_addr,
            oscore_addr,
            shutdown: tx,
            task,
            flushers: std::iter::once(presence_flush)
                .chain(monitoring)
                .chain(gateway)
                .collect(),
            draining: self.state.draining.clone(),
            drain: self.config.drain.clone(),
        })
    }
}

/// A revocation anywhere (another node's arrives over the cluster bus), and
/// a CRL another node published, make this node's CRL stale, so its
/// gateway's TLS verifier is rebuilt and refuses the certificate at the
/// handshake.
async fn crl_follows_revocations(mut bus: Subscription, pki: Arc<pki::Pki>) {
    while let Some(e) = bus.recv().await {
        if let Ok(
            Event::CloseSession {
                serial: Some(_), ..
            }
            | Event::CrlPublished { .. },
        ) = e
        {
            pki.crl_changed();
        }
    }
}

/// CRL re-signing, on the node holding the `crl-signing` lead: after each
/// revocation and every 30 s (a new CRL when half the last one's validity has
/// passed). Every CRL this node publishes is announced to the other nodes.
async fn publish_crl(
    pki: Arc<pki::Pki>,
    store: Arc<dyn palisade_store::Store>,
    bus: Arc<dyn EventBus>,
    lead: Arc<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    let mut revoked = pki.watch_crl();
    let mut published = pki.watch_published();
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = published.changed() => {
                if r.is_err() { return }
                let number = *published.borrow_and_update();
                bus.publish(Event::CrlPublished { number });
                continue;
            }
            r = revoked.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if lead.is_leader()
            && let Err(e) = pki.publish_crl_if_due(&*store).await
        {
            tracing::error!(error = %e, "could not re-sign the CRL");
        }
    }
}

/// The CAs in service change by a rotation or a retirement here, by one on
/// another node (seen at the next reload, every minute), or when an old
/// issuing CA's last certificate expires. Then the server takes a
/// certificate from the current issuing CA (clients that trust only a new
/// root reach it), `ca/root.pem` and `ca/chain.pem` are rewritten, and both
/// listeners take the new chains, anchors and CRLs without a restart.
struct CaFollower {
    config: Config,
    dir: DataDir,
    pki: Arc<pki::Pki>,
    store: Arc<dyn palisade_store::Store>,
    https: Arc<SwappableConfig>,
    gateway: Option<Arc<Gateway>>,
    coap: Arc<Coap>,
    clock: Arc<dyn Clock>,
}

impl CaFollower {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let CaFollower {
            config,
            dir,
            pki,
            store,
            https,
            gateway,
            coap,
            clock,
        } = self;
        let mut rotated = pki.watch_rotations();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = rotated.changed() => if r.is_err() { return },
                _ = tick.tick() => {
                    if let Err(e) = pki.reload(&*store).await {
                        tracing::error!(error = %e, "could not reload the CAs in service");
                    }
                    continue;
                }
            }
            let now = clock.now();
            let applied = async {
                bootstrap::ensure_server_cert(&config, &dir, &pki, &*store, now).await?;
                https.replace(tls::server_config(&dir.tls_cert(), &dir.tls_key())?);
                if let Some(gw) = &gateway {
                    let crls = pki.crls(&*store).await?;
                    gw.tls().replace(tls::gateway_config(
                        &pki,
                        crls,
                        &dir.tls_cert(),
                        &dir.tls_key(),
                    )?);
                }
                coap.dtls()
                    .replace(dtls_context(&dir, &pki, clock.clone())?);
                // Last: a client that sees the new trust files finds the
                // listeners already serving the chains that go with them.
                bootstrap::write_trust_files(&dir, &pki)?;
                anyhow::Ok(())
            }
            .await;
            match applied {
                Ok(()) => tracing::info!(
                    issuing = %pki.cas().issuing().serial(),
                    "the listeners took the CAs now in service"
                ),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not apply the CA rotation")
                }
            }
        }
    }
}

/// TUF freshness: the node holding the `tuf-signing` lead re-signs the
/// timestamp (valid a day) every hour and the snapshot (valid a week) when
/// less than three days are left, into the shared repository.
async fn refresh_tuf_metadata(
    tuf: tuf_repo::Repository,
    clock: Arc<dyn Clock>,
    leader: Arc<Leadership>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        if !leader.is_leader() {
            continue;
        }
        match tuf.refresh(clock.now_ms()).await {
            Ok(tuf_repo::Refreshed::Nothing) => {}
            Ok(what) => tracing::info!(?what, "re-signed the TUF online metadata"),
            Err(e) => tracing::error!(error = %e, "could not re-sign the TUF online metadata"),
        }
    }
}

/// A CoAP listener's UDP socket, if it is on.
async fn bind_coap(
    addr: Option<SocketAddr>,
    what: &str,
    flag: &str,
) -> anyhow::Result<Option<tokio::net::UdpSocket>> {
    let Some(a) = addr else {
        return Ok(None);
    };
    let socket = tokio::net::UdpSocket::bind(a).await.with_context(|| {
        format!(
            "cannot listen for {what} on UDP {a}: is another CoAP server using the port? Choose another with {flag}"
        )
    })?;
    Ok(Some(socket))
}

/// The server's EDHOC identity: its key from the data directory (created on
/// the first start, 0600), and its credential written beside it for devices.
fn edhoc_identity(dir: &DataDir) -> anyhow::Result<palisade_coap::edhoc::ServerIdentity> {
    use palisade_coap::edhoc::ServerIdentity;
    let path = dir.edhoc_key();
    let id = match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            let d: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a 32-byte P-256 private key: restore it from a backup, or delete it and re-provision devices with the new edhoc/credential.cbor",
                    path.display()
                )
            })?;
            ServerIdentity::from_secret(d, "palisade")
                .with_context(|| format!("loading the EDHOC key {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = ServerIdentity::generate("palisade")?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            palisade_control::files::write_atomic(&path, id.secret(), 0o600)?;
            id
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading the EDHOC key {}", path.display()));
        }
    };
    palisade_control::files::write_atomic(&dir.edhoc_credential(), id.credential(), 0o644)?;
    Ok(id)
}

/// The CoAP endpoint's DTLS context: the server's certificate and every CA
/// in service as anchors.
fn dtls_context(
    dir: &DataDir,
    pki: &pki::Pki,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<palisade_coap::dtls::Context> {
    let anchors: Vec<Vec<u8>> = pki
        .cas()
        .anchors()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    palisade_coap::dtls::Context::new(&dir.tls_cert(), &dir.tls_key(), &anchors, clock)
        .context("building the CoAP endpoint's DTLS context")
}

/// Rebuilds the gateway's TLS verifier with the new CRL after each revocation, so
/// new handshakes with a revoked certificate fail without a restart.
async fn refresh_gateway_crl(
    gw: Arc<Gateway>,
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
        let built = match pki.crls(&*store).await {
            Ok(crls) => tls::gateway_config(&pki, crls, &dir.tls_cert(), &dir.tls_key()),
            Err(e) => Err(anyhow::anyhow!(e)),
        };
        match built {
            Ok(cfg) => gw.tls().replace(cfg),
            Err(e) => tracing::error!(error = %e, "could not refresh the gateway's CRL"),
        }
    }
}
