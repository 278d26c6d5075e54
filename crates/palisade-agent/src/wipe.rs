//! The device's side of a verified wipe (see `palisade_core::wipe`): check the
//! command, destroy the data key (a crypto-erase of the vaults), sign the
//! receipt with the identity key, and once it is sent destroy the identity.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use palisade_core::wipe::{
    self, WipeCommand, WipeReceipt, receipt_message, receipt_payload, signed_receipt,
};
use rustls::pki_types::CertificateDer;

use crate::state::{Agent, Identity};
use crate::tls_key::ClientIdentity;

/// Carries out wipe commands for one agent.
#[derive(Debug)]
pub struct Wiper {
    agent: Agent,
    data_dirs: Vec<PathBuf>,
    /// Woken when the device has wiped itself: the agent stops.
    pub done: tokio::sync::Notify,
}

impl Wiper {
    /// A wiper for `agent`, whose application data lives in `data_dirs`.
    pub fn new(agent: Agent, data_dirs: Vec<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            agent,
            data_dirs,
            done: tokio::sync::Notify::new(),
        })
    }

    /// Checks a wipe command's arguments; the reason when refused (then
    /// nothing is destroyed).
    pub async fn check(
        &self,
        args: &[String],
        now_ms: i64,
    ) -> Result<(WipeCommand, Identity), String> {
        let id = match self.agent.identity() {
            Ok(Some(id)) => id,
            Ok(None) => return Err("this device is not enrolled".into()),
            Err(e) => return Err(e.to_string()),
        };
        let key = self.agent.operational_key().map_err(|e| e.to_string())?;
        let client = ClientIdentity::new(vec![CertificateDer::from(id.cert_der.clone())], key);
        let director = crate::ota::director_key(
            self.agent.est(),
            client,
            &self.agent.state_dir().join("ota"),
        )
        .await
        .map_err(|e| format!("cannot check the signature: {e}"))?;
        let cmd = wipe::verify_command(args, &director, &id.device_id, &id.serial, now_ms)
            .map_err(|e| e.to_string())?;
        Ok((cmd, id))
    }

    /// Destroys the data key and returns the signed receipt, which lists it
    /// and the identity keys destroyed next ([`Wiper::destroy_identity`]).
    pub fn erase_and_sign(
        &self,
        cmd: &WipeCommand,
        id: &Identity,
        now_ms: i64,
    ) -> anyhow::Result<serde_json::Value> {
        let ks = self.agent.keystore();
        let key = self.agent.operational_key()?;
        let mut destroyed = ks.destroy_data_key().context("destroying the data key")?;
        let vaults = std::iter::once(self.agent.state_dir().join(crate::vault::STATE_VAULT))
            .chain(self.data_dirs.iter().cloned());
        for dir in vaults {
            let files = crate::keystore::files_ending(&dir, "")?.len();
            if files > 0 {
                destroyed.push(format!(
                    "{} ({files} files, encrypted under the destroyed data key)",
                    dir.display()
                ));
            }
        }
        destroyed.extend(ks.identity_items()?);
        destroyed.push("certificate files (op.pem, chain.pem, removed)".into());
        let receipt = WipeReceipt {
            device: id.device_id.clone(),
            serial: id.serial.clone(),
            nonce: cmd.nonce.clone(),
            destroyed: destroyed.into_iter().take(wipe::MAX_DESTROYED).collect(),
            keystore: ks.protection().as_str().to_owned(),
            at_ms: now_ms,
        };
        let payload = receipt_payload(&receipt);
        let sig = key
            .sign(&receipt_message(&payload))
            .context("signing the wipe receipt")?;
        Ok(serde_json::to_value(signed_receipt(&payload, &sig))?)
    }

    /// Destroys the identity keys and certificate files: after this the
    /// device can neither connect nor enrol as itself.
    pub fn destroy_identity(&self) -> anyhow::Result<Vec<String>> {
        let mut out = self.agent.keystore().destroy_identity()?;
        for f in ["op.pem", "chain.pem"] {
            if crate::keystore::shred(&self.agent.state_dir().join(f))? {
                out.push(format!("certificate file {f}"));
            }
        }
        Ok(out)
    }
}
