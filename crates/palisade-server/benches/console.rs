//! Benchmark: the web console at fleet scale. A server is built on a fresh
//! data directory and its store filled with 100 000 devices (three models, two
//! sites and their placements, a real operational certificate each, tags,
//! alerts); then the posture of the whole fleet is evaluated, and the device
//! list (filtered, sorted, first and deep pages, search) and the overview are
//! requested through the console's router with a signed-in session, timing
//! each request from the router's call to the last byte of the page. Run:
//!
//! ```text
//! cargo bench -p palisade-server --bench console            # 100 000 devices
//! cargo bench -p palisade-server --bench console -- --quick # 10 000, fewer rounds
//! ```
//! Times are server time (no TLS or network); rates are per wall second and
//! per CPU-second of this process (the machine is shared).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use palisade_control::fleet::ModelPolicy;
use palisade_control::pki::{Pki, cert_record};
use palisade_core::role::Role;
use palisade_core::{
    AlertState, DeviceId, DeviceState, KeyProtection, ModelId, OperatorName, SiteName, Tag,
};
use palisade_pki::Profile;
use palisade_server::{Config, Server, SystemClock};
use palisade_store::{
    AlertRecord, Change, DeviceRecord, HardwareTrust, Onboarding, PlacementRecord, SiteRecord,
};
use tower::ServiceExt;
use zeroize::Zeroizing;

/// CPU seconds (user + system, all threads) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

const MODELS: [&str; 3] = ["thermostat", "camera", "door-lock"];

/// Fills the store: models, sites, `n` devices with certificates, placements,
/// tags and some alerts, in batches.
async fn populate(s: &palisade_http::Services, n: usize) {
    let now = s.clock.now_ms();
    for (i, m) in MODELS.iter().enumerate() {
        s.fleet
            .add_model(
                "bench",
                ModelId::parse(m).unwrap(),
                ModelPolicy {
                    description: format!("{m} (bench)"),
                    cert_validity_days: Some(30),
                    approval_required: false,
                    allowed_key_types: None,
                    attestation: None,
                    supplier: None,
                    support_until_ms: Some(now + (i as i64 - 1) * 400 * 86_400_000),
                    security_update_days: Some(30),
                },
            )
            .await
            .unwrap();
    }
    for site in ["plant-north", "office-south"] {
        s.store
            .commit(
                vec![Change::UpsertSite(SiteRecord {
                    name: SiteName::parse(site).unwrap(),
                    spec: serde_json::json!({
                        "resolver": "10.0.0.1", "control_plane": [["127.0.0.1", 8443]],
                        "segments": [{"name": "iot", "interface": "eth1", "subnet": "10.0.0.0/8"}]
                    })
                    .to_string(),
                    created_ms: now,
                    updated_ms: now,
                })],
                vec![],
            )
            .await
            .unwrap();
    }
    // One key for every certificate: the signatures (and serials) are each
    // certificate's own.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let started = Instant::now();
    let progress = n / 10;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut changes = Vec::with_capacity(chunk.len() * 4);
        for &i in chunk {
            let model = MODELS[i % 3];
            let id = DeviceId::parse(&format!("{}-{i:06}", &model[..3])).unwrap();
            let protection = match i % 3 {
                0 => KeyProtection::SecureElement,
                _ => KeyProtection::Software,
            };
            changes.push(Change::InsertDevice(DeviceRecord {
                id: id.clone(),
                model: ModelId::parse(model).unwrap(),
                state: if i % 97 == 0 {
                    DeviceState::Quarantined
                } else {
                    DeviceState::Active
                },
                hardware_serial: Some(format!("SN{i:08}")),
                created_ms: now - 86_400_000,
                updated_ms: now,
                onboarding: Onboarding::default(),
                last_seen_ms: Some(now - (i as i64 % 3600) * 1000),
                reported_firmware: Some(format!("1.{}.0", i % 4)),
                hardware: HardwareTrust {
                    key_protection: Some(protection),
                    ..HardwareTrust::default()
                },
            }));
            let issued = s
                .pki
                .issue(
                    Profile::DeviceIdentity,
                    id.as_str(),
                    vec![Pki::device_uri(&id)],
                    &spki,
                    time::Duration::days(30),
                )
                .unwrap();
            changes.push(Change::InsertCertificate(cert_record(
                &issued,
                Profile::DeviceIdentity,
                Some(id.clone()),
                s.clock.now(),
            )));
            changes.push(Change::SetPlacement(PlacementRecord {
                device: id.clone(),
                site: SiteName::parse(if i % 2 == 0 {
                    "plant-north"
                } else {
                    "office-south"
                })
                .unwrap(),
                segment: "iot".into(),
                address: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                overrides: "{}".into(),
                updated_ms: now,
            }));
            changes.push(Change::SetDeviceTags {
                device: id.clone(),
                tags: vec![Tag::parse(if i % 2 == 0 { "floor-1" } else { "floor-2" }).unwrap()],
            });
            if i % 500 == 0 {
                changes.push(Change::OpenAlert(AlertRecord {
                    id: format!("al-{i:06}"),
                    dedup_key: format!("{id}:bench"),
                    detector: "failed_logins".into(),
                    severity: if i % 1000 == 0 { "critical" } else { "medium" }.into(),
                    device: Some(id.to_string()),
                    peer: None,
                    state: AlertState::Open,
                    summary: format!("bench alert on {id}"),
                    evidence: "{}".into(),
                    last_evidence: "{}".into(),
                    count: 1,
                    first_ms: now,
                    last_ms: now,
                    acked_by: None,
                    acked_ms: None,
                    resolved_by: None,
                    resolved_ms: None,
                    note: String::new(),
                    responses: "[]".into(),
                }));
            }
        }
        s.store.commit(changes, vec![]).await.unwrap();
        if progress > 0 && (chunk[0] + 1000) % progress < 1000 {
            println!(
                "  populated {} devices ({:.0} s)",
                chunk[0] + chunk.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

struct Figures {
    name: String,
    times_ms: Vec<f64>,
    cpu: f64,
    wall: f64,
}

impl Figures {
    fn pct(&self, p: f64) -> f64 {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        let i = ((t.len() as f64 - 1.0) * p).round() as usize;
        t.get(i).copied().unwrap_or(f64::NAN)
    }
}

async fn measure(
    app: &axum::Router,
    cookie: &str,
    name: &str,
    path: &str,
    rounds: usize,
) -> Figures {
    let get = || {
        Request::get(path)
            .header("cookie", format!("palisade_session={cookie}"))
            .body(Body::empty())
            .unwrap()
    };
    // Warm-up (caches, prepared statements).
    for _ in 0..3 {
        let r = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.into_body().collect().await.unwrap();
    }
    let (w0, c0) = (Instant::now(), cpu_seconds());
    let mut times_ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        times_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1000, "{path}: a short page");
    }
    Figures {
        name: name.to_owned(),
        times_ms,
        cpu: cpu_seconds() - c0,
        wall: w0.elapsed().as_secs_f64(),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10_000 } else { 100_000 };
    let rounds = if quick { 20 } else { 100 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            mqtt_listen: None,
            coap_listen: None,
            oscore_listen: None,
            ..Config::default()
        };
        config.monitoring.flow_listen = None;
        let server = Server::build(config, Arc::new(SystemClock)).await.unwrap();
        let s = server.services();
        println!("console benchmark: {n} devices, {rounds} requests per scenario");
        let t = Instant::now();
        populate(&s, n).await;
        println!("  populated in {:.1} s", t.elapsed().as_secs_f64());

        // Posture of the whole fleet.
        let mut rates = vec![];
        for _ in 0..3 {
            let (w0, c0) = (Instant::now(), cpu_seconds());
            let f = s.posture.evaluate_fleet().await.unwrap();
            let (wall, cpu) = (w0.elapsed().as_secs_f64(), cpu_seconds() - c0);
            rates.push((f.devices.len() as f64 / wall, f.devices.len() as f64 / cpu, wall));
        }
        rates.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (per_s, per_cpu, wall) = rates[1];
        println!(
            "posture evaluation, whole fleet (median of 3): {wall:.2} s, {per_s:.0} devices/s, {per_cpu:.0} devices/CPU-s"
        );

        s.accounts
            .add(
                "bench",
                OperatorName::parse("bench").unwrap(),
                Role::Admin,
                Zeroizing::new("a bench password of enough length".into()),
            )
            .await
            .unwrap();
        let session = s
            .accounts
            .login(
                "bench",
                Zeroizing::new("a bench password of enough length".into()),
                "127.0.0.1".parse().unwrap(),
            )
            .await
            .unwrap();
        let cookie = session.cookie.to_string();
        let app = palisade_console::router(
            s.clone(),
            palisade_console::ConsoleSettings {
                offline_after_ms: 15 * 60_000,
            },
        );
        let deep = n / 50 / 2;
        let scenarios = [
            ("list: first page, by id", "/devices".to_owned()),
            (
                "list: model + state, by last seen, deep page",
                format!("/devices?model=camera&state=active&sort=seen&dir=desc&page={}", deep / 3),
            ),
            (
                "list: site + firmware, by firmware",
                "/devices?site=plant-north&firmware=1.2.0&sort=firmware&page=3".to_owned(),
            ),
            ("list: search", "/devices?q=cam-0123".to_owned()),
            (
                "list: offline, by model",
                "/devices?conn=offline&sort=model&page=2".to_owned(),
            ),
            ("list: failing posture", "/devices?posture=fail&page=5".to_owned()),
            ("list: last page", format!("/devices?page={}", n / 50)),
            ("overview", "/".to_owned()),
        ];
        let mut all = vec![];
        for (name, path) in &scenarios {
            all.push(measure(&app, &cookie, name, path, rounds).await);
        }
        println!(
            "\n{:<46} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "scenario", "median ms", "p99 ms", "max ms", "req/s", "req/CPU-s"
        );
        for f in &all {
            println!(
                "{:<46} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.1}",
                f.name,
                f.pct(0.5),
                f.pct(0.99),
                f.pct(1.0),
                f.times_ms.len() as f64 / f.wall,
                f.times_ms.len() as f64 / f.cpu.max(1e-9)
            );
        }
        let list_p99 = all
            .iter()
            .filter(|f| f.name.starts_with("list"))
            .map(|f| f.pct(0.99))
            .fold(0.0, f64::max);
        let overview_p99 = all.last().map_or(f64::NAN, |f| f.pct(0.99));
        println!(
            "\nworst device-list p99: {list_p99:.1} ms (goal 200 ms); overview p99: {overview_p99:.1} ms (goal 300 ms)"
        );
        drop(app);
        drop(s);
        drop(server);
    });
}
