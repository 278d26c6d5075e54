//! Flow export: one managed `softflowd` (Debian) per device-segment interface,
//! exporting IPFIX (`-v 10`) to the collector the site names. softflowd is the
//! maintained, widely deployed exporter; running it per interface keeps the
//! export to device segments only, and short timeouts make flows reach the
//! collector within seconds. The edge starts, restarts and stops the exporters
//! as bundles change; they die with the edge (kill on drop).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use palisade_policy::site::SiteBundle;
use tokio::process::{Child, Command};

/// The running exporters, by interface.
#[derive(Debug, Default)]
pub struct Exporters {
    running: BTreeMap<String, (Option<(IpAddr, u16)>, Child)>,
}

impl Exporters {
    /// Brings the exporters in line with `bundle`.
    pub fn sync(&mut self, program: &str, preload: Option<&Path>, dir: &Path, bundle: &SiteBundle) {
        let want: BTreeMap<String, (IpAddr, u16)> = match bundle.spec.flow_collector {
            Some(c) => bundle
                .spec
                .segments
                .iter()
                .map(|s| (s.interface.clone(), c))
                .collect(),
            None => BTreeMap::new(),
        };
        // Stop what is no longer wanted, or wanted differently, or dead.
        let stale: Vec<String> = self
            .running
            .iter_mut()
            .filter_map(|(i, (c, child))| {
                let exited = child.try_wait().ok().flatten().is_some();
                (want.get(i) != c.as_ref() || exited).then(|| i.clone())
            })
            .collect();
        for i in stale {
            if let Some((_, mut child)) = self.running.remove(&i) {
                let _ = child.start_kill();
            }
        }
        for (iface, (ip, port)) in want {
            if self.running.contains_key(&iface) {
                continue;
            }
            let file = |ext: &str| -> PathBuf { dir.join(format!("softflowd-{iface}.{ext}")) };
            stop_stale(program, &file("ctl"), &file("pid"));
            let collector = match ip {
                IpAddr::V4(v) => format!("{v}:{port}"),
                IpAddr::V6(v) => format!("[{v}]:{port}"),
            };
            let mut cmd = Command::new(program);
            if let Some(p) = preload {
                cmd.env("LD_PRELOAD", p);
            }
            let spawned = cmd
                .args(palisade_edge::softflowd::args(
                    &iface,
                    &collector,
                    &file("pid"),
                    &file("ctl"),
                ))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(child) => {
                    tracing::info!(interface = %iface, %collector, "IPFIX export started");
                    self.running.insert(iface, (Some((ip, port)), child));
                }
                Err(e) => tracing::error!(interface = %iface, error = %e, "cannot start {program}"),
            }
        }
    }

    /// How many exporters run.
    pub fn count(&self) -> usize {
        self.running.len()
    }
}

/// Stops an exporter a previous edge process left running on this interface
/// (an edge killed with SIGKILL cannot take its children along): through its
/// control socket with `softflowctl shutdown` (its flows are exported first),
/// waiting up to 2 s for it to go. Two exporters on one interface would count
/// every flow twice.
fn stop_stale(program: &str, ctl: &Path, pid_file: &Path) {
    if !ctl.exists() {
        return;
    }
    // Next to the softflowd the edge runs, or on PATH like it.
    let softflowctl = match Path::new(program).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("softflowctl"),
        _ => PathBuf::from("softflowctl"),
    };
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let asked = std::process::Command::new(&softflowctl)
        .arg("-c")
        .arg(ctl)
        .arg("shutdown")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if asked {
        let alive = |p: u32| Path::new(&format!("/proc/{p}")).exists();
        for _ in 0..20 {
            if !pid.is_some_and(alive) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tracing::warn!(ctl = %ctl.display(), ?pid, "stopped an exporter a previous edge left running");
    }
    let _ = std::fs::remove_file(ctl);
}
