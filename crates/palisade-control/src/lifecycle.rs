//! Support lifecycle: which devices are past their model's end of support, and
//! which do not run their model's latest security release within the model's
//! security-update target. A pure function of the inventory, the releases and
//! the time.

use palisade_core::{DeviceId, DeviceState, ModelId};
use palisade_store::{DeviceRecord, ModelRecord, ReleaseRecord};

const DAY_MS: i64 = 86_400_000;

/// A device past support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastSupport {
    /// Device.
    pub device: DeviceId,
    /// Model.
    pub model: ModelId,
    /// When support ended, Unix ms.
    pub support_until_ms: i64,
}

/// A device behind its security-update target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// Device.
    pub device: DeviceId,
    /// Model.
    pub model: ModelId,
    /// The firmware it reports.
    pub running: Option<String>,
    /// That firmware's security version, if it is a known release.
    pub running_security_version: Option<u64>,
    /// What it must run.
    pub required_security_version: u64,
    /// By when, Unix ms.
    pub due_ms: i64,
}

/// The assessment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Devices past support.
    pub past_support: Vec<PastSupport>,
    /// Devices behind target.
    pub behind: Vec<Behind>,
}

/// Parses `YYYY-MM-DD` (end of that day, UTC) or an RFC 3339 date-time.
pub fn parse_date_ms(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let t = text.trim();
    if let Ok(dt) = time::OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(palisade_core::unix_ms(dt));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(t, &fmt)
        .map_err(|_| format!("{t:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))?;
    Ok(palisade_core::unix_ms(d.midnight().assume_utc()) + DAY_MS - 1)
}

/// Assesses every device at `now_ms`.
pub fn assess(
    now_ms: i64,
    models: &[ModelRecord],
    releases: &[ReleaseRecord],
    devices: &[DeviceRecord],
) -> Report {
    let mut r = Report::default();
    for d in devices {
        if d.state == DeviceState::Decommissioned {
            continue;
        }
        let Some(m) = models.iter().find(|m| m.id == d.model) else {
            continue;
        };
        if let Some(until) = m.support_until_ms
            && until < now_ms
        {
            r.past_support.push(PastSupport {
                device: d.id.clone(),
                model: m.id.clone(),
                support_until_ms: until,
            });
        }
        let Some(days) = m.security_update_days else {
            continue;
        };
        let of_model: Vec<&ReleaseRecord> = releases.iter().filter(|x| x.model == m.id).collect();
        let Some(required) = of_model.iter().map(|x| x.security_version).max() else {
            continue;
        };
        // The clock starts when the floor was first raised to `required`.
        let since = of_model
            .iter()
            .filter(|x| x.security_version == required)
            .map(|x| x.created_ms)
            .min()
            .unwrap_or(now_ms);
        let due = since + i64::from(days) * DAY_MS;
        let running_sv = d
            .reported_firmware
            .as_deref()
            .and_then(|v| of_model.iter().find(|x| x.version == v))
            .map(|x| x.security_version);
        if running_sv.is_none_or(|sv| sv < required) && now_ms > due {
            r.behind.push(Behind {
                device: d.id.clone(),
                model: m.id.clone(),
                running: d.reported_firmware.clone(),
                running_security_version: running_sv,
                required_security_version: required,
                due_ms: due,
            });
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, until: Option<i64>, days: Option<u32>) -> ModelRecord {
        ModelRecord {
            id: ModelId::parse(id).unwrap(),
            description: String::new(),
            cert_validity_days: 30,
            policy_version: 1,
            approval_required: false,
            allowed_key_types: vec![],
            attestation: "none".into(),
            supplier: None,
            support_until_ms: until,
            security_update_days: days,
            created_ms: 0,
        }
    }

    fn release(model: &str, version: &str, sv: u64, at: i64) -> ReleaseRecord {
        ReleaseRecord {
            model: ModelId::parse(model).unwrap(),
            version: version.into(),
            security_version: sv,
            hardware: vec![],
            image_sha256: String::new(),
            image_len: 0,
            sbom_sha256: String::new(),
            provenance_sha256: String::new(),
            signed_by: String::new(),
            builder_id: String::new(),
            uploaded_by: String::new(),
            created_ms: at,
        }
    }

    fn device(id: &str, model: &str, fw: Option<&str>, state: DeviceState) -> DeviceRecord {
        DeviceRecord {
            id: DeviceId::parse(id).unwrap(),
            model: ModelId::parse(model).unwrap(),
            state,
            hardware_serial: None,
            created_ms: 0,
            updated_ms: 0,
            onboarding: Default::default(),
            last_seen_ms: None,
            reported_firmware: fw.map(str::to_owned),
            hardware: Default::default(),
        }
    }

    #[test]
    fn finds_devices_past_support_and_behind_target() {
        let now = 100 * DAY_MS;
        let models = [
            model("cam", Some(50 * DAY_MS), Some(14)),
            model("lock", None, Some(30)),
        ];
        let releases = [
            release("cam", "1.0", 1, 0),
            release("cam", "1.1", 2, 70 * DAY_MS),
            release("cam", "1.2", 2, 90 * DAY_MS), // same floor: the clock started at day 70
            release("lock", "3.0", 5, 80 * DAY_MS),
        ];
        let devices = [
            device("cam-old", "cam", Some("1.0"), DeviceState::Active),
            device("cam-new", "cam", Some("1.2"), DeviceState::Active),
            device("cam-unknown", "cam", Some("9.9"), DeviceState::Active),
            device("cam-gone", "cam", Some("1.0"), DeviceState::Decommissioned),
            device("lock-old", "lock", None, DeviceState::Active),
        ];
        let r = assess(now, &models, &releases, &devices);
        let past: Vec<&str> = r.past_support.iter().map(|p| p.device.as_str()).collect();
        assert_eq!(past, ["cam-old", "cam-new", "cam-unknown"]);
        let behind: Vec<(&str, Option<u64>)> = r
            .behind
            .iter()
            .map(|b| (b.device.as_str(), b.running_security_version))
            .collect();
        // lock's deadline (day 110) has not passed; cam's (day 84) has.
        assert_eq!(behind, [("cam-old", Some(1)), ("cam-unknown", None)]);
        assert_eq!(r.behind[0].due_ms, 84 * DAY_MS);
    }

    #[test]
    fn parses_dates_and_times() {
        assert_eq!(parse_date_ms("1970-01-02").unwrap(), 2 * DAY_MS - 1);
        assert_eq!(parse_date_ms("1970-01-02T00:00:00Z").unwrap(), DAY_MS);
        assert!(parse_date_ms("next year").is_err());
    }
}
