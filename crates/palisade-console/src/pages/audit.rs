//! The audit log: the newest signed checkpoint (its signature checked here),
//! the entries newest first, an entry's inclusion proof checked against that
//! checkpoint, and a verification of the whole log on request.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use palisade_audit::NoteVerifier;
use palisade_audit::verify_inclusion;
use palisade_audit::{StoredCheckpoint, Verifier};
use serde::Deserialize;

use crate::chrome::{Chrome, error_page, render, store_error};
use crate::fmt;
use crate::{Console, Person};

/// What the page shows.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Show entries below this index (newest first).
    before: Option<u64>,
    /// Prove this entry.
    entry: Option<u64>,
    /// Verify the whole log.
    verify: Option<String>,
}

/// An entry line.
pub struct Line {
    index: u64,
    time: String,
    actor: String,
    action: String,
    subject: String,
    denied: bool,
    detail: String,
}

/// An entry's inclusion proof and whether it checks out.
pub struct Proof {
    index: u64,
    action: String,
    leaf: String,
    path: Vec<String>,
    size: u64,
    result: String,
    good: bool,
}

/// The result of verifying the whole log.
#[derive(Debug, Clone)]
pub struct Verification {
    /// When it ran.
    pub at_ms: i64,
    /// Whether the log is intact.
    pub good: bool,
    /// What was found.
    pub summary: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct Page {
    chrome: Chrome,
    size: u64,
    checkpoint: String,
    checkpoint_ok: Result<String, String>,
    vkey: String,
    lines: Vec<Line>,
    older: Option<u64>,
    proof: Option<Proof>,
    verification: Option<(String, bool, String)>,
}

const PAGE: u32 = 50;

/// Verifies every stored entry against the signed checkpoints.
async fn verify_all(c: &Console, key: &NoteVerifier) -> Result<Verification, Response> {
    let mut cps: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = cps.last().map_or(0, |x| x.size + 1);
        let page = c
            .store
            .audit_checkpoints(from, 5000)
            .await
            .map_err(store_error)?;
        let done = page.len() < 5000;
        cps.extend(page);
        if done {
            break;
        }
    }
    let mut v = Verifier::new(key, Some(key.name()), &cps);
    let mut from = 0;
    loop {
        let page = c
            .store
            .audit_entries(from, 5000)
            .await
            .map_err(store_error)?;
        let n = page.len();
        for e in page {
            from = e.entry.index + 1;
            v.push(e.entry, e.recorded_digest);
        }
        if n < 5000 {
            break;
        }
    }
    let r = v.finish();
    let (good, summary) = match &r.problem {
        None => (
            true,
            format!(
                "intact: {} entries, {} signed checkpoints verified{}",
                r.entries,
                r.checkpoints,
                r.latest
                    .as_ref()
                    .map(|l| format!(", the newest covering {} entries", l.size))
                    .unwrap_or_default()
            ),
        ),
        Some(p) => (
            false,
            format!("TAMPERED: entry {} was {}: {}", p.index, p.kind, p.detail),
        ),
    };
    Ok(Verification {
        at_ms: c.clock.now_ms(),
        good,
        summary,
    })
}

/// `GET /audit`
pub async fn page(
    State(c): State<Console>,
    who: Person,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error_page(StatusCode::BAD_REQUEST, "the query is malformed");
    };
    let key = match NoteVerifier::parse(&c.audit_vkey) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "the server's own audit verifier key does not parse");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit key is unreadable",
            );
        }
    };
    let head = c.store.audit_head();
    let size = head.as_ref().map_or(0, |h| h.size);
    let checkpoint = head.as_ref().map(|h| h.note.clone()).unwrap_or_default();
    let checkpoint_ok = match &head {
        None => Err("no checkpoint yet".to_owned()),
        Some(h) => key
            .verify(&h.note, Some(key.name()))
            .map(|cp| format!("signature valid; covers {} entries", cp.size))
            .map_err(|e| e.to_string()),
    };
    let before = q.before.unwrap_or(size).min(size);
    let from = before.saturating_sub(u64::from(PAGE));
    let lines = match c.store.audit_entries(from, PAGE).await {
        Ok(l) => l
            .into_iter()
            .filter(|e| e.entry.index < before)
            .rev()
            .map(|e| Line {
                index: e.entry.index,
                time: fmt::when(e.entry.time_ms),
                denied: e.entry.outcome != "success",
                actor: e.entry.actor,
                action: e.entry.action,
                subject: e.entry.subject,
                detail: if e.entry.detail == "null" || e.entry.detail == "{}" {
                    String::new()
                } else {
                    e.entry.detail.chars().take(300).collect()
                },
            })
            .collect(),
        Err(e) => return store_error(e),
    };
    let proof = match q.entry {
        None => None,
        Some(index) => match c.store.inclusion_proof(index).await {
            Ok(p) => {
                let leaf = p.entry.entry.digest();
                let result = key
                    .verify(&p.head.note, Some(key.name()))
                    .map_err(|e| format!("the checkpoint does not verify: {e}"))
                    .and_then(|cp| {
                        verify_inclusion(&leaf, index, cp.size, &cp.root, &p.path)
                            .map(|()| cp.size)
                            .map_err(|e| format!("the proof does not lead to the checkpoint: {e}"))
                    });
                Some(Proof {
                    index,
                    action: format!(
                        "{} {} by {}",
                        p.entry.entry.action, p.entry.entry.subject, p.entry.entry.actor
                    ),
                    leaf: hex::encode(leaf),
                    path: p.path.iter().map(hex::encode).collect(),
                    size: p.head.size,
                    good: result.is_ok(),
                    result: match result {
                        Ok(n) => format!("entry {index} is in the signed log of {n} entries"),
                        Err(e) => e,
                    },
                })
            }
            Err(palisade_store::StoreError::Proof(e)) => {
                return error_page(StatusCode::NOT_FOUND, &e.to_string());
            }
            Err(e) => return store_error(e),
        },
    };
    if q.verify.is_some() {
        match verify_all(&c, &key).await {
            Ok(v) => {
                tracing::info!(good = v.good, summary = %v.summary, "audit log verified from the console");
                *c.verified
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
            }
            Err(r) => return r,
        }
    }
    let verification = c
        .verified
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|v| (fmt::when(v.at_ms), v.good, v.summary.clone()));
    render(&Page {
        chrome: Chrome::new(&who, "Audit log", "audit"),
        size,
        checkpoint,
        checkpoint_ok,
        vkey: c.audit_vkey.to_string(),
        older: (from > 0).then_some(from),
        lines,
        proof,
        verification,
    })
}
