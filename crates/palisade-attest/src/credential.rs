//! TPM2_MakeCredential done in software by the server (TPM 2.0 Library, Part 1,
//! §24 "Credential Protection"), for an RSA endorsement key.
//!
//! A seed is encrypted to the EK with RSA-OAEP (label `IDENTITY\0`); from it
//! come an AES-128-CFB key (KDFa "STORAGE", bound to the AK's name) that wraps
//! the secret, and an HMAC key (KDFa "INTEGRITY") over the wrapped secret and
//! the AK name. Only the TPM that holds the EK's private half can recover the
//! seed, and it releases the secret (TPM2_ActivateCredential) only to a loaded
//! key whose name is the AK name used here.

use aes::cipher::KeyIvInit;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::rand_core::{TryCryptoRng, TryRng};

use crate::AttestError;

/// SP 800-108 counter-mode KDF with HMAC-SHA-256, as TPM 2.0 defines KDFa.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + 32);
    let mut counter = 1u32;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// `ring`'s system random source, seen as a `rand_core` RNG for `rsa`.
struct SysRng(SystemRandom);

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
struct RngFailed;

impl TryRng for SysRng {
    type Error = RngFailed;
    fn try_next_u32(&mut self) -> Result<u32, RngFailed> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, RngFailed> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngFailed> {
        self.0.fill(dst).map_err(|_| RngFailed)
    }
}

impl TryCryptoRng for SysRng {}

/// A credential for TPM2_ActivateCredential: the contents of the
/// `TPM2B_ID_OBJECT` and of the `TPM2B_ENCRYPTED_SECRET`.
#[derive(Debug, Clone)]
pub struct Credential {
    /// `integrityHMAC (TPM2B) || encIdentity`.
    pub id_object: Vec<u8>,
    /// The seed, RSA-OAEP encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

/// Wraps `secret` (at most 32 bytes) for the TPM holding the RSA EK whose
/// PKCS#1 public key is `ek_rsa_pkcs1`, releasable only to the key `ak_name`.
pub fn make_credential(
    ek_rsa_pkcs1: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Credential, AttestError> {
    if secret.is_empty() || secret.len() > 32 {
        return Err(AttestError::Refused(
            "a credential secret is 1..=32 bytes".into(),
        ));
    }
    let ek = rsa::PublicKey::from_pkcs1_der(ek_rsa_pkcs1)
        .map_err(|e| AttestError::Refused(format!("the EK is not a usable RSA key: {e}")))?;
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    rng.fill(&mut seed)
        .map_err(|_| AttestError::Refused("the system random number generator failed".into()))?;
    let encrypted_secret = ek
        .encrypt(
            &mut SysRng(rng),
            rsa::Oaep::<sha2::Sha256>::new_with_label(b"IDENTITY\0".to_vec()),
            &seed,
        )
        .map_err(|e| AttestError::Refused(format!("encrypting to the EK failed: {e}")))?;

    let sym = kdfa(&seed, "STORAGE", ak_name, &[], 128);
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    enc_identity.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(secret);
    let key: [u8; 16] = sym
        .as_slice()
        .try_into()
        .map_err(|_| AttestError::Refused("KDFa produced a short key".into()))?;
    cfb_mode::Encryptor::<aes::Aes128>::new(&key.into(), &[0u8; 16].into())
        .encrypt(&mut enc_identity);

    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let k = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer = ctx.sign();

    let mut id_object = Vec::with_capacity(2 + 32 + enc_identity.len());
    id_object.extend_from_slice(&(outer.as_ref().len() as u16).to_be_bytes());
    id_object.extend_from_slice(outer.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(Credential {
        id_object,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_is_deterministic_and_label_separated() {
        let a = kdfa(b"seed", "STORAGE", b"name", &[], 128);
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdfa(b"seed", "STORAGE", b"name", &[], 128));
        assert_ne!(a, kdfa(b"seed", "INTEGRITY", b"name", &[], 128));
        let long = kdfa(b"seed", "INTEGRITY", &[], &[], 256 + 8);
        assert_eq!(long.len(), 33);
    }

    #[test]
    fn refuses_bad_inputs() {
        assert!(make_credential(b"not der", b"n", b"s").is_err());
        assert!(make_credential(b"", b"n", &[0; 33]).is_err());
        assert!(make_credential(b"", b"n", &[]).is_err());
    }
}
