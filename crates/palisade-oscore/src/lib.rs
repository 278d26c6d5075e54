//! OSCORE, Object Security for Constrained RESTful Environments (RFC 8613):
//! security contexts derived with HKDF-SHA256, CoAP messages protected with
//! AES-CCM-16-64-128 (COSE algorithm 10), the OSCORE option, the server's
//! replay window.
//!
//! Pure: no I/O and no clock. The AEAD and HKDF are RustCrypto's `ccm`/`aes`
//! and `hkdf`/`sha2`; CoAP messages are `coap-lite` packets. No maintained
//! pure-Rust OSCORE crate existed when this was written (ARCHITECTURE.md):
//! this one is checked against RFC 8613 Appendix C's vectors, byte for byte.
//!
//! A request is protected with the sender's next sequence number as its
//! Partial IV; a response reuses the request's nonce unless it carries a
//! Partial IV of its own (Observe notifications must). The server checks each
//! request's Partial IV against its replay window before it is answered.

pub mod cbor;
pub mod option;
pub mod replay;

use aes::Aes128;
use ccm::aead::{Aead, KeyInit, Payload};
use ccm::consts::{U8, U13};
use coap_lite::{CoapOption, MessageClass, Packet, RequestType, ResponseType};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

pub use option::OscoreOption;
pub use replay::{Replay, ReplayWindow};

/// AES-CCM-16-64-128's COSE algorithm number, the one OSCORE must support.
pub const AES_CCM_16_64_128: u64 = 10;
const KEY_LEN: usize = 16;
const NONCE_LEN: usize = 13;
/// The longest Sender or Recipient ID the nonce can carry.
pub const MAX_ID_LEN: usize = NONCE_LEN - 6;
/// The largest sequence number (five-byte Partial IV).
pub const MAX_SEQ: u64 = (1 << 40) - 1;
/// The OSCORE option's number.
pub const OSCORE_OPTION: u16 = 9;
const OBSERVE: u16 = 6;
/// The Echo option's number (RFC 9175).
pub const ECHO_OPTION: u16 = 252;
/// The longest Echo value (RFC 9175 §2.2).
pub const MAX_ECHO: usize = 40;

type AesCcm = ccm::Ccm<Aes128, U8, U13>;

/// What went wrong protecting or verifying a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OscoreError {
    /// An identifier longer than the nonce can carry.
    #[error("a Sender or Recipient ID of {0} bytes: at most {MAX_ID_LEN} with AES-CCM-16-64-128")]
    IdTooLong(usize),
    /// The OSCORE option's value is malformed.
    #[error("malformed OSCORE option: {0}")]
    BadOption(String),
    /// The message has no OSCORE option.
    #[error("not an OSCORE message: it has no OSCORE option")]
    NotOscore,
    /// A request without its Partial IV or kid.
    #[error("the OSCORE request has no {0}")]
    Missing(&'static str),
    /// The kid names another context.
    #[error("the request's kid is not this context's Recipient ID")]
    WrongContext,
    /// The AEAD refused: not protected with this context, or altered.
    #[error(
        "decryption failed: the message was not protected with this security context or was altered"
    )]
    Decrypt,
    /// A request's Partial IV was seen before, or is older than the window.
    #[error("replayed request: sequence number {seq} is {why:?}")]
    Replay {
        /// The sequence number.
        seq: u64,
        /// Seen, or too old to tell.
        why: Replay,
    },
    /// The sender used every sequence number.
    #[error("the Sender Sequence Number is exhausted: establish a new security context")]
    SequenceExhausted,
    /// The decrypted message is not a valid inner message.
    #[error("malformed inner message: {0}")]
    BadInner(&'static str),
    /// The request verified, but the replay window was lost (a restart):
    /// whether it is fresh is unknown. Answer with
    /// [`SecurityContext::echo_response`] (4.01 with an Echo value); the
    /// client repeats the request with it.
    #[error("the replay window was lost: the request must come back with an Echo value")]
    NeedsEcho(RequestBinding),
    /// An Echo value of the wrong length.
    #[error("an Echo value is 1 to {MAX_ECHO} bytes")]
    BadEcho,
}

/// What a security context is derived from (RFC 8613 §3.2).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// The Master Secret.
    pub master_secret: &'a [u8],
    /// The Master Salt (empty for none).
    pub master_salt: &'a [u8],
    /// This endpoint's Sender ID.
    pub sender_id: &'a [u8],
    /// The peer's Sender ID.
    pub recipient_id: &'a [u8],
    /// The ID Context, if any.
    pub id_context: Option<&'a [u8]>,
}

/// What a response must be bound to: the request's kid, Partial IV and nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    /// The requester's Sender ID.
    pub kid: Vec<u8>,
    /// The request's Partial IV.
    pub piv: Vec<u8>,
    /// The request's AEAD nonce.
    pub nonce: [u8; NONCE_LEN],
}

/// One endpoint's OSCORE security context with one peer.
#[derive(Clone)]
pub struct SecurityContext {
    sender_id: Vec<u8>,
    recipient_id: Vec<u8>,
    id_context: Option<Vec<u8>>,
    sender_key: Zeroizing<[u8; KEY_LEN]>,
    recipient_key: Zeroizing<[u8; KEY_LEN]>,
    common_iv: [u8; NONCE_LEN],
    sender_seq: u64,
    replay: ReplayWindow,
    /// The Echo value of the outstanding 4.01, while the window is lost.
    echo: Option<Vec<u8>>,
}

impl std::fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityContext")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("id_context", &self.id_context)
            .field("sender_seq", &self.sender_seq)
            .finish_non_exhaustive()
    }
}

fn derive(p: &Params<'_>, id: &[u8], kind: &str, out: &mut [u8]) {
    let mut info = vec![];
    cbor::array(&mut info, 5);
    cbor::bstr(&mut info, id);
    match p.id_context {
        Some(c) => cbor::bstr(&mut info, c),
        None => cbor::null(&mut info),
    }
    cbor::uint(&mut info, AES_CCM_16_64_128);
    cbor::tstr(&mut info, kind);
    cbor::uint(&mut info, out.len() as u64);
    let hk = Hkdf::<Sha256>::new(Some(p.master_salt), p.master_secret);
    // Only fails for outputs longer than 255 hash lengths; ours are 13 or 16.
    let _ = hk.expand(&info, out);
}

/// The external AAD's `Enc_structure` for a request (kid, Partial IV) and
/// no Class I options (RFC 8613 §5.4).
pub fn aad(request_kid: &[u8], request_piv: &[u8]) -> Vec<u8> {
    let mut external = vec![];
    cbor::array(&mut external, 5);
    cbor::uint(&mut external, 1);
    cbor::array(&mut external, 1);
    cbor::uint(&mut external, AES_CCM_16_64_128);
    cbor::bstr(&mut external, request_kid);
    cbor::bstr(&mut external, request_piv);
    cbor::bstr(&mut external, &[]);
    let mut enc = vec![];
    cbor::array(&mut enc, 3);
    cbor::tstr(&mut enc, "Encrypt0");
    cbor::bstr(&mut enc, &[]);
    cbor::bstr(&mut enc, &external);
    enc
}

/// A sequence number as a Partial IV: big-endian, no leading zeros, one
/// byte at least.
pub fn piv_of(seq: u64) -> Vec<u8> {
    let b = seq.to_be_bytes();
    let skip = b.iter().take(7).take_while(|&&x| x == 0).count();
    b[skip..].to_vec()
}

fn seq_of(piv: &[u8]) -> Result<u64, OscoreError> {
    if piv.is_empty() || piv.len() > option::MAX_PIV {
        return Err(OscoreError::BadOption(
            "a Partial IV is 1 to 5 bytes".into(),
        ));
    }
    Ok(piv.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

/// Options that stay outside the encryption (Class U): Uri-Host, Uri-Port,
/// OSCORE, Proxy-Uri, Proxy-Scheme. Observe is both inside and outside.
fn outer_only(n: u16) -> bool {
    matches!(n, 3 | 7 | OSCORE_OPTION | 35 | 39)
}

fn options_of(p: &Packet) -> Vec<(u16, Vec<u8>)> {
    let mut out = vec![];
    for (&n, values) in p.options() {
        for v in values {
            out.push((n, v.clone()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    out
}

fn put_nibble_ext(out: &mut Vec<u8>, v: usize) -> u8 {
    match v {
        0..=12 => v as u8,
        13..=268 => {
            out.push((v - 13) as u8);
            13
        }
        _ => {
            out.extend(((v - 269) as u16).to_be_bytes());
            14
        }
    }
}

/// The plaintext: the code, the inner options, the payload (RFC 8613 §5.3).
fn encode_inner(code: u8, options: &[(u16, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![code];
    let mut last = 0u16;
    for (n, v) in options {
        let mut ext = vec![];
        let d = put_nibble_ext(&mut ext, usize::from(n - last));
        let l = put_nibble_ext(&mut ext, v.len());
        out.push((d << 4) | l);
        out.extend(ext);
        out.extend_from_slice(v);
        last = *n;
    }
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

/// The largest option number or length an inner message may hold.
const MAX_OPTION_VALUE: usize = 1034;

type Inner = (u8, Vec<(u16, Vec<u8>)>, Vec<u8>);

fn decode_inner(pt: &[u8]) -> Result<Inner, OscoreError> {
    let (&code, mut rest) = pt.split_first().ok_or(OscoreError::BadInner("empty"))?;
    let mut options = vec![];
    let mut number = 0usize;
    let ext = |nibble: u8, rest: &mut &[u8]| -> Result<usize, OscoreError> {
        match nibble {
            0..=12 => Ok(usize::from(nibble)),
            13 => {
                let (&b, r) = rest
                    .split_first()
                    .ok_or(OscoreError::BadInner("truncated option"))?;
                *rest = r;
                Ok(usize::from(b) + 13)
            }
            14 => {
                let (b, r) = rest
                    .split_at_checked(2)
                    .ok_or(OscoreError::BadInner("truncated option"))?;
                *rest = r;
                Ok(usize::from(u16::from_be_bytes([b[0], b[1]])) + 269)
            }
            _ => Err(OscoreError::BadInner("reserved option nibble")),
        }
    };
    while let Some((&b, r)) = rest.split_first() {
        rest = r;
        if b == 0xff {
            if rest.is_empty() {
                return Err(OscoreError::BadInner("payload marker without a payload"));
            }
            return Ok((code, options, rest.to_vec()));
        }
        number += ext(b >> 4, &mut rest)?;
        let len = ext(b & 0x0f, &mut rest)?;
        if number > usize::from(u16::MAX) || len > MAX_OPTION_VALUE {
            return Err(OscoreError::BadInner(
                "option number or length out of range",
            ));
        }
        let (v, r) = rest
            .split_at_checked(len)
            .ok_or(OscoreError::BadInner("truncated option value"))?;
        rest = r;
        options.push((number as u16, v.to_vec()));
    }
    Ok((code, options, vec![]))
}

fn seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let c = AesCcm::new(&(*key).into());
    // CCM only fails for messages longer than its length field allows
    // (2^16 bytes with a 13-byte nonce); CoAP messages are far smaller.
    c.encrypt(&(*nonce).into(), Payload { msg: pt, aad })
        .unwrap_or_default()
}

fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
) -> Result<Vec<u8>, OscoreError> {
    let c = AesCcm::new(&(*key).into());
    c.decrypt(&(*nonce).into(), Payload { msg: ct, aad })
        .map_err(|_| OscoreError::Decrypt)
}

fn oscore_option(p: &Packet) -> Result<OscoreOption, OscoreError> {
    let values = p
        .get_option(CoapOption::from(OSCORE_OPTION))
        .ok_or(OscoreError::NotOscore)?;
    if values.len() != 1 {
        return Err(OscoreError::BadOption("more than one OSCORE option".into()));
    }
    OscoreOption::decode(values.front().map(Vec::as_slice).unwrap_or_default())
}

/// The kid (and kid context) of a protected request, to find its security
/// context before verifying it.
pub fn request_kid(p: &Packet) -> Result<(Vec<u8>, Option<Vec<u8>>), OscoreError> {
    let o = oscore_option(p)?;
    let kid = o.kid.ok_or(OscoreError::Missing("kid"))?;
    Ok((kid, o.kid_context))
}

/// A copy of `p` with `code`, the given options and payload.
fn rebuild(p: &Packet, code: u8, options: &[(u16, Vec<u8>)], payload: Vec<u8>) -> Packet {
    let mut out = Packet::new();
    out.header = p.header.clone();
    out.header.code = MessageClass::from(code);
    out.set_token(p.get_token().to_vec());
    for (n, v) in options {
        out.add_option(CoapOption::from(*n), v.clone());
    }
    out.payload = payload;
    out
}

impl SecurityContext {
    /// Derives a context (RFC 8613 §3.2) with sequence number 0 and an empty
    /// replay window.
    pub fn derive(p: &Params<'_>) -> Result<Self, OscoreError> {
        for id in [p.sender_id, p.recipient_id] {
            if id.len() > MAX_ID_LEN {
                return Err(OscoreError::IdTooLong(id.len()));
            }
        }
        let mut sender_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut recipient_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut common_iv = [0u8; NONCE_LEN];
        derive(p, p.sender_id, "Key", &mut *sender_key);
        derive(p, p.recipient_id, "Key", &mut *recipient_key);
        derive(p, &[], "IV", &mut common_iv);
        Ok(Self {
            sender_id: p.sender_id.to_vec(),
            recipient_id: p.recipient_id.to_vec(),
            id_context: p.id_context.map(<[u8]>::to_vec),
            sender_key,
            recipient_key,
            common_iv,
            sender_seq: 0,
            replay: ReplayWindow::default(),
            echo: None,
        })
    }

    /// The Sender Key.
    pub fn sender_key(&self) -> &[u8; KEY_LEN] {
        &self.sender_key
    }

    /// The Recipient Key.
    pub fn recipient_key(&self) -> &[u8; KEY_LEN] {
        &self.recipient_key
    }

    /// The Common IV.
    pub fn common_iv(&self) -> &[u8; NONCE_LEN] {
        &self.common_iv
    }

    /// This endpoint's Sender ID.
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// The peer's Sender ID.
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The next sequence number this endpoint sends.
    pub fn sender_seq(&self) -> u64 {
        self.sender_seq
    }

    /// Sets the next sequence number (restoring a saved context: save ahead
    /// of use, RFC 8613 Appendix B.1.1).
    pub fn set_sender_seq(&mut self, seq: u64) -> Result<(), OscoreError> {
        if seq > MAX_SEQ + 1 {
            return Err(OscoreError::SequenceExhausted);
        }
        self.sender_seq = seq;
        Ok(())
    }

    /// The replay window over the peer's requests.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// A server restored without its replay window (RFC 8613 Appendix
    /// B.1.2): requests verify but are answered with an Echo challenge until
    /// one comes back with it.
    pub fn forget_replay_window(&mut self) {
        self.replay = ReplayWindow::lost();
        self.echo = None;
    }

    /// The protected 4.01 Unauthorized answer to `request` (the outer
    /// message that failed with [`OscoreError::NeedsEcho`]) carrying `echo`
    /// (1 to 40 unpredictable bytes from the caller), under this endpoint's
    /// own Partial IV: the request may be a replay, so its nonce is not
    /// reused. The next request that carries `echo` restarts the window.
    pub fn echo_response(
        &mut self,
        request: &Packet,
        binding: &RequestBinding,
        echo: &[u8],
    ) -> Result<Packet, OscoreError> {
        if echo.is_empty() || echo.len() > MAX_ECHO {
            return Err(OscoreError::BadEcho);
        }
        let mut resp = Packet::new();
        resp.header = request.header.clone();
        if request.header.get_type() == coap_lite::MessageType::Confirmable {
            resp.header
                .set_type(coap_lite::MessageType::Acknowledgement);
        }
        resp.header.code = MessageClass::Response(ResponseType::Unauthorized);
        resp.set_token(request.get_token().to_vec());
        resp.add_option(CoapOption::from(ECHO_OPTION), echo.to_vec());
        let out = self.protect_response(&resp, binding, true)?;
        self.echo = Some(echo.to_vec());
        Ok(out)
    }

    /// The AEAD nonce for a Partial IV sent by the endpoint whose Sender ID
    /// is `id` (RFC 8613 §5.2).
    pub fn nonce(&self, id: &[u8], piv: &[u8]) -> Result<[u8; NONCE_LEN], OscoreError> {
        if id.len() > MAX_ID_LEN {
            return Err(OscoreError::IdTooLong(id.len()));
        }
        if piv.len() > option::MAX_PIV {
            return Err(OscoreError::BadOption(
                "a Partial IV is at most 5 bytes".into(),
            ));
        }
        let mut n = [0u8; NONCE_LEN];
        n[0] = id.len() as u8;
        n[1 + MAX_ID_LEN - id.len()..1 + MAX_ID_LEN].copy_from_slice(id);
        n[NONCE_LEN - piv.len()..].copy_from_slice(piv);
        for (a, b) in n.iter_mut().zip(self.common_iv) {
            *a ^= b;
        }
        Ok(n)
    }

    fn next_piv(&mut self) -> Result<Vec<u8>, OscoreError> {
        if self.sender_seq > MAX_SEQ {
            return Err(OscoreError::SequenceExhausted);
        }
        let piv = piv_of(self.sender_seq);
        self.sender_seq += 1;
        Ok(piv)
    }

    /// Protects a request (RFC 8613 §8.1): its code, inner options and
    /// payload are encrypted under the next sequence number; the outer
    /// message is a POST (a FETCH with Observe) carrying the OSCORE option
    /// (with the kid context when `with_kid_context`).
    pub fn protect_request(
        &mut self,
        req: &Packet,
        with_kid_context: bool,
    ) -> Result<(Packet, RequestBinding), OscoreError> {
        let piv = self.next_piv()?;
        let nonce = self.nonce(&self.sender_id, &piv)?;
        let option = OscoreOption {
            piv: Some(piv.clone()),
            kid: Some(self.sender_id.clone()),
            kid_context: if with_kid_context {
                self.id_context.clone()
            } else {
                None
            },
        };
        let out = self.seal_message(
            req,
            &nonce,
            (&self.sender_id, &piv),
            &option,
            (
                MessageClass::Request(RequestType::Fetch),
                MessageClass::Request(RequestType::Post),
            ),
        );
        Ok((
            out,
            RequestBinding {
                kid: self.sender_id.clone(),
                piv,
                nonce,
            },
        ))
    }

    /// Verifies a protected request from the peer (RFC 8613 §8.2): its kid
    /// must be this context's Recipient ID, its Partial IV new to the replay
    /// window; then the inner request is returned (outer Class U options
    /// and the inner ones) with what its response must be bound to. The
    /// window takes the sequence number only once the request verifies.
    pub fn unprotect_request(
        &mut self,
        p: &Packet,
    ) -> Result<(Packet, RequestBinding), OscoreError> {
        let o = oscore_option(p)?;
        let piv = o.piv.ok_or(OscoreError::Missing("Partial IV"))?;
        let kid = o.kid.ok_or(OscoreError::Missing("kid"))?;
        if kid != self.recipient_id {
            return Err(OscoreError::WrongContext);
        }
        let seq = seq_of(&piv)?;
        if !self.replay.is_lost() {
            self.replay
                .check(seq)
                .map_err(|why| OscoreError::Replay { seq, why })?;
        }
        let nonce = self.nonce(&kid, &piv)?;
        let pt = open(&self.recipient_key, &nonce, &aad(&kid, &piv), &p.payload)?;
        let (code, inner, payload) = decode_inner(&pt)?;
        if self.replay.is_lost() {
            let echoed = inner
                .iter()
                .find(|(n, _)| *n == ECHO_OPTION)
                .map(|(_, v)| v);
            match (&self.echo, echoed) {
                (Some(expected), Some(got)) if expected == got => {
                    self.replay.restart_at(seq);
                    self.echo = None;
                }
                _ => return Err(OscoreError::NeedsEcho(RequestBinding { kid, piv, nonce })),
            }
        } else {
            self.replay.accept(seq);
        }
        let out = Self::merge(p, code, inner, payload);
        Ok((out, RequestBinding { kid, piv, nonce }))
    }

    /// Protects a response to the request `req` (RFC 8613 §8.3): with
    /// `own_piv` under this endpoint's next sequence number (required for
    /// Observe notifications and after a context re-derivation), otherwise
    /// under the request's nonce.
    pub fn protect_response(
        &mut self,
        resp: &Packet,
        req: &RequestBinding,
        own_piv: bool,
    ) -> Result<Packet, OscoreError> {
        let (nonce, option) = if own_piv {
            let piv = self.next_piv()?;
            let nonce = self.nonce(&self.sender_id, &piv)?;
            (
                nonce,
                OscoreOption {
                    piv: Some(piv),
                    ..OscoreOption::default()
                },
            )
        } else {
            (req.nonce, OscoreOption::default())
        };
        Ok(self.seal_message(
            resp,
            &nonce,
            (&req.kid, &req.piv),
            &option,
            (
                MessageClass::Response(ResponseType::Content),
                MessageClass::Response(ResponseType::Changed),
            ),
        ))
    }

    /// The outer message of `msg`: its code, inner options and payload
    /// encrypted under `nonce` with the AAD of the request (`kid`, Partial
    /// IV); the Class U options (and Observe) and `option` outside; the outer
    /// code the first of `codes` with Observe, else the second.
    fn seal_message(
        &self,
        msg: &Packet,
        nonce: &[u8; NONCE_LEN],
        request: (&[u8], &[u8]),
        option: &OscoreOption,
        codes: (MessageClass, MessageClass),
    ) -> Packet {
        let all = options_of(msg);
        let inner: Vec<_> = all
            .iter()
            .filter(|(n, _)| !outer_only(*n))
            .cloned()
            .collect();
        let mut outer: Vec<_> = all
            .iter()
            .filter(|(n, _)| (outer_only(*n) || *n == OBSERVE) && *n != OSCORE_OPTION)
            .cloned()
            .collect();
        let observe = all.iter().any(|(n, _)| *n == OBSERVE);
        let pt = encode_inner(u8::from(msg.header.code), &inner, &msg.payload);
        let ct = seal(&self.sender_key, nonce, &aad(request.0, request.1), &pt);
        outer.push((OSCORE_OPTION, option.encode()));
        outer.sort_by_key(|(n, _)| *n);
        let code = if observe { codes.0 } else { codes.1 };
        rebuild(msg, u8::from(code), &outer, ct)
    }

    /// Verifies a protected response to the request `req` (RFC 8613 §8.4).
    pub fn unprotect_response(
        &mut self,
        p: &Packet,
        req: &RequestBinding,
    ) -> Result<Packet, OscoreError> {
        let o = oscore_option(p)?;
        let nonce = match &o.piv {
            Some(piv) => self.nonce(&self.recipient_id, piv)?,
            None => req.nonce,
        };
        let pt = open(
            &self.recipient_key,
            &nonce,
            &aad(&req.kid, &req.piv),
            &p.payload,
        )?;
        let (code, inner, payload) = decode_inner(&pt)?;
        Ok(Self::merge(p, code, inner, payload))
    }

    /// The inner message: the outer Class U options (not OSCORE, not an outer
    /// Observe when an inner one is there) and the inner options.
    fn merge(p: &Packet, code: u8, inner: Vec<(u16, Vec<u8>)>, payload: Vec<u8>) -> Packet {
        let inner_observe = inner.iter().any(|(n, _)| *n == OBSERVE);
        let mut all: Vec<_> = options_of(p)
            .into_iter()
            .filter(|(n, _)| outer_only(*n) && *n != OSCORE_OPTION)
            .chain(
                options_of(p)
                    .into_iter()
                    .filter(|(n, _)| *n == OBSERVE && !inner_observe),
            )
            .chain(inner)
            .collect();
        all.sort_by_key(|(n, _)| *n);
        rebuild(p, code, &all, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_ivs_are_minimal_big_endian() {
        assert_eq!(piv_of(0), [0x00]);
        assert_eq!(piv_of(20), [0x14]);
        assert_eq!(piv_of(0x0100), [0x01, 0x00]);
        assert_eq!(piv_of(MAX_SEQ), [0xff; 5]);
        assert_eq!(seq_of(&[0x01, 0x00]), Ok(256));
        assert!(seq_of(&[]).is_err() && seq_of(&[0; 6]).is_err());
    }

    #[test]
    fn inner_messages_round_trip_and_malformed_ones_are_refused() {
        let opts = vec![(11, b"tv1".to_vec()), (12, vec![]), (300, vec![7; 20])];
        let pt = encode_inner(0x01, &opts, b"hi");
        assert_eq!(decode_inner(&pt).unwrap(), (0x01, opts, b"hi".to_vec()));
        for bad in [
            &[][..],
            &[0x01, 0xff],
            &[0x01, 0xf0],
            &[0x01, 0x0f],
            &[0x01, 0xd3, 0x00],
        ] {
            assert!(decode_inner(bad).is_err(), "{bad:02x?}");
        }
    }
}
