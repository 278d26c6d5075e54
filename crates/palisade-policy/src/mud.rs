//! MUD files (RFC 8520): the `ietf-mud:mud` container naming the from-device
//! and to-device access lists, and the `ietf-access-control-list:acls` (RFC
//! 8519) holding them, with the DNS-name matches (`ietf-acldns`) and the MUD
//! match abstractions. Only `accept` entries become rules (a policy is an
//! allowlist); `drop`/`reject` entries restate the default and are skipped.
//! Anything we cannot enforce exactly (Ethernet matches, `neq` ports, unknown
//! match kinds) is refused with where it is, rather than silently widened.

use serde_json::{Map, Value};

use crate::{DnsName, Initiated, Peer, Policy, PolicyError, Ports, Prefix, Rule};

/// Largest MUD file accepted.
pub const MAX_MUD_BYTES: usize = 256 * 1024;
/// Most access-control entries in one file.
pub const MAX_ACES: usize = 2_000;

/// A parsed MUD file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MudFile {
    /// `mud-url`.
    pub url: String,
    /// `mfg-name`, if given.
    pub manufacturer: Option<String>,
    /// `systeminfo`, if given.
    pub systeminfo: Option<String>,
    /// The policy it describes.
    pub policy: Policy,
}

fn err(at: &str, what: impl std::fmt::Display) -> PolicyError {
    PolicyError::Mud(format!("{at}: {what}"))
}

fn obj<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, PolicyError> {
    v.as_object().ok_or_else(|| err(at, "must be an object"))
}

fn text<'a>(v: &'a Value, at: &str) -> Result<&'a str, PolicyError> {
    v.as_str().ok_or_else(|| err(at, "must be a string"))
}

fn number(v: &Value, at: &str, max: u64) -> Result<u64, PolicyError> {
    // YANG JSON encodes 8/16-bit integers as numbers; accept numeric strings too.
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| err(at, "must be a non-negative integer"))?;
    if n > max {
        return Err(PolicyError::Range(format!("{at}: {n} is above {max}")));
    }
    Ok(n)
}

/// RFC 8519 `port-range-or-operator`.
fn ports(v: &Value, at: &str) -> Result<Ports, PolicyError> {
    let o = obj(v, at)?;
    let port = |k: &str| -> Result<u16, PolicyError> {
        let n = number(
            o.get(k).ok_or_else(|| err(at, format!("{k} missing")))?,
            &format!("{at}.{k}"),
            65_535,
        )?;
        Ok(u16::try_from(n).unwrap_or(u16::MAX))
    };
    if o.contains_key("lower-port") || o.contains_key("upper-port") {
        let (lo, hi) = (port("lower-port")?, port("upper-port")?);
        if lo > hi {
            return Err(PolicyError::Range(format!(
                "{at}: lower-port {lo} is above upper-port {hi}"
            )));
        }
        return Ok(Ports { lo, hi });
    }
    let p = port("port")?;
    let op = match o.get("operator") {
        Some(v) => text(v, &format!("{at}.operator"))?,
        None => "eq",
    };
    match op {
        "eq" => Ok(Ports::one(p)),
        "lte" => Ok(Ports { lo: 0, hi: p }),
        "gte" => Ok(Ports {
            lo: p,
            hi: u16::MAX,
        }),
        "lt" if p > 0 => Ok(Ports { lo: 0, hi: p - 1 }),
        "gt" if p < u16::MAX => Ok(Ports {
            lo: p + 1,
            hi: u16::MAX,
        }),
        "lt" | "gt" => Err(PolicyError::Range(format!(
            "{at}: {op} {p} matches no port"
        ))),
        other => Err(err(
            at,
            format!(
                "port operator {other:?} cannot be enforced (use eq, lt, gt, lte, gte or a range)"
            ),
        )),
    }
}

struct Ace {
    peer: Option<Peer>,
    protocol: Option<u8>,
    src_ports: Option<Ports>,
    dst_ports: Option<Ports>,
    initiated: Option<Initiated>,
}

fn set_peer(slot: &mut Option<Peer>, p: Peer, at: &str) -> Result<(), PolicyError> {
    if slot.as_ref().is_some_and(|q| *q != p) {
        return Err(err(at, "names two different peers in one entry"));
    }
    *slot = Some(p);
    Ok(())
}

/// Parses one ACE's `matches` for an ACL of the given direction.
fn matches(m: &Map<String, Value>, from_device: bool, at: &str) -> Result<Ace, PolicyError> {
    let mut ace = Ace {
        peer: None,
        protocol: None,
        src_ports: None,
        dst_ports: None,
        initiated: None,
    };
    // The peer is the destination of a from-device flow, the source of a to-device one.
    let (peer_dns, peer_net4, peer_net6) = if from_device {
        (
            "ietf-acldns:dst-dnsname",
            "destination-ipv4-network",
            "destination-ipv6-network",
        )
    } else {
        (
            "ietf-acldns:src-dnsname",
            "source-ipv4-network",
            "source-ipv6-network",
        )
    };
    for (k, v) in m {
        let at = format!("{at}.{k}");
        match k.as_str() {
            "ipv4" | "ipv6" => {
                for (f, fv) in obj(v, &at)? {
                    let fat = format!("{at}.{f}");
                    match f.as_str() {
                        "protocol" => {
                            ace.protocol = Some(u8::try_from(number(fv, &fat, 255)?).unwrap_or(0));
                        }
                        n if n == peer_dns => {
                            set_peer(
                                &mut ace.peer,
                                Peer::Dns(DnsName::parse(text(fv, &fat)?)?),
                                &fat,
                            )?;
                        }
                        n if n == peer_net4 || n == peer_net6 => {
                            let p: Prefix = text(fv, &fat)?.parse()?;
                            if p.addr.is_ipv4() != (k == "ipv4") {
                                return Err(err(&fat, "address family does not match"));
                            }
                            set_peer(&mut ace.peer, Peer::Prefix(p), &fat)?;
                        }
                        // The device's own address is the device: nothing to match.
                        "ietf-acldns:src-dnsname"
                        | "ietf-acldns:dst-dnsname"
                        | "source-ipv4-network"
                        | "destination-ipv4-network"
                        | "source-ipv6-network"
                        | "destination-ipv6-network" => {
                            return Err(err(
                                &fat,
                                "names the device's own side, which the site decides",
                            ));
                        }
                        // Header fields that do not change who may talk to whom.
                        "dscp" | "ecn" | "ttl" | "hop-limit" | "length" | "ihl" | "flags"
                        | "offset" | "identification" | "flow-label" => {}
                        other => return Err(err(&fat, format!("unknown IP match {other:?}"))),
                    }
                }
            }
            "tcp" | "udp" => {
                let want = if k == "tcp" { 6 } else { 17 };
                if ace.protocol.is_some_and(|p| p != want) {
                    return Err(err(&at, "conflicts with the IP protocol"));
                }
                ace.protocol = Some(want);
                for (f, fv) in obj(v, &at)? {
                    let fat = format!("{at}.{f}");
                    match f.as_str() {
                        "source-port" => ace.src_ports = Some(ports(fv, &fat)?),
                        "destination-port" => ace.dst_ports = Some(ports(fv, &fat)?),
                        "ietf-mud:direction-initiated" => {
                            if k != "tcp" {
                                return Err(err(&fat, "only TCP has a direction"));
                            }
                            ace.initiated = Some(match text(fv, &fat)? {
                                "from-device" => Initiated::FromDevice,
                                "to-device" => Initiated::ToDevice,
                                o => {
                                    return Err(err(
                                        &fat,
                                        format!("{o:?} is not from-device or to-device"),
                                    ));
                                }
                            });
                        }
                        "flags"
                        | "window-size"
                        | "urgent-pointer"
                        | "options"
                        | "length"
                        | "sequence-number"
                        | "acknowledgement-number"
                        | "data-offset"
                        | "reserved" => {}
                        other => return Err(err(&fat, format!("unknown {k} match {other:?}"))),
                    }
                }
            }
            "icmp" => {
                if ace.protocol.is_none() {
                    ace.protocol = Some(1);
                }
            }
            "ietf-mud:mud" => {
                for (f, fv) in obj(v, &at)? {
                    let fat = format!("{at}.{f}");
                    let p = match f.as_str() {
                        "controller" => Peer::Controller(text(fv, &fat)?.to_string()),
                        "my-controller" => Peer::MyController,
                        "local-networks" => Peer::LocalNetwork,
                        "same-manufacturer" => Peer::SameManufacturer,
                        "manufacturer" => Peer::Manufacturer(text(fv, &fat)?.to_string()),
                        "model" => return Err(err(&fat, "model matches are not supported")),
                        other => return Err(err(&fat, format!("unknown MUD match {other:?}"))),
                    };
                    set_peer(&mut ace.peer, p, &fat)?;
                }
            }
            "eth" => {
                return Err(err(
                    &at,
                    "Ethernet matches cannot be enforced at the IP gateway",
                ));
            }
            other => return Err(err(&at, format!("unknown match {other:?}"))),
        }
    }
    Ok(ace)
}

/// Parses and validates a MUD file.
pub fn parse(bytes: &[u8]) -> Result<MudFile, PolicyError> {
    if bytes.len() > MAX_MUD_BYTES {
        return Err(err("file", format!("larger than {MAX_MUD_BYTES} bytes")));
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| err("file", format!("not JSON: {e}")))?;
    let root = obj(&doc, "file")?;
    let mud = root
        .get("ietf-mud:mud")
        .ok_or_else(|| err("file", "no ietf-mud:mud container"))?;
    let mud = obj(mud, "ietf-mud:mud")?;
    match mud
        .get("mud-version")
        .map(|v| number(v, "mud-version", 255))
    {
        Some(Ok(1)) => {}
        Some(Ok(v)) => return Err(err("mud-version", format!("{v} is not 1"))),
        Some(Err(e)) => return Err(e),
        None => return Err(err("ietf-mud:mud", "mud-version missing")),
    }
    let url = text(
        mud.get("mud-url")
            .ok_or_else(|| err("ietf-mud:mud", "mud-url missing"))?,
        "mud-url",
    )?;
    if !url.starts_with("https://") || url.len() > 2048 {
        return Err(err("mud-url", "must be an https URL"));
    }
    let opt_text = |k: &str| -> Result<Option<String>, PolicyError> {
        mud.get(k)
            .map(|v| text(v, k).map(|s| s.chars().take(256).collect()))
            .transpose()
    };
    let acls = root
        .get("ietf-access-control-list:acls")
        .map(|a| obj(a, "ietf-access-control-list:acls"))
        .transpose()?;
    let list: &[Value] = match acls.and_then(|a| a.get("acl")) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("acls.acl", "must be a list")),
        None => &[],
    };
    let mut total = 0usize;
    let mut policy = Policy::default();
    for (dir, key) in [(true, "from-device-policy"), (false, "to-device-policy")] {
        let Some(p) = mud.get(key) else { continue };
        let names = obj(p, key)?
            .get("access-lists")
            .map(|a| obj(a, key))
            .transpose()?
            .and_then(|a| a.get("access-list"))
            .map(|l| {
                l.as_array()
                    .ok_or_else(|| err(key, "access-list must be a list"))
            })
            .transpose()?
            .cloned()
            .unwrap_or_default();
        for n in names {
            let name = text(
                obj(&n, key)?
                    .get("name")
                    .ok_or_else(|| err(key, "an access-list has no name"))?,
                key,
            )?;
            let acl = list
                .iter()
                .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| err(key, format!("access list {name:?} is not defined")))?;
            let at = format!("acl {name}");
            let aces = acl
                .get("aces")
                .and_then(|a| a.get("ace"))
                .map(|a| {
                    a.as_array()
                        .ok_or_else(|| err(&at, "aces.ace must be a list"))
                })
                .transpose()?
                .cloned()
                .unwrap_or_default();
            for ace in &aces {
                total += 1;
                if total > MAX_ACES {
                    return Err(err("acls", format!("more than {MAX_ACES} entries")));
                }
                let ace_name = ace.get("name").and_then(Value::as_str).unwrap_or("?");
                let at = format!("{at} ace {ace_name}");
                let action = ace
                    .get("actions")
                    .and_then(|a| a.get("forwarding"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(&at, "actions.forwarding missing"))?;
                let action = action.rsplit(':').next().unwrap_or(action);
                let m = match ace.get("matches") {
                    Some(m) => obj(m, &at)?.clone(),
                    None => Map::new(),
                };
                let parsed = matches(&m, dir, &at)?;
                match action {
                    "accept" => {}
                    "drop" | "reject" => continue,
                    other => return Err(err(&at, format!("unknown action {other:?}"))),
                }
                let (peer_ports, device_ports) = if dir {
                    (parsed.dst_ports, parsed.src_ports)
                } else {
                    (parsed.src_ports, parsed.dst_ports)
                };
                let rule = Rule {
                    peer: parsed.peer.unwrap_or(Peer::Any),
                    protocol: parsed.protocol,
                    peer_ports,
                    device_ports,
                    initiated: parsed.initiated,
                };
                if dir {
                    policy.from_device.push(rule);
                } else {
                    policy.to_device.push(rule);
                }
            }
        }
    }
    Ok(MudFile {
        url: url.to_string(),
        manufacturer: opt_text("mfg-name")?,
        systeminfo: opt_text("systeminfo")?,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 8520 §9 (trimmed to one ACL each way), plus a
    /// controller abstraction.
    const EXAMPLE: &str = r#"{
      "ietf-mud:mud": {
        "mud-version": 1,
        "mud-url": "https://lighting.example.com/lightbulb2000",
        "last-update": "2019-01-28T11:20:51+01:00",
        "cache-validity": 48,
        "is-supported": true,
        "systeminfo": "The BMS Example Light Bulb",
        "from-device-policy": {"access-lists": {"access-list": [{"name": "mud-76100-v6fr"}]}},
        "to-device-policy": {"access-lists": {"access-list": [{"name": "mud-76100-v6to"}]}}
      },
      "ietf-access-control-list:acls": {
        "acl": [
          {"name": "mud-76100-v6to", "type": "ipv6-acl-type",
           "aces": {"ace": [
             {"name": "cl0-todev",
              "matches": {"ipv6": {"ietf-acldns:src-dnsname": "test.example.com", "protocol": 6},
                          "tcp": {"ietf-mud:direction-initiated": "from-device",
                                  "source-port": {"operator": "eq", "port": 443}}},
              "actions": {"forwarding": "accept"}},
             {"name": "ctl-todev",
              "matches": {"ietf-mud:mud": {"my-controller": [null]}, "udp": {"destination-port": {"lower-port": 5683, "upper-port": 5684}}},
              "actions": {"forwarding": "accept"}}
           ]}},
          {"name": "mud-76100-v6fr", "type": "ipv6-acl-type",
           "aces": {"ace": [
             {"name": "cl0-frdev",
              "matches": {"ipv6": {"ietf-acldns:dst-dnsname": "test.example.com", "protocol": 6},
                          "tcp": {"ietf-mud:direction-initiated": "from-device",
                                  "destination-port": {"operator": "eq", "port": 443}}},
              "actions": {"forwarding": "accept"}},
             {"name": "ntp", "matches": {"ipv4": {"destination-ipv4-network": "192.0.2.123/32"}, "udp": {"destination-port": {"port": 123}}},
              "actions": {"forwarding": "accept"}},
             {"name": "deny-rest", "actions": {"forwarding": "drop"}}
           ]}}
        ]
      }
    }"#;

    #[test]
    fn the_rfc_example_becomes_rules() {
        let m = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.url, "https://lighting.example.com/lightbulb2000");
        let p = &m.policy;
        assert_eq!(p.from_device.len(), 2);
        let https = &p.from_device[0];
        assert_eq!(
            https.peer,
            Peer::Dns(DnsName::parse("test.example.com").unwrap())
        );
        assert_eq!(
            (https.protocol, https.peer_ports),
            (Some(6), Some(Ports::one(443)))
        );
        assert_eq!(https.initiated, Some(Initiated::FromDevice));
        assert_eq!(
            p.from_device[1].peer,
            Peer::Prefix("192.0.2.123/32".parse().unwrap())
        );
        assert_eq!(p.to_device.len(), 2);
        assert_eq!(p.to_device[0].peer_ports, Some(Ports::one(443)));
        assert_eq!(p.to_device[1].peer, Peer::MyController);
        assert_eq!(
            p.to_device[1].device_ports,
            Some(Ports { lo: 5683, hi: 5684 })
        );
        p.check_open(false).unwrap();
    }

    #[test]
    fn bad_files_are_refused_with_where() {
        let cases: &[(&str, &str)] = &[
            ("{}", "no ietf-mud:mud"),
            (
                r#"{"ietf-mud:mud": {"mud-version": 2, "mud-url": "https://x"}}"#,
                "is not 1",
            ),
            (
                r#"{"ietf-mud:mud": {"mud-version": 1, "mud-url": "http://x"}}"#,
                "https",
            ),
            (
                r#"{"ietf-mud:mud": {"mud-version": 1, "mud-url": "https://x",
                  "from-device-policy": {"access-lists": {"access-list": [{"name": "a"}]}}}}"#,
                "not defined",
            ),
        ];
        for (doc, want) in cases {
            let e = parse(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}: {e}");
        }
        let with = |matches: &str| {
            format!(
                r#"{{"ietf-mud:mud": {{"mud-version": 1, "mud-url": "https://x",
                  "from-device-policy": {{"access-lists": {{"access-list": [{{"name": "a"}}]}}}}}},
                  "ietf-access-control-list:acls": {{"acl": [{{"name": "a", "aces": {{"ace": [
                    {{"name": "e", "matches": {matches}, "actions": {{"forwarding": "accept"}}}}]}}}}]}}}}"#
            )
        };
        for (m, want) in [
            (
                r#"{"tcp": {"destination-port": {"lower-port": 90, "upper-port": 80}}}"#,
                "above upper-port",
            ),
            (
                r#"{"tcp": {"destination-port": {"operator": "neq", "port": 80}}}"#,
                "cannot be enforced",
            ),
            (
                r#"{"ipv4": {"destination-ipv4-network": "10.0.0.0/40"}}"#,
                "longer than 32",
            ),
            (r#"{"ipv4": {"protocol": 300}}"#, "above 255"),
            (r#"{"eth": {}}"#, "Ethernet"),
            (
                r#"{"ipv4": {"ietf-acldns:dst-dnsname": "bad_name"}}"#,
                "not a DNS host name",
            ),
            (
                r#"{"udp": {"ietf-mud:direction-initiated": "from-device"}}"#,
                "only TCP",
            ),
            (
                r#"{"ipv4": {"destination-ipv4-network": "10.0.0.0/8", "ietf-acldns:dst-dnsname": "a.b"}}"#,
                "two different peers",
            ),
        ] {
            let e = parse(with(m).as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{m}: {e}");
        }
        // An entry that opens everything parses, but the policy check refuses it.
        let open = parse(with(r#"{"ipv4": {"destination-ipv4-network": "0.0.0.0/0"}}"#).as_bytes())
            .unwrap();
        assert!(open.policy.check_open(false).is_err());
        assert!(parse(&vec![b' '; MAX_MUD_BYTES + 1]).is_err());
    }
}
