//! PostgreSQL killed and restarted under load, at process level: a node on a
//! PostgreSQL cluster of this test's own (`scripts/postgres.sh`) takes writes
//! from an operator in a loop; the database is stopped as if killed
//! (`pg_ctl -m immediate`). The node reports not ready and refuses writes
//! with a clear error; once the database is back it is ready again by itself,
//! every write it acknowledged is there, and the audit log verifies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_interop::*;
use serde_json::Value;

fn postgres(args: &[&str]) -> String {
    let o = Command::new("bash")
        .arg(manifest_dir().join("../../scripts/postgres.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "postgres.sh {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn readyz(node: &ServerProc) -> String {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(node.data.join("ca/root.pem"))
        .arg(format!("{}/readyz", node.url))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_node_rides_out_a_database_restart_without_losing_an_acknowledged_write() {
    if !std::path::Path::new("/usr/lib/postgresql").exists() {
        assert!(
            !in_ci(),
            "PostgreSQL is not installed: scripts/test.sh installs it"
        );
        eprintln!("SKIP: PostgreSQL is not installed (apt-get install postgresql)");
        return;
    }
    if !have("psql") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pg = dir.path().join("pg");
    let admin = postgres(&["start", pg.to_str().unwrap()]);
    let pg_dir = pg.to_str().unwrap().to_owned();
    let _stop = Guard(pg_dir.clone());
    let url = create_postgres_database(&admin, "palisade_restart").unwrap();
    let node =
        Arc::new(ServerProc::start_with(&dir.path().join("node"), &["--database", &url]).unwrap());
    assert_eq!(readyz(&node), "ready\n");

    // An operator adds models in a loop; what was acknowledged is noted.
    let done = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (node, done, acked, refused) =
            (node.clone(), done.clone(), acked.clone(), refused.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let name = format!("m-{i:04}");
                let o = node.cli(&["model", "add", &name]);
                if o.status.success() {
                    acked.lock().unwrap().push(name);
                } else {
                    refused.lock().unwrap().push(text(&o));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // The database dies.
    postgres(&["stop", &pg_dir, "immediate"]);
    let down = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    let said = loop {
        let r = readyz(&node);
        if r.starts_with("not ready") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(said.starts_with("not ready"), "{said}");
    eprintln!(
        "not ready {:?} after the database stopped: {}",
        down.elapsed(),
        said.trim()
    );
    std::thread::sleep(Duration::from_secs(2));
    let o = node.cli(&["model", "add", "while-down"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the database is unavailable; retry shortly"),
        "{}\nthe node's log:\n{}",
        text(&o),
        std::fs::read_to_string(node.data.with_extension("log")).unwrap_or_default()
    );

    // It comes back: the node is ready again by itself.
    postgres(&["restart", &pg_dir]);
    let up = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&node) != "ready\n" {
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after the database came back: {}",
            readyz(&node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "ready again {:?} after the database came back",
        up.elapsed()
    );
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < before + 5 {
        assert!(Instant::now() < deadline, "writes did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Every acknowledged write is there; refusals said why.
    let models: Value = serde_json::from_str(&node.cli_ok(&["model", "list", "--json"])).unwrap();
    let stored: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let acked = acked.lock().unwrap();
    for m in acked.iter() {
        assert!(
            stored.contains(&m.as_str()),
            "{m} was acknowledged but is not stored"
        );
    }
    let refused = refused.lock().unwrap();
    assert!(
        !refused.is_empty(),
        "no write was refused while the database was down"
    );
    for r in refused.iter() {
        assert!(
            r.contains("unavailable"),
            "a refusal that does not say why: {r}"
        );
    }
    eprintln!(
        "{} writes acknowledged and stored, {} refused while the database was down",
        acked.len(),
        refused.len()
    );
    let o = node.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Stops the test's PostgreSQL cluster when the test ends.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(manifest_dir().join("../../scripts/postgres.sh"))
            .args(["stop", &self.0, "immediate"])
            .output();
    }
}
