//! The HTTPS accept loop: TCP accept, TLS handshake (bounded in time and in
//! concurrent connections), then the peer's address and any client certificate
//! chain go into the request's extensions and hyper serves the connection.
//! axum does not expose the peer certificate itself, hence this loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use palisade_control::metrics::Metrics;
use palisade_control::proxy::{ProxySettings, peer_address};
use palisade_control::tls::SwappableConfig;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::{ClientCertChain, PeerAddr};

/// What the accept loop needs besides the socket.
#[derive(Debug)]
pub struct Listener {
    /// The TLS configuration (swappable).
    pub tls: Arc<SwappableConfig>,
    /// The routes.
    pub app: Router,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set behind a TCP balancer that sends the PROXY protocol v2 header: the
    /// clients' addresses are read from it.
    pub proxy: Option<ProxySettings>,
}

/// Serves HTTPS on `listener` until `shutdown` changes, then lets connections
/// finish (up to 10 s).
pub async fn serve(l: Listener, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let Listener {
        tls,
        app,
        max_connections,
        handshake_timeout,
        metrics,
        proxy,
    } = l;
    let proxy = proxy.map(Arc::new);
    let slots = Arc::new(Semaphore::new(max_connections));
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
        let Some(cfg) = tls.current() else {
            continue;
        };
        conns.spawn(connection(
            tcp,
            peer,
            cfg,
            app.clone(),
            metrics.clone(),
            handshake_timeout,
            proxy.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    tracing::info!("server stopped");
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    cfg: Arc<rustls::ServerConfig>,
    app: Router,
    metrics: Arc<Metrics>,
    handshake_timeout: Duration,
    proxy: Option<Arc<ProxySettings>>,
    mut shutdown: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let peer = match peer_address(&mut tcp, peer, proxy.as_deref(), handshake_timeout).await {
        Ok(a) => a,
        Err(e) => {
            metrics.handshake_failed();
            tracing::info!(%peer, error = %e, "connection refused before TLS");
            return;
        }
    };
    let tls =
        match tokio::time::timeout(handshake_timeout, TlsAcceptor::from(cfg).accept(tcp)).await {
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
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| ClientCertChain(Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())));
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        if let Some(c) = &chain {
            req.extensions_mut().insert(c.clone());
        }
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
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
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}
