//! Unmanaged devices end to end, in a network the test builds with
//! namespaces: the real edge (`palisade-edge` with nftables and the
//! softflowd it starts) on a bridge holding one enrolled camera, a stranger
//! with a static address and a stranger that takes a lease from the site's
//! dnsmasq (Debian's udhcpc as its DHCP client). Each stranger is listed per
//! site with where it was seen (flows, the edge's neighbour table, the DHCP
//! leases), first/last seen and traffic, and alerted once; the camera and
//! the edge itself are not. Blocking one cuts it off at the edge (even from
//! the control plane), unblocking restores it, adopting one registers and
//! places it; every decision is audited, and bad requests change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use palisade_interop::netlab::{CONTROL, Lab, device_ip, host};
use palisade_interop::*;
use serde_json::Value;

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t.elapsed());
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

const STRANGER: &str = "10.10.1.77";

#[test]
fn unmanaged_hosts_are_inventoried_alerted_once_blocked_and_adopted() {
    if !(have("ip")
        && have("nft")
        && have("softflowd")
        && have("dnsmasq")
        && have("udhcpc")
        && have("curl")
        && have("python3"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lab = Lab::new("pu");
    lab.site(1, 1);
    lab.attach("stranger", STRANGER);
    // A namespace on the bridge with no address: it asks dnsmasq for one.
    lab.add(&["dhcp"]);
    let (rtr, dhcp) = (lab.ns("rtr"), lab.ns("dhcp"));
    lab.sh(&format!(
        "ip link add pdhcp netns {rtr} type veth peer name eth0 netns {dhcp}
         ip -n {rtr} link set pdhcp master br0; ip -n {rtr} link set pdhcp up
         ip -n {dhcp} link set eth0 up"
    ));
    let leases = d.join("dnsmasq.leases");
    lab.spawn(
        "dnsmasq",
        "rtr",
        &[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=br0",
            "--bind-interfaces",
            "--dhcp-range=10.10.1.100,10.10.1.150,1h",
            &format!("--dhcp-leasefile={}", leases.display()),
            "--user=root",
            &format!("--pid-file={}", d.join("dnsmasq.pid").display()),
        ],
        Some(&d.join("dnsmasq.log")),
    );

    let server =
        ServerProc::start_in_netns_with(&lab.ns("inet"), CONTROL, &d.join("data"), &[]).unwrap();
    let flow_port = server.flow_port();
    assert!(flow_port > 0);
    server.cli_ok(&["model", "add", "cam"]);
    server.cli_ok(&["model", "add", "edge-gw"]);
    let spec = d.join("site.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "resolver": "10.10.1.1",
            "control_plane": [[CONTROL, server.port()], [CONTROL, server.mqtt_port()]],
            "flow_collector": [CONTROL, flow_port],
            "segments": [{"name": "cams", "interface": "br0", "subnet": "10.10.1.0/24"}]
        })
        .to_string(),
    )
    .unwrap();
    server.cli_ok(&["site", "set", "lab", "--file", spec.to_str().unwrap()]);
    enrol_with_token(&server, d, "cam-1", "cam");
    server.cli_ok(&[
        "site",
        "place",
        "cam-1",
        "--site",
        "lab",
        "--address",
        &device_ip(0),
        "--segment",
        "cams",
    ]);

    // The edge: its own identity, the site's bundle, softflowd on br0, the
    // neighbour table and dnsmasq's leases in its status reports.
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "edge-gw"]);
    let state = d.join("edge");
    let root = server.data.join("ca/root.pem");
    let edge = |args: &[&str]| {
        let mut c = lab.cmd("rtr", edge_bin().to_str().unwrap());
        c.env("PALISADE_EDGE_SERVER", &server.url)
            .env("PALISADE_EDGE_ROOT", &root)
            .env("PALISADE_EDGE_STATE_DIR", &state)
            .env("RUST_LOG", "info")
            .args(args);
        c
    };
    let o = edge(&["enroll", "--token", token.trim(), "--edge-id", "edge-1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "edge enrol: {}", text(&o));
    server.cli_ok(&["site", "edge-add", "lab", "edge-1"]);
    let mut run = vec![
        "run".to_owned(),
        "--wait-secs".into(),
        "2".into(),
        "--dhcp-leases".into(),
        leases.to_str().unwrap().into(),
    ];
    if let Some(shim) = Lab::pcap_immediate(d) {
        run.extend(["--softflowd-preload".into(), shim.to_str().unwrap().into()]);
    }
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let edge_log = d.join("edge.log");
    lab.spawn_cmd("edge", edge(&run), Some(&edge_log));
    let log = || std::fs::read_to_string(&edge_log).unwrap_or_default();
    let control = format!("https://{CONTROL}:{}/healthz", server.port());
    let reaches = |ns: &str, url: &str| {
        lab.exec(
            ns,
            &["curl", "-sk", "--max-time", "2", "-o", "/dev/null", url],
        )
        .status
        .success()
    };
    wait_for("the edge to apply the site's policy", 40, || {
        log().contains("policy applied").then_some(())
    });

    // Traffic: the camera and the stranger talk (the stranger's flow out is
    // outside any policy, but softflowd sees it on the bridge); the DHCP
    // stranger takes a lease with a host name.
    let o = lab.exec(
        "dhcp",
        &[
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            "/bin/true",
            "-x",
            "hostname:thermostat-x",
        ],
    );
    assert!(
        o.status.success(),
        "udhcpc: {}\ndnsmasq: {}",
        text(&o),
        std::fs::read_to_string(d.join("dnsmasq.log")).unwrap_or_default()
    );
    let lease_addr = std::fs::read_to_string(&leases)
        .unwrap()
        .split_ascii_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    assert!(lease_addr.starts_with("10.10.1.1"), "{lease_addr}");
    assert!(
        reaches("stranger", &control),
        "before any decision a stranger reaches the control plane like any host"
    );
    let list = || -> Vec<Value> {
        let v: Value =
            serde_json::from_str(&server.cli_ok(&["site", "unmanaged", "lab", "--json"])).unwrap();
        v["hosts"].as_array().cloned().unwrap_or_default()
    };
    let find = |hosts: &[Value], a: &str| hosts.iter().find(|h| h["address"] == a).cloned();
    let sources = |h: &Value| -> Vec<String> {
        h["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let (stranger, took) = wait_for("the stranger in flows and the neighbour table", 90, || {
        let _ = reaches("stranger", &format!("http://{}:8080/", host(0)));
        let _ = reaches("d0", &format!("http://{}:8080/", host(0)));
        find(&list(), STRANGER).filter(|h| {
            let s = sources(h);
            s.contains(&"flows".to_owned()) && s.contains(&"neighbours".to_owned())
        })
    });
    eprintln!("stranger inventoried from flows and neighbours after {took:?}");
    assert_eq!(stranger["state"], "seen");
    assert!(stranger["bytes"].as_u64().unwrap() > 0, "{stranger}");
    assert!(stranger["mac"].as_str().is_some_and(|m| m.len() == 17));
    assert!(stranger["first_ms"].as_i64() <= stranger["last_ms"].as_i64());
    let (leased, _) = wait_for("the DHCP stranger from the leases", 30, || {
        find(&list(), &lease_addr).filter(|h| sources(h).contains(&"leases".to_owned()))
    });
    assert_eq!(leased["hostname"], "thermostat-x");
    let hosts = list();
    assert!(
        find(&hosts, &device_ip(0)).is_none(),
        "the enrolled camera is no unmanaged host: {hosts:?}"
    );
    assert!(
        find(&hosts, "10.10.1.1").is_none(),
        "nor the edge itself: {hosts:?}"
    );
    let table = server.cli_ok(&["site", "unmanaged", "lab"]);
    assert!(
        table.contains(STRANGER) && table.contains("thermostat-x"),
        "{table}"
    );

    // Alerted once per address, however often it is seen.
    let alerts_for = |a: &str| -> Vec<Value> {
        let all: Vec<Value> =
            serde_json::from_str(&server.cli_ok(&["alerts", "list", "--json"])).unwrap();
        all.into_iter()
            .filter(|x| x["detector"] == "unmanaged_device" && x["peer"] == a)
            .collect()
    };
    let (first, _) = wait_for("an unmanaged_device alert for the stranger", 30, || {
        let a = alerts_for(STRANGER);
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["severity"], "medium");
    assert_eq!(first[0]["count"], 1);
    for _ in 0..3 {
        let _ = reaches("stranger", &format!("http://{}:8080/", host(0)));
        std::thread::sleep(Duration::from_secs(3));
    }
    let later = alerts_for(STRANGER);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0]["count"], 1, "seen again is not alerted again");

    // Block: the edge cuts the stranger off, from the control plane too.
    let before = counter(&lab, "unmanaged_drops");
    server.cli_ok(&["site", "unmanaged", "lab", "--block", STRANGER]);
    let (_, took) = wait_for("the block enforced at the edge", 30, || {
        (!reaches("stranger", &control)).then_some(())
    });
    eprintln!("block enforced after {took:?}");
    assert!(counter(&lab, "unmanaged_drops") > before);
    assert!(
        reaches("d0", &control),
        "the camera still reaches the control plane"
    );
    let blocked = find(&list(), STRANGER).unwrap();
    assert_eq!(blocked["state"], "blocked");
    assert_eq!(blocked["decided_by"], "operator:admin");
    // Unblock restores it.
    server.cli_ok(&["site", "unmanaged", "lab", "--unblock", STRANGER]);
    wait_for("the block lifted", 30, || {
        reaches("stranger", &control).then_some(())
    });

    // Adopt the DHCP stranger: registered, placed at its address.
    let o = server.cli(&[
        "site",
        "unmanaged",
        "lab",
        "--adopt",
        &lease_addr,
        "--device",
        "thermostat-7",
        "--model",
        "cam",
    ]);
    assert!(
        o.status.success() && text(&o).contains("adopted as device thermostat-7"),
        "{}",
        text(&o)
    );
    let dev: Value =
        serde_json::from_str(&server.cli_ok(&["device", "show", "thermostat-7", "--json"]))
            .unwrap();
    assert_eq!(dev["device"]["state"], "registered");
    assert_eq!(dev["device"]["model"], "cam");
    let adopted = find(&list(), &lease_addr).unwrap();
    assert_eq!(adopted["state"], "adopted");
    assert_eq!(adopted["device"], "thermostat-7");

    // Bad requests: refused with a reason, nothing changed.
    for (args, why) in [
        (vec!["--block", "10.10.1.99"], "no unmanaged host"),
        (vec!["--block", "not-an-address"], "not an IP address"),
        (vec!["--block", &lease_addr], "adopted"),
        (
            vec!["--adopt", STRANGER, "--device", "x-1", "--model", "nope"],
            "model nope not found",
        ),
        (
            vec!["--adopt", STRANGER, "--device", "cam-1", "--model", "cam"],
            "already exists",
        ),
    ] {
        let mut a = vec!["site", "unmanaged", "lab"];
        a.extend(args.iter().copied());
        let o = server.cli(&a);
        assert!(
            !o.status.success() && text(&o).contains(why),
            "{a:?} should be refused with {why:?}: {}",
            text(&o)
        );
    }
    assert_eq!(find(&list(), STRANGER).unwrap()["state"], "seen");
    // A device placed at the address by hand (not adopted) takes it over: the
    // undecided host leaves the list.
    server.cli_ok(&["device", "register", "cam-2", "--model", "cam"]);
    server.cli_ok(&[
        "site",
        "place",
        "cam-2",
        "--site",
        "lab",
        "--address",
        STRANGER,
        "--segment",
        "cams",
    ]);
    let hosts = list();
    assert!(find(&hosts, STRANGER).is_none(), "{hosts:?}");
    assert!(find(&hosts, &lease_addr).is_some(), "{hosts:?}");

    // Every decision is in the audit log, and the log verifies.
    let entries: Vec<Value> =
        serde_json::from_str(&server.api_get("/api/v1/audit/entries?limit=5000")).unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in [
        "unmanaged.block",
        "unmanaged.unblock",
        "unmanaged.adopt",
        "device.register",
    ] {
        assert!(actions.contains(&want), "{want} audited: {actions:?}");
    }
    let o = server.cli(&["audit", "verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

fn counter(lab: &Lab, name: &str) -> u64 {
    let o = lab.exec(
        "rtr",
        &["nft", "-j", "list", "counters", "table", "inet", "palisade"],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["counter"]["name"] == name)
        .and_then(|i| i["counter"]["packets"].as_u64())
        .unwrap_or(0)
}
