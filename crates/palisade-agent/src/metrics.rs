//! The device's security metrics for telemetry, read from Linux's `/proc`
//! (in the agent's own network namespace): interface byte and packet
//! counters, listening and established sockets, remote endpoints, process
//! count; failed logins counted from an auth log (sshd, login, PAM lines);
//! the running firmware image's SHA-256. The parsers are pure functions of
//! the files' text.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use palisade_detect::telemetry::{Listener, MAX_LISTENING, MAX_REMOTES, Remote, SecurityMetrics};

/// Totals from `/proc/net/dev` (all interfaces but `lo`): bytes in, packets
/// in, bytes out, packets out.
pub fn parse_net_dev(text: &str) -> (u64, u64, u64, u64) {
    let mut t = (0u64, 0u64, 0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() >= 10 {
            t.0 = t.0.saturating_add(f[0]);
            t.1 = t.1.saturating_add(f[1]);
            t.2 = t.2.saturating_add(f[8]);
            t.3 = t.3.saturating_add(f[9]);
        }
    }
    t
}

fn hex_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(a, 16).ok()?.swap_bytes(),
        )),
        32 => {
            // Four host-order 32-bit words.
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16)
                    .ok()?
                    .swap_bytes();
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

fn loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Sockets from a `/proc/net/{tcp,tcp6,udp,udp6}` table: listeners (not
/// bound to loopback only), established connections, remote endpoints.
pub fn parse_sockets(
    text: &str,
    protocol: u8,
    listening: &mut BTreeSet<Listener>,
    remotes: &mut BTreeSet<Remote>,
) -> u32 {
    let mut established = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (Some((local, lport)), Some((remote, rport))) = (hex_addr(f[1]), hex_addr(f[2])) else {
            continue;
        };
        let state = f[3];
        let listen = match protocol {
            6 => state == "0A",
            _ => state == "07" && rport == 0,
        };
        if listen && !loopback(local) {
            listening.insert(Listener {
                protocol,
                port: lport,
            });
        }
        if (protocol == 6 && state == "01") || (protocol == 17 && rport != 0) {
            if protocol == 6 {
                established += 1;
            }
            if !loopback(remote) && remotes.len() < MAX_REMOTES {
                remotes.insert(Remote {
                    address: remote,
                    port: rport,
                    protocol,
                });
            }
        }
    }
    established
}

/// Whether an auth log line records a failed login (sshd, login, su, PAM).
pub fn is_failed_login(line: &str) -> bool {
    [
        "Failed password",
        "Invalid user",
        "authentication failure",
        "Failed publickey",
        "FAILED LOGIN",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// Reads the metrics; keeps what must persist between reads (the auth log
/// position and count, the firmware hash).
#[derive(Debug)]
pub struct Collector {
    proc_root: PathBuf,
    auth_log: Option<PathBuf>,
    auth_offset: u64,
    failed_logins: u64,
    firmware_file: Option<PathBuf>,
    firmware: Option<(std::time::SystemTime, u64, String)>,
}

impl Collector {
    /// Reads `/proc`; counts failed logins in `auth_log`; hashes `firmware_file`.
    pub fn new(auth_log: Option<PathBuf>, firmware_file: Option<PathBuf>) -> Self {
        // Failures logged before the agent started are history, not news.
        let auth_offset = auth_log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        Self {
            proc_root: PathBuf::from("/proc"),
            auth_log,
            auth_offset,
            failed_logins: 0,
            firmware_file,
            firmware: None,
        }
    }

    /// The metrics now.
    pub fn read(&mut self) -> SecurityMetrics {
        let read = |p: &str| std::fs::read_to_string(self.proc_root.join(p)).unwrap_or_default();
        let (bytes_in, packets_in, bytes_out, packets_out) = parse_net_dev(&read("net/dev"));
        let mut listening = BTreeSet::new();
        let mut remotes = BTreeSet::new();
        let mut established = 0;
        for (file, proto) in [
            ("net/tcp", 6),
            ("net/tcp6", 6),
            ("net/udp", 17),
            ("net/udp6", 17),
        ] {
            established += parse_sockets(&read(file), proto, &mut listening, &mut remotes);
        }
        let processes = std::fs::read_dir(&self.proc_root)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count()
            })
            .unwrap_or(0);
        let failed_logins = self.auth_log.clone().map(|p| self.count_failures(&p));
        SecurityMetrics {
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
            listening: listening.into_iter().take(MAX_LISTENING).collect(),
            established,
            remotes: remotes.into_iter().collect(),
            failed_logins,
            firmware_sha256: self.firmware_hash(),
            processes: u32::try_from(processes).unwrap_or(u32::MAX),
        }
    }

    /// New failure lines since the last read (a rotated, shorter log starts over).
    fn count_failures(&mut self, path: &Path) -> u64 {
        let Ok(mut f) = std::fs::File::open(path) else {
            return self.failed_logins;
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.auth_offset {
            self.auth_offset = 0;
        }
        // At most 4 MiB a read: a flood is counted over several reads.
        let want = (len - self.auth_offset).min(4 << 20);
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        if f.seek(SeekFrom::Start(self.auth_offset)).is_ok()
            && f.take(want).read_to_end(&mut buf).is_ok()
        {
            // Only whole lines; a partial last line waits for the next read.
            let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let text = String::from_utf8_lossy(&buf[..end]);
            self.failed_logins += text.lines().filter(|l| is_failed_login(l)).count() as u64;
            self.auth_offset += end as u64;
        }
        self.failed_logins
    }

    /// The firmware file's SHA-256, recomputed when its size or time changes.
    fn firmware_hash(&mut self) -> Option<String> {
        let path = self.firmware_file.as_ref()?;
        let meta = std::fs::metadata(path).ok()?;
        let stamp = (meta.modified().ok()?, meta.len());
        if let Some((t, l, h)) = &self.firmware
            && (*t, *l) == stamp
        {
            return Some(h.clone());
        }
        let mut f = std::fs::File::open(path).ok()?;
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(_) => return None,
            }
        }
        let hex = crate::ota::hex(h.finish().as_ref());
        self.firmware = Some((stamp.0, stamp.1, hex.clone()));
        Some(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tables_parse() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 5000 50 0 0 0 0 0 0 7000 70 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), (5000, 50, 7000, 70));
        // 0.0.0.0:22 listening, 127.0.0.1:631 listening (loopback: not
        // reported), 10.0.1.10:40000 → 192.0.2.1:8883 established.
        let tcp = "  sl  local_address rem_address   st\n   0: 00000000:0016 00000000:0000 0A 0\n   1: 0100007F:0277 00000000:0000 0A 0\n   2: 0A01000A:9C40 010200C0:22B3 01 0\n";
        let mut l = BTreeSet::new();
        let mut r = BTreeSet::new();
        assert_eq!(parse_sockets(tcp, 6, &mut l, &mut r), 1);
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            vec![Listener {
                protocol: 6,
                port: 22
            }]
        );
        assert_eq!(
            r.into_iter().collect::<Vec<_>>(),
            vec![Remote {
                address: "192.0.2.1".parse().unwrap_or_else(|_| unreachable!()),
                port: 8883,
                protocol: 6
            }]
        );
        // [::]:5683 UDP bound.
        let udp6 = "  sl  local_address rem_address st\n 0: 00000000000000000000000000000000:1633 00000000000000000000000000000000:0000 07 0\n";
        let mut l = BTreeSet::new();
        parse_sockets(udp6, 17, &mut l, &mut BTreeSet::new());
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            vec![Listener {
                protocol: 17,
                port: 5683
            }]
        );
    }

    #[test]
    fn failed_logins_are_counted_from_where_the_agent_started() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("auth.log");
        std::fs::write(
            &log,
            "sshd[1]: Failed password for root from 10.0.0.9 port 1 ssh2\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = Collector::new(Some(log.clone()), None);
        assert_eq!(c.read().failed_logins, Some(0));
        let more = "sshd[2]: Invalid user admin from 10.0.0.9 port 2\nsshd[2]: Accepted publickey for ops\nsshd[3]: Failed password for invalid user admin from 10.0.0.9 port 3 ssh2\nsshd[4]: partial";
        std::fs::write(
            &log,
            format!("sshd[1]: Failed password for root from 10.0.0.9 port 1 ssh2\n{more}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.read().failed_logins, Some(2));
        // Rotated.
        std::fs::write(&log, "login: FAILED LOGIN 1 FROM tty1\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.read().failed_logins, Some(3));
        assert!(c.read().processes > 0);
    }
}
