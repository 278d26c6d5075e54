//! Benchmark: OSCORE on the CoAP endpoint, with aiocoap 0.4's OSCORE server
//! (Python) as the peer for the per-request cost:
//!
//! (a) EDHOC runs (message_1 → message_3 in a combined request, the device's
//!     key checked against its certificate in the inventory) per server
//!     CPU-second;
//! (b) OSCORE-protected `POST /telemetry` requests (confirmable, answered
//!     2.04) per server CPU-second and per wall second: Palisade with contexts
//!     from EDHOC, aiocoap with provisioned contexts (aiocoap's server has no
//!     EDHOC responder for this) — the same client, two devices in parallel;
//! (c) resident memory per OSCORE context (one per device).
//!
//! ```text
//! cargo build --release -p palisade
//! cargo bench -p palisade-interop --bench coap_oscore            # full
//! cargo bench -p palisade-interop --bench coap_oscore -- --quick # smoke
//! ```
//! The client is Rust (lakers' Initiator, palisade-oscore, blocking UDP, one
//! request in flight per device): it measures the servers, not a Python
//! client.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lakers::{
    ConnId, Credential, CredentialTransfer, EDHOCMethod, EDHOCSuite, EdhocInitiator,
    EdhocMessageBuffer,
};
use lakers_crypto_rustcrypto::Crypto;
use palisade_coap::edhoc::ccs;
use palisade_interop::{
    ServerProc, cpu_seconds, enrol_with_token, free_port, have, have_python_module, peer_script,
    rss_kib,
};
use palisade_oscore::{Params, SecurityContext};
use rand_core::OsRng;

/// One device's CoAP client over UDP.
struct Client {
    sock: UdpSocket,
    ctx: Option<SecurityContext>,
    mid: u16,
}

impl Client {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Self {
            sock,
            ctx: None,
            mid: (rand_core::RngCore::next_u32(&mut OsRng) & 0xffff) as u16,
        }
    }

    /// Sends `p` (confirmable) until its ACK comes (3 tries).
    fn exchange(&mut self, p: &Packet) -> anyhow::Result<Packet> {
        let bytes = p.to_bytes()?;
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            self.sock.send(&bytes)?;
            // Answers to earlier tries are skipped; a timeout sends again.
            while let Ok(n) = self.sock.recv(&mut buf) {
                let r = Packet::from_bytes(&buf[..n])?;
                if r.header.message_id == p.header.message_id && r.get_token() == p.get_token() {
                    return Ok(r);
                }
            }
        }
        anyhow::bail!("no answer")
    }

    fn request(&mut self, path: &str, body: &[u8]) -> Packet {
        self.mid = self.mid.wrapping_add(1);
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = self.mid;
        p.set_token(self.mid.to_be_bytes().to_vec());
        for seg in path.split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.payload = body.to_vec();
        p
    }

    /// A protected POST; `m3` makes it the combined request of EDHOC.
    fn post(&mut self, path: &str, body: &[u8], m3: Option<&[u8]>) -> anyhow::Result<ResponseType> {
        let inner = self.request(path, body);
        let ctx = self.ctx.as_mut().expect("a context");
        let (mut outer, binding) = ctx.protect_request(&inner, false)?;
        if let Some(m3) = m3 {
            outer.add_option(CoapOption::Unknown(21), vec![]);
            outer.payload = [m3, &outer.payload].concat();
        }
        let r = self.exchange(&outer)?;
        let opened = self
            .ctx
            .as_mut()
            .expect("a context")
            .unprotect_response(&r, &binding)?;
        match opened.header.code {
            MessageClass::Response(code) => Ok(code),
            other => anyhow::bail!("not a response: {other:?}"),
        }
    }

    /// EDHOC as the device (method 3, suite 2, credential by value), then
    /// the first request combined with message_3.
    fn edhoc(&mut self, subject: &str, key_pem: &str, server_ccs: &[u8]) -> anyhow::Result<()> {
        let secret = p256::SecretKey::from_sec1_pem(key_pem)
            .map_err(|e| anyhow::anyhow!("the device key: {e}"))?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        let cred_i = ccs(subject, b"d", point.x().unwrap(), point.y().unwrap());
        let init = EdhocInitiator::new(
            Crypto::new(OsRng),
            EDHOCMethod::StatStat,
            EDHOCSuite::CipherSuite2,
        );
        let c_i = ConnId::from_slice(&[0x05]).unwrap();
        let (init, m1) = init
            .prepare_message_1(Some(c_i), &None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut p1 = self.request(".well-known/edhoc", &[&[0xf5][..], m1.as_slice()].concat());
        p1.header.code = MessageClass::Request(RequestType::Post);
        let r = self.exchange(&p1)?;
        let m2 =
            EdhocMessageBuffer::new_from_slice(&r.payload).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (mut init, c_r, _, _) = init
            .parse_message_2(&m2)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let d: [u8; 32] = secret.to_bytes().into();
        init.set_identity(
            d,
            Credential::parse_ccs(&cred_i).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let init = init
            .verify_message_2(
                Credential::parse_ccs(server_ccs).map_err(|e| anyhow::anyhow!("{e:?}"))?,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (init, m3, _) = init
            .prepare_message_3(CredentialTransfer::ByValue, &None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut done = init
            .completed_without_message_4()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let secret = done.edhoc_exporter(0, &[], 16);
        let salt = done.edhoc_exporter(1, &[], 8);
        self.ctx = Some(SecurityContext::derive(&Params {
            master_secret: &secret[..16],
            master_salt: &salt[..8],
            sender_id: c_r.as_slice(),
            recipient_id: c_i.as_slice(),
            id_context: None,
        })?);
        let code = self.post("telemetry", b"{}", Some(m3.as_slice()))?;
        anyhow::ensure!(
            code == ResponseType::Changed,
            "combined request answered {code:?}"
        );
        Ok(())
    }
}

/// `n` requests from each client, in parallel; (per wall s, per server CPU-s).
fn requests(clients: &mut [Client], pid: u32, n: usize) -> (f64, f64) {
    let (w0, c0) = (Instant::now(), cpu_seconds(pid));
    std::thread::scope(|s| {
        for c in clients.iter_mut() {
            s.spawn(move || {
                for i in 0..n {
                    let body = format!("{{\"seq\":{i}}}");
                    let code = c.post("telemetry", body.as_bytes(), None).unwrap();
                    assert_eq!(code, ResponseType::Changed);
                }
            });
        }
    });
    let total = (n * clients.len()) as f64;
    let cpu = cpu_seconds(pid) - c0;
    (total / w0.elapsed().as_secs_f64(), total / cpu.max(0.001))
}

/// aiocoap's server with one provisioned context per client; returns it and
/// the clients' contexts.
fn aiocoap_server(dir: &Path, clients: usize) -> (Child, u16, Vec<SecurityContext>) {
    let port = free_port();
    let mut ctxs = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..clients {
        let d = dir.join(format!("oscore-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let (secret, salt, sid) = ([0x10 + i as u8; 16], [0x9e; 8], [i as u8 + 1]);
        std::fs::write(
            d.join("settings.json"),
            serde_json::json!({
                "algorithm": "AES-CCM-16-64-128", "kdf-hashfun": "sha256",
                "sender-id_hex": "", "recipient-id_hex": hex::encode(sid),
                "secret_hex": hex::encode(secret), "salt_hex": hex::encode(salt),
            })
            .to_string(),
        )
        .unwrap();
        ctxs.push(
            SecurityContext::derive(&Params {
                master_secret: &secret,
                master_salt: &salt,
                sender_id: &sid,
                recipient_id: &[],
                id_context: None,
            })
            .unwrap(),
        );
        dirs.push(d);
    }
    let mut child = Command::new("python3")
        .arg(peer_script("aiocoap_oscore_server.py"))
        .arg(port.to_string())
        .args(&dirs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready", "aiocoap's server did not start");
    (child, port, ctxs)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if !["openssl", "curl", "python3"].iter().all(|t| have(t))
        || !have_python_module("aiocoap.oscore", "aiocoap[oscore]")
    {
        return;
    }
    let (devices, n) = if quick {
        (10usize, 200usize)
    } else {
        (200, 5000)
    };
    let dir = tempfile::tempdir().unwrap();
    // The per-device rate limit raised: two devices flood on purpose (aiocoap
    // has none).
    let config = dir.path().join("palisade.toml");
    std::fs::write(&config, "[coap]\nmessages_per_sec = 1000000\n").unwrap();
    let server = ServerProc::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    server.cli_ok(&["model", "add", "meter"]);
    let keys: Vec<_> = (0..devices)
        .map(|i| enrol_with_token(&server, dir.path(), &format!("m-{i}"), "meter").0)
        .collect();
    let server_ccs = std::fs::read(server.data.join("edhoc/credential.cbor")).unwrap();
    let target: SocketAddr = format!("127.0.0.1:{}", server.oscore_port())
        .parse()
        .unwrap();
    let pid = server.child.id();

    let rss0 = rss_kib(pid);
    let (w0, c0) = (Instant::now(), cpu_seconds(pid));
    let mut clients: Vec<Client> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut c = Client::new(target);
            c.edhoc(
                &format!("m-{i}"),
                &std::fs::read_to_string(key).unwrap(),
                &server_ccs,
            )
            .unwrap_or_else(|e| panic!("EDHOC for m-{i}: {e:#}"));
            c
        })
        .collect();
    let edhoc_cpu = cpu_seconds(pid) - c0;
    let edhoc_wall = w0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let per_context = rss_kib(pid).saturating_sub(rss0) as f64 / devices as f64;

    let (ours_wall, ours_cpu) = requests(&mut clients[..2], pid, n / 2);
    let (mut aiocoap, port, ctxs) = aiocoap_server(dir.path(), 2);
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut peer_clients: Vec<Client> = ctxs
        .into_iter()
        .map(|ctx| {
            let mut c = Client::new(peer);
            c.ctx = Some(ctx);
            c
        })
        .collect();
    let (peer_wall, peer_cpu) = requests(&mut peer_clients, aiocoap.id(), n / 2);
    let _ = aiocoap.kill();
    let _ = aiocoap.wait();

    println!(
        "OSCORE ({} mode): {devices} devices ran EDHOC; {n} protected requests per server from 2 devices, one in flight each",
        if quick { "quick" } else { "full" }
    );
    println!(
        "EDHOC runs (with the inventory check and the first request): {:.1} per server CPU-s, {:.1} per wall s",
        devices as f64 / edhoc_cpu.max(0.001),
        devices as f64 / edhoc_wall
    );
    println!(
        "{:<16} {:>12} {:>16}",
        "server", "per wall s", "per server CPU-s"
    );
    println!("{:<16} {:>12.1} {:>16.1}", "palisade", ours_wall, ours_cpu);
    println!("{:<16} {:>12.1} {:>16.1}", "aiocoap", peer_wall, peer_cpu);
    println!(
        "ratio palisade / aiocoap {:.2}x per server CPU-s",
        ours_cpu / peer_cpu
    );
    println!("resident memory per OSCORE context (with its session): {per_context:.1} KiB");
}
