//! Posture per framework: the fleet's (or a model's, a site's) score and
//! trend, each control with its pass / fail / unknown counts, and a drill-down
//! to the devices failing a control.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use palisade_http::operator::posture::{FrameworkView, PostureQuery, TallyView, latest, summary};
use palisade_posture::{Framework, Outcome};
use serde::Deserialize;

use crate::chrome::{Chrome, error_page, render};
use crate::fmt;
use crate::{Console, Person};

/// What the page shows.
#[derive(Debug, Deserialize)]
pub struct Q {
    framework: Option<String>,
    model: Option<String>,
    site: Option<String>,
    control: Option<String>,
}

/// A control's line: counts and the widths of its bar.
pub struct ControlLine {
    id: String,
    title: String,
    asks: String,
    basis: String,
    pass: u64,
    fail: u64,
    unknown: u64,
    assessable: bool,
    score: String,
    bar: (u64, u64, u64),
}

/// A group's line (a model or a site).
pub struct GroupLine {
    name: String,
    score: String,
    fail: u64,
}

/// A device failing the drilled-down control.
pub struct FailingLine {
    device: String,
    model: String,
    site: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "posture.html")]
struct Page {
    chrome: Chrome,
    frameworks: Vec<(&'static str, &'static str, bool)>,
    framework: &'static str,
    title: String,
    model: String,
    site: String,
    devices: u64,
    score: String,
    evaluated: String,
    trend_svg: String,
    controls: Vec<ControlLine>,
    by_model: Vec<GroupLine>,
    by_site: Vec<GroupLine>,
    control: Option<(String, String)>,
    failing: Vec<FailingLine>,
    /// Decommissioned devices by wipe outcome, and those unconfirmed.
    retired: Option<(String, Vec<String>)>,
    failing_total: usize,
}

fn groups(m: &std::collections::BTreeMap<String, TallyView>) -> Vec<GroupLine> {
    m.iter()
        .map(|(k, t)| GroupLine {
            name: k.clone(),
            score: fmt::score(t.score),
            fail: t.fail,
        })
        .collect()
}

/// Bar widths in percent of the devices for pass, fail, unknown.
fn bar(t: &TallyView) -> (u64, u64, u64) {
    let n = (t.pass + t.fail + t.unknown).max(1);
    (t.pass * 100 / n, t.fail * 100 / n, t.unknown * 100 / n)
}

const SHOWN: usize = 500;

/// `GET /posture`
pub async fn page(
    State(c): State<Console>,
    who: Person,
    q: Result<Query<Q>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(StatusCode::BAD_REQUEST, "the query is malformed");
    };
    let f = match q.framework.as_deref().filter(|s| !s.is_empty()) {
        None => Framework::Checklist,
        Some(n) => match Framework::parse(n) {
            Some(f) => f,
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "unknown framework: checklist, etsi-en-303-645, nist-ir-8259a or en-18031",
                );
            }
        },
    };
    let nonempty = |s: Option<String>| s.filter(|x| !x.trim().is_empty());
    let pq = PostureQuery {
        framework: Some(f.as_str().to_owned()),
        model: nonempty(q.model),
        site: nonempty(q.site),
        fresh: false,
    };
    let view = match summary(&c, &pq).await {
        Ok(v) => v,
        Err(e) => return error_page(e.status, &e.message),
    };
    let Some(fw): Option<&FrameworkView> = view.frameworks.first() else {
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "no framework evaluated");
    };
    let controls = fw
        .controls
        .iter()
        .map(|x| ControlLine {
            id: x.id.clone(),
            title: x.title.clone(),
            asks: x.asks.clone(),
            basis: x.basis.clone(),
            pass: x.devices.pass,
            fail: x.devices.fail,
            unknown: x.devices.unknown,
            assessable: x.devices.not_assessable == 0
                || x.devices.pass + x.devices.fail + x.devices.unknown > 0,
            score: fmt::score(x.devices.score),
            bar: bar(&x.devices),
        })
        .collect();
    let trend_svg = fmt::line_chart(
        &format!("{} score, last 30 days", fw.title),
        &[(
            "score %",
            "#0b57d0",
            fw.trend.iter().map(|(_, s)| s.unwrap_or(0.0)).collect(),
        )],
    );
    // The drill-down: the devices that fail (or cannot show) one control.
    let mut control = None;
    let mut failing = vec![];
    let mut failing_total = 0;
    if let Some(id) = q.control.as_deref().filter(|s| !s.is_empty()) {
        let Some(pos) = f.controls().iter().position(|x| x.id == id) else {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("{} has no such control", f.title()),
            );
        };
        let fleet = match latest(&c, false).await {
            Ok(l) => l,
            Err(e) => return error_page(e.status, &e.message),
        };
        control = Some((id.to_owned(), f.controls()[pos].title.to_owned()));
        for d in fleet.devices.iter().filter(|d| {
            pq.model.as_ref().is_none_or(|m| &d.model == m)
                && pq
                    .site
                    .as_ref()
                    .is_none_or(|s| d.site.as_deref().unwrap_or("-") == s)
        }) {
            let Some(o) = d.of(f).get(pos).copied() else {
                continue;
            };
            if matches!(o, Outcome::Fail | Outcome::Unknown) {
                failing_total += 1;
                if failing.len() < SHOWN {
                    failing.push(FailingLine {
                        device: d.device.clone(),
                        model: d.model.clone(),
                        site: d.site.clone().unwrap_or_else(|| "–".into()),
                        outcome: o.as_str().to_owned(),
                    });
                }
            }
        }
    }
    render(&Page {
        chrome: Chrome::new(&who, "Posture", "posture"),
        frameworks: Framework::ALL
            .iter()
            .map(|x| (x.as_str(), x.title(), *x == f))
            .collect(),
        framework: f.as_str(),
        title: fw.title.clone(),
        model: pq.model.clone().unwrap_or_default(),
        site: pq.site.clone().unwrap_or_default(),
        devices: fw.devices,
        score: fmt::score(fw.results.score),
        evaluated: fmt::when(view.evaluated_ms),
        trend_svg,
        controls,
        by_model: groups(&fw.by_model),
        by_site: groups(&fw.by_site),
        control,
        failing,
        failing_total,
        retired: {
            let d = &view.decommissioned;
            (d.wipe_verified + d.wipe_unconfirmed + d.wipe_pending + d.wipe_not_requested > 0).then(|| {
                (
                    format!(
                        "{} decommissioned: wipe verified {}, unconfirmed {}, pending {}, not requested {}",
                        d.wipe_verified + d.wipe_unconfirmed + d.wipe_pending + d.wipe_not_requested,
                        d.wipe_verified,
                        d.wipe_unconfirmed,
                        d.wipe_pending,
                        d.wipe_not_requested
                    ),
                    d.unconfirmed.clone(),
                )
            })
        },
    })
}
