//! Benchmark: the CoAP endpoint's DTLS 1.2 against libcoap's own servers
//! (`coap-server-openssl`, `coap-server-gnutls`, libcoap 4.3.1 from Debian) on
//! the same certificates, with the same client (`coap-client-openssl`):
//!
//! (a) full DTLS handshakes (ECDHE-ECDSA P-256, mutual certificates, cookie
//!     exchange) each followed by one GET of `/.well-known/core`, per server
//!     CPU-second and per wall second;
//! (b) resident memory per held DTLS session with an Observe registration.
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench coap_dtls            # full
//! cargo bench -p palisade-interop --bench coap_dtls -- --quick # smoke
//! ```
//! The client is a new process per handshake (libcoap has no load generator),
//! so the wall rate is bounded by process start-up on this 2-core machine; the
//! per-CPU-second figure counts only the server process's own CPU time.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::{ServerProc, cpu_seconds, enrol_with_token, free_port, have, rss_kib};

struct Target {
    name: &'static str,
    port: u16,
    pid: u32,
}

struct Files<'a> {
    chain: &'a Path,
    cert: &'a Path,
    key: &'a Path,
}

fn client(t: &Target, f: &Files, args: &[&str], path: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["20", "coap-client-openssl"]);
    c.args([
        "-c",
        &f.cert.to_string_lossy(),
        "-j",
        &f.key.to_string_lossy(),
    ]);
    // libcoap's OpenSSL server sends its leaf alone: the client holds the chain.
    c.args(["-R", &f.chain.to_string_lossy()]);
    c.args(args);
    c.arg(format!("coaps://127.0.0.1:{}/{path}", t.port));
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

/// `n` handshakes from `conc` parallel workers; (per wall s, per server CPU-s, failures).
fn handshakes(t: &Target, f: &Files, n: usize, conc: usize) -> (f64, f64, usize) {
    let (w0, c0) = (Instant::now(), cpu_seconds(t.pid));
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for k in 0..conc {
            let failed = &failed;
            s.spawn(move || {
                for _ in (k..n).step_by(conc) {
                    let o = client(t, f, &["-m", "get"], ".well-known/core")
                        .output()
                        .unwrap();
                    if !o.status.success() || o.stdout.is_empty() {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let wall = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(t.pid) - c0;
    let failed = failed.into_inner();
    let ok = (n - failed) as f64;
    (ok / wall, ok / cpu.max(0.001), failed)
}

/// Holds one observing session per device; returns the server's RSS growth
/// per session (KiB).
fn held_sessions(
    t: &Target,
    devices: &[(std::path::PathBuf, std::path::PathBuf)],
    chain: &Path,
    path: &str,
) -> f64 {
    let before = rss_kib(t.pid);
    let mut held: Vec<Child> = devices
        .iter()
        .map(|(key, cert)| {
            let f = Files { chain, cert, key };
            client(t, &f, &["-m", "get", "-s", "120"], path)
                .spawn()
                .unwrap()
        })
        .collect();
    // Every client handshakes within a few seconds on this machine; the
    // resident set is read once it stops growing.
    let mut last = 0;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_kib(t.pid);
        if now == last {
            break;
        }
        last = now;
    }
    let after = rss_kib(t.pid);
    for c in &mut held {
        let _ = c.kill();
        let _ = c.wait();
    }
    after.saturating_sub(before) as f64 / devices.len() as f64
}

fn libcoap_server(tool: &str, dir: &Path, data: &Path) -> (Child, u16) {
    // UDP on `port`, DTLS on `port + 1`.
    for _ in 0..20 {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_err()
            || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
        {
            continue;
        }
        let child = Command::new(tool)
            .args(["-A", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", &data.join("tls/server.pem").to_string_lossy()])
            .args(["-j", &data.join("tls/server.key").to_string_lossy()])
            .args(["-C", &data.join("ca/chain.pem").to_string_lossy()])
            .args(["-R", &data.join("ca/root.pem").to_string_lossy()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        return (child, port + 1);
    }
    panic!("no free port pair for {tool}");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if ![
        "openssl",
        "curl",
        "coap-client-openssl",
        "coap-server-openssl",
        "coap-server-gnutls",
    ]
    .iter()
    .all(|t| have(t))
    {
        return;
    }
    let (n, conc, sessions) = if quick {
        (40usize, 2usize, 10usize)
    } else {
        (600, 2, 200)
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data).unwrap();
    server.cli_ok(&["model", "add", "meter"]);
    let devices: Vec<_> = (0..sessions)
        .map(|i| enrol_with_token(&server, dir.path(), &format!("m-{i}"), "meter"))
        .collect();
    let chain = data.join("ca/chain.pem");
    let (key, cert) = &devices[0];
    let files = Files {
        chain: &chain,
        cert,
        key,
    };
    let (mut ossl, ossl_port) = libcoap_server("coap-server-openssl", dir.path(), &data);
    let (mut gnutls, gnutls_port) = libcoap_server("coap-server-gnutls", dir.path(), &data);
    let targets = [
        Target {
            name: "palisade",
            port: server.coap_port(),
            pid: server.child.id(),
        },
        Target {
            name: "libcoap-openssl",
            port: ossl_port,
            pid: ossl.id(),
        },
        Target {
            name: "libcoap-gnutls",
            port: gnutls_port,
            pid: gnutls.id(),
        },
    ];
    println!(
        "CoAP over DTLS 1.2 ({} mode): {n} handshakes each, {conc} client workers, coap-client-openssl",
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:<16} {:>12} {:>16} {:>8}",
        "server", "per wall s", "per server CPU-s", "failed"
    );
    let mut per_cpu = Vec::new();
    for t in &targets {
        let (wall, cpu, failed) = handshakes(t, &files, n, conc);
        println!("{:<16} {:>12.1} {:>16.1} {:>8}", t.name, wall, cpu, failed);
        assert!(
            failed * 20 <= n,
            "{}: {failed} of {n} handshakes failed",
            t.name
        );
        per_cpu.push(cpu);
    }
    println!(
        "ratio palisade / libcoap-openssl {:.2}x, / libcoap-gnutls {:.2}x (per server CPU-s)",
        per_cpu[0] / per_cpu[1],
        per_cpu[0] / per_cpu[2]
    );
    println!(
        "resident memory per held DTLS session with an Observe registration ({sessions} sessions):"
    );
    for (t, path) in targets.iter().zip(["commands", "time", "time"]) {
        println!(
            "{:<16} {:>8.1} KiB",
            t.name,
            held_sessions(t, &devices, &chain, path)
        );
    }
    let _ = ossl.kill();
    let _ = gnutls.kill();
    let _ = ossl.wait();
    let _ = gnutls.wait();
}
