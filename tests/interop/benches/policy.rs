//! Benchmark (informational): network policy at scale.
//!
//! 1. Compile and apply: a site bundle of N devices (5 rules each, in four
//!    segments) rendered into the nftables ruleset and applied with one
//!    `nft -f` in a fresh network namespace.
//! 2. Per-packet cost stays flat as devices are added: new TCP connections per
//!    second through a gateway namespace whose ruleset holds 10 or 10 000
//!    devices in sets, against the same 10 000 devices written as one rule
//!    each (a rule chain), from a device namespace to a server namespace.
//!
//! ```text
//! cargo bench -p palisade-interop --bench policy            # full
//! cargo bench -p palisade-interop --bench policy -- --quick # smoke
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use palisade_interop::have;
use palisade_policy::site::{Segment, SiteBundle, SiteDevice, SiteSpec, render};
use palisade_policy::{Peer, Policy, Ports, Rule};

fn bundle(n: usize) -> SiteBundle {
    let segments: Vec<Segment> = (0..4)
        .map(|i| Segment {
            name: format!("s{i}"),
            interface: format!("seg{i}"),
            vlan: None,
            subnet: format!("10.{}.0.0/16", 100 + i).parse().unwrap(),
            quarantine: false,
        })
        .collect();
    let rule = |peer: &str, port: u16| Rule {
        peer: Peer::Prefix(peer.parse().unwrap()),
        protocol: Some(6),
        peer_ports: Some(Ports::one(port)),
        device_ports: None,
        initiated: None,
    };
    let devices = (0..n)
        .map(|i| {
            let seg = i % 4;
            let host = i / 4 + 2;
            SiteDevice {
                device: format!("d{i}"),
                address: IpAddr::V4(Ipv4Addr::new(
                    10,
                    100 + seg as u8,
                    (host >> 8) as u8,
                    (host & 0xff) as u8,
                )),
                segment: format!("s{seg}"),
                manufacturer: None,
                quarantined: false,
                restricted: false,
                policy: Policy {
                    from_device: vec![
                        rule("198.51.100.10/32", 8080),
                        rule("198.51.100.0/28", 443),
                        rule("203.0.113.0/24", 8883),
                        rule(&format!("192.0.2.{}/32", i % 250), 123),
                    ],
                    to_device: vec![rule("10.200.0.0/24", 22)],
                },
            }
        })
        .collect();
    SiteBundle {
        site: "bench".into(),
        version: 1,
        issued_ms: 0,
        spec: SiteSpec::new(
            "10.100.0.1".parse().unwrap(),
            vec![("198.51.100.5".parse().unwrap(), 8443)],
            segments,
        ),
        blocked: vec![],
        devices,
    }
}

fn sh(script: &str) {
    let o = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn nft_apply(ns: &str, script: &str) -> f64 {
    let f = std::env::temp_dir().join(format!("palisade-bench-{ns}.nft"));
    std::fs::write(&f, script).unwrap();
    let t = Instant::now();
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f"])
        .arg(&f)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_file(&f);
    secs
}

/// The same policy as one rule per device and flow: what sets replace.
fn as_chain(b: &SiteBundle) -> String {
    let mut s = String::from(
        "table inet palisade\ndelete table inet palisade\ntable inet palisade {\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n    iifname \"seg0\" jump from_device\n  }\n  chain from_device {\n    ct state established,related accept\n",
    );
    // The measured device last: a chain is walked rule by rule.
    for d in b.devices.iter().rev() {
        for r in &d.policy.from_device {
            if let (Peer::Prefix(p), Some(ports)) = (&r.peer, r.peer_ports) {
                s.push_str(&format!(
                    "    ip saddr {} ip daddr {} tcp dport {} accept\n",
                    d.address, p, ports.lo
                ));
            }
        }
    }
    s.push_str("    counter drop\n  }\n}\n");
    s
}

struct Lab {
    p: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in ["gw", "dev", "srv"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}-{n}", self.p)])
                .status();
        }
    }
}

/// Device 10.100.0.2 → gateway (seg0 / up0) → server 198.51.100.10:8080.
fn lab() -> Lab {
    let p = format!("pb{}", std::process::id() % 100_000);
    let (gw, dev, srv) = (format!("{p}-gw"), format!("{p}-dev"), format!("{p}-srv"));
    sh(&format!(
        "for n in {gw} {dev} {srv}; do ip netns add $n; ip -n $n link set lo up; done
         ip link add seg0 netns {gw} type veth peer name eth0 netns {dev}
         ip link add up0 netns {gw} type veth peer name eth0 netns {srv}
         ip -n {gw} addr add 10.100.0.1/16 dev seg0; ip -n {gw} link set seg0 up
         ip -n {gw} addr add 192.0.2.1/24 dev up0; ip -n {gw} link set up0 up
         ip -n {gw} route add default via 192.0.2.2
         ip netns exec {gw} sysctl -qw net.ipv4.ip_forward=1
         ip -n {dev} addr add 10.100.0.2/16 dev eth0; ip -n {dev} link set eth0 up
         ip -n {dev} route add default via 10.100.0.1
         ip -n {srv} addr add 192.0.2.2/24 dev eth0; ip -n {srv} link set eth0 up
         ip -n {srv} addr add 198.51.100.10/32 dev lo
         ip -n {srv} route add 10.100.0.0/16 via 192.0.2.1"
    ));
    Lab { p }
}

const SERVER: &str = "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('198.51.100.10', 8080)); s.listen(512)\nwhile True:\n    c,_=s.accept(); c.close()\n";

/// New connections per second from the device namespace.
fn connect_rate(l: &Lab, n: usize) -> f64 {
    let script = format!(
        "import socket,time\nt=time.perf_counter()\nfor _ in range({n}):\n    c=socket.create_connection(('198.51.100.10', 8080), timeout=2); c.close()\nprint({n}/(time.perf_counter()-t))\n"
    );
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-dev", l.p),
            "python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    for t in ["ip", "nft", "python3"] {
        if !have(t) {
            println!("SKIP: {t} is not installed");
            return;
        }
    }
    println!("# policy ({})", if quick { "quick" } else { "full" });
    println!("\n## compile and apply");
    println!(
        "{:>8} {:>12} {:>14} {:>12} {:>14}",
        "devices", "set elements", "render (ms)", "nft -f (ms)", "script (KiB)"
    );
    let sizes: &[usize] = if quick {
        &[100, 1_000]
    } else {
        &[100, 1_000, 10_000]
    };
    let l = lab();
    for &n in sizes {
        let b = bundle(n);
        let t = Instant::now();
        let r = render(&b).unwrap();
        let render_ms = t.elapsed().as_secs_f64() * 1e3;
        let apply_ms = nft_apply(&format!("{}-gw", l.p), &r.script) * 1e3;
        let elements = b
            .devices
            .iter()
            .map(|d| d.policy.from_device.len() + d.policy.to_device.len())
            .sum::<usize>();
        println!(
            "{n:>8} {elements:>12} {render_ms:>14.1} {apply_ms:>12.1} {:>14}",
            r.script.len() / 1024
        );
    }

    println!("\n## per-packet cost: new TCP connections per second through the gateway");
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-srv", l.p),
            "python3",
            "-c",
            SERVER,
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let conns = if quick { 300 } else { 3_000 };
    let big = if quick { 1_000 } else { 10_000 };
    let gw = format!("{}-gw", l.p);
    let mut rows = vec![];
    for (what, script) in [
        (
            "sets, 10 devices".to_string(),
            render(&bundle(10)).unwrap().script,
        ),
        (
            format!("sets, {big} devices"),
            render(&bundle(big)).unwrap().script,
        ),
        (
            format!("one rule per flow, {big} devices"),
            as_chain(&bundle(big)),
        ),
    ] {
        nft_apply(&gw, &script);
        let _ = connect_rate(&l, conns / 10); // warm up
        let rate = connect_rate(&l, conns);
        rows.push((what, rate));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let base = rows[0].1;
    println!(
        "{:<36} {:>14} {:>18}",
        "ruleset", "connections/s", "vs 10 devices"
    );
    for (what, rate) in rows {
        println!("{what:<36} {rate:>14.0} {:>18.2}", rate / base);
    }
}
