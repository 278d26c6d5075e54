//! EDHOC (RFC 9528) on the server's side, through lakers (method 3,
//! STAT-STAT; cipher suite 2: P-256, AES-CCM-16-64-128, SHA-256), ending in an
//! OSCORE security context (RFC 9528 Appendix A.1) — never in stored keys.
//!
//! The device is the Initiator. Its credential is a CWT Claims Set (CCS) sent
//! by value, whose subject (`sub`, claim 2) names the device and whose key
//! must be the public key of the device's valid Palisade certificate: the
//! endpoint checks that against the inventory between [`Responder::message_3`]
//! and [`Claim::finish`], so EDHOC authenticates exactly the identity the
//! certificate does, without X.509 over the air. The server's own credential is
//! a CCS too ([`ServerIdentity`]), given to devices out of band (the data
//! directory's `edhoc/credential.cbor`) and sent by reference (its kid).
//!
//! Connection identifiers: the server picks C_R, four bytes from a counter
//! with a random start, so the device's OSCORE kid names its context; the
//! OSCORE Sender ID of the server is the device's C_I.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lakers::{
    BufferMessage1, BufferMessage3, CBORDecoder, ConnId, Credential, CredentialTransfer,
    EDHOCMethod, EdhocResponder, EdhocResponderProcessingM3, EdhocResponderWaitM3,
};
use lakers_crypto_rustcrypto::Crypto;
use palisade_oscore::{Params, SecurityContext, cbor};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

type Backend = Crypto<OsRng>;

/// The kid of the server's credential (sent as ID_CRED_R by reference).
pub const SERVER_KID: &[u8] = b"P";
/// EDHOC sessions waiting for their message_3 at once.
const MAX_PENDING: usize = 4096;
/// How long a session waits for message_3.
const PENDING_FOR: Duration = Duration::from_secs(30);

/// Why an EDHOC message was refused.
#[derive(Debug, thiserror::Error)]
pub enum EdhocError {
    /// lakers refused the message (malformed, unsupported suite or method, a
    /// MAC that does not verify).
    #[error("EDHOC {step}: {detail}")]
    Protocol {
        /// Which step.
        step: &'static str,
        /// lakers' error.
        detail: String,
    },
    /// A message_3 for no session this server has open.
    #[error("no EDHOC session with C_R {0:02x?}")]
    NoSession(Vec<u8>),
    /// The Initiator's credential is not a CCS by value with a subject and a
    /// P-256 key.
    #[error("the device's credential must be a CCS sent by value, with sub and a P-256 key")]
    Credential,
    /// Too many sessions are open.
    #[error("too many EDHOC sessions in progress")]
    Busy,
    /// The server's key is not a P-256 scalar.
    #[error("the server's EDHOC key is not a valid P-256 private key")]
    ServerKey,
    /// The OSCORE context could not be derived.
    #[error("deriving the OSCORE context: {0}")]
    Oscore(#[from] palisade_oscore::OscoreError),
}

fn protocol(step: &'static str) -> impl Fn(lakers::EDHOCError) -> EdhocError {
    move |e| EdhocError::Protocol {
        step,
        detail: format!("{e:?}"),
    }
}

/// The server's EDHOC key and credential.
pub struct ServerIdentity {
    key: Zeroizing<[u8; 32]>,
    ccs: Vec<u8>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("ccs", &self.ccs.len())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// A new random key.
    pub fn generate(subject: &str) -> Result<Self, EdhocError> {
        let secret = p256::SecretKey::random(&mut OsRng);
        let mut d = Zeroizing::new([0u8; 32]);
        d.copy_from_slice(&secret.to_bytes());
        Self::from_secret(&d, subject)
    }

    /// From a stored private scalar.
    pub fn from_secret(d: &[u8; 32], subject: &str) -> Result<Self, EdhocError> {
        let secret = p256::SecretKey::from_slice(d).map_err(|_| EdhocError::ServerKey)?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(EdhocError::ServerKey);
        };
        Ok(Self {
            key: Zeroizing::new(*d),
            ccs: ccs(subject, SERVER_KID, x, y),
        })
    }

    /// The private scalar (to store, 0600).
    pub fn secret(&self) -> &[u8; 32] {
        &self.key
    }

    /// The credential devices are given (CBOR, a CCS).
    pub fn credential(&self) -> &[u8] {
        &self.ccs
    }
}

/// A CCS `{2: subject, 8: {1: COSE_Key}}` with an EC2 P-256 key (RFC 9528
/// §3.5.2), deterministically encoded.
pub fn ccs(subject: &str, kid: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(120);
    cbor::map(&mut out, 2);
    cbor::uint(&mut out, 2);
    cbor::tstr(&mut out, subject);
    cbor::uint(&mut out, 8);
    cbor::map(&mut out, 1);
    cbor::uint(&mut out, 1);
    cbor::map(&mut out, 5);
    for (label, value) in [
        (1i64, None),
        (2, Some(kid)),
        (-1, None),
        (-2, Some(x)),
        (-3, Some(y)),
    ] {
        cbor::int(&mut out, label);
        match (label, value) {
            (1, _) => cbor::uint(&mut out, 2),  // kty: EC2
            (-1, _) => cbor::uint(&mut out, 1), // crv: P-256
            (_, Some(v)) => cbor::bstr(&mut out, v),
            _ => {}
        }
    }
    out
}

/// The subject and key of a CCS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcsKey {
    /// `sub`.
    pub subject: String,
    /// The public key, SEC1 uncompressed (0x04 ‖ x ‖ y), as a certificate's
    /// subject public key holds it.
    pub point: Vec<u8>,
}

/// Reads a CCS's subject and EC2 P-256 key; `None` if it has no subject or
/// another kind of key.
pub fn ccs_key(ccs: &[u8]) -> Option<CcsKey> {
    let mut d = CBORDecoder::new(ccs);
    let (mut subject, mut x, mut y) = (None, None, None);
    for _ in 0..d.map().ok()? {
        match d.u8().ok()? {
            2 => subject = Some(String::from_utf8(d.str().ok()?.to_vec()).ok()?),
            8 => {
                if d.map().ok()? != 1 || d.u8().ok()? != 1 {
                    return None;
                }
                for _ in 0..d.map().ok()? {
                    match d.i8().ok()? {
                        1 if d.u8().ok()? == 2 => {}
                        -1 if d.u8().ok()? == 1 => {}
                        2 => {
                            d.bytes().ok()?;
                        }
                        -2 => x = Some(d.bytes_sized(32).ok()?.to_vec()),
                        -3 => y = Some(d.bytes_sized(32).ok()?.to_vec()),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    if !d.finished() {
        return None;
    }
    let mut point = vec![4u8];
    point.extend(x?);
    point.extend(y?);
    Some(CcsKey {
        subject: subject?,
        point,
    })
}

struct Pending {
    state: EdhocResponderWaitM3<Backend>,
    c_i: ConnId,
    at: Instant,
}

/// The server's EDHOC sessions between message_1 and message_3.
pub struct Responder {
    key: Zeroizing<[u8; 32]>,
    cred: Credential,
    pending: HashMap<Vec<u8>, Pending>,
    next: u32,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// A verified-so-far message_3: who the device says it is. The endpoint
/// checks the claim against the inventory, then calls [`Claim::finish`].
pub struct Claim {
    /// The device's CCS subject and key.
    pub key: CcsKey,
    cred: Credential,
    state: EdhocResponderProcessingM3<Backend>,
    c_i: ConnId,
    c_r: Vec<u8>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder with the server's identity.
    pub fn new(id: &ServerIdentity) -> Result<Self, EdhocError> {
        let cred = Credential::parse_ccs(id.credential()).map_err(protocol("server credential"))?;
        Ok(Self {
            key: id.key.clone(),
            cred,
            pending: HashMap::new(),
            next: OsRng.next_u32(),
        })
    }

    /// Sessions waiting for message_3.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// message_1 (the CoAP payload after its leading CBOR `true`) → message_2.
    pub fn message_1(&mut self, m1: &[u8], now: Instant) -> Result<Vec<u8>, EdhocError> {
        self.expire(now);
        if self.pending.len() >= MAX_PENDING {
            return Err(EdhocError::Busy);
        }
        let buf = BufferMessage1::new_from_slice(m1).map_err(|_| EdhocError::Protocol {
            step: "message_1",
            detail: "too long".into(),
        })?;
        let responder = EdhocResponder::new(
            Crypto::new(OsRng),
            EDHOCMethod::StatStat,
            *self.key,
            self.cred,
        );
        let (m1_done, c_i, _ead_1) = responder
            .process_message_1(&buf)
            .map_err(protocol("message_1"))?;
        let c_r = loop {
            self.next = self.next.wrapping_add(1);
            let id = self.next.to_be_bytes();
            if !self.pending.contains_key(&id[..]) {
                break id;
            }
        };
        let conn = ConnId::from_slice(&c_r).ok_or(EdhocError::Busy)?;
        let (state, m2) = m1_done
            .prepare_message_2(CredentialTransfer::ByReference, Some(conn), &None)
            .map_err(protocol("message_2"))?;
        self.pending.insert(
            conn.as_slice().to_vec(),
            Pending {
                state,
                c_i,
                at: now,
            },
        );
        Ok(m2.as_slice().to_vec())
    }

    /// message_3 for the session `c_r` (the kid of the combined request): the
    /// device's claimed credential, to be checked before [`Claim::finish`].
    pub fn message_3(&mut self, c_r: &[u8], m3: &[u8]) -> Result<Claim, EdhocError> {
        let p = self
            .pending
            .remove(c_r)
            .ok_or_else(|| EdhocError::NoSession(c_r.to_vec()))?;
        let buf = BufferMessage3::new_from_slice(m3).map_err(|_| EdhocError::Protocol {
            step: "message_3",
            detail: "too long".into(),
        })?;
        let (state, id_cred_i, _ead_3) = p
            .state
            .parse_message_3(&buf)
            .map_err(protocol("message_3"))?;
        let cred = id_cred_i.get_ccs().ok_or(EdhocError::Credential)?;
        let key = ccs_key(cred.bytes.as_slice()).ok_or(EdhocError::Credential)?;
        Ok(Claim {
            key,
            cred,
            state,
            c_i: p.c_i,
            c_r: c_r.to_vec(),
        })
    }

    /// Forgets sessions whose message_3 never came.
    pub fn expire(&mut self, now: Instant) {
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.at) < PENDING_FOR);
    }
}

impl Claim {
    /// The OSCORE Recipient ID the device will use as kid (C_R).
    pub fn recipient_id(&self) -> &[u8] {
        &self.c_r
    }

    /// Verifies message_3's MAC with the device's credential and derives the
    /// OSCORE context (RFC 9528 Appendix A.1: Master Secret and Salt from the
    /// EDHOC exporter, the server's Sender ID is C_I, its Recipient ID C_R).
    pub fn finish(self) -> Result<SecurityContext, EdhocError> {
        let (m3, _prk_out) = self
            .state
            .verify_message_3(self.cred)
            .map_err(protocol("message_3 verification"))?;
        let mut done = m3
            .completed_without_message_4()
            .map_err(protocol("completion"))?;
        let secret = Zeroizing::new(done.edhoc_exporter(0, &[], 16));
        let salt = done.edhoc_exporter(1, &[], 8);
        Ok(SecurityContext::derive(&Params {
            master_secret: &secret[..16],
            master_salt: &salt[..8],
            sender_id: self.c_i.as_slice(),
            recipient_id: &self.c_r,
            id_context: None,
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ccs_round_trips_through_lakers_and_our_reader() {
        let id = ServerIdentity::generate("palisade").unwrap();
        let parsed = Credential::parse_ccs(id.credential()).unwrap();
        let key = ccs_key(id.credential()).unwrap();
        assert_eq!(key.subject, "palisade");
        assert_eq!(&key.point[1..33], &parsed.public_key().unwrap()[..]);
        let again = ServerIdentity::from_secret(id.secret(), "palisade").unwrap();
        assert_eq!(again.credential(), id.credential());
        assert!(ccs_key(&id.credential()[..20]).is_none());
        assert!(ccs_key(b"\xa0").is_none(), "no subject, no key");
    }
}
