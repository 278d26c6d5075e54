//! Reading the PROXY protocol v2 header on a listener behind a TCP balancer:
//! exactly the header's bytes are read (the TLS handshake that follows is left
//! in the socket), within the handshake's time, from an allowed balancer.

use std::net::SocketAddr;
use std::time::Duration;

use palisade_core::proxy::{self, FIXED_LEN, Proxied, ProxyError};
use palisade_policy::Prefix;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A listener that expects the header.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// The balancers whose headers are believed; empty: any.
    pub from: Vec<Prefix>,
}

/// Why a connection was refused before its TLS handshake.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The header was missing or malformed.
    #[error(transparent)]
    Header(#[from] ProxyError),
    /// The connection does not come from an allowed balancer.
    #[error(
        "{0} is not one of the balancers in proxy_protocol.from; its PROXY header is not believed"
    )]
    NotABalancer(SocketAddr),
    /// The header did not arrive in time.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The device's address: the header's source when `settings` is given (the
/// balancer's own connections keep `peer`), else `peer`.
pub async fn peer_address(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    settings: Option<&ProxySettings>,
    within: Duration,
) -> Result<SocketAddr, AcceptError> {
    let Some(settings) = settings else {
        return Ok(peer);
    };
    if !settings.from.is_empty() && !settings.from.iter().any(|p| p.contains(peer.ip())) {
        return Err(AcceptError::NotABalancer(peer));
    }
    let read = async {
        let mut header = vec![0u8; FIXED_LEN];
        tcp.read_exact(&mut header).await?;
        let fixed: [u8; FIXED_LEN] = header[..].try_into().unwrap_or([0; FIXED_LEN]);
        let rest = proxy::rest_len(&fixed)?;
        header.resize(FIXED_LEN + rest, 0);
        tcp.read_exact(&mut header[FIXED_LEN..]).await?;
        Ok::<_, AcceptError>(match proxy::parse(&header)? {
            Proxied::From(a) => a,
            Proxied::Local | Proxied::Unknown => peer,
        })
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| AcceptError::Timeout(within))?
}
