//! The device's TPM 2.0, through tss-esapi (which links Debian's tpm2-tss).
//!
//! * **Identity keys** are ECC P-256 signing keys created inside the TPM under
//!   the storage root key, with fixedTPM, fixedParent and sensitiveDataOrigin:
//!   the private half never exists outside the TPM. What the agent stores is the
//!   TPM's *wrapped* blob (encrypted by the storage root key, usable only by the
//!   same TPM) and the public area.
//! * **Attestation**: the endorsement key (TCG default RSA-2048 template) and its
//!   certificate from NV, an attestation key (restricted ECC P-256 signer),
//!   TPM2_ActivateCredential, TPM2_Certify and TPM2_Quote.
//! * **Measured boot**: PCR extend and read.
//!
//! A `tss_esapi::Context` must stay on one thread, so one worker thread owns it
//! and every call is sent to it; [`Tpm`] is a cheap, `Send + Sync` handle. The
//! worker keeps only the storage root key loaded and loads other objects for the
//! length of one command, since a TPM without a resource manager has few
//! object slots.

use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use palisade_attest::{EccPublic, EcdsaSignature};
use palisade_core::{KeyAlgorithm, KeyProtection, Signer, SignerError, ecdsa_fixed_to_der};
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek};
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::nv_index_type::NvIndexType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle,
    PersistentTpmHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::NvPublicBuilder;
use tss_esapi::structures::{
    Data, Digest, DigestValues, EccPoint, EccScheme, EncryptedSecret, HashScheme, IdObject,
    KeyDerivationFunctionScheme, PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::structures::{KeyedHashScheme, PublicKeyedHashParameters, SensitiveData};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

/// A TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is not usable.
    #[error("TPM interface {tcti:?}: {reason}")]
    Tcti {
        /// The TCTI configuration.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// The TPM (or the TSS) refused a command.
    #[error("TPM {op} failed: {reason}")]
    Command {
        /// What was being done.
        op: &'static str,
        /// The TSS's message.
        reason: String,
    },
    /// A stored key blob is damaged.
    #[error("TPM key blob: {0}")]
    Blob(String),
    /// The worker thread is gone.
    #[error("the TPM worker thread stopped")]
    Gone,
}

fn cmd(op: &'static str) -> impl Fn(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Command {
        op,
        reason: e.to_string(),
    }
}

/// A TPM-wrapped key: its public area and its private part encrypted by the
/// TPM's storage root key. Useless outside the TPM that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyBlob {
    /// Marshalled `TPMT_PUBLIC`.
    pub public: Vec<u8>,
    /// `TPM2B_PRIVATE` contents (TPM-encrypted).
    pub private: Vec<u8>,
}

impl fmt::Debug for KeyBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBlob")
            .field("public_len", &self.public.len())
            .finish_non_exhaustive()
    }
}

const BLOB_MAGIC: &[u8; 8] = b"PLSDTPM1";

impl KeyBlob {
    /// Serialises as `PLSDTPM1 || u16 len || public || u16 len || private`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = BLOB_MAGIC.to_vec();
        for part in [&self.public, &self.private] {
            v.extend_from_slice(&(part.len() as u16).to_be_bytes());
            v.extend_from_slice(part);
        }
        v
    }

    /// Parses [`KeyBlob::to_bytes`] output.
    pub fn from_bytes(b: &[u8]) -> Result<Self, TpmError> {
        let bad = |r: &str| TpmError::Blob(r.to_string());
        let mut rest = b.strip_prefix(BLOB_MAGIC).ok_or_else(|| bad("bad magic"))?;
        let mut parts = Vec::new();
        for _ in 0..2 {
            if rest.len() < 2 {
                return Err(bad("truncated"));
            }
            let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let part = rest.get(2..2 + n).ok_or_else(|| bad("truncated"))?;
            parts.push(part.to_vec());
            rest = &rest[2 + n..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let private = parts.pop().unwrap_or_default();
        let public = parts.pop().unwrap_or_default();
        Ok(Self { public, private })
    }

    /// The key's public area, parsed.
    pub fn ecc_public(&self) -> Result<EccPublic, TpmError> {
        EccPublic::parse(&self.public).map_err(|e| TpmError::Blob(e.to_string()))
    }
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

struct Worker {
    ctx: Context,
    srk: Option<KeyHandle>,
}

/// A handle on the TPM worker.
#[derive(Clone)]
pub struct Tpm {
    tx: Arc<Mutex<mpsc::Sender<Job>>>,
    tcti: String,
}

impl fmt::Debug for Tpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

/// A fresh HMAC session with parameter encryption, for commands that carry
/// secrets or need an authorisation.
fn hmac_session(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let s = start_session(ctx, SessionType::Hmac)?;
    let (a, m) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    ctx.tr_sess_set_attributes(s, a, m)
        .map_err(cmd("setting session attributes"))?;
    Ok(s)
}

/// An unbound, unsalted session of `kind` with AES-128-CFB parameter encryption.
fn start_session(ctx: &mut Context, kind: SessionType) -> Result<AuthSession, TpmError> {
    ctx.start_auth_session(
        None,
        None,
        None,
        kind,
        SymmetricDefinition::AES_128_CFB,
        HashingAlgorithm::Sha256,
    )
    .map_err(cmd("starting a session"))?
    .ok_or(TpmError::Command {
        op: "starting a session",
        reason: "no session returned".into(),
    })
}

fn flush_session(ctx: &mut Context, s: AuthSession) {
    let h = tss_esapi::handles::SessionHandle::from(s);
    let _ = ctx.flush_context(h.into());
}

fn ecc_signing_template(restricted: bool, fixed: bool) -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(fixed)
        .with_fixed_parent(fixed)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_sign_encrypt(true)
        .with_restricted(restricted)
        .build()
        .map_err(cmd("building key attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_signing_key(true)
                .with_restricted(restricted)
                .build()
                .map_err(cmd("building ECC parameters"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("building a key template"))
}

/// The storage root key template: ECC P-256 restricted decryption key with
/// AES-128-CFB (TCG "SRK" profile); primary keys are re-derived from the
/// owner seed, so the same template always gives the same key.
fn srk_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .with_no_da(true)
        .build()
        .map_err(cmd("building SRK attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::AES_128_CFB)
                .with_ecc_scheme(EccScheme::Null)
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_decryption_key(true)
                .with_restricted(true)
                .build()
                .map_err(cmd("building SRK parameters"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(cmd("building the SRK template"))
}

impl Worker {
    fn srk(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some(h) = self.srk {
            return Ok(h);
        }
        let t = srk_template()?;
        let h = self
            .ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, t, None, None, None, None)
            })
            .map_err(cmd("creating the storage root key"))?
            .key_handle;
        self.srk = Some(h);
        Ok(h)
    }

    fn create(&mut self, template: Public) -> Result<KeyBlob, TpmError> {
        let srk = self.srk()?;
        let r = self
            .ctx
            .execute_with_nullauth_session(|c| c.create(srk, template, None, None, None, None))
            .map_err(cmd("creating a key"))?;
        Ok(KeyBlob {
            public: r
                .out_public
                .marshall()
                .map_err(cmd("marshalling a public area"))?,
            private: r.out_private.value().to_vec(),
        })
    }

    /// Loads `blob`, runs `f` with its handle, and flushes it again.
    fn with_loaded<R>(
        &mut self,
        blob: &KeyBlob,
        f: impl FnOnce(&mut Context, KeyHandle, KeyHandle) -> Result<R, TpmError>,
    ) -> Result<R, TpmError> {
        let srk = self.srk()?;
        let public = Public::unmarshall(&blob.public).map_err(cmd("reading a key blob"))?;
        let private = Private::try_from(blob.private.clone()).map_err(cmd("reading a key blob"))?;
        let h = self
            .ctx
            .execute_with_nullauth_session(|c| c.load(srk, private, public))
            .map_err(cmd("loading a key"))?;
        let out = f(&mut self.ctx, srk, h);
        let _ = self.ctx.flush_context(h.into());
        out
    }
}

fn to_fixed(sig: tss_esapi::structures::Signature) -> Result<Vec<u8>, TpmError> {
    let bytes = sig.marshall().map_err(cmd("marshalling a signature"))?;
    EcdsaSignature::parse(&bytes)
        .map(|s| s.fixed)
        .map_err(|e| TpmError::Blob(e.to_string()))
}

impl Tpm {
    /// Connects to the TPM named by a TCTI string (`device:/dev/tpmrm0`,
    /// `swtpm:host=127.0.0.1,port=2321`, `tabrmd`, …).
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmError::Tcti {
            tcti: tcti.into(),
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let name = tcti.to_string();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let ctx = match Context::new(conf) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(TpmError::Tcti {
                            tcti: name,
                            reason: e.to_string(),
                        }));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut w = Worker { ctx, srk: None };
                while let Ok(job) = rx.recv() {
                    job(&mut w);
                }
            })
            .map_err(|e| TpmError::Tcti {
                tcti: tcti.into(),
                reason: format!("cannot start the worker thread: {e}"),
            })?;
        ready_rx.recv().map_err(|_| TpmError::Gone)??;
        Ok(Self {
            tx: Arc::new(Mutex::new(tx)),
            tcti: tcti.to_string(),
        })
    }

    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<R, TpmError> + Send + 'static,
    ) -> Result<R, TpmError> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| TpmError::Gone)?;
        rx.recv().map_err(|_| TpmError::Gone)?
    }

    /// Creates a P-256 signing key inside the TPM. With `exportable` the key
    /// lacks fixedTPM/fixedParent: only for testing that attestation refuses
    /// such keys.
    pub fn create_signing_key(&self, exportable: bool) -> Result<KeyBlob, TpmError> {
        self.call(move |w| w.create(ecc_signing_template(false, !exportable)?))
    }

    /// Creates an attestation key (restricted P-256 signer, fixedTPM).
    pub fn create_attestation_key(&self) -> Result<KeyBlob, TpmError> {
        self.call(|w| w.create(ecc_signing_template(true, true)?))
    }

    /// Signs the SHA-256 `digest` with a (non-restricted) key; returns `r || s`.
    pub fn sign_digest(&self, key: &KeyBlob, digest: [u8; 32]) -> Result<Vec<u8>, TpmError> {
        let key = key.clone();
        self.call(move |w| {
            w.with_loaded(&key, |c, _, h| {
                let ticket = TPMT_TK_HASHCHECK {
                    tag: TPM2_ST_HASHCHECK,
                    hierarchy: TPM2_RH_NULL,
                    digest: Default::default(),
                };
                let d = Digest::try_from(digest.to_vec()).map_err(cmd("signing"))?;
                let sig = c
                    .execute_with_nullauth_session(|c| {
                        c.sign(
                            h,
                            d,
                            SignatureScheme::Null,
                            ticket.try_into().map_err(|e: tss_esapi::Error| e)?,
                        )
                    })
                    .map_err(cmd("signing"))?;
                to_fixed(sig)
            })
        })
    }

    /// The EK certificate (DER) the manufacturer stored in NV for the RSA-2048 EK.
    pub fn ek_certificate(&self) -> Result<Vec<u8>, TpmError> {
        self.call(|w| {
            ek::retrieve_ek_pubcert(
                &mut w.ctx,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            )
            .map_err(cmd("reading the EK certificate from NV"))
        })
    }

    /// TPM2_ActivateCredential: recovers the server's secret if `ak` lives in
    /// this TPM together with the EK it was wrapped for.
    pub fn activate_credential(
        &self,
        ak: &KeyBlob,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let (ak, id, enc) = (ak.clone(), id_object.to_vec(), encrypted_secret.to_vec());
        self.call(move |w| {
            let id = IdObject::try_from(id).map_err(cmd("reading the credential"))?;
            let enc = EncryptedSecret::try_from(enc).map_err(cmd("reading the credential"))?;
            w.with_loaded(&ak, |c, _, ak_h| {
                // The EK is loaded for this command only.
                let ek_h = ek::create_ek_object_2(
                    c,
                    AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                    None,
                )
                .map_err(cmd("creating the endorsement key"))?;
                let result = (|| {
                    let s1 = hmac_session(c)?;
                    let s2 = start_session(c, SessionType::Policy)?;
                    let policy = PolicySession::try_from(s2).map_err(cmd("policy session"))?;
                    c.execute_with_session(Some(s1), |c| {
                        c.policy_secret(
                            policy,
                            AuthHandle::Endorsement,
                            Default::default(),
                            Default::default(),
                            Default::default(),
                            None,
                        )
                    })
                    .map_err(cmd("authorising the endorsement key"))?;
                    c.set_sessions((Some(s1), Some(s2), None));
                    let r = c
                        .activate_credential(ak_h, ek_h, id, enc)
                        .map_err(cmd("activating the credential"));
                    c.clear_sessions();
                    flush_session(c, s1);
                    flush_session(c, s2);
                    Ok(r?.value().to_vec())
                })();
                let _ = c.flush_context(ek_h.into());
                result
            })
        })
    }

    /// TPM2_Certify of `key` by `ak` with `nonce`: returns the marshalled
    /// `TPMS_ATTEST` and `TPMT_SIGNATURE`.
    pub fn certify(
        &self,
        key: &KeyBlob,
        ak: &KeyBlob,
        nonce: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let (key, ak, nonce) = (key.clone(), ak.clone(), nonce.to_vec());
        self.call(move |w| {
            let ak_public = Public::unmarshall(&ak.public).map_err(cmd("reading a key blob"))?;
            let ak_private =
                Private::try_from(ak.private.clone()).map_err(cmd("reading a key blob"))?;
            w.with_loaded(&key, |c, srk, key_h| {
                let ak_h = c
                    .execute_with_nullauth_session(|c| c.load(srk, ak_private, ak_public))
                    .map_err(cmd("loading the attestation key"))?;
                let data = Data::try_from(nonce).map_err(cmd("certifying"));
                let r = data.and_then(|data| {
                    c.execute_with_sessions(
                        (
                            Some(AuthSession::Password),
                            Some(AuthSession::Password),
                            None,
                        ),
                        |c| c.certify(key_h.into(), ak_h, data, SignatureScheme::Null),
                    )
                    .map_err(cmd("certifying the key"))
                });
                let _ = c.flush_context(ak_h.into());
                let (attest, sig) = r?;
                Ok((
                    attest
                        .marshall()
                        .map_err(cmd("marshalling the attestation"))?,
                    sig.marshall().map_err(cmd("marshalling the signature"))?,
                ))
            })
        })
    }

    /// TPM2_Quote by `ak` over SHA-256 `pcr` with `nonce`: returns the
    /// marshalled `TPMS_ATTEST` and `TPMT_SIGNATURE`.
    pub fn quote(
        &self,
        ak: &KeyBlob,
        nonce: &[u8],
        pcr: u8,
    ) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let (ak, nonce) = (ak.clone(), nonce.to_vec());
        self.call(move |w| {
            w.with_loaded(&ak, |c, _, ak_h| {
                let sel = PcrSelectionListBuilder::new()
                    .with_selection(HashingAlgorithm::Sha256, &[slot(pcr)?])
                    .build()
                    .map_err(cmd("selecting PCRs"))?;
                let data = Data::try_from(nonce).map_err(cmd("quoting"))?;
                let (attest, sig) = c
                    .execute_with_nullauth_session(|c| {
                        c.quote(ak_h, data, SignatureScheme::Null, sel)
                    })
                    .map_err(cmd("quoting"))?;
                Ok((
                    attest.marshall().map_err(cmd("marshalling the quote"))?,
                    sig.marshall().map_err(cmd("marshalling the signature"))?,
                ))
            })
        })
    }

    /// Extends SHA-256 `pcr` with `digest` (the boot chain's measurement).
    pub fn extend_pcr(&self, pcr: u8, digest: [u8; 32]) -> Result<(), TpmError> {
        self.call(move |w| {
            let handle = pcr_handle(pcr)?;
            let mut vals = DigestValues::new();
            vals.set(
                HashingAlgorithm::Sha256,
                Digest::try_from(digest.to_vec()).map_err(cmd("extending a PCR"))?,
            );
            w.ctx
                .execute_with_session(Some(AuthSession::Password), |c| c.pcr_extend(handle, vals))
                .map_err(cmd("extending a PCR"))
        })
    }

    /// Reads SHA-256 `pcr`.
    pub fn read_pcr(&self, pcr: u8) -> Result<[u8; 32], TpmError> {
        self.call(move |w| {
            let sel = PcrSelectionListBuilder::new()
                .with_selection(HashingAlgorithm::Sha256, &[slot(pcr)?])
                .build()
                .map_err(cmd("selecting PCRs"))?;
            let (_, _, values) = w
                .ctx
                .execute_without_session(|c| c.pcr_read(sel))
                .map_err(cmd("reading a PCR"))?;
            let v = values.value().first().ok_or(TpmError::Command {
                op: "reading a PCR",
                reason: "no value returned (is the SHA-256 bank active?)".into(),
            })?;
            let mut out = [0u8; 32];
            if v.value().len() != 32 {
                return Err(TpmError::Command {
                    op: "reading a PCR",
                    reason: "not a SHA-256 value".into(),
                });
            }
            out.copy_from_slice(v.value());
            Ok(out)
        })
    }
}

/// The NV index of Palisade's anti-rollback counter (owner-defined range).
pub const FLOOR_NV_INDEX: u32 = 0x0150_0A00;

/// Most increments one raise of the counter performs.
const MAX_INCREMENTS: u64 = 10_000;

impl Worker {
    /// The counter's handle, if the index is defined.
    fn nv_handle(&mut self, index: u32) -> Result<Option<NvIndexHandle>, TpmError> {
        let tpm_handle = NvIndexTpmHandle::new(index).map_err(cmd("naming an NV index"))?;
        match self.ctx.tr_from_tpm_public(tpm_handle.into()) {
            Ok(h) => Ok(Some(NvIndexHandle::from(h))),
            Err(_) => Ok(None),
        }
    }

    fn read_counter(&mut self, h: NvIndexHandle) -> Result<u64, TpmError> {
        let (public, _) = self
            .ctx
            .nv_read_public(h)
            .map_err(cmd("reading the counter's public area"))?;
        if !public.attributes().written() {
            return Ok(0);
        }
        let buf = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.nv_read(NvAuth::Owner, h, 8, 0)
            })
            .map_err(cmd("reading the anti-rollback counter"))?;
        let b: [u8; 8] = buf.value().try_into().map_err(|_| TpmError::Command {
            op: "reading the anti-rollback counter",
            reason: "not 8 bytes".into(),
        })?;
        Ok(u64::from_be_bytes(b))
    }
}

impl Tpm {
    /// The monotonic NV counter at `index` (0 when not yet defined or written).
    pub fn read_counter(&self, index: u32) -> Result<u64, TpmError> {
        self.call(move |w| match w.nv_handle(index)? {
            None => Ok(0),
            Some(h) => w.read_counter(h),
        })
    }

    /// Increments the NV counter at `index` (defining it on first use) until
    /// it is at least `v`; returns its value. A TPM counter never goes down.
    pub fn raise_counter(&self, index: u32, v: u64) -> Result<u64, TpmError> {
        self.call(move |w| {
            let h = match w.nv_handle(index)? {
                Some(h) => h,
                None => {
                    let attrs = NvIndexAttributesBuilder::new()
                        .with_owner_write(true)
                        .with_owner_read(true)
                        .with_nv_index_type(NvIndexType::Counter)
                        .build()
                        .map_err(cmd("building the counter's attributes"))?;
                    let public = NvPublicBuilder::new()
                        .with_nv_index(
                            NvIndexTpmHandle::new(index).map_err(cmd("naming an NV index"))?,
                        )
                        .with_index_name_algorithm(HashingAlgorithm::Sha256)
                        .with_index_attributes(attrs)
                        .with_data_area_size(8)
                        .build()
                        .map_err(cmd("building the counter's public area"))?;
                    w.ctx
                        .execute_with_session(Some(AuthSession::Password), |c| {
                            c.nv_define_space(Provision::Owner, None, public)
                        })
                        .map_err(cmd("defining the anti-rollback counter"))?
                }
            };
            let mut cur = w.read_counter(h)?;
            let mut n = 0;
            while cur < v {
                if n >= MAX_INCREMENTS {
                    return Err(TpmError::Command {
                        op: "raising the anti-rollback counter",
                        reason: format!("{v} is more than {MAX_INCREMENTS} steps above {cur}"),
                    });
                }
                w.ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.nv_increment(NvAuth::Owner, h)
                    })
                    .map_err(cmd("incrementing the anti-rollback counter"))?;
                cur = w.read_counter(h)?;
                n += 1;
            }
            Ok(cur)
        })
    }
}

/// The persistent handle of the agent's data key: a sealed object (keyed-hash,
/// fixedTPM, fixedParent) in the owner hierarchy. Its private part is never
/// written outside the TPM, so evicting it destroys the key for good.
pub const DATA_KEY_HANDLE: u32 = 0x8101_0A01;

fn persistent(handle: u32) -> Result<PersistentTpmHandle, TpmError> {
    PersistentTpmHandle::new(handle).map_err(cmd("naming a persistent handle"))
}

fn sealed_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_user_with_auth(true)
        .build()
        .map_err(cmd("building sealed-object attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()
        .map_err(cmd("building the sealed-object template"))
}

impl Worker {
    fn persistent_object(&mut self, handle: u32) -> Result<Option<ObjectHandle>, TpmError> {
        let h = persistent(handle)?;
        Ok(self.ctx.tr_from_tpm_public(TpmHandle::Persistent(h)).ok())
    }
}

impl Tpm {
    /// Seals `data` into a new object under the storage root key and makes it
    /// persistent at `handle` (which must be free); the private part goes from
    /// TPM2_Create to TPM2_Load without touching storage.
    pub fn seal_persistent(&self, handle: u32, data: Vec<u8>) -> Result<(), TpmError> {
        let data = SensitiveData::try_from(data).map_err(cmd("sealing data"))?;
        self.call(move |w| {
            if w.persistent_object(handle)?.is_some() {
                return Err(TpmError::Command {
                    op: "sealing data",
                    reason: format!("persistent handle {handle:#010x} is taken"),
                });
            }
            let p = persistent(handle)?;
            let srk = w.srk()?;
            let t = sealed_template()?;
            let r = w
                .ctx
                .execute_with_nullauth_session(|c| c.create(srk, t, None, Some(data), None, None))
                .map_err(cmd("sealing data"))?;
            let loaded = w
                .ctx
                .execute_with_nullauth_session(|c| c.load(srk, r.out_private, r.out_public))
                .map_err(cmd("loading the sealed object"))?;
            let made = w
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.evict_control(Provision::Owner, loaded.into(), Persistent::Persistent(p))
                })
                .map_err(cmd("making the sealed object persistent"));
            let _ = w.ctx.flush_context(loaded.into());
            made.map(|_| ())
        })
    }

    /// Unseals the persistent object at `handle`; `None` when there is none.
    pub fn unseal_persistent(&self, handle: u32) -> Result<Option<Vec<u8>>, TpmError> {
        self.call(move |w| {
            let Some(h) = w.persistent_object(handle)? else {
                return Ok(None);
            };
            let d = w
                .ctx
                .execute_with_nullauth_session(|c| c.unseal(h))
                .map_err(cmd("unsealing the data key"))?;
            Ok(Some(d.value().to_vec()))
        })
    }

    /// Evicts the persistent object at `handle`, which destroys it; false when
    /// there was none.
    pub fn evict_persistent(&self, handle: u32) -> Result<bool, TpmError> {
        self.call(move |w| {
            let Some(h) = w.persistent_object(handle)? else {
                return Ok(false);
            };
            let p = persistent(handle)?;
            w.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.evict_control(Provision::Owner, h, Persistent::Persistent(p))
                })
                .map_err(cmd("evicting a persistent object"))?;
            Ok(true)
        })
    }

    /// Undefines the NV index `index`; false when it was not defined.
    pub fn undefine_nv(&self, index: u32) -> Result<bool, TpmError> {
        self.call(move |w| {
            let Some(h) = w.nv_handle(index)? else {
                return Ok(false);
            };
            w.ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_undefine_space(Provision::Owner, h)
                })
                .map_err(cmd("undefining an NV index"))?;
            Ok(true)
        })
    }
}

fn slot(pcr: u8) -> Result<PcrSlot, TpmError> {
    PcrSlot::try_from(1u32 << pcr).map_err(cmd("choosing a PCR"))
}

fn pcr_handle(pcr: u8) -> Result<PcrHandle, TpmError> {
    PcrHandle::try_from(u32::from(pcr)).map_err(cmd("choosing a PCR"))
}

/// A TPM-resident identity key seen as a [`Signer`].
pub struct TpmKey {
    tpm: Tpm,
    blob: KeyBlob,
    point: Vec<u8>,
    label: String,
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmKey")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl TpmKey {
    /// A signer for `blob` in `tpm`.
    pub fn new(tpm: Tpm, blob: KeyBlob, label: &str) -> Result<Self, TpmError> {
        let point = blob.ecc_public()?.point;
        Ok(Self {
            tpm,
            blob,
            point,
            label: label.to_string(),
        })
    }

    /// The TPM blob.
    pub fn blob(&self) -> &KeyBlob {
        &self.blob
    }
}

impl Signer for TpmKey {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.point
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let fail = |reason: String| SignerError {
            key: format!("tpm {}", self.label),
            reason,
        };
        let mut d = [0u8; 32];
        d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, msg).as_ref());
        let fixed = self
            .tpm
            .sign_digest(&self.blob, d)
            .map_err(|e| fail(e.to_string()))?;
        ecdsa_fixed_to_der(&fixed)
            .ok_or_else(|| fail("the TPM returned a malformed signature".into()))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::Tpm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_blobs_round_trip_and_refuse_damage() {
        let b = KeyBlob {
            public: vec![1, 2, 3],
            private: vec![4; 10],
        };
        let bytes = b.to_bytes();
        assert_eq!(KeyBlob::from_bytes(&bytes).unwrap(), b);
        for n in 0..bytes.len() {
            assert!(KeyBlob::from_bytes(&bytes[..n]).is_err());
        }
        let mut long = bytes;
        long.push(0);
        assert!(KeyBlob::from_bytes(&long).is_err());
    }

    #[test]
    fn a_bad_tcti_is_explained() {
        let e = Tpm::open("nonsense:").unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
    }
}
