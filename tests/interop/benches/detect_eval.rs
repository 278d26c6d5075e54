//! Detection evaluation harness: a site built from network namespaces, with
//! real devices (the real agent, enrolled, reporting security telemetry),
//! the real edge gateway (nftables, softflowd exporting IPFIX) and the real
//! control plane; benign device traffic throughout, and attack scenarios
//! started at times drawn from a seed, each played by real tools: `nmap`
//! scans, an `hping3` flood, an SSH password-guessing loop (`sshpass` against
//! the device's `sshd`), a large upload, periodic `curl` beaconing, refused
//! certificates at the gateway, bad enrolment tokens at EST, a swapped
//! firmware image, a new listening port, a cloned identity, and a device that
//! moves far more data than the rest of its fleet.
//!
//! It prints, per scenario and per detector, whether and how fast it was
//! detected, and the false alerts on benign traffic per device-day.
//!
//! ```text
//! cargo bench -p palisade-interop --bench detect_eval                      # full
//! cargo bench -p palisade-interop --bench detect_eval -- --quick           # CI
//! cargo bench -p palisade-interop --bench detect_eval -- --seed 7          # another draw
//! ```
//! Exits non-zero when overall recall is below the goal (0.95).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_core::Clock;
use palisade_interop::netlab::{CONTROL, Lab, device_ip, host};
use palisade_interop::*;
use serde_json::Value;

fn now_ms() -> i64 {
    palisade_core::SystemClock.now_ms()
}

/// The attacker's namespace address (not a placed device).
const ATTACKER: &str = "10.10.1.250";
/// The SSH attacker, on the management network (in `inet`).
const SSH_ATTACKER: &str = "198.51.100.99";
/// Where the cloned identity connects from.
const CLONE: &str = "10.10.1.251";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ScanHorizontal,
    ScanVertical,
    PolicyViolation,
    Exfiltration,
    Flood,
    Beaconing,
    SshGuessing,
    GatewayBadCerts,
    EstBadTokens,
    FirmwareSwap,
    NewListener,
    Clone,
    OddOneOut,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::ScanHorizontal,
        Kind::ScanVertical,
        Kind::PolicyViolation,
        Kind::Exfiltration,
        Kind::Flood,
        Kind::Beaconing,
        Kind::SshGuessing,
        Kind::GatewayBadCerts,
        Kind::EstBadTokens,
        Kind::FirmwareSwap,
        Kind::NewListener,
        Kind::Clone,
        Kind::OddOneOut,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::ScanHorizontal => "nmap horizontal scan",
            Kind::ScanVertical => "nmap vertical scan",
            Kind::PolicyViolation => "flow outside policy",
            Kind::Exfiltration => "large upload (60 MB)",
            Kind::Flood => "hping3 SYN flood",
            Kind::Beaconing => "curl beacon every 3 s",
            Kind::SshGuessing => "SSH password guessing",
            Kind::GatewayBadCerts => "bad certificates at gateway",
            Kind::EstBadTokens => "bad tokens at EST",
            Kind::FirmwareSwap => "firmware swapped",
            Kind::NewListener => "new listening port",
            Kind::Clone => "cloned identity",
            Kind::OddOneOut => "unlike its fleet",
        }
    }

    fn detector(self) -> &'static str {
        match self {
            Kind::ScanHorizontal => "scan_horizontal",
            Kind::ScanVertical => "scan_vertical",
            Kind::PolicyViolation => "policy_violation",
            Kind::Exfiltration | Kind::Flood => "volume_spike",
            Kind::Beaconing => "beaconing",
            Kind::SshGuessing | Kind::GatewayBadCerts | Kind::EstBadTokens => "failed_logins",
            Kind::FirmwareSwap => "firmware_unassigned",
            Kind::NewListener => "new_listening_port",
            Kind::Clone => "cloned_identity",
            Kind::OddOneOut => "fleet_outlier",
        }
    }
}

struct Scenario {
    kind: Kind,
    device: usize,
    /// Seconds after the attack phase begins.
    at: f64,
    started_ms: Option<i64>,
}

struct Site {
    lab: Lab,
    server: ServerProc,
    dir: PathBuf,
    devices: usize,
}

impl Site {
    fn id(i: usize) -> String {
        format!("sensor-{i}")
    }

    fn agent(&self, ns: &str, state: &Path) -> Command {
        let mut c = self.lab.cmd(ns, agent_bin().to_str().unwrap());
        c.env("PALISADE_AGENT_SERVER", &self.server.url)
            .env("PALISADE_AGENT_ROOT", self.server.data.join("ca/root.pem"))
            .env("PALISADE_AGENT_STATE_DIR", state);
        c
    }

    fn state(&self, i: usize) -> PathBuf {
        self.dir.join(format!("dev{i}"))
    }

    fn start_agent(&mut self, ns: &str, i: usize) {
        let state = self.state(i);
        let mut c = self.agent(ns, &state);
        c.args([
            "run",
            "--mqtt-host",
            CONTROL,
            "--mqtt-port",
            &self.server.mqtt_port().to_string(),
            "--telemetry-every",
            "2",
            "--firmware",
            "1.0",
        ])
        .arg("--firmware-file")
        .arg(state.join("firmware.img"))
        .arg("--auth-log")
        .arg(state.join("auth.log"));
        let log = self.dir.join(format!("agent-{ns}.log"));
        self.lab.spawn_cmd(&format!("agent-{ns}"), c, Some(&log));
    }

    fn exec(&self, ns: &str, args: &[&str]) -> std::process::Output {
        self.lab.exec(ns, args)
    }

    fn bg(&self, ns: &str, args: &[&str]) -> Child {
        let (p, rest) = args.split_first().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("attack-{ns}.log")))
            .unwrap();
        self.lab
            .cmd(ns, p)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap()
    }
}

fn mud() -> String {
    // Out: the API hosts on 8080. In: SSH from the management network
    // (198.51.100.96/27), where the password-guessing attacker also sits.
    r#"{"ietf-mud:mud": {"mud-version": 1, "mud-url": "https://acme.example/sensor.json", "mfg-name": "acme",
    "from-device-policy": {"access-lists": {"access-list": [{"name": "sensor-fr"}]}},
    "to-device-policy": {"access-lists": {"access-list": [{"name": "sensor-to"}]}}},
  "ietf-access-control-list:acls": {"acl": [
    {"name": "sensor-fr", "aces": {"ace": [
      {"name": "api", "matches": {"ipv4": {"destination-ipv4-network": "198.51.100.8/29", "protocol": 6},
        "tcp": {"destination-port": {"operator": "eq", "port": 8080}}}, "actions": {"forwarding": "accept"}}]}},
    {"name": "sensor-to", "aces": {"ace": [
      {"name": "mgmt-ssh", "matches": {"ipv4": {"source-ipv4-network": "198.51.100.96/27", "protocol": 6},
        "tcp": {"destination-port": {"operator": "eq", "port": 22}}}, "actions": {"forwarding": "accept"}}]}}
  ]}}"#
        .into()
}

fn build(dir: &Path, devices: usize, learn_s: u64) -> Site {
    let mut lab = Lab::new("de");
    lab.site(40, devices);
    lab.attach("atk", ATTACKER);
    lab.sh(&format!(
        "ip -n {} addr add {SSH_ATTACKER}/32 dev lo",
        lab.ns("inet")
    ));
    lab.attach("clone", CLONE);
    let config = dir.join("palisade.toml");
    std::fs::write(
        &config,
        format!("[monitoring.detectors]\nlearn_ms = {}\n", learn_s * 1000),
    )
    .unwrap();
    let server = ServerProc::start_in_netns_with(
        &lab.ns("inet"),
        CONTROL,
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let site = Site {
        lab,
        server,
        dir: dir.to_path_buf(),
        devices,
    };
    let s = &site.server;
    s.cli_ok(&["model", "add", "sensor"]);
    s.cli_ok(&["model", "add", "edge-gw"]);
    let mud_file = dir.join("sensor.mud.json");
    std::fs::write(&mud_file, mud()).unwrap();
    s.cli_ok(&[
        "policy",
        "mud",
        "sensor",
        "--file",
        mud_file.to_str().unwrap(),
    ]);
    let spec = dir.join("site.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "resolver": "10.10.1.1",
            "control_plane": [[CONTROL, s.port()], [CONTROL, s.mqtt_port()]],
            "flow_collector": [CONTROL, s.flow_port()],
            "segments": [{"name": "devices", "interface": "br0", "subnet": "10.10.1.0/24"}]
        })
        .to_string(),
    )
    .unwrap();
    s.cli_ok(&["site", "set", "lab", "--file", spec.to_str().unwrap()]);
    for i in 0..devices {
        let token = s.cli_ok(&["enrollment-token", "create", "--model", "sensor"]);
        let state = site.state(i);
        std::fs::create_dir_all(&state).unwrap();
        let o = site
            .agent(&format!("d{i}"), &state)
            .args([
                "enroll",
                "--token",
                token.trim(),
                "--device-id",
                &Site::id(i),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "enrol {i}: {}", text(&o));
        s.cli_ok(&[
            "site",
            "place",
            &Site::id(i),
            "--site",
            "lab",
            "--segment",
            "devices",
            "--address",
            &device_ip(i),
        ]);
        std::fs::write(
            state.join("firmware.img"),
            format!("sensor firmware 1.0 #{i}"),
        )
        .unwrap();
        std::fs::write(state.join("auth.log"), "").unwrap();
    }
    site
}

fn start_edge(site: &mut Site) {
    let s = &site.server;
    let token = s.cli_ok(&["enrollment-token", "create", "--model", "edge-gw"]);
    let state = site.dir.join("edge");
    let root = s.data.join("ca/root.pem");
    let edge = |args: &[&str]| {
        let mut c = site.lab.cmd("rtr", edge_bin().to_str().unwrap());
        c.env("PALISADE_EDGE_SERVER", &s.url)
            .env("PALISADE_EDGE_ROOT", &root)
            .env("PALISADE_EDGE_STATE_DIR", &state)
            .args(args);
        c
    };
    let o = edge(&["enroll", "--token", token.trim(), "--edge-id", "edge-1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "edge enrol: {}", text(&o));
    s.cli_ok(&["site", "edge-add", "lab", "edge-1"]);
    let mut run = edge(&["run", "--wait-secs", "1"]);
    if let Some(shim) = Lab::pcap_immediate(&site.dir) {
        run.arg("--softflowd-preload").arg(shim);
    }
    let log = site.dir.join("edge.log");
    site.lab.spawn_cmd("edge", run, Some(&log));
    let t = Instant::now();
    // Enforced once a forbidden destination is out of reach (tried from the
    // attacker's namespace, which no policy covers: no device is blamed).
    loop {
        let o = site.exec(
            "atk",
            &[
                "curl",
                "-s",
                "--max-time",
                "1",
                "-o",
                "/dev/null",
                &format!("http://{}:8080/", host(20)),
            ],
        );
        if !o.status.success() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the edge did not apply its bundle: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every device polls an allowed host every 4 ± 1.5 s; the odd one also
/// downloads 1 MB every 10 s. Runs until `stop`.
fn benign(
    lab_prefix: String,
    devices: usize,
    odd: Option<usize>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let mut next: Vec<f64> = (0..devices).map(|_| rng.unit() * 4.0).collect();
    let mut next_big = 1.0;
    let mut children: Vec<Child> = Vec::new();
    let curl = |i: usize, url: String| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{lab_prefix}-d{i}"),
                "curl",
                "-s",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    while !stop.load(Ordering::Relaxed) {
        let t = start.elapsed().as_secs_f64();
        for (i, n) in next.iter_mut().enumerate() {
            if *n <= t {
                let h = host((rng.next_u64() % 4) as usize);
                if let Ok(c) = curl(i, format!("http://{h}:8080/")) {
                    children.push(c);
                }
                *n = t + 2.5 + rng.unit() * 3.0;
            }
        }
        if let Some(o) = odd
            && next_big <= t
        {
            if let Ok(c) = curl(o, format!("http://{}:8080/bytes/1000000", host(2))) {
                children.push(c);
            }
            next_big = t + 10.0;
        }
        children.retain_mut(|c| c.try_wait().map(|s| s.is_none()).unwrap_or(false));
        std::thread::sleep(Duration::from_millis(100));
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn attack(site: &mut Site, sc: &Scenario, helpers: &mut Vec<Child>) {
    let dev = format!("d{}", sc.device);
    let ip = device_ip(sc.device);
    match sc.kind {
        Kind::ScanHorizontal => helpers.push(site.bg(
            &dev,
            &[
                "nmap",
                "-sT",
                "-Pn",
                "-n",
                "-p",
                "23",
                "--max-retries",
                "0",
                "--host-timeout",
                "5s",
                "-T4",
                "198.51.100.16-45",
            ],
        )),
        Kind::ScanVertical => helpers.push(site.bg(
            &dev,
            &[
                "nmap",
                "-sT",
                "-Pn",
                "-n",
                "-p",
                "1-100",
                "--max-retries",
                "0",
                "-T4",
                &host(0),
            ],
        )),
        Kind::PolicyViolation => helpers.push(site.bg(
            &dev,
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                &format!("http://{}:8080/", host(12)),
            ],
        )),
        Kind::Exfiltration => {
            let f = site.dir.join("exfil.bin");
            helpers.push(site.bg(
                &dev,
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "60",
                    "-T",
                    f.to_str().unwrap(),
                    &format!("http://{}:8080/up", host(0)),
                ],
            ));
        }
        Kind::Flood => helpers.push(site.bg(
            &dev,
            &[
                "hping3",
                "-S",
                "-p",
                "8080",
                "-i",
                "u100",
                "-c",
                "40000",
                "-q",
                &host(1),
            ],
        )),
        Kind::Beaconing => {
            let script = format!(
                "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s --max-time 2 -o /dev/null http://{}:8080/beacon; sleep 3; done",
                host(5)
            );
            helpers.push(site.bg(&dev, &["sh", "-c", &script]));
        }
        Kind::SshGuessing => {
            let script = format!(
                "for i in $(seq 1 12); do sshpass -p wrong$i ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o PubkeyAuthentication=no -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 \
                 -o ConnectTimeout=3 -o BindAddress={SSH_ATTACKER} root@{ip} true; done"
            );
            helpers.push(site.bg("inet", &["sh", "-c", &script]));
        }
        Kind::GatewayBadCerts => {
            let script = format!(
                "cd {d} && for i in $(seq 1 10); do timeout 3 openssl s_client -connect {CONTROL}:{p} -cert bad.pem -key bad.key </dev/null >/dev/null 2>&1; done",
                d = site.dir.display(),
                p = site.server.mqtt_port()
            );
            helpers.push(site.bg("atk", &["sh", "-c", &script]));
        }
        Kind::EstBadTokens => {
            let script = format!(
                "cd {d} && for i in $(seq 1 10); do curl -s --max-time 3 --cacert data/ca/root.pem -u {id}:not-the-token$i \
                 -H 'Content-Type: application/pkcs10' --data-binary @bad.b64 {url}/.well-known/est/simpleenroll >/dev/null; done",
                d = site.dir.display(),
                id = Site::id(sc.device),
                url = site.server.url
            );
            helpers.push(site.bg("atk", &["sh", "-c", &script]));
        }
        Kind::FirmwareSwap => {
            std::fs::write(site.state(sc.device).join("firmware.img"), b"implant").unwrap();
        }
        Kind::NewListener => helpers.push(site.bg(
            &dev,
            &["python3", "-m", "http.server", "4444", "--bind", &ip],
        )),
        Kind::Clone => {
            let from = site.state(sc.device);
            let to = site.dir.join("clone-state");
            let o = Command::new("cp")
                .arg("-a")
                .arg(&from)
                .arg(&to)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
            let mut c = site.agent("clone", &to);
            c.args([
                "run",
                "--mqtt-host",
                CONTROL,
                "--mqtt-port",
                &site.server.mqtt_port().to_string(),
                "--telemetry-every",
                "2",
            ]);
            site.lab
                .spawn_cmd("clone", c, Some(&site.dir.join("agent-clone.log")));
        }
        Kind::OddOneOut => {}
    }
}

/// Material the attacks need, made before the run.
fn prepare(site: &mut Site, victim: Option<usize>) {
    let d = &site.dir;
    let o = sh(
        "set -e
         head -c 60000000 /dev/urandom > exfil.bin
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=intruder -days 1 -keyout bad.key -out bad.pem 2>/dev/null
         openssl ecparam -name prime256v1 -genkey -noout -out est.key
         openssl req -new -key est.key -subj /CN=intruder -outform DER | base64 > bad.b64
         ssh-keygen -q -t ed25519 -N '' -f sshd_host_key
         mkdir -p /run/sshd",
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    if let Some(v) = victim {
        // The victim's sshd logs to the file its agent reads.
        let log = site.state(v).join("auth.log");
        let mut c = site.lab.cmd(&format!("d{v}"), "/usr/sbin/sshd");
        c.args(["-D", "-f", "/dev/null", "-h"])
            .arg(d.join("sshd_host_key"))
            .args([
                "-o",
                &format!("ListenAddress={}", device_ip(v)),
                "-o",
                "PasswordAuthentication=yes",
            ])
            .args([
                "-o",
                "UsePAM=no",
                "-o",
                "PidFile=none",
                "-o",
                "StrictModes=no",
                "-E",
            ])
            .arg(&log);
        let err = site.dir.join("sshd.err");
        site.lab.spawn_cmd("sshd", c, Some(&err));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seed: u64 = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let tools = [
        "ip",
        "nft",
        "softflowd",
        "nmap",
        "hping3",
        "sshpass",
        "ssh",
        "curl",
        "python3",
        "openssl",
    ];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() || !Path::new("/usr/sbin/sshd").exists() {
        eprintln!("detect_eval: skipped, missing {missing:?} or /usr/sbin/sshd");
        if in_ci() {
            std::process::exit(1);
        }
        return;
    }
    // The benign phase outlasts three fleet comparisons (a minute apart) after
    // learning: the odd device must stand out in three in a row, which a fleet
    // where 13 of 16 devices are under attack at once would blur.
    let (benign_devices, mut learn_s, mut benign_s, spread_s) = if quick {
        (3, 30, 190.0, 30.0)
    } else {
        (12, 60, 600.0, 120.0)
    };
    // Debugging: --only DETECTOR, --learn S, --benign S.
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(v) = opt("--learn").and_then(|v| v.parse().ok()) {
        learn_s = v;
    }
    if let Some(v) = opt("--benign").and_then(|v| v.parse().ok()) {
        benign_s = v;
    }
    let only = opt("--only");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n_sc = Kind::ALL.len();
    let devices = n_sc + benign_devices;
    // Scenario i plays on device i; their order in time is drawn from the seed.
    let mut scenarios: Vec<Scenario> = Kind::ALL
        .iter()
        .enumerate()
        .filter(|(_, k)| only.as_deref().is_none_or(|o| k.detector() == o))
        .map(|(i, k)| Scenario {
            kind: *k,
            device: i,
            at: rng.unit() * spread_s,
            started_ms: None,
        })
        .collect();
    scenarios.sort_by(|a, b| a.at.total_cmp(&b.at));
    let odd = scenarios
        .iter()
        .find(|s| s.kind == Kind::OddOneOut)
        .map(|s| s.device);
    let ssh_victim = scenarios
        .iter()
        .find(|s| s.kind == Kind::SshGuessing)
        .map(|s| s.device);
    let dir = tempfile::tempdir().unwrap();
    let t_setup = Instant::now();
    let mut site = build(dir.path(), devices, learn_s);
    prepare(&mut site, ssh_victim);
    start_edge(&mut site);
    for i in 0..site.devices {
        site.start_agent(&format!("d{i}"), i);
    }
    eprintln!(
        "detect_eval: seed {seed}, {devices} devices ({benign_devices} benign only), setup {:.0?}",
        t_setup.elapsed()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let run_start_ms = now_ms();
    let traffic = {
        let (p, stop) = (site.lab.prefix.clone(), stop.clone());
        std::thread::spawn(move || benign(p, devices, odd, seed, stop))
    };
    // Benign only: learning, then more benign time.
    std::thread::sleep(Duration::from_secs_f64(learn_s as f64 + benign_s));
    let attack_start = Instant::now();
    let mut helpers = Vec::new();
    let mut next = 0;
    let deadline_after_last = Duration::from_secs(90);
    let mut detected: BTreeMap<usize, i64> = BTreeMap::new();
    let mut alerts: Vec<Value> = vec![];
    loop {
        let t = attack_start.elapsed().as_secs_f64();
        while next < scenarios.len() && scenarios[next].at <= t {
            let sc = &scenarios[next];
            eprintln!("  t+{t:5.1}s {} on {}", sc.kind.name(), Site::id(sc.device));
            let started = now_ms();
            attack(&mut site, &scenarios[next], &mut helpers);
            scenarios[next].started_ms = Some(started);
            next += 1;
        }
        alerts = serde_json::from_str(&site.server.api_get("/api/v1/alerts?limit=10000"))
            .unwrap_or_default();
        for (i, sc) in scenarios.iter().enumerate() {
            let Some(start) = sc.started_ms else { continue };
            if detected.contains_key(&i) {
                continue;
            }
            let subject_ok = |a: &Value| match sc.kind {
                Kind::GatewayBadCerts => a["peer"] == ATTACKER,
                _ => a["device"] == Site::id(sc.device).as_str(),
            };
            // The odd device is odd from the start: it counts from when
            // learning ended and comparisons began.
            let from = if sc.kind == Kind::OddOneOut {
                run_start_ms + learn_s as i64 * 1000
            } else {
                start
            };
            // Time to detect: until the alert is visible through the API
            // (polled every second). The fleet comparison runs during the
            // benign phase, when nothing polls: its alert's own time counts
            // (for that detector it is when the comparison ran).
            if let Some(a) = alerts
                .iter()
                .find(|a| a["detector"] == sc.kind.detector() && subject_ok(a))
            {
                let seen = if sc.kind == Kind::OddOneOut {
                    a["first_ms"].as_i64().unwrap_or(0)
                } else {
                    now_ms()
                };
                detected.insert(i, (seen - from).max(0));
            }
        }
        let all_started = next == scenarios.len();
        if all_started && detected.len() == scenarios.len() {
            break;
        }
        if all_started
            && attack_start.elapsed() > Duration::from_secs_f64(spread_s) + deadline_after_last
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let end_ms = now_ms();
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    for mut h in helpers {
        palisade_interop::netlab::kill_group(&mut h);
    }

    // False alerts: on benign-only devices, on scenario devices before their
    // scenario began (the odd one: before learning ended), and at the gateway
    // or EST from anyone but the attacker.
    let mut exposure_ms: i64 = 0;
    let mut false_alerts = vec![];
    for i in 0..devices {
        let id = Site::id(i);
        let sc = scenarios.iter().find(|s| s.device == i);
        let until = match sc {
            Some(s) if s.kind == Kind::OddOneOut => run_start_ms + learn_s as i64 * 1000,
            Some(s) => s.started_ms.unwrap_or(end_ms),
            None => end_ms,
        };
        exposure_ms += (until - run_start_ms).max(0);
        for a in alerts.iter().filter(|a| a["device"] == id.as_str()) {
            if a["first_ms"].as_i64().unwrap_or(0) < until - 1000 {
                false_alerts.push(a.clone());
            }
        }
    }
    // The clone's host is an attacker too: an alert naming it (an unmanaged
    // host on the segment) is a detection, not a false alert.
    for a in alerts
        .iter()
        .filter(|a| a["device"].is_null() && a["peer"] != ATTACKER && a["peer"] != CLONE)
    {
        false_alerts.push(a.clone());
    }
    let device_days = exposure_ms as f64 / 86_400_000.0;

    println!(
        "\nDetection evaluation (seed {seed}, {}): {devices} devices, benign exposure {:.2} device-hours\n",
        if quick { "quick" } else { "full" },
        device_days * 24.0
    );
    println!("| scenario | tool | detector | detected | time to detect |");
    println!("|---|---|---|---|---|");
    for (i, sc) in scenarios.iter().enumerate() {
        println!(
            "| {} | {} | `{}` | {} | {} |",
            sc.kind.name(),
            Site::id(sc.device),
            sc.kind.detector(),
            if detected.contains_key(&i) {
                "yes"
            } else {
                "**no**"
            },
            detected
                .get(&i)
                .map_or("—".into(), |ms| format!("{:.1} s", *ms as f64 / 1000.0))
        );
    }
    let mut per: BTreeMap<&str, (usize, usize, Vec<i64>)> = BTreeMap::new();
    for (i, sc) in scenarios.iter().enumerate() {
        let e = per.entry(sc.kind.detector()).or_default();
        e.0 += 1;
        if let Some(ms) = detected.get(&i) {
            e.1 += 1;
            e.2.push(*ms);
        }
    }
    println!("\n| detector | scenarios | recall | worst time to detect |");
    println!("|---|---|---|---|");
    for (d, (n, k, ttd)) in &per {
        println!(
            "| `{d}` | {n} | {:.2} | {} |",
            *k as f64 / *n as f64,
            ttd.iter()
                .max()
                .map_or("—".into(), |ms| format!("{:.1} s", *ms as f64 / 1000.0))
        );
    }
    let recall = detected.len() as f64 / scenarios.len() as f64;
    let rate = false_alerts.len() as f64 / device_days.max(1e-9);
    println!(
        "\noverall recall {recall:.2} (goal ≥ 0.95); false alerts on benign traffic: {} in {:.2} device-hours = {rate:.1} per device-day (goal ≤ 0.1)",
        false_alerts.len(),
        device_days * 24.0
    );
    for a in &false_alerts {
        println!(
            "  false alert: {} {} {}",
            a["detector"], a["device"], a["summary"]
        );
    }
    let worst = |ds: &[&str]| {
        scenarios
            .iter()
            .enumerate()
            .filter(|(_, s)| ds.contains(&s.kind.detector()))
            .filter_map(|(i, _)| detected.get(&i))
            .max()
            .map_or(0.0, |ms| *ms as f64 / 1000.0)
    };
    println!(
        "scans and policy violations detected within {:.1} s (goal ≤ 10 s); volume within {:.1} s (goal ≤ 60 s)",
        worst(&["scan_horizontal", "scan_vertical", "policy_violation"]),
        worst(&["volume_spike"])
    );
    // Stop everything (by PID) and remove the namespaces before exiting.
    drop(site);
    if recall < 0.95 {
        eprintln!(
            "detect_eval: recall {recall:.2} is below the goal; logs in {}",
            dir.path().display()
        );
        let _ = dir.keep();
        std::process::exit(1);
    }
}
