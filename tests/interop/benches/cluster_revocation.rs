//! Benchmark: revocation on one node → the device's session closed on another,
//! two `palisade serve` nodes on one PostgreSQL database (the second started from
//! a copy of the first's data directory). Each device holds a session (paho) on
//! node B; its certificate is revoked through node A's CLI; the time from the
//! CLI's answer to the end of the device's session is one sample (an upper
//! bound: it includes the peer noticing and exiting). Prints median, p99 and max.
//!
//! ```text
//! PALISADE_BENCH_POSTGRES='postgres://USER:PW@127.0.0.1:PORT/postgres' \
//!   cargo bench -p palisade-interop --bench cluster_revocation [-- --quick]
//! ```
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::{ServerProc, enrol_with_token, peer_script, text};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5 } else { 40 };
    let Some(admin) = std::env::var("PALISADE_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("cluster_revocation: PALISADE_BENCH_POSTGRES is not set; nothing measured");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = palisade_interop::create_postgres_database(
        &admin,
        &format!("palisade_bench_cluster_{}", std::process::id()),
    )
    .unwrap();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let a = ServerProc::start_with(&a_data, &["--database", &url]).unwrap();
    let o = Command::new("cp")
        .arg("-a")
        .arg(&a_data)
        .arg(&b_data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let b = ServerProc::start_with(&b_data, &["--database", &url]).unwrap();
    a.cli_ok(&["model", "add", "cam"]);

    let mut held: Vec<(String, Child)> = Vec::new();
    for i in 0..n {
        let id = format!("cam-{i}");
        let (key, cert) = enrol_with_token(&a, dir.path(), &id, "cam");
        let v: serde_json::Value =
            serde_json::from_str(&a.cli_ok(&["device", "show", &id, "--json"])).unwrap();
        let serial = v["certificates"][0]["serial"].as_str().unwrap().to_owned();
        let mut child = Command::new("python3")
            .arg(peer_script("persistent_session.py"))
            .args([
                "127.0.0.1",
                &b.mqtt_port().to_string(),
                b.data.join("ca/root.pem").to_str().unwrap(),
                cert.to_str().unwrap(),
                key.to_str().unwrap(),
                &id,
                "hold",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "subscribed",
            "{id} could not subscribe on node B"
        );
        held.push((serial, child));
    }

    let mut samples = Vec::new();
    for (serial, mut child) in held {
        a.cli_ok(&["cert", "revoke", &serial]);
        let t = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                samples.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("node B kept the session of revoked certificate {serial} for 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "palisade cluster revocation benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    println!(
        "revocation on node A -> session closed on node B, {} devices: median {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal: p99 < 1000 ms)",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1])
    );
}
