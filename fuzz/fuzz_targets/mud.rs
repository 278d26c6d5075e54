//! MUD files as an operator or supplier uploads them: parsing must never
//! panic, and whatever parses must render into a ruleset or be refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_policy::site::{Segment, SiteBundle, SiteDevice, SiteSpec, render};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = palisade_policy::mud::parse(data) {
        let _ = m.policy.check_open(false);
        let b = SiteBundle {
            site: "s".into(),
            version: 1,
            issued_ms: 0,
            spec: SiteSpec::new(
                "10.0.0.1".parse().unwrap(),
                vec![("10.0.9.1".parse().unwrap(), 8443)],
                vec![Segment {
                    name: "a".into(),
                    interface: "eth1".into(),
                    vlan: None,
                    subnet: "10.0.0.0/24".parse().unwrap(),
                    quarantine: false,
                }],
            ),
            devices: vec![SiteDevice {
                device: "d".into(),
                address: "10.0.0.2".parse().unwrap(),
                segment: "a".into(),
                manufacturer: None,
                quarantined: false,
                restricted: false,
                policy: m.policy,
            }],
            blocked: vec!["10.0.0.3".parse().unwrap()],
        };
        let _ = render(&b);
    }
});
