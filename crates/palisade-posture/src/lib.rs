//! Posture: how far each device, model, site and the whole fleet stands from a
//! baseline, judged from the evidence Palisade holds. Four baselines
//! ([`Framework`]): the practical checklist, ETSI EN 303 645, NIST IR 8259A and
//! EN 18031-1. Each control is made of atomic [`Check`]s over a device's
//! [`DeviceEvidence`]; every result is pass, fail, unknown or not assessable,
//! with its reason and the facts it used.
//!
//! Pure: no I/O, time passed in. The control plane gathers the evidence.
//!
//! A score is the share of assessable results that pass: unknown counts
//! against it (what cannot be shown is not claimed), not-assessable is left out.

pub mod catalogue;
pub mod checks;
pub mod evidence;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use catalogue::{Basis, Control, Framework};
pub use checks::{Check, Fact, Finding, Outcome, Thresholds};
pub use evidence::DeviceEvidence;

/// One control's result for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    /// The control's identifier in its framework.
    pub control: String,
    /// Its title.
    pub title: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
    /// The checks that decided it, each with its own finding.
    pub checks: Vec<(Check, Finding)>,
}

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Passed.
    pub pass: u64,
    /// Failed.
    pub fail: u64,
    /// Unknown.
    pub unknown: u64,
    /// Not assessable from fleet evidence.
    pub not_assessable: u64,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
            Outcome::NotAssessable => self.not_assessable += 1,
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &Tally) {
        self.pass += o.pass;
        self.fail += o.fail;
        self.unknown += o.unknown;
        self.not_assessable += o.not_assessable;
    }

    /// Results that count towards the score.
    pub fn assessable(&self) -> u64 {
        self.pass + self.fail + self.unknown
    }

    /// The share of assessable results that pass, 0–100 (`None` when nothing
    /// is assessable).
    pub fn score(&self) -> Option<f64> {
        let n = self.assessable();
        (n > 0).then(|| 100.0 * self.pass as f64 / n as f64)
    }
}

/// One device judged against one framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceResult {
    /// The device.
    pub device: String,
    /// Its model.
    pub model: String,
    /// Its site, if placed.
    pub site: Option<String>,
    /// The framework.
    pub framework: Framework,
    /// Every control's result, in the framework's order.
    pub controls: Vec<ControlResult>,
    /// Their outcomes counted.
    pub tally: Tally,
}

impl DeviceResult {
    /// The device's score for this framework.
    pub fn score(&self) -> Option<f64> {
        self.tally.score()
    }
}

/// Judges one control from the checks' findings: fail if any fails, unknown
/// if any is unknown, pass if all pass.
fn judge_control(c: &Control, e: &DeviceEvidence, now_ms: i64, t: &Thresholds) -> ControlResult {
    let (outcome, reason, checks) = match c.basis {
        Basis::NotAssessable(why) => (Outcome::NotAssessable, why.to_owned(), vec![]),
        Basis::Checks(list) => {
            let checks: Vec<(Check, Finding)> =
                list.iter().map(|k| (*k, k.judge(e, now_ms, t))).collect();
            let worst = |o: Outcome| checks.iter().find(|(_, f)| f.outcome == o);
            let (outcome, reason) = if let Some((_, f)) = worst(Outcome::Fail) {
                (Outcome::Fail, f.reason.clone())
            } else if let Some((_, f)) = worst(Outcome::Unknown) {
                (Outcome::Unknown, f.reason.clone())
            } else {
                let reasons: Vec<&str> = checks.iter().map(|(_, f)| f.reason.as_str()).collect();
                (Outcome::Pass, reasons.join("; "))
            };
            (outcome, reason, checks)
        }
    };
    ControlResult {
        control: c.id.to_owned(),
        title: c.title.to_owned(),
        outcome,
        reason,
        checks,
    }
}

/// Judges `e` against `framework` at `now_ms`.
pub fn evaluate(
    e: &DeviceEvidence,
    framework: Framework,
    now_ms: i64,
    t: &Thresholds,
) -> DeviceResult {
    let controls: Vec<ControlResult> = framework
        .controls()
        .iter()
        .map(|c| judge_control(c, e, now_ms, t))
        .collect();
    let mut tally = Tally::default();
    for c in &controls {
        tally.add(c.outcome);
    }
    DeviceResult {
        device: e.device.clone(),
        model: e.model.clone(),
        site: e.site.clone(),
        framework,
        controls,
        tally,
    }
}

/// A framework's results over a set of devices, summed by scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The whole set.
    pub fleet: Tally,
    /// Devices counted.
    pub devices: u64,
    /// By model.
    pub by_model: BTreeMap<String, Tally>,
    /// By site (`-` for devices not placed).
    pub by_site: BTreeMap<String, Tally>,
    /// By control: how many devices pass, fail, ...
    pub by_control: BTreeMap<String, Tally>,
}

impl Summary {
    /// Adds one device's result.
    pub fn add(&mut self, r: &DeviceResult) {
        self.devices += 1;
        self.fleet.merge(&r.tally);
        self.by_model
            .entry(r.model.clone())
            .or_default()
            .merge(&r.tally);
        self.by_site
            .entry(r.site.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .merge(&r.tally);
        for c in &r.controls {
            self.by_control
                .entry(c.control.clone())
                .or_default()
                .add(c.outcome);
        }
    }
}

#[cfg(test)]
mod tests;
