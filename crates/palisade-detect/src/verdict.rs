//! Whether a flow a device sent is one its site's policy allows: the same
//! decision the edge's ruleset makes (`palisade_policy::site::render`), taken
//! again on what the exporters saw. The edge drops what it refuses, but the
//! exporter on the device segment sees the attempt: that is the evidence.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_policy::site::{SiteBundle, SiteDevice};
use palisade_policy::{DnsName, Peer, Rule};

/// The policy's word on a flow. The detectors treat the kinds of "allowed"
/// differently: traffic with the control plane (Palisade itself: telemetry,
/// firmware downloads) never counts towards volume, and a peer the policy
/// names (a DNS name, a controller, the site's own services) is expected to
/// be contacted regularly, so only peers allowed as a range can be beacons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The control plane: the device's own mutually authenticated sessions.
    ControlPlane,
    /// A rule that names the peer (DNS name, controller, manufacturer), or
    /// the site's own services (resolver, DHCP, proxy, bridge, ICMP).
    Named,
    /// A rule that allows a range of peers (an address prefix, the local
    /// network, any).
    Allowed,
    /// Nothing allows it.
    Violation,
    /// It depends on DNS answers the caller does not know.
    Unknown,
}

impl Verdict {
    /// Whether the policy allows the flow (in any way).
    pub fn allowed(self) -> bool {
        matches!(self, Self::ControlPlane | Self::Named | Self::Allowed)
    }
}

/// What a site's edges reported its DNS names to resolve to, remembered for
/// [`DnsView::GRACE_MS`] after the last report: a connection opened to an
/// address goes on after the name has moved elsewhere (the edge admits it as
/// established), and its later records are no violation.
#[derive(Debug, Default, Clone)]
pub struct DnsView {
    names: HashMap<String, HashMap<IpAddr, i64>>,
}

impl DnsView {
    /// How long an answer is remembered after it was last reported, ms.
    pub const GRACE_MS: i64 = 3_600_000;
    /// Most names, and most addresses per name, remembered.
    pub const MAX_NAMES: usize = 4_096;
    /// Most addresses remembered per name.
    pub const MAX_ADDRESSES: usize = 256;

    /// `name` resolved to `addr` at `now_ms`.
    pub fn saw(&mut self, name: &str, addr: IpAddr, now_ms: i64) {
        if !self.names.contains_key(name) && self.names.len() >= Self::MAX_NAMES {
            return;
        }
        let addrs = self.names.entry(name.to_owned()).or_default();
        if !addrs.contains_key(&addr) && addrs.len() >= Self::MAX_ADDRESSES {
            // The stalest answer makes room.
            if let Some(old) = addrs.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                addrs.remove(&old);
            }
        }
        addrs.insert(addr, now_ms);
    }

    /// Forgets answers not reported for [`Self::GRACE_MS`].
    pub fn prune(&mut self, now_ms: i64) {
        for addrs in self.names.values_mut() {
            addrs.retain(|_, t| *t > now_ms - Self::GRACE_MS);
        }
        self.names.retain(|_, a| !a.is_empty());
    }

    /// Whether `name` resolved to `addr` lately.
    pub fn resolves(&self, name: &str, addr: IpAddr) -> bool {
        self.names.get(name).is_some_and(|a| a.contains_key(&addr))
    }
}

/// The verdict on a flow a device received from `peer`:`peer_port`: the
/// control plane's, or allowed (what reaches the device passed the edge).
pub fn inbound(b: &SiteBundle, peer: IpAddr, protocol: u8, peer_port: u16) -> Verdict {
    if is_control_plane(b, peer, protocol, peer_port) {
        Verdict::ControlPlane
    } else {
        Verdict::Allowed
    }
}

fn is_control_plane(b: &SiteBundle, peer: IpAddr, protocol: u8, port: u16) -> bool {
    protocol == 6
        && b.spec
            .control_plane
            .iter()
            .any(|(a, p)| *a == peer && *p == port)
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
    if is_control_plane(b, peer, protocol, port) {
        return Verdict::ControlPlane;
    }
    if dev.quarantined {
        return Verdict::Violation;
    }
    if matches!(protocol, 6 | 17) && port == 53 && peer == spec.resolver {
        return Verdict::Named;
    }
    // The edge itself on the device's segment: DHCP, proxy, bridge, ICMP.
    let segment = spec.segments.iter().find(|s| s.name == dev.segment);
    if let Some(s) = segment
        && s.subnet.contains(peer)
    {
        let dhcp_or_icmp = (protocol == 17 && port == 67) || matches!(protocol, 1 | 58);
        let relayed =
            protocol == 6 && [spec.egress_proxy_port, spec.legacy_mqtt_port].contains(&Some(port));
        // Past its support end a device keeps DHCP and ICMP to its edge, not
        // the relays out.
        if dhcp_or_icmp || (relayed && !dev.restricted) {
            return Verdict::Named;
        }
    }
    // Past its support end: the control plane, names and its edge only.
    if dev.restricted {
        return Verdict::Violation;
    }
    let mut unknown = false;
    // The strongest word wins: a rule naming the peer over a range.
    let mut best: Option<Verdict> = None;
    let mut take = |r: &Rule| {
        let v = if r.peer.is_named() {
            Verdict::Named
        } else {
            Verdict::Allowed
        };
        if best != Some(Verdict::Named) {
            best = Some(v);
        }
    };
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
    for r in &dev.policy.from_device {
        if matches(r, port, &mut unknown) {
            take(r);
        }
    }
    // A reply from a service the device offers to an allowed peer: the reverse
    // direction (peer → device_port) is what the policy allows.
    for r in &dev.policy.to_device {
        let reply = r.protocol.is_none_or(|x| x == protocol)
            && r.device_ports
                .is_none_or(|ps| (ps.lo..=ps.hi).contains(&device_port))
            && r.peer_ports
                .is_none_or(|ps| (ps.lo..=ps.hi).contains(&port))
            && peer_matches(b, dev, &r.peer, peer, resolved).unwrap_or(false);
        if reply {
            take(r);
        }
    }
    if let Some(v) = best {
        return v;
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
            blocked: vec![],
            devices: vec![SiteDevice {
                device: "cam-1".into(),
                address: ok("10.0.1.10"),
                segment: "cams".into(),
                manufacturer: None,
                quarantined: false,
                restricted: false,
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
    fn dns_answers_are_remembered_for_a_while() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|_| unreachable!());
        let mut v = DnsView::default();
        v.saw("api.example", ip("192.0.2.1"), 0);
        v.saw("api.example", ip("192.0.2.2"), DnsView::GRACE_MS / 2);
        assert!(v.resolves("api.example", ip("192.0.2.1")));
        assert!(!v.resolves("api.example", ip("192.0.2.3")));
        assert!(!v.resolves("other.example", ip("192.0.2.1")));
        v.prune(DnsView::GRACE_MS + 1);
        assert!(!v.resolves("api.example", ip("192.0.2.1")));
        assert!(v.resolves("api.example", ip("192.0.2.2")));
        for i in 0..(DnsView::MAX_ADDRESSES as u32 + 10) {
            v.saw(
                "api.example",
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i)),
                DnsView::GRACE_MS + i64::from(i) + 2,
            );
        }
        assert!(v.names["api.example"].len() <= DnsView::MAX_ADDRESSES);
        assert!(
            !v.resolves("api.example", ip("192.0.2.2")),
            "the stalest made room"
        );
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
        let yes = |_: &DnsName, _: IpAddr| Some(true);
        assert_eq!(v("203.0.113.9", 6, 443, 40_000, &never), Verdict::Allowed);
        assert_eq!(v("203.0.113.9", 6, 443, 40_000, &yes), Verdict::Named);
        assert_eq!(v("192.0.2.7", 6, 443, 40_000, &yes), Verdict::Named);
        assert_eq!(v("203.0.113.9", 6, 80, 40_000, &never), Verdict::Violation);
        assert_eq!(
            v("198.51.100.2", 6, 8883, 40_000, &never),
            Verdict::ControlPlane
        );
        assert_eq!(
            inbound(&b, ip("198.51.100.2"), 6, 8883),
            Verdict::ControlPlane
        );
        assert_eq!(inbound(&b, ip("198.51.100.2"), 6, 8884), Verdict::Allowed);
        assert_eq!(v("10.0.1.1", 17, 53, 40_000, &never), Verdict::Named);
        assert_eq!(v("8.8.8.8", 17, 53, 40_000, &never), Verdict::Violation);
        assert_eq!(v("192.0.2.7", 6, 443, 40_000, &never), Verdict::Violation);
        assert_eq!(v("192.0.2.7", 6, 443, 40_000, &dunno), Verdict::Unknown);
        // The RTSP server answering a neighbour on its segment.
        assert_eq!(v("10.0.1.20", 6, 51_000, 554, &never), Verdict::Allowed);
        assert_eq!(v("10.0.1.20", 6, 51_000, 555, &never), Verdict::Violation);
    }
}
