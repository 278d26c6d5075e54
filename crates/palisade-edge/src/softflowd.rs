//! How the edge runs softflowd on a device-segment interface: IPFIX (`-v 10`)
//! with absolute millisecond times (`-A milli`), full flow tracking, and short
//! timeouts — FIN/RST 1 s, idle TCP/UDP 10 s, ICMP 5 s, long flows exported
//! every 5 s — so the collector hears of a scan or a blocked attempt within
//! seconds. One list, used by the edge and by the harnesses that stand in for
//! it, so the two cannot drift.

use std::ffi::OsString;
use std::path::Path;

/// The arguments for softflowd exporting `iface`'s flows to `collector`
/// (`host:port`, IPv6 in brackets), in the foreground (`-d`), with its pid file
/// and control socket at `pid` and `ctl`.
pub fn args(iface: &str, collector: &str, pid: &Path, ctl: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "-d", "-N", "-v", "10", "-A", "milli", "-T", "full", "-i", iface, "-n", collector,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for timeout in [
        "tcp.fin=1",
        "tcp.rst=1",
        "tcp=10",
        "udp=10",
        "icmp=5",
        "general=10",
        "maxlife=5",
        "expint=1",
    ] {
        a.push("-t".into());
        a.push(timeout.into());
    }
    a.extend(["-p".into(), pid.as_os_str().to_owned()]);
    a.extend(["-c".into(), ctl.as_os_str().to_owned()]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_ipfix_with_millisecond_times_and_short_timeouts() {
        let a = args("br-cams", "10.0.0.1:4739", Path::new("/p"), Path::new("/c"));
        let text: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let joined = text.join(" ");
        assert!(joined.starts_with("-d -N -v 10 -A milli -T full -i br-cams -n 10.0.0.1:4739"));
        assert!(joined.contains("-t tcp.fin=1") && joined.contains("-t maxlife=5"));
        assert!(joined.ends_with("-p /p -c /c"));
    }
}
