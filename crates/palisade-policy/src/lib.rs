//! Palisade's network policy (pure): what a device may reach and what may reach
//! it. A model's MUD file (RFC 8520, with RFC 8519 access lists and the RFC
//! 8520 DNS-name matches) is parsed into this crate's [`Policy`]; the MUD
//! abstractions (controller, my-controller, local-network, same-manufacturer,
//! manufacturer) stay symbolic until a site resolves them. Policies are
//! allowlists: what no rule allows is denied.

pub mod hosts;
pub mod mud;
pub mod signed;
pub mod site;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a MUD file we can use; what is wrong and where.
    #[error("MUD: {0}")]
    Mud(String),
    /// A value out of its range (ports, prefixes, protocols).
    #[error("{0}")]
    Range(String),
    /// The policy would let the device reach anything.
    #[error(
        "the policy allows any address on any port ({0}); refused unless the operator overrides it explicitly"
    )]
    OpensEverything(String),
}

/// An IP prefix (`192.0.2.0/24`, `2001:db8::/32`), host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// Whether this prefix covers every address of its family.
    pub fn is_everything(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::Range(format!("{s:?} is not an IP prefix (address/length)"));
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PolicyError::Range(format!(
                "prefix {s:?}: length {len} is longer than {max}"
            )));
        }
        let addr = match addr {
            IpAddr::V4(v) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(v) & mask).into())
            }
            IpAddr::V6(v) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(v) & mask).into())
            }
        };
        Ok(Self { addr, len })
    }
}

impl TryFrom<String> for Prefix {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A DNS name, lower case, checked as a host name (letters, digits, hyphens,
/// dots; labels of 1–63, at most 253 in all).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// Parses a host name.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let n = s.trim_end_matches('.').to_ascii_lowercase();
        let ok = !n.is_empty()
            && n.len() <= 253
            && n.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            Ok(Self(n))
        } else {
            Err(PolicyError::Range(format!("{s:?} is not a DNS host name")))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DnsName {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        Self::parse(&s)
    }
}

impl From<DnsName> for String {
    fn from(n: DnsName) -> String {
        n.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ports {
    /// Lowest.
    pub lo: u16,
    /// Highest.
    pub hi: u16,
}

impl Ports {
    /// One port.
    pub fn one(p: u16) -> Self {
        Self { lo: p, hi: p }
    }

    /// Every port.
    pub fn is_all(&self) -> bool {
        self.lo == 0 && self.hi == u16::MAX
    }
}

/// Who is on the other end of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Peer {
    /// Addresses a DNS name resolves to (through the site's resolver).
    Dns(DnsName),
    /// An address prefix.
    Prefix(Prefix),
    /// A class of controllers named by URI (the site maps it to addresses).
    Controller(String),
    /// This device's own controller (the site says which).
    MyController,
    /// The device's own segment.
    LocalNetwork,
    /// Devices of the same manufacturer at the site.
    SameManufacturer,
    /// Devices of the named manufacturer at the site.
    Manufacturer(String),
    /// Anything.
    Any,
}

impl Peer {
    /// Whether the peer is named (a DNS name, a controller, a manufacturer's
    /// devices) rather than a range of addresses.
    pub fn is_named(&self) -> bool {
        matches!(
            self,
            Peer::Dns(_)
                | Peer::Controller(_)
                | Peer::MyController
                | Peer::SameManufacturer
                | Peer::Manufacturer(_)
        )
    }

    fn is_everything(&self) -> bool {
        match self {
            Peer::Any => true,
            Peer::Prefix(p) => p.is_everything(),
            _ => false,
        }
    }
}

/// Who opens the connection a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initiated {
    /// The device connects out.
    FromDevice,
    /// The peer connects to the device.
    ToDevice,
}

/// One allowed flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    /// The other end.
    pub peer: Peer,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6); `None`: any.
    pub protocol: Option<u8>,
    /// The peer's ports (TCP/UDP); `None`: any.
    pub peer_ports: Option<Ports>,
    /// The device's ports; `None`: any.
    pub device_ports: Option<Ports>,
    /// Who may open the connection (TCP); `None`: either.
    pub initiated: Option<Initiated>,
}

impl Rule {
    fn opens_everything(&self) -> bool {
        self.peer.is_everything() && self.peer_ports.is_none_or(|p| p.is_all())
    }
}

/// What a device may do on the network: allowlists in both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Flows the device may send.
    #[serde(default)]
    pub from_device: Vec<Rule>,
    /// Flows that may reach the device.
    #[serde(default)]
    pub to_device: Vec<Rule>,
}

impl Policy {
    /// The quarantine policy: nothing (the control plane is always reachable
    /// through the site, outside any device policy).
    pub fn quarantine() -> Self {
        Self::default()
    }

    /// Refuses a policy that would let the device reach (or be reached from)
    /// any address on any port, unless `override_open` says the operator
    /// wants exactly that.
    pub fn check_open(&self, override_open: bool) -> Result<(), PolicyError> {
        if override_open {
            return Ok(());
        }
        for (dir, rules) in [
            ("from the device", &self.from_device),
            ("to the device", &self.to_device),
        ] {
            if let Some(r) = rules.iter().find(|r| r.opens_everything()) {
                return Err(PolicyError::OpensEverything(format!(
                    "{dir}: {}",
                    serde_json::to_string(r).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// This policy with `extra` rules added (per-device overrides), duplicates removed.
    pub fn with(&self, extra: &Policy) -> Policy {
        let merge = |a: &[Rule], b: &[Rule]| {
            let mut v: Vec<Rule> = a.iter().chain(b).cloned().collect();
            v.sort();
            v.dedup();
            v
        };
        Policy {
            from_device: merge(&self.from_device, &extra.from_device),
            to_device: merge(&self.to_device, &extra.to_device),
        }
    }

    /// Every DNS name the policy mentions.
    pub fn dns_names(&self) -> Vec<DnsName> {
        let mut v: Vec<DnsName> = self
            .from_device
            .iter()
            .chain(&self.to_device)
            .filter_map(|r| match &r.peer {
                Peer::Dns(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised_and_bounded() {
        let p: Prefix = "192.0.2.77/24".parse().unwrap();
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!("192.0.2.0/33".parse::<Prefix>().is_err());
        assert!("2001:db8::1/129".parse::<Prefix>().is_err());
        assert_eq!(
            "2001:db8::1/32".parse::<Prefix>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!("0.0.0.0/0".parse::<Prefix>().unwrap().is_everything());
        assert!("x/1".parse::<Prefix>().is_err());
    }

    #[test]
    fn dns_names_are_host_names() {
        assert_eq!(
            DnsName::parse("API.Example.com.").unwrap().as_str(),
            "api.example.com"
        );
        for bad in ["", "a..b", "-a.b", "a_b.c", "*.example.com", "a b"] {
            assert!(DnsName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_policy_that_opens_everything_needs_an_override() {
        let open = Policy {
            from_device: vec![Rule {
                peer: Peer::Any,
                protocol: Some(6),
                peer_ports: None,
                device_ports: None,
                initiated: None,
            }],
            to_device: vec![],
        };
        assert!(matches!(
            open.check_open(false),
            Err(PolicyError::OpensEverything(_))
        ));
        open.check_open(true).unwrap();
        let narrow = Policy {
            from_device: vec![Rule {
                peer: Peer::Any,
                protocol: Some(6),
                peer_ports: Some(Ports::one(443)),
                device_ports: None,
                initiated: None,
            }],
            to_device: vec![],
        };
        narrow.check_open(false).unwrap();
        Policy::quarantine().check_open(false).unwrap();
    }
}
