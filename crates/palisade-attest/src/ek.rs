//! Endorsement key certificates: the TPM vendor's statement that an EK lives in
//! a genuine TPM. Palisade trusts the vendor CA certificates an administrator
//! registered, and nothing else.

use x509_parser::prelude::*;

use crate::AttestError;

/// An EK certificate that chains to a registered vendor CA.
#[derive(Debug, Clone)]
pub struct EkCertificate {
    /// The EK's RSA public key (PKCS#1 DER), for MakeCredential.
    pub rsa_pkcs1: Vec<u8>,
    /// SHA-256 of the certificate (hex), recorded with the device.
    pub fingerprint: String,
    /// The vendor CA's subject.
    pub issuer: String,
}

/// Longest EK certificate accepted.
pub const MAX_EK_CERT: usize = 8192;

/// Checks `ek_der` against the registered vendor CAs at `now` (Unix seconds).
pub fn verify_ek_certificate(
    ek_der: &[u8],
    vendor_cas: &[Vec<u8>],
    now: i64,
) -> Result<EkCertificate, AttestError> {
    if ek_der.len() > MAX_EK_CERT {
        return Err(AttestError::Refused(format!(
            "EK certificate is {} bytes; at most {MAX_EK_CERT}",
            ek_der.len()
        )));
    }
    let (rest, ek) = X509Certificate::from_der(ek_der)
        .map_err(|e| AttestError::Refused(format!("EK certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(AttestError::Refused(
            "EK certificate has trailing bytes".into(),
        ));
    }
    let t = ASN1Time::from_timestamp(now)
        .map_err(|_| AttestError::Refused("the server clock is out of range".into()))?;
    if !ek.validity().is_valid_at(t) {
        return Err(AttestError::Refused(
            "EK certificate is expired or not yet valid".into(),
        ));
    }
    let mut signer = None;
    for ca_der in vendor_cas {
        let Ok((_, ca)) = X509Certificate::from_der(ca_der) else {
            continue;
        };
        if ca.subject().as_raw() != ek.issuer().as_raw() {
            continue;
        }
        if ek.verify_signature(Some(ca.public_key())).is_ok() && ca.validity().is_valid_at(t) {
            signer = Some(ca.subject().to_string());
            break;
        }
    }
    let issuer = signer.ok_or_else(|| {
        AttestError::Refused(format!(
            "EK certificate issuer \"{}\" is not a registered TPM vendor CA (palisade tpm-vendor add)",
            ek.issuer()
        ))
    })?;
    let spki = ek.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err(AttestError::Refused(
            "only RSA endorsement keys are supported (the TCG default EK template)".into(),
        ));
    }
    Ok(EkCertificate {
        rsa_pkcs1: spki.subject_public_key.data.to_vec(),
        fingerprint: hex::encode(ring::digest::digest(&ring::digest::SHA256, ek_der)),
        issuer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_oversized_certificates_are_refused() {
        assert!(verify_ek_certificate(b"junk", &[], 0).is_err());
        let e = verify_ek_certificate(&vec![0; MAX_EK_CERT + 1], &[], 0).unwrap_err();
        assert!(e.to_string().contains("at most"));
    }
}
