//! Kill a node under load: three `palisade serve` nodes on one PostgreSQL
//! behind HAProxy (`contrib/haproxy.cfg`), 1 000 simulated devices
//! (`palisade-sim`: real agents, EST enrolment, MQTT sessions, QoS 1
//! telemetry, commands) connected through the balancer, enrolments in flight.
//! The first node (which holds the singletons' leads) is SIGKILLed. Every
//! device reconnects to the other two; every enrolment that was answered with
//! a certificate is in the store; commands sent afterwards reach their
//! devices; the singletons' leads are taken again; the audit log verifies.
//! Then devices are revoked through each surviving node and the time from the
//! revocation to the session's end is measured (p99 under one second).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::balancer::{Haproxy, cluster_peers, node_config};
use palisade_interop::*;
use serde_json::Value;

const DEVICES: usize = 1000;
/// The leads: rollouts, posture-snapshots, session-detectors,
/// fleet-comparison, tuf-signing, crl-signing.
const SINGLETONS: usize = 6;

fn connected(nodes: &[&ServerProc]) -> Vec<usize> {
    nodes.iter().map(|n| n.connected_devices()).collect()
}

/// Advisory locks granted on database `db` (the leads, and any audit batch
/// in progress).
fn leads(admin: &str, db: &str) -> usize {
    let o = Command::new("psql")
        .arg(admin)
        .args(["-tAc", &format!("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = '{db}')")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_node_killed_under_load_loses_no_device_and_nothing_acknowledged() {
    let Some(admin) = cluster_peers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url =
        create_postgres_database(&admin, &format!("palisade_failover_{}", std::process::id()))
            .unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_config()).unwrap();
    let mut nodes = nodes_env(
        dir.path(),
        &url,
        3,
        &["--config", config.to_str().unwrap()],
        &[],
    )
    .unwrap();
    let lb = {
        let refs: Vec<&ServerProc> = nodes.iter().collect();
        Haproxy::start(dir.path(), &refs).unwrap()
    };
    for (i, n) in nodes.iter_mut().enumerate() {
        lb.front_node(n, i).unwrap();
    }
    let lb_url = format!("https://127.0.0.1:{}", lb.https_port);
    let lb_mqtt = format!("127.0.0.1:{}", lb.mqtt_port);

    // The fleet, through the balancer.
    let started = Instant::now();
    let sim_log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
    let mut sim = Command::new(palisade_sim_bin())
        .args(["--devices", &DEVICES.to_string(), "--duration", "0"])
        .args([
            "--telemetry-every",
            "5",
            "--concurrency",
            "32",
            "--model",
            "sim",
        ])
        .args(["--url", &lb_url, "--mqtt", &lb_mqtt])
        .arg("--state-dir")
        .arg(dir.path().join("sim"))
        .env("PALISADE_DATA_DIR", &nodes[1].data)
        .stdout(Stdio::null())
        .stderr(sim_log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let c = connected(&nodes.iter().collect::<Vec<_>>());
        if c.iter().sum::<usize>() >= DEVICES {
            eprintln!(
                "{DEVICES} devices connected in {:?}: {c:?} per node",
                started.elapsed()
            );
            break;
        }
        assert!(
            sim.try_wait().unwrap().is_none(),
            "palisade-sim exited: {}",
            std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "only {c:?} connected after 240 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = connected(&[&nodes[0]])[0];
    assert!(before > 0, "the balancer put no device on the first node");
    let db = url.rsplit('/').next().unwrap().to_owned();
    assert!(
        leads(&admin, &db) >= SINGLETONS,
        "the singletons' leads are held"
    );

    // Enrolments in flight when the node dies: 48 EST requests, 8 at a time.
    let tokens: Vec<String> = (0..48)
        .map(|_| {
            nodes[1]
                .cli_ok(&["enrollment-token", "create", "--model", "sim"])
                .trim()
                .to_owned()
        })
        .collect();
    let est_dir = dir.path().join("est");
    std::fs::create_dir_all(&est_dir).unwrap();
    let jobs: String = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("late-{i:02} {t}\n"))
        .collect();
    std::fs::write(est_dir.join("jobs"), jobs).unwrap();
    let script = format!(
        "xargs -P 8 -L 1 sh -c 'openssl ecparam -name prime256v1 -genkey -noout -out $0.key && \
         openssl req -new -key $0.key -subj /CN=$0 -outform DER | base64 > $0.b64 && \
         curl -s --max-time 20 --cacert {root} -u \"$0:$1\" -H \"Content-Type: application/pkcs10\" \
           --data-binary @$0.b64 {lb_url}/.well-known/est/simpleenroll -o $0.p7 -w \"%{{http_code}}\" > $0.status; true' < jobs",
        root = nodes[1].data.join("ca/root.pem").display(),
    );
    let mut enrolments = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&est_dir)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // SIGKILL the first node.
    let killed_at = Instant::now();
    nodes[0].kill9();
    assert!(enrolments.wait().unwrap().success());

    // Every device comes back, on the two others.
    let survivors: Vec<&ServerProc> = nodes[1..].iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let back = loop {
        let c = connected(&survivors);
        if c.iter().sum::<usize>() >= DEVICES {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "only {c:?} reconnected 90 s after the kill"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "{before} devices lost their node; all {DEVICES} connected again {:?} after the kill: {back:?}",
        killed_at.elapsed()
    );

    // Every enrolment answered with a certificate is in the store.
    let mut answered = 0;
    for i in 0..tokens.len() {
        let status = std::fs::read_to_string(est_dir.join(format!("late-{i:02}.status")))
            .unwrap_or_default();
        if status != "200" {
            continue;
        }
        answered += 1;
        let o = sh(
            &format!(
                "base64 -d late-{i:02}.p7 | openssl pkcs7 -inform DER -print_certs | openssl x509 -noout -serial"
            ),
            &est_dir,
        );
        let serial = text(&o).trim().trim_start_matches("serial=").to_lowercase();
        let device: Value = serde_json::from_str(&nodes[1].cli_ok(&[
            "device",
            "show",
            &format!("late-{i:02}"),
            "--json",
        ]))
        .unwrap();
        let stored: Vec<String> = device["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["serial"].as_str().map(str::to_lowercase))
            .collect();
        assert!(
            stored
                .iter()
                .any(|s| s.trim_start_matches('0') == serial.trim_start_matches('0')),
            "enrolment late-{i:02} was answered with certificate {serial}; the store has {stored:?}"
        );
    }
    eprintln!(
        "{answered} of {} enrolments in flight were answered; all are in the store",
        tokens.len()
    );

    // The singletons' leads were taken again by the survivors.
    let deadline = Instant::now() + Duration::from_secs(10);
    while leads(&admin, &db) < SINGLETONS {
        assert!(Instant::now() < deadline, "the leads were not taken again");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Commands reach devices, whichever node they are on.
    let mut ids = Vec::new();
    for (k, d) in (1..=20).map(|i| format!("sim-{:04}", i * 37)).enumerate() {
        let v: Value = serde_json::from_str(
            &survivors[k % 2].cli_ok(&["device", "command", &d, "ping", "--json"]),
        )
        .unwrap();
        ids.push((d, v["id"].as_str().unwrap().to_owned()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (d, id) in &ids {
        loop {
            let list: Value =
                serde_json::from_str(&survivors[0].cli_ok(&["device", "commands", d, "--json"]))
                    .unwrap();
            let c = list
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == *id)
                .cloned()
                .unwrap();
            if c["status"] == "acked" {
                break;
            }
            assert!(Instant::now() < deadline, "command {id} to {d}: {c}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Revocation on each survivor ends the session wherever it is.
    let mut took = Vec::new();
    let mut last_serial = String::new();
    for i in 0..20 {
        let id = format!("rv-{i:02}");
        let (key, cert) = enrol_with_token(survivors[0], dir.path(), &id, "sim");
        let mut held = hold_session(survivors[i % 2], &cert, &key, &id);
        let v: Value =
            serde_json::from_str(&survivors[0].cli_ok(&["device", "show", &id, "--json"])).unwrap();
        let serial = v["certificates"][0]["serial"].as_str().unwrap().to_owned();
        let revoker = survivors[(i + i / 2) % 2];
        let t = Instant::now();
        revoker.cli_ok(&["cert", "revoke", &serial]);
        last_serial = serial;
        loop {
            if held.try_wait().unwrap().is_some() {
                took.push(t.elapsed());
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{id}'s session outlived its revocation"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    took.sort();
    let p99 = took[(took.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "revocation -> disconnect across nodes: median {:?}, p99 {p99:?}",
        took[took.len() / 2]
    );
    assert!(p99 < Duration::from_secs(1), "{took:?}");
    // CRL signing resumed on a survivor: both serve one CRL with the last
    // revocation.
    one_crl_listing(&survivors, &last_serial, Duration::from_secs(5));

    // One audit log, still whole.
    let o = survivors[0].cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let _ = sim.kill();
    let _ = sim.wait();
}
