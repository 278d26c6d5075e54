//! Support-end enforcement per model: `palisade model support MODEL --until
//! DATE --notify-days N [--restrict-at DATE] [--retire-at DATE] [--retire-wipe]`.
//!
//! A model moves through [`SupportStage`]s on their dates:
//! * `notified`, `notify_days` before the support end: one `support_ending`
//!   alert for the model, with its device count and the dates to come;
//! * `restricted`, from the restriction date: the site bundles mark its
//!   devices restricted, and the edges confine them to the control plane and
//!   update traffic (nftables set `restricted4/6`, counter
//!   `support_end_drops`);
//! * `retired`, on the retirement date: every device of the model is
//!   decommissioned (with a verified wipe if the policy says so).
//!
//! Each stage is entered once (compare-and-set on the stored stage, so any
//! node may run the check and only one acts) and audited as
//! `model.support.<stage>`; moving the dates later brings a model back
//! (`model.support.lifted`), except from `retired`.

use std::sync::Arc;

use palisade_audit::EntryDraft;
use palisade_core::{Clock, DeviceState, ModelId, SupportStage};
use palisade_detect::detect::{Detector, Finding};
use palisade_store::{Change, DeviceFilter, Store, SupportPolicyRecord};
use serde_json::json;

use crate::alerts::Alerts;
use crate::decommission::Decommissioning;
use crate::error::ServiceError;
use crate::network::Network;
use crate::posture::day_of;

const DAY_MS: i64 = 86_400_000;

/// Longest notice accepted, days.
pub const MAX_NOTIFY_DAYS: u32 = 3650;

/// The stage a policy calls for at `now_ms` (given the model's support end).
pub fn due_stage(
    p: &SupportPolicyRecord,
    support_until_ms: Option<i64>,
    now_ms: i64,
) -> SupportStage {
    if p.retire_ms.is_some_and(|t| t <= now_ms) {
        SupportStage::Retired
    } else if p.restrict_ms.is_some_and(|t| t <= now_ms) {
        SupportStage::Restricted
    } else if support_until_ms
        .is_some_and(|u| u.saturating_sub(i64::from(p.notify_days) * DAY_MS) <= now_ms)
    {
        SupportStage::Notified
    } else {
        SupportStage::Supported
    }
}

fn rank(s: SupportStage) -> u8 {
    match s {
        SupportStage::Supported => 0,
        SupportStage::Notified => 1,
        SupportStage::Restricted => 2,
        SupportStage::Retired => 3,
    }
}

/// What a model's support end does.
#[derive(Debug, Clone)]
pub struct SupportPlan {
    /// End of support, Unix ms.
    pub until_ms: Option<i64>,
    /// Alert this many days before it.
    pub notify_days: u32,
    /// Confine the devices from then.
    pub restrict_ms: Option<i64>,
    /// Decommission them then.
    pub retire_ms: Option<i64>,
    /// With a verified wipe.
    pub retire_wipe: bool,
}

/// The support-end service.
#[derive(Debug)]
pub struct SupportEnd {
    store: Arc<dyn Store>,
    decommissioning: Arc<Decommissioning>,
    alerts: Arc<Alerts>,
    network: Arc<Network>,
    clock: Arc<dyn Clock>,
}

impl SupportEnd {
    /// Composes the service.
    pub fn new(
        store: Arc<dyn Store>,
        decommissioning: Arc<Decommissioning>,
        alerts: Arc<Alerts>,
        network: Arc<Network>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            decommissioning,
            alerts,
            network,
            clock,
        }
    }

    /// Sets a model's support end and policy (operator; audited). The stage
    /// reached is kept; the next check moves it to what the dates call for.
    pub async fn set(
        &self,
        actor: &str,
        model: &ModelId,
        plan: SupportPlan,
    ) -> Result<SupportPolicyRecord, ServiceError> {
        let bad = |m: String| ServiceError::BadRequest {
            code: "bad_support_policy",
            message: m,
        };
        if plan.notify_days > MAX_NOTIFY_DAYS {
            return Err(bad(format!("notice is at most {MAX_NOTIFY_DAYS} days")));
        }
        if let (Some(r), Some(t)) = (plan.restrict_ms, plan.retire_ms)
            && t < r
        {
            return Err(bad(
                "the retirement date is before the restriction date".into()
            ));
        }
        if plan.until_ms.is_none()
            && plan.notify_days > 0
            && plan.restrict_ms.is_none()
            && plan.retire_ms.is_none()
        {
            return Err(bad(
                "give the support end (--until) for a notice, or a restriction or retirement date"
                    .into(),
            ));
        }
        if self.store.model(model).await?.is_none() {
            return Err(ServiceError::NotFound(format!("model {model} not found")));
        }
        let now = self.clock.now_ms();
        self.store
            .commit(
                vec![Change::SetSupportPolicy {
                    model: model.clone(),
                    support_until_ms: plan.until_ms,
                    notify_days: plan.notify_days,
                    restrict_ms: plan.restrict_ms,
                    retire_ms: plan.retire_ms,
                    retire_wipe: plan.retire_wipe,
                    at_ms: now,
                }],
                vec![
                    EntryDraft::success(actor, "model.support", model.as_str()).with_detail(
                        json!({
                            "support_until_ms": plan.until_ms, "notify_days": plan.notify_days,
                            "restrict_ms": plan.restrict_ms, "retire_ms": plan.retire_ms,
                            "retire_wipe": plan.retire_wipe,
                        }),
                    ),
                ],
            )
            .await?;
        self.check().await?;
        self.get(model).await?.ok_or_else(|| {
            ServiceError::Internal(format!("the support policy of {model} vanished"))
        })
    }

    /// A model's policy and stage.
    pub async fn get(&self, model: &ModelId) -> Result<Option<SupportPolicyRecord>, ServiceError> {
        Ok(self
            .store
            .support_policies()
            .await?
            .into_iter()
            .find(|p| &p.model == model))
    }

    /// Moves every model to the stage its dates call for, acting on each
    /// stage entered; returns how many models moved.
    pub async fn check(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now_ms();
        let mut moved = 0;
        for p in self.store.support_policies().await? {
            let Some(m) = self.store.model(&p.model).await? else {
                continue;
            };
            let due = due_stage(&p, m.support_until_ms, now);
            if due == p.stage || p.stage == SupportStage::Retired {
                continue;
            }
            let action = if rank(due) < rank(p.stage) {
                "model.support.lifted".to_owned()
            } else {
                format!("model.support.{}", due.as_str())
            };
            let devices = self
                .store
                .devices(&DeviceFilter {
                    model: Some(p.model.clone()),
                    state: None,
                    limit: Some(10_000_000),
                })
                .await?
                .into_iter()
                .filter(|d| d.state != DeviceState::Decommissioned)
                .collect::<Vec<_>>();
            let detail = json!({
                "from": p.stage.as_str(), "to": due.as_str(), "devices": devices.len(),
                "support_until_ms": m.support_until_ms, "restrict_ms": p.restrict_ms,
                "retire_ms": p.retire_ms,
            });
            let done = self
                .store
                .commit(
                    vec![Change::SetSupportStage {
                        model: p.model.clone(),
                        expected: p.stage,
                        to: due,
                        at_ms: now,
                    }],
                    vec![
                        EntryDraft::success("support-end", &action, p.model.as_str())
                            .with_detail(detail.clone()),
                    ],
                )
                .await;
            match done {
                Ok(_) => {}
                // Another node moved it first.
                Err(palisade_store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            moved += 1;
            tracing::info!(model = %p.model, from = %p.stage, to = %due, "support stage");
            if due == SupportStage::Notified {
                self.alerts
                    .raise(vec![Finding {
                        detector: Detector::SupportEnding,
                        severity: Detector::SupportEnding.severity(),
                        device: None,
                        peer: None,
                        key: format!("support_ending:{}", p.model),
                        summary: format!(
                            "model {} reaches its end of support {}: {} device(s){}{}",
                            p.model,
                            m.support_until_ms.map_or_else(|| "soon".into(), day_of),
                            devices.len(),
                            p.restrict_ms.map_or_else(String::new, |t| format!(
                                ", confined from {}",
                                day_of(t)
                            )),
                            p.retire_ms.map_or_else(String::new, |t| format!(
                                ", retired on {}",
                                day_of(t)
                            )),
                        ),
                        evidence: detail,
                        at_ms: now,
                    }])
                    .await;
            }
            // A stage at or past restriction, or lifted from one, changes the bundles.
            if rank(due) >= 2 || rank(p.stage) >= 2 {
                self.network.touched();
            }
            if due == SupportStage::Retired {
                let reason = format!("model {} reached its retirement date", p.model);
                for d in &devices {
                    match self
                        .decommissioning
                        .decommission("support-end", &d.id, &reason, p.retire_wipe)
                        .await
                    {
                        Ok(_) | Err(ServiceError::Conflict(_)) => {}
                        Err(e) => {
                            tracing::warn!(device = %d.id, error = %e, "could not retire a device");
                        }
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Runs [`SupportEnd::check`] every `every`.
    pub async fn run(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "could not check support ends");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restrict: Option<i64>, retire: Option<i64>) -> SupportPolicyRecord {
        SupportPolicyRecord {
            model: ModelId::parse("cam").unwrap_or_else(|e| panic!("{e}")),
            notify_days: 30,
            restrict_ms: restrict,
            retire_ms: retire,
            retire_wipe: false,
            stage: SupportStage::Supported,
            stage_ms: None,
            updated_ms: 0,
        }
    }

    #[test]
    fn the_dates_decide_the_stage() {
        let until = Some(100 * DAY_MS);
        let p = policy(Some(110 * DAY_MS), Some(200 * DAY_MS));
        assert_eq!(due_stage(&p, until, 69 * DAY_MS), SupportStage::Supported);
        assert_eq!(due_stage(&p, until, 70 * DAY_MS), SupportStage::Notified);
        assert_eq!(due_stage(&p, until, 150 * DAY_MS), SupportStage::Restricted);
        assert_eq!(due_stage(&p, until, 200 * DAY_MS), SupportStage::Retired);
        // Without a support end there is nothing to give notice of.
        assert_eq!(due_stage(&p, None, 100 * DAY_MS), SupportStage::Supported);
        assert_eq!(
            due_stage(&policy(None, None), until, 1000 * DAY_MS),
            SupportStage::Notified
        );
    }
}
