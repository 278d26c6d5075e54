//! Reading certificates back: serial, subject, validity, fingerprint.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the inventory records about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// Subject, RFC 4514 style.
    pub subject: String,
    /// Issuer, RFC 4514 style.
    pub issuer: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// The subject's first common name.
    pub common_name: Option<String>,
}

/// A certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// Not a DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Malformed(String),
    /// Not PEM, or the wrong PEM label.
    #[error("not a PEM {expected}: {reason}")]
    Pem {
        /// The label expected.
        expected: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Parses a certificate's inventory facts.
pub fn inspect_certificate(der: &[u8]) -> Result<CertInfo, InspectError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| InspectError::Malformed(e.to_string()))?;
    Ok(CertInfo {
        serial_hex: hex_lower(cert.raw_serial()),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_owned),
    })
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn spki_der_of(der: &[u8]) -> Result<Vec<u8>, InspectError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| InspectError::Malformed(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The raw subject public key of a certificate (for EC keys, the
/// uncompressed point), as signature verifiers take it.
pub fn public_key_raw_of(der: &[u8]) -> Result<Vec<u8>, InspectError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| InspectError::Malformed(e.to_string()))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Decodes one PEM block with the given label (e.g. `CERTIFICATE REQUEST`) into DER.
pub fn pem_to_der(text: &str, label: &'static str) -> Result<Vec<u8>, InspectError> {
    let p = pem::parse(text).map_err(|e| InspectError::Pem {
        expected: label,
        reason: e.to_string(),
    })?;
    // OpenSSL writes "NEW CERTIFICATE REQUEST" with -new on some versions.
    let tag = p.tag();
    if tag != label && !(label == "CERTIFICATE REQUEST" && tag == "NEW CERTIFICATE REQUEST") {
        return Err(InspectError::Pem {
            expected: label,
            reason: format!("found a {tag:?} block"),
        });
    }
    Ok(p.into_contents())
}

/// Decodes every `CERTIFICATE` block of a PEM bundle into DER, in order.
pub fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, InspectError> {
    let blocks = pem::parse_many(text).map_err(|e| InspectError::Pem {
        expected: "CERTIFICATE",
        reason: e.to_string(),
    })?;
    Ok(blocks
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}
