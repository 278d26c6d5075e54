//! A small network built from namespaces for the monitoring tests and the
//! detection evaluation harness: an "internet" namespace holding the control
//! plane (198.51.100.5) and hosts (198.51.100.10 and up) with an HTTP server
//! on port 8080 that also takes uploads; a router namespace whose bridge
//! `br0` (10.10.1.1/24) joins the device namespaces (10.10.1.10 and up).
//! Everything the lab starts is stopped by PID, and its namespaces are
//! deleted, when it is dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::text;

/// Namespaces and processes; removed on drop.
#[derive(Debug)]
pub struct Lab {
    /// Prefix of the namespace names (unique per process).
    pub prefix: String,
    names: Vec<String>,
    procs: Vec<(String, Child)>,
}

/// The control plane's address in the lab.
pub const CONTROL: &str = "198.51.100.5";

/// The address of lab host `i` (198.51.100.10 + i).
pub fn host(i: usize) -> String {
    format!("198.51.100.{}", 10 + i)
}

/// The address of device `i` (10.10.1.10 + i).
pub fn device_ip(i: usize) -> String {
    format!("10.10.1.{}", 10 + i)
}

/// An HTTP server that answers GET with a small body and reads and discards
/// PUT/POST bodies (uploads).
const HTTP: &str = r#"
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        n = 64
        if self.path.startswith("/bytes/"):
            n = min(int(self.path[7:] or 0), 1 << 30)
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        chunk = b"x" * 65536
        while n > 0:
            self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            d = self.rfile.read(min(n, 1 << 20))
            if not d: break
            n -= len(d)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    do_POST = do_PUT
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

impl Lab {
    /// An empty lab; `tag` (2–4 letters) starts the namespace names.
    pub fn new(tag: &str) -> Self {
        Self {
            prefix: format!("{tag}{}", std::process::id() % 100_000),
            names: vec![],
            procs: vec![],
        }
    }

    /// The full name of namespace `n`.
    pub fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    /// Runs a shell script (root namespace); panics with its output on failure.
    pub fn sh(&self, script: &str) {
        let o = Command::new("sh")
            .args(["-ec", script])
            .output()
            .unwrap_or_else(|e| panic!("sh: {e}"));
        assert!(o.status.success(), "{script}: {}", text(&o));
    }

    /// A command to run inside namespace `ns`.
    pub fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns), program]);
        c
    }

    /// Runs a command in `ns` and returns its output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let (p, rest) = args.split_first().unwrap_or((&"true", &[]));
        self.cmd(ns, p)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Starts a long-running process in `ns`, output to `log` (or nowhere);
    /// returns its PID. It is stopped when the lab is dropped.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str], log: Option<&Path>) -> u32 {
        let (p, rest) = args.split_first().unwrap_or((&"true", &[]));
        let mut c = self.cmd(ns, p);
        c.args(rest);
        self.spawn_cmd(name, c, log)
    }

    /// Starts a prepared command; see [`Lab::spawn`].
    pub fn spawn_cmd(&mut self, name: &str, mut c: Command, log: Option<&Path>) -> u32 {
        let err = match log {
            Some(l) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(l)
                    .unwrap_or_else(|e| panic!("{}: {e}", l.display())),
            ),
            None => Stdio::null(),
        };
        // Its own process group, so that stopping it also stops what it
        // started (the edge's softflowd, a shell loop's children).
        let child = c
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let pid = child.id();
        self.procs.push((name.to_owned(), child));
        pid
    }

    /// Stops the processes named `name`.
    pub fn stop(&mut self, name: &str) {
        for (n, c) in &mut self.procs {
            if n == name {
                kill_group(c);
            }
        }
        self.procs.retain(|(n, _)| n != name);
    }

    /// Creates namespaces with loopback up.
    pub fn add(&mut self, names: &[&str]) {
        for n in names {
            let full = self.ns(n);
            let _ = Command::new("ip").args(["netns", "del", &full]).output();
            self.sh(&format!("ip netns add {full}; ip -n {full} link set lo up"));
            self.names.push(full);
        }
    }

    /// The site: `inet` (control plane and `hosts` hosts, HTTP on 8080 at
    /// all of them), `rtr` (forwarding, uplink 192.0.2.1, bridge br0
    /// 10.10.1.1/24) and `devices` device namespaces `d0..` on the bridge.
    pub fn site(&mut self, hosts: usize, devices: usize) {
        self.add(&["inet", "rtr"]);
        let (inet, rtr) = (self.ns("inet"), self.ns("rtr"));
        let mut s = format!(
            "ip link add up0 netns {rtr} type veth peer name down0 netns {inet}
             ip -n {rtr} addr add 192.0.2.1/24 dev up0; ip -n {rtr} link set up0 up
             ip -n {inet} addr add 192.0.2.2/24 dev down0; ip -n {inet} link set down0 up
             ip -n {inet} route add 10.10.0.0/16 via 192.0.2.1
             ip -n {rtr} route add default via 192.0.2.2
             ip netns exec {rtr} sysctl -qw net.ipv4.ip_forward=1
             ip -n {rtr} link add br0 type bridge; ip -n {rtr} addr add 10.10.1.1/24 dev br0
             ip -n {rtr} link set br0 up
             ip -n {inet} addr add {CONTROL}/32 dev lo\n"
        );
        for i in 0..hosts {
            s.push_str(&format!("ip -n {inet} addr add {}/32 dev lo\n", host(i)));
        }
        self.sh(&s);
        for i in 0..devices {
            self.attach(&format!("d{i}"), &device_ip(i));
        }
        self.spawn(
            "http",
            "inet",
            &["python3", "-c", HTTP, "0.0.0.0", "8080"],
            None,
        );
    }

    /// Adds namespace `name` on the site's bridge with address `ip`/24.
    pub fn attach(&mut self, name: &str, ip: &str) {
        self.add(&[name]);
        let (rtr, dn) = (self.ns("rtr"), self.ns(name));
        let port = format!("p{}", ip.rsplit('.').next().unwrap_or("0"));
        self.sh(&format!(
            "ip link add {port} netns {rtr} type veth peer name eth0 netns {dn}
             ip -n {rtr} link set {port} master br0; ip -n {rtr} link set {port} up
             ip -n {dn} addr add {ip}/24 dev eth0; ip -n {dn} link set eth0 up
             ip -n {dn} route add default via 10.10.1.1"
        ));
    }

    /// Builds `contrib/pcap-immediate` into `dir` (softflowd exports within
    /// seconds with it); `None` if no C compiler is here.
    pub fn pcap_immediate(dir: &Path) -> Option<PathBuf> {
        let src = crate::manifest_dir().join("../../contrib/pcap-immediate/pcap_immediate.c");
        let out = dir.join("pcap_immediate.so");
        let o = Command::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .output()
            .ok()?;
        o.status.success().then_some(out)
    }

    /// Starts softflowd on `iface` in `ns`, exporting IPFIX to `collector`
    /// with the edge's own arguments.
    pub fn softflowd(&mut self, ns: &str, iface: &str, collector: &str, dir: &Path) -> u32 {
        let mut c = self.cmd(ns, "softflowd");
        if let Some(shim) = Self::pcap_immediate(dir) {
            c.env("LD_PRELOAD", shim);
        }
        c.args(palisade_edge::softflowd::args(
            iface,
            collector,
            &dir.join(format!("softflowd-{ns}-{iface}.pid")),
            &dir.join(format!("softflowd-{ns}-{iface}.ctl")),
        ));
        self.spawn_cmd("softflowd", c, Some(&dir.join("softflowd.log")))
    }
}

/// SIGKILL to the child's process group (it leads one), then reaps it.
pub fn kill_group(c: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", c.id())])
        .output();
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            kill_group(c);
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}
