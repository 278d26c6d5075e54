//! TLS client authentication with a key that stays in its keystore: rustls asks
//! the [`Signer`] for each handshake signature, so no key bytes reach rustls.

use std::sync::Arc;

use palisade_core::{KeyAlgorithm, Signer};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};

/// A keystore key seen as a rustls signing key.
#[derive(Debug)]
pub struct KeystoreSigningKey(pub Arc<dyn Signer>);

fn scheme(alg: KeyAlgorithm) -> SignatureScheme {
    match alg {
        KeyAlgorithm::EcdsaP256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        KeyAlgorithm::EcdsaP384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        KeyAlgorithm::Ed25519 => SignatureScheme::ED25519,
    }
}

impl rustls::sign::SigningKey for KeystoreSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let s = scheme(self.0.algorithm());
        offered
            .contains(&s)
            .then(|| Box::new(HandshakeSigner(self.0.clone(), s)) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.algorithm() {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Ed25519 => SignatureAlgorithm::ED25519,
        }
    }
}

#[derive(Debug)]
struct HandshakeSigner(Arc<dyn Signer>, SignatureScheme);

impl rustls::sign::Signer for HandshakeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.1
    }
}

/// Always offers one certificate chain with its keystore key.
#[derive(Debug)]
pub struct ClientIdentity(pub Arc<CertifiedKey>);

impl ClientIdentity {
    /// A chain (leaf first) and the key for its leaf.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: Arc<dyn Signer>) -> Self {
        Self(Arc::new(CertifiedKey::new(
            chain,
            Arc::new(KeystoreSigningKey(key)),
        )))
    }
}

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let ok = self.0.key.choose_scheme(sigschemes).is_some();
        ok.then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
