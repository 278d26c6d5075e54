//! The legacy bridge: a device that only speaks plaintext MQTT 3.1.1 talks to
//! the edge on its own segment; the edge, holding an identity for it (enrolled
//! with `palisade-edge legacy-enroll`), forwards the session to the control
//! plane over mutual TLS as that device. The device is recognised by its
//! address (the site bundle's placement); its CONNECT is replaced by one with
//! the device's own client id and no credentials, so the gateway's
//! certificate-bound ACLs apply unchanged. Plaintext never leaves the segment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_agent::tls_key::ClientIdentity;
use palisade_agent::{Agent, EstClient, SoftwareKeystore, SystemClock};
use palisade_policy::site::SiteBundle;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;

use palisade_mqtt::bridge::{MAX_CONNECT, parse_connect, upstream_connect};

/// Reads one CONNECT packet (fixed header and body), bounded.
async fn read_connect(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.map_err(|e| e.to_string())?;
    if first[0] != 0x10 {
        return Err("the first packet is not CONNECT".into());
    }
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err("bad remaining length".into());
        }
    }
    if len > MAX_CONNECT {
        return Err("CONNECT is too large".into());
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body)
}

/// The bridge's configuration.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// Where the legacy devices' identities live (one directory per device).
    pub identities: PathBuf,
    /// The EST client (roots, server name) the identities were enrolled with.
    pub est: EstClient,
    /// The control plane's MQTT gateway.
    pub upstream: (String, u16),
}

async fn handle(
    mut plain: TcpStream,
    peer: SocketAddr,
    bridge: Bridge,
    bundle: Arc<RwLock<Option<SiteBundle>>>,
) -> Result<(), String> {
    let device = {
        let b = bundle.read().await;
        b.as_ref()
            .and_then(|b| {
                b.devices
                    .iter()
                    .find(|d| d.address == peer.ip() && !d.quarantined)
                    .map(|d| d.device.clone())
            })
            .ok_or_else(|| format!("{} is not a placed, unquarantined device", peer.ip()))?
    };
    let body = tokio::time::timeout(Duration::from_secs(10), read_connect(&mut plain))
        .await
        .map_err(|_| "no CONNECT within 10 s".to_string())??;
    let c = parse_connect(&body)?;
    let dir = bridge.identities.join(&device);
    let agent = Agent::new(
        &dir,
        Arc::new(SoftwareKeystore::new(&dir)),
        bridge.est.clone(),
        Arc::new(SystemClock),
    );
    let id = agent
        .identity()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("the edge holds no identity for {device} (palisade-edge legacy-enroll)")
        })?;
    let key = agent.operational_key().map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(bridge.est.roots())
        .with_client_cert_resolver(Arc::new(ClientIdentity::new(
            vec![CertificateDer::from(id.cert_der)],
            key,
        )));
    let tcp = TcpStream::connect((bridge.upstream.0.as_str(), bridge.upstream.1))
        .await
        .map_err(|e| format!("connecting to the gateway: {e}"))?;
    let name = ServerName::try_from(bridge.upstream.0.clone()).map_err(|e| e.to_string())?;
    let mut up = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to the gateway: {e}"))?;
    up.write_all(&upstream_connect(&c, &device))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%device, address = %peer.ip(), "legacy device bridged over mutual TLS");
    let _ = tokio::io::copy_bidirectional(&mut plain, &mut up).await;
    Ok(())
}

/// Serves the bridge on `listener`.
pub async fn serve(listener: TcpListener, bridge: Bridge, bundle: Arc<RwLock<Option<SiteBundle>>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(1024));
    loop {
        let Ok((s, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (bridge, bundle) = (bridge.clone(), bundle.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(s, peer, bridge, bundle).await {
                tracing::warn!(address = %peer.ip(), error = %e, "legacy bridge refused");
            }
            drop(permit);
        });
    }
}
