//! Benchmark S9: zero-touch enrolment and connection of a simulated fleet
//! across nodes. Three `palisade serve` nodes on one PostgreSQL database; one
//! `palisade-sim` per node enrols its share of the devices over EST (one-time
//! tokens, a fresh P-256 key each) and connects them over MQTT/TLS with their
//! certificates. Prints the time until every device is connected, the rate,
//! and the nodes' CPU seconds (devices per node-CPU-second), since the
//! machine is shared.
//!
//! The process file limit (`ulimit -n`, 20 000 hard here) caps each node and
//! each simulator at under 20 000 connections, so the full run puts 17 000 on
//! each of three nodes (51 000). `PALISADE_BENCH_DEVICES` overrides the total.
//!
//! ```text
//! cargo build --release -p palisade
//! PALISADE_BENCH_POSTGRES='postgres://USER:PW@127.0.0.1:PORT/postgres' \
//!   cargo bench -p palisade-interop --bench fleet_scale [-- --quick]
//! ```
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::{ServerProc, cpu_seconds, nodes_env, palisade_sim_bin};

const NODES: usize = 3;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total: usize = std::env::var("PALISADE_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 300 } else { 51_000 });
    let per_node = total.div_ceil(NODES);
    let Some(admin) = std::env::var("PALISADE_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("fleet_scale: PALISADE_BENCH_POSTGRES is not set; nothing measured");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = palisade_interop::create_postgres_database(
        &admin,
        &format!("palisade_bench_scale_{}", std::process::id()),
    )
    .unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[limits]\nmax_connections = 4096\n").unwrap();
    let nodes = nodes_env(
        dir.path(),
        &url,
        NODES,
        &["--config", config.to_str().unwrap()],
        &[],
    )
    .unwrap();
    nodes[0].cli_ok(&["model", "add", "sim"]);
    let cpu_before: Vec<f64> = nodes.iter().map(|n| cpu_seconds(n.child.id())).collect();

    let started = Instant::now();
    let mut sims: Vec<Child> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| sim(n, i, per_node, dir.path()))
        .collect();
    let limit = Duration::from_secs(if quick { 120 } else { 600 });
    let (took, per) = loop {
        let c: Vec<usize> = nodes.iter().map(ServerProc::connected_devices).collect();
        if c.iter().sum::<usize>() >= per_node * NODES {
            break (started.elapsed(), c);
        }
        for (i, s) in sims.iter_mut().enumerate() {
            if let Some(status) = s.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join(format!("sim{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!("palisade-sim {i} exited with {status}: {tail:?}");
            }
        }
        if started.elapsed() > limit {
            panic!("only {c:?} connected after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let cpu: f64 = nodes
        .iter()
        .zip(&cpu_before)
        .map(|(n, b)| cpu_seconds(n.child.id()) - b)
        .sum();
    for s in &mut sims {
        let _ = s.kill();
        let _ = s.wait();
    }
    let n = per_node * NODES;
    println!(
        "palisade fleet scale benchmark S9 ({})",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{n} devices enrolled (EST) and connected (MQTT/TLS) across {NODES} nodes on PostgreSQL in {:.1} s: {:.0} devices/s; nodes' CPU {:.1} s ({:.0} devices per node-CPU-second); per node {:?}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        cpu,
        n as f64 / cpu.max(0.001),
        per
    );
}

/// `palisade-sim` enrolling and connecting `devices` devices to `node`.
fn sim(node: &ServerProc, i: usize, devices: usize, dir: &std::path::Path) -> Child {
    let log = std::fs::File::create(dir.join(format!("sim{i}.log"))).unwrap();
    Command::new(palisade_sim_bin())
        .args(["--devices", &devices.to_string(), "--duration", "0"])
        .args(["--telemetry-every", "600", "--concurrency", "48"])
        .args(["--model", "sim", "--prefix", &format!("n{i}")])
        .arg("--state-dir")
        .arg(dir.join(format!("sim{i}")))
        .env("PALISADE_DATA_DIR", &node.data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
