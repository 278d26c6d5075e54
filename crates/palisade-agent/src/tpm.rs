//! The TPM keystore and attester (feature `tpm`).
//!
//! Keys are created inside the TPM (P-256, fixedTPM, fixedParent, not
//! duplicable); the state directory keeps only the TPM's wrapped blobs
//! (`<name>.tpmkey`, 0600), which are useless outside this TPM. The attestation
//! key is `ak.tpmkey`. The boot event log is `boot-events.json`, written by the
//! boot shim ([`measure_boot`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use palisade_attest::boot::{BootEvent, FIRMWARE_PCR};
use palisade_attest::{Challenge, ChallengeRequest, KeyEvidence, QuoteEvidence, b64, unb64};
use palisade_core::{KeyProtection, Signer};
use palisade_tpm::{KeyBlob, Tpm, TpmKey};

use crate::keystore::{
    Attester, DataKey, Keystore, PendingKey, file_name, files_ending, random_data_key, shred,
    write_private,
};

/// The boot event log's file in the state directory.
pub const BOOT_LOG: &str = "boot-events.json";

/// Keys in a TPM 2.0.
#[derive(Debug, Clone)]
pub struct TpmKeystore {
    tpm: Tpm,
    dir: PathBuf,
    ak: Arc<Mutex<Option<KeyBlob>>>,
}

fn read_blob(path: &Path) -> anyhow::Result<Option<KeyBlob>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            KeyBlob::from_bytes(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl TpmKeystore {
    /// The TPM at `tcti`, with key blobs kept in `dir`.
    pub fn open(tcti: &str, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            tpm: Tpm::open(tcti)?,
            dir: dir.to_path_buf(),
            ak: Arc::default(),
        })
    }

    /// The TPM handle.
    pub fn tpm(&self) -> &Tpm {
        &self.tpm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.tpmkey"))
    }

    fn signer(&self, blob: KeyBlob, name: &str) -> anyhow::Result<Arc<dyn Signer>> {
        Ok(Arc::new(TpmKey::new(self.tpm.clone(), blob, name)?))
    }

    fn ak(&self) -> anyhow::Result<KeyBlob> {
        let mut ak = self.ak.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = ak.as_ref() {
            return Ok(b.clone());
        }
        let path = self.path("ak");
        let blob = match read_blob(&path)? {
            Some(b) => b,
            None => {
                let b = self.tpm.create_attestation_key()?;
                write_private(&path, &b.to_bytes())?;
                b
            }
        };
        *ak = Some(blob.clone());
        Ok(blob)
    }

    /// The key blob (current or pending) whose public point is `raw`.
    fn blob_for(&self, raw: &[u8]) -> anyhow::Result<KeyBlob> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tpmkey")
                && let Some(blob) = read_blob(&path)?
                && blob.ecc_public().is_ok_and(|p| p.point == raw)
            {
                return Ok(blob);
            }
        }
        bail!("no TPM key blob in {} matches the key", self.dir.display())
    }
}

impl Keystore for TpmKeystore {
    fn floor(&self) -> Option<Arc<dyn crate::ota::Floor>> {
        Some(Arc::new(TpmFloor(self.tpm().clone())))
    }

    fn key(&self, name: &str) -> anyhow::Result<Arc<dyn Signer>> {
        let path = self.path(name);
        let blob = match read_blob(&path)? {
            Some(b) => b,
            None => {
                let b = self.tpm.create_signing_key(false)?;
                write_private(&path, &b.to_bytes())?;
                b
            }
        };
        self.signer(blob, name)
    }

    fn fresh_key(&self, name: &str) -> anyhow::Result<(Arc<dyn Signer>, PendingKey)> {
        let tmp = self.path(&format!("{name}.new"));
        let blob = self.tpm.create_signing_key(false)?;
        write_private(&tmp, &blob.to_bytes())?;
        let to = self.path(name);
        Ok((
            self.signer(blob, name)?,
            PendingKey::new(move || Ok(std::fs::rename(&tmp, &to)?)),
        ))
    }

    fn protection(&self) -> KeyProtection {
        KeyProtection::Tpm
    }

    fn attester(&self) -> Option<Arc<dyn Attester>> {
        Some(Arc::new(self.clone()))
    }

    fn data_key(&self, create: bool) -> anyhow::Result<Option<DataKey>> {
        let h = palisade_tpm::DATA_KEY_HANDLE;
        if let Some(b) = self.tpm.unseal_persistent(h)? {
            let b = zeroize::Zeroizing::new(b);
            let k: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("the TPM's sealed object {h:#010x} is not a 32-byte key")
            })?;
            return Ok(Some(zeroize::Zeroizing::new(k)));
        }
        if !create {
            return Ok(None);
        }
        let k = random_data_key()?;
        self.tpm.seal_persistent(h, k.to_vec())?;
        Ok(Some(k))
    }

    fn destroy_data_key(&self) -> anyhow::Result<Vec<String>> {
        let h = palisade_tpm::DATA_KEY_HANDLE;
        Ok(if self.tpm.evict_persistent(h)? {
            vec![format!("data key (TPM sealed object {h:#010x}, evicted)")]
        } else {
            vec![]
        })
    }

    fn identity_items(&self) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = files_ending(&self.dir, ".tpmkey")?
            .iter()
            .map(|p| {
                format!(
                    "identity key (TPM key blob {}, overwritten and unlinked)",
                    file_name(p)
                )
            })
            .collect();
        if self.tpm.read_counter(palisade_tpm::FLOOR_NV_INDEX).is_ok() {
            out.push(format!(
                "TPM NV index {:#010x} (anti-rollback counter, undefined)",
                palisade_tpm::FLOOR_NV_INDEX
            ));
        }
        Ok(out)
    }

    fn destroy_identity(&self) -> anyhow::Result<Vec<String>> {
        let mut out = vec![];
        for p in files_ending(&self.dir, ".tpmkey")? {
            shred(&p)?;
            out.push(format!(
                "identity key (TPM key blob {}, overwritten and unlinked)",
                file_name(&p)
            ));
        }
        if self.tpm.undefine_nv(palisade_tpm::FLOOR_NV_INDEX)? {
            out.push(format!(
                "TPM NV index {:#010x} (anti-rollback counter, undefined)",
                palisade_tpm::FLOOR_NV_INDEX
            ));
        }
        Ok(out)
    }
}

impl Attester for TpmKeystore {
    fn endorsement(&self) -> anyhow::Result<ChallengeRequest> {
        let ek = self
            .tpm
            .ek_certificate()
            .context("reading the EK certificate (was the TPM provisioned with one?)")?;
        Ok(ChallengeRequest {
            ek_certificate: b64(&ek),
            ak_public: b64(&self.ak()?.public),
        })
    }

    fn prove_key(&self, public_raw: &[u8], ch: &Challenge) -> anyhow::Result<KeyEvidence> {
        let ak = self.ak()?;
        let key = self.blob_for(public_raw)?;
        let id_object = unb64("credential_blob", &ch.credential_blob, 4096)?;
        let secret = unb64("encrypted_secret", &ch.encrypted_secret, 4096)?;
        let nonce = unb64("nonce", &ch.nonce, 64)?;
        let released = self
            .tpm
            .activate_credential(&ak, &id_object, &secret)
            .context("the TPM would not activate the server's credential")?;
        let (info, sig) = self.tpm.certify(&key, &ak, &nonce)?;
        Ok(KeyEvidence {
            id: ch.id.clone(),
            secret: b64(&released),
            key_public: b64(&key.public),
            certify_info: b64(&info),
            certify_signature: b64(&sig),
        })
    }

    fn quote(&self, nonce: &[u8], pcr: u8) -> anyhow::Result<QuoteEvidence> {
        let ak = self.ak()?;
        let (quote, sig) = self.tpm.quote(&ak, nonce, pcr)?;
        Ok(QuoteEvidence {
            nonce: b64(nonce),
            quote: b64(&quote),
            signature: b64(&sig),
            events: read_boot_log(&self.dir)?,
        })
    }
}

/// The boot event log in `dir` (empty if none).
pub fn read_boot_log(dir: &Path) -> anyhow::Result<Vec<BootEvent>> {
    let path = dir.join(BOOT_LOG);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The boot shim: measures the firmware `image` into the firmware PCR and
/// appends the event to the log. A PCR still at zero means the TPM was reset
/// (a new boot), so the log starts afresh.
pub fn measure_boot(
    tpm: &Tpm,
    dir: &Path,
    image: &[u8],
    version: &str,
) -> anyhow::Result<BootEvent> {
    let mut events = if tpm.read_pcr(FIRMWARE_PCR)? == [0; 32] {
        vec![]
    } else {
        read_boot_log(dir)?
    };
    let event = BootEvent::firmware(image, version);
    tpm.extend_pcr(FIRMWARE_PCR, event.digest_bytes()?)?;
    events.push(event.clone());
    let path = dir.join(BOOT_LOG);
    std::fs::write(&path, serde_json::to_vec_pretty(&events)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(event)
}

/// The anti-rollback floor in the TPM's monotonic NV counter
/// ([`palisade_tpm::FLOOR_NV_INDEX`]): it survives a reflashed filesystem and
/// can never be lowered. The floor is the counter's value.
#[derive(Debug)]
pub struct TpmFloor(Tpm);

impl TpmFloor {
    /// Opens the TPM named by `tcti` (a keystore's TPM offers its own through
    /// `Keystore::floor`).
    pub fn open(tcti: &str) -> anyhow::Result<Self> {
        Ok(Self(Tpm::open(tcti)?))
    }
}

impl crate::ota::Floor for TpmFloor {
    fn get(&self) -> Result<u64, crate::ota::OtaError> {
        self.0
            .read_counter(palisade_tpm::FLOOR_NV_INDEX)
            .map_err(|e| crate::ota::OtaError::Floor(e.to_string()))
    }

    fn raise(&self, v: u64) -> Result<(), crate::ota::OtaError> {
        self.0
            .raise_counter(palisade_tpm::FLOOR_NV_INDEX, v)
            .map(|_| ())
            .map_err(|e| crate::ota::OtaError::Floor(e.to_string()))
    }
}
