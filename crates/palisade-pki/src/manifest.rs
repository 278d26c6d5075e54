//! Batch manifests: the signed file a supplier hands the buyer with a batch of
//! devices (model, serials, IDevID fingerprints and public keys, time), signed by
//! the manufacturer CA's key. The signature covers the exact payload bytes, which
//! travel base64-encoded inside a small JSON envelope, so reformatting the file
//! cannot change what was signed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use palisade_core::{KeyAlgorithm, Signer};
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519, UnparsedPublicKey,
    VerificationAlgorithm,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::inspect::{hex_lower, pem_to_der};

/// Largest manifest file accepted.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Most devices in one manifest.
pub const MAX_DEVICES: usize = 10_000;

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

/// What the manufacturer signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// Format version (1).
    pub version: u32,
    /// Supplier name.
    pub supplier: String,
    /// Device model of every device in the batch.
    pub model: String,
    /// When the batch was sealed, Unix ms.
    pub created_ms: i64,
    /// The devices.
    pub devices: Vec<ManifestDevice>,
}

/// One device of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDevice {
    /// Manufacturer serial number (the IDevID's CN).
    pub serial: String,
    /// SHA-256 (hex) of the IDevID certificate (DER).
    pub idevid_sha256: String,
    /// SHA-256 (hex) of the IDevID's SubjectPublicKeyInfo (DER).
    pub public_key_sha256: String,
    /// The IDevID certificate, PEM.
    pub certificate_pem: String,
}

/// The file: base64 payload, algorithm, signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Base64 of the JSON body bytes that were signed.
    pub payload: String,
    /// `ES256`, `ES384` or `EdDSA`.
    pub alg: String,
    /// Base64 signature (ASN.1 DER for ECDSA).
    pub signature: String,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Too large.
    #[error("manifest is {0} bytes; at most {MAX_MANIFEST_BYTES} are accepted")]
    TooLarge(usize),
    /// Not the expected JSON.
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    /// Signature does not verify with the supplier's manufacturer CA key.
    #[error("manifest signature does not verify with the manufacturer CA of supplier {0}")]
    BadSignature(String),
    /// A device entry is wrong.
    #[error("device {serial:?}: {reason}")]
    Device {
        /// The serial.
        serial: String,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("signing the manifest failed: {0}")]
    Signing(String),
}

fn malformed(e: impl ToString) -> ManifestError {
    ManifestError::Malformed(e.to_string())
}

/// Signs `body` with the manufacturer key; returns the manifest file text.
pub fn sign_manifest(body: &ManifestBody, signer: &dyn Signer) -> Result<String, ManifestError> {
    let payload = serde_json::to_vec(body).map_err(malformed)?;
    let sig = signer
        .sign(&payload)
        .map_err(|e| ManifestError::Signing(e.to_string()))?;
    let alg = match signer.algorithm() {
        KeyAlgorithm::EcdsaP256 => "ES256",
        KeyAlgorithm::EcdsaP384 => "ES384",
        KeyAlgorithm::Ed25519 => "EdDSA",
    };
    let file = SignedManifest {
        payload: B64.encode(&payload),
        alg: alg.into(),
        signature: B64.encode(sig),
    };
    serde_json::to_string_pretty(&file).map_err(malformed)
}

/// A device entry whose certificate checked out.
#[derive(Debug, Clone)]
pub struct VerifiedDevice {
    /// Serial.
    pub serial: String,
    /// IDevID certificate, DER.
    pub cert_der: Vec<u8>,
    /// SHA-256 (hex) of the certificate.
    pub cert_sha256: String,
}

/// A manifest whose signature and every entry checked out.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    /// SHA-256 (hex) of the signed payload: the batch id.
    pub id: String,
    /// The body.
    pub body: ManifestBody,
    /// The devices, checked.
    pub devices: Vec<VerifiedDevice>,
}

/// Verifies a manifest file against the supplier's manufacturer CA certificate:
/// the signature over the payload, and for every device that its IDevID was issued
/// by that CA, is valid at `now`, names the serial, and matches both fingerprints.
pub fn verify_manifest(
    file: &[u8],
    supplier: &str,
    ca_der: &[u8],
    now: OffsetDateTime,
) -> Result<VerifiedManifest, ManifestError> {
    if file.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(file.len()));
    }
    let env: SignedManifest = serde_json::from_slice(file).map_err(malformed)?;
    let payload = B64.decode(env.payload.trim()).map_err(malformed)?;
    let sig = B64.decode(env.signature.trim()).map_err(malformed)?;
    let (_, ca) = X509Certificate::from_der(ca_der).map_err(malformed)?;
    let alg: &dyn VerificationAlgorithm = match env.alg.as_str() {
        "ES256" => &ECDSA_P256_SHA256_ASN1,
        "ES384" => &ECDSA_P384_SHA384_ASN1,
        "EdDSA" => &ED25519,
        other => return Err(malformed(format!("unknown signature algorithm {other:?}"))),
    };
    UnparsedPublicKey::new(alg, ca.public_key().subject_public_key.data.as_ref())
        .verify(&payload, &sig)
        .map_err(|_| ManifestError::BadSignature(supplier.to_owned()))?;
    let body: ManifestBody = serde_json::from_slice(&payload).map_err(malformed)?;
    if body.version != 1 {
        return Err(malformed(format!("unsupported version {}", body.version)));
    }
    if body.supplier != supplier {
        return Err(malformed(format!(
            "manifest is for supplier {:?}, not {supplier:?}",
            body.supplier
        )));
    }
    if body.devices.is_empty() || body.devices.len() > MAX_DEVICES {
        return Err(malformed(format!(
            "a batch lists 1 to {MAX_DEVICES} devices, this one {}",
            body.devices.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut devices = Vec::with_capacity(body.devices.len());
    for d in &body.devices {
        let bad = |reason: String| ManifestError::Device {
            serial: d.serial.chars().take(64).collect(),
            reason,
        };
        if !seen.insert(d.serial.clone()) {
            return Err(bad("listed twice".into()));
        }
        let der = pem_to_der(&d.certificate_pem, "CERTIFICATE").map_err(|e| bad(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| bad("IDevID was not issued by this supplier's manufacturer CA".into()))?;
        if !cert
            .validity()
            .is_valid_at(x509_parser::time::ASN1Time::from(now))
        {
            return Err(bad("IDevID is not valid now".into()));
        }
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("");
        if cn != d.serial {
            return Err(bad(format!("IDevID names serial {cn:?}")));
        }
        let cert_sha = sha256_hex(&der);
        if cert_sha != d.idevid_sha256 {
            return Err(bad("certificate fingerprint does not match".into()));
        }
        if sha256_hex(cert.public_key().raw) != d.public_key_sha256 {
            return Err(bad("public key fingerprint does not match".into()));
        }
        devices.push(VerifiedDevice {
            serial: d.serial.clone(),
            cert_der: der,
            cert_sha256: cert_sha,
        });
    }
    Ok(VerifiedManifest {
        id: sha256_hex(&payload),
        body,
        devices,
    })
}
