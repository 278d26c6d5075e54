//! Benchmark: EST `simpleenroll` issuances per second, each over a fresh
//! mutual-TLS connection (birth certificate as the client certificate), against a
//! real `palisade serve` child process, with this machine's crypto limit printed
//! beside it. Rates per wall second and per CPU-second of the server process.
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench est_enroll            # full
//! cargo bench -p palisade-interop --bench est_enroll -- --quick # smoke
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use palisade_agent::{EnrollAuth, EstClient};
use palisade_core::{KeyAlgorithm, Signer};
use palisade_interop::{ServerProc, cpu_seconds};
use palisade_keystore::SoftwareKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

fn openssl_ecdsa_p256() -> Option<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("nistp256"))?;
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = nums.len();
    (n >= 2).then(|| (nums[n - 2], nums[n - 1]))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, conc) = if quick {
        (100usize, 8usize)
    } else {
        (2000, 16)
    };
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "bench"]);
    let cli = |args: &[&str]| {
        server.cli_ok(args);
    };
    let batch =
        palisade_interop::factory_batch(&cli, dir.path(), "bench", "bench", &["B0001"], 7300);
    let d = batch.devices[0].clone();
    let ca = batch.factory.join("ca.pem");
    server.cli_ok(&[
        "supplier",
        "add",
        "bench",
        "--ca-cert",
        ca.to_str().unwrap(),
    ]);
    server.cli_ok(&["batch", "import", batch.manifest.to_str().unwrap()]);

    let root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root, Some("bench".into())).unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(d.join("idevid.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key: Arc<dyn Signer> =
        Arc::new(SoftwareKey::load(&d.join("idevid.key"), KeyAlgorithm::EcdsaP256).unwrap());
    // The operational key stays the same, so every request is a legitimate
    // re-issue for the same device (a different key would be refused as a clone).
    let (op, _) = SoftwareKey::generate(KeyAlgorithm::EcdsaP256, "op").unwrap();
    let op: Arc<dyn Signer> = Arc::new(op);
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&palisade_pki::SignerKey(op))
        .unwrap()
        .der()
        .to_vec();
    let auth = EnrollAuth::BirthCertificate { chain, key };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm up (first connection, caches).
    rt.block_on(est.simpleenroll(&auth, &csr)).unwrap();

    let pid = server.child.id();
    let (w0, c0) = (Instant::now(), cpu_seconds(pid));
    let done: usize = rt.block_on(async {
        let mut tasks = vec![];
        for t in 0..conc {
            let (est, auth, csr) = (est.clone(), auth.clone(), csr.clone());
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in (t..n).step_by(conc) {
                    est.simpleenroll(&auth, &csr).await.unwrap();
                    ok += 1;
                }
                ok
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let wall = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - c0;
    let rate = done as f64 / wall;
    let per_cpu = done as f64 / cpu.max(0.01);

    println!(
        "palisade EST simpleenroll benchmark ({})",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{done} enrolments, {conc} concurrent clients, each over a fresh mutual-TLS connection (TLS 1.3, P-256)"
    );
    println!("wall: {wall:.2} s   server CPU: {cpu:.2} s");
    println!("simpleenroll/s (wall): {rate:.0}   per server CPU-second: {per_cpu:.0}");
    match openssl_ecdsa_p256() {
        Some((sign, verify)) => {
            // Per enrolment the server signs twice (TLS CertificateVerify, the new
            // certificate) and verifies three times (the client's CertificateVerify,
            // the birth certificate's issuer signature, the CSR), before any key
            // exchange, hashing or storage.
            let limit = 1.0 / (2.0 / sign + 3.0 / verify);
            println!("openssl speed ecdsap256 (1 core): sign {sign:.0}/s, verify {verify:.0}/s");
            println!("crypto limit (2 signs + 3 verifies per enrolment, 1 core): {limit:.0}/s");
            println!(
                "ratio: per server CPU-second / crypto limit = {:.3}",
                per_cpu / limit
            );
        }
        None => println!("openssl speed unavailable: no limit printed"),
    }
}
