//! Benchmark: IPFIX ingest, Palisade's collector against `nfcapd` (Debian
//! nfdump) fed the same generated stream on this machine, side by side.
//!
//! The stream: IPFIX messages of 30 IPv4 flow records (the template first and
//! every 50 messages), from 50 devices to a handful of destinations each, as
//! an edge's softflowd would send them. nfcapd parses and stores the records;
//! Palisade parses them, maps each to its placed device, takes the policy's
//! verdict and feeds the detectors (the whole path, not the parser alone).
//! Figures: records received (loss), wall rate, and records per CPU-second of
//! the receiving process (the machine is shared and noisy). The parser alone
//! (in this process) is measured too.
//!
//! ```text
//! cargo bench -p palisade-interop --bench flow_ingest            # full
//! cargo bench -p palisade-interop --bench flow_ingest -- --quick # smoke
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_detect::flow::{Collector, CollectorLimits, FlowRecord, encode_ipfix};
use palisade_interop::*;

const PER_MESSAGE: usize = 30;
const DEVICES: usize = 50;

fn stream(records: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut seq = 0u32;
    let base_ms = 1_795_000_000_000i64;
    let mut i = 0usize;
    while i < records {
        let recs: Vec<FlowRecord> = (0..PER_MESSAGE.min(records - i))
            .map(|k| {
                let n = i + k;
                let dev = n % DEVICES;
                FlowRecord {
                    exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    domain: 1,
                    src: IpAddr::V4(Ipv4Addr::new(10, 10, 1, 10 + dev as u8)),
                    dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + (n % 4) as u8)),
                    src_port: 32_768 + (n % 28_000) as u16,
                    dst_port: 8080,
                    protocol: 6,
                    packets: 10,
                    octets: 1_500,
                    start_ms: base_ms + n as i64,
                    end_ms: base_ms + n as i64 + 200,
                    tcp_flags: 0x1b,
                }
            })
            .collect();
        let m = out.len();
        out.push(encode_ipfix(
            (base_ms / 1000) as u32 + (m / 100) as u32,
            seq,
            1,
            m % 50 == 0,
            &recs,
        ));
        seq = seq.wrapping_add(recs.len() as u32);
        i += recs.len();
    }
    out
}

/// Sends the stream to `to`, paced so a receiver that keeps up loses nothing
/// to socket buffers; returns the time it took.
fn send(to: &str, msgs: &[Vec<u8>], per_ms: usize) -> Duration {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    for (i, m) in msgs.iter().enumerate() {
        let _ = s.send_to(m, to);
        if i % per_ms == per_ms - 1 {
            // Keep to `per_ms` datagrams a millisecond.
            let due = Duration::from_micros(((i + 1) / per_ms) as u64 * 1000);
            if let Some(w) = due.checked_sub(t.elapsed()) {
                std::thread::sleep(w);
            }
        }
    }
    t.elapsed()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Figures {
    received: u64,
    cpu: f64,
    wall: Duration,
}

fn nfcapd(msgs: &[Vec<u8>], per_ms: usize) -> Option<Figures> {
    if !have("nfcapd") || !have("nfdump") {
        eprintln!("flow_ingest: nfcapd/nfdump not installed (Debian nfdump)");
        if in_ci() {
            std::process::exit(1);
        }
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let mut child = Command::new("nfcapd")
        .args([
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-B",
            "8388608",
            "-t",
            "3600",
            "-w",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id();
    let cpu0 = cpu_seconds(pid);
    let wall = send(&format!("127.0.0.1:{port}"), msgs, per_ms);
    std::thread::sleep(Duration::from_millis(1000));
    let cpu = cpu_seconds(pid) - cpu0;
    // nfcapd writes its file when it stops.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let o = Command::new("nfdump")
        .arg("-R")
        .arg(dir.path())
        .arg("-I")
        .output()
        .unwrap();
    let received = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Flows: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Some(Figures {
        received,
        cpu,
        wall,
    })
}

fn metric(server: &ServerProc, name: &str) -> u64 {
    server
        .api_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn palisade(msgs: &[Vec<u8>], per_ms: usize, records: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).unwrap();
    // The devices the records come from, placed at a site; their policy
    // allows what they send: the benign path (a site where every flow is a
    // violation would measure alerting instead).
    sensor_site(&server, dir.path(), DEVICES);
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let to = format!("127.0.0.1:{}", server.flow_port());
    let wall = send(&to, msgs, per_ms);
    // Until the records stop coming.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = metric(&server, "palisade_flow_records_total");
        if n as usize >= records || (n == last && n > 0) || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    let cpu = cpu_seconds(pid) - cpu0;
    Figures {
        received: metric(&server, "palisade_flow_records_total"),
        cpu,
        wall,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let records = if quick { 60_000 } else { 600_000 };
    // Datagrams a millisecond: 10 → 300 000 records/s offered.
    let per_ms = 10;
    let msgs = stream(records);
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!(
        "IPFIX ingest: {records} records in {} datagrams ({PER_MESSAGE} records, ~{} bytes each), offered at up to {} records/s",
        msgs.len(),
        bytes / msgs.len(),
        per_ms * PER_MESSAGE * 1000
    );
    // The parser alone, in this process.
    let mut c = Collector::new(CollectorLimits::default()).unwrap();
    let from = "127.0.0.1:9".parse().unwrap();
    let mut out = Vec::with_capacity(PER_MESSAGE);
    let t = Instant::now();
    let mut n = 0;
    for m in &msgs {
        out.clear();
        c.decode(from, m, 0, &mut out);
        n += out.len();
    }
    let parse = t.elapsed().as_secs_f64();
    println!(
        "  palisade parser alone (netflow_parser + record extraction, one thread): {:.0} records/s",
        n as f64 / parse
    );
    let report = |name: &str, f: &Figures| {
        println!(
            "  {name}: {} of {records} records ({:.1}% lost), sent in {:.2} s ({:.0} records/s), receiver CPU {:.2} s = {:.0} records per CPU-second",
            f.received,
            100.0 * (1.0 - f.received as f64 / records as f64),
            f.wall.as_secs_f64(),
            f.received as f64 / f.wall.as_secs_f64(),
            f.cpu,
            f.received as f64 / f.cpu.max(0.01)
        );
    };
    let peer = nfcapd(&msgs, per_ms);
    if let Some(p) = &peer {
        report("nfcapd (nfdump 1.7.1), parse and store", p);
    }
    let ours = palisade(&msgs, per_ms, records);
    report(
        "palisade serve, parse + map to devices + verdict + detectors",
        &ours,
    );
    if let Some(p) = &peer {
        let rate = |f: &Figures| f.received as f64 / f.cpu.max(0.01);
        println!(
            "  ratio (palisade / nfcapd, records per CPU-second): {:.2}",
            rate(&ours) / rate(p)
        );
    }
}
