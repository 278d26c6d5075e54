//! Bearer secrets: operator API tokens `pal_<id>_<secret>` and one-time enrolment
//! tokens `pet_<id>_<secret>`. Only SHA-256(secret) is stored; the
//! id finds the record, the secret is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use palisade_core::{OperatorName, Role};
use palisade_store::TokenRecord;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Token generation failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Draws a fresh token id (16 hex) and secret (256 bits, base64url); returns them
/// with SHA-256 of the secret, the only part that is stored.
pub fn new_secret() -> Result<(String, Zeroizing<String>, [u8; 32]), RandomError> {
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill(&mut id).map_err(|_| RandomError)?;
    rng.fill(&mut secret[..]).map_err(|_| RandomError)?;
    let secret_text = Zeroizing::new(B64URL.encode(&secret[..]));
    let hash = Sha256::digest(secret_text.as_bytes()).into();
    Ok((hex::encode(id), secret_text, hash))
}

/// Creates an operator API token; returns its text (shown once) and the record.
pub fn new_token(
    operator: OperatorName,
    role: Role,
    now_ms: i64,
    expires_ms: Option<i64>,
) -> Result<(Zeroizing<String>, TokenRecord), RandomError> {
    let (id, secret, secret_hash) = new_secret()?;
    let text = Zeroizing::new(format!("pal_{id}_{}", secret.as_str()));
    let record = TokenRecord {
        id,
        operator,
        role,
        secret_hash,
        created_ms: now_ms,
        expires_ms,
        revoked_ms: None,
    };
    Ok((text, record))
}

/// Splits `<prefix>_<id>_<secret>` into id and secret, if it has that shape.
pub fn parse_prefixed<'a>(prefix: &str, text: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = text.strip_prefix(prefix)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if secret.is_empty() || secret.len() > 64 {
        return None;
    }
    Some((id, secret))
}

/// Splits operator token text (`pal_<id>_<secret>`).
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    parse_prefixed("pal", text)
}

/// Whether `secret` hashes to `hash` (constant time).
pub fn secret_matches_hash(secret: &str, hash: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    bool::from(h.ct_eq(hash))
}

/// Whether `secret` matches an operator token record (constant time).
pub fn secret_matches(secret: &str, record: &TokenRecord) -> bool {
    secret_matches_hash(secret, &record.secret_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_matches_only_its_own_secret() {
        let (text, rec) =
            new_token(OperatorName::parse("a").unwrap(), Role::Auditor, 0, None).unwrap();
        let (id, secret) = parse_token(&text).unwrap();
        assert_eq!(id, rec.id);
        assert!(secret_matches(secret, &rec));
        assert!(!secret_matches("x", &rec));
        assert!(parse_token("pal_zz_x").is_none());
        assert!(parse_token("Bearer pal").is_none());
    }
}
