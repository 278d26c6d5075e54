//! The fleet comparison on a cluster: 8 sensors of one model report their
//! flows to two nodes on one PostgreSQL, 4 to each (IPFIX over UDP, as an
//! edge's softflowd sends it) — fewer than the 5 a comparison needs on either
//! node. Each node records its devices' closed windows in the database; the
//! node holding the `fleet-comparison` lead compares all 8, finds the one
//! sensor unlike the rest, and raises one alert, which both nodes list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use palisade_detect::flow::{FlowRecord, encode_ipfix};
use palisade_interop::*;
use serde_json::Value;

const SENSORS: u8 = 8;
const ODD: u8 = 7;

fn now_ms() -> i64 {
    palisade_core::Clock::now_ms(&palisade_core::SystemClock)
}

/// One second of a sensor's flows: to 2 destinations, the odd one (after
/// the first few seconds) to 40.
fn flows(sensor: u8, odd: bool) -> Vec<FlowRecord> {
    let now = now_ms();
    let n = if odd { 40 } else { 2 };
    (0..n)
        .map(|k| FlowRecord {
            exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
            domain: 1,
            src: IpAddr::V4(Ipv4Addr::new(10, 10, 1, 10 + sensor)),
            dst: IpAddr::V4(Ipv4Addr::new(
                198,
                51,
                100,
                8 + (k % 8) as u8 + 8 * (k / 8) as u8,
            )),
            src_port: 40_000 + k,
            dst_port: 8080,
            protocol: 6,
            packets: 4,
            octets: 600,
            start_ms: now - 500,
            end_ms: now,
            tcp_flags: 0x1b,
        })
        .collect()
}

fn alerts(node: &ServerProc) -> Vec<Value> {
    serde_json::from_str(&node.cli_ok(&["alerts", "list", "--json"])).unwrap()
}

#[test]
fn one_node_compares_the_fleet_of_all_nodes() {
    let Some(admin) = postgres_admin() else {
        return;
    };
    if !have("psql") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = create_postgres_database(&admin, &format!("palisade_fleet_{}", std::process::id()))
        .unwrap();
    let config = d.join("node.toml");
    std::fs::write(
        &config,
        "[monitoring.detectors]\nlearn_ms = 0\nwindow_ms = 10000\noutlier_persist = 2\n",
    )
    .unwrap();
    let (a, b) = two_nodes_with(d, &url, &["--config", config.to_str().unwrap()]).unwrap();

    sensor_site(&a, d, usize::from(SENSORS));
    // Both nodes' flow address maps know the placements (they refresh on
    // NetworkChanged); give the refresh a moment.
    std::thread::sleep(Duration::from_secs(1));

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ports = [a.flow_port(), b.flow_port()];
    assert!(ports.iter().all(|&p| p > 0), "flow collectors: {ports:?}");
    let started = Instant::now();
    let mut seq = [0u32; 2];
    let found = loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no fleet-outlier alert after 90 s: {:?}",
            alerts(&a)
        );
        let odd_now = started.elapsed() > Duration::from_secs(4);
        for (node, port) in ports.iter().enumerate() {
            let records: Vec<FlowRecord> = (0..SENSORS)
                .filter(|s| usize::from(s % 2) == node)
                .flat_map(|s| flows(s, s == ODD && odd_now))
                .collect();
            let m = encode_ipfix((now_ms() / 1000) as u32, seq[node], 1, true, &records);
            seq[node] = seq[node].wrapping_add(records.len() as u32);
            socket.send_to(&m, ("127.0.0.1", *port)).unwrap();
        }
        let list = alerts(&b);
        let outliers: Vec<&Value> = list
            .iter()
            .filter(|x| x["detector"] == "fleet_outlier")
            .collect();
        if !outliers.is_empty() {
            break outliers.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!(
        "fleet outlier across two nodes found {:?} after the sensor turned odd",
        started.elapsed().saturating_sub(Duration::from_secs(4))
    );
    assert!(
        found.iter().all(|x| x["device"] == format!("sensor-{ODD}")),
        "{found:?}"
    );
    assert_eq!(
        found[0]["evidence"]["fleet"],
        u64::from(SENSORS),
        "{found:?}"
    );
    // Node A lists the same alerts (one store), one per feature.
    let on_a: Vec<Value> = alerts(&a)
        .into_iter()
        .filter(|x| x["detector"] == "fleet_outlier")
        .collect();
    assert!(
        on_a.iter().all(|x| x["device"] == format!("sensor-{ODD}")),
        "{on_a:?}"
    );
    let mut features: Vec<String> = on_a
        .iter()
        .map(|x| x["evidence"]["feature"].to_string())
        .collect();
    let n = features.len();
    features.sort();
    features.dedup();
    assert_eq!(features.len(), n, "a feature alerted twice: {on_a:?}");
}
