//! The edge gateway in a small network the test builds with namespaces and
//! veth pairs: two device segments → an edge namespace running
//! `palisade-edge` with real `nft` → an "internet" namespace holding the
//! control plane, an allowed and a forbidden server on the same port. The
//! model's policy comes from a MUD file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_interop::*;

/// Namespaces, links and processes of one test; removed on drop.
struct Net {
    prefix: String,
    procs: Vec<Child>,
}

impl Net {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    fn sh(&self, script: &str) {
        let o = Command::new("sh").args(["-ec", script]).output().unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .output()
            .unwrap()
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.push(c);
    }

    /// Starts `c` (already inside its namespace), its stderr appended to `log`.
    fn start_logged(&mut self, mut c: Command, log: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        self.procs
            .push(c.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    }

    /// Stops the process started last.
    fn stop_last(&mut self) {
        let mut p = self.procs.pop().unwrap();
        let _ = p.kill();
        let _ = p.wait();
    }

    /// d1 (10.10.1.2) and d2 (10.10.2.2) behind the edge (seg1, seg2); the
    /// edge's uplink to `inet`, which holds 198.51.100.5 (control plane),
    /// .10 (allowed) and .20 (forbidden).
    fn build() -> Self {
        let prefix = format!("pe{}", std::process::id() % 100_000);
        let me = Self {
            prefix,
            procs: vec![],
        };
        let (edge, inet, d1, d2, d3) = (
            me.ns("edge"),
            me.ns("inet"),
            me.ns("d1"),
            me.ns("d2"),
            me.ns("d3"),
        );
        me.sh(&format!(
            "for n in {edge} {inet} {d1} {d2} {d3}; do ip netns add $n; ip -n $n link set lo up; done
             ip link add seg3 netns {edge} type veth peer name eth0 netns {d3}
             ip -n {edge} addr add 10.10.3.1/24 dev seg3; ip -n {edge} link set seg3 up
             ip -n {d3} addr add 10.10.3.2/24 dev eth0; ip -n {d3} link set eth0 up
             ip -n {d3} route add default via 10.10.3.1
             ip link add seg1 netns {edge} type veth peer name eth0 netns {d1}
             ip link add seg2 netns {edge} type veth peer name eth0 netns {d2}
             ip link add up0 netns {edge} type veth peer name down0 netns {inet}
             ip -n {edge} addr add 10.10.1.1/24 dev seg1; ip -n {edge} link set seg1 up
             ip -n {edge} addr add 10.10.2.1/24 dev seg2; ip -n {edge} link set seg2 up
             ip -n {edge} addr add 192.0.2.1/24 dev up0; ip -n {edge} link set up0 up
             ip -n {edge} route add default via 192.0.2.2
             ip netns exec {edge} sysctl -qw net.ipv4.ip_forward=1
             ip -n {d1} addr add 10.10.1.2/24 dev eth0; ip -n {d1} link set eth0 up
             ip -n {d1} route add default via 10.10.1.1
             ip -n {d2} addr add 10.10.2.2/24 dev eth0; ip -n {d2} link set eth0 up
             ip -n {d2} route add default via 10.10.2.1
             ip -n {inet} addr add 192.0.2.2/24 dev down0; ip -n {inet} link set down0 up
             for a in 5 10 20; do ip -n {inet} addr add 198.51.100.$a/32 dev lo; done
             ip -n {inet} route add 10.10.0.0/16 via 192.0.2.1"
        ));
        me
    }

    /// An HTTP server answering `tag` at ip:port inside `ns`.
    fn http(&mut self, ns: &str, ip: &str, port: u16, tag: &str, dir: &Path) {
        let root = dir.join(format!("www-{tag}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), tag).unwrap();
        self.spawn(
            ns,
            &[
                "python3",
                "-m",
                "http.server",
                "--bind",
                ip,
                &port.to_string(),
                "--directory",
                root.to_str().unwrap(),
            ],
        );
    }

    /// Whether `ns` can fetch `url` (short timeout: a dropped SYN fails).
    fn reaches(&self, ns: &str, url: &str) -> bool {
        let o = self.exec(
            ns,
            &[
                "curl",
                "-sS",
                "-k",
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                url,
            ],
        );
        o.status.success()
    }

    /// Whether `ns` can fetch `url` through the HTTPS proxy `proxy`.
    fn reaches_via(&self, ns: &str, proxy: &str, url: &str) -> bool {
        let o = self.exec(
            ns,
            &[
                "curl",
                "-sS",
                "-k",
                "--max-time",
                "5",
                "-x",
                proxy,
                "-o",
                "/dev/null",
                url,
            ],
        );
        o.status.success()
    }

    fn nft_counter(&self, name: &str) -> u64 {
        let o = self.exec(
            "edge",
            &["nft", "-j", "list", "counters", "table", "inet", "palisade"],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["counter"]["name"] == name)
            .and_then(|i| i["counter"]["packets"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in ["edge", "inet", "d1", "d2", "d3"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.elapsed()
}

const MUD: &str = r#"{
  "ietf-mud:mud": {
    "mud-version": 1, "mud-url": "https://acme.example/cam.json", "mfg-name": "acme",
    "from-device-policy": {"access-lists": {"access-list": [{"name": "cam-fr"}]}}
  },
  "ietf-access-control-list:acls": {"acl": [{"name": "cam-fr", "aces": {"ace": [
    {"name": "api", "matches": {"ipv4": {"destination-ipv4-network": "198.51.100.10/32", "protocol": 6},
                                  "tcp": {"destination-port": {"operator": "eq", "port": 8080}}},
     "actions": {"forwarding": "accept"}}
  ]}}]}
}"#;

#[test]
fn the_edge_enforces_the_sites_policy_with_nftables() {
    if !(have("ip")
        && have("nft")
        && have("curl")
        && have("python3")
        && have("openssl")
        && have("dnsmasq")
        && have("softflowd"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut net = Net::build();
    net.http("inet", "198.51.100.10", 8080, "allowed", d);
    net.http("inet", "198.51.100.20", 8080, "forbidden", d);
    net.http("d2", "10.10.2.2", 8080, "neighbour", d);
    net.http("inet", "198.51.100.10", 9090, "named-a", d);
    net.http("inet", "198.51.100.20", 9090, "named-b", d);
    // The site resolver: dnsmasq on the edge, answering from a hosts file
    // with a 2 s TTL.
    let hosts = d.join("hosts");
    std::fs::write(
        &hosts,
        "198.51.100.10 api.acme.example\n198.51.100.20 evil.example\n",
    )
    .unwrap();
    // A TLS service for the egress proxy tests.
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=api.acme.example", "-days", "1"])
        .args([
            "-addext",
            "subjectAltName=DNS:api.acme.example,DNS:evil.example",
        ])
        .arg("-keyout")
        .arg(d.join("tls.key"))
        .arg("-out")
        .arg(d.join("tls.pem"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let https = format!(
        "import http.server,ssl\ns=http.server.HTTPServer(('198.51.100.20',8443),http.server.SimpleHTTPRequestHandler)\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nc.load_cert_chain('{}','{}')\ns.socket=c.wrap_socket(s.socket,server_side=True)\ns.serve_forever()\n",
        d.join("tls.pem").display(),
        d.join("tls.key").display()
    );
    net.spawn("inet", &["python3", "-c", &https]);
    // The control plane's flow collector port (the collector itself is the
    // monitoring issue's): records each datagram's version and length.
    let ipfix_log = d.join("ipfix.log");
    let collector = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('198.51.100.5',4739))\nwhile True:\n    b,a=s.recvfrom(65535)\n    open('{}','a').write('%d %d\\n' % (int.from_bytes(b[:2],'big'), len(b)))\n",
        ipfix_log.display()
    );
    net.spawn("inet", &["python3", "-c", &collector]);
    let dnsmasq_pid = d.join("dnsmasq.pid");
    net.spawn(
        "edge",
        &[
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            &format!("--addn-hosts={}", hosts.display()),
            "--local-ttl=2",
            "--listen-address=10.10.1.1",
            "--bind-interfaces",
            "--user=root",
            &format!("--pid-file={}", dnsmasq_pid.display()),
        ],
    );
    let server =
        ServerProc::start_in_netns(&net.ns("inet"), "198.51.100.5", &d.join("data")).unwrap();
    let port = server.port();
    let mqtt = server.mqtt_port();

    // Policy: the model's MUD file; the site; where the devices sit.
    server.cli_ok(&["model", "add", "cam"]);
    server.cli_ok(&["model", "add", "edge-gw"]);
    let mud = d.join("cam.mud.json");
    std::fs::write(&mud, MUD).unwrap();
    server.cli_ok(&["policy", "mud", "cam", "--file", mud.to_str().unwrap()]);
    let spec = d.join("site.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "resolver": "10.10.1.1",
            "control_plane": [["198.51.100.5", port], ["198.51.100.5", mqtt]],
            "egress_proxy_port": 3128,
            "legacy_mqtt_port": 1883,
            "flow_collector": ["198.51.100.5", 4739],
            "segments": [
                {"name": "cams", "interface": "seg1", "subnet": "10.10.1.0/24"},
                {"name": "office", "interface": "seg2", "subnet": "10.10.2.0/24"},
                {"name": "legacy", "interface": "seg3", "subnet": "10.10.3.0/24"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    server.cli_ok(&["site", "set", "lab", "--file", spec.to_str().unwrap()]);
    // cam-1 runs the MUD policy; printer-1's model has none (so: nothing).
    server.cli_ok(&["model", "add", "printer"]);
    for (id, model, seg, ip) in [
        ("cam-1", "cam", "cams", "10.10.1.2"),
        ("printer-1", "printer", "office", "10.10.2.2"),
    ] {
        enrol_with_token(&server, d, id, model);
        server.cli_ok(&[
            "site",
            "place",
            id,
            "--site",
            "lab",
            "--segment",
            seg,
            "--address",
            ip,
        ]);
    }
    // cam-1 may also reach whatever api.acme.example is, on TCP 9090 (a
    // per-device override naming a DNS name).
    let extra = d.join("extra.json");
    std::fs::write(
        &extra,
        r#"{"from_device": [
             {"peer": {"kind": "dns", "value": "api.acme.example"}, "protocol": 6, "peer_ports": {"lo": 9090, "hi": 9090}},
             {"peer": {"kind": "dns", "value": "api.acme.example"}, "protocol": 6, "peer_ports": {"lo": 8443, "hi": 8443}}]}"#,
    )
    .unwrap();
    server.cli_ok(&[
        "site",
        "place",
        "cam-1",
        "--site",
        "lab",
        "--segment",
        "cams",
        "--address",
        "10.10.1.2",
        "--overrides",
        extra.to_str().unwrap(),
    ]);
    // Before the edge runs, everything is open.
    assert!(net.reaches("d1", "http://198.51.100.20:8080/"));

    // The edge enrols with its own identity and enforces the bundle.
    let token = server.cli_ok(&["enrollment-token", "create", "--model", "edge-gw"]);
    let state = d.join("edge");
    let root = server.data.join("ca/root.pem");
    let edge_ns = net.ns("edge");
    let edge = |args: &[&str]| {
        let mut c = in_netns(Some(&edge_ns), &edge_bin());
        c.env("PALISADE_EDGE_SERVER", &server.url)
            .env("PALISADE_EDGE_ROOT", &root)
            .env("PALISADE_EDGE_STATE_DIR", &state)
            .args(args);
        c
    };
    let edge_log_file = d.join("edge.log");
    let o = edge(&["enroll", "--token", token.trim(), "--edge-id", "edge-1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "edge enrol: {}", text(&o));
    server.cli_ok(&["site", "edge-add", "lab", "edge-1"]);
    // A legacy lamp (plaintext MQTT only): the edge holds its identity.
    server.cli_ok(&["model", "add", "lamp"]);
    let lamp_token = server.cli_ok(&["enrollment-token", "create", "--model", "lamp"]);
    let o = edge(&[
        "legacy-enroll",
        "--token",
        lamp_token.trim(),
        "--device-id",
        "lamp-1",
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "legacy enrol: {}", text(&o));
    server.cli_ok(&[
        "site",
        "place",
        "lamp-1",
        "--site",
        "lab",
        "--segment",
        "legacy",
        "--address",
        "10.10.3.2",
    ]);
    let upstream = format!("198.51.100.5:{mqtt}");
    // softflowd with libpcap's immediate mode, as ARCHITECTURE.md advises:
    // without it, records wait for a capture buffer to fill (~25 s here).
    let shim =
        palisade_interop::netlab::Lab::pcap_immediate(d).map(|p| p.to_string_lossy().into_owned());
    let mut with_services = vec![
        "run",
        "--wait-secs",
        "1",
        "--proxy-listen",
        "0.0.0.0:3128",
        "--legacy-mqtt-listen",
        "0.0.0.0:1883",
        "--upstream-mqtt",
        &upstream,
    ];
    if let Some(s) = &shim {
        with_services.extend(["--softflowd-preload", s.as_str()]);
    }
    net.start_logged(edge(&with_services), &edge_log_file);
    let edge_log = || std::fs::read_to_string(&edge_log_file).unwrap_or_default();
    let took = wait_until("the first bundle applied", 30, || {
        !net.reaches("d1", "http://198.51.100.20:8080/")
    });
    eprintln!("first bundle enforced after {took:?}");
    assert!(edge_log().contains("policy applied"), "{}", edge_log());

    // What the MUD file allows works; the same port elsewhere does not; nor
    // does the other segment.
    assert!(
        net.reaches("d1", "http://198.51.100.10:8080/"),
        "{}\n{}",
        edge_log(),
        text(&net.exec("edge", &["nft", "list", "table", "inet", "palisade"]))
    );
    assert!(!net.reaches("d1", "http://198.51.100.20:8080/"));
    assert!(
        !net.reaches("d1", "http://10.10.2.2:8080/"),
        "a device reached another segment"
    );
    assert!(
        !net.reaches("d2", "http://198.51.100.10:8080/"),
        "a device without a policy got out"
    );
    // Every device reaches the control plane.
    assert!(net.reaches("d1", &format!("https://198.51.100.5:{port}/healthz")));

    // Flows on device segments reach the collector as IPFIX (version 10).
    let took = wait_until("IPFIX records from the edge", 60, || {
        let _ = net.reaches("d1", "http://198.51.100.10:8080/");
        std::fs::read_to_string(&ipfix_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("10 "))
    });
    eprintln!("first IPFIX record after {took:?}");

    // A DNS-named rule follows the record: first .10, then .20.
    wait_until("the DNS-named flow", 15, || {
        net.reaches("d1", "http://198.51.100.10:9090/")
    });
    assert!(!net.reaches("d1", "http://198.51.100.20:9090/"));
    std::fs::write(
        &hosts,
        "198.51.100.20 api.acme.example\n198.51.100.20 evil.example\n",
    )
    .unwrap();
    let pid = std::fs::read_to_string(&dnsmasq_pid).unwrap();
    palisade_interop::run("kill", &["-HUP", pid.trim()]);
    let took = wait_until("the DNS change to be followed", 20, || {
        net.reaches("d1", "http://198.51.100.20:9090/")
    });
    eprintln!("DNS change followed after {took:?}");
    wait_until("the old address to be dropped", 20, || {
        !net.reaches("d1", "http://198.51.100.10:9090/")
    });

    // The legacy bridge: plaintext MQTT from the lamp's segment reaches the
    // control plane as lamp-1; the uplink carries only TLS.
    if have("mosquitto_pub") && have("tcpdump") {
        let cap = d.join("uplink.pcap");
        net.spawn(
            "edge",
            &[
                "tcpdump",
                "-i",
                "up0",
                "-U",
                "-n",
                "-w",
                cap.to_str().unwrap(),
                "tcp",
            ],
        );
        std::thread::sleep(Duration::from_millis(800));
        let o = net.exec(
            "d3",
            &[
                "mosquitto_pub",
                "-h",
                "10.10.3.1",
                "-p",
                "1883",
                "-V",
                "mqttv311",
                "-q",
                "1",
                "-i",
                "old-lamp",
                "-t",
                "palisade/d/lamp-1/telemetry",
                "-m",
                r#"{"firmware":"lamp-fw-7.1-plaintext-marker"}"#,
            ],
        );
        assert!(
            o.status.success(),
            "mosquitto_pub: {}\n{}",
            text(&o),
            edge_log()
        );
        wait_until("the lamp's telemetry at the control plane", 20, || {
            server
                .cli_ok(&["device", "show", "lamp-1", "--json"])
                .contains("lamp-fw-7.1-plaintext-marker")
        });
        std::thread::sleep(Duration::from_millis(500));
        net.stop_last(); // the capture
        let pcap = net.exec(
            "edge",
            &["tcpdump", "-r", cap.to_str().unwrap(), "-n", "-t", "-A"],
        );
        let dump = String::from_utf8_lossy(&pcap.stdout);
        // Ports as tcpdump prints them without timestamps
        // ("IP 10.0.0.1.41234 > 198.51.100.5.8883: ..."): a port field ends in
        // " >" or ":", so a timestamp or sequence number cannot match.
        let on_port = |p: u16| {
            dump.lines()
                .any(|l| l.contains(&format!(".{p} >")) || l.contains(&format!(".{p}:")))
        };
        assert!(
            on_port(mqtt) && dump.contains(&format!("198.51.100.5.{mqtt}")),
            "no TLS session to the gateway on the uplink: {dump}"
        );
        assert!(
            !dump.contains("plaintext-marker"),
            "plaintext on the uplink"
        );
        assert!(!on_port(1883), "MQTT port 1883 on the uplink: {dump}");
        // A device that is not placed at the site cannot use the bridge.
        let o = net.exec(
            "d2",
            &[
                "mosquitto_pub",
                "-h",
                "10.10.2.1",
                "-p",
                "1883",
                "-q",
                "1",
                "-i",
                "x",
                "-t",
                "a",
                "-m",
                "b",
            ],
        );
        assert!(!o.status.success() || !edge_log().contains("printer-1 bridged"));
    }

    // The egress proxy: an allowed name through CONNECT works, another name
    // on the same server does not, nor does a device whose policy names none.
    assert!(
        net.reaches_via(
            "d1",
            "http://10.10.1.1:3128",
            "https://api.acme.example:8443/"
        ),
        "{}",
        edge_log()
    );
    assert!(!net.reaches_via("d1", "http://10.10.1.1:3128", "https://evil.example:8443/"));
    assert!(!net.reaches_via(
        "d2",
        "http://10.10.2.1:3128",
        "https://api.acme.example:8443/"
    ));
    assert!(edge_log().contains("egress proxy denied"), "{}", edge_log());

    // The counters the edge reports are the ruleset's.
    std::thread::sleep(Duration::from_secs(3));
    let denied = net.nft_counter("denied_out");
    let allowed = net.nft_counter("allowed_out");
    assert!(
        denied >= 3 && allowed >= 1,
        "denied {denied}, allowed {allowed}"
    );
    wait_until("the edge to report its counters", 30, || {
        let v: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["site", "show", "lab", "--json"])).unwrap();
        let e = &v["edges"][0];
        e["in_step"] == true
            && e["status"]["counters"]["denied_out"]["packets"].as_u64() == Some(denied)
            && e["status"]["counters"]["allowed_out"]["packets"].as_u64() == Some(allowed)
            && e["status"]["counters"]["proxy_denied"].as_u64() >= Some(2)
            && e["status"]["counters"]["proxy_allowed"].as_u64() >= Some(1)
    });

    // A crash (SIGKILL) and a restart with no new bundle at the server: the
    // applied policy is taken back into service from the state directory
    // (the proxy answers again), and the exporters the killed edge left
    // behind are replaced, not doubled.
    let exporters = |iface: &str| -> Vec<String> {
        let ctl = state.join(format!("softflowd-{iface}.ctl"));
        let ctl = ctl.as_os_str().as_encoded_bytes();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                    args.first().is_some_and(|a| a.ends_with(b"softflowd"))
                        && args.windows(2).any(|w| w[0] == b"-c" && w[1] == ctl)
                })
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = exporters("seg1");
    assert_eq!(before.len(), 1, "{before:?}");
    net.stop_last();
    assert_eq!(
        exporters("seg1"),
        before,
        "the exporter outlives a SIGKILLed edge"
    );
    net.start_logged(edge(&with_services), &edge_log_file);
    wait_until("the applied policy to be restored", 20, || {
        edge_log().contains("applied policy restored")
    });
    wait_until("one new exporter per segment", 20, || {
        ["seg1", "seg2", "seg3"]
            .iter()
            .all(|i| exporters(i).len() == 1)
            && exporters("seg1") != before
    });
    assert!(
        net.reaches_via(
            "d1",
            "http://10.10.1.1:3128",
            "https://api.acme.example:8443/"
        ),
        "{}",
        edge_log()
    );

    // Past its model's support-end restriction date: only the control plane
    // (and update traffic, which goes to it), counted apart from quarantine;
    // an extension lifts it.
    let day = |d: i64| {
        (palisade_core::Clock::now(&palisade_core::SystemClock) + time::Duration::days(d))
            .date()
            .to_string()
    };
    server.cli_ok(&[
        "model",
        "support",
        "cam",
        "--until",
        &day(-2),
        "--restrict-at",
        &day(-1),
    ]);
    let took = wait_until("the support-end restriction enforced", 20, || {
        !net.reaches("d1", "http://198.51.100.10:8080/")
    });
    eprintln!("support-end restriction enforced after {took:?}");
    assert!(net.reaches("d1", &format!("https://198.51.100.5:{port}/healthz")));
    assert!(net.nft_counter("support_end_drops") > 0);
    server.cli_ok(&[
        "model",
        "support",
        "cam",
        "--until",
        &day(400),
        "--restrict-at",
        &day(410),
    ]);
    wait_until("the restriction lifted", 20, || {
        net.reaches("d1", "http://198.51.100.10:8080/")
    });

    // Quarantine: only the control plane, promptly.
    server.cli_ok(&["device", "set-state", "cam-1", "quarantined"]);
    let took = wait_until("quarantine enforced", 20, || {
        !net.reaches("d1", "http://198.51.100.10:8080/")
    });
    eprintln!("quarantine enforced after {took:?}");
    assert!(net.reaches("d1", &format!("https://198.51.100.5:{port}/healthz")));
    assert!(net.nft_counter("quarantine_drops") > 0);

    // A bundle the edge cannot verify is ignored: the last good policy stays.
    std::fs::write(state.join("policy.pub"), [7u8; 32]).unwrap();
    // (the running edge pinned the key at start: restart it with the bad pin)
    net.stop_last();
    std::fs::write(state.join("applied-version"), "0").unwrap();
    net.start_logged(edge(&["run", "--wait-secs", "1"]), &edge_log_file);
    server.cli_ok(&["device", "set-state", "cam-1", "active"]);
    wait_until("the edge to refuse the bundle", 20, || {
        edge_log().contains("does not verify with the pinned policy key")
    });
    assert!(
        !net.reaches("d1", "http://198.51.100.10:8080/"),
        "a bundle with a bad signature was applied"
    );
    assert!(!net.reaches("d1", "http://198.51.100.20:8080/"));

    // nftables refuses the next ruleset: the previous one stays in force (the
    // segment never opens) and the failure is reported and audited.
    net.stop_last();
    std::fs::remove_file(state.join("policy.pub")).unwrap(); // re-pinned from the server
    let wrapper = d.join("nft-refusing");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = -f ] && grep -q 'bundle v' \"$2\" 2>/dev/null; then\n  echo 'simulated kernel refusal' >&2; exit 1\nfi\nexec nft \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    net.start_logged(
        edge(&[
            "run",
            "--wait-secs",
            "1",
            "--nft",
            wrapper.to_str().unwrap(),
        ]),
        &edge_log_file,
    );
    wait_until("the apply failure to be reported", 20, || {
        server
            .cli_ok(&["site", "show", "lab", "--json"])
            .contains("simulated kernel refusal")
    });
    assert!(
        !net.reaches("d1", "http://198.51.100.10:8080/"),
        "the refused ruleset's policy is in force"
    );
    assert!(
        !net.reaches("d1", "http://198.51.100.20:8080/"),
        "the segment opened"
    );
    let audit = server.api_get("/api/v1/audit/entries?limit=1000");
    assert!(audit.contains("edge.apply_failed"), "{audit}");
}
