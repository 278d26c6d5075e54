//! TPM 2.0 attestation, checked by the server (pure: no TPM, no I/O).
//!
//! The TCG EK/AK model: a device's TPM proves
//! 1. that it is a genuine TPM — its endorsement key (EK) certificate chains to
//!    a registered TPM vendor CA ([`verify_ek_certificate`]);
//! 2. that its attestation key (AK) lives in that same TPM — the server wraps a
//!    secret to the EK for the AK's name ([`make_credential`]) and the TPM
//!    releases it only by TPM2_ActivateCredential with the AK loaded;
//! 3. that the device's identity key is TPM-resident and cannot be exported —
//!    TPM2_Certify by the AK over the key's public area, which must carry
//!    fixedTPM, fixedParent and sensitiveDataOrigin ([`verify_certify`]);
//! 4. which firmware it booted — TPM2_Quote by the AK over the measurement PCR
//!    with a fresh server nonce, checked against the replayed boot event log
//!    ([`verify_quote`]).
//!
//! The TPM structures are parsed here rather than through the C TSS so that the
//! server never links tpm2-tss and every parser is fuzzed (`fuzz/`).

pub mod boot;
pub mod credential;
pub mod ek;
pub mod wire;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

pub use boot::{BootEvent, FIRMWARE_PCR, booted_firmware, replay};
pub use credential::{Credential, make_credential};
pub use ek::{EkCertificate, verify_ek_certificate};
pub use wire::{Attest, Attested, EccPublic, EcdsaSignature, attrs};

/// Attestation evidence was malformed or does not prove what it must.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    /// A TPM structure did not parse.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Well-formed, but it does not prove what it must.
    #[error("{0}")]
    Refused(String),
}

/// Attributes an attestation key must have: a restricted signing key, born in
/// and bound to its TPM.
pub const AK_ATTRIBUTES: u32 = attrs::RESTRICTED
    | attrs::SIGN
    | attrs::FIXED_TPM
    | attrs::FIXED_PARENT
    | attrs::SENSITIVE_DATA_ORIGIN;

/// Attributes an identity key must have: made inside the TPM and impossible to
/// duplicate out of it.
pub const IDENTITY_ATTRIBUTES: u32 =
    attrs::SIGN | attrs::FIXED_TPM | attrs::FIXED_PARENT | attrs::SENSITIVE_DATA_ORIGIN;

/// Parses an AK public area and checks its attributes.
pub fn check_ak(ak_public: &[u8]) -> Result<EccPublic, AttestError> {
    let ak = EccPublic::parse(ak_public)?;
    if !ak.has(AK_ATTRIBUTES) || ak.has(attrs::DECRYPT) {
        return Err(AttestError::Refused(format!(
            "the attestation key is not a restricted, TPM-bound signing key (attributes 0x{:08x})",
            ak.attributes
        )));
    }
    Ok(ak)
}

/// Checks a TPM2_Certify by `ak` over the identity key `key_public` with
/// qualifying data `nonce`; returns the identity key.
pub fn verify_certify(
    ak: &EccPublic,
    key_public: &[u8],
    certify_info: &[u8],
    signature: &[u8],
    nonce: &[u8],
) -> Result<EccPublic, AttestError> {
    let key = EccPublic::parse(key_public)?;
    let attest = Attest::parse(certify_info)?;
    EcdsaSignature::parse(signature)?.verify(ak, &attest.bytes)?;
    if attest.extra_data != nonce {
        return Err(AttestError::Refused(
            "the certification is not over this challenge's nonce (replayed?)".into(),
        ));
    }
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err(AttestError::Refused(
            "the evidence is not a TPM2_Certify".into(),
        ));
    };
    if *name != key.name() {
        return Err(AttestError::Refused(
            "the certified object is not the key presented".into(),
        ));
    }
    if !key.has(IDENTITY_ATTRIBUTES) {
        return Err(AttestError::Refused(format!(
            "the identity key is exportable or was not generated in the TPM \
             (needs fixedTPM, fixedParent, sensitiveDataOrigin; attributes 0x{:08x})",
            key.attributes
        )));
    }
    Ok(key)
}

/// What a verified quote showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteFindings {
    /// The firmware measured last, if the log has one.
    pub firmware: Option<BootEvent>,
    /// The TPM's reset counter (changes on every reboot).
    pub reset_count: u32,
}

/// Checks a TPM2_Quote by `ak` over the SHA-256 bank's `pcr` with qualifying
/// data `nonce`, and that `events` replay to the quoted PCR value.
pub fn verify_quote(
    ak: &EccPublic,
    quote: &[u8],
    signature: &[u8],
    nonce: &[u8],
    events: &[BootEvent],
    pcr: u8,
) -> Result<QuoteFindings, AttestError> {
    let attest = Attest::parse(quote)?;
    EcdsaSignature::parse(signature)?.verify(ak, &attest.bytes)?;
    if attest.extra_data != nonce {
        return Err(AttestError::Refused(
            "the quote is not over this challenge's nonce (replayed or forged)".into(),
        ));
    }
    let Attested::Quote {
        selection,
        pcr_digest,
    } = &attest.attested
    else {
        return Err(AttestError::Refused(
            "the evidence is not a TPM2_Quote".into(),
        ));
    };
    let wanted = [wire::PcrSelection {
        hash: wire::ALG_SHA256,
        pcrs: vec![pcr],
    }];
    if selection.as_slice() != wanted {
        return Err(AttestError::Refused(format!(
            "the quote covers {selection:?}, not SHA-256 PCR {pcr}"
        )));
    }
    let value = replay(events, pcr)?;
    let expected = ring::digest::digest(&ring::digest::SHA256, &value);
    if expected.as_ref() != pcr_digest.as_slice() {
        return Err(AttestError::Refused(format!(
            "PCR {pcr} does not match the event log: the log was altered or the device booted something it did not log"
        )));
    }
    Ok(QuoteFindings {
        firmware: booted_firmware(events).cloned(),
        reset_count: attest.reset_count,
    })
}

/// Base64 (standard alphabet) of bytes, as carried in the JSON below.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes a base64 field, bounded to `max` decoded bytes.
pub fn unb64(field: &'static str, text: &str, max: usize) -> Result<Vec<u8>, AttestError> {
    if text.len() > max.div_ceil(3) * 4 + 4 {
        return Err(AttestError::Malformed {
            what: field,
            reason: format!("longer than {max} bytes"),
        });
    }
    B64.decode(text).map_err(|e| AttestError::Malformed {
        what: field,
        reason: format!("not base64: {e}"),
    })
}

/// Agent → server: start TPM attestation at enrolment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The EK certificate (DER, base64).
    pub ek_certificate: String,
    /// The AK's `TPMT_PUBLIC` (base64).
    pub ak_public: String,
}

/// Server → agent: a credential to activate and a nonce to certify with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// Names this challenge in the evidence.
    pub id: String,
    /// `TPM2B_ID_OBJECT` contents (base64).
    pub credential_blob: String,
    /// `TPM2B_ENCRYPTED_SECRET` contents (base64).
    pub encrypted_secret: String,
    /// Qualifying data for TPM2_Certify (base64).
    pub nonce: String,
}

/// Agent → server: the activated secret and the identity key's certification.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEvidence {
    /// The challenge answered.
    pub id: String,
    /// The secret TPM2_ActivateCredential released (base64).
    pub secret: String,
    /// The identity key's `TPMT_PUBLIC` (base64).
    pub key_public: String,
    /// `TPMS_ATTEST` from TPM2_Certify (base64).
    pub certify_info: String,
    /// `TPMT_SIGNATURE` over it by the AK (base64).
    pub certify_signature: String,
}

/// Agent → server: a quote answering a nonce, with the boot event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteEvidence {
    /// The nonce answered (base64).
    pub nonce: String,
    /// `TPMS_ATTEST` from TPM2_Quote (base64).
    pub quote: String,
    /// `TPMT_SIGNATURE` by the AK (base64).
    pub signature: String,
    /// The boot event log.
    pub events: Vec<BootEvent>,
}
