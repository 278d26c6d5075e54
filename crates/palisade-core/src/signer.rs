//! The `Signer` trait: the one interface to a private key, wherever it lives
//! (software file, PKCS#11 token, TPM). Callers never see key bytes.

use std::fmt;

/// The key algorithms Palisade signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Ed25519 => "ed25519",
        })
    }
}

/// Where a key is kept, reported in inventories and posture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProtection {
    /// A key file on disk: for development and embedded defaults only.
    Software,
    /// A PKCS#11 token or secure element.
    SecureElement,
    /// A TPM 2.0.
    Tpm,
}

/// A signing operation failed inside the key store.
#[derive(Debug, thiserror::Error)]
#[error("signing with {key} failed: {reason}")]
pub struct SignerError {
    /// Which key.
    pub key: String,
    /// What the backend said.
    pub reason: String,
}

/// A private key that signs but never reveals itself.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// The raw public key (the SubjectPublicKeyInfo bit string contents: an
    /// uncompressed EC point, or 32 Ed25519 bytes).
    fn public_key_raw(&self) -> &[u8];
    /// Signs `msg`; ECDSA signatures are ASN.1 DER, Ed25519 raw 64 bytes.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError>;
    /// Where the key is kept.
    fn protection(&self) -> KeyProtection;

    /// The DER SubjectPublicKeyInfo of the key.
    fn spki_der(&self) -> Vec<u8> {
        spki_der(self.algorithm(), self.public_key_raw())
    }
}

/// Encodes a raw public key as a DER SubjectPublicKeyInfo.
pub fn spki_der(alg: KeyAlgorithm, raw: &[u8]) -> Vec<u8> {
    // The fixed DER prefixes of SubjectPublicKeyInfo for each algorithm (RFC 5480,
    // RFC 8410); only the key bytes vary.
    const P256: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    const P384: &[u8] = &[
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    const ED25519: &[u8] = &[
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let prefix = match alg {
        KeyAlgorithm::EcdsaP256 => P256,
        KeyAlgorithm::EcdsaP384 => P384,
        KeyAlgorithm::Ed25519 => ED25519,
    };
    let mut out = Vec::with_capacity(prefix.len() + raw.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(raw);
    out
}
