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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyProtection {
    /// A key file on disk: for development and embedded defaults only.
    Software,
    /// A PKCS#11 token or secure element.
    SecureElement,
    /// A TPM 2.0.
    Tpm,
}

impl KeyProtection {
    /// Every kind.
    pub const ALL: [KeyProtection; 3] = [
        KeyProtection::Software,
        KeyProtection::SecureElement,
        KeyProtection::Tpm,
    ];

    /// The name as stored, sent (`Palisade-Key-Protection`) and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyProtection::Software => "software",
            KeyProtection::SecureElement => "secure-element",
            KeyProtection::Tpm => "tpm",
        }
    }

    /// Parses a stored or sent name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for KeyProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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

/// Re-encodes a fixed-width ECDSA signature (`r || s`, as PKCS#11 tokens and
/// TPMs return it) as the ASN.1 DER `Ecdsa-Sig-Value` that X.509 and TLS carry.
/// Returns `None` when the input is empty or of odd length.
pub fn ecdsa_fixed_to_der(fixed: &[u8]) -> Option<Vec<u8>> {
    if fixed.is_empty() || !fixed.len().is_multiple_of(2) || fixed.len() > 132 {
        return None;
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let int = |v: &[u8]| {
        let v = match v.iter().position(|b| *b != 0) {
            Some(i) => &v[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        let pad = v[0] & 0x80 != 0;
        out.push((v.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let (r, s) = (int(r), int(s));
    let body = r.len() + s.len();
    let mut out = vec![0x30];
    if body >= 0x80 {
        out.push(0x81);
    }
    out.push(body as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_to_der_pads_high_bits_and_strips_leading_zeros() {
        let mut fixed = vec![0u8; 64];
        fixed[0] = 0x80; // r needs a 0x00 pad
        fixed[63] = 0x01; // s is 1 after stripping zeros
        let der = ecdsa_fixed_to_der(&fixed).expect("der");
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_fixed_to_der(&[1, 2, 3]).is_none());
        let der = ecdsa_fixed_to_der(&[0xff; 96]).expect("der");
        assert_eq!(&der[..3], &[0x30, 0x66, 0x02]);
        // P-521 sized values take the long length form.
        let der = ecdsa_fixed_to_der(&[0xff; 132]).expect("der");
        assert_eq!(&der[..3], &[0x30, 0x81, 0x8a]);
    }
}
