//! A site's policy bundle (what an edge gateway enforces) and its nftables
//! ruleset. The ruleset lives in one table Palisade owns (`inet palisade`)
//! and is replaced in one `nft -f` transaction. Per-packet work does not grow
//! with the fleet: every device's allowed flows are elements of a few
//! concatenated sets (device . peer . protocol . port), looked up once per
//! new connection, not rules walked one by one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{DnsName, Peer, Policy, PolicyError, Ports, Prefix};

/// The table Palisade owns on an edge gateway.
pub const TABLE: &str = "palisade";
/// Most devices in one bundle.
pub const MAX_DEVICES: usize = 100_000;

/// A network segment of a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Its name.
    pub name: String,
    /// The edge's interface on it (`eth1`, `eth1.20`).
    pub interface: String,
    /// VLAN id, if the interface is a VLAN.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Its subnet.
    pub subnet: Prefix,
    /// Devices in quarantine are moved here (or stay in place, cut off).
    #[serde(default)]
    pub quarantine: bool,
}

/// One device as the edge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteDevice {
    /// Device id.
    pub device: String,
    /// Its address at the site.
    pub address: IpAddr,
    /// Its segment.
    pub segment: String,
    /// Its model's manufacturer (for the MUD same-manufacturer abstraction).
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Cut off from everything but the control plane.
    #[serde(default)]
    pub quarantined: bool,
    /// Past its model's support-end restriction date: confined to the control
    /// plane and update traffic (a separate counter from quarantine).
    #[serde(default)]
    pub restricted: bool,
    /// Its policy (the model's MUD policy with the device's overrides).
    pub policy: Policy,
}

/// Everything an edge gateway enforces for its site, signed by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteBundle {
    /// The site.
    pub site: String,
    /// Grows with every change.
    pub version: u64,
    /// Issued, Unix ms.
    pub issued_ms: i64,
    /// What the operator says about the site.
    pub spec: SiteSpec,
    /// Devices.
    pub devices: Vec<SiteDevice>,
    /// Addresses on the site's segments that are no enrolled device and that
    /// the operator blocked: cut off from everything, the control plane,
    /// the resolver and the edge itself included. Absent when empty, so an
    /// edge that predates it still reads bundles that block nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<IpAddr>,
}

/// What an operator says about a site (`palisade site set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// The site's DNS resolver: the only DNS server devices may use.
    pub resolver: IpAddr,
    /// The control plane's addresses and TCP ports, reachable by every device
    /// (also in quarantine).
    pub control_plane: Vec<(IpAddr, u16)>,
    /// Controller classes (MUD `controller` URIs) → addresses.
    #[serde(default)]
    pub controllers: BTreeMap<String, Vec<Prefix>>,
    /// The site's own controllers (MUD `my-controller`).
    #[serde(default)]
    pub my_controller: Vec<Prefix>,
    /// Segments.
    pub segments: Vec<Segment>,
    /// The edge's egress proxy port (HTTPS CONNECT and TLS passthrough by
    /// SNI), if it runs one; devices may reach it on the edge.
    #[serde(default)]
    pub egress_proxy_port: Option<u16>,
    /// The edge's legacy MQTT bridge port (plaintext on device segments), if any.
    #[serde(default)]
    pub legacy_mqtt_port: Option<u16>,
    /// Where the edge exports device segments' flows as IPFIX (the control
    /// plane's collector), if anywhere.
    #[serde(default)]
    pub flow_collector: Option<(IpAddr, u16)>,
    /// Where devices of a model go when placed without a segment (model → segment).
    #[serde(default)]
    pub model_segments: BTreeMap<String, String>,
}

impl SiteSpec {
    /// A site with these essentials and nothing optional (no controllers,
    /// proxy, bridge, flow export or model placement).
    pub fn new(
        resolver: IpAddr,
        control_plane: Vec<(IpAddr, u16)>,
        segments: Vec<Segment>,
    ) -> Self {
        Self {
            resolver,
            control_plane,
            controllers: BTreeMap::new(),
            my_controller: vec![],
            segments,
            egress_proxy_port: None,
            legacy_mqtt_port: None,
            flow_collector: None,
            model_segments: BTreeMap::new(),
        }
    }
}

/// Whether the device at `src` may open a TLS connection to `host:port`
/// through the egress proxy: its policy must name `host` (a DNS rule) for TCP
/// on that port. Quarantined and unknown sources are refused.
pub fn proxy_allows(b: &SiteBundle, src: IpAddr, host: &str, port: u16) -> Result<(), String> {
    let d = b
        .devices
        .iter()
        .find(|d| d.address == src)
        .ok_or_else(|| format!("{src} is not a known device"))?;
    if d.quarantined {
        return Err(format!("device {} is quarantined", d.device));
    }
    let name = DnsName::parse(host).map_err(|_| format!("{host:?} is not a host name"))?;
    let ok = d.policy.from_device.iter().any(|r| {
        r.peer == Peer::Dns(name.clone())
            && r.protocol.is_none_or(|p| p == 6)
            && r.peer_ports.is_none_or(|p| (p.lo..=p.hi).contains(&port))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "device {}'s policy does not allow {host}:{port}",
            d.device
        ))
    }
}

/// A flow allowed by name: the edge resolves `name` through the site resolver
/// and adds (device . address . protocol . port) with the answer's TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsFlow {
    /// The device's address.
    pub device: IpAddr,
    /// The name.
    pub name: DnsName,
    /// Protocol (`None`: any).
    pub protocol: Option<u8>,
    /// Peer ports (`None`: any).
    pub ports: Option<Ports>,
}

/// The rendered ruleset and the flows the edge keeps current from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The `nft -f` script (replaces the table atomically).
    pub script: String,
    /// Flows to keep resolving.
    pub dns: Vec<DnsFlow>,
}

fn esc_iface(i: &str) -> Result<String, PolicyError> {
    if i.is_empty()
        || i.len() > 15
        || !i
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return Err(PolicyError::Range(format!(
            "{i:?} is not an interface name"
        )));
    }
    Ok(format!("\"{i}\""))
}

fn proto_range(p: Option<u8>) -> String {
    match p {
        Some(p) => p.to_string(),
        None => "0-255".into(),
    }
}

fn port_range(p: Option<Ports>) -> String {
    match p {
        Some(p) if p.lo == p.hi => p.lo.to_string(),
        Some(p) => format!("{}-{}", p.lo, p.hi),
        None => "0-65535".into(),
    }
}

/// The nft set element for an address or prefix.
fn addr(p: &Prefix) -> String {
    let full = if p.addr.is_ipv4() { 32 } else { 128 };
    if p.len == full {
        p.addr.to_string()
    } else {
        p.to_string()
    }
}

fn host(ip: IpAddr) -> Prefix {
    Prefix {
        addr: ip,
        len: if ip.is_ipv4() { 32 } else { 128 },
    }
}

/// Renders the bundle's ruleset.
pub fn render(b: &SiteBundle) -> Result<Ruleset, PolicyError> {
    if b.devices.len() > MAX_DEVICES {
        return Err(PolicyError::Range(format!(
            "more than {MAX_DEVICES} devices in a bundle"
        )));
    }
    let segments: BTreeMap<&str, &Segment> = b
        .spec
        .segments
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut out4: Vec<String> = vec![];
    let mut out6: Vec<String> = vec![];
    let mut in4: Vec<String> = vec![];
    let mut in6: Vec<String> = vec![];
    let mut quarantined: Vec<IpAddr> = vec![];
    let mut restricted: Vec<IpAddr> = vec![];
    let mut dns = vec![];
    for d in &b.devices {
        let seg = segments.get(d.segment.as_str()).ok_or_else(|| {
            PolicyError::Range(format!(
                "device {} is in unknown segment {}",
                d.device, d.segment
            ))
        })?;
        if !seg.subnet.contains(d.address) {
            return Err(PolicyError::Range(format!(
                "device {} address {} is outside segment {} ({})",
                d.device, d.address, seg.name, seg.subnet
            )));
        }
        if d.quarantined || seg.quarantine {
            quarantined.push(d.address);
            continue;
        }
        if d.restricted {
            restricted.push(d.address);
            continue;
        }
        for (outbound, rules) in [(true, &d.policy.from_device), (false, &d.policy.to_device)] {
            for r in rules {
                let peers: Vec<Prefix> = match &r.peer {
                    Peer::Dns(name) => {
                        if outbound {
                            dns.push(DnsFlow {
                                device: d.address,
                                name: name.clone(),
                                protocol: r.protocol,
                                ports: r.peer_ports,
                            });
                        }
                        // Inbound by name: the answer is not known before the
                        // connection; name-based inbound rules are not enforced
                        // beyond replies (documented).
                        continue;
                    }
                    Peer::Prefix(p) => vec![*p],
                    Peer::Controller(uri) => {
                        b.spec.controllers.get(uri).cloned().unwrap_or_default()
                    }
                    Peer::MyController => b.spec.my_controller.clone(),
                    Peer::LocalNetwork => vec![seg.subnet],
                    Peer::SameManufacturer | Peer::Manufacturer(_) => {
                        let want = match &r.peer {
                            Peer::Manufacturer(m) => Some(m.as_str()),
                            _ => d.manufacturer.as_deref(),
                        };
                        b.devices
                            .iter()
                            .filter(|o| {
                                o.device != d.device
                                    && want.is_some()
                                    && o.manufacturer.as_deref() == want
                            })
                            .map(|o| host(o.address))
                            .collect()
                    }
                    Peer::Any => vec![
                        "0.0.0.0/0".parse().unwrap_or(host(d.address)),
                        "::/0".parse().unwrap_or(host(d.address)),
                    ],
                };
                for p in peers {
                    if p.addr.is_ipv4() != d.address.is_ipv4() {
                        continue;
                    }
                    // Outbound: device . peer . proto . peer port.
                    // Inbound: device . peer . proto . device port.
                    let port = if outbound {
                        r.peer_ports
                    } else {
                        r.device_ports
                    };
                    let e = format!(
                        "{} . {} . {} . {}",
                        d.address,
                        addr(&p),
                        proto_range(r.protocol),
                        port_range(port)
                    );
                    match (outbound, d.address.is_ipv4()) {
                        (true, true) => out4.push(e),
                        (true, false) => out6.push(e),
                        (false, true) => in4.push(e),
                        (false, false) => in6.push(e),
                    }
                }
            }
        }
    }
    for v in [&mut out4, &mut out6, &mut in4, &mut in6] {
        v.sort();
        v.dedup();
    }
    dns.sort();
    dns.dedup();
    let ifaces: Vec<String> = b
        .spec
        .segments
        .iter()
        .map(|s| esc_iface(&s.interface))
        .collect::<Result<_, _>>()?;
    let mut s = String::new();
    let w = &mut s;
    // Create-then-delete makes the replacement one transaction whether or not
    // the table exists yet.
    let _ = writeln!(
        w,
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    let _ = writeln!(
        w,
        "  comment \"palisade site {} bundle v{}\"",
        b.site.replace('"', ""),
        b.version
    );
    let set = |w: &mut String, name: &str, ty: &str, flags: &str, elems: &[String]| {
        let _ = writeln!(
            w,
            "  set {name} {{\n    type {ty}\n    flags {flags}\n    counter"
        );
        if !elems.is_empty() {
            let _ = writeln!(w, "    elements = {{ {} }}", elems.join(",\n      "));
        }
        let _ = writeln!(w, "  }}");
    };
    let key4 = "ipv4_addr . ipv4_addr . inet_proto . inet_service";
    let key6 = "ipv6_addr . ipv6_addr . inet_proto . inet_service";
    set(w, "allow_out4", key4, "interval", &out4);
    set(w, "allow_out6", key6, "interval", &out6);
    set(w, "allow_in4", key4, "interval", &in4);
    set(w, "allow_in6", key6, "interval", &in6);
    set(w, "dns_out4", key4, "interval, timeout", &[]);
    set(w, "dns_out6", key6, "interval, timeout", &[]);
    let q4: Vec<String> = quarantined
        .iter()
        .filter(|a| a.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let q6: Vec<String> = quarantined
        .iter()
        .filter(|a| a.is_ipv6())
        .map(ToString::to_string)
        .collect();
    set(w, "quarantined4", "ipv4_addr", "interval", &q4);
    set(w, "quarantined6", "ipv6_addr", "interval", &q6);
    let (r4, r6): (Vec<IpAddr>, Vec<IpAddr>) = restricted.into_iter().partition(|a| a.is_ipv4());
    let text = |v: Vec<IpAddr>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    set(w, "restricted4", "ipv4_addr", "interval", &text(r4));
    set(w, "restricted6", "ipv6_addr", "interval", &text(r6));
    if b.blocked.len() > MAX_DEVICES {
        return Err(PolicyError::Range(format!(
            "more than {MAX_DEVICES} blocked addresses in a bundle"
        )));
    }
    let mut blocked4: Vec<String> = vec![];
    let mut blocked6: Vec<String> = vec![];
    for a in &b.blocked {
        if !b.spec.segments.iter().any(|s| s.subnet.contains(*a)) {
            return Err(PolicyError::Range(format!(
                "blocked address {a} is on none of the site's segments"
            )));
        }
        if b.devices.iter().any(|d| d.address == *a) {
            return Err(PolicyError::Range(format!(
                "blocked address {a} is a placed device's"
            )));
        }
        match a {
            IpAddr::V4(_) => blocked4.push(a.to_string()),
            IpAddr::V6(_) => blocked6.push(a.to_string()),
        }
    }
    for v in [&mut blocked4, &mut blocked6] {
        v.sort();
        v.dedup();
    }
    set(w, "blocked4", "ipv4_addr", "interval", &blocked4);
    set(w, "blocked6", "ipv6_addr", "interval", &blocked6);
    let cp4: Vec<String> = b
        .spec
        .control_plane
        .iter()
        .filter(|(a, _)| a.is_ipv4())
        .map(|(a, p)| format!("{a} . tcp . {p}"))
        .collect();
    let cp6: Vec<String> = b
        .spec
        .control_plane
        .iter()
        .filter(|(a, _)| a.is_ipv6())
        .map(|(a, p)| format!("{a} . tcp . {p}"))
        .collect();
    set(
        w,
        "control4",
        "ipv4_addr . inet_proto . inet_service",
        "interval",
        &cp4,
    );
    set(
        w,
        "control6",
        "ipv6_addr . inet_proto . inet_service",
        "interval",
        &cp6,
    );
    for c in [
        "allowed_out",
        "denied_out",
        "allowed_in",
        "denied_in",
        "quarantine_drops",
        "support_end_drops",
        "dns_other_drops",
        "unmanaged_drops",
    ] {
        let _ = writeln!(w, "  counter {c} {{ }}");
    }
    let (ip, resolver) = match b.spec.resolver {
        IpAddr::V4(r) => ("ip", r.to_string()),
        IpAddr::V6(r) => ("ip6", r.to_string()),
    };
    if ifaces.is_empty() {
        let _ = writeln!(w, "}}");
        return Ok(Ruleset { script: s, dns });
    }
    let ifs = ifaces.join(", ");
    let proxy: String = [b.spec.egress_proxy_port, b.spec.legacy_mqtt_port]
        .iter()
        .flatten()
        .map(|p| format!("    tcp dport {p} accept\n"))
        .collect();
    let _ = write!(
        w,
        r#"  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname {{ {ifs} }} jump from_device
    oifname {{ {ifs} }} jump to_device
  }}
  chain from_device {{
    ip saddr @blocked4 counter name unmanaged_drops drop
    ip6 saddr @blocked6 counter name unmanaged_drops drop
    ip daddr . meta l4proto . th dport @control4 accept
    ip6 daddr . meta l4proto . th dport @control6 accept
    ip saddr @quarantined4 counter name quarantine_drops drop
    ip6 saddr @quarantined6 counter name quarantine_drops drop
    ip saddr @restricted4 counter name support_end_drops drop
    ip6 saddr @restricted6 counter name support_end_drops drop
    ct state established,related accept
    {ip} daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept
    meta l4proto {{ tcp, udp }} th dport 53 counter name dns_other_drops drop
    ip saddr . ip daddr . meta l4proto . th dport @allow_out4 counter name allowed_out accept
    ip6 saddr . ip6 daddr . meta l4proto . th dport @allow_out6 counter name allowed_out accept
    ip saddr . ip daddr . meta l4proto . th dport @dns_out4 counter name allowed_out accept
    ip6 saddr . ip6 daddr . meta l4proto . th dport @dns_out6 counter name allowed_out accept
    counter name denied_out drop
  }}
  chain to_device {{
    ip daddr @blocked4 counter name unmanaged_drops drop
    ip6 daddr @blocked6 counter name unmanaged_drops drop
    ip saddr . meta l4proto . th sport @control4 accept
    ip6 saddr . meta l4proto . th sport @control6 accept
    ip daddr @quarantined4 counter name quarantine_drops drop
    ip6 daddr @quarantined6 counter name quarantine_drops drop
    ip daddr @restricted4 counter name support_end_drops drop
    ip6 daddr @restricted6 counter name support_end_drops drop
    ct state established,related accept
    ip daddr . ip saddr . meta l4proto . th dport @allow_in4 counter name allowed_in accept
    ip6 daddr . ip6 saddr . meta l4proto . th dport @allow_in6 counter name allowed_in accept
    counter name denied_in drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname {{ {ifs} }} jump device_to_edge
  }}
  chain device_to_edge {{
    ip saddr @blocked4 counter name unmanaged_drops drop
    ip6 saddr @blocked6 counter name unmanaged_drops drop
    ip saddr @quarantined4 counter name quarantine_drops drop
    ip6 saddr @quarantined6 counter name quarantine_drops drop
    ct state established,related accept
    {ip} daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept
    udp dport 67 accept
    ip saddr @restricted4 counter name support_end_drops drop
    ip6 saddr @restricted6 counter name support_end_drops drop
{proxy}    meta l4proto {{ icmp, ipv6-icmp }} accept
    counter name denied_out drop
  }}
}}
"#
    );
    Ok(Ruleset { script: s, dns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Peer, Ports, Rule};

    fn bundle(restricted: bool) -> SiteBundle {
        let seg = Segment {
            name: "devices".into(),
            interface: "br0".into(),
            vlan: None,
            subnet: "10.10.1.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
            quarantine: false,
        };
        let rule = Rule {
            peer: Peer::Prefix("198.51.100.0/24".parse().unwrap_or_else(|e| panic!("{e}"))),
            protocol: Some(6),
            peer_ports: Some(Ports::one(8080)),
            device_ports: None,
            initiated: None,
        };
        SiteBundle {
            site: "lab".into(),
            version: 1,
            issued_ms: 0,
            spec: SiteSpec::new(
                "10.10.1.1".parse().unwrap_or_else(|e| panic!("{e}")),
                vec![("192.0.2.5".parse().unwrap_or_else(|e| panic!("{e}")), 8443)],
                vec![seg],
            ),
            devices: vec![SiteDevice {
                device: "cam-1".into(),
                address: "10.10.1.10".parse().unwrap_or_else(|e| panic!("{e}")),
                segment: "devices".into(),
                manufacturer: None,
                quarantined: false,
                restricted,
                policy: Policy {
                    from_device: vec![rule],
                    to_device: vec![],
                },
            }],
            blocked: vec![],
        }
    }

    #[test]
    fn a_restricted_device_keeps_only_the_control_plane_and_loses_its_allowlist() {
        let open = render(&bundle(false))
            .unwrap_or_else(|e| panic!("{e}"))
            .script;
        assert!(
            open.contains("10.10.1.10 . 198.51.100.0/24 . 6 . 8080"),
            "{open}"
        );
        assert!(open.contains("set restricted4 {"), "{open}");
        let shut = render(&bundle(true))
            .unwrap_or_else(|e| panic!("{e}"))
            .script;
        assert!(!shut.contains("198.51.100.0/24"), "{shut}");
        let set = shut
            .split("set restricted4 {")
            .nth(1)
            .and_then(|s| s.split('}').next())
            .unwrap_or_default();
        assert!(set.contains("10.10.1.10"), "{shut}");
        // The control plane is accepted before the restriction drops.
        let from = shut.split("chain from_device {").nth(1).unwrap_or_default();
        let control = from.find("@control4 accept").unwrap_or(usize::MAX);
        let drop = from
            .find("@restricted4 counter name support_end_drops drop")
            .unwrap_or(0);
        assert!(control < drop, "{from}");
    }
}
