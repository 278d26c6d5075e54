//! Whether a flow a device sent is one its site's policy allows: the same
//! decision the edge's ruleset makes (`palisade_policy::site::render`), taken
//! again on what the exporters saw. The edge drops what it refuses, but the
//! exporter on the device segment sees the attempt: that is the evidence.

use std::net::IpAddr;

use palisade_policy::site::{SiteBundle, SiteDevice};
use palisade_policy::{DnsName, Peer, Rule};

/// The policy's word on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A rule, the control plane or the site's own services allow it.
    Allowed,
    /// Nothing allows it.
    Violation,
    /// It depends on DNS answers the caller does not know.
    Unknown,
}

/// The verdict on a flow from `dev` to `peer`:`port` (`protocol`) that left the
/// device from `device_port`. `resolved(name, addr)` says whether `name`
/// currently resolves to `addr` (the edge's DNS view), or `None` when unknown.
pub fn outbound(
    b: &SiteBundle,
    dev: &SiteDevice,
    peer: IpAddr,
    protocol: u8,
    port: u16,
    device_port: u16,
    resolved: &dyn Fn(&DnsName, IpAddr) -> Option<bool>,
) -> Verdict {
    let spec = &b.spec;
    if protocol == 6
        && spec
            .control_plane
            .iter()
            .any(|(a, p)| *a == peer && *p == port)
    {
        return Verdict::Allowed;
    }
    if dev.quarantined {
        return Verdict::Violation;
    }
    if matches!(protocol, 6 | 17) && port == 53 && peer == spec.resolver {
        return Verdict::Allowed;
    }
    // The edge itself on the device's segment: DHCP, proxy, bridge, ICMP.
    let segment = spec.segments.iter().find(|s| s.name == dev.segment);
    if let Some(s) = segment
        && s.subnet.contains(peer)
    {
        let local = (protocol == 17 && port == 67)
            || matches!(protocol, 1 | 58)
            || (protocol == 6
                && [spec.egress_proxy_port, spec.legacy_mqtt_port].contains(&Some(port)));
        if local {
            return Verdict::Allowed;
        }
    }
    let mut unknown = false;
    let matches = |r: &Rule, p: u16, unknown: &mut bool| -> bool {
        if r.protocol.is_some_and(|x| x != protocol) {
            return false;
        }
        if r.peer_ports.is_some_and(|ps| !(ps.lo..=ps.hi).contains(&p)) {
            return false;
        }
        match peer_matches(b, dev, &r.peer, peer, resolved) {
            Some(m) => m,
            None => {
                *unknown = true;
                false
            }
        }
    };
    if dev
        .policy
        .from_device
        .iter()
        .any(|r| matches(r, port, &mut unknown))
    {
        return Verdict::Allowed;
    }
    // A reply from a service the device offers to an allowed peer: the reverse
    // direction (peer → device_port) is what the policy allows.
    let reply = dev.policy.to_device.iter().any(|r| {
        r.protocol.is_none_or(|x| x == protocol)
            && r.device_ports
                .is_none_or(|ps| (ps.lo..=ps.hi).contains(&device_port))
            && r.peer_ports
                .is_none_or(|ps| (ps.lo..=ps.hi).contains(&port))
            && peer_matches(b, dev, &r.peer, peer, resolved).unwrap_or(false)
    });
    if reply {
        return Verdict::Allowed;
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Violation
    }
}

fn peer_matches(
    b: &SiteBundle,
    dev: &SiteDevice,
    rule: &Peer,
    peer: IpAddr,
    resolved: &dyn Fn(&DnsName, IpAddr) -> Option<bool>,
) -> Option<bool> {
    let spec = &b.spec;
    Some(match rule {
        Peer::Any => true,
        Peer::Prefix(p) => p.contains(peer),
        Peer::Dns(n) => return resolved(n, peer),
        Peer::Controller(uri) => spec
            .controllers
            .get(uri)
            .is_some_and(|ps| ps.iter().any(|p| p.contains(peer))),
        Peer::MyController => spec.my_controller.iter().any(|p| p.contains(peer)),
        Peer::LocalNetwork => spec
            .segments
            .iter()
            .any(|s| s.name == dev.segment && s.subnet.contains(peer)),
        Peer::SameManufacturer => b.devices.iter().any(|d| {
            d.address == peer && d.manufacturer.is_some() && d.manufacturer == dev.manufacturer
        }),
        Peer::Manufacturer(m) => b
            .devices
            .iter()
            .any(|d| d.address == peer && d.manufacturer.as_deref() == Some(m)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::site::{Segment, SiteSpec};
    use palisade_policy::{Policy, Ports};

    fn bundle() -> SiteBundle {
        let rule = |peer: Peer, port: u16| Rule {
            peer,
            protocol: Some(6),
            peer_ports: Some(Ports::one(port)),
            device_ports: None,
            initiated: None,
        };
        fn ok<T: std::str::FromStr>(s: &str) -> T {
            s.parse().unwrap_or_else(|_| unreachable!())
        }
        SiteBundle {
            site: "s".into(),
            version: 1,
            issued_ms: 0,
            spec: SiteSpec::new(
                ok("10.0.1.1"),
                vec![(ok("198.51.100.2"), 8883)],
                vec![Segment {
                    name: "cams".into(),
                    interface: "eth1".into(),
                    vlan: None,
                    subnet: ok("10.0.1.0/24"),
                    quarantine: false,
                }],
            ),
            devices: vec![SiteDevice {
                device: "cam-1".into(),
                address: ok("10.0.1.10"),
                segment: "cams".into(),
                manufacturer: None,
                quarantined: false,
                policy: Policy {
                    from_device: vec![
                        rule(Peer::Prefix(ok("203.0.113.0/24")), 443),
                        rule(
                            Peer::Dns(
                                DnsName::parse("ota.example.com")
                                    .unwrap_or_else(|_| unreachable!()),
                            ),
                            443,
                        ),
                    ],
                    to_device: vec![Rule {
                        device_ports: Some(Ports::one(554)),
                        peer_ports: None,
                        ..rule(Peer::LocalNetwork, 0)
                    }],
                },
            }],
        }
    }

    #[test]
    fn the_verdict_follows_the_ruleset() {
        let b = bundle();
        let d = &b.devices[0];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| unreachable!());
        let never = |_: &DnsName, _: IpAddr| Some(false);
        let dunno = |_: &DnsName, _: IpAddr| None;
        let v = |peer: &str, proto, port, sport, r: &dyn Fn(&DnsName, IpAddr) -> Option<bool>| {
            outbound(&b, d, ip(peer), proto, port, sport, r)
        };
        assert_eq!(v("203.0.113.9", 6, 443, 40_000, &never), Verdict::Allowed);
        assert_eq!(v("203.0.113.9", 6, 80, 40_000, &never), Verdict::Violation);
        assert_eq!(v("198.51.100.2", 6, 8883, 40_000, &never), Verdict::Allowed);
        assert_eq!(v("10.0.1.1", 17, 53, 40_000, &never), Verdict::Allowed);
        assert_eq!(v("8.8.8.8", 17, 53, 40_000, &never), Verdict::Violation);
        assert_eq!(v("192.0.2.7", 6, 443, 40_000, &never), Verdict::Violation);
        assert_eq!(v("192.0.2.7", 6, 443, 40_000, &dunno), Verdict::Unknown);
        // The RTSP server answering a neighbour on its segment.
        assert_eq!(v("10.0.1.20", 6, 51_000, 554, &never), Verdict::Allowed);
        assert_eq!(v("10.0.1.20", 6, 51_000, 555, &never), Verdict::Violation);
    }
}
