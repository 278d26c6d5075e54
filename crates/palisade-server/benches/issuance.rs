//! Benchmark: certificates issued per second from CSRs, next to this machine's
//! own ECDSA P-256 signing rate (`openssl speed`, the physical limit of one core),
//! and durable audit appends per second. Run:
//!
//! ```text
//! cargo bench -p palisade-server --bench issuance            # full
//! cargo bench -p palisade-server --bench issuance -- --quick # smoke
//! ```
//! Rates are wall-clock and per CPU-second of this process (the machine is shared).
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
    let (w0, c0) = (Instant::now(), cpu_seconds());
    let ops = f();
    Rate {
        name,
        ops,
        wall: w0.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - c0,
    }
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

    // 2. Durable issuance through the fleet service: CSR check, signing, the
    //    inventory row and the audit entry committed (group commit) before the answer.
    let fleet = Arc::new(Fleet::new(
        store.clone(),
        pki.clone(),
        Arc::new(SystemClock),
        8192,
        90,
        Arc::new(palisade_control::sessions::Sessions::default()),
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
    let requests = Arc::new(requests);
    let durable = |conc: usize| {
        let (fleet, requests) = (fleet.clone(), requests.clone());
        concurrently(&rt, conc, n_durable, move |i| {
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
    let durable_1 = measure("issue from CSR, durable + audited (1 client)", || {
        durable(1)
    });
    let durable_64 = measure("issue from CSR, durable + audited (64 clients)", || {
        durable(64)
    });

    // 3. Durable audit appends alone.
    let appends = |conc: usize| {
        let store = store.clone();
        concurrently(&rt, conc, n_audit, move |i| {
            let store = store.clone();
            async move {
                let entry = EntryDraft::success("bench", "bench.append", i.to_string());
                store.commit(vec![], vec![entry]).await.unwrap();
            }
        })
    };
    let audit_1 = measure("durable audit append (1 writer, one commit each)", || {
        appends(1)
    });
    let audit_256 = measure("durable audit append (256 writers, group commit)", || {
        appends(256)
    });

    println!();
    println!(
        "{:<52} {:>10} {:>14} {:>10}",
        "scenario", "ops/s", "ops/CPU-s", "ops"
    );
    for r in [&sign_only, &durable_1, &durable_64, &audit_1, &audit_256] {
        println!(
            "{:<52} {:>10.0} {:>14.0} {:>10}",
            r.name,
            r.per_sec(),
            r.per_cpu_sec(),
            r.ops
        );
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
