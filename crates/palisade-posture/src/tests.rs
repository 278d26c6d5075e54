//! Devices whose evidence passes and fails each control.

use palisade_core::{DeviceState, KeyProtection, UpdateState};

use super::*;
use crate::evidence::*;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn release(version: &str, sv: u64, created_ms: i64) -> Release {
    Release {
        version: version.into(),
        security_version: sv,
        gated: true,
        created_ms,
    }
}

/// A device that passes everything fleet evidence can show.
fn exemplary() -> DeviceEvidence {
    DeviceEvidence {
        device: "cam-1".into(),
        model: "cam".into(),
        site: Some("lab".into()),
        state: Some(DeviceState::Active),
        key_protection: Some(KeyProtection::Tpm),
        attestation: Some(Attested {
            ok: true,
            detail: "PCR 9 matches release 2.0".into(),
            at_ms: NOW - DAY,
        }),
        attestation_required: true,
        enrolment: Enrolment {
            enrolled: true,
            birth_identity: true,
            token: false,
            approved_ms: None,
        },
        certificate: Some(Certificate {
            serial: "0a".into(),
            not_before_ms: NOW - 10 * DAY,
            not_after_ms: NOW + 80 * DAY,
            key_type: Some("ecdsa-p256".into()),
        }),
        firmware: Firmware {
            reported_version: Some("2.0".into()),
            running: Some(release("2.0", 3, NOW - 30 * DAY)),
            newest: Some(release("2.0", 3, NOW - 30 * DAY)),
            last_update: Some((UpdateState::Committed, NOW - 20 * DAY)),
        },
        support: Support {
            until_ms: Some(NOW + 700 * DAY),
            security_update_days: Some(14),
        },
        network: Network {
            placed: true,
            placed_ms: Some(NOW - 50 * DAY),
            model_policy: true,
            open_override: false,
            edge_applied: Some((u64::try_from(NOW - DAY).unwrap(), NOW - 60_000)),
            denied_packets: Some(12),
            legacy_bridge: false,
        },
        activity: Activity {
            connected: true,
            last_seen_ms: Some(NOW - 30_000),
            transport: Some(palisade_core::Transport::CoapOscore),
        },
        open_alerts: AlertCounts::default(),
        supplier: Some(Supplier {
            name: "acme".into(),
            signing_keys: 1,
            disclosure_contact: Some("security@acme.example".into()),
        }),
        audit: vec![AuditRef {
            index: 7,
            action: "est.enroll".into(),
            at_ms: NOW - 10 * DAY,
        }],
    }
}

fn result(e: &DeviceEvidence, f: Framework, control: &str) -> ControlResult {
    evaluate(e, f, NOW, &Thresholds::default())
        .controls
        .into_iter()
        .find(|c| c.control == control)
        .unwrap_or_else(|| panic!("no control {control} in {}", f.as_str()))
}

fn assert_outcome(e: &DeviceEvidence, f: Framework, control: &str, want: Outcome, reason: &str) {
    let r = result(e, f, control);
    assert_eq!(r.outcome, want, "{control}: {}", r.reason);
    assert!(
        r.reason.contains(reason),
        "{control}: reason {:?} should mention {reason:?}",
        r.reason
    );
}

#[test]
fn an_exemplary_device_passes_every_assessable_control_of_every_framework() {
    let e = exemplary();
    for f in Framework::ALL {
        let r = evaluate(&e, f, NOW, &Thresholds::default());
        for c in &r.controls {
            assert!(
                matches!(c.outcome, Outcome::Pass | Outcome::NotAssessable),
                "{} {}: {:?} {}",
                f.as_str(),
                c.control,
                c.outcome,
                c.reason
            );
        }
        assert_eq!(r.score(), Some(100.0), "{}", f.as_str());
    }
}

#[test]
fn a_software_keystore_fails_hardware_identity_and_secure_storage() {
    let mut e = exemplary();
    e.key_protection = Some(KeyProtection::Software);
    e.attestation = None;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL1",
        Outcome::Fail,
        "software keystore",
    );
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.4",
        Outcome::Fail,
        "software keystore",
    );
    assert_outcome(
        &e,
        Framework::En18031,
        "SSM",
        Outcome::Fail,
        "software keystore",
    );
    // A secure element passes, on the agent's word.
    e.key_protection = Some(KeyProtection::SecureElement);
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL1",
        Outcome::Pass,
        "secure element",
    );
}

#[test]
fn a_failed_attestation_fails_identity_and_software_integrity() {
    let mut e = exemplary();
    e.attestation = Some(Attested {
        ok: false,
        detail: "PCR 9 does not replay to an approved image".into(),
        at_ms: NOW - 60_000,
    });
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL1",
        Outcome::Fail,
        "attestation failed",
    );
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.7",
        Outcome::Fail,
        "measured boot did not verify",
    );
    assert_outcome(
        &e,
        Framework::NistIr8259a,
        "UPDATE",
        Outcome::Fail,
        "did not verify",
    );
}

#[test]
fn an_old_attestation_falls_back_to_the_release_it_runs() {
    let mut e = exemplary();
    e.attestation.as_mut().unwrap().at_ms = NOW - 30 * DAY;
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.7",
        Outcome::Pass,
        "supply-chain gate",
    );
    e.firmware.running = None;
    e.firmware.reported_version = Some("9.9-custom".into());
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.7",
        Outcome::Fail,
        "no accepted release",
    );
}

#[test]
fn a_device_behind_its_update_target_fails_and_one_within_its_window_passes() {
    let mut e = exemplary();
    e.firmware.running = Some(release("1.0", 2, NOW - 200 * DAY));
    e.firmware.newest = Some(release("2.0", 3, NOW - 30 * DAY));
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.3",
        Outcome::Fail,
        "days behind its update target",
    );
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL2",
        Outcome::Fail,
        "16 days behind",
    );
    e.firmware.newest = Some(release("2.0", 3, NOW - 3 * DAY));
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.3",
        Outcome::Pass,
        "within its 14-day update window",
    );
}

#[test]
fn a_model_past_its_support_end_fails_end_of_life_controls() {
    let mut e = exemplary();
    e.support.until_ms = Some(NOW - 3 * DAY);
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL7",
        Outcome::Fail,
        "support ended 3 days ago",
    );
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.3",
        Outcome::Fail,
        "support ended",
    );
    assert_outcome(
        &e,
        Framework::En18031,
        "GEC",
        Outcome::Fail,
        "support ended",
    );
    e.support.until_ms = None;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL7",
        Outcome::Fail,
        "declares no end of support",
    );
}

#[test]
fn without_an_edge_policy_segmentation_fails_or_is_unknown() {
    let mut e = exemplary();
    e.network.placed = false;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL4",
        Outcome::Fail,
        "not placed at any site",
    );
    let mut e = exemplary();
    e.network.model_policy = false;
    assert_outcome(
        &e,
        Framework::En18031,
        "TCM",
        Outcome::Fail,
        "no network policy",
    );
    let mut e = exemplary();
    e.network.open_override = true;
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.6",
        Outcome::Fail,
        "any address on any port",
    );
    let mut e = exemplary();
    e.network.edge_applied = None;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL4",
        Outcome::Unknown,
        "no edge of its site",
    );
    let mut e = exemplary();
    e.network.edge_applied = Some((1, NOW));
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL4",
        Outcome::Unknown,
        "not yet applied",
    );
}

#[test]
fn the_legacy_bridge_fails_encrypted_protocols() {
    let mut e = exemplary();
    e.network.legacy_bridge = true;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL5",
        Outcome::Fail,
        "plaintext MQTT",
    );
    assert_outcome(
        &e,
        Framework::EtsiEn303645,
        "5.5",
        Outcome::Fail,
        "legacy bridge",
    );
    assert_outcome(
        &e,
        Framework::NistIr8259a,
        "ACCESS",
        Outcome::Fail,
        "legacy bridge",
    );
}

#[test]
fn the_protocol_of_the_live_session_is_the_evidence_for_encrypted_protocols() {
    use palisade_core::Transport;
    let mut e = exemplary();
    for (t, says) in [
        (Transport::MqttTls, "MQTT over mutually authenticated TLS"),
        (Transport::CoapDtls, "CoAP over DTLS 1.2"),
        (Transport::CoapOscore, "OSCORE"),
    ] {
        e.activity.transport = Some(t);
        assert_outcome(&e, Framework::Checklist, "CL5", Outcome::Pass, says);
        let r = result(&e, Framework::Checklist, "CL5");
        let facts: Vec<&str> = r
            .checks
            .iter()
            .flat_map(|(_, f)| f.facts.iter().map(|x| x.value.as_str()))
            .collect();
        assert!(
            facts.contains(&t.as_str()),
            "the protocol is a fact: {facts:?}"
        );
    }
    // Offline, the protocol is not known, but what it reached with was.
    e.activity.transport = None;
    e.activity.connected = false;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL5",
        Outcome::Pass,
        "encrypted protocols",
    );
}

#[test]
fn an_open_critical_alert_or_silence_fails_monitoring() {
    let mut e = exemplary();
    e.open_alerts.critical = 1;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL6",
        Outcome::Fail,
        "1 unresolved critical alert",
    );
    assert_outcome(
        &e,
        Framework::NistIr8259a,
        "STATE",
        Outcome::Fail,
        "critical",
    );
    let mut e = exemplary();
    e.open_alerts.medium = 4;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL6",
        Outcome::Pass,
        "telemetry is fresh",
    );
    e.activity.last_seen_ms = Some(NOW - 3 * DAY);
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL6",
        Outcome::Fail,
        "silent since 3 days ago",
    );
}

#[test]
fn certificates_expired_or_overdue_for_renewal_fail_authentication() {
    let mut e = exemplary();
    e.certificate.as_mut().unwrap().not_after_ms = NOW - 1;
    assert_outcome(&e, Framework::Checklist, "CL3", Outcome::Fail, "expired");
    let mut e = exemplary();
    let c = e.certificate.as_mut().unwrap();
    c.not_before_ms = NOW - 88 * DAY;
    c.not_after_ms = NOW + 2 * DAY;
    assert_outcome(
        &e,
        Framework::Checklist,
        "CL3",
        Outcome::Fail,
        "renewal is overdue",
    );
}

#[test]
fn a_device_not_yet_enrolled_is_unknown_not_failed() {
    let e = DeviceEvidence {
        device: "new-1".into(),
        model: "cam".into(),
        state: Some(DeviceState::Registered),
        ..DeviceEvidence::default()
    };
    for control in ["CL1", "CL3", "CL5"] {
        assert_eq!(
            result(&e, Framework::Checklist, control).outcome,
            Outcome::Unknown,
            "{control}"
        );
    }
}

#[test]
fn provisions_fleet_evidence_cannot_judge_say_so_and_do_not_count() {
    let e = exemplary();
    for (f, c) in [
        (Framework::EtsiEn303645, "5.8"),
        (Framework::EtsiEn303645, "5.11"),
        (Framework::EtsiEn303645, "5.13"),
        (Framework::En18031, "DLM"),
    ] {
        let r = result(&e, f, c);
        assert_eq!(r.outcome, Outcome::NotAssessable);
        assert!(
            r.reason.starts_with("not assessable from fleet evidence"),
            "{}",
            r.reason
        );
    }
    let r = evaluate(&e, Framework::EtsiEn303645, NOW, &Thresholds::default());
    assert_eq!(r.tally.not_assessable, 3);
    assert_eq!(r.tally.assessable(), 10);
}

#[test]
fn catalogues_have_the_controls_their_standards_name() {
    assert_eq!(Framework::Checklist.controls().len(), 7);
    assert_eq!(Framework::EtsiEn303645.controls().len(), 13);
    assert_eq!(Framework::NistIr8259a.controls().len(), 6);
    assert!(Framework::En18031.controls().len() >= 10);
    for f in Framework::ALL {
        assert_eq!(Framework::parse(f.as_str()), Some(f));
    }
}

#[test]
fn summaries_pool_devices_by_model_site_and_control() {
    let good = exemplary();
    let mut bad = exemplary();
    bad.device = "cam-2".into();
    bad.site = None;
    bad.key_protection = Some(KeyProtection::Software);
    bad.attestation = None;
    let mut s = Summary::default();
    for e in [&good, &bad] {
        s.add(&evaluate(
            e,
            Framework::Checklist,
            NOW,
            &Thresholds::default(),
        ));
    }
    assert_eq!(s.devices, 2);
    assert_eq!(s.by_control["CL1"].pass, 1);
    assert_eq!(s.by_control["CL1"].fail, 1);
    assert_eq!(s.by_site["lab"].score(), Some(100.0));
    assert!(s.by_site["-"].score().unwrap() < 100.0);
    let fleet = s.fleet.score().unwrap();
    assert!(fleet > 80.0 && fleet < 100.0, "{fleet}");
}

#[test]
fn every_result_carries_its_evidence() {
    let e = exemplary();
    let r = result(&e, Framework::Checklist, "CL3");
    let facts: Vec<&Fact> = r.checks.iter().flat_map(|(_, f)| &f.facts).collect();
    assert!(
        facts
            .iter()
            .any(|f| f.name == "certificate" && f.value == "0a")
    );
    assert!(facts.iter().any(|f| f.audit_index == Some(7)));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["outcome"], "pass");
}
