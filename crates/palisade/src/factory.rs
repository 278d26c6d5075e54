//! `palisade factory …`: the manufacturing-line workflow, run offline, apart from
//! the control plane. A supplier's manufacturer CA issues each device a birth
//! identity (IDevID) from a CSR the device made with its own key, and seals the
//! batch into a manifest signed by the manufacturer key. Every step is appended
//! to the factory journal (`DIR/journal.jsonl`), each line carrying the SHA-256 of
//! the line before it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use palisade_core::{KeyAlgorithm, ModelId, Signer, SupplierName};
use palisade_keystore::SoftwareKey;
use palisade_pki::{
    CertificateAuthority, CsrLimits, IssueRequest, ManifestBody, ManifestDevice, Profile, Serial,
    SignerKey, inspect_certificate, pem_to_der, sha256_hex, sign_manifest, verify_csr,
};
use ring::rand::SystemRandom;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::output::say;

/// `palisade factory …`
#[derive(Debug, Subcommand)]
pub enum FactoryCmd {
    /// Create a supplier's manufacturer CA in DIR (ca.key 0600, ca.pem).
    InitCa {
        /// Supplier name.
        #[arg(long)]
        supplier: String,
        /// Factory directory.
        #[arg(long)]
        dir: PathBuf,
        /// CA lifetime in days.
        #[arg(long, default_value_t = 7300)]
        validity_days: u32,
    },
    /// On the device: make its birth key (idevid.key, 0600) and a CSR (idevid.csr)
    /// in its own directory. (Software keys for now; TPM and secure elements next.)
    DeviceKey {
        /// The device's directory.
        #[arg(long)]
        device_dir: PathBuf,
        /// Its serial number.
        #[arg(long)]
        serial: String,
    },
    /// Issue an IDevID from a device's CSR (proof of possession checked).
    Issue {
        /// Factory directory (with the manufacturer CA).
        #[arg(long)]
        dir: PathBuf,
        /// The device's CSR (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The device's serial number (becomes the certificate's CN).
        #[arg(long)]
        serial: String,
        /// Where to write the IDevID certificate (PEM).
        #[arg(long)]
        out: PathBuf,
        /// IDevID lifetime in days.
        #[arg(long, default_value_t = 7300)]
        validity_days: u32,
    },
    /// Seal IDevID certificates into a batch manifest signed by the manufacturer key.
    Batch {
        /// Factory directory.
        #[arg(long)]
        dir: PathBuf,
        /// Device model of the whole batch.
        #[arg(long)]
        model: String,
        /// Manifest file to write.
        #[arg(long)]
        out: PathBuf,
        /// IDevID certificate files (PEM).
        #[arg(required = true)]
        certs: Vec<PathBuf>,
    },
}

fn now() -> OffsetDateTime {
    // The factory runs offline and has no server clock to borrow.
    palisade_core::Clock::now(&palisade_core::SystemClock)
}

use palisade_core::unix_ms as now_ms;

fn journal(dir: &Path, event: serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join("journal.jsonl");
    let prev = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.lines().last().map(|l| sha256_hex(l.as_bytes())))
        .unwrap_or_else(|| "0".repeat(64));
    let line = json!({ "time_ms": now_ms(now()), "prev": prev, "event": event }).to_string();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the factory journal {}", path.display()))?;
    writeln!(f, "{line}").and_then(|()| f.sync_all())?;
    Ok(())
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn load_ca(dir: &Path) -> anyhow::Result<(CertificateAuthority, String)> {
    let key =
        SoftwareKey::load(&dir.join("ca.key"), KeyAlgorithm::EcdsaP256).with_context(|| {
            format!(
                "no manufacturer CA in {}: run `palisade factory init-ca` first",
                dir.display()
            )
        })?;
    let pem_text = std::fs::read_to_string(dir.join("ca.pem"))?;
    let der = pem_to_der(&pem_text, "CERTIFICATE")?;
    let supplier = std::fs::read_to_string(dir.join("supplier"))?
        .trim()
        .to_owned();
    Ok((
        CertificateAuthority::from_parts(der, Arc::new(key))?,
        supplier,
    ))
}

fn write_pem(path: &Path, label: &str, der: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, pem::encode(&pem::Pem::new(label, der.to_vec())))
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates `supplier`'s manufacturer CA in `dir` (key 0600, `ca.pem`, the
/// journal); returns the supplier's name.
pub fn init_ca(supplier: &str, dir: &Path, validity_days: u32) -> anyhow::Result<SupplierName> {
    let rng = SystemRandom::new();
    let supplier = SupplierName::parse(supplier)?;
    private_dir(dir)?;
    if dir.join("ca.pem").exists() {
        bail!("{} already holds a manufacturer CA", dir.display());
    }
    let (key, _) = SoftwareKey::load_or_create(&dir.join("ca.key"), KeyAlgorithm::EcdsaP256)?;
    let ca = CertificateAuthority::create_root(
        Arc::new(key),
        supplier.as_str(),
        &format!("{supplier} Manufacturer CA"),
        now(),
        Duration::days(i64::from(validity_days)),
        &Serial::random(&rng)?,
    )?;
    write_pem(&dir.join("ca.pem"), "CERTIFICATE", ca.certificate_der())?;
    std::fs::write(dir.join("supplier"), format!("{supplier}\n"))?;
    journal(
        dir,
        json!({ "action": "ca.create", "supplier": supplier.as_str(),
                "ca_sha256": sha256_hex(ca.certificate_der()) }),
    )?;
    Ok(supplier)
}

/// Runs a factory command.
pub fn run(cmd: FactoryCmd) -> anyhow::Result<ExitCode> {
    let rng = SystemRandom::new();
    match cmd {
        FactoryCmd::InitCa {
            supplier,
            dir,
            validity_days,
        } => {
            let supplier = init_ca(&supplier, &dir, validity_days)?;
            say(format!(
                "created the manufacturer CA of {supplier} in {} (register it with `palisade supplier add {supplier} --ca-cert {}`)",
                dir.display(),
                dir.join("ca.pem").display()
            ));
        }
        FactoryCmd::DeviceKey { device_dir, serial } => {
            private_dir(&device_dir)?;
            let (key, created) = SoftwareKey::load_or_create(
                &device_dir.join("idevid.key"),
                KeyAlgorithm::EcdsaP256,
            )?;
            if !created {
                bail!("{} already holds a birth key", device_dir.display());
            }
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, serial.as_str());
            let signer: Arc<dyn Signer> = Arc::new(key);
            let csr = params.serialize_request(&SignerKey(signer))?;
            std::fs::write(device_dir.join("idevid.csr"), csr.pem()?)?;
            say(format!(
                "device {serial}: birth key and CSR in {}",
                device_dir.display()
            ));
        }
        FactoryCmd::Issue {
            dir,
            csr,
            serial,
            out,
            validity_days,
        } => {
            let (ca, supplier) = load_ca(&dir)?;
            let text = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let req = verify_csr(
                &pem_to_der(&text, "CERTIFICATE REQUEST")?,
                &CsrLimits::default(),
            )
            .with_context(|| format!("{} is not an acceptable CSR", csr.display()))?;
            if serial.is_empty()
                || serial.len() > 64
                || serial
                    .chars()
                    .any(|c| !c.is_ascii_alphanumeric() && c != '-')
            {
                bail!("serial {serial:?} must be 1 to 64 letters, digits or '-'");
            }
            let issued = ca.issue(
                &IssueRequest {
                    profile: Profile::BirthIdentity,
                    common_name: &serial,
                    sans: vec![],
                    spki_der: &req.spki_der,
                    validity: Duration::days(i64::from(validity_days)),
                    crl_url: None,
                },
                &supplier,
                &Serial::random(&rng)?,
                now(),
            )?;
            write_pem(&out, "CERTIFICATE", &issued.der)?;
            journal(
                &dir,
                json!({ "action": "idevid.issue", "serial": serial,
                "idevid_sha256": sha256_hex(&issued.der), "public_key_sha256": sha256_hex(&req.spki_der) }),
            )?;
            say(format!(
                "issued the IDevID of {serial} to {}",
                out.display()
            ));
        }
        FactoryCmd::Batch {
            dir,
            model,
            out,
            certs,
        } => {
            let (ca, supplier) = load_ca(&dir)?;
            let model = ModelId::parse(&model)?;
            let mut devices = Vec::with_capacity(certs.len());
            for path in &certs {
                let der = pem_to_der(&std::fs::read_to_string(path)?, "CERTIFICATE")
                    .with_context(|| format!("reading {}", path.display()))?;
                let info = inspect_certificate(&der)?;
                if info.issuer != ca.info().subject {
                    bail!("{} was not issued by this manufacturer CA", path.display());
                }
                let serial = info
                    .common_name
                    .clone()
                    .with_context(|| format!("{} has no CN (serial)", path.display()))?;
                devices.push(ManifestDevice {
                    serial,
                    idevid_sha256: sha256_hex(&der),
                    public_key_sha256: spki_sha256(&der)?,
                    certificate_pem: pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())),
                });
            }
            let body = ManifestBody {
                version: 1,
                supplier: supplier.clone(),
                model: model.to_string(),
                created_ms: now_ms(now()),
                devices,
            };
            let signer = SoftwareKey::load(&dir.join("ca.key"), KeyAlgorithm::EcdsaP256)?;
            let file = sign_manifest(&body, &signer)?;
            std::fs::write(&out, &file).with_context(|| format!("writing {}", out.display()))?;
            journal(
                &dir,
                json!({ "action": "batch.seal", "model": model.as_str(),
                "devices": body.devices.iter().map(|d| d.serial.as_str()).collect::<Vec<_>>(),
                "manifest_sha256": sha256_hex(file.as_bytes()) }),
            )?;
            say(format!(
                "sealed a batch of {} {model} devices into {} (import it with `palisade batch import {}`)",
                body.devices.len(),
                out.display(),
                out.display()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn spki_sha256(der: &[u8]) -> anyhow::Result<String> {
    Ok(sha256_hex(&palisade_pki::spki_der_of(der)?))
}
