//! Keys that live on a PKCS#11 token (an HSM, a secure element, SoftHSM2 in
//! tests), addressed by RFC 7512 `pkcs11:` URIs.
//!
//! Keys are generated on the token with `CKA_SENSITIVE = true` and
//! `CKA_EXTRACTABLE = false`; an existing key that is extractable is refused.
//! Signing asks the token: SHA-256 is computed here and the token signs the
//! digest with `CKM_ECDSA`, so no key bytes ever enter this process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use palisade_core::{KeyAlgorithm, KeyProtection, Signer, SignerError, ecdsa_fixed_to_der};
use zeroize::Zeroizing;

/// DER of the P-256 curve OID (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Longest `pkcs11:` URI accepted.
pub const MAX_URI_LEN: usize = 4096;

/// A `pkcs11:` URI was malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UriError {
    /// Not a `pkcs11:` URI at all.
    #[error("not a pkcs11: URI (RFC 7512); expected pkcs11:token=…;object=…?module-path=…")]
    Scheme,
    /// Longer than [`MAX_URI_LEN`].
    #[error("pkcs11: URI is longer than {MAX_URI_LEN} bytes")]
    TooLong,
    /// An attribute lacks `=`.
    #[error("pkcs11: URI attribute {0:?} has no '='")]
    NoValue(String),
    /// A `%` escape is broken.
    #[error("pkcs11: URI has a bad percent-escape in {0:?}")]
    Escape(String),
    /// The same attribute twice.
    #[error("pkcs11: URI gives {0:?} twice")]
    Duplicate(String),
    /// A value is not what the attribute takes.
    #[error("pkcs11: URI attribute {attr}: {reason}")]
    Value {
        /// The attribute.
        attr: String,
        /// Why.
        reason: String,
    },
}

/// A parsed RFC 7512 URI (the attributes Palisade uses; others are ignored).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// Token label.
    pub token: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
    /// Slot id.
    pub slot_id: Option<u64>,
    /// Object label.
    pub object: Option<String>,
    /// Object id (`CKA_ID`).
    pub id: Option<Vec<u8>>,
    /// The PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// A file holding the user PIN.
    pub pin_source: Option<PathBuf>,
    pin_value: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `/`.
fn escape(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len());
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Shows the URI without its PIN (`pin-value=(hidden)`); values are
/// percent-encoded, so the text parses back to the same attributes.
impl std::fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut path = Vec::new();
        let add = |list: &mut Vec<String>, k: &str, v: Option<&[u8]>| {
            if let Some(v) = v {
                list.push(format!("{k}={}", escape(v)));
            }
        };
        add(&mut path, "token", self.token.as_deref().map(str::as_bytes));
        add(
            &mut path,
            "serial",
            self.serial.as_deref().map(str::as_bytes),
        );
        let slot = self.slot_id.map(|s| s.to_string());
        add(&mut path, "slot-id", slot.as_deref().map(str::as_bytes));
        add(
            &mut path,
            "object",
            self.object.as_deref().map(str::as_bytes),
        );
        add(&mut path, "id", self.id.as_deref());
        write!(f, "pkcs11:{}", path.join(";"))?;
        let mut q = Vec::new();
        let module = self
            .module_path
            .as_ref()
            .map(|m| m.as_os_str().as_encoded_bytes());
        add(&mut q, "module-path", module);
        if let Some(p) = &self.pin_source {
            // Always with the `file:` scheme, so a path that itself starts with
            // "file:" survives a round trip.
            q.push(format!(
                "pin-source=file:{}",
                escape(p.as_os_str().as_encoded_bytes())
            ));
        }
        if self.pin_value.is_some() {
            q.push("pin-value=(hidden)".to_string());
        }
        if !q.is_empty() {
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

fn unescape(s: &str) -> Result<Vec<u8>, UriError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::Escape(s.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn text(attr: &str, v: Vec<u8>) -> Result<String, UriError> {
    String::from_utf8(v).map_err(|_| UriError::Value {
        attr: attr.to_string(),
        reason: "not UTF-8".into(),
    })
}

impl Pkcs11Uri {
    /// Parses `pkcs11:path-attrs[?query-attrs]`.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if s.len() > MAX_URI_LEN {
            return Err(UriError::TooLong);
        }
        let rest = s.strip_prefix("pkcs11:").ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        let mut seen = std::collections::HashSet::new();
        let attrs = path
            .split(';')
            .chain(query.split('&'))
            .filter(|a| !a.is_empty());
        for a in attrs {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| UriError::NoValue(a.to_string()))?;
            let v = unescape(v)?;
            const KNOWN: [&str; 8] = [
                "token",
                "serial",
                "slot-id",
                "object",
                "id",
                "module-path",
                "pin-source",
                "pin-value",
            ];
            if KNOWN.contains(&k) && !seen.insert(k) {
                return Err(UriError::Duplicate(k.to_string()));
            }
            match k {
                "token" => uri.token = Some(text(k, v)?),
                "serial" => uri.serial = Some(text(k, v)?),
                "slot-id" => {
                    uri.slot_id = Some(text(k, v)?.parse().map_err(|_| UriError::Value {
                        attr: k.into(),
                        reason: "not a number".into(),
                    })?);
                }
                "object" => uri.object = Some(text(k, v)?),
                "id" => uri.id = Some(v),
                "module-path" => uri.module_path = Some(text(k, v)?.into()),
                "pin-source" => {
                    let p = text(k, v)?;
                    uri.pin_source = Some(p.strip_prefix("file:").unwrap_or(&p).into());
                }
                "pin-value" => uri.pin_value = Some(Zeroizing::new(text(k, v)?)),
                // Other RFC 7512 attributes (manufacturer, model, type, …) do
                // not narrow anything Palisade looks up.
                _ => {}
            }
        }
        Ok(uri)
    }

    /// The same token, with a different object label.
    pub fn with_object(&self, object: &str) -> Self {
        let mut u = self.clone();
        u.object = Some(object.to_string());
        u
    }

    fn pin(&self) -> Result<Zeroizing<String>, Pkcs11Error> {
        if let Some(p) = &self.pin_value {
            return Ok(p.clone());
        }
        if let Some(path) = &self.pin_source {
            let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Pkcs11Error::Setup(format!("reading the PIN from {}: {e}", path.display()))
            })?);
            return Ok(Zeroizing::new(
                raw.trim_end_matches(['\n', '\r']).to_string(),
            ));
        }
        Err(Pkcs11Error::Setup(format!(
            "{self} gives no user PIN: add pin-source=FILE (or pin-value=…) to the URI"
        )))
    }
}

/// A token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The URI or the module cannot be used.
    #[error("PKCS#11 setup: {0}")]
    Setup(String),
    /// The module returned an error.
    #[error("PKCS#11 {op} on {token}: {source}")]
    Token {
        /// What was being done.
        op: &'static str,
        /// Which token.
        token: String,
        /// The module's error.
        source: CkError,
    },
    /// A key on the token is not fit for Palisade.
    #[error("PKCS#11 key {label} on {token}: {reason}")]
    Key {
        /// Key label.
        label: String,
        /// Which token.
        token: String,
        /// Why.
        reason: String,
    },
}

/// One loaded and initialised module per path: C_Initialize may be called only
/// once per process.
fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        Pkcs11Error::Setup(format!("loading PKCS#11 module {}: {e}", path.display()))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Pkcs11Error::Setup(format!(
                "initialising PKCS#11 module {}: {e}",
                path.display()
            )));
        }
    }
    map.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A logged-in session on one token.
#[derive(Clone)]
pub struct Pkcs11Token {
    session: Arc<Mutex<Session>>,
    name: String,
}

impl std::fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("token", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Token {
    /// Loads the URI's module, finds its token and logs in as the user.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, Pkcs11Error> {
        let path = uri.module_path.as_deref().ok_or_else(|| {
            Pkcs11Error::Setup(format!(
                "{uri} names no module: add ?module-path=/path/to/module.so"
            ))
        })?;
        let ctx = module(path)?;
        let name = uri.to_string();
        let ck = |op: &'static str| {
            let name = name.clone();
            move |source| Pkcs11Error::Token {
                op,
                token: name,
                source,
            }
        };
        let mut chosen = None;
        for slot in ctx.get_slots_with_token().map_err(ck("listing slots"))? {
            if uri.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let info = ctx.get_token_info(slot).map_err(ck("reading token info"))?;
            if uri.token.as_deref().is_some_and(|t| t != info.label()) {
                continue;
            }
            if uri
                .serial
                .as_deref()
                .is_some_and(|s| s != info.serial_number())
            {
                continue;
            }
            chosen = Some(slot);
            break;
        }
        let slot = chosen.ok_or_else(|| {
            Pkcs11Error::Setup(format!(
                "no token matches {uri} in {}: check the token label (softhsm2-util --show-slots)",
                path.display()
            ))
        })?;
        let session = ctx.open_rw_session(slot).map_err(ck("opening a session"))?;
        let pin = uri.pin()?;
        match session.login(
            UserType::User,
            Some(&AuthPin::from(pin.as_str().to_owned())),
        ) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(ck("logging in")(e)),
        }
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            name: uri
                .token
                .clone()
                .unwrap_or_else(|| format!("slot {}", slot.id())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, op: &'static str) -> impl Fn(CkError) -> Pkcs11Error + '_ {
        move |source| Pkcs11Error::Token {
            op,
            token: self.name.clone(),
            source,
        }
    }

    fn find(
        &self,
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(self.err("finding objects"))
    }

    /// The P-256 key labelled `label`, if the token has one.
    pub fn key(&self, label: &str) -> Result<Option<Pkcs11Key>, Pkcs11Error> {
        let session = self.lock();
        let privs = self.find(&session, ObjectClass::PRIVATE_KEY, label)?;
        let pubs = self.find(&session, ObjectClass::PUBLIC_KEY, label)?;
        let bad = |reason: &str| Pkcs11Error::Key {
            label: label.to_string(),
            token: self.name.clone(),
            reason: reason.to_string(),
        };
        let (private, public) = match (privs.as_slice(), pubs.as_slice()) {
            ([], _) => return Ok(None),
            ([p], [q]) => (*p, *q),
            ([_], []) => return Err(bad("has no public key object with the same label")),
            _ => return Err(bad("label is not unique on the token")),
        };
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::KeyType,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                    AttributeType::Sign,
                ],
            )
            .map_err(self.err("reading key attributes"))?;
        for a in &attrs {
            match a {
                Attribute::KeyType(t) if *t != KeyType::EC => return Err(bad("is not an EC key")),
                Attribute::Extractable(true) => {
                    return Err(bad(
                        "is extractable (CKA_EXTRACTABLE = true); generate a non-extractable key on the token",
                    ));
                }
                Attribute::Sensitive(false) => return Err(bad("is not sensitive")),
                Attribute::Sign(false) => return Err(bad("may not sign")),
                _ => {}
            }
        }
        let attrs = session
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(self.err("reading the public key"))?;
        let mut point = None;
        for a in attrs {
            match a {
                Attribute::EcParams(p) if p != P256_PARAMS => {
                    return Err(bad("is not on P-256"));
                }
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let point = point.ok_or_else(|| bad("has no EC point"))?;
        // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point;
        // some modules give the bare point.
        let raw = match point.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
            p if p.len() == 65 && p[0] == 0x04 => p.to_vec(),
            _ => return Err(bad("has an EC point in an unknown encoding")),
        };
        drop(session);
        Ok(Some(Pkcs11Key {
            token: self.clone(),
            handle: private,
            public: raw,
            label: label.to_string(),
        }))
    }

    /// Generates a P-256 key pair on the token under `label` (private half
    /// sensitive and not extractable).
    pub fn generate(&self, label: &str) -> Result<Pkcs11Key, Pkcs11Error> {
        {
            let session = self.lock();
            let l = label.as_bytes().to_vec();
            let id = palisade_core_id(label);
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Label(l.clone()),
                Attribute::Id(id.clone()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::Label(l),
                Attribute::Id(id),
            ];
            session
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(self.err("generating a P-256 key pair"))?;
        }
        self.key(label)?.ok_or_else(|| Pkcs11Error::Key {
            label: label.to_string(),
            token: self.name.clone(),
            reason: "was generated but cannot be found".into(),
        })
    }

    /// Destroys every key object labelled `label` (both halves of a key
    /// pair, or a secret key); no error if absent.
    pub fn destroy(&self, label: &str) -> Result<(), Pkcs11Error> {
        let session = self.lock();
        for class in [
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::SECRET_KEY,
        ] {
            for h in self.find(&session, class, label)? {
                session
                    .destroy_object(h)
                    .map_err(self.err("destroying a key"))?;
            }
        }
        Ok(())
    }

    /// The AES-256 secret key labelled `label`, generated on the token on
    /// first use (sensitive, not extractable, only encrypt and decrypt).
    fn secret_key(&self, label: &str) -> Result<ObjectHandle, Pkcs11Error> {
        let session = self.lock();
        match self
            .find(&session, ObjectClass::SECRET_KEY, label)?
            .as_slice()
        {
            [h] => return Ok(*h),
            [] => {}
            _ => {
                return Err(Pkcs11Error::Key {
                    label: label.to_string(),
                    token: self.name.clone(),
                    reason: "label is not unique on the token".into(),
                });
            }
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Sign(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(palisade_core_id(label)),
        ];
        session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(self.err("generating an AES-256 key"))
    }

    /// Encrypts `plain` on the token with AES-256-GCM under the secret key
    /// `label` (made on first use); returns the 12-byte IV, then the
    /// ciphertext and its 16-byte tag. `aad` is authenticated, not encrypted.
    pub fn seal(&self, label: &str, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let key = self.secret_key(label)?;
        let mut iv = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut iv)
            .map_err(|_| Pkcs11Error::Setup("the system random number generator failed".into()))?;
        let session = self.lock();
        let mut iv_param = iv;
        let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv_param, aad, 128.into())
            .map_err(self.err("preparing AES-GCM"))?;
        let ct = session
            .encrypt(&Mechanism::AesGcm(params), key, plain)
            .map_err(self.err("encrypting with the token's AES key"))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`Pkcs11Token::seal`] made; `None` when the token has no
    /// key `label` (destroyed: the data is gone for good).
    pub fn open_sealed(
        &self,
        label: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Pkcs11Error> {
        let session = self.lock();
        let key = match self
            .find(&session, ObjectClass::SECRET_KEY, label)?
            .as_slice()
        {
            [h] => *h,
            _ => return Ok(None),
        };
        if sealed.len() < 12 + 16 {
            return Err(Pkcs11Error::Key {
                label: label.to_string(),
                token: self.name.clone(),
                reason: "the sealed data is too short".into(),
            });
        }
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&sealed[..12]);
        let params = cryptoki::mechanism::aead::GcmParams::new(&mut iv, aad, 128.into())
            .map_err(self.err("preparing AES-GCM"))?;
        let plain = session
            .decrypt(&Mechanism::AesGcm(params), key, &sealed[12..])
            .map_err(self.err("decrypting with the token's AES key"))?;
        Ok(Some(Zeroizing::new(plain)))
    }

    /// Labels of the token's objects (keys and certificates) that start with
    /// `prefix`, each once.
    pub fn labels(&self, prefix: &str) -> Result<Vec<String>, Pkcs11Error> {
        let session = self.lock();
        let mut out = std::collections::BTreeSet::new();
        for h in session
            .find_objects(&[])
            .map_err(self.err("listing objects"))?
        {
            let attrs = session
                .get_attributes(h, &[AttributeType::Label])
                .map_err(self.err("reading labels"))?;
            for a in attrs {
                if let Attribute::Label(l) = a
                    && let Ok(l) = String::from_utf8(l)
                    && l.starts_with(prefix)
                {
                    out.insert(l);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Relabels both halves of a key.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Pkcs11Error> {
        let session = self.lock();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for h in self.find(&session, class, from)? {
                session
                    .update_attributes(
                        h,
                        &[
                            Attribute::Label(to.as_bytes().to_vec()),
                            Attribute::Id(palisade_core_id(to)),
                        ],
                    )
                    .map_err(self.err("relabelling a key"))?;
            }
        }
        Ok(())
    }
}

/// `CKA_ID` for a label: its first 8 SHA-256 bytes, so tools that address keys
/// by id find the same object.
fn palisade_core_id(label: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, label.as_bytes()).as_ref()[..8].to_vec()
}

/// A P-256 private key held by a token.
pub struct Pkcs11Key {
    token: Pkcs11Token,
    handle: ObjectHandle,
    public: Vec<u8>,
    label: String,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Opens the token of `uri` and returns its `object`, generating it on the
    /// token when it does not exist yet (`created` is then true).
    pub fn open_or_generate(uri: &Pkcs11Uri) -> Result<(Self, bool), Pkcs11Error> {
        let label = uri
            .object
            .as_deref()
            .ok_or_else(|| Pkcs11Error::Setup(format!("{uri} names no key: add ;object=LABEL")))?;
        let token = Pkcs11Token::open(uri)?;
        match token.key(label)? {
            Some(k) => Ok((k, false)),
            None => Ok((token.generate(label)?, true)),
        }
    }
}

impl Signer for Pkcs11Key {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let fail = |reason: String| SignerError {
            key: format!("pkcs11 {}/{}", self.token.name, self.label),
            reason,
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let fixed = self
            .token
            .lock()
            .sign(&Mechanism::Ecdsa, self.handle, digest.as_ref())
            .map_err(|e| fail(e.to_string()))?;
        ecdsa_fixed_to_der(&fixed)
            .ok_or_else(|| fail("the token returned a malformed signature".into()))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::SecureElement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_examples() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-key;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
        )
        .expect("parse");
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.object.as_deref(), Some("my-key"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            u.module_path.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin_source.as_deref(), Some(Path::new("/run/pin")));
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:").expect("empty"),
            Pkcs11Uri::default()
        );
    }

    #[test]
    fn refuses_malformed_uris() {
        assert_eq!(Pkcs11Uri::parse("file:/x"), Err(UriError::Scheme));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token"),
            Err(UriError::NoValue(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%4"),
            Err(UriError::Escape(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%zz"),
            Err(UriError::Escape(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=a;token=b"),
            Err(UriError::Duplicate(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:slot-id=x"),
            Err(UriError::Value { .. })
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:token=%ff"),
            Err(UriError::Value { .. })
        ));
        assert_eq!(
            Pkcs11Uri::parse(&format!("pkcs11:token={}", "a".repeat(MAX_URI_LEN))),
            Err(UriError::TooLong)
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "pkcs11:token=a%3Bb;object=k?pin-source=file:file:x&module-path=/m%20n.so",
            "pkcs11:serial=1;slot-id=3;id=%00%ff?pin-source=/run/pin",
        ] {
            let u = Pkcs11Uri::parse(text).expect("parse");
            assert_eq!(Pkcs11Uri::parse(&u.to_string()).expect("reparse"), u, "{u}");
        }
    }

    #[test]
    fn display_hides_the_pin() {
        let u = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=123456").expect("parse");
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("pin-value=(hidden)"));
    }

    #[test]
    fn a_missing_pin_or_module_is_explained() {
        let u = Pkcs11Uri::parse("pkcs11:token=t;object=k").expect("parse");
        let e = Pkcs11Token::open(&u).expect_err("no module");
        assert!(e.to_string().contains("module-path"), "{e}");
        let e = u.pin().expect_err("no pin");
        assert!(e.to_string().contains("pin-source"), "{e}");
    }
}
