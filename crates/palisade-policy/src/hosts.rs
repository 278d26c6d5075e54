//! What an edge sees on its segments besides the devices it was told about:
//! the kernel's neighbour table (`ip -j neigh show`) and the DHCP leases of
//! the site's dnsmasq. The control plane lists the addresses that map to no
//! enrolled device as unmanaged hosts. The edge parses both here (and the fuzz
//! target with it); the parsers are bounded, skip what they cannot read and
//! never panic: a neighbour table or lease file is local input, but the server
//! treats what the edge reports from it as untrusted all the same.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::site::SiteSpec;

/// Most hosts an edge reports at once.
pub const MAX_HOSTS: usize = 4096;
/// Longest neighbour table or lease file read.
pub const MAX_INPUT: usize = 4 << 20;

/// Where a host was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// The edge's neighbour table (ARP / NDP).
    Neighbours,
    /// The site resolver's DHCP leases (dnsmasq).
    Leases,
    /// Flow records of the site's segments.
    Flows,
}

impl HostSource {
    /// Its name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            HostSource::Neighbours => "neighbours",
            HostSource::Leases => "leases",
            HostSource::Flows => "flows",
        }
    }
}

/// One address the edge saw on a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSeen {
    /// The address.
    pub address: IpAddr,
    /// Its link-layer address (lower case, colon-separated), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The host name it gave the DHCP server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Where it was seen.
    pub source: HostSource,
}

impl HostSeen {
    /// The same sighting with its free-text fields checked (what the server
    /// does with an edge's report): a malformed MAC or host name is dropped.
    pub fn checked(mut self) -> Self {
        self.mac = self.mac.as_deref().and_then(mac);
        self.hostname = self.hostname.as_deref().and_then(hostname);
        self
    }
}

/// Why a neighbour table cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// Larger than [`MAX_INPUT`].
    #[error("the neighbour table is larger than {MAX_INPUT} bytes")]
    TooLarge,
    /// Not the JSON `ip -j neigh show` prints.
    #[error("the neighbour table is not `ip -j neigh` JSON: {0}")]
    Malformed(String),
}

/// A link-layer address as `aa:bb:cc:dd:ee:ff`, or `None` if `s` is not a
/// 48-bit MAC address.
pub fn mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// A DHCP host name (letters, digits, `-`, `_`, `.`; at most 63 bytes), or
/// `None` (dnsmasq writes `*` when the client gave none).
pub fn hostname(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| s.to_owned())
}

#[derive(Deserialize)]
struct Neighbour {
    dst: Option<String>,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// The hosts of `ip -j neigh show`: entries the kernel has resolved (not
/// `FAILED` or `INCOMPLETE`), at most [`MAX_HOSTS`].
pub fn neighbours(json: &[u8]) -> Result<Vec<HostSeen>, HostsError> {
    if json.len() > MAX_INPUT {
        return Err(HostsError::TooLarge);
    }
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(vec![]);
    }
    let entries: Vec<Neighbour> =
        serde_json::from_slice(json).map_err(|e| HostsError::Malformed(e.to_string()))?;
    Ok(entries
        .into_iter()
        .filter(|n| {
            !n.state
                .iter()
                .any(|s| s == "FAILED" || s == "INCOMPLETE" || s == "NOARP")
        })
        .filter_map(|n| {
            Some(HostSeen {
                address: n.dst?.parse().ok()?,
                mac: n.lladdr.as_deref().and_then(mac),
                hostname: None,
                source: HostSource::Neighbours,
            })
        })
        .take(MAX_HOSTS)
        .collect())
}

/// The hosts of a dnsmasq lease file whose leases have not expired at
/// `now_s` (Unix seconds; an expiry of 0 is an infinite lease). IPv4 lines
/// are `EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID`; IPv6 leases follow a
/// `duid` line and carry an IAID where IPv4 has the MAC. Lines that do not
/// parse are skipped; at most [`MAX_HOSTS`].
pub fn leases(text: &str, now_s: i64) -> Vec<HostSeen> {
    let text = &text[..floor_char_boundary(text, MAX_INPUT)];
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let expiry: i64 = f.next()?.parse().ok()?;
            let hw = f.next()?;
            let address: IpAddr = f.next()?.parse().ok()?;
            let name = f.next().unwrap_or("*");
            (expiry == 0 || expiry >= now_s).then(|| HostSeen {
                address,
                mac: mac(hw),
                hostname: hostname(name),
                source: HostSource::Leases,
            })
        })
        .take(MAX_HOSTS)
        .collect()
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// Whether `address` is a host address on one of the site's segments (not
/// the segment's network or IPv4 broadcast address, not the resolver).
pub fn on_segments(spec: &SiteSpec, address: IpAddr) -> bool {
    if address == spec.resolver || address.is_multicast() || address.is_unspecified() {
        return false;
    }
    spec.segments.iter().any(|s| {
        s.subnet.contains(address)
            && match (address, s.subnet.addr) {
                (IpAddr::V4(a), IpAddr::V4(net)) => {
                    let host_bits = 32 - u32::from(s.subnet.len.min(32));
                    let mask = if host_bits >= 32 {
                        0
                    } else {
                        u32::MAX >> (32 - host_bits)
                    };
                    let a = u32::from(a);
                    host_bits < 2 || (a != u32::from(net) && a & mask != mask)
                }
                _ => true,
            }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_neighbour_table_keeps_resolved_entries() {
        let json = br#"[{"dst":"10.0.0.7","dev":"seg1","lladdr":"02:AA:00:00:00:07","state":["REACHABLE"]},
            {"dst":"10.0.0.8","dev":"seg1","state":["FAILED"]},
            {"dst":"fe80::1","dev":"seg1","lladdr":"02:aa:00:00:00:09","router":null,"state":["STALE"]},
            {"dst":"not an address","dev":"seg1","state":["STALE"]}]"#;
        let h = neighbours(json).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].address, "10.0.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(h[0].mac.as_deref(), Some("02:aa:00:00:00:07"));
        assert_eq!(h[0].source, HostSource::Neighbours);
        assert!(neighbours(b"").unwrap().is_empty());
        assert!(matches!(
            neighbours(b"{\"dst\":1}"),
            Err(HostsError::Malformed(_))
        ));
        assert_eq!(
            neighbours(&vec![b' '; MAX_INPUT + 1]),
            Err(HostsError::TooLarge)
        );
    }

    #[test]
    fn leases_keep_live_ones_with_their_names() {
        let text = "1700000100 02:00:00:00:00:31 10.0.0.31 thermostat-x 01:02:00:00:00:00:00:31\n\
                    1600000000 02:00:00:00:00:32 10.0.0.32 gone *\n\
                    0 02:00:00:00:00:33 10.0.0.33 * *\n\
                    duid 00:01:00:01:2c:aa:bb:cc\n\
                    1700000100 1234 2001:db8::33 <script> *\n\
                    garbage\n";
        let h = leases(text, 1_700_000_000);
        let addrs: Vec<String> = h.iter().map(|x| x.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.31", "10.0.0.33", "2001:db8::33"]);
        assert_eq!(h[0].hostname.as_deref(), Some("thermostat-x"));
        assert_eq!(h[1].hostname, None, "* is no name");
        assert_eq!(h[2].mac, None, "an IAID is no MAC");
        assert_eq!(h[2].hostname, None, "a hostile name is dropped");
    }

    #[test]
    fn only_host_addresses_on_the_sites_segments_count() {
        let spec: SiteSpec = serde_json::from_str(
            r#"{"resolver":"10.0.0.1","control_plane":[],"segments":[
                {"name":"cams","interface":"seg1","subnet":"10.0.0.0/24"},
                {"name":"v6","interface":"seg2","subnet":"2001:db8::/64"}]}"#,
        )
        .unwrap();
        let on = |a: &str| on_segments(&spec, a.parse().unwrap());
        assert!(on("10.0.0.50"));
        assert!(on("2001:db8::50"));
        assert!(!on("10.0.0.1"), "the resolver");
        assert!(!on("10.0.0.0"), "the network address");
        assert!(!on("10.0.0.255"), "the broadcast address");
        assert!(!on("10.0.1.5"), "another subnet");
        assert!(!on("224.0.0.251"), "multicast");
    }

    #[test]
    fn macs_and_names_are_normalised_or_dropped() {
        assert_eq!(
            mac("02-AB-00-00-00-01").as_deref(),
            Some("02:ab:00:00:00:01")
        );
        assert_eq!(mac("02:ab:00:00:00"), None);
        assert_eq!(mac("zz:ab:00:00:00:01"), None);
        assert_eq!(hostname("*"), None);
        assert_eq!(hostname(&"a".repeat(64)), None);
        assert_eq!(hostname("cam-7.lan").as_deref(), Some("cam-7.lan"));
    }
}
