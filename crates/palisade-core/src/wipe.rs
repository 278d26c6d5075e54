//! The two messages of a verified wipe, which both ends must read alike.
//!
//! * The **wipe command** the control plane sends on a device's commands topic
//!   when an operator decommissions it with `--wipe`: the signed-payload
//!   envelope ([`crate::signed`]) under the director's Ed25519 key (which the
//!   agent pinned at its first update check) and the domain tag
//!   [`COMMAND_DOMAIN`], so no other signed document of the control plane can
//!   be replayed as a wipe. It names the device, the certificate serial it
//!   holds now, a fresh nonce and an expiry: a command for another device, for
//!   an identity the device no longer has, or past its time is refused.
//! * The **wipe receipt** the agent answers with: the same device, serial and
//!   nonce, what it destroyed and when, signed (ECDSA P-256, DER) with the
//!   identity key the command is about to destroy, under [`RECEIPT_DOMAIN`].
//!   The server checks it against the certificate it issued.
//!
//! Pure: keys and time come from the caller.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::signed::{EnvelopeError, Signed, open};

/// Domain tag of wipe commands.
pub const COMMAND_DOMAIN: &[u8] = b"palisade-wipe-v1\n";
/// Domain tag of wipe receipts.
pub const RECEIPT_DOMAIN: &[u8] = b"palisade-wipe-receipt-v1\n";
/// The command's name on the commands topic.
pub const COMMAND_NAME: &str = "wipe";
/// Command ids of wipes start with this (their acknowledgements carry receipts).
pub const ID_PREFIX: &str = "wipe-";
/// Largest encoded command or receipt accepted.
pub const MAX_WIPE_BYTES: usize = 4096;
/// Most items a receipt lists as destroyed.
pub const MAX_DESTROYED: usize = 32;

/// What the control plane asks of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeCommand {
    /// The device.
    pub device: String,
    /// Serial (hex) of the certificate the device holds now.
    pub serial: String,
    /// 16 random bytes, hex: the receipt must echo it.
    pub nonce: String,
    /// When the command was made, Unix ms.
    pub issued_ms: i64,
    /// Not acted on after, Unix ms.
    pub expires_ms: i64,
}

/// What the device did, signed with its identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeReceipt {
    /// The device.
    pub device: String,
    /// The serial of the certificate whose key signs this receipt.
    pub serial: String,
    /// The command's nonce.
    pub nonce: String,
    /// What was destroyed (`data key (tpm sealed object 0x81010a01)`, ...),
    /// the identity key last, after signing.
    pub destroyed: Vec<String>,
    /// The keystore (`tpm`, `pkcs11`, `software`).
    pub keystore: String,
    /// When, Unix ms (the device's clock).
    pub at_ms: i64,
}

/// Why a wipe command or receipt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WipeError {
    /// Not the expected shape, or too large.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The signature does not verify with the expected key.
    #[error("the signature does not verify")]
    BadSignature,
    /// For another device.
    #[error("meant for device {0}")]
    OtherDevice(String),
    /// For a certificate the device does not hold (replayed from an earlier
    /// identity, or made for a later one).
    #[error("meant for certificate {0}, not the one in use")]
    OtherCertificate(String),
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// A receipt for another command.
    #[error("answers nonce {0}, not the one sent")]
    OtherNonce(String),
}

impl From<EnvelopeError> for WipeError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::BadSignature => WipeError::BadSignature,
            EnvelopeError::Key(m) | EnvelopeError::Malformed(m) => WipeError::Malformed(m),
        }
    }
}

/// The command's arguments on the commands topic: the envelope's payload and
/// signature.
pub fn command_args(s: &Signed) -> Vec<String> {
    vec![s.payload.clone(), s.signature.clone()]
}

/// The device's check of a wipe command received as `args`: signed by the
/// director key `director_public`, for `device` holding certificate `serial`,
/// not expired at `now_ms`.
pub fn verify_command(
    args: &[String],
    director_public: &[u8],
    device: &str,
    serial: &str,
    now_ms: i64,
) -> Result<WipeCommand, WipeError> {
    let [payload, signature] = args else {
        return Err(WipeError::Malformed(format!(
            "a wipe command has 2 arguments, not {}",
            args.len()
        )));
    };
    let s = Signed {
        payload: payload.clone(),
        signature: signature.clone(),
    };
    let c: WipeCommand = open(COMMAND_DOMAIN, &s, director_public, MAX_WIPE_BYTES)?;
    if c.device != device {
        return Err(WipeError::OtherDevice(c.device));
    }
    if !c.serial.eq_ignore_ascii_case(serial) {
        return Err(WipeError::OtherCertificate(c.serial));
    }
    if now_ms > c.expires_ms {
        return Err(WipeError::Expired);
    }
    Ok(c)
}

/// A receipt as it travels: the receipt's JSON (base64) and the device's
/// ECDSA P-256 signature (DER, base64) over the domain tag and those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// The receipt's JSON, base64.
    pub payload: String,
    /// ECDSA P-256 SHA-256, DER, base64.
    pub signature: String,
}

/// The message a receipt's signature covers.
pub fn receipt_message(payload: &[u8]) -> Vec<u8> {
    let mut m = RECEIPT_DOMAIN.to_vec();
    m.extend_from_slice(payload);
    m
}

/// Encodes a receipt for signing: returns the payload bytes to sign (through
/// [`receipt_message`]) and keep.
pub fn receipt_payload(r: &WipeReceipt) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_default()
}

/// The envelope for `payload` and its DER `signature`.
pub fn signed_receipt(payload: &[u8], signature: &[u8]) -> SignedReceipt {
    SignedReceipt {
        payload: STANDARD.encode(payload),
        signature: STANDARD.encode(signature),
    }
}

/// Reads a receipt as it arrived (the acknowledgement's `result`) without
/// checking it: bounded, and the payload decoded. Returns the receipt, the
/// payload bytes and the signature bytes for [`verify_receipt`].
pub fn parse_receipt(v: &serde_json::Value) -> Result<(WipeReceipt, Vec<u8>, Vec<u8>), WipeError> {
    let s: SignedReceipt = serde_json::from_value(v.clone())
        .map_err(|e| WipeError::Malformed(format!("not a signed receipt: {e}")))?;
    if s.payload.len() + s.signature.len() > MAX_WIPE_BYTES {
        return Err(WipeError::Malformed("too large".into()));
    }
    let payload = STANDARD
        .decode(&s.payload)
        .map_err(|_| WipeError::Malformed("payload is not base64".into()))?;
    let signature = STANDARD
        .decode(&s.signature)
        .map_err(|_| WipeError::Malformed("signature is not base64".into()))?;
    let r: WipeReceipt = serde_json::from_slice(&payload)
        .map_err(|e| WipeError::Malformed(format!("receipt: {e}")))?;
    if r.destroyed.len() > MAX_DESTROYED {
        return Err(WipeError::Malformed(format!(
            "lists {} destroyed items, more than {MAX_DESTROYED}",
            r.destroyed.len()
        )));
    }
    Ok((r, payload, signature))
}

/// The server's check of a parsed receipt: signed by the P-256 key
/// `device_public` (uncompressed point) of certificate `serial`, for `device`
/// and the nonce sent.
pub fn verify_receipt(
    receipt: &WipeReceipt,
    payload: &[u8],
    signature: &[u8],
    device_public: &[u8],
    device: &str,
    serial: &str,
    nonce: &str,
) -> Result<(), WipeError> {
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        device_public,
    )
    .verify(&receipt_message(payload), signature)
    .map_err(|_| WipeError::BadSignature)?;
    if receipt.device != device {
        return Err(WipeError::OtherDevice(receipt.device.clone()));
    }
    if !receipt.serial.eq_ignore_ascii_case(serial) {
        return Err(WipeError::OtherCertificate(receipt.serial.clone()));
    }
    if receipt.nonce != nonce {
        return Err(WipeError::OtherNonce(receipt.nonce.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn director() -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let k = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        (pkcs8.as_ref().to_vec(), k.public_key().as_ref().to_vec())
    }

    fn command() -> WipeCommand {
        WipeCommand {
            device: "cam-1".into(),
            serial: "0a1b".into(),
            nonce: "00112233445566778899aabbccddeeff".into(),
            issued_ms: 1_000,
            expires_ms: 2_000,
        }
    }

    #[test]
    fn a_command_is_checked_for_key_device_certificate_and_time() {
        let (key, public) = director();
        let s = crate::signed::seal(COMMAND_DOMAIN, &command(), &key).unwrap();
        let args = command_args(&s);
        assert_eq!(
            verify_command(&args, &public, "cam-1", "0A1B", 1_500).unwrap(),
            command()
        );
        assert_eq!(
            verify_command(&args, &public, "cam-2", "0a1b", 1_500),
            Err(WipeError::OtherDevice("cam-1".into()))
        );
        assert_eq!(
            verify_command(&args, &public, "cam-1", "0a1c", 1_500),
            Err(WipeError::OtherCertificate("0a1b".into()))
        );
        assert_eq!(
            verify_command(&args, &public, "cam-1", "0a1b", 2_001),
            Err(WipeError::Expired)
        );
        let (_, other) = director();
        assert_eq!(
            verify_command(&args, &other, "cam-1", "0a1b", 1_500),
            Err(WipeError::BadSignature)
        );
        // Another signed document of the control plane is not a wipe.
        let assignment = crate::signed::seal(b"palisade-director-v1\n", &command(), &key).unwrap();
        assert_eq!(
            verify_command(&command_args(&assignment), &public, "cam-1", "0a1b", 1_500),
            Err(WipeError::BadSignature)
        );
        assert!(matches!(
            verify_command(&args[..1], &public, "cam-1", "0a1b", 1_500),
            Err(WipeError::Malformed(_))
        ));
    }

    #[test]
    fn a_receipt_is_checked_for_key_device_certificate_and_nonce() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let r = WipeReceipt {
            device: "cam-1".into(),
            serial: "0a1b".into(),
            nonce: "n1".into(),
            destroyed: vec!["data key".into(), "identity key".into()],
            keystore: "software".into(),
            at_ms: 5,
        };
        let payload = receipt_payload(&r);
        let sig = k.sign(&rng, &receipt_message(&payload)).unwrap();
        let v = serde_json::to_value(signed_receipt(&payload, sig.as_ref())).unwrap();
        let (got, p, s) = parse_receipt(&v).unwrap();
        assert_eq!(got, r);
        let public = k.public_key().as_ref();
        verify_receipt(&got, &p, &s, public, "cam-1", "0a1b", "n1").unwrap();
        assert_eq!(
            verify_receipt(&got, &p, &s, public, "cam-1", "0a1b", "n2"),
            Err(WipeError::OtherNonce("n1".into()))
        );
        assert_eq!(
            verify_receipt(&got, &p, &s, public, "cam-2", "0a1b", "n1"),
            Err(WipeError::OtherDevice("cam-1".into()))
        );
        let mut tampered = p.clone();
        tampered[2] ^= 1;
        assert_eq!(
            verify_receipt(&got, &tampered, &s, public, "cam-1", "0a1b", "n1"),
            Err(WipeError::BadSignature)
        );
        assert!(parse_receipt(&serde_json::json!({"payload": "!!", "signature": ""})).is_err());
        assert!(parse_receipt(&serde_json::json!("text")).is_err());
    }
}
