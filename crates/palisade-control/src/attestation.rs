//! TPM attestation, server side.
//!
//! **At enrolment** (models with `attestation = tpm`): the device sends its EK
//! certificate and AK public area (`POST /attest/v1/challenge`); the server checks
//! the EK certificate against the registered TPM vendor CAs and answers with a
//! credential wrapped to the EK for the AK's name, and a nonce. The device
//! activates the credential in its TPM and has the AK certify its new identity
//! key with the nonce (`POST /attest/v1/evidence`). When all of it verifies, the
//! identity key is *proven* for a few minutes: the EST enrolment that follows
//! with a CSR for that very key is issued and the device recorded as
//! hardware-attested (TPM). Without that proof a `tpm` model's enrolment is
//! refused.
//!
//! **Measured boot**: when a TPM device subscribes to its commands topic and
//! every `interval` after, the server sends an `attest` challenge with a fresh
//! nonce; the agent answers on its `acks` topic with a quote over the firmware
//! PCR and the boot event log. The quote must verify against the AK recorded at
//! enrolment, carry the nonce, replay from the log, and show a firmware image
//! approved for the device's model. Anything else marks the device
//! *attestation failed*, is audited as a security event, and is published on
//! the event bus (`Event::AttestationFailed`: the detectors, the device's
//! timeline and any automatic response follow it there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use palisade_attest::{
    ChallengeRequest, EccPublic, KeyEvidence, QuoteEvidence, b64, check_ak, make_credential, unb64,
    verify_certify, verify_ek_certificate, verify_quote,
};
use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceId};
use palisade_mqtt::{TopicKind, device_topic};
use palisade_store::{Change, Store};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use tokio::sync::watch;

use crate::error::EnrollError;
use crate::events::{DeviceEvent, Event, EventBus, Missed, Subscription};
use crate::identity::Identified;
use crate::metrics::Metrics;
use crate::sessions::{Outbound, Sessions};
use palisade_core::unix_ms;

/// How long an enrolment challenge may be answered, and a proven key used.
const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;
/// Most enrolment challenges outstanding at once (each is small; this bounds a flood).
const MAX_PENDING: usize = 10_000;
/// Prefix of attestation challenge ids on the commands topic.
pub const QUOTE_ID_PREFIX: &str = "attest-";
/// Largest encoded field accepted in evidence.
const MAX_FIELD: usize = 8192;

#[derive(Debug)]
struct EnrolChallenge {
    device: DeviceId,
    ak: EccPublic,
    ek_sha256: String,
    secret: [u8; 32],
    nonce: [u8; 32],
    expires_ms: i64,
}

/// An identity key the device's TPM has proven it holds.
#[derive(Debug, Clone)]
pub struct ProvenKey {
    /// SHA-256 (hex) of the key's SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// The AK's `TPMT_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// SHA-256 (hex) of the EK certificate.
    pub ek_sha256: String,
    expires_ms: i64,
}

#[derive(Debug)]
struct QuoteChallenge {
    id: String,
    nonce: Vec<u8>,
    sent_ms: i64,
}

/// The attestation service.
#[derive(Debug)]
pub struct Attestation {
    store: Arc<dyn Store>,
    sessions: Arc<Sessions>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    interval: Duration,
    rng: SystemRandom,
    bus: Arc<dyn EventBus>,
    enrol: Mutex<HashMap<String, EnrolChallenge>>,
    proven: Mutex<HashMap<DeviceId, ProvenKey>>,
    quotes: Mutex<HashMap<DeviceId, QuoteChallenge>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Attestation {
    /// Composes the service; quotes are asked for every `interval`.
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        interval: Duration,
        bus: Arc<dyn EventBus>,
    ) -> Self {
        Self {
            store,
            sessions,
            clock,
            metrics,
            interval,
            rng: SystemRandom::new(),
            bus,
            enrol: Mutex::default(),
            proven: Mutex::default(),
            quotes: Mutex::default(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], EnrollError> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| EnrollError::Internal("random number generator failed".into()))?;
        Ok(b)
    }

    async fn refuse(&self, who: &Identified, action: &str, reason: String) -> EnrollError {
        self.metrics.attestation("refused");
        let entry = EntryDraft::denied(&who.actor, action, who.device.as_str())
            .with_detail(json!({ "reason": reason }));
        if let Err(e) = self.store.commit(vec![], vec![entry]).await {
            tracing::error!(error = %e, "could not audit a refused attestation");
        }
        EnrollError::Forbidden(format!("TPM attestation refused: {reason}"))
    }

    /// Step 1: checks the EK certificate and AK; returns a credential and nonce.
    pub async fn challenge(
        &self,
        who: &Identified,
        req: &ChallengeRequest,
    ) -> Result<palisade_attest::Challenge, EnrollError> {
        let action = "attest.challenge";
        let parsed = (|| {
            let ek = unb64("ek_certificate", &req.ek_certificate, MAX_FIELD)?;
            let ak = unb64("ak_public", &req.ak_public, MAX_FIELD)?;
            Ok::<_, palisade_attest::AttestError>((ek, ak))
        })();
        let (ek_der, ak_public) = match parsed {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(who, action, e.to_string()).await),
        };
        let vendors: Vec<Vec<u8>> = self
            .store
            .tpm_vendors()
            .await?
            .into_iter()
            .map(|v| v.ca_der)
            .collect();
        let now = self.clock.now();
        let ek = match verify_ek_certificate(&ek_der, &vendors, now.unix_timestamp()) {
            Ok(ek) => ek,
            Err(e) => return Err(self.refuse(who, action, e.to_string()).await),
        };
        if let Some(known) = who
            .existing
            .as_ref()
            .and_then(|d| d.hardware.ek_sha256.as_deref())
            && known != ek.fingerprint
        {
            let reason = "the EK differs from the TPM this device enrolled with".to_string();
            return Err(self.refuse(who, action, reason).await);
        }
        let ak = match check_ak(&ak_public) {
            Ok(ak) => ak,
            Err(e) => return Err(self.refuse(who, action, e.to_string()).await),
        };
        let secret = self.random::<32>()?;
        let nonce = self.random::<32>()?;
        let cred = match make_credential(&ek.rsa_pkcs1, &ak.name(), &secret) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(who, action, e.to_string()).await),
        };
        let id = hex::encode(self.random::<16>()?);
        let now_ms = unix_ms(now);
        {
            let mut pending = lock(&self.enrol);
            pending.retain(|_, c| c.expires_ms > now_ms);
            if pending.len() >= MAX_PENDING {
                return Err(EnrollError::Internal(
                    "too many attestation challenges outstanding; retry later".into(),
                ));
            }
            pending.insert(
                id.clone(),
                EnrolChallenge {
                    device: who.device.clone(),
                    ak,
                    ek_sha256: ek.fingerprint,
                    secret,
                    nonce,
                    expires_ms: now_ms + CHALLENGE_TTL_MS,
                },
            );
        }
        Ok(palisade_attest::Challenge {
            id,
            credential_blob: b64(&cred.id_object),
            encrypted_secret: b64(&cred.encrypted_secret),
            nonce: b64(&nonce),
        })
    }

    /// Step 2: the activated secret and the identity key's certification.
    pub async fn evidence(&self, who: &Identified, ev: &KeyEvidence) -> Result<(), EnrollError> {
        let action = "attest.evidence";
        let now_ms = self.now_ms();
        // One answer per challenge: taken out whatever the outcome.
        let Some(ch) = lock(&self.enrol).remove(&ev.id) else {
            let reason = "unknown or expired attestation challenge".to_string();
            return Err(self.refuse(who, action, reason).await);
        };
        if ch.device != who.device || ch.expires_ms <= now_ms {
            let reason = "the challenge was issued to another device or has expired".to_string();
            return Err(self.refuse(who, action, reason).await);
        }
        let checked = (|| {
            let secret = unb64("secret", &ev.secret, MAX_FIELD)?;
            if !bool::from(subtle::ConstantTimeEq::ct_eq(
                secret.as_slice(),
                ch.secret.as_slice(),
            )) {
                return Err(palisade_attest::AttestError::Refused(
                    "the credential was not activated by the TPM holding the EK: the attestation key is not bound to the endorsement key".into(),
                ));
            }
            let key_public = unb64("key_public", &ev.key_public, MAX_FIELD)?;
            let info = unb64("certify_info", &ev.certify_info, MAX_FIELD)?;
            let sig = unb64("certify_signature", &ev.certify_signature, MAX_FIELD)?;
            verify_certify(&ch.ak, &key_public, &info, &sig, &ch.nonce)
        })();
        let key = match checked {
            Ok(k) => k,
            Err(e) => return Err(self.refuse(who, action, e.to_string()).await),
        };
        let spki_sha256 = palisade_pki::sha256_hex(&key.spki_der());
        lock(&self.proven).insert(
            who.device.clone(),
            ProvenKey {
                spki_sha256: spki_sha256.clone(),
                ak_public: ch.ak.bytes.clone(),
                ek_sha256: ch.ek_sha256.clone(),
                expires_ms: now_ms + CHALLENGE_TTL_MS,
            },
        );
        self.metrics.attestation("key_proven");
        let entry = EntryDraft::success(&who.actor, action, who.device.as_str())
            .with_detail(json!({ "key_sha256": spki_sha256, "ek_sha256": ch.ek_sha256 }));
        self.store.commit(vec![], vec![entry]).await?;
        Ok(())
    }

    /// The proof for `device`'s key with SPKI hash `spki_sha256`, consumed.
    pub fn take_proven(&self, device: &DeviceId, spki_sha256: &str) -> Option<ProvenKey> {
        let now = self.now_ms();
        let mut proven = lock(&self.proven);
        proven.retain(|_, p| p.expires_ms > now);
        match proven.get(device) {
            Some(p) if p.spki_sha256 == spki_sha256 => proven.remove(device),
            _ => None,
        }
    }

    /// Sends a fresh quote challenge to a connected TPM device.
    pub async fn ask_quote(&self, device: &DeviceId) {
        let Ok(Some(d)) = self.store.device(device).await else {
            return;
        };
        if d.hardware.ak_public.is_none() {
            return;
        }
        let (Ok(id), Ok(nonce)) = (self.random::<8>(), self.random::<32>()) else {
            return;
        };
        let id = format!("{QUOTE_ID_PREFIX}{}", hex::encode(id));
        let payload = json!({
            "id": id,
            "name": "attest",
            "args": [b64(&nonce), palisade_attest::FIRMWARE_PCR.to_string()],
        });
        let sent = self.sessions.send(
            device,
            Outbound {
                topic: device_topic(device, TopicKind::Commands),
                payload: Bytes::from(payload.to_string()),
                command: None,
            },
        );
        if sent {
            lock(&self.quotes).insert(
                device.clone(),
                QuoteChallenge {
                    id,
                    nonce: nonce.to_vec(),
                    sent_ms: self.now_ms(),
                },
            );
        }
    }

    async fn record(&self, device: &DeviceId, ok: bool, detail: String) {
        let previous = self
            .store
            .device(device)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.hardware.attestation_status);
        let status = if ok { "ok" } else { "failed" };
        self.metrics
            .attestation(if ok { "quote_ok" } else { "quote_failed" });
        // Every failure is a security event; a success is audited when it
        // changes the device's status.
        let audit = if !ok {
            vec![
                EntryDraft::denied(format!("device:{device}"), "attest.quote", device.as_str())
                    .with_detail(json!({ "reason": detail })),
            ]
        } else if previous.as_deref() != Some("ok") {
            vec![
                EntryDraft::success(format!("device:{device}"), "attest.quote", device.as_str())
                    .with_detail(json!({ "result": detail })),
            ]
        } else {
            vec![]
        };
        let change = Change::RecordAttestation {
            id: device.clone(),
            status: status.into(),
            detail: detail.clone(),
            at_ms: self.now_ms(),
        };
        if let Err(e) = self.store.commit(vec![change], audit).await {
            tracing::error!(error = %e, %device, "could not record an attestation result");
        }
        if !ok {
            tracing::warn!(%device, reason = %detail, security_event = "attestation_failed", "device failed attestation");
            self.bus.publish(Event::AttestationFailed {
                device: device.clone(),
                reason: detail,
                at_ms: self.now_ms(),
            });
        }
    }

    /// Checks a quote that arrived on the device's `acks` topic.
    async fn on_ack(&self, e: &DeviceEvent) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) else {
            return;
        };
        let Some(id) = v.get("id").and_then(|i| i.as_str()) else {
            return;
        };
        if !id.starts_with(QUOTE_ID_PREFIX) {
            return;
        }
        let Some(ch) = lock(&self.quotes).remove(&e.device) else {
            return;
        };
        let outcome = self.check_quote(&e.device, &ch, id, &v).await;
        match outcome {
            Ok(detail) => self.record(&e.device, true, detail).await,
            Err(reason) => self.record(&e.device, false, reason).await,
        }
    }

    async fn check_quote(
        &self,
        device: &DeviceId,
        ch: &QuoteChallenge,
        id: &str,
        v: &serde_json::Value,
    ) -> Result<String, String> {
        if id != ch.id {
            return Err("the quote answers another challenge (replayed?)".into());
        }
        if !v.get("ok").and_then(|o| o.as_bool()).unwrap_or(false) {
            return Err(format!(
                "the device could not quote: {}",
                v.get("result").map(|r| r.to_string()).unwrap_or_default()
            ));
        }
        let ev: QuoteEvidence = v
            .get("result")
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or("the quote evidence is malformed")?;
        let d = self
            .store
            .device(device)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("device vanished")?;
        let ak_public = d
            .hardware
            .ak_public
            .ok_or("the device has no attestation key")?;
        let ak = check_ak(&ak_public).map_err(|e| e.to_string())?;
        let decode = |what, s: &str| unb64(what, s, MAX_FIELD).map_err(|e| e.to_string());
        if decode("nonce", &ev.nonce)? != ch.nonce {
            return Err("the quote is not over this challenge's nonce".into());
        }
        let found = verify_quote(
            &ak,
            &decode("quote", &ev.quote)?,
            &decode("signature", &ev.signature)?,
            &ch.nonce,
            &ev.events,
            palisade_attest::FIRMWARE_PCR,
        )
        .map_err(|e| e.to_string())?;
        let fw = found
            .firmware
            .ok_or("the boot log records no firmware measurement")?;
        let approved = self
            .store
            .firmware(&d.model)
            .await
            .map_err(|e| e.to_string())?;
        match approved.iter().find(|a| a.sha256 == fw.digest) {
            Some(a) => Ok(format!(
                "booted firmware {} (sha256 {}) is approved",
                a.version, a.sha256
            )),
            None if approved.is_empty() => Err(format!(
                "model {} has no approved firmware to check the measurement {} against (palisade model firmware add)",
                d.model, fw.digest
            )),
            None => Err(format!(
                "booted firmware sha256 {} (reported as {:?}) is not an approved image for model {}",
                fw.digest, fw.description, d.model
            )),
        }
    }

    /// Fails devices that left a challenge unanswered for a whole interval, and
    /// challenges every connected TPM device again.
    async fn tick(&self) {
        let now = self.now_ms();
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let overdue: Vec<DeviceId> = {
            let mut q = lock(&self.quotes);
            let late: Vec<DeviceId> = q
                .iter()
                .filter(|(_, c)| now - c.sent_ms >= interval_ms)
                .map(|(d, _)| d.clone())
                .collect();
            for d in &late {
                q.remove(d);
            }
            late
        };
        for d in overdue {
            if self.sessions.is_connected(&d) {
                self.record(&d, false, "no answer to the attestation challenge".into())
                    .await;
            }
        }
        let filter = palisade_store::DeviceFilter::default();
        let Ok(devices) = self.store.devices(&filter).await else {
            return;
        };
        for d in devices {
            if d.hardware.ak_public.is_some() && self.sessions.is_connected(&d.id) {
                self.ask_quote(&d.id).await;
            }
        }
    }

    /// Runs the measured-boot loop: a challenge when a TPM device subscribes,
    /// again every interval, and a check of every answer.
    pub async fn follow(
        self: Arc<Self>,
        mut bus: Subscription,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.tick().await,
                e = bus.recv() => match e {
                    Some(Ok(Event::CommandsSubscribed { device })) => self.ask_quote(&device).await,
                    Some(Ok(Event::Message(e))) if e.kind == TopicKind::Acks => self.on_ack(&e).await,
                    Some(Ok(_)) => {}
                    // A missed subscription is made good at the next tick.
                    Some(Err(Missed(n))) => {
                        tracing::warn!(missed = n, "attestation fell behind the device bus");
                    }
                    None => return,
                },
            }
        }
    }
}
