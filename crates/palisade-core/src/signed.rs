//! The signed-payload envelope Palisade uses wherever the control plane signs
//! a JSON document online for a device or an edge to check (director
//! assignments, site bundles): `{payload, signature}`, where `payload` is the
//! document's JSON exactly as signed (base64, so reformatting in transit cannot
//! change what was signed) and `signature` is Ed25519 over a domain tag
//! followed by those bytes (the tag keeps a signature for one kind of document
//! from being replayed as another). Pure: keys and time come from the caller.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A signed document as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The document's JSON, base64.
    pub payload: String,
    /// Ed25519 over the domain tag and the payload bytes, base64.
    pub signature: String,
}

/// Why an envelope could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The signing key is not an Ed25519 PKCS#8 key.
    #[error("{0}")]
    Key(String),
    /// Too large, not base64, or not the expected document.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify with the given key and domain.
    #[error("the signature does not verify")]
    BadSignature,
}

fn message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + payload.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(payload);
    msg
}

/// Signs `doc` under `domain` with an Ed25519 key (PKCS#8).
pub fn seal<T: Serialize>(domain: &[u8], doc: &T, pkcs8: &[u8]) -> Result<Signed, EnvelopeError> {
    let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|e| EnvelopeError::Key(e.to_string()))?;
    let payload = serde_json::to_vec(doc).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    Ok(Signed {
        signature: STANDARD.encode(key.sign(&message(domain, &payload)).as_ref()),
        payload: STANDARD.encode(&payload),
    })
}

/// Checks `s` under `domain` against an Ed25519 public key (refusing anything
/// larger than `max_bytes` before decoding) and reads the document.
pub fn open<T: DeserializeOwned>(
    domain: &[u8],
    s: &Signed,
    public: &[u8],
    max_bytes: usize,
) -> Result<T, EnvelopeError> {
    if s.payload.len() + s.signature.len() > max_bytes {
        return Err(EnvelopeError::Malformed("too large".into()));
    }
    let payload = STANDARD
        .decode(&s.payload)
        .map_err(|_| EnvelopeError::Malformed("payload is not base64".into()))?;
    let sig = STANDARD
        .decode(&s.signature)
        .map_err(|_| EnvelopeError::Malformed("signature is not base64".into()))?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&message(domain, &payload), &sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    serde_json::from_slice(&payload).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn key() -> (Vec<u8>, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        (pkcs8.as_ref().to_vec(), kp.public_key().as_ref().to_vec())
    }

    #[test]
    fn a_document_opens_only_under_its_own_domain_key_and_bytes() {
        let (sk, pk) = key();
        let s = seal(b"a\n", &vec![1, 2, 3], &sk).unwrap();
        assert_eq!(open::<Vec<u32>>(b"a\n", &s, &pk, 1024).unwrap(), [1, 2, 3]);
        assert_eq!(
            open::<Vec<u32>>(b"b\n", &s, &pk, 1024),
            Err(EnvelopeError::BadSignature)
        );
        let (_, other) = key();
        assert_eq!(
            open::<Vec<u32>>(b"a\n", &s, &other, 1024),
            Err(EnvelopeError::BadSignature)
        );
        let swapped = Signed {
            payload: seal(b"a\n", &vec![9], &sk).unwrap().payload,
            signature: s.signature.clone(),
        };
        assert_eq!(
            open::<Vec<u32>>(b"a\n", &swapped, &pk, 1024),
            Err(EnvelopeError::BadSignature)
        );
        assert!(matches!(
            open::<Vec<u32>>(b"a\n", &s, &pk, 8),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            seal(b"a\n", &1, b"not a key"),
            Err(EnvelopeError::Key(_))
        ));
    }
}
