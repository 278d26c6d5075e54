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

use std::process::Child;
use std::time::{Duration, Instant};

use palisade_interop::{enrol_with_token, hold_session};

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
    let (a, b) = palisade_interop::two_nodes(dir.path(), &url).unwrap();
    a.cli_ok(&["model", "add", "cam"]);

    let mut held: Vec<(String, Child)> = Vec::new();
    for i in 0..n {
        let id = format!("cam-{i}");
        let (key, cert) = enrol_with_token(&a, dir.path(), &id, "cam");
        let v: serde_json::Value =
            serde_json::from_str(&a.cli_ok(&["device", "show", &id, "--json"])).unwrap();
        let serial = v["certificates"][0]["serial"].as_str().unwrap().to_owned();
        let child = hold_session(&b, &cert, &key, &id);
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
