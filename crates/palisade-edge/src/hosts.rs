//! What the edge sees on its segments for the control plane's inventory of
//! unmanaged hosts: the kernel's neighbour table per segment interface
//! (`ip -j neigh show dev IFACE`), the site's dnsmasq DHCP leases, and the
//! edge's own addresses there (which are no unmanaged host). Parsing is
//! `palisade_policy::hosts`; this module only runs `ip` and reads the file.

use std::net::IpAddr;
use std::path::Path;

use palisade_policy::hosts::{self, HostSeen};
use palisade_policy::site::SiteBundle;

/// What the edge reports: hosts on its segments and its own addresses there.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) hosts: Vec<HostSeen>,
    pub(crate) own: Vec<IpAddr>,
}

fn ip_json(ip: &str, args: &[&str]) -> Option<Vec<u8>> {
    let o = std::process::Command::new(ip).args(args).output().ok()?;
    (o.status.success() && o.stdout.len() <= hosts::MAX_INPUT).then_some(o.stdout)
}

/// The hosts and own addresses on the bundle's segments, now (`now_s`, Unix
/// seconds, judges lease expiry). A tool or file that is missing or
/// unreadable contributes nothing: the report is an inventory aid, never a
/// reason to stop enforcing.
pub(crate) fn seen(ip: &str, leases: Option<&Path>, bundle: &SiteBundle, now_s: i64) -> Seen {
    let mut out = Seen::default();
    let spec = &bundle.spec;
    for seg in &spec.segments {
        let dev = seg.interface.as_str();
        if let Some(json) = ip_json(ip, &["-j", "neigh", "show", "dev", dev]) {
            match hosts::neighbours(&json) {
                Ok(h) => out.hosts.extend(h),
                Err(e) => {
                    tracing::debug!(interface = dev, error = %e, "neighbour table unreadable")
                }
            }
        }
        if let Some(json) = ip_json(ip, &["-j", "addr", "show", "dev", dev])
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json)
        {
            for a in v
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|i| i["addr_info"].as_array().into_iter().flatten())
            {
                if let Some(addr) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                    out.own.push(addr);
                }
            }
        }
    }
    if let Some(path) = leases
        && let Ok(text) = std::fs::read_to_string(path)
    {
        out.hosts.extend(hosts::leases(&text, now_s));
    }
    out.own.truncate(256);
    out.hosts
        .retain(|h| hosts::on_segments(spec, h.address) && !out.own.contains(&h.address));
    out.hosts.truncate(hosts::MAX_HOSTS);
    out
}
