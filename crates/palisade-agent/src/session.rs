//! The device's MQTT session: connects to the gateway with the operational
//! certificate (key kept in the keystore), publishes telemetry periodically, and
//! runs an allowlist of commands with acknowledgements. Reconnects with backoff
//! and jitter; picks up a renewed certificate at each reconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::{DeviceId, Signer};
use palisade_mqtt::{TopicKind, device_topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::sync::watch;

use crate::keystore::Attester;
use crate::tls_key::ClientIdentity;

/// What the session needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Gateway host (name or IP in the server certificate).
    pub host: String,
    /// Gateway port.
    pub port: u16,
    /// Time between telemetry messages.
    pub telemetry_every: Duration,
    /// Firmware version to report.
    pub firmware: String,
    /// Commands this device will run; anything else is refused in the ack.
    pub allowed_commands: Vec<String>,
    /// The TPM, to answer the server's attestation challenges.
    pub attester: Option<Arc<dyn Attester>>,
    /// Woken when the server announces an assignment on the device's `ota`
    /// topic, and at each (re)connection (the installer then checks at once
    /// instead of at its next poll); with it the session subscribes to `ota`.
    pub update: Option<Arc<tokio::sync::Notify>>,
    /// Security metrics to report with each telemetry message.
    pub metrics: Option<Arc<std::sync::Mutex<crate::metrics::Collector>>>,
    /// Carries out signed wipe commands (without it they are refused).
    pub wiper: Option<Arc<crate::wipe::Wiper>>,
    /// The agent's vault: the commands run are journalled in it.
    pub journal: Option<Arc<crate::vault::Vault>>,
}

/// Answers the server's `attest` challenge: a TPM quote with the boot log.
async fn attest(attester: Option<Arc<dyn Attester>>, args: &[String]) -> (bool, serde_json::Value) {
    let Some(attester) = attester else {
        return (false, json!("this device has no TPM keystore"));
    };
    let nonce = args
        .first()
        .and_then(|n| palisade_attest::unb64("nonce", n, 64).ok());
    let pcr = args.get(1).and_then(|p| p.parse::<u8>().ok());
    let (Some(nonce), Some(pcr)) = (nonce, pcr) else {
        return (false, json!("malformed attestation challenge"));
    };
    match tokio::task::spawn_blocking(move || attester.quote(&nonce, pcr)).await {
        Ok(Ok(evidence)) => (true, json!(evidence)),
        Ok(Err(e)) => (false, json!(format!("quote failed: {e:#}"))),
        Err(e) => (false, json!(format!("quote failed: {e}"))),
    }
}

/// How the session ended or paused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connection or protocol failure (the caller reconnects after a backoff).
    #[error("MQTT session: {0}")]
    Connection(String),
    /// Not enrolled or the key is unavailable.
    #[error("{0}")]
    Identity(String),
    /// The device wiped itself on the control plane's signed command: the
    /// agent stops.
    #[error("the device wiped itself")]
    Wiped,
    /// The control plane asked for a renewal within this many seconds: the
    /// session ends, the agent renews and connects again with the new
    /// certificate.
    #[error("asked to renew within {0} s")]
    Renew(u64),
}

/// Runs a command from the allowlist; returns (ok, result).
fn execute(
    name: &str,
    args: &[String],
    allowed: &[String],
    started: Instant,
) -> (bool, serde_json::Value) {
    if !allowed.iter().any(|a| a == name) {
        return (
            false,
            json!(format!("command {name:?} is not allowed on this device")),
        );
    }
    match name {
        "ping" => (true, json!("pong")),
        "uptime" => (true, json!(started.elapsed().as_secs())),
        "echo" => (true, json!(args)),
        // Devices here are simulated: a reboot is acknowledged, not performed.
        "reboot" => (true, json!("reboot scheduled")),
        other => (false, json!(format!("command {other:?} has no handler"))),
    }
}

/// A wipe command: refused (acknowledged as such, nothing destroyed) unless
/// signed by the director for this device and certificate and not expired;
/// otherwise the data key goes, the signed receipt is sent and acknowledged
/// by the gateway (or 15 s pass), the identity goes, and the session ends
/// for good.
async fn wipe(
    client: &AsyncClient,
    events: &mut rumqttc::EventLoop,
    cfg: &SessionConfig,
    acks: &str,
    id: &str,
    args: &[String],
) -> Result<(), SessionError> {
    let conn = |e: rumqttc::ClientError| SessionError::Connection(e.to_string());
    let now = || palisade_core::Clock::now_ms(&palisade_core::SystemClock);
    let refuse = |why: String| {
        tracing::warn!(%id, reason = %why, "wipe command refused; nothing destroyed");
        json!({ "id": id, "ok": false, "result": format!("wipe refused: {why}") }).to_string()
    };
    let Some(w) = cfg.wiper.clone() else {
        let body = refuse("this agent was not given a wiper".into());
        return client
            .publish(acks, QoS::AtLeastOnce, false, body)
            .await
            .map_err(conn);
    };
    let (cmd, identity) = match w.check(args, now()).await {
        Ok(ok) => ok,
        Err(why) => {
            return client
                .publish(acks, QoS::AtLeastOnce, false, refuse(why))
                .await
                .map_err(conn);
        }
    };
    let erase = {
        let w = w.clone();
        let t = now();
        tokio::task::spawn_blocking(move || w.erase_and_sign(&cmd, &identity, t)).await
    };
    let receipt = match erase {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let body = json!({ "id": id, "ok": false, "result": format!("wipe failed: {e:#}") });
            tracing::error!(error = %format!("{e:#}"), "wipe failed");
            return client
                .publish(acks, QoS::AtLeastOnce, false, body.to_string())
                .await
                .map_err(conn);
        }
        Err(e) => return Err(SessionError::Connection(e.to_string())),
    };
    // Wait until the gateway has the receipt (its PUBACK), bounded.
    let delivered = publish_confirmed(
        client,
        events,
        acks,
        json!({ "id": id, "ok": true, "result": receipt }).to_string(),
        Duration::from_secs(15),
    )
    .await?;
    let destroyed = tokio::task::spawn_blocking(move || w.destroy_identity()).await;
    match destroyed {
        Ok(Ok(items)) => tracing::warn!(
            receipt_delivered = delivered,
            destroyed = ?items,
            "this device wiped itself: data key and identity destroyed"
        ),
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "destroying the identity failed"),
        Err(e) => tracing::error!(error = %e, "destroying the identity failed"),
    }
    let _ = client.disconnect().await;
    if let Some(w) = &cfg.wiper {
        w.done.notify_one();
    }
    Err(SessionError::Wiped)
}

/// Publishes `body` on `topic` at QoS 1 and waits (at most `within`) for the
/// gateway's PUBACK; returns whether it came.
async fn publish_confirmed(
    client: &AsyncClient,
    events: &mut rumqttc::EventLoop,
    topic: &str,
    body: String,
    within: Duration,
) -> Result<bool, SessionError> {
    client
        .publish(topic, QoS::AtLeastOnce, false, body)
        .await
        .map_err(|e| SessionError::Connection(e.to_string()))?;
    Ok(tokio::time::timeout(within, async {
        let mut pkid = None;
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(p))) if pkid.is_none() => {
                    pkid = Some(p);
                }
                Ok(Event::Incoming(Packet::PubAck(a))) if Some(a.pkid) == pkid => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false))
}

/// One connection's life: returns when the connection fails or `stop` is set.
pub async fn run_once(
    device: &DeviceId,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn Signer>,
    roots: Arc<rustls::RootCertStore>,
    cfg: &SessionConfig,
    started: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SessionError::Connection(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientIdentity::new(chain, key)));
    let mut opts = MqttOptions::new(device.as_str(), cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    let (client, mut events) = AsyncClient::new(opts, 32);
    let commands = device_topic(device, TopicKind::Commands);
    let telemetry = device_topic(device, TopicKind::Telemetry);
    let acks = device_topic(device, TopicKind::Acks);
    let ota = device_topic(device, TopicKind::Ota);
    client
        .subscribe(&commands, QoS::AtLeastOnce)
        .await
        .map_err(|e| SessionError::Connection(e.to_string()))?;
    if let Some(n) = &cfg.update {
        client
            .subscribe(&ota, QoS::AtLeastOnce)
            .await
            .map_err(|e| SessionError::Connection(e.to_string()))?;
        // Connected (again): an assignment may have been announced meanwhile.
        n.notify_one();
    }
    let mut tick = tokio::time::interval(cfg.telemetry_every);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = client.disconnect().await;
                return Ok(());
            }
            _ = tick.tick() => {
                let metrics = match cfg.metrics.clone() {
                    Some(m) => tokio::task::spawn_blocking(move || m.lock().map(|mut c| c.read()).ok())
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                let body = json!({
                    "uptime_s": started.elapsed().as_secs(),
                    "firmware": cfg.firmware,
                    "metrics": metrics.map(|m| serde_json::to_value(m).unwrap_or_default()).unwrap_or_else(|| json!({})),
                });
                client
                    .publish(&telemetry, QoS::AtLeastOnce, false, body.to_string())
                    .await
                    .map_err(|e| SessionError::Connection(e.to_string()))?;
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == commands => {
                    let cmd: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                    let id = cmd["id"].as_str().unwrap_or_default().to_owned();
                    let name = cmd["name"].as_str().unwrap_or_default().to_owned();
                    let args: Vec<String> = serde_json::from_value(cmd["args"].clone()).unwrap_or_default();
                    // The server's attestation challenge is protocol, not an
                    // operator command: it is not subject to the allowlist.
                    let (ok, result) = if name == "attest" && id.starts_with("attest-") {
                        attest(cfg.attester.clone(), &args).await
                    } else {
                        execute(&name, &args, &cfg.allowed_commands, started)
                    };
                    if name == palisade_core::RENEW_COMMAND {
                        // Renewing ends this session: the next one presents
                        // the new certificate.
                        let within = args.first().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                        publish_confirmed(&client, &mut events, &acks,
                            json!({ "id": id, "ok": true, "result": "renewing" }).to_string(),
                            Duration::from_secs(5)).await?;
                        let _ = client.disconnect().await;
                        return Err(SessionError::Renew(within.min(7 * 86_400)));
                    }
                    if name == palisade_core::wipe::COMMAND_NAME {
                        // A refusal keeps the session; a wipe ends it for good.
                        wipe(&client, &mut events, cfg, &acks, &id, &args).await?;
                        continue;
                    }
                    tracing::info!(%id, %name, ok, "command");
                    if let Some(v) = &cfg.journal {
                        let entry = json!({ "id": id, "name": name, "args": args, "ok": ok,
                            "result": result, "at_ms": palisade_core::Clock::now_ms(&palisade_core::SystemClock) });
                        if let Err(e) = v.append_journal(crate::vault::JOURNAL, &entry) {
                            tracing::warn!(error = %e, "could not journal the command");
                        }
                    }
                    client
                        .publish(&acks, QoS::AtLeastOnce, false, json!({ "id": id, "ok": ok, "result": result }).to_string())
                        .await
                        .map_err(|e| SessionError::Connection(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ota => {
                    // An assignment was announced: the installer checks its
                    // signed assignment now (the message itself is not trusted).
                    if let Some(n) = &cfg.update {
                        n.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(SessionError::Connection(e.to_string())),
            },
        }
    }
}

impl crate::state::Agent {
    /// Runs the MQTT session until `stop`, reconnecting with backoff and jitter
    /// and picking up a renewed certificate at each reconnect.
    pub async fn run_session(
        &self,
        cfg: &SessionConfig,
        mut stop: tokio::sync::watch::Receiver<bool>,
        jitter: impl Fn() -> f64,
    ) {
        let started = std::time::Instant::now();
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return;
            }
            let began = std::time::Instant::now();
            let outcome = match (self.identity(), self.operational_key()) {
                (Ok(Some(id)), Ok(key)) => {
                    let device = palisade_core::DeviceId::parse(&id.device_id)
                        .map_err(|e| SessionError::Identity(e.to_string()));
                    match device {
                        Ok(device) => {
                            run_once(
                                &device,
                                vec![CertificateDer::from(id.cert_der)],
                                key,
                                self.est().roots(),
                                cfg,
                                started,
                                &mut stop,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => Err(SessionError::Identity("not enrolled".into())),
            };
            match outcome {
                Ok(()) | Err(SessionError::Wiped) => return,
                Err(SessionError::Renew(within)) => {
                    let wait = (within as f64 * jitter().clamp(0.0, 1.0)) as u64;
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(wait)) => {}
                        _ = stop.changed() => return,
                    }
                    match self.renew().await {
                        Ok(new) => {
                            tracing::info!(serial = %new.serial, "renewed on the control plane's request")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "renewal on the control plane's request failed; the schedule retries")
                        }
                    }
                    failures = 0;
                }
                Err(e) => {
                    // A session that lived a while resets the backoff.
                    if began.elapsed() > std::time::Duration::from_secs(60) {
                        failures = 0;
                    }
                    let now = self.clock().now();
                    let wait = crate::schedule::backoff(
                        failures,
                        jitter(),
                        now,
                        now + time::Duration::days(1),
                    );
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in = %wait, "MQTT session ended");
                    let secs = u64::try_from(wait.whole_milliseconds().max(100)).unwrap_or(100);
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(secs)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_commands_run() {
        let allowed = vec!["ping".to_owned()];
        let t = Instant::now();
        assert_eq!(execute("ping", &[], &allowed, t), (true, json!("pong")));
        let (ok, why) = execute("reboot", &[], &allowed, t);
        assert!(!ok && why.as_str().unwrap().contains("not allowed"));
    }
}
