//! Sites and edges: each site's segments, the devices placed there, its
//! edges with the policy version they applied and their enforcement counters.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::chrome::{Chrome, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// A segment of a site.
pub struct SegmentLine {
    name: String,
    subnet: String,
    interface: String,
    quarantine: bool,
    placed: usize,
}

/// An edge of a site.
pub struct EdgeLine {
    device: String,
    applied: u64,
    reported: String,
    error: String,
    counters: Vec<(String, String)>,
}

/// A site.
pub struct SiteLine {
    name: String,
    legacy_mqtt: String,
    segments: Vec<SegmentLine>,
    edges: Vec<EdgeLine>,
    placed: usize,
}

#[derive(Template)]
#[template(path = "sites.html")]
struct Page {
    chrome: Chrome,
    sites: Vec<SiteLine>,
}

/// `GET /sites`
pub async fn list(State(c): State<Console>, who: Person) -> Response {
    let now = c.clock.now_ms();
    let (sites, placements, edges) = match tokio::try_join!(
        c.store.sites(),
        c.store.placements(None),
        c.store.edges(None)
    ) {
        Ok(x) => x,
        Err(e) => return store_error(e),
    };
    let lines = sites
        .into_iter()
        .map(|s| {
            let spec: serde_json::Value = serde_json::from_str(&s.spec).unwrap_or_default();
            let here: Vec<_> = placements.iter().filter(|p| p.site == s.name).collect();
            let segments = spec["segments"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| {
                            let name = g["name"].as_str().unwrap_or("").to_owned();
                            SegmentLine {
                                placed: here.iter().filter(|p| p.segment == name).count(),
                                name,
                                subnet: g["subnet"].as_str().unwrap_or("").to_owned(),
                                interface: g["interface"].as_str().unwrap_or("").to_owned(),
                                quarantine: g["quarantine"].as_bool().unwrap_or(false),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let edges = edges
                .iter()
                .filter(|e| e.site == s.name)
                .map(|e| {
                    let status: serde_json::Value =
                        serde_json::from_str(&e.status).unwrap_or_default();
                    let counters = status["counters"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter(|(_, v)| !v.is_object() && !v.is_array())
                                .map(|(k, v)| (k.replace('_', " "), v.to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    EdgeLine {
                        device: e.device.to_string(),
                        applied: e.applied_version,
                        reported: fmt::ago(now, e.updated_ms),
                        error: status["error"].as_str().unwrap_or("").to_owned(),
                        counters,
                    }
                })
                .collect();
            SiteLine {
                name: s.name.to_string(),
                legacy_mqtt: spec["legacy_mqtt_port"]
                    .as_u64()
                    .map(|p| format!("legacy MQTT bridge on port {p}"))
                    .unwrap_or_default(),
                placed: here.len(),
                segments,
                edges,
            }
        })
        .collect();
    render(&Page {
        chrome: Chrome::new(&who, "Sites and edges", "sites"),
        sites: lines,
    })
}
