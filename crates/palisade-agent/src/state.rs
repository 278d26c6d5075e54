//! The agent's state and its two jobs: enrol once, then keep the operational
//! certificate fresh. State lives in one directory: `op.key` (0600, software
//! keystore), `op.pem` (the operational certificate), `chain.pem` (issuing CA
//! and root from `cacerts`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_core::{Clock, KeyProtection, Signer};
use palisade_pki::{SignerKey, inspect_certificate, pem_to_der};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::est_client::{AttestAuth, EnrollAuth, EstClient, EstError};
use crate::keystore::Keystore;
use crate::schedule::{backoff, renew_at};

/// What failed in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The EST exchange failed.
    #[error(transparent)]
    Est(#[from] EstError),
    /// The keystore failed.
    #[error("keystore: {0}")]
    Keystore(String),
    /// A state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No operational certificate yet.
    #[error("not enrolled yet: run `palisade-agent enroll` first")]
    NotEnrolled,
}

/// The device's current operational identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Serial (hex).
    pub serial: String,
    /// The device id (certificate CN).
    pub device_id: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
}

/// What the run loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sleep this long, then look again.
    Wait(Duration),
    /// Renew now.
    Renew,
}

/// Decides the next step for `identity` at `now`: a pure function.
pub fn next_action(identity: &Identity, now: OffsetDateTime, jitter: f64) -> Action {
    let at = renew_at(identity.not_before, identity.not_after, jitter);
    if now >= at {
        Action::Renew
    } else {
        Action::Wait(at - now)
    }
}

/// Reads the identity kept in a state directory, if enrolled.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, AgentError> {
    let path = dir.join("op.pem");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_err(&path, e)),
    };
    let der = pem_to_der(&text, "CERTIFICATE").map_err(|e| state_err(&path, e))?;
    let info = inspect_certificate(&der).map_err(|e| state_err(&path, e))?;
    Ok(Some(Identity {
        device_id: info.common_name.clone().unwrap_or_default(),
        serial: info.serial_hex,
        not_before: info.not_before,
        not_after: info.not_after,
        cert_der: der,
    }))
}

/// A device agent over one state directory.
#[derive(Debug, Clone)]
pub struct Agent {
    dir: PathBuf,
    keystore: Arc<dyn Keystore>,
    est: EstClient,
    clock: Arc<dyn Clock>,
    /// One renewal at a time (the schedule and a `renew` command may meet).
    renewing: Arc<tokio::sync::Mutex<()>>,
}

/// The roots taken on at a root rollover, besides those given at start (PEM).
const TRUST_FILE: &str = "trust.pem";

fn state_err(path: &Path, e: impl ToString) -> AgentError {
    AgentError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Agent {
    /// An agent keeping its state in `dir`.
    pub fn new(
        dir: &Path,
        keystore: Arc<dyn Keystore>,
        est: EstClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let est = est.with_own_trust();
        // Roots taken on at an earlier rollover stay trusted across restarts.
        if let Ok(text) = std::fs::read_to_string(dir.join(TRUST_FILE))
            && let Ok(extra) = palisade_pki::pem_certificates(&text)
        {
            est.trust_also(&extra);
        }
        Self {
            dir: dir.to_path_buf(),
            keystore,
            est,
            clock,
            renewing: Arc::default(),
        }
    }

    /// Takes on the roots in `offered` (EST `cacerts`) that a root already
    /// trusted vouches for (see [`palisade_pki::accepted_roots`]): kept in
    /// `trust.pem` beside the roots given at start, and used from now on for
    /// EST and MQTT. `offered` is also kept as `chain.pem`. Returns how many
    /// roots are trusted now.
    pub fn take_trust(&self, offered: &[Vec<u8>]) -> Result<usize, AgentError> {
        let mut trusted: Vec<Vec<u8>> = self.est.base_roots().to_vec();
        if let Ok(text) = std::fs::read_to_string(self.dir.join(TRUST_FILE))
            && let Ok(extra) = palisade_pki::pem_certificates(&text)
        {
            trusted.extend(extra);
        }
        let accepted = palisade_pki::accepted_roots(&trusted, offered, self.clock.now());
        let extra: Vec<Vec<u8>> = accepted
            .into_iter()
            .filter(|r| !self.est.base_roots().contains(r))
            .collect();
        let before = trusted.len();
        self.write(
            TRUST_FILE,
            &extra.iter().map(|c| Self::pem(c)).collect::<String>(),
        )?;
        self.write(
            "chain.pem",
            &offered.iter().map(|c| Self::pem(c)).collect::<String>(),
        )?;
        self.est.trust_also(&extra);
        let now = self.est.base_roots().len() + extra.len();
        if now != before {
            tracing::info!(
                roots = now,
                "took on the CA certificates the control plane offers"
            );
        }
        Ok(now)
    }

    /// The agent's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The keystore.
    pub fn keystore(&self) -> &Arc<dyn Keystore> {
        &self.keystore
    }

    /// The EST client (roots, host).
    pub fn est(&self) -> &EstClient {
        &self.est
    }

    /// The current operational key.
    pub fn operational_key(&self) -> Result<Arc<dyn Signer>, AgentError> {
        self.keystore
            .key("op")
            .map_err(|e| AgentError::Keystore(e.to_string()))
    }

    /// The update installer for this enrolled device (state in `ota/`).
    pub fn installer(
        &self,
        cfg: crate::ota::OtaConfig,
        floor: Option<Arc<dyn crate::ota::Floor>>,
    ) -> Result<crate::ota::Installer, AgentError> {
        let id = self.identity()?.ok_or_else(|| {
            AgentError::Keystore("not enrolled: run `palisade-agent enroll`".into())
        })?;
        crate::ota::Installer::new(
            cfg,
            &self.dir.join("ota"),
            self.est.clone(),
            &id.device_id,
            vec![CertificateDer::from(id.cert_der)],
            self.operational_key()?,
            floor,
        )
        .map_err(|e| AgentError::State {
            path: self.dir.join("ota"),
            reason: e.to_string(),
        })
    }

    /// How the agent's keys are protected (reported to the fleet).
    pub fn key_protection(&self) -> KeyProtection {
        self.keystore.protection()
    }

    /// The current identity, if enrolled.
    pub fn identity(&self) -> Result<Option<Identity>, AgentError> {
        read_identity(&self.dir)
    }

    fn csr(key: &Arc<dyn Signer>) -> Result<Vec<u8>, AgentError> {
        // The server sets the identity; the CSR only proves possession of the key.
        let params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        let csr = params
            .serialize_request(&SignerKey(key.clone()))
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        Ok(csr.der().to_vec())
    }

    fn write(&self, name: &str, text: &str) -> Result<(), AgentError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| state_err(&path, e))
    }

    fn pem(der: &[u8]) -> String {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap_or(""));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    }

    /// With a TPM keystore: proves to the server that `key` lives in this
    /// device's TPM (EK certificate, credential activation, TPM2_Certify) before
    /// the CSR is sent. Other keystores have nothing to prove.
    async fn attest_key(
        &self,
        auth: AttestAuth<'_>,
        key: &Arc<dyn Signer>,
    ) -> Result<(), AgentError> {
        let Some(attester) = self.keystore.attester() else {
            return Ok(());
        };
        let att = |e: anyhow::Error| AgentError::Keystore(format!("TPM attestation: {e:#}"));
        let req = attester.endorsement().map_err(att)?;
        let challenge: palisade_attest::Challenge = self
            .est
            .attest("challenge", auth.clone(), &req)
            .await?
            .ok_or_else(|| EstError::Malformed("no attestation challenge".into()))?;
        let evidence = attester
            .prove_key(key.public_key_raw(), &challenge)
            .map_err(att)?;
        let _: Option<serde_json::Value> = self.est.attest("evidence", auth, &evidence).await?;
        Ok(())
    }

    /// The TPM attestation this agent's keystore can give, if any.
    pub fn attester(&self) -> Option<Arc<dyn crate::keystore::Attester>> {
        self.keystore.attester()
    }

    /// First enrolment: a new operational key, a CSR, `simpleenroll` with the
    /// birth certificate or token, then the CA chain from `cacerts`.
    pub async fn enroll(&self, auth: &EnrollAuth) -> Result<Identity, AgentError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| state_err(&self.dir, e))?;
        let (key, pending) = self
            .keystore
            .fresh_key("op")
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        self.attest_key(AttestAuth::Enroll(auth), &key).await?;
        let csr = Self::csr(&key)?;
        let cert = self.est.simpleenroll(auth, &csr).await?;
        let chain = self.est.cacerts().await?;
        pending
            .commit()
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        self.take_trust(&chain)?;
        self.write("op.pem", &Self::pem(&cert))?;
        self.identity()?.ok_or(AgentError::NotEnrolled)
    }

    /// Renewal with a fresh key through `simplereenroll`, authenticated by the
    /// current certificate; the old key and certificate stay until it succeeds.
    pub async fn renew(&self) -> Result<Identity, AgentError> {
        let _one = self.renewing.lock().await;
        let current = self.identity()?.ok_or(AgentError::NotEnrolled)?;
        let old_key = self
            .keystore
            .key("op")
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        let (new_key, pending) = self
            .keystore
            .fresh_key("op")
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        let chain = vec![CertificateDer::from(current.cert_der)];
        self.attest_key(
            AttestAuth::Operational {
                chain: chain.clone(),
                key: old_key.clone(),
            },
            &new_key,
        )
        .await?;
        let csr = Self::csr(&new_key)?;
        let cert = self.est.simplereenroll(chain, old_key, &csr).await?;
        pending
            .commit()
            .map_err(|e| AgentError::Keystore(e.to_string()))?;
        self.write("op.pem", &Self::pem(&cert))?;
        // The CA certificates may have changed (a rotation): take them now,
        // while the session that authenticated the renewal is trusted.
        match self.est.cacerts().await {
            Ok(offered) => {
                if let Err(e) = self.take_trust(&offered) {
                    tracing::warn!(error = %e, "could not keep the CA certificates");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not fetch the CA certificates"),
        }
        self.identity()?.ok_or(AgentError::NotEnrolled)
    }

    /// One step of the run loop at the clock's `now`: renews if due. Returns how
    /// long to wait before the next step, and the error if a renewal failed (the
    /// wait then backs off with the number of consecutive `failures`).
    pub async fn step(&self, jitter: f64, failures: &mut u32) -> (Duration, Option<AgentError>) {
        let identity = match self.identity() {
            Ok(Some(i)) => i,
            Ok(None) => return (Duration::minutes(1), Some(AgentError::NotEnrolled)),
            Err(e) => return (Duration::minutes(1), Some(e)),
        };
        let now = self.clock.now();
        match next_action(&identity, now, jitter) {
            Action::Wait(d) => (d, None),
            Action::Renew => match self.renew().await {
                Ok(new) => {
                    *failures = 0;
                    tracing::info!(serial = %new.serial, not_after = %new.not_after, "renewed the operational certificate");
                    let wait = match next_action(&new, now, jitter) {
                        Action::Wait(d) => d,
                        Action::Renew => Duration::seconds(1),
                    };
                    (wait, None)
                }
                Err(e) => {
                    let wait = backoff(*failures, jitter, now, identity.not_after);
                    *failures += 1;
                    tracing::warn!(error = %e, retry_in = %wait, "renewal failed");
                    (wait, Some(e))
                }
            },
        }
    }
}
