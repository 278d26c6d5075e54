//! Benchmark: Palisade's device gateway against Mosquitto 2.0 on this machine,
//! same certificates, same ACL shape, same load generator:
//!
//! (a) new mutual-TLS CONNECT→CONNACK per broker CPU-second;
//! (c) QoS 1 telemetry messages/s with ACLs enforced, and p99 PUBACK latency;
//! (b) resident memory per idle connection at 10k connections (full run; 50k exceeds
//!     the sandbox's hard file-descriptor limit of 20 000);
//! and Palisade's revocation-to-disconnect latency.
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench mqtt_vs_mosquitto            # full
//! cargo bench -p palisade-interop --bench mqtt_vs_mosquitto -- --quick # smoke
//! ```
//! Mosquitto runs with `require_certificate true`, `use_identity_as_username true`,
//! TLS 1.3 and `pattern` ACLs per device; Palisade with its defaults.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU16;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use palisade_agent::tls_key::ClientIdentity;
use palisade_agent::{EnrollAuth, EstClient};
use palisade_core::{KeyAlgorithm, Signer};
use palisade_interop::{ServerProc, cpu_seconds, rss_kib};
use palisade_keystore::SoftwareKey;
use rmqtt_codec::types::{Protocol, Publish, QoS};
use rmqtt_codec::{MqttCodec, MqttPacket, v3};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

#[derive(Clone)]
struct Dev {
    id: String,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn Signer>,
}

struct Target {
    name: &'static str,
    port: u16,
    pid: u32,
}

async fn connect(
    t: &Target,
    d: &Dev,
    roots: &Arc<rustls::RootCertStore>,
) -> anyhow::Result<Framed<tokio_rustls::client::TlsStream<TcpStream>, MqttCodec>> {
    connect_from(t, d, roots, std::net::Ipv4Addr::LOCALHOST).await
}

/// Connects from a given loopback source address (to spread many connections over
/// several 127.x sources, each with its own ephemeral port range).
async fn connect_from(
    t: &Target,
    d: &Dev,
    roots: &Arc<rustls::RootCertStore>,
    src: std::net::Ipv4Addr,
) -> anyhow::Result<Framed<tokio_rustls::client::TlsStream<TcpStream>, MqttCodec>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_client_cert_resolver(Arc::new(ClientIdentity::new(
            d.chain.clone(),
            d.key.clone(),
        )));
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(std::net::SocketAddr::from((src, 0)))?;
    let tcp = sock
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], t.port)))
        .await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let mut f = Framed::new(tls, MqttCodec::V3(v3::Codec::new(65536)));
    f.send(MqttPacket::V3(v3::Packet::Connect(Box::new(v3::Connect {
        protocol: Protocol::default(),
        clean_session: true,
        keep_alive: 60,
        last_will: None,
        client_id: ByteString::from(d.id.clone()),
        username: None,
        password: None,
        cert: None,
    }))))
    .await?;
    match f.next().await {
        Some(Ok((MqttPacket::V3(v3::Packet::ConnectAck(a)), _)))
            if a.return_code == v3::ConnectAckReason::ConnectionAccepted =>
        {
            Ok(f)
        }
        other => anyhow::bail!("{}: no CONNACK: {other:?}", t.name),
    }
}

async fn handshakes(
    t: &Target,
    devs: &[Dev],
    roots: &Arc<rustls::RootCertStore>,
    n: usize,
    conc: usize,
) -> (f64, f64) {
    let (w0, c0) = (Instant::now(), cpu_seconds(t.pid));
    let mut tasks = vec![];
    for k in 0..conc {
        let (devs, roots) = (devs.to_vec(), roots.clone());
        let t = Target {
            name: t.name,
            port: t.port,
            pid: t.pid,
        };
        tasks.push(tokio::spawn(async move {
            for i in (k..n).step_by(conc) {
                let d = &devs[i % devs.len()];
                let mut f = connect(&t, d, &roots).await.unwrap();
                let _ = f.send(MqttPacket::V3(v3::Packet::Disconnect)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(t.pid) - c0;
    (n as f64 / wall, n as f64 / cpu.max(0.01))
}

/// Each device publishes QoS 1 telemetry with one message in flight; returns
/// (msgs/s, msgs per broker CPU-s, p99 latency ms).
async fn telemetry(
    t: &Target,
    devs: &[Dev],
    roots: &Arc<rustls::RootCertStore>,
    per_dev: usize,
) -> (f64, f64, f64) {
    let mut conns = vec![];
    for d in devs {
        conns.push((d.id.clone(), connect(t, d, roots).await.unwrap()));
    }
    let (w0, c0) = (Instant::now(), cpu_seconds(t.pid));
    let mut tasks = vec![];
    for (id, mut f) in conns {
        tasks.push(tokio::spawn(async move {
            let topic = ByteString::from(format!("palisade/d/{id}/telemetry"));
            let mut lat = Vec::with_capacity(per_dev);
            for i in 0..per_dev {
                let pid = NonZeroU16::new((i % 60000 + 1) as u16).unwrap();
                let t0 = Instant::now();
                f.send(MqttPacket::V3(v3::Packet::Publish(Box::new(Publish {
                    dup: false,
                    retain: false,
                    qos: QoS::AtLeastOnce,
                    topic: topic.clone(),
                    packet_id: Some(pid),
                    payload: bytes::Bytes::from_static(
                        b"{\"uptime_s\":1,\"firmware\":\"1.0.0\",\"t\":21.5}",
                    ),
                    properties: None,
                }))))
                .await
                .unwrap();
                loop {
                    match f.next().await {
                        Some(Ok((MqttPacket::V3(v3::Packet::PublishAck { packet_id }), _)))
                            if packet_id == pid =>
                        {
                            break;
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("lost the connection: {other:?}"),
                    }
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let _ = f.send(MqttPacket::V3(v3::Packet::Disconnect)).await;
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let wall = w0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(t.pid) - c0;
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or(0.0);
    (
        all.len() as f64 / wall,
        all.len() as f64 / cpu.max(0.01),
        p99,
    )
}

/// Holds `n` idle sessions open against `t` and returns the broker's resident
/// memory growth per connection (KiB).
async fn idle_memory(
    t: &Target,
    devs: &[Dev],
    roots: &Arc<rustls::RootCertStore>,
    n: usize,
) -> f64 {
    let before = rss_kib(t.pid);
    let conns = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(n)));
    let mut tasks = vec![];
    let conc = 32;
    for k in 0..conc {
        let (devs, roots, conns) = (devs.to_vec(), roots.clone(), conns.clone());
        let t = Target {
            name: t.name,
            port: t.port,
            pid: t.pid,
        };
        tasks.push(tokio::spawn(async move {
            for i in (k..n).step_by(conc) {
                let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 4) as u8);
                let f = connect_from(&t, &devs[i], &roots, src).await.unwrap();
                conns.lock().await.push(f);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(t.pid);
    let held = conns.lock().await.len();
    conns.lock().await.clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    after.saturating_sub(before) as f64 / held.max(1) as f64
}

/// Enrols `n` devices through EST with one-time tokens, `conc` at a time.
fn enrol(
    rt: &tokio::runtime::Runtime,
    server: &ServerProc,
    est: &EstClient,
    n: usize,
    start: usize,
) -> Vec<Dev> {
    let admin = Arc::new(server.client(None));
    rt.block_on(async {
        let mut tasks = vec![];
        let conc = 16;
        for k in 0..conc {
            let (admin, est) = (admin.clone(), est.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = vec![];
                for i in (k..n).step_by(conc) {
                    let id = format!("bench-{:06}", start + i);
                    let t: palisade_http::views::CreatedEnrollmentToken = admin
                        .call(
                            hyper::Method::POST,
                            "/api/v1/enrollment-tokens",
                            Some(&serde_json::json!({ "model": "bench" })),
                        )
                        .await
                        .unwrap();
                    let (key, _) = SoftwareKey::generate(KeyAlgorithm::EcdsaP256, &id).unwrap();
                    let key: Arc<dyn Signer> = Arc::new(key);
                    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
                        .unwrap()
                        .serialize_request(&palisade_pki::SignerKey(key.clone()))
                        .unwrap()
                        .der()
                        .to_vec();
                    let cert = est
                        .simpleenroll(
                            &EnrollAuth::Token {
                                device: id.clone(),
                                token: t.token,
                            },
                            &csr,
                        )
                        .await
                        .unwrap();
                    out.push(Dev {
                        id,
                        chain: vec![CertificateDer::from(cert)],
                        key,
                    });
                }
                out
            }));
        }
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

fn start_mosquitto(dir: &std::path::Path, data: &std::path::Path) -> (Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "pattern write palisade/d/%u/telemetry\npattern write palisade/d/%u/events\npattern write palisade/d/%u/acks\npattern read palisade/d/%u/commands\npattern read palisade/d/%u/ota\n",
    )
    .unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\npersistence false\nlog_dest stderr\nlog_type error\nper_listener_settings false\n\
             listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\nacl_file {acl}\n",
            ca = data.join("ca/chain.pem").display(),
            cert = data.join("tls/server.pem").display(),
            key = data.join("tls/server.key").display(),
            acl = acl.display(),
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package mosquitto) is required");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Many idle connections need many file descriptors (inherited by both brokers).
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=1048576:1048576",
        ])
        .status();
    let (n_devs, n_hs, per_dev) = if quick {
        (16, 200, 50)
    } else {
        (64, 3000, 2000)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Mosquitto has no per-client rate limit here; lift Palisade's (default 100
    // msgs/s per device, which would close these flooding clients) to compare like
    // with like.
    let conf = dir.path().join("palisade.toml");
    std::fs::write(
        &conf,
        "[mqtt]\nmessages_per_sec = 10000000\nbytes_per_sec = 1000000000\n",
    )
    .unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("data"),
        &["--config", conf.to_str().unwrap()],
    )
    .unwrap();
    server.cli_ok(&["model", "add", "bench", "--cert-validity-days", "30"]);
    let root_pem = std::fs::read(server.data.join("ca/root.pem")).unwrap();
    let est = EstClient::new(&server.url, &root_pem, None).unwrap();
    // Enrol the devices once; both brokers see the same certificates.
    let devs = enrol(&rt, &server, &est, n_devs, 0);
    let roots = est.roots();
    let (mut mosq, mport) = start_mosquitto(dir.path(), &server.data);
    let targets = [
        Target {
            name: "palisade",
            port: server.mqtt_port(),
            pid: server.child.id(),
        },
        Target {
            name: "mosquitto",
            port: mport,
            pid: mosq.id(),
        },
    ];

    println!(
        "MQTT gateway benchmark ({}), {n_devs} devices, TLS 1.3, P-256 client certificates",
        if quick { "quick" } else { "full" }
    );
    let mut hs = vec![];
    let mut tel = vec![];
    for t in &targets {
        hs.push(rt.block_on(handshakes(t, &devs, &roots, n_hs, 16)));
    }
    for t in &targets {
        tel.push(rt.block_on(telemetry(t, &devs, &roots, per_dev)));
    }
    // (b) Resident memory per idle connection at 10k connections. (50k needs more
    // file descriptors than this sandbox's hard limit of 20 000 per process allows.)
    let mut memory = vec![];
    if !quick {
        let extra = enrol(&rt, &server, &est, 10_000 - n_devs, n_devs);
        let all: Vec<Dev> = devs.iter().cloned().chain(extra).collect();
        let n = 10_000;
        let p = rt.block_on(idle_memory(&targets[0], &all, &roots, n));
        let m = rt.block_on(idle_memory(&targets[1], &all, &roots, n));
        memory.push((n, p, m));
    }
    // Revocation to disconnect, on Palisade.
    let admin = server.client(None);
    let mut revocations = vec![];
    for d in devs.iter().take(if quick { 3 } else { 10 }) {
        let mut f = rt.block_on(connect(&targets[0], d, &roots)).unwrap();
        let serial: serde_json::Value = rt
            .block_on(admin.call::<serde_json::Value>(
                hyper::Method::GET,
                &format!("/api/v1/certificates?device={}", d.id),
                None,
            ))
            .unwrap();
        let serial = serial[0]["serial"].as_str().unwrap().to_owned();
        let t0 = Instant::now();
        rt.block_on(async {
            let _: serde_json::Value = admin
                .call(
                    hyper::Method::POST,
                    &format!("/api/v1/certificates/{serial}/revoke"),
                    Some(&serde_json::json!({})),
                )
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(5), async {
                while f.next().await.is_some() {}
            })
            .await
            .unwrap();
        });
        revocations.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = mosq.kill();
    let _ = mosq.wait();

    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "scenario", "palisade", "mosquitto", "ratio"
    );
    let row =
        |name: &str, p: f64, m: f64| println!("{name:<44} {p:>12.0} {m:>12.0} {:>8.2}", p / m);
    row("(a) CONNECT→CONNACK per wall second", hs[0].0, hs[1].0);
    row(
        "(a) CONNECT→CONNACK per broker CPU-second",
        hs[0].1,
        hs[1].1,
    );
    row(
        "(c) QoS 1 telemetry msgs per wall second",
        tel[0].0,
        tel[1].0,
    );
    row(
        "(c) QoS 1 telemetry msgs per broker CPU-second",
        tel[0].1,
        tel[1].1,
    );
    println!(
        "{:<44} {:>12.2} {:>12.2} {:>8.2}",
        "(c) p99 PUBACK latency (ms, lower is better)",
        tel[0].2,
        tel[1].2,
        tel[1].2 / tel[0].2.max(0.001)
    );
    for (n, p, m) in &memory {
        println!(
            "{:<44} {p:>12.1} {m:>12.1} {:>8.2}",
            format!("(b) RSS per idle connection at {n} (KiB)"),
            m / p.max(0.001)
        );
    }
    if memory.is_empty() {
        println!("(b) idle-connection memory: measured in the full run only");
    }
    revocations.sort_by(|a, b| a.total_cmp(b));
    println!(
        "revocation → disconnect on palisade (API call included): median {:.1} ms, max {:.1} ms over {}",
        revocations[revocations.len() / 2],
        revocations[revocations.len() - 1],
        revocations.len()
    );
}
