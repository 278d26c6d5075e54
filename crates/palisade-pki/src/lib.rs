//! Palisade's PKI: CSR verification, certificate profiles, issuance through a
//! [`Signer`](palisade_core::Signer), CRLs and certificate inspection.
//!
//! Pure: no I/O, no ambient clock (every function takes `now`), no ambient
//! randomness (serials take a `SecureRandom`). The server owns keys, storage and time.

mod ca;
mod csr;
mod inspect;
mod key;
mod manifest;
mod rollover;

pub use ca::{
    CaError, CertificateAuthority, CrlEntry, IssueRequest, Issued, Profile, RevocationReason, San,
    Serial,
};
pub use csr::{CsrError, CsrLimits, KeyType, VerifiedCsr, verify_csr};
pub use inspect::{
    CertInfo, InspectError, inspect_certificate, pem_certificates, pem_to_der, public_key_raw_of,
    spki_der_of,
};
pub use key::SignerKey;
pub use manifest::{
    MAX_DEVICES, MAX_MANIFEST_BYTES, ManifestBody, ManifestDevice, ManifestError, SignedManifest,
    VerifiedDevice, VerifiedManifest, sha256_hex, sign_manifest, verify_manifest,
};
pub use rollover::accepted_roots;
