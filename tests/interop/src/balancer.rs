//! HAProxy (Debian's) in front of `palisade serve` nodes, configured from the
//! sample the operators get, `contrib/haproxy.cfg`: its binds and servers are
//! replaced with loopback ones, everything else is used as shipped. The
//! balancer opens its connections to the nodes from [`BALANCER_SOURCE`], so a
//! node that reports a device at 127.0.0.1 read it from the PROXY header.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{ServerProc, free_port, have, have_python_module, manifest_dir, postgres_admin};

/// The address HAProxy connects to the nodes from.
pub const BALANCER_SOURCE: &str = "127.0.0.9";

/// A running HAProxy; stopped by PID when dropped.
#[derive(Debug)]
pub struct Haproxy {
    child: Child,
    /// The MQTT frontend's port.
    pub mqtt_port: u16,
    /// The HTTPS frontend's port.
    pub https_port: u16,
    /// Per node, a frontend pair (MQTT, HTTPS) that reaches only that node
    /// (tests only: to address one node, still through the balancer).
    pub node_ports: Vec<(u16, u16)>,
}

/// The PostgreSQL admin URL when everything a cluster behind HAProxy needs
/// is here (PostgreSQL, HAProxy, psql, curl, openssl, python3 with paho);
/// `None` (after saying what is missing) outside CI, a failure under CI.
pub fn cluster_peers() -> Option<String> {
    let admin = postgres_admin()?;
    for tool in ["haproxy", "psql", "python3", "curl", "openssl"] {
        if !have(tool) {
            return None;
        }
    }
    have_python_module("paho.mqtt", "paho-mqtt").then_some(admin)
}

/// The `[proxy_protocol]` section a node behind [`Haproxy`] needs.
pub fn node_config() -> String {
    format!("[proxy_protocol]\nhttps = true\nmqtt = true\nfrom = [\"{BALANCER_SOURCE}/32\"]\n")
}

impl Haproxy {
    /// Starts HAProxy before `nodes` (each started with [`node_config`]) and
    /// waits until it passes connections to at least one of them.
    pub fn start(dir: &Path, nodes: &[&ServerProc]) -> anyhow::Result<Self> {
        Self::start_on(dir, nodes, free_port(), free_port())
    }

    /// [`Haproxy::start`] with its MQTT and HTTPS frontends on the given ports.
    pub fn start_on(
        dir: &Path,
        nodes: &[&ServerProc],
        mqtt_port: u16,
        https_port: u16,
    ) -> anyhow::Result<Self> {
        let sample = std::fs::read_to_string(manifest_dir().join("../../contrib/haproxy.cfg"))
            .context("reading contrib/haproxy.cfg")?;
        let mut cfg = String::new();
        for line in sample.lines() {
            let t = line.trim_start();
            if t.starts_with("server ") {
                continue;
            }
            match t {
                "bind :8883" => cfg.push_str(&format!("    bind 127.0.0.1:{mqtt_port}\n")),
                "bind :8443" => cfg.push_str(&format!("    bind 127.0.0.1:{https_port}\n")),
                _ if t.starts_with("maxconn ") => cfg.push_str("    maxconn 8000\n"),
                _ if t.starts_with("default-server ") => {
                    cfg.push_str(&format!("{line} source {BALANCER_SOURCE}\n"))
                }
                _ => {
                    cfg.push_str(line);
                    cfg.push('\n');
                }
            }
            if t.starts_with("backend palisade_mqtt") || t.starts_with("backend palisade_https") {
                for (i, n) in nodes.iter().enumerate() {
                    if t.ends_with("mqtt") {
                        cfg.push_str(&format!(
                            "    server node{i} 127.0.0.1:{} port {}\n",
                            n.mqtt_port(),
                            n.port()
                        ));
                    } else {
                        cfg.push_str(&format!("    server node{i} 127.0.0.1:{}\n", n.port()));
                    }
                }
            }
        }
        let mut node_ports = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let (m, h) = (free_port(), free_port());
            cfg.push_str(&format!(
                "\nfrontend node{i}_mqtt\n    bind 127.0.0.1:{m}\n    default_backend node{i}_mqtt\n\
                 backend node{i}_mqtt\n    option httpchk GET /readyz\n    server node{i} 127.0.0.1:{} port {}\n\
                 frontend node{i}_https\n    bind 127.0.0.1:{h}\n    default_backend node{i}_https\n\
                 backend node{i}_https\n    option httpchk GET /readyz\n    server node{i} 127.0.0.1:{}\n",
                n.mqtt_port(),
                n.port(),
                n.port()
            ));
            node_ports.push((m, h));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        let mut me = Self {
            child,
            mqtt_port,
            https_port,
            node_ports,
        };
        // Ready once a request through it reaches a node.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = me.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                bail!("haproxy exited with {status}: {log}");
            }
            let o = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("https://127.0.0.1:{https_port}/readyz"))
                .output()?;
            if o.stdout == b"200" {
                return Ok(me);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
                bail!("no node answered through haproxy within 20 s: {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Points `node`'s CLI and test clients at this balancer: from now on they
    /// reach the fleet through it.
    pub fn front(&self, node: &mut ServerProc) -> anyhow::Result<()> {
        point(node, self.https_port, self.mqtt_port)
    }

    /// Points `node`'s CLI and test clients at node `i`'s own frontends: they
    /// reach that node only, through the balancer.
    pub fn front_node(&self, node: &mut ServerProc, i: usize) -> anyhow::Result<()> {
        let (m, h) = self.node_ports[i];
        point(node, h, m)
    }
}

fn point(node: &mut ServerProc, https: u16, mqtt: u16) -> anyhow::Result<()> {
    node.url = format!("https://127.0.0.1:{https}");
    std::fs::write(node.data.join("url"), format!("{}\n", node.url))?;
    std::fs::write(node.data.join("mqtt"), format!("127.0.0.1:{mqtt}\n"))?;
    Ok(())
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
