//! DTLS 1.2 (RFC 6347) through OpenSSL: the one exception to the single TLS
//! stack (rustls has no DTLS; see ARCHITECTURE.md and deny.toml).
//!
//! - Certificates only, ECDHE-ECDSA with P-256, CoAP's mandatory
//!   `TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8` first (RFC 7252 §9.1.3.3), then
//!   the AES-GCM suites. No PSK, no renegotiation, no compression.
//! - The handshake takes any client certificate whose key the client proves
//!   (as EST over HTTPS does): after it, a chain that verifies against every
//!   issuing CA and root in service makes an operational session, admitted
//!   against the inventory (revocation, the device's state) as the MQTT
//!   gateway does; any other chain (a birth certificate) may only use EST
//!   over CoAP, where the enrolment service checks it against the suppliers'
//!   CAs and batches. A revoked device's live session is closed from the
//!   session registry.
//! - Spoofed-source floods meet the stateless cookie exchange
//!   (`DTLSv1_listen`): no state is kept for a ClientHello until it comes
//!   back with a cookie bound to its source address (HMAC-SHA256 under a
//!   per-process secret, valid for one to two minutes).
//! - Each session talks to OpenSSL through [`Wire`], one datagram per read
//!   and per write, so one UDP socket serves every peer.

mod ffi;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509StoreContext};
use palisade_core::Clock;
use ring::hmac;

pub(crate) use ffi::Listen;

/// The cipher suites offered, best first: CoAP's mandatory CCM_8 suite, then
/// AES-GCM (OpenSSL names).
const CIPHERS: &str =
    "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";
/// Path MTU assumed for handshake messages: the IPv6 minimum less the UDP
/// and IPv6 headers.
const MTU: u32 = 1232;
/// How long a cookie stays valid: this slot and the one before.
const COOKIE_SLOT_MS: i64 = 60_000;

/// Datagram I/O for one DTLS session: OpenSSL reads the one datagram that
/// arrived and writes each record flight's datagrams to `outbound`.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    inbound: Option<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbound.take() {
            Some(d) if d.len() <= buf.len() => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            // Larger than OpenSSL's record buffer: not a DTLS record we take.
            Some(_) => Err(io::ErrorKind::InvalidData.into()),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A bounded backlog: a peer whose flights pile up is not being read.
        if self.outbound.len() >= 64 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbound.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One DTLS session (handshaking or established).
pub(crate) struct Session {
    stream: SslStream<Wire>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// What a datagram did to a handshaking session.
#[derive(Debug)]
pub(crate) enum Progress {
    /// More flights to come.
    Pending,
    /// Done: the client's chain as sent (DER, leaf first).
    Established(Vec<Vec<u8>>),
    /// Failed (a bad certificate, a protocol error): drop the session.
    Failed(String),
}

/// What reading an established session gave.
#[derive(Debug)]
pub(crate) enum Read2 {
    /// Application data (one CoAP message per record).
    Data(Vec<Vec<u8>>),
    /// The peer closed (close_notify) or the session broke.
    Closed,
}

impl Session {
    /// Datagrams to send, in order.
    pub(crate) fn take_outbound(&mut self) -> VecDeque<Vec<u8>> {
        std::mem::take(&mut self.stream.get_mut().outbound)
    }

    /// Feeds one handshake datagram.
    pub(crate) fn handshake(&mut self, datagram: Option<Vec<u8>>) -> Progress {
        if datagram.is_some() {
            self.stream.get_mut().inbound = datagram;
        }
        match self.stream.accept() {
            Ok(()) => {
                let ssl = self.stream.ssl();
                let Some(Ok(leaf)) = ssl.peer_certificate().map(|c| c.to_der()) else {
                    return Progress::Failed("no client certificate".into());
                };
                // On a server, OpenSSL's peer chain leaves the leaf out.
                let mut chain = vec![leaf];
                if let Some(rest) = ssl.peer_cert_chain() {
                    chain.extend(rest.iter().filter_map(|c| c.to_der().ok()).take(8));
                }
                Progress::Established(chain)
            }
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                Progress::Pending
            }
            Err(e) => Progress::Failed(e.to_string()),
        }
    }

    /// Retransmits the last flight if the handshake timer ran out.
    pub(crate) fn handshake_timer(&mut self) {
        ffi::handle_timeout(self.stream.ssl());
    }

    /// Feeds one datagram of an established session.
    pub(crate) fn read(&mut self, datagram: Vec<u8>) -> Read2 {
        self.stream.get_mut().inbound = Some(datagram);
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.ssl_read(&mut buf) {
                Ok(0) => return Read2::Closed,
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(e) if e.code() == ErrorCode::WANT_READ => return Read2::Data(out),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Read2::Closed,
                // A record that fails its MAC is dropped by OpenSSL silently
                // (RFC 6347 §4.1.2.7); anything else ends the session.
                Err(_) => return Read2::Closed,
            }
        }
    }

    /// Encrypts one CoAP message (its datagram goes to the outbound queue).
    pub(crate) fn write(&mut self, message: &[u8]) -> bool {
        self.stream.ssl_write(message).is_ok()
    }

    /// Sends close_notify.
    pub(crate) fn close(&mut self) {
        let _ = self.stream.shutdown();
    }
}

/// Builds the DTLS server context and the sessions it starts.
pub struct Context {
    ctx: SslContext,
    peer_index: Index<Ssl, SocketAddr>,
    /// The CAs in service, which an operational chain must verify against.
    anchors: X509Store,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// What starting a session from a new peer's datagram gave.
#[derive(Debug)]
pub(crate) enum Start {
    /// A HelloVerifyRequest to send back, keeping nothing.
    Verify(VecDeque<Vec<u8>>),
    /// A ClientHello with a valid cookie: the session, its first flight sent.
    Session(Box<Session>, Progress),
    /// Not a ClientHello we take.
    Refused,
}

impl Context {
    /// The context from the server's certificate chain and key (PEM files),
    /// the DER certificates of every CA a device certificate may chain to,
    /// and a fresh cookie secret.
    pub fn new(
        cert_path: &Path,
        key_path: &Path,
        anchors: &[Vec<u8>],
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut b = SslContextBuilder::new(SslMethod::dtls_server())?;
        b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
        b.set_cipher_list(CIPHERS)?;
        b.set_groups_list("P-256")?;
        b.set_options(
            SslOptions::COOKIE_EXCHANGE
                | SslOptions::NO_RENEGOTIATION
                | SslOptions::NO_COMPRESSION
                | SslOptions::NO_QUERY_MTU
                | SslOptions::NO_TICKET
                | SslOptions::CIPHER_SERVER_PREFERENCE,
        );
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        // Idle sessions give their record buffers back.
        b.set_mode(SslMode::RELEASE_BUFFERS);
        let pem = std::fs::read(cert_path)
            .with_context(|| format!("reading the server certificate {}", cert_path.display()))?;
        let mut chain = X509::stack_from_pem(&pem)?.into_iter();
        let leaf = chain
            .next()
            .with_context(|| format!("no certificate in {}", cert_path.display()))?;
        b.set_certificate(&leaf)?;
        for c in chain {
            b.add_extra_chain_cert(c)?;
        }
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read(key_path)
                .with_context(|| format!("reading the server key {}", key_path.display()))?,
        );
        let key = PKey::private_key_from_pem(&key_pem)?;
        b.set_private_key(&key)?;
        b.check_private_key()
            .context("the server certificate and key do not match")?;
        let mut store = X509StoreBuilder::new()?;
        for a in anchors {
            store.add_cert(X509::from_der(a)?)?;
        }
        // Any certificate whose key the client proves; which kind of session
        // it gets is decided after the handshake (`operational`).
        b.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            |_, _| true,
        );
        b.set_verify_depth(4);
        let peer_index = Ssl::new_ex_index::<SocketAddr>()?;
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret[..])
            .map_err(|_| anyhow::anyhow!("the random number generator failed"))?;
        let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &secret[..]));
        let (gen_key, gen_clock) = (key.clone(), clock.clone());
        b.set_cookie_generate_cb(move |ssl, out| {
            let Some(peer) = ssl.ex_data(peer_index) else {
                return Err(openssl::error::ErrorStack::get());
            };
            let c = cookie(&gen_key, *peer, gen_clock.now_ms() / COOKIE_SLOT_MS);
            out[..c.len()].copy_from_slice(&c);
            Ok(c.len())
        });
        b.set_cookie_verify_cb(move |ssl, got| {
            let Some(peer) = ssl.ex_data(peer_index) else {
                return false;
            };
            let slot = clock.now_ms() / COOKIE_SLOT_MS;
            [slot, slot - 1].into_iter().any(|s| {
                let want = cookie(&key, *peer, s);
                want.len() == got.len() && openssl::memcmp::eq(&want, got)
            })
        });
        Ok(Self {
            ctx: b.build(),
            peer_index,
            anchors: store.build(),
        })
    }

    /// Whether a client's chain (leaf first) verifies against the CAs in
    /// service: an operational certificate, not a birth one.
    pub fn operational(&self, chain: &[Vec<u8>]) -> bool {
        let verify = || -> Result<bool, openssl::error::ErrorStack> {
            let Some((leaf, rest)) = chain.split_first() else {
                return Ok(false);
            };
            let leaf = X509::from_der(leaf)?;
            let mut stack = Stack::new()?;
            for c in rest {
                stack.push(X509::from_der(c)?)?;
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&self.anchors, &leaf, &stack, |c| c.verify_cert())
        };
        verify().unwrap_or(false)
    }

    /// A datagram from a peer with no session: the stateless cookie check,
    /// then (with a valid cookie) a new session that answers the ClientHello.
    pub(crate) fn start(&self, peer: SocketAddr, datagram: Vec<u8>) -> Start {
        let Ok(mut ssl) = Ssl::new(&self.ctx) else {
            return Start::Refused;
        };
        ssl.set_ex_data(self.peer_index, peer);
        if ssl.set_mtu(MTU).is_err() {
            return Start::Refused;
        }
        let wire = Wire {
            inbound: Some(datagram),
            outbound: VecDeque::new(),
        };
        let Ok(mut stream) = SslStream::new(ssl, wire) else {
            return Start::Refused;
        };
        match ffi::listen(stream.ssl()) {
            Listen::NoCookie => {
                let out = std::mem::take(&mut stream.get_mut().outbound);
                if out.is_empty() {
                    Start::Refused
                } else {
                    Start::Verify(out)
                }
            }
            Listen::Failed => Start::Refused,
            Listen::Verified => {
                let mut s = Box::new(Session { stream });
                let progress = s.handshake(None);
                Start::Session(s, progress)
            }
        }
    }
}

fn cookie(key: &hmac::Key, peer: SocketAddr, slot: i64) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&slot.to_be_bytes());
    match peer.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&peer.port().to_be_bytes());
    ctx.sign().as_ref()[..16].to_vec()
}

/// The context in force, replaced when the CAs in service or the server's
/// certificate change (sessions keep the context they started with).
#[derive(Debug)]
pub struct SwappableContext(RwLock<Arc<Context>>);

impl SwappableContext {
    /// Starts with `c`.
    pub fn new(c: Context) -> Self {
        Self(RwLock::new(Arc::new(c)))
    }

    /// The current context.
    pub fn current(&self) -> Option<Arc<Context>> {
        self.0.read().ok().map(|c| c.clone())
    }

    /// Replaces it.
    pub fn replace(&self, c: Context) {
        if let Ok(mut cur) = self.0.write() {
            *cur = Arc::new(c);
        }
    }
}
