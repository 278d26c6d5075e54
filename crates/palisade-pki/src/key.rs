//! Adapts a [`Signer`] to rcgen's signing interface, so rcgen never holds key bytes.

use std::sync::Arc;

use palisade_core::{KeyAlgorithm, Signer};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

/// A shared [`Signer`] seen through rcgen's `SigningKey` trait.
#[derive(Debug, Clone)]
pub struct SignerKey(pub Arc<dyn Signer>);

pub(crate) fn rcgen_alg(alg: KeyAlgorithm) -> &'static SignatureAlgorithm {
    match alg {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    }
}

impl PublicKeyData for SignerKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key_raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        rcgen_alg(self.0.algorithm())
    }
}

impl SigningKey for SignerKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}
