//! Benchmark: certificates issued per second from CSRs, next to this machine's
//! own ECDSA P-256 signing rate (`openssl speed`, the physical limit of one core),
//! and durable audit appends per second. Run:
//!
//! ```text
//! cargo bench -p palisade-server --bench issuance            # full
//! cargo bench -p palisade-server --bench issuance -- --quick # smoke
//! ```
//! Rates are wall-clock and per CPU-second of this process (the machine is shared).
//! With `PALISADE_BENCH_POSTGRES` set to a PostgreSQL URL whose account may
//! create databases, the durable scenarios run on PostgreSQL too, in the same
//! run, and their CPU-seconds include the PostgreSQL server's processes.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use palisade_audit::EntryDraft;
use palisade_control::fleet::Fleet;
use palisade_control::pki::Pki;
use palisade_core::DeviceId;
use palisade_pki::{CsrLimits, Profile, verify_csr};
use palisade_server::{Config, SystemClock, bootstrap};
use palisade_store::Store;
use time::Duration;

/// CPU seconds (user + system, all threads) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); after ')' they are 12 and 13 (1-based).
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds so far of every `postgres` process on this machine (the
/// server's backends do the database's share of the work).
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (ticks(11) + ticks(12)) / 100.0;
    }
    total
}

struct Rate {
    name: &'static str,
    ops: u64,
    wall: f64,
    cpu: f64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.wall
    }
    fn per_cpu_sec(&self) -> f64 {
        if self.cpu > 0.0 {
            self.ops as f64 / self.cpu
        } else {
            f64::NAN
        }
    }
}

fn measure<F: FnOnce() -> u64>(name: &'static str, f: F) -> Rate {
    measure_with(name, cpu_seconds, f)
}

fn measure_with<F: FnOnce() -> u64>(name: &'static str, cpu: fn() -> f64, f: F) -> Rate {
    let (w0, c0) = (Instant::now(), cpu());
    let ops = f();
    Rate {
        name,
        ops,
        wall: w0.elapsed().as_secs_f64(),
        cpu: cpu() - c0,
    }
}

/// This process and the PostgreSQL server together.
fn with_postgres_cpu() -> f64 {
    cpu_seconds() + postgres_cpu_seconds()
}

/// `openssl speed ecdsap256`: (sign/s, verify/s) on one core.
fn openssl_ecdsa_p256(seconds: u32) -> Option<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("nistp256"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    let n = nums.len();
    (n >= 2).then(|| (nums[n - 2], nums[n - 1]))
}

/// Runs operations `0..n` spread over `conc` concurrent tasks; returns how many ran.
fn concurrently<F, Fut>(rt: &tokio::runtime::Runtime, conc: usize, n: usize, op: F) -> u64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.block_on(async move {
        let mut tasks = vec![];
        for t in 0..conc {
            let op = op.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                for i in (t..n).step_by(conc) {
                    op(i).await;
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    })
}

fn csrs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            rcgen::CertificateParams::new(vec![])
                .unwrap()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_issue, n_durable, n_audit, speed_secs) = if quick {
        (300, 300, 300, 1)
    } else {
        (5_000, 5_000, 20_000, 5)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let boot = rt
        .block_on(bootstrap::bootstrap(&config, Arc::new(SystemClock)))
        .unwrap();
    let pki: Arc<Pki> = boot.pki.clone();
    let store: Arc<dyn Store> = boot.store.clone();
    let requests = csrs(n_issue.max(n_durable));

    println!(
        "palisade issuance benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    let openssl = openssl_ecdsa_p256(speed_secs);

    // 1. CSR check + certificate signing, in memory, one thread.
    let sign_only = measure("issue from CSR, in memory (1 thread)", || {
        for der in requests.iter().take(n_issue) {
            let csr = verify_csr(der, &CsrLimits::default()).unwrap();
            pki.issue(
                Profile::DeviceIdentity,
                "bench-device",
                vec![],
                &csr.spki_der,
                Duration::days(90),
            )
            .unwrap();
        }
        n_issue as u64
    });

    let requests = Arc::new(requests);
    let sqlite = durable_scenarios(
        &rt,
        store,
        pki,
        requests.clone(),
        n_durable,
        n_audit,
        cpu_seconds,
    );
    let postgres = std::env::var("PALISADE_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|admin| {
            let pg_dir = tempfile::tempdir().unwrap();
            let name = format!("palisade_bench_{}", std::process::id());
            let url = rt
                .block_on(palisade_store::conformance::postgres_database(
                    &admin, &name,
                ))
                .unwrap();
            let config = Config {
                data_dir: pg_dir.path().join("data"),
                store: palisade_server::config::StoreConfig {
                    url: Some(url),
                    ..Default::default()
                },
                ..Config::default()
            };
            let boot = rt
                .block_on(bootstrap::bootstrap(&config, Arc::new(SystemClock)))
                .unwrap();
            let rates = durable_scenarios(
                &rt,
                boot.store.clone(),
                boot.pki.clone(),
                requests.clone(),
                n_durable,
                n_audit,
                with_postgres_cpu,
            );
            (pg_dir, rates)
        });
    let [_, durable_64, audit_1, audit_256] = &sqlite;

    println!();
    println!(
        "{:<9}{:<52} {:>10} {:>14} {:>10}",
        "store", "scenario", "ops/s", "ops/CPU-s", "ops"
    );
    let row = |engine: &str, r: &Rate| {
        println!(
            "{:<9}{:<52} {:>10.0} {:>14.0} {:>10}",
            engine,
            r.name,
            r.per_sec(),
            r.per_cpu_sec(),
            r.ops
        );
    };
    row("", &sign_only);
    for r in &sqlite {
        row("sqlite", r);
    }
    if let Some((_, pg)) = &postgres {
        for r in pg {
            row("postgres", r);
        }
        println!("(postgres ops/CPU-s count this process and the PostgreSQL server's processes)");
        for (s, p) in sqlite.iter().zip(pg) {
            println!(
                "ratio postgres / sqlite, {}: {:.2} (wall) {:.2} (per CPU-s)",
                s.name,
                p.per_sec() / s.per_sec(),
                p.per_cpu_sec() / s.per_cpu_sec()
            );
        }
    }
    println!();
    match openssl {
        Some((sign, verify)) => {
            println!("openssl speed ecdsap256 (1 core): sign {sign:.0}/s, verify {verify:.0}/s");
            // An issuance verifies the CSR's signature and makes one signature: the
            // physical limit of one core is one verify plus one sign.
            let limit = 1.0 / (1.0 / sign + 1.0 / verify);
            println!("limit for one CSR verify + one sign per certificate (1 core): {limit:.0}/s");
            println!(
                "ratio: in-memory issuance / (verify + sign) limit = {:.3}",
                sign_only.per_sec() / limit
            );
            println!(
                "ratio: in-memory issuance / openssl P-256 sign = {:.3} (each issuance = 1 CSR verify + 1 sign + DER encoding)",
                sign_only.per_sec() / sign
            );
            println!(
                "ratio: durable issuance (64 clients) / openssl P-256 sign = {:.3}",
                durable_64.per_sec() / sign
            );
        }
        None => println!("openssl speed unavailable: no limit to compare against"),
    }
    println!(
        "group commit gain for audit appends: {:.1}x",
        audit_256.per_sec() / audit_1.per_sec()
    );
}

/// Durable issuance and audit appends on one store.
fn durable_scenarios(
    rt: &tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    requests: Arc<Vec<Vec<u8>>>,
    n_durable: usize,
    n_audit: usize,
    cpu: fn() -> f64,
) -> [Rate; 4] {
    // 2. Durable issuance through the fleet service: CSR check, signing, the
    //    inventory row and the audit entry committed (group commit) before the answer.
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        pki.clone(),
        Arc::new(SystemClock),
        8192,
        90,
        Arc::new(palisade_control::sessions::Sessions::default()),
        Arc::new(palisade_control::events::LocalBus::new(16)),
    ));
    rt.block_on(async {
        fleet
            .add_model(
                "bench",
                palisade_core::ModelId::parse("bench").unwrap(),
                Default::default(),
            )
            .await
            .unwrap();
        for i in 0..64 {
            fleet
                .register_device(
                    "bench",
                    DeviceId::parse(&format!("d{i}")).unwrap(),
                    palisade_core::ModelId::parse("bench").unwrap(),
                    None,
                )
                .await
                .unwrap();
        }
    });
    let durable = |conc: usize| {
        let (fleet, requests) = (fleet.clone(), requests.clone());
        concurrently(rt, conc, n_durable, move |i| {
            let (fleet, requests) = (fleet.clone(), requests.clone());
            async move {
                let id = DeviceId::parse(&format!("d{}", i % 64)).unwrap();
                fleet
                    .issue_device_certificate("bench", &id, &requests[i])
                    .await
                    .unwrap();
            }
        })
    };
    let durable_1 = measure_with("issue from CSR, durable + audited (1 client)", cpu, || {
        durable(1)
    });
    let durable_64 = measure_with(
        "issue from CSR, durable + audited (64 clients)",
        cpu,
        || durable(64),
    );

    // 3. Durable audit appends alone.
    let appends = |conc: usize| {
        let store = store.clone();
        concurrently(rt, conc, n_audit, move |i| {
            let store = store.clone();
            async move {
                let entry = EntryDraft::success("bench", "bench.append", i.to_string());
                store.commit(vec![], vec![entry]).await.unwrap();
            }
        })
    };
    let audit_1 = measure_with(
        "durable audit append (1 writer, one commit each)",
        cpu,
        || appends(1),
    );
    let audit_256 = measure_with(
        "durable audit append (256 writers, group commit)",
        cpu,
        || appends(256),
    );

    [durable_1, durable_64, audit_1, audit_256]
}
