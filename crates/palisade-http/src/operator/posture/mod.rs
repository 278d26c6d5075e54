//! Operator routes for posture: the fleet (or a model's, a site's) standing
//! against each framework with its trend, one device's results with their
//! evidence, the devices failing a control, and the self-contained HTML report.

mod report;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use palisade_control::posture::FleetPosture;
use palisade_core::DeviceId;
use palisade_core::role::Access;
use palisade_posture::{Basis, Framework, Outcome, Tally};
use palisade_store::WipeStatus;
use serde::{Deserialize, Serialize};

use super::{Caller, parse_id};
use crate::error::{ApiError, ErrorBody};
use crate::state::{OperatorApi, Services};

/// Which framework and devices.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PostureQuery {
    /// `checklist`, `etsi-en-303-645`, `nist-ir-8259a` or `en-18031` (default: all).
    pub framework: Option<String>,
    /// Only this model's devices.
    pub model: Option<String>,
    /// Only this site's devices (`-` for devices not placed).
    pub site: Option<String>,
    /// Evaluate the fleet now instead of using the latest periodic evaluation
    /// (which runs every `posture.interval_secs`).
    #[serde(default)]
    pub fresh: bool,
}

/// Outcome counts with their score.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TallyView {
    /// Passed.
    pub pass: u64,
    /// Failed.
    pub fail: u64,
    /// Unknown (counts against the score).
    pub unknown: u64,
    /// Not assessable from fleet evidence (left out of the score).
    pub not_assessable: u64,
    /// Share of assessable results that pass, 0–100.
    pub score: Option<f64>,
}

impl From<&Tally> for TallyView {
    fn from(t: &Tally) -> Self {
        Self {
            pass: t.pass,
            fail: t.fail,
            unknown: t.unknown,
            not_assessable: t.not_assessable,
            score: t.score().map(|s| (s * 10.0).round() / 10.0),
        }
    }
}

/// One control across the selected devices.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControlView {
    /// Its identifier in the framework.
    pub id: String,
    /// Its title.
    pub title: String,
    /// What it asks.
    pub asks: String,
    /// How Palisade judges it (the checks, or why it cannot).
    pub basis: String,
    /// Devices by outcome.
    pub devices: TallyView,
}

/// One framework over the selected devices.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FrameworkView {
    /// `checklist`, ...
    pub framework: String,
    /// Its title.
    pub title: String,
    /// Devices evaluated.
    pub devices: u64,
    /// Every control result of every device, counted.
    pub results: TallyView,
    /// By model.
    #[schema(value_type = Object)]
    pub by_model: std::collections::BTreeMap<String, TallyView>,
    /// By site.
    #[schema(value_type = Object)]
    pub by_site: std::collections::BTreeMap<String, TallyView>,
    /// Each control.
    pub controls: Vec<ControlView>,
    /// The daily score of the selected scope over the last 30 days.
    pub trend: Vec<(String, Option<f64>)>,
}

/// The fleet's posture.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureView {
    /// When the evaluation ran, Unix ms.
    pub evaluated_ms: i64,
    /// How long it took, ms.
    pub took_ms: u64,
    /// Per framework.
    pub frameworks: Vec<FrameworkView>,
    /// Decommissioned devices by what is known of their wipe (EN 303 645
    /// 5.11: user data deletable), with the ones whose wipe is unconfirmed.
    #[serde(default)]
    pub decommissioned: DecommissionedView,
}

/// Decommissioned devices and their wipes.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecommissionedView {
    /// Wipe verified by the device's signed receipt.
    pub wipe_verified: u64,
    /// No valid receipt by the deadline, or never sent.
    pub wipe_unconfirmed: u64,
    /// A wipe command out, waiting for the receipt.
    pub wipe_pending: u64,
    /// Decommissioned without a wipe.
    pub wipe_not_requested: u64,
    /// The devices whose wipe is unconfirmed (at most 100).
    pub unconfirmed: Vec<String>,
}

fn frameworks(name: Option<&str>) -> Result<Vec<Framework>, ApiError> {
    match name {
        None => Ok(Framework::ALL.to_vec()),
        Some(n) => Framework::parse(n).map(|f| vec![f]).ok_or_else(|| {
            ApiError::bad_request(
                "bad_framework",
                format!(
                    "unknown framework {:?}: checklist, etsi-en-303-645, nist-ir-8259a or en-18031",
                    n.chars().take(40).collect::<String>()
                ),
            )
        }),
    }
}

/// The latest fleet evaluation, running one if none has yet or `fresh` asks.
pub async fn latest(s: &Services, fresh: bool) -> Result<std::sync::Arc<FleetPosture>, ApiError> {
    match s.posture.latest() {
        Some(p) if !fresh => Ok(p),
        _ => Ok(s.posture.evaluate_fleet().await?),
    }
}

/// The selected devices' standing against each framework (or one).
pub async fn summary(s: &Services, q: &PostureQuery) -> Result<PostureView, ApiError> {
    let wanted = frameworks(q.framework.as_deref())?;
    let fleet = latest(s, q.fresh).await?;
    let scope = match (&q.model, &q.site) {
        (Some(m), _) => format!("model:{m}"),
        (None, Some(site)) => format!("site:{site}"),
        (None, None) => "fleet".to_owned(),
    };
    let mut out = Vec::new();
    for f in wanted {
        let sum = fleet.summary(f, |d| {
            q.model.as_ref().is_none_or(|m| &d.model == m)
                && q.site
                    .as_ref()
                    .is_none_or(|site| d.site.as_deref().unwrap_or("-") == site)
        });
        let controls = f
            .controls()
            .iter()
            .map(|c| ControlView {
                id: c.id.to_owned(),
                title: c.title.to_owned(),
                asks: c.asks.to_owned(),
                basis: match c.basis {
                    Basis::Checks(list) => list
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(" + "),
                    Basis::NotAssessable(why) => why.to_owned(),
                },
                devices: TallyView::from(&sum.by_control.get(c.id).copied().unwrap_or_default()),
            })
            .collect();
        out.push(FrameworkView {
            framework: f.as_str().to_owned(),
            title: f.title().to_owned(),
            devices: sum.devices,
            results: TallyView::from(&sum.fleet),
            by_model: sum
                .by_model
                .iter()
                .map(|(k, t)| (k.clone(), TallyView::from(t)))
                .collect(),
            by_site: sum
                .by_site
                .iter()
                .map(|(k, t)| (k.clone(), TallyView::from(t)))
                .collect(),
            controls,
            trend: s.posture.trend(f, &scope, 30).await?,
        });
    }
    let mut decommissioned = DecommissionedView::default();
    for r in s.store.decommissions(None).await? {
        match r.wipe {
            WipeStatus::Verified => decommissioned.wipe_verified += 1,
            WipeStatus::Pending => decommissioned.wipe_pending += 1,
            WipeStatus::NotRequested => decommissioned.wipe_not_requested += 1,
            WipeStatus::Unconfirmed => {
                decommissioned.wipe_unconfirmed += 1;
                if decommissioned.unconfirmed.len() < 100 {
                    decommissioned.unconfirmed.push(r.device.to_string());
                }
            }
        }
    }
    Ok(PostureView {
        evaluated_ms: fleet.at_ms,
        took_ms: fleet.took_ms,
        frameworks: out,
        decommissioned,
    })
}

/// The fleet's posture against each framework (or one), for the whole fleet,
/// a model or a site, with the daily trend.
#[utoipa::path(get, path = "/api/v1/posture", tag = "posture", params(PostureQuery),
    responses((status = 200, body = PostureView), (status = 400, body = ErrorBody)))]
pub(crate) async fn fleet_posture(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<PostureQuery>,
) -> Result<Json<PostureView>, ApiError> {
    c.require(&s, Access::Read, "read posture").await?;
    Ok(Json(summary(&s, &q).await?))
}

/// Which framework.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FrameworkQuery {
    /// One framework (default: all).
    framework: Option<String>,
}

/// One device's results against each framework, with the evidence of each.
#[utoipa::path(get, path = "/api/v1/posture/devices/{id}", tag = "posture",
    params(("id" = String, Path), FrameworkQuery),
    responses((status = 200, description = "results per framework, each control with its checks and facts"), (status = 404, body = ErrorBody)))]
pub(crate) async fn device_posture(
    State(s): State<OperatorApi>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<FrameworkQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read posture").await?;
    let id: DeviceId = parse_id(&s, &c, "posture.read", &id).await?;
    let wanted = frameworks(q.framework.as_deref())?;
    let results: Vec<serde_json::Value> = s
        .posture
        .device(&id)
        .await?
        .into_iter()
        .filter(|r| wanted.contains(&r.framework))
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["score"] = serde_json::json!(r.score().map(|x| (x * 10.0).round() / 10.0));
            v
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "device": id, "frameworks": results }),
    ))
}

/// A control whose failing devices are asked for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ControlQuery {
    /// The framework.
    framework: String,
    /// The control's identifier (`CL4`, `5.3`, ...).
    control: String,
    /// At most this many devices (default 1000).
    limit: Option<usize>,
}

/// The devices that fail (or cannot show) a control, as of the latest evaluation.
#[utoipa::path(get, path = "/api/v1/posture/failing", tag = "posture", params(ControlQuery),
    responses((status = 200, description = "devices with their outcome"), (status = 400, body = ErrorBody)))]
pub(crate) async fn failing(
    State(s): State<OperatorApi>,
    c: Caller,
    Query(q): Query<ControlQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.require(&s, Access::Read, "read posture").await?;
    let f = frameworks(Some(&q.framework))?[0];
    let Some(pos) = f.controls().iter().position(|c| c.id == q.control) else {
        return Err(ApiError::bad_request(
            "bad_control",
            format!(
                "{} has no control {:?}",
                f.title(),
                q.control.chars().take(20).collect::<String>()
            ),
        ));
    };
    let fleet = latest(&s, false).await?;
    let devices: Vec<serde_json::Value> = fleet
        .devices
        .iter()
        .filter_map(|d| {
            let o = *d.of(f).get(pos)?;
            matches!(o, Outcome::Fail | Outcome::Unknown).then(|| {
                serde_json::json!({
                    "device": d.device, "model": d.model, "site": d.site, "outcome": o.as_str(),
                })
            })
        })
        .take(q.limit.unwrap_or(1000).min(100_000))
        .collect();
    Ok(Json(serde_json::json!({
        "framework": f.as_str(), "control": q.control, "evaluated_ms": fleet.at_ms, "devices": devices,
    })))
}

/// The posture report: one self-contained HTML page (no external reference).
#[utoipa::path(get, path = "/api/v1/posture/report", tag = "posture",
    responses((status = 200, description = "text/html", content_type = "text/html")))]
pub(crate) async fn report(State(s): State<OperatorApi>, c: Caller) -> Result<Response, ApiError> {
    c.require(&s, Access::Read, "read posture").await?;
    let q = PostureQuery {
        framework: None,
        model: None,
        site: None,
        fresh: true,
    };
    let view = summary(&s, &q).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        report::posture_html(&view, s.clock.now_ms()),
    )
        .into_response())
}
