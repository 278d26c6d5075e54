//! Operator API tokens: `pal_<id>_<secret>`. Only SHA-256(secret) is stored; the
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

/// Creates a token; returns its text (shown once) and the record to store.
pub fn new_token(
    operator: OperatorName,
    role: Role,
    now_ms: i64,
    expires_ms: Option<i64>,
) -> Result<(Zeroizing<String>, TokenRecord), RandomError> {
    let rng = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill(&mut id).map_err(|_| RandomError)?;
    rng.fill(&mut secret[..]).map_err(|_| RandomError)?;
    let secret_text = Zeroizing::new(B64URL.encode(&secret[..]));
    let id = hex::encode(id);
    let text = Zeroizing::new(format!("pal_{id}_{}", secret_text.as_str()));
    let record = TokenRecord {
        id,
        operator,
        role,
        secret_hash: Sha256::digest(secret_text.as_bytes()).into(),
        created_ms: now_ms,
        expires_ms,
        revoked_ms: None,
    };
    Ok((text, record))
}

/// Splits presented token text into id and secret, if it has the right shape.
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("pal_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if secret.is_empty() || secret.len() > 64 {
        return None;
    }
    Some((id, secret))
}

/// Whether `secret` matches the stored hash (constant time).
pub fn secret_matches(secret: &str, record: &TokenRecord) -> bool {
    let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    use subtle::ConstantTimeEq;
    bool::from(h.ct_eq(&record.secret_hash))
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
