//! Certificate signing request checks: size, structure, key type and proof of
//! possession. Nothing in a CSR decides what a certificate says; the server's
//! profile does. The requested subject is kept only to be shown to an operator.

use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey;

/// Bounds on CSRs, enforced before and while parsing.
#[derive(Debug, Clone, Copy)]
pub struct CsrLimits {
    /// Largest DER encoding accepted.
    pub max_der_len: usize,
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: usize,
    /// Largest RSA modulus accepted, in bits.
    pub max_rsa_bits: usize,
}

impl Default for CsrLimits {
    fn default() -> Self {
        Self {
            max_der_len: 8 * 1024,
            min_rsa_bits: 2048,
            max_rsa_bits: 4096,
        }
    }
}

/// The key types a certificate may certify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA P-256.
    EcdsaP256,
    /// ECDSA P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, with its modulus size (legacy devices; at least 2048 bits).
    Rsa(usize),
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeyType::Ed25519 => f.write_str("ed25519"),
            KeyType::Rsa(bits) => write!(f, "rsa-{bits}"),
        }
    }
}

/// Why a CSR was refused. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// Larger than the limit.
    #[error("CSR is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a DER PKCS#10 request.
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    Malformed(String),
    /// Trailing bytes after the request.
    #[error("CSR has {0} trailing bytes after the request")]
    TrailingData(usize),
    /// The signature does not verify under the request's own key.
    #[error("CSR signature does not verify with its public key (no proof of possession)")]
    BadSignature,
    /// A key algorithm Palisade does not certify.
    #[error("CSR key type {0} is not accepted: use ECDSA P-256, P-384 or Ed25519")]
    UnsupportedKey(String),
    /// RSA key too small or too large.
    #[error(
        "CSR RSA key has {bits} bits; accepted sizes are {min}..={max} (ECDSA P-256 is preferred)"
    )]
    RsaKeySize {
        /// Its modulus size.
        bits: usize,
        /// Minimum.
        min: usize,
        /// Maximum.
        max: usize,
    },
}

/// A CSR whose structure, key type and self-signature checked out.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The key's type.
    pub key_type: KeyType,
    /// The DER SubjectPublicKeyInfo to certify.
    pub spki_der: Vec<u8>,
    /// The subject the requester asked for, for display only.
    pub requested_subject: String,
}

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// Verifies a DER CSR: bounded size, well-formed, an accepted key, and a signature
/// made by that key. Unknown ordinary extensions (a Subject Key Identifier, say) are
/// allowed: they are ignored, never copied into the certificate.
pub fn verify_csr(der: &[u8], limits: &CsrLimits) -> Result<VerifiedCsr, CsrError> {
    if der.len() > limits.max_der_len {
        return Err(CsrError::TooLarge {
            len: der.len(),
            max: limits.max_der_len,
        });
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData(rest.len()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    let key_type = match alg.as_str() {
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => KeyType::EcdsaP256,
                OID_P384 => KeyType::EcdsaP384,
                other => return Err(CsrError::UnsupportedKey(format!("EC curve {other:?}"))),
            }
        }
        OID_ED25519 => KeyType::Ed25519,
        OID_RSA => {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
                _ => return Err(CsrError::Malformed("unreadable RSA public key".into())),
            };
            if bits < limits.min_rsa_bits || bits > limits.max_rsa_bits {
                return Err(CsrError::RsaKeySize {
                    bits,
                    min: limits.min_rsa_bits,
                    max: limits.max_rsa_bits,
                });
            }
            KeyType::Rsa(bits)
        }
        other => return Err(CsrError::UnsupportedKey(other.to_string())),
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(VerifiedCsr {
        key_type,
        spki_der: spki.raw.to_vec(),
        requested_subject: info.subject.to_string(),
    })
}
