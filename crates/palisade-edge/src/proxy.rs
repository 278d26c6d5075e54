//! The egress proxy: devices reach TLS services by name through the edge,
//! and only the names their policy allows. Two ways in on the same port:
//! HTTPS `CONNECT host:port` (the proxy also checks that the TLS ClientHello
//! names the same host, so an allowed name cannot front for another), or a
//! TLS ClientHello sent straight to the proxy (passthrough by SNI; the
//! upstream port is the proxy's own). The decision is by source address. The
//! name is resolved through the site resolver; bytes are relayed untouched
//! (the proxy never terminates TLS). Every decision is logged and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_policy::site::{SiteBundle, proxy_allows};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;

/// Largest CONNECT request head or ClientHello read before deciding.
const MAX_HEAD: usize = 16 * 1024;

/// Allowed and denied connections, for the edge's status report.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Relayed.
    pub allowed: AtomicU64,
    /// Refused.
    pub denied: AtomicU64,
}

/// The SNI of a TLS ClientHello at the start of `buf`: `Ok(None)` when more
/// bytes are needed, `Err` when it is not a ClientHello with a host name.
fn sni(buf: &[u8]) -> Result<Option<String>, String> {
    let mut acc = rustls::server::Acceptor::default();
    let mut rd = buf;
    acc.read_tls(&mut rd).map_err(|e| e.to_string())?;
    match acc.accept() {
        Ok(None) => Ok(None),
        Ok(Some(a)) => a
            .client_hello()
            .server_name()
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| "the ClientHello names no server (SNI)".into()),
        Err((e, _)) => Err(format!("not a TLS ClientHello: {e}")),
    }
}

/// Reads until `done` says the head is complete (bounded).
async fn read_head(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Result<bool, String>,
) -> Result<(), String> {
    loop {
        if done(buf)? {
            return Ok(());
        }
        if buf.len() >= MAX_HEAD {
            return Err("the request head is too large".into());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .map_err(|_| "timed out reading the request".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the client closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn resolve(resolver: IpAddr, host: &str) -> Result<IpAddr, String> {
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;
    let cfg = ResolverConfig::from_parts(
        None,
        vec![],
        NameServerConfigGroup::from_ips_clear(&[resolver], 53, true),
    );
    let r =
        hickory_resolver::Resolver::builder_with_config(cfg, TokioConnectionProvider::default())
            .build();
    r.lookup_ip(host)
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?
        .iter()
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

async fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    own_port: u16,
    bundle: Arc<RwLock<Option<SiteBundle>>>,
    counters: Arc<ProxyCounters>,
) -> Result<(), String> {
    let mut buf = Vec::new();
    read_head(&mut client, &mut buf, |b| Ok(!b.is_empty())).await?;
    let connect = buf.starts_with(b"CONNECT ");
    let (host, port) = if connect {
        read_head(&mut client, &mut buf, |b| {
            Ok(b.windows(4).any(|w| w == b"\r\n\r\n"))
        })
        .await?;
        let line = buf
            .split(|c| *c == b'\n')
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .unwrap_or("");
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let (h, p) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("bad CONNECT target {target:?}"))?;
        let p: u16 = p.parse().map_err(|_| format!("bad CONNECT port {p:?}"))?;
        (
            h.trim_matches(|c| c == '[' || c == ']')
                .to_ascii_lowercase(),
            p,
        )
    } else {
        read_head(&mut client, &mut buf, |b| sni(b).map(|s| s.is_some())).await?;
        (
            sni(&buf)?.unwrap_or_default().to_ascii_lowercase(),
            own_port,
        )
    };
    let (decision, resolver) = {
        let b = bundle.read().await;
        match b.as_ref() {
            Some(b) => (
                proxy_allows(b, peer.ip(), &host, port),
                Some(b.spec.resolver),
            ),
            None => (Err("no policy applied yet".to_string()), None),
        }
    };
    if let Err(why) = decision {
        counters.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(device = %peer.ip(), %host, port, reason = %why, "egress proxy denied");
        if connect {
            let _ = client
                .write_all(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
        return Ok(());
    }
    if connect {
        // Check that the TLS inside names the same host.
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        buf.clear();
        read_head(&mut client, &mut buf, |b| sni(b).map(|s| s.is_some())).await?;
        let inner = sni(&buf)?.unwrap_or_default().to_ascii_lowercase();
        if inner != host {
            counters.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(device = %peer.ip(), %host, sni = %inner, "egress proxy denied: SNI differs from CONNECT");
            return Ok(());
        }
    }
    let addr = resolve(resolver.ok_or("no resolver")?, &host).await?;
    let mut upstream =
        tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((addr, port)))
            .await
            .map_err(|_| format!("connecting to {host}:{port} timed out"))?
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    counters.allowed.fetch_add(1, Ordering::Relaxed);
    tracing::info!(device = %peer.ip(), %host, port, "egress proxy allowed");
    upstream.write_all(&buf).await.map_err(|e| e.to_string())?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// Serves the proxy on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    bundle: Arc<RwLock<Option<SiteBundle>>>,
    counters: Arc<ProxyCounters>,
) {
    let own_port = listener.local_addr().map(|a| a.port()).unwrap_or(443);
    let slots = Arc::new(tokio::sync::Semaphore::new(1024));
    loop {
        let Ok((s, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // at capacity: the connection is dropped
        };
        let (bundle, counters) = (bundle.clone(), counters.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(s, peer, own_port, bundle, counters).await {
                tracing::debug!(error = %e, "egress proxy connection");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_client_hello() {
        assert!(sni(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(sni(&[0x16, 0x03, 0x01]), Ok(None));
    }
}
