//! The listeners' TLS configurations (HTTPS; the MQTT gateway with required
//! client certificates and the CRL): TLS 1.3, and TLS 1.2 only with ECDHE and
//! AEAD suites (rustls offers nothing weaker). Kept behind a swappable pointer so a
//! renewed certificate or a new CRL takes effect without a restart.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the listener's TLS configuration from the chain and key files.
pub fn server_config(cert_path: &Path, key_path: &Path) -> anyhow::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("opening {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading certificates from {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key in {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("choosing TLS versions")?
        .with_client_cert_verifier(Arc::new(AnyClientCert::new(provider_algs())))
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn provider_algs() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Asks for a client certificate without requiring one, and checks only that the
/// client holds the key of the certificate it sends. Whether that certificate is
/// trusted (a birth identity from a registered manufacturer, a Palisade
/// operational certificate) is decided where it is used, so a refusal can be
/// answered with a reason and audited instead of a bare TLS alert.
#[derive(Debug)]
pub struct AnyClientCert {
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    /// With the provider's signature algorithms.
    pub fn new(algs: rustls::crypto::WebPkiSupportedAlgorithms) -> Self {
        Self { algs }
    }
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Parse it, so garbage is refused at the handshake; trust is decided later.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS configuration that can be replaced while connections are accepted.
#[derive(Debug)]
pub struct SwappableConfig(RwLock<Arc<ServerConfig>>);

impl SwappableConfig {
    /// Wraps a configuration.
    pub fn new(cfg: ServerConfig) -> Self {
        Self(RwLock::new(Arc::new(cfg)))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.read().ok().map(|c| c.clone())
    }

    /// Replaces the configuration for future handshakes.
    pub fn replace(&self, cfg: ServerConfig) {
        if let Ok(mut c) = self.0.write() {
            *c = Arc::new(cfg);
        }
    }
}

/// Builds the MQTT gateway's TLS configuration: client certificates required
/// and chained to Palisade's CAs, with the current CRL.
pub fn gateway_config(
    pki: &crate::pki::Pki,
    crls: Vec<Vec<u8>>,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Every issuing CA and root in service is an anchor: a device may send
    // its leaf alone, and each certificate is checked against its own
    // issuer's CRL.
    let mut roots = rustls::RootCertStore::empty();
    for anchor in pki.cas().anchors() {
        roots.add(CertificateDer::from(anchor.to_vec()))?;
    }
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if !crls.is_empty() {
        builder = builder
            .with_crls(crls.into_iter().map(CertificateRevocationListDer::from))
            .only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .context("building the client certificate verifier")?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert_path)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key_path)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the server certificate and key do not match")?;
    Ok(cfg)
}
