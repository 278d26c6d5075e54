//! Staged rollouts (pure): the campaign's specification, how devices are split
//! into waves, whether a wave may proceed, and maintenance windows. The server
//! applies these decisions; nothing here does I/O or reads a clock.

use serde::{Deserialize, Serialize};

/// Most waves in a campaign.
pub const MAX_WAVES: usize = 16;
/// Most explicit devices or tags in a selector.
pub const MAX_SELECTOR_ITEMS: usize = 10_000;

/// How large a wave is: the cumulative number of devices reached by the end
/// of the wave, as a count or a percentage of the matching devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaveSize {
    /// This many devices in total.
    Count(u32),
    /// This percentage (1..=100) of the devices in total.
    Percent(u8),
}

impl WaveSize {
    /// Parses `10` or `25%`.
    pub fn parse(s: &str) -> Result<Self, RolloutError> {
        let s = s.trim();
        let bad = || RolloutError::Spec(format!("wave {s:?} is neither a count nor N%"));
        if let Some(p) = s.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            if !(1..=100).contains(&p) {
                return Err(RolloutError::Spec(format!(
                    "wave {s:?}: a percentage is 1..=100"
                )));
            }
            Ok(Self::Percent(p))
        } else {
            let n: u32 = s.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(RolloutError::Spec("a wave of 0 devices".into()));
            }
            Ok(Self::Count(n))
        }
    }

    fn reach(self, total: usize) -> usize {
        match self {
            Self::Count(n) => (n as usize).min(total),
            Self::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

/// A daily maintenance window in UTC, minutes after midnight; it may wrap
/// past midnight (`22:00-04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Opens, minutes after 00:00 UTC.
    pub start_min: u16,
    /// Closes, minutes after 00:00 UTC.
    pub end_min: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM` (UTC).
    pub fn parse(s: &str) -> Result<Self, RolloutError> {
        let bad = || RolloutError::Spec(format!("window {s:?} is not HH:MM-HH:MM"));
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let min = |t: &str| -> Result<u16, RolloutError> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let w = Self {
            start_min: min(a)?,
            end_min: min(b)?,
        };
        if w.start_min == w.end_min {
            return Err(RolloutError::Spec(format!("window {s:?} is empty")));
        }
        Ok(w)
    }

    /// Whether `now_ms` (Unix ms) falls inside.
    pub fn contains(self, now_ms: i64) -> bool {
        let m = u16::try_from(now_ms.rem_euclid(86_400_000) / 60_000).unwrap_or(0);
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&m)
        } else {
            m >= self.start_min || m < self.end_min
        }
    }
}

/// A campaign: what to install on which devices, in which steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Only these devices of the model (empty: all of them).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Only devices carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Cumulative wave sizes; the last one is raised to 100%.
    pub waves: Vec<WaveSize>,
    /// Fraction (0..=1) of a wave that must commit before the next starts.
    pub success_threshold: f64,
    /// Fraction (0..=1) of a wave whose failure pauses the campaign.
    pub failure_threshold: f64,
    /// Devices updating at once (0: no limit).
    #[serde(default)]
    pub max_concurrency: u32,
    /// Assignments only go out inside this window.
    #[serde(default)]
    pub window: Option<Window>,
}

/// A specification that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// Invalid.
    #[error("rollout: {0}")]
    Spec(String),
}

impl RolloutSpec {
    /// Checks ranges and sizes.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |m: &str| Err(RolloutError::Spec(m.into()));
        if self.waves.is_empty() || self.waves.len() > MAX_WAVES {
            return bad("1 to 16 waves");
        }
        if !(0.0..=1.0).contains(&self.success_threshold)
            || !(0.0..=1.0).contains(&self.failure_threshold)
        {
            return bad("thresholds are fractions between 0 and 1");
        }
        if self.devices.len() > MAX_SELECTOR_ITEMS || self.tags.len() > MAX_SELECTOR_ITEMS {
            return bad("too many devices or tags in the selector");
        }
        Ok(())
    }

    /// For `total` matching devices, the cumulative end of each wave (never
    /// decreasing, at least one device per wave while devices remain, the
    /// last wave reaching all of them).
    pub fn wave_ends(&self, total: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.waves.len());
        let mut prev = 0;
        for (i, w) in self.waves.iter().enumerate() {
            let mut end = if i + 1 == self.waves.len() {
                total
            } else {
                w.reach(total)
            };
            end = end.max(prev).max((prev + 1).min(total));
            out.push(end);
            prev = end;
        }
        out
    }

    /// Whether assignments may go out at `now_ms`.
    pub fn open_at(&self, now_ms: i64) -> bool {
        self.window.is_none_or(|w| w.contains(now_ms))
    }
}

/// How a wave's devices stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaveStats {
    /// Devices in the wave.
    pub size: usize,
    /// Committed the release.
    pub committed: usize,
    /// Refused, failed or rolled back.
    pub failed: usize,
}

/// What the campaign does next with its current wave.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep going.
    Wait,
    /// Enough committed: start the next wave (or finish after the last).
    Advance,
    /// Too many failed: stop and wait for the operator.
    Pause(String),
}

/// The decision for a wave: failures beyond the threshold pause (checked
/// first, so a canary failure stops the campaign before the next wave),
/// commits reaching the success threshold advance.
pub fn decide(spec: &RolloutSpec, wave: usize, s: WaveStats) -> Decision {
    if s.size == 0 {
        return Decision::Advance;
    }
    let size = s.size as f64;
    let failed = s.failed as f64 / size;
    if s.failed > 0 && failed > spec.failure_threshold {
        return Decision::Pause(format!(
            "wave {} failed on {} of {} devices ({:.0}% > {:.0}%)",
            wave + 1,
            s.failed,
            s.size,
            failed * 100.0,
            spec.failure_threshold * 100.0
        ));
    }
    if s.committed as f64 / size >= spec.success_threshold {
        return Decision::Advance;
    }
    Decision::Wait
}

/// A stable pseudo-random order of devices for a campaign, so the canary is
/// a sample rather than the alphabetically first devices.
pub fn order_key(rollout: &str, device: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(rollout.as_bytes());
    ctx.update(&[0]);
    ctx.update(device.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(waves: &[&str]) -> RolloutSpec {
        RolloutSpec {
            devices: vec![],
            tags: vec![],
            waves: waves.iter().map(|w| WaveSize::parse(w).unwrap()).collect(),
            success_threshold: 0.9,
            failure_threshold: 0.1,
            max_concurrency: 0,
            window: None,
        }
    }

    #[test]
    fn waves_grow_and_the_last_reaches_everyone() {
        assert_eq!(spec(&["5", "25%", "100%"]).wave_ends(200), vec![5, 50, 200]);
        assert_eq!(spec(&["5", "25%", "50%"]).wave_ends(200), vec![5, 50, 200]);
        assert_eq!(spec(&["10", "5"]).wave_ends(3), vec![3, 3]);
        assert_eq!(spec(&["1%", "2%", "100%"]).wave_ends(10), vec![1, 2, 10]);
        assert_eq!(spec(&["5", "100%"]).wave_ends(0), vec![0, 0]);
        assert!(WaveSize::parse("0").is_err());
        assert!(WaveSize::parse("101%").is_err());
        assert!(WaveSize::parse("x").is_err());
    }

    #[test]
    fn a_failing_canary_pauses_and_a_healthy_wave_advances() {
        let s = spec(&["5", "100%"]);
        let d = decide(
            &s,
            0,
            WaveStats {
                size: 5,
                committed: 3,
                failed: 1,
            },
        );
        assert!(matches!(d, Decision::Pause(ref m) if m.contains("wave 1 failed on 1 of 5")));
        assert_eq!(
            decide(
                &s,
                0,
                WaveStats {
                    size: 5,
                    committed: 5,
                    failed: 0
                }
            ),
            Decision::Advance
        );
        assert_eq!(
            decide(
                &s,
                0,
                WaveStats {
                    size: 5,
                    committed: 4,
                    failed: 0
                }
            ),
            Decision::Wait
        );
        // 1 failure in 20 is within a 10% threshold; 19/20 ≥ 90% advances once all reported.
        assert_eq!(
            decide(
                &s,
                1,
                WaveStats {
                    size: 20,
                    committed: 19,
                    failed: 1
                }
            ),
            Decision::Advance
        );
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = Window::parse("22:00-04:00").unwrap();
        let at = |h: i64, m: i64| (h * 60 + m) * 60_000 + 19_000 * 86_400_000;
        assert!(w.contains(at(23, 0)));
        assert!(w.contains(at(3, 59)));
        assert!(!w.contains(at(4, 0)));
        assert!(!w.contains(at(12, 0)));
        let d = Window::parse("02:00-05:30").unwrap();
        assert!(d.contains(at(5, 29)) && !d.contains(at(5, 30)) && !d.contains(at(1, 59)));
        assert!(Window::parse("25:00-01:00").is_err());
        assert!(Window::parse("01:00-01:00").is_err());
    }
}
