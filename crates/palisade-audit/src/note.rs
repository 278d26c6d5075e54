//! Checkpoints in the C2SP signed-note format, signed with Ed25519.
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\n
//! \n
//! — <key name> <base64(key id ‖ signature)>\n
//! ```
//! The key id is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key),
//! and verifier keys are written `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use palisade_core::{KeyAlgorithm, Signer};
use ring::signature::{ED25519, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::merkle::Digest32;

/// Largest note accepted.
pub const MAX_NOTE_LEN: usize = 16 * 1024;
/// Most signature lines read from one note.
pub const MAX_SIGNATURES: usize = 16;
const ALG_ED25519: u8 = 0x01;

/// A checkpoint: the log's identity, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log (a schema-less URL-like name).
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Merkle tree hash.
    pub root: Digest32,
}

impl Checkpoint {
    /// The signed body text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }
}

/// A note could not be read, or its signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_LEN`].
    #[error("note is {0} bytes; at most {MAX_NOTE_LEN} are accepted")]
    TooLarge(usize),
    /// Not in the signed-note shape.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key.
    #[error("note has no signature by key {0}")]
    NoSignature(String),
    /// A signature by the key that does not verify.
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    /// The verifier key string is malformed.
    #[error("malformed verifier key: {0}")]
    BadKey(&'static str),
    /// The checkpoint is for another log.
    #[error("checkpoint is for log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// Expected origin.
        expected: String,
        /// Found origin.
        found: String,
    },
    /// The signer is not an Ed25519 key.
    #[error("checkpoint keys must be Ed25519")]
    WrongAlgorithm,
    /// The key store failed to sign.
    #[error("signing the checkpoint failed: {0}")]
    Signing(String),
}

fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// Signs `cp` with an Ed25519 `signer` under `key_name`; returns the note text.
pub fn sign_checkpoint(
    cp: &Checkpoint,
    key_name: &str,
    signer: &dyn Signer,
) -> Result<String, NoteError> {
    if signer.algorithm() != KeyAlgorithm::Ed25519 {
        return Err(NoteError::WrongAlgorithm);
    }
    let body = cp.body();
    let sig = signer
        .sign(body.as_bytes())
        .map_err(|e| NoteError::Signing(e.to_string()))?;
    let mut blob = key_id(key_name, signer.public_key_raw()).to_vec();
    blob.extend_from_slice(&sig);
    Ok(format!(
        "{body}\n\u{2014} {key_name} {}\n",
        B64.encode(blob)
    ))
}

/// A checkpoint verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    public: Vec<u8>,
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

impl NoteVerifier {
    /// From a key name and a raw Ed25519 public key.
    pub fn new(name: &str, public: &[u8]) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::BadKey("key name is empty or has spaces or '+'"));
        }
        if public.len() != 32 {
            return Err(NoteError::BadKey("Ed25519 public keys are 32 bytes"));
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, public),
            public: public.to_vec(),
        })
    }

    /// Parses `<name>+<hex id>+<base64(0x01 ‖ key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey("expected name+id+key"));
        };
        let key = B64
            .decode(key)
            .map_err(|_| NoteError::BadKey("key is not base64"))?;
        let Some((&ALG_ED25519, public)) = key.split_first() else {
            return Err(NoteError::BadKey(
                "only Ed25519 (type 0x01) keys are supported",
            ));
        };
        let v = Self::new(name, public)?;
        if hex::encode(v.id) != id.to_ascii_lowercase() {
            return Err(NoteError::BadKey("key id does not match the key"));
        }
        Ok(v)
    }

    /// The `<name>+<id>+<key>` form.
    pub fn to_vkey(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(&self.public);
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(k))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses a signed note, checks this key's signature and, if `origin` is given,
    /// the log's identity; returns the checkpoint.
    pub fn verify(&self, note: &str, origin: Option<&str>) -> Result<Checkpoint, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge(note.len()));
        }
        let Some(split) = note.find("\n\n") else {
            return Err(NoteError::Malformed("no blank line before signatures"));
        };
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        let mut verified = false;
        for line in sigs.lines().take(MAX_SIGNATURES) {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Malformed(
                    "signature line must start with an em dash",
                ));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed(
                    "signature line needs a name and a signature",
                ));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = B64.decode(blob) else {
                return Err(NoteError::Malformed("signature is not base64"));
            };
            if blob.len() != 4 + 64 || blob[..4] != self.id {
                continue;
            }
            UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            verified = true;
            break;
        }
        if !verified {
            return Err(NoteError::NoSignature(self.name.clone()));
        }
        let cp = parse_body(body)?;
        if let Some(expected) = origin
            && cp.origin != expected
        {
            return Err(NoteError::WrongOrigin {
                expected: expected.to_owned(),
                found: cp.origin,
            });
        }
        Ok(cp)
    }
}

fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
    let mut lines = body.split('\n');
    let origin = lines.next().filter(|o| !o.is_empty());
    let size = lines.next();
    let root = lines.next();
    let (Some(origin), Some(size), Some(root)) = (origin, size, root) else {
        return Err(NoteError::Malformed(
            "checkpoint needs origin, size and root lines",
        ));
    };
    if size.is_empty() || (size.len() > 1 && size.starts_with('0')) {
        return Err(NoteError::Malformed("size is not a canonical decimal"));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| NoteError::Malformed("size is not a decimal number"))?;
    let root = B64
        .decode(root)
        .map_err(|_| NoteError::Malformed("root is not base64"))?;
    let root: Digest32 = root
        .try_into()
        .map_err(|_| NoteError::Malformed("root is not 32 bytes"))?;
    Ok(Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_keystore::SoftwareKey;

    fn setup() -> (SoftwareKey, NoteVerifier, Checkpoint) {
        let (k, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "t").unwrap();
        let v = NoteVerifier::new("example.org/log", k.public_key_raw()).unwrap();
        let cp = Checkpoint {
            origin: "example.org/log".into(),
            size: 42,
            root: [9; 32],
        };
        (k, v, cp)
    }

    #[test]
    fn signed_checkpoint_verifies_and_round_trips_the_vkey() {
        let (k, v, cp) = setup();
        let note = sign_checkpoint(&cp, "example.org/log", &k).unwrap();
        assert!(note.starts_with("example.org/log\n42\n"));
        assert_eq!(v.verify(&note, Some("example.org/log")).unwrap(), cp);
        let v2 = NoteVerifier::parse(&v.to_vkey()).unwrap();
        assert_eq!(v2, v);
    }

    #[test]
    fn refuses_edited_notes_and_other_keys() {
        let (k, v, cp) = setup();
        let note = sign_checkpoint(&cp, "example.org/log", &k).unwrap();
        let edited = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            v.verify(&edited, None),
            Err(NoteError::BadSignature("example.org/log".into()))
        );
        let (other, _) = SoftwareKey::generate(KeyAlgorithm::Ed25519, "o").unwrap();
        let forged = sign_checkpoint(&cp, "example.org/log", &other).unwrap();
        assert!(matches!(
            v.verify(&forged, None),
            Err(NoteError::NoSignature(_))
        ));
        assert!(matches!(
            v.verify(&note, Some("other")),
            Err(NoteError::WrongOrigin { .. })
        ));
        for junk in [
            "",
            "\n\n",
            "a\n\n\u{2014} x y\n",
            &"x".repeat(MAX_NOTE_LEN + 1),
        ] {
            assert!(v.verify(junk, None).is_err());
        }
    }
}
