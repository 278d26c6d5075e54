//! Benchmark (informational): the cost of keeping a device key in hardware.
//! For a software key (ring, in process), a PKCS#11 token key (SoftHSM2) and a
//! TPM key (swtpm over its socket TCTI): P-256 signatures per second, and
//! mutual-TLS handshakes per second against a real `palisade serve` with that
//! key signing the client's CertificateVerify.
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench hardware_keys            # full
//! cargo bench -p palisade-interop --bench hardware_keys -- --quick # smoke
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use palisade_agent::tls_key::ClientIdentity;
use palisade_core::{KeyAlgorithm, Signer};
use palisade_interop::{ServerProc, SoftHsm, Swtpm, cpu_seconds};
use palisade_keystore::SoftwareKey;
use palisade_keystore::pkcs11::{Pkcs11Key, Pkcs11Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const CHILD: &str = "PALISADE_BENCH_HW_URI";

fn main() {
    // SoftHSM2 reads SOFTHSM2_CONF when the module is loaded: make the token,
    // then run the measurement in a child process that has the variable.
    if std::env::var(CHILD).is_err() {
        let dir = tempfile::tempdir().unwrap();
        let Some(hsm) = SoftHsm::new(dir.path()) else {
            println!("SKIP: SoftHSM2 is not installed");
            return;
        };
        let uri = hsm.token("bench", "bench-key");
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env("SOFTHSM2_CONF", &hsm.conf)
            .env(CHILD, uri)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let uri = Pkcs11Uri::parse(&std::env::var(CHILD).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Some(swtpm) = Swtpm::start(&dir.path().join("tpm")) else {
        println!("SKIP: swtpm is not installed");
        return;
    };
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    server.cli_ok(&["model", "add", "bench"]);

    let software: Arc<dyn Signer> = Arc::new(
        SoftwareKey::load_or_create(&dir.path().join("sw.key"), KeyAlgorithm::EcdsaP256)
            .unwrap()
            .0,
    );
    let token: Arc<dyn Signer> = Arc::new(Pkcs11Key::open_or_generate(&uri).unwrap().0);
    let tpm = palisade_tpm::Tpm::open(&swtpm.tcti()).unwrap();
    let blob = tpm.create_signing_key(false).unwrap();
    let in_tpm: Arc<dyn Signer> = Arc::new(palisade_tpm::TpmKey::new(tpm, blob, "bench").unwrap());
    let swtpm_pid = swtpm_pid(&swtpm);

    let (signs, shakes) = if quick { (50, 10) } else { (2000, 300) };
    println!("# hardware_keys ({})", if quick { "quick" } else { "full" });
    println!(
        "{:<22} {:>12} {:>10} {:>16} {:>10} {:>18}",
        "key", "signs/s", "ms/sign", "handshakes/s", "ms/hs", "server CPU-ms/hs"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, key) in [
        ("software (ring)", &software),
        ("PKCS#11 (SoftHSM2)", &token),
        ("TPM 2.0 (swtpm)", &in_tpm),
    ] {
        let n = if name.starts_with("software") {
            signs * 5
        } else {
            signs
        };
        let started = Instant::now();
        let peer_cpu = swtpm_pid.map(cpu_seconds).unwrap_or(0.0);
        for i in 0..n {
            key.sign(format!("message {i}").as_bytes()).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let sign_rate = n as f64 / secs;
        let peer = swtpm_pid.map(cpu_seconds).unwrap_or(0.0) - peer_cpu;

        let device = format!(
            "hw-{}",
            name.split_whitespace()
                .next()
                .unwrap()
                .to_lowercase()
                .replace('#', "")
        );
        let chain = issue(&server, dir.path(), &device, key);
        let (hs_rate, server_cpu_ms) = rt.block_on(handshakes(&server, chain, key.clone(), shakes));
        println!(
            "{name:<22} {sign_rate:>12.0} {:>10.3} {hs_rate:>16.0} {:>10.2} {server_cpu_ms:>18.2}",
            1000.0 / sign_rate,
            1000.0 / hs_rate,
        );
        if name.starts_with("TPM") {
            println!(
                "  swtpm process CPU per TPM signature: {:.3} ms",
                peer * 1000.0 / n as f64
            );
        }
    }
}

fn swtpm_pid(_swtpm: &Swtpm) -> Option<u32> {
    let out = Command::new("pgrep").args(["-n", "swtpm"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A certificate for `key` from the server (CSR signed by the key itself).
fn issue(
    server: &ServerProc,
    dir: &std::path::Path,
    device: &str,
    key: &Arc<dyn Signer>,
) -> Vec<CertificateDer<'static>> {
    server.cli_ok(&["device", "register", device, "--model", "bench"]);
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let csr = params
        .serialize_request(&palisade_pki::SignerKey(key.clone()))
        .unwrap();
    let path = dir.join(format!("{device}.csr"));
    std::fs::write(&path, csr.pem().unwrap()).unwrap();
    let pem = server.cli_ok(&["cert", "issue", device, "--csr", path.to_str().unwrap()]);
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sequential mutual-TLS handshakes; returns (handshakes/s, server CPU-ms each).
async fn handshakes(
    server: &ServerProc,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn Signer>,
    n: usize,
) -> (f64, f64) {
    let mut roots = rustls::RootCertStore::empty();
    let root = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    for c in CertificateDer::pem_slice_iter(&root) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientIdentity::new(chain, key)));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = format!("127.0.0.1:{}", server.port());
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        // The handshake is complete once the connector returns; close politely.
        tokio::io::AsyncWriteExt::shutdown(&mut tls).await.ok();
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    (n as f64 / secs, cpu * 1000.0 / n as f64)
}
