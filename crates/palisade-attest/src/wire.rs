//! The few TPM 2.0 structures the server reads (TPM 2.0 Library, Part 2),
//! parsed from untrusted bytes: bounded, no panics, whole input consumed.
//!
//! Only what attestation needs: `TPMT_PUBLIC` of ECC keys (the attestation key
//! and the identity key), `TPMS_ATTEST` for Certify and Quote, and
//! `TPMT_SIGNATURE` for ECDSA.

use ring::digest;

use crate::AttestError;

/// `TPM_GENERATED_VALUE`: every TPM-made attestation starts with it.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY`.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ALG_RSA`.
pub const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_NULL`.
pub const ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_ECDSA`.
pub const ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECDAA` (its scheme carries a count too).
pub const ALG_ECDAA: u16 = 0x001a;
/// `TPM_ALG_ECC`.
pub const ALG_ECC: u16 = 0x0023;
/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;

/// `TPMA_OBJECT` bits.
pub mod attrs {
    /// The object cannot be duplicated to another TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The object cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the sensitive part itself.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// Signs only TPM-generated data (attestation keys).
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;
}

/// Longest structure accepted (a quote with an ECC signature is < 300 bytes).
pub const MAX_STRUCT: usize = 4096;

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Result<Self, AttestError> {
        if b.len() > MAX_STRUCT {
            return Err(AttestError::Malformed {
                what,
                reason: format!("{} bytes is longer than {MAX_STRUCT}", b.len()),
            });
        }
        Ok(Self { b, what })
    }
    fn short(&self) -> AttestError {
        AttestError::Malformed {
            what: self.what,
            reason: "truncated".into(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], AttestError> {
        if self.b.len() < n {
            return Err(self.short());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, AttestError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, AttestError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AttestError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, AttestError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], AttestError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
    fn end(&self) -> Result<(), AttestError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(AttestError::Malformed {
                what: self.what,
                reason: format!("{} trailing bytes", self.b.len()),
            })
        }
    }
    fn bad(&self, reason: impl Into<String>) -> AttestError {
        AttestError::Malformed {
            what: self.what,
            reason: reason.into(),
        }
    }
}

/// A TPM ECC P-256 key's public area (`TPMT_PUBLIC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    /// The exact bytes parsed: the name is computed over them.
    pub bytes: Vec<u8>,
    /// `nameAlg`.
    pub name_alg: u16,
    /// `objectAttributes`.
    pub attributes: u32,
    /// The signing scheme (`TPM_ALG_ECDSA`, or NULL for "any").
    pub scheme: u16,
    /// The scheme's hash.
    pub scheme_hash: u16,
    /// Uncompressed point `04 || x || y`.
    pub point: Vec<u8>,
}

impl EccPublic {
    /// Parses a marshalled `TPMT_PUBLIC` of an ECC P-256 key.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC")?;
        let ty = r.u16()?;
        if ty != ALG_ECC {
            return Err(r.bad(format!(
                "key type 0x{ty:04x} is not ECC (only P-256 keys are attested)"
            )));
        }
        let name_alg = r.u16()?;
        if name_alg != ALG_SHA256 {
            return Err(r.bad(format!("name algorithm 0x{name_alg:04x} is not SHA-256")));
        }
        let attributes = r.u32()?;
        let _policy = r.tpm2b()?;
        // TPMT_SYM_DEF_OBJECT
        if r.u16()? != ALG_NULL {
            let _bits = r.u16()?;
            let _mode = r.u16()?;
        }
        // TPMT_ECC_SCHEME
        let scheme = r.u16()?;
        let mut scheme_hash = ALG_NULL;
        if scheme != ALG_NULL {
            scheme_hash = r.u16()?;
            if scheme == ALG_ECDAA {
                let _count = r.u16()?;
            }
        }
        let curve = r.u16()?;
        if curve != ECC_NIST_P256 {
            return Err(r.bad(format!("curve 0x{curve:04x} is not NIST P-256")));
        }
        // TPMT_KDF_SCHEME
        if r.u16()? != ALG_NULL {
            let _hash = r.u16()?;
        }
        let x = r.tpm2b()?;
        let y = r.tpm2b()?;
        r.end()?;
        if x.len() > 32 || y.len() > 32 {
            return Err(r.bad("coordinate longer than 32 bytes"));
        }
        let mut point = vec![0x04];
        for c in [x, y] {
            point.extend(std::iter::repeat_n(0, 32 - c.len()));
            point.extend_from_slice(c);
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            name_alg,
            attributes,
            scheme,
            scheme_hash,
            point,
        })
    }

    /// The TPM name: `nameAlg || SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut n = ALG_SHA256.to_be_bytes().to_vec();
        n.extend_from_slice(digest::digest(&digest::SHA256, &self.bytes).as_ref());
        n
    }

    /// Whether every bit of `mask` is set.
    pub fn has(&self, mask: u32) -> bool {
        self.attributes & mask == mask
    }

    /// The DER SubjectPublicKeyInfo of the key (to compare with a CSR).
    pub fn spki_der(&self) -> Vec<u8> {
        palisade_spki(&self.point)
    }
}

fn palisade_spki(point: &[u8]) -> Vec<u8> {
    const P256: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut v = P256.to_vec();
    v.extend_from_slice(point);
    v
}

/// A PCR selection of one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash algorithm.
    pub hash: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// What an attestation says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// TPM2_Certify: the certified object's names.
    Certify {
        /// The object's name.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
    /// TPM2_Quote: selected PCRs and the digest of their values.
    Quote {
        /// The selection, per bank.
        selection: Vec<PcrSelection>,
        /// Hash of the concatenated selected PCR values.
        pcr_digest: Vec<u8>,
    },
}

/// `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// The exact bytes parsed (what the signature covers).
    pub bytes: Vec<u8>,
    /// The signer's qualified name.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (the server's nonce).
    pub extra_data: Vec<u8>,
    /// The TPM's clock (ms).
    pub clock: u64,
    /// TPM resets (reboots) since manufacture.
    pub reset_count: u32,
    /// TPM restarts since the last reset.
    pub restart_count: u32,
    /// The body.
    pub attested: Attested,
}

impl Attest {
    /// Parses a marshalled `TPMS_ATTEST` of type Certify or Quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST")?;
        if r.u32()? != TPM_GENERATED {
            return Err(r.bad("magic is not TPM_GENERATED_VALUE: not made by a TPM"));
        }
        let ty = r.u16()?;
        let qualified_signer = r.tpm2b()?.to_vec();
        let extra_data = r.tpm2b()?.to_vec();
        let clock = r.u64()?;
        let reset_count = r.u32()?;
        let restart_count = r.u32()?;
        let _safe = r.u8()?;
        let _firmware = r.u64()?;
        let attested = match ty {
            ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b()?.to_vec(),
                qualified_name: r.tpm2b()?.to_vec(),
            },
            ST_ATTEST_QUOTE => {
                let count = r.u32()?;
                if count > 16 {
                    return Err(r.bad(format!("{count} PCR banks")));
                }
                let mut selection = Vec::new();
                for _ in 0..count {
                    let hash = r.u16()?;
                    let size = usize::from(r.u8()?);
                    if size > 8 {
                        return Err(r.bad(format!("PCR bitmap of {size} bytes")));
                    }
                    let map = r.take(size)?;
                    let mut pcrs = Vec::new();
                    for (i, byte) in map.iter().enumerate() {
                        for bit in 0..8 {
                            if byte & (1 << bit) != 0 {
                                pcrs.push((i * 8 + bit) as u8);
                            }
                        }
                    }
                    selection.push(PcrSelection { hash, pcrs });
                }
                Attested::Quote {
                    selection,
                    pcr_digest: r.tpm2b()?.to_vec(),
                }
            }
            other => {
                return Err(r.bad(format!(
                    "attestation type 0x{other:04x} is neither Certify nor Quote"
                )));
            }
        };
        r.end()?;
        Ok(Self {
            bytes: bytes.to_vec(),
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            attested,
        })
    }
}

/// An ECDSA `TPMT_SIGNATURE`, as fixed-width `r || s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaSignature {
    /// The digest algorithm signed with.
    pub hash: u16,
    /// `r || s`, 32 bytes each.
    pub fixed: Vec<u8>,
}

impl EcdsaSignature {
    /// Parses a marshalled `TPMT_SIGNATURE` (ECDSA only).
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE")?;
        let alg = r.u16()?;
        if alg != ALG_ECDSA {
            return Err(r.bad(format!("signature algorithm 0x{alg:04x} is not ECDSA")));
        }
        let hash = r.u16()?;
        let sr = r.tpm2b()?;
        let ss = r.tpm2b()?;
        r.end()?;
        if sr.len() > 32 || ss.len() > 32 {
            return Err(r.bad("signature component longer than 32 bytes"));
        }
        let mut fixed = Vec::with_capacity(64);
        for c in [sr, ss] {
            fixed.extend(std::iter::repeat_n(0, 32 - c.len()));
            fixed.extend_from_slice(c);
        }
        Ok(Self { hash, fixed })
    }

    /// Checks the signature over `msg` with `key` (ECDSA P-256, SHA-256).
    pub fn verify(&self, key: &EccPublic, msg: &[u8]) -> Result<(), AttestError> {
        if self.hash != ALG_SHA256 {
            return Err(AttestError::Refused(format!(
                "signature digest 0x{:04x} is not SHA-256",
                self.hash
            )));
        }
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &key.point,
        )
        .verify(msg, &self.fixed)
        .map_err(|_| AttestError::Refused("the attestation key's signature does not verify".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecc_public(attributes: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ALG_ECC.to_be_bytes());
        v.extend_from_slice(&ALG_SHA256.to_be_bytes());
        v.extend_from_slice(&attributes.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes()); // empty policy
        v.extend_from_slice(&ALG_NULL.to_be_bytes()); // no symmetric
        v.extend_from_slice(&ALG_ECDSA.to_be_bytes());
        v.extend_from_slice(&ALG_SHA256.to_be_bytes());
        v.extend_from_slice(&ECC_NIST_P256.to_be_bytes());
        v.extend_from_slice(&ALG_NULL.to_be_bytes()); // kdf
        for c in [[1u8; 32], [2u8; 32]] {
            v.extend_from_slice(&32u16.to_be_bytes());
            v.extend_from_slice(&c);
        }
        v
    }

    #[test]
    fn parses_an_ecc_public_area_and_names_it() {
        let bytes = ecc_public(attrs::FIXED_TPM | attrs::FIXED_PARENT | attrs::SIGN);
        let p = EccPublic::parse(&bytes).expect("parse");
        assert!(p.has(attrs::FIXED_TPM | attrs::FIXED_PARENT));
        assert!(!p.has(attrs::RESTRICTED));
        assert_eq!(p.point.len(), 65);
        assert_eq!(&p.point[1..33], &[1u8; 32]);
        let name = p.name();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(name.len(), 34);
        assert_eq!(p.spki_der().len(), 91);
    }

    #[test]
    fn refuses_truncated_trailing_and_foreign_structures() {
        let bytes = ecc_public(0);
        for n in 0..bytes.len() {
            assert!(EccPublic::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(EccPublic::parse(&long).is_err());
        let mut rsa = bytes;
        rsa[1] = 0x01;
        assert!(
            EccPublic::parse(&rsa)
                .unwrap_err()
                .to_string()
                .contains("not ECC")
        );
        assert!(
            Attest::parse(&[0; 40])
                .unwrap_err()
                .to_string()
                .contains("TPM_GENERATED")
        );
        assert!(EcdsaSignature::parse(&[0, 0x14, 0, 0x0b]).is_err());
        assert!(EccPublic::parse(&vec![0; MAX_STRUCT + 1]).is_err());
    }

    #[test]
    fn parses_a_quote_selection() {
        let mut v = Vec::new();
        v.extend_from_slice(&TPM_GENERATED.to_be_bytes());
        v.extend_from_slice(&ST_ATTEST_QUOTE.to_be_bytes());
        v.extend_from_slice(&[0, 0]); // signer
        v.extend_from_slice(&[0, 2, 0xaa, 0xbb]); // extra data
        v.extend_from_slice(&[0; 17]); // clock info
        v.extend_from_slice(&[0; 8]); // firmware version
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&ALG_SHA256.to_be_bytes());
        v.extend_from_slice(&[3, 0x00, 0x02, 0x00]); // PCR 9
        v.extend_from_slice(&[0, 1, 0xcc]);
        let a = Attest::parse(&v).expect("parse");
        assert_eq!(a.extra_data, vec![0xaa, 0xbb]);
        assert_eq!(
            a.attested,
            Attested::Quote {
                selection: vec![PcrSelection {
                    hash: ALG_SHA256,
                    pcrs: vec![9]
                }],
                pcr_digest: vec![0xcc]
            }
        );
    }
}
