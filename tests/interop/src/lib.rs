//! Helpers for the interop tests: find the real `palisade` binary, start it as a
//! child on an ephemeral loopback port, run peers, and require them under CI.
//!
//! Under `CI=true` a missing peer fails the test; elsewhere the test is skipped
//! with the reason printed. See README.md for the list of peers.
#![allow(clippy::print_stderr)]

pub mod agents;
pub mod balancer;
pub mod netlab;
pub mod tuf;

pub use tuf::{publish_targets, tuf_ceremony};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade::client::Client;

/// xorshift64*: a small deterministic generator for tests and benches that
/// must be repeatable from a printed seed (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Exponential with mean `mean` (the gaps of a Poisson process).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Log-normal with median `median` and shape `sigma`.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// Whether this is a CI run (missing peers are failures there).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns true if `tool` is on PATH. Under CI a missing tool panics; elsewhere
/// the caller should skip (a reason is printed).
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if in_ci() {
            panic!("peer `{tool}` is missing; scripts/test.sh installs it");
        }
        eprintln!("SKIP: peer `{tool}` is not installed (run scripts/test.sh to install it)");
    }
    found
}

/// Whether Python can import `module` (installed from PyPI as `package`). Under CI
/// a missing module panics; elsewhere the caller should skip (a reason is printed).
pub fn have_python_module(module: &str, package: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if in_ci() {
            panic!("PyPI peer `{package}` is missing; scripts/test.sh installs it");
        }
        eprintln!("SKIP: PyPI peer `{package}` is not installed (pip install {package})");
    }
    ok
}

/// The `palisade` binary built alongside these tests.
pub fn palisade_bin() -> PathBuf {
    sibling_bin("palisade")
}

/// The `palisade-sim` binary built alongside these tests.
pub fn palisade_sim_bin() -> PathBuf {
    sibling_bin("palisade-sim")
}

/// The DER of the PEM private key in `path` (a software keystore's key file).
// Test set-up: a failure here is a broken test, reported by panicking.
#[allow(clippy::expect_used)]
pub fn pem_private_key(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("the key file");
    pem::parse(text).expect("a PEM key").contents().to_vec()
}

/// The `palisade-agent` binary built alongside these tests.
pub fn agent_bin() -> PathBuf {
    sibling_bin("palisade-agent")
}

/// The `palisade-edge` binary built alongside these tests.
pub fn edge_bin() -> PathBuf {
    sibling_bin("palisade-edge")
}

fn sibling_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/palisade
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p palisade`",
        bin.display()
    );
    bin
}

/// `tests/interop` of the checkout cargo runs the tests from, not the one the
/// binary was compiled in: a build cache shared between checkouts may hold a
/// test binary compiled in another, whose files may differ or be gone.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A peer script under `tests/interop/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    manifest_dir().join("peers").join(name)
}

/// With `PALISADE_INTEROP_POSTGRES` set (a PostgreSQL URL whose account may
/// create databases; `scripts/test.sh` sets it for its PostgreSQL pass), the
/// servers these tests start keep their store in PostgreSQL: one database per
/// data directory, so a restarted server finds its state again.
fn postgres_database(data: &Path) -> anyhow::Result<Option<String>> {
    use std::hash::{Hash, Hasher};
    let admin = match std::env::var("PALISADE_INTEROP_POSTGRES") {
        Ok(a) if !a.is_empty() => a,
        _ => return Ok(None),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    create_postgres_database(&admin, &format!("palisade_it_{:016x}", h.finish())).map(Some)
}

/// The URL of the test PostgreSQL server's admin account
/// (`PALISADE_TEST_POSTGRES_URL`, set by scripts/test.sh); `None` (after
/// saying so) outside CI when it is not set; a failure under `CI=true`.
pub fn postgres_admin() -> Option<String> {
    match std::env::var("PALISADE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if in_ci() => {
            panic!("PALISADE_TEST_POSTGRES_URL is not set: scripts/test.sh starts PostgreSQL")
        }
        _ => {
            eprintln!("SKIP: PALISADE_TEST_POSTGRES_URL is not set (run scripts/test.sh)");
            None
        }
    }
}

/// Creates database `name` (unless it exists) on the PostgreSQL server at
/// `admin` (a URL whose account may create databases) with psql; returns its
/// URL.
pub fn create_postgres_database(admin: &str, name: &str) -> anyhow::Result<String> {
    let o = Command::new("psql")
        .arg(admin)
        .args(["-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .context("running psql (apt-get install postgresql-client)")?;
    if !o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("already exists") {
        bail!("creating database {name}: {}", text(&o));
    }
    let admin: palisade_store::Database = admin.parse()?;
    admin
        .sibling(name)
        .map(|d| d.url())
        .context("not a PostgreSQL URL")
}

/// Two `palisade serve` nodes on one PostgreSQL database `url`: node A on a
/// fresh data directory under `dir`, node B on a copy of it (the same CA,
/// audit and TLS keys; its own process and ports).
pub fn two_nodes(dir: &Path, url: &str) -> anyhow::Result<(ServerProc, ServerProc)> {
    two_nodes_with(dir, url, &[])
}

/// [`two_nodes`] with extra `palisade serve` arguments for both.
pub fn two_nodes_with(
    dir: &Path,
    url: &str,
    extra: &[&str],
) -> anyhow::Result<(ServerProc, ServerProc)> {
    two_nodes_env(dir, url, extra, &[])
}

/// [`two_nodes_with`] and environment variables for both.
pub fn two_nodes_env(
    dir: &Path,
    url: &str,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> anyhow::Result<(ServerProc, ServerProc)> {
    let mut nodes = nodes_env(dir, url, 2, extra, env)?;
    let b = nodes.pop().context("node B")?;
    let a = nodes.pop().context("node A")?;
    Ok((a, b))
}

/// `n` nodes on PostgreSQL database `url`: the first on a fresh data
/// directory `dir/a`, each other on a copy of it (`dir/b`, `dir/c`, ...), with
/// extra `palisade serve` arguments and environment variables for all. The
/// first node starts first (it takes the leads).
pub fn nodes_env(
    dir: &Path,
    url: &str,
    n: usize,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> anyhow::Result<Vec<ServerProc>> {
    let args: Vec<&str> = ["--database", url].iter().chain(extra).copied().collect();
    let first = dir.join("a");
    let mut nodes = vec![ServerProc::start_env(&first, &args, env)?];
    for i in 1..n {
        let data = dir.join(char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)).to_string());
        let o = Command::new("cp")
            .arg("-a")
            .arg(&first)
            .arg(&data)
            .output()?;
        if !o.status.success() {
            bail!("copying the first node's data directory: {}", text(&o));
        }
        nodes.push(ServerProc::start_env(&data, &args, env)?);
    }
    Ok(nodes)
}

/// A device holding an MQTT session (paho, `peers/persistent_session.py
/// hold`) on `server` until the server closes it; returns once it has
/// subscribed to its commands. The child exits when the session ends.
pub fn hold_session(server: &ServerProc, cert: &Path, key: &Path, id: &str) -> Child {
    hold_session_from(server, cert, key, id, "127.0.0.1")
}

/// [`hold_session`] from local address `from` (any of 127.0.0.0/8).
pub fn hold_session_from(
    server: &ServerProc,
    cert: &Path,
    key: &Path,
    id: &str,
    from: &str,
) -> Child {
    let mut child = Command::new("python3")
        .env("PALISADE_BIND_ADDRESS", from)
        .arg(peer_script("persistent_session.py"))
        .args([
            "127.0.0.1",
            &server.mqtt_port().to_string(),
            server.data.join("ca/root.pem").to_str().unwrap_or_default(),
            cert.to_str().unwrap_or_default(),
            key.to_str().unwrap_or_default(),
            id,
            "hold",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting python3: {e}"));
    let mut line = String::new();
    if let Some(out) = child.stdout.as_mut() {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
    }
    assert_eq!(line.trim(), "subscribed", "{id} could not subscribe");
    child
}

/// mosquitto_pub/sub arguments that connect as device `id` to `server`'s
/// gateway with its certificate and key.
pub fn mosquitto_args(server: &ServerProc, cert: &Path, key: &Path, id: &str) -> Vec<String> {
    vec![
        "--cafile".into(),
        server.data.join("ca/root.pem").display().to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        server.mqtt_port().to_string(),
        "-i".into(),
        id.into(),
    ]
}

/// Runs `cmd` with `input` on its standard input; its output.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("{cmd:?}: writing its input: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Model `sensor`, its MUD policy (TCP 8080 to 198.51.100.0/24), site `lab`
/// (segment `devices`, 10.10.1.0/24) and `count` sensors `sensor-N`
/// registered and placed at 10.10.1.(10 + N): the devices flow tests send
/// IPFIX records for.
#[allow(clippy::expect_used)]
pub fn sensor_site(server: &ServerProc, dir: &Path, count: usize) {
    server.cli_ok(&["model", "add", "sensor"]);
    let mud = dir.join("sensor.mud.json");
    std::fs::write(
        &mud,
        r#"{"ietf-mud:mud": {"mud-version": 1, "mud-url": "https://acme.example/sensor.json", "mfg-name": "acme",
    "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}}},
  "ietf-access-control-list:acls": {"acl": [{"name": "fr", "aces": {"ace": [
    {"name": "api", "matches": {"ipv4": {"destination-ipv4-network": "198.51.100.0/24", "protocol": 6},
      "tcp": {"destination-port": {"operator": "eq", "port": 8080}}}, "actions": {"forwarding": "accept"}}]}}]}}"#,
    )
    .expect("mud");
    server.cli_ok(&[
        "policy",
        "mud",
        "sensor",
        "--file",
        &mud.display().to_string(),
    ]);
    let spec = dir.join("site.json");
    std::fs::write(
        &spec,
        serde_json::json!({
            "resolver": "10.10.1.1",
            "control_plane": [["127.0.0.1", server.port()]],
            "segments": [{"name": "devices", "interface": "br0", "subnet": "10.10.1.0/24"}]
        })
        .to_string(),
    )
    .expect("site");
    server.cli_ok(&["site", "set", "lab", "--file", &spec.display().to_string()]);
    for n in 0..count {
        let id = format!("sensor-{n}");
        server.cli_ok(&["device", "register", &id, "--model", "sensor"]);
        server.cli_ok(&[
            "site",
            "place",
            &id,
            "--site",
            "lab",
            "--segment",
            "devices",
            "--address",
            &format!("10.10.1.{}", 10 + n),
        ]);
    }
}

/// Waits (up to `within`) until every node serves the same CRL and it lists
/// `serial` (read with `openssl crl`); panics with what they serve if not.
pub fn one_crl_listing(nodes: &[&ServerProc], serial: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let served: Vec<Vec<u8>> = nodes.iter().map(|n| n.api_get_bytes("/crl")).collect();
        let o = run_with_stdin(
            Command::new("openssl").args(["crl", "-inform", "DER", "-noout", "-text"]),
            &served[0],
        );
        assert!(o.status.success(), "{}", text(&o));
        let listed = text(&o).to_uppercase().contains(&serial.to_uppercase());
        if listed && served.iter().all(|c| *c == served[0]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {within:?} the nodes serve {} different CRLs; the first {} {serial}: {}",
            served
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            if listed { "lists" } else { "does not list" },
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `palisade serve` child process on an ephemeral loopback port.
#[derive(Debug)]
pub struct ServerProc {
    /// The data directory.
    pub data: PathBuf,
    /// The child.
    pub child: Child,
    /// The network namespace it runs in (its CLI and API calls run there too).
    pub netns: Option<String>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its PostgreSQL database URL; `None`: the SQLite file in `data`.
    pub database: Option<String>,
}

impl ServerProc {
    /// Starts `palisade serve` on `data` and waits until it answers.
    pub fn start(data: &Path) -> anyhow::Result<Self> {
        Self::start_with(data, &[])
    }

    /// Starts `palisade serve` with extra arguments (e.g. `--config FILE`).
    pub fn start_with(data: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_env(data, extra, &[])
    }

    /// Starts `palisade serve` with extra arguments and environment variables.
    pub fn start_env(data: &Path, extra: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<Self> {
        Self::start_in(None, "127.0.0.1", data, extra, env)
    }

    /// Starts `palisade serve` inside network namespace `netns`, listening on
    /// `ip` (which is also in its certificate).
    pub fn start_in_netns(netns: &str, ip: &str, data: &Path) -> anyhow::Result<Self> {
        Self::start_in(Some(netns), ip, data, &["--server-name", ip], &[])
    }

    /// [`ServerProc::start_in_netns`] with extra arguments.
    pub fn start_in_netns_with(
        netns: &str,
        ip: &str,
        data: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["--server-name", ip];
        args.extend_from_slice(extra);
        Self::start_in(Some(netns), ip, data, &args, &[])
    }

    /// An API call with the admin token (through curl, `-X METHOD`, JSON body);
    /// returns the body of a successful answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut c = in_netns(self.netns.as_deref(), Path::new("curl"));
        c.args(["-sS", "--fail-with-body", "-X", method, "--cacert"])
            .arg(self.data.join("ca/root.pem"))
            .args([
                "-H",
                &format!("Authorization: Bearer {}", self.admin_token()),
            ]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        match c.arg(format!("{}{path}", self.url)).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => panic!("{method} {path}: {}", text(&o)),
            Err(e) => panic!("curl: {e}"),
        }
    }

    fn start_in(
        netns: Option<&str>,
        ip: &str,
        data: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> anyhow::Result<Self> {
        let url_file = data.join("url");
        let _ = std::fs::remove_file(&url_file);
        let log = std::fs::File::create(data.with_extension("log"))?;
        // PostgreSQL serves the root namespace's loopback only.
        let database = match netns {
            None => postgres_database(data)?,
            Some(_) => None,
        };
        let child = in_netns(netns, &palisade_bin())
            .args([
                "serve",
                "--listen",
                &format!("{ip}:0"),
                "--mqtt-listen",
                &format!("{ip}:0"),
                "--coap-listen",
                &format!("{ip}:0"),
                "--oscore-listen",
                &format!("{ip}:0"),
                "--flow-listen",
                &format!("{ip}:0"),
                "--log-level",
                "warn",
            ])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(database.iter().map(|d| ("PALISADE_DATABASE_URL", d)))
            .env("PALISADE_DATA_DIR", data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting palisade serve")?;
        let mut me = Self {
            data: data.to_path_buf(),
            child,
            url: String::new(),
            netns: netns.map(str::to_owned),
            database,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The server writes the file as "URL\n": a read may catch it
            // half-written.
            if let Ok(u) = std::fs::read_to_string(&url_file)
                && u.ends_with('\n')
            {
                me.url = u.trim().to_owned();
                return Ok(me);
            }
            if let Some(status) = me.child.try_wait()? {
                let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
                bail!("palisade serve exited with {status}: {log}");
            }
            if Instant::now() > deadline {
                bail!("palisade serve did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one SQL statement straight on the server's database (sqlite3 on
    /// its file, or psql on its PostgreSQL database), as a compromised
    /// database would be edited; returns the rows, one per line, columns
    /// separated by `|`.
    pub fn sql(&self, statement: &str) -> String {
        let o = match &self.database {
            Some(url) => Command::new("psql")
                .arg(url)
                .args(["-v", "ON_ERROR_STOP=1", "-Atqc", statement])
                .output(),
            None => Command::new("sqlite3")
                .arg(self.data.join("palisade.db"))
                .arg(statement)
                .output(),
        };
        match o {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            Ok(o) => panic!("{statement}: {}", text(&o)),
            Err(e) => panic!("running the database client: {e}"),
        }
    }

    /// A signed document (TUF metadata, the CRL) as stored in the database.
    pub fn document(&self, name: &str) -> Vec<u8> {
        let hex = match self.database {
            Some(_) => "encode(body, 'hex')",
            None => "hex(body)",
        };
        let out = self.sql(&format!(
            "SELECT {hex} FROM signed_documents WHERE name = '{}'",
            name.replace('\'', "''")
        ));
        hex::decode(out).unwrap_or_else(|e| panic!("document {name}: {e}"))
    }

    /// Replaces a stored signed document's bytes behind the server's back
    /// (what a compromised database or mirror serves).
    pub fn plant_document(&self, name: &str, body: &[u8]) {
        let literal = match self.database {
            Some(_) => format!("'\\x{}'::bytea", hex::encode(body)),
            None => format!("X'{}'", hex::encode(body)),
        };
        self.sql(&format!(
            "UPDATE signed_documents SET body = {literal} WHERE name = '{}'",
            name.replace('\'', "''")
        ));
    }

    /// The MQTT gateway's port.
    pub fn mqtt_port(&self) -> u16 {
        self.listener_port("mqtt")
    }

    /// The lines of `/metrics` whose names start with `prefix`.
    pub fn metric(&self, prefix: &str) -> String {
        self.api_get("/metrics")
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The sum of the `/metrics` values on lines starting with `prefix`
    /// (one series, or a family's).
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.metric(prefix)
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A server with `model` and `devices` enrolled through EST with one-time
    /// tokens (openssl keys and CSRs, curl as the EST client); returns it with
    /// each device's key and certificate files, in `dir`.
    pub fn with_token_fleet(
        dir: &Path,
        model: &str,
        devices: &[&str],
    ) -> (Self, Vec<(PathBuf, PathBuf)>) {
        let server = Self::start(&dir.join("data"))
            .unwrap_or_else(|e| panic!("starting palisade serve: {e:#}"));
        server.cli_ok(&["model", "add", model]);
        let list = devices
            .iter()
            .map(|d| enrol_with_token(&server, dir, d, model))
            .collect();
        (server, list)
    }

    /// Waits until device `id` is (`want`) or is not connected; returns how
    /// long that took (polling every 5 ms).
    pub fn wait_connected(&self, id: &str, want: bool, within: Duration) -> Duration {
        eventually(
            within,
            Duration::from_millis(5),
            &format!("{id} connected never became {want}"),
            || self.device(id)["connected"] == want,
        )
    }

    /// The serial of the newest certificate listed for `device`.
    pub fn cert_serial(&self, device: &str) -> String {
        let out = self.cli_ok(&["cert", "list", "--device", device, "--json"]);
        let list: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("cert list: {e}: {out}"));
        list[0]["serial"]
            .as_str()
            .unwrap_or_else(|| panic!("no certificate of {device}: {out}"))
            .to_owned()
    }

    /// `palisade device show ID --json`.
    pub fn device(&self, id: &str) -> serde_json::Value {
        let out = self.cli_ok(&["device", "show", id, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("device show {id}: {e}: {out}"))
    }

    /// The OSCORE listener's UDP port.
    pub fn oscore_port(&self) -> u16 {
        self.listener_port("oscore")
    }

    /// The CoAP endpoint's UDP port (DTLS).
    pub fn coap_port(&self) -> u16 {
        self.listener_port("coap")
    }

    /// A listener's port, from the address file the server wrote for it in
    /// its data directory.
    fn listener_port(&self, file: &str) -> u16 {
        std::fs::read_to_string(self.data.join(file))
            .ok()
            .and_then(|s| s.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or(0)
    }

    /// The flow collector's UDP port.
    pub fn flow_port(&self) -> u16 {
        self.listener_port("flows")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The admin token text.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// An API client with the given token (the admin's by default).
    pub fn client(&self, token: Option<String>) -> Client {
        let token = token.or_else(|| Some(self.admin_token()));
        match Client::new(&self.url, &self.data.join("ca/root.pem"), token) {
            Ok(c) => c,
            Err(e) => panic!("client for {}: {e:#}", self.url),
        }
    }

    /// Runs a CLI command against this server; returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let out = in_netns(self.netns.as_deref(), &palisade_bin())
            .args(args)
            .env("PALISADE_DATA_DIR", &self.data)
            .env_remove("PALISADE_URL")
            .env_remove("PALISADE_TOKEN")
            .env_remove("PALISADE_CA")
            .output();
        match out {
            Ok(o) => o,
            Err(e) => panic!("running palisade {args:?}: {e}"),
        }
    }

    /// Runs a CLI command that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "palisade {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// GETs an API path with the admin token (through curl); returns the body.
    pub fn api_get(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.api_get_bytes(path)).into_owned()
    }

    /// [`ServerProc::api_get`]'s answer as bytes (DER, images).
    pub fn api_get_bytes(&self, path: &str) -> Vec<u8> {
        let o = in_netns(self.netns.as_deref(), Path::new("curl"))
            .args(["-sS", "--fail", "--cacert"])
            .arg(self.data.join("ca/root.pem"))
            .args([
                "-H",
                &format!("Authorization: Bearer {}", self.admin_token()),
                &format!("{}{path}", self.url),
            ])
            .output();
        match o {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => panic!("GET {path}: {}", text(&o)),
            Err(e) => panic!("curl: {e}"),
        }
    }

    /// Devices connected to the MQTT gateway now (from `/metrics`).
    pub fn connected_devices(&self) -> usize {
        self.api_get("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix("palisade_mqtt_connected_devices "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as usize
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `program`, run inside network namespace `netns` when given.
pub fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs a peer tool; returns its output.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    match Command::new(cmd).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("running {cmd} {args:?}: {e}"),
    }
}

/// Runs a shell snippet with `bash -c`; returns its output.
pub fn sh(script: &str, dir: &Path) -> Output {
    match Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("running {script}: {e}"),
    }
}

/// stdout and stderr together, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A factory batch made with the `palisade factory` CLI.
#[derive(Debug)]
pub struct FactoryBatch {
    /// The factory directory (manufacturer CA `ca.pem`, journal).
    pub factory: PathBuf,
    /// The signed manifest.
    pub manifest: PathBuf,
    /// Each device's directory (`idevid.key`, `idevid.csr`, `idevid.pem`), by serial order.
    pub devices: Vec<PathBuf>,
}

/// Runs the manufacturing-line workflow: a manufacturer CA for `supplier` in
/// `dir/factory-<supplier>`, a birth key, CSR and IDevID per serial in
/// `dir/dev-<serial>`, and a manifest for `model`. `palisade` runs each CLI step.
pub fn factory_batch(
    palisade: &dyn Fn(&[&str]),
    dir: &Path,
    supplier: &str,
    model: &str,
    serials: &[&str],
    validity_days: u32,
) -> FactoryBatch {
    let factory = dir.join(format!("factory-{supplier}"));
    let f = factory.display().to_string();
    palisade(&["factory", "init-ca", "--supplier", supplier, "--dir", &f]);
    let validity = validity_days.to_string();
    let mut devices = Vec::with_capacity(serials.len());
    for s in serials {
        let d = dir.join(format!("dev-{s}"));
        let ds = d.display().to_string();
        palisade(&["factory", "device-key", "--device-dir", &ds, "--serial", s]);
        let csr = d.join("idevid.csr").display().to_string();
        let out = d.join("idevid.pem").display().to_string();
        palisade(&[
            "factory",
            "issue",
            "--dir",
            &f,
            "--csr",
            &csr,
            "--serial",
            s,
            "--out",
            &out,
            "--validity-days",
            &validity,
        ]);
        devices.push(d);
    }
    let manifest = factory.join("batch.json");
    let m = manifest.display().to_string();
    let certs: Vec<String> = devices
        .iter()
        .map(|d| d.join("idevid.pem").display().to_string())
        .collect();
    let mut args = vec![
        "factory", "batch", "--dir", &f, "--model", model, "--out", &m,
    ];
    args.extend(certs.iter().map(String::as_str));
    palisade(&args);
    FactoryBatch {
        factory,
        manifest,
        devices,
    }
}

/// Runs the `palisade` binary with `args`, which must succeed.
pub fn palisade_ok(args: &[&str]) {
    let o = match Command::new(palisade_bin()).args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("running palisade {args:?}: {e}"),
    };
    assert!(o.status.success(), "palisade {args:?} failed: {}", text(&o));
}

/// Enrols `device` of `model` through EST with an enrolment token, using
/// `openssl` for the key and CSR and `curl` as the EST client. Returns the key and
/// certificate files (PEM) in `dir`.
pub fn enrol_with_token(
    server: &ServerProc,
    dir: &Path,
    device: &str,
    model: &str,
) -> (PathBuf, PathBuf) {
    let token = server.cli_ok(&["enrollment-token", "create", "--model", model]);
    let key = dir.join(format!("{device}.key"));
    let cert = dir.join(format!("{device}.pem"));
    let script = format!(
        "set -e; openssl ecparam -name prime256v1 -genkey -noout -out {key} && \
         openssl req -new -key {key} -subj /CN={device} -outform DER | base64 > {device}.b64 && \
         curl -sS --fail --cacert {root} -u '{device}:{token}' -H 'Content-Type: application/pkcs10' \
           --data-binary @{device}.b64 {url}/.well-known/est/simpleenroll | base64 -d | \
         openssl pkcs7 -inform DER -print_certs -out {cert}",
        key = key.display(),
        cert = cert.display(),
        root = server.data.join("ca/root.pem").display(),
        token = token.trim(),
        url = server.url,
    );
    let o = in_netns(server.netns.as_deref(), Path::new("bash"))
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("bash: {e}"));
    assert!(o.status.success(), "enrolling {device}: {}", text(&o));
    (key, cert)
}

/// Polls `ready` every `step` until it holds and returns how long that took;
/// panics naming `what` once `within` has passed.
pub fn eventually(
    within: Duration,
    step: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Duration {
    let t0 = Instant::now();
    while !ready() {
        assert!(t0.elapsed() < within, "{what} (waited {within:?})");
        std::thread::sleep(step);
    }
    t0.elapsed()
}

/// A process's resident memory (KiB), from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system, all threads) a process has used so far, from
/// `/proc/PID/stat` (for rates per CPU-second in the benchmarks).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A SoftHSM2 instance whose tokens live in a directory of the test's own.
#[derive(Debug)]
pub struct SoftHsm {
    /// The `softhsm2.conf` to pass as `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// The PKCS#11 module.
    pub module: PathBuf,
    dir: PathBuf,
}

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

// Test set-up: a failure here is a broken test machine, reported by panicking.
#[allow(clippy::expect_used)]
impl SoftHsm {
    /// A SoftHSM2 with its token directory under `dir`; `None` (after printing
    /// why) when SoftHSM2 is not installed outside CI.
    pub fn new(dir: &Path) -> Option<Self> {
        if !have("softhsm2-util") {
            return None;
        }
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).ok()?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .ok()?;
        Some(Self {
            conf,
            module: PathBuf::from(SOFTHSM_MODULE),
            dir: dir.to_path_buf(),
        })
    }

    /// Initialises a token labelled `label` with a random user PIN kept in a
    /// 0600 file; returns a `pkcs11:` URI for `object` on it.
    pub fn token(&self, label: &str, object: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let pin = format!("{:08}", std::process::id() ^ 0x5a5a_5a5a);
        let so_pin = format!("{pin}0");
        let o = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                &pin,
                "--so-pin",
                &so_pin,
            ])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("softhsm2-util");
        assert!(
            o.status.success(),
            "softhsm2-util --init-token: {}",
            text(&o)
        );
        let pin_file = self.dir.join(format!("{label}.pin"));
        std::fs::write(&pin_file, &pin).expect("pin file");
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        format!(
            "pkcs11:token={label};object={object}?module-path={}&pin-source={}",
            self.module.display(),
            pin_file.display()
        )
    }

    /// Runs `pkcs11-tool` (OpenSC) on a token, logged in; returns its output.
    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> Output {
        let pin = std::fs::read_to_string(self.dir.join(format!("{label}.pin"))).expect("pin");
        Command::new("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                &pin,
            ])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool")
    }
}

/// A software TPM (`swtpm`) on loopback, manufactured by `swtpm_setup` with an
/// EK certificate from its own local vendor CA; stopped by PID on drop.
#[derive(Debug)]
pub struct Swtpm {
    /// State and CA directory.
    pub dir: PathBuf,
    /// The TPM command port.
    pub port: u16,
    /// The vendor CA that signed the EK certificate (PEM).
    pub vendor_ca: PathBuf,
    child: Option<Child>,
}

/// A TCP port free on 127.0.0.1 just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

// Test set-up: a failure here is a broken test machine, reported by panicking.
#[allow(clippy::expect_used)]
impl Swtpm {
    /// Manufactures and starts a TPM under `dir`; `None` (after printing why)
    /// when swtpm is not installed outside CI.
    pub fn start(dir: &Path) -> Option<Self> {
        if !(have("swtpm") && have("swtpm_setup")) {
            return None;
        }
        let state = dir.join("state");
        let ca = dir.join("vendor-ca");
        std::fs::create_dir_all(&state).expect("swtpm state dir");
        std::fs::create_dir_all(&ca).expect("swtpm ca dir");
        let localca = dir.join("localca.conf");
        std::fs::write(
            &localca,
            format!(
                "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
                ca = ca.display()
            ),
        )
        .expect("localca.conf");
        std::fs::write(dir.join("localca.options"), "").expect("localca.options");
        let setup = dir.join("swtpm_setup.conf");
        std::fs::write(
            &setup,
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
                localca.display(),
                dir.join("localca.options").display()
            ),
        )
        .expect("swtpm_setup.conf");
        let o = Command::new("swtpm_setup")
            .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
            .arg(&state)
            .arg("--config")
            .arg(&setup)
            .output()
            .expect("swtpm_setup");
        assert!(o.status.success(), "swtpm_setup: {}", text(&o));
        let mut me = Self {
            dir: dir.to_path_buf(),
            port: 0,
            vendor_ca: ca.join("issuercert.pem"),
            child: None,
        };
        me.power_on();
        Some(me)
    }

    /// Starts the TPM process (a cold boot: PCRs start from zero).
    pub fn power_on(&mut self) {
        // The swtpm TCTI finds the control channel at the command port + 1; a
        // restart keeps the ports so that clients' TCTI strings stay valid.
        let (port, ctrl) = if self.port != 0 {
            (self.port, self.port + 1)
        } else {
            (0..100)
                .map(|_| free_port())
                .find(|p| {
                    *p != 0
                        && *p < u16::MAX
                        && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
                })
                .map(|p| (p, p + 1))
                .expect("two adjacent free ports")
        };
        let child = Command::new("swtpm")
            .args([
                "socket",
                "--tpm2",
                "--flags",
                "not-need-init,startup-clear",
                "--tpmstate",
            ])
            .arg(format!("dir={}", self.dir.join("state").display()))
            .args([
                "--server",
                &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                "--ctrl",
                &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting swtpm");
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "swtpm did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the TPM process (power off).
    pub fn power_off(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The TCTI string for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The vendor CA certificate as DER.
    pub fn vendor_ca_der(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(&self.vendor_ca).expect("vendor CA");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .expect("vendor CA base64")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Makes an Ed25519 release-signing key for `supplier` (already registered),
/// registers its public half with the server, and returns the PKCS#8 key.
// Test set-up: a failure here is a broken test machine, reported by panicking.
#[allow(clippy::expect_used)]
pub fn register_supplier_key(server: &ServerProc, dir: &Path, supplier: &str) -> Vec<u8> {
    use ring::signature::KeyPair;
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("key generation");
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(kp.public_key().as_ref());
    let path = dir.join(format!("{supplier}-release.pub"));
    std::fs::write(&path, pem::encode(&pem::Pem::new("PUBLIC KEY", spki))).expect("write key");
    server.cli_ok(&[
        "supplier",
        "key",
        "add",
        supplier,
        "--public-key",
        &path.display().to_string(),
    ]);
    pkcs8.as_ref().to_vec()
}

/// A supplier (manufacturer CA from `palisade factory init-ca` in
/// `dir/factory`, a registered release key) and a model it owns; returns the
/// release key (PKCS#8 Ed25519).
pub fn supplier_with_model(
    server: &ServerProc,
    dir: &Path,
    supplier: &str,
    model: &str,
) -> Vec<u8> {
    let f = dir.join("factory");
    let p = |p: &Path| p.display().to_string();
    palisade_ok(&[
        "factory",
        "init-ca",
        "--supplier",
        supplier,
        "--dir",
        &p(&f),
    ]);
    server.cli_ok(&[
        "supplier",
        "add",
        supplier,
        "--ca-cert",
        &p(&f.join("ca.pem")),
    ]);
    let key = register_supplier_key(server, dir, supplier);
    server.cli_ok(&["model", "add", model, "--supplier", supplier]);
    key
}

/// Builds an image, its SLSA provenance signed with `key` and a CycloneDX SBOM,
/// and uploads them as release `version` of `model`; returns the image path.
#[allow(clippy::expect_used)]
pub fn upload_release(
    server: &ServerProc,
    dir: &Path,
    key: &[u8],
    model: &str,
    version: &str,
    security_version: u64,
) -> PathBuf {
    upload_release_bytes(
        server,
        dir,
        key,
        (model, version, security_version),
        format!("{model} firmware {version}").as_bytes(),
        &[],
    )
}

/// Uploads a release of `(model, version, security version)` with this image
/// and hardware list (empty: all), signed provenance and an SBOM; returns the
/// image file.
pub fn upload_release_bytes(
    server: &ServerProc,
    dir: &Path,
    key: &[u8],
    release: (&str, &str, u64),
    bytes: &[u8],
    hardware: &[&str],
) -> PathBuf {
    upload_release_with_sbom(server, dir, key, release, bytes, hardware, None)
}

/// [`upload_release_bytes`] with this CycloneDX SBOM (`None`: an empty one).
#[allow(clippy::expect_used)]
pub fn upload_release_with_sbom(
    server: &ServerProc,
    dir: &Path,
    key: &[u8],
    (model, version, security_version): (&str, &str, u64),
    bytes: &[u8],
    hardware: &[&str],
    sbom: Option<&Path>,
) -> PathBuf {
    let image = dir.join(format!("{model}-{version}.img"));
    std::fs::write(&image, bytes).expect("image");
    let sha = palisade_pki::sha256_hex(&std::fs::read(&image).expect("image"));
    let statement = serde_json::json!({
        "_type": palisade_release::STATEMENT_V1,
        "subject": [{"name": format!("{model}-{version}.img"), "digest": {"sha256": sha}}],
        "predicateType": palisade_release::SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {"buildType": "https://example.com/build@v1", "externalParameters": {"tag": version}},
            "runDetails": {"builder": {"id": "https://ci.example.com/builder"}}
        }
    });
    let env = palisade_release::sign_envelope(
        palisade_release::IN_TOTO_PAYLOAD_TYPE,
        statement.to_string().as_bytes(),
        key,
    )
    .expect("sign");
    let prov = dir.join(format!("{model}-{version}.dsse.json"));
    std::fs::write(&prov, serde_json::to_vec(&env).expect("json")).expect("provenance");
    let empty = dir.join("sbom.cdx.json");
    let sbom = match sbom {
        Some(s) => s,
        None => {
            std::fs::write(
                &empty,
                r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#,
            )
            .expect("sbom");
            &empty
        }
    };
    upload_release_signed(
        server,
        (model, version, security_version),
        &image,
        sbom,
        &prov,
        hardware,
    );
    image
}

/// Uploads a release whose image, SBOM and signed provenance are files.
pub fn upload_release_signed(
    server: &ServerProc,
    (model, version, security_version): (&str, &str, u64),
    image: &Path,
    sbom: &Path,
    prov: &Path,
    hardware: &[&str],
) {
    let mut args = release_upload_args(model, version, security_version, image, sbom, prov);
    if !hardware.is_empty() {
        args.push("--hardware".into());
        args.push(hardware.join(","));
    }
    server.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The arguments of `palisade release upload`.
pub fn release_upload_args(
    model: &str,
    version: &str,
    security_version: u64,
    image: &Path,
    sbom: &Path,
    provenance: &Path,
) -> Vec<String> {
    [
        "release",
        "upload",
        "--model",
        model,
        "--release-version",
        version,
        "--security-version",
        &security_version.to_string(),
        "--image",
        &image.display().to_string(),
        "--sbom",
        &sbom.display().to_string(),
        "--provenance",
        &provenance.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}
