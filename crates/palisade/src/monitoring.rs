//! `palisade alerts …`, `palisade device timeline` and
//! `palisade audit verify-timeline`: alerts with their lifecycle, and the
//! per-device forensic timeline exported as a verifiable bundle.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use hyper::Method;
use palisade_control::alerts::AlertView;
use palisade_http::views::TimelineView;
use serde_json::json;

use crate::Global;
use crate::commands::client;
use crate::output::{data, say};

/// `palisade alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// List alerts, newest first.
    List {
        /// Only in this state: open, acknowledged or resolved.
        #[arg(long)]
        state: Option<String>,
        /// Only about this device.
        #[arg(long)]
        device: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one alert with its evidence.
    Show {
        /// Alert id (al-…).
        id: String,
    },
    /// Acknowledge an alert (someone is on it).
    Ack {
        /// Alert id.
        id: String,
        /// A note for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Resolve an alert.
    Resolve {
        /// Alert id.
        id: String,
        /// A note for the record (what it was, what was done).
        #[arg(long, default_value = "")]
        note: String,
    },
}

pub(crate) fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn row(a: &AlertView) -> Vec<String> {
    vec![
        a.id.clone(),
        a.severity.clone(),
        a.state.to_string(),
        a.detector.clone(),
        a.device.clone().or(a.peer.clone()).unwrap_or_default(),
        a.count.to_string(),
        time(a.last_ms),
        a.summary.clone(),
    ]
}

const HEADERS: [&str; 8] = [
    "id", "severity", "state", "detector", "device", "count", "last", "summary",
];

fn check_id(id: &str) -> anyhow::Result<()> {
    if id.len() != 19 || !id.starts_with("al-") {
        bail!("{id:?} is not an alert id (they look like al-0123456789abcdef)");
    }
    Ok(())
}

/// Runs an alerts command.
pub async fn alerts(g: &Global, cmd: AlertsCmd) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        AlertsCmd::List {
            state,
            device,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            if let Some(d) = device {
                q.push(format!("device={d}"));
            }
            let list: Vec<AlertView> = c
                .call(
                    Method::GET,
                    &format!("/api/v1/alerts?{}", q.join("&")),
                    None,
                )
                .await?;
            let rows = list.iter().map(row).collect();
            data(g.json, &list, &HEADERS, rows);
        }
        AlertsCmd::Show { id } => {
            check_id(&id)?;
            let a: AlertView = c
                .call(Method::GET, &format!("/api/v1/alerts/{id}"), None)
                .await?;
            if !g.json {
                say(format!(
                    "{} [{}] {} — {}\n  device: {}  state: {}  findings: {}  first: {}  last: {}",
                    a.id,
                    a.severity,
                    a.detector,
                    a.summary,
                    a.device.clone().or(a.peer.clone()).unwrap_or_default(),
                    a.state,
                    a.count,
                    time(a.first_ms),
                    time(a.last_ms)
                ));
                say(format!(
                    "  evidence: {}",
                    serde_json::to_string_pretty(&a.evidence).unwrap_or_default()
                ));
                if !a.note.is_empty() {
                    say(format!("  notes: {}", a.note));
                }
            }
            data(g.json, &a, &HEADERS, vec![row(&a)]);
        }
        AlertsCmd::Ack { id, note } => return act(g, &c, &id, "ack", &note).await,
        AlertsCmd::Resolve { id, note } => return act(g, &c, &id, "resolve", &note).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(
    g: &Global,
    c: &crate::client::Client,
    id: &str,
    action: &str,
    note: &str,
) -> anyhow::Result<ExitCode> {
    check_id(id)?;
    let a: AlertView = c
        .call(
            Method::POST,
            &format!("/api/v1/alerts/{id}/{action}"),
            Some(&json!({ "note": note })),
        )
        .await?;
    say(format!("alert {} is {}", a.id, a.state));
    data(g.json, &a, &HEADERS, vec![row(&a)]);
    Ok(ExitCode::SUCCESS)
}

/// Parses `7d`, `12h`, `30m`, `90s` into milliseconds.
pub fn parse_age(s: &str) -> anyhow::Result<i64> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .with_context(|| format!("{s:?}: expected a number and a unit, e.g. 7d, 12h, 30m"))?;
    let ms = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1000,
        _ => bail!("{s:?}: the unit is d, h, m or s"),
    };
    n.checked_mul(ms).context("too long ago")
}

/// `palisade device timeline DEVICE`: prints the timeline, or writes the
/// bundle with inclusion proofs to `export`.
pub async fn timeline(
    g: &Global,
    device: &str,
    since: &str,
    export: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let c = client(g)?;
    let age = parse_age(since)?;
    use palisade_core::Clock;
    let now = palisade_server::SystemClock.now();
    let since_ms = palisade_core::unix_ms(now) - age;
    let t: TimelineView = c
        .call(
            Method::GET,
            &format!(
                "/api/v1/devices/{device}/timeline?since_ms={since_ms}&proofs={}",
                export.is_some()
            ),
            None,
        )
        .await?;
    if let Some(path) = export {
        let text = serde_json::to_vec_pretty(&t)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        say(format!(
            "timeline of {device}: {} items, {} audit entries with inclusion proofs, written to {}; check it later with `palisade audit verify-timeline {}`",
            t.items.len(),
            t.proofs.len(),
            path.display(),
            path.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = t
        .items
        .iter()
        .map(|i| {
            vec![
                time(i.at_ms),
                i.source.clone(),
                i.kind.clone(),
                i.summary.clone(),
            ]
        })
        .collect();
    data(g.json, &t, &["time", "source", "kind", "summary"], rows);
    Ok(ExitCode::SUCCESS)
}
